"""One Vatel voice WebSocket: events in, input_audio / tool_call_output out, ends with an outcome.

The token rides in the URL query, so nothing here ever prints the URL: handshake failures become
SessionError (HandshakeError) carrying the HTTP status, and websockets' own log lines go through a
redacting adapter. A session that ends, however it ends, leaves a `SessionOutcome`, never an
escaping exception. Sends after the end raise SessionError (documented, the one exception to catch).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import Frame
from websockets.protocol import State

from vatel_edge import __version__, protocol
from vatel_edge.errors import ProtocolError, SessionError

log = logging.getLogger(__name__)
#: websockets' own log lines (handshake, frames at debug, keepalive failures) land here, redacted.
ws_log = logging.getLogger(__name__ + ".websockets")

#: Incoming message limit: the protocol's frame limit plus room for the JSON envelope.
MAX_MESSAGE_BYTES = protocol.MAX_FRAME_BYTES + (64 << 10)
#: High-water mark of the outgoing buffer: about a second of base64 input_audio. Above it a send
#: waits for the socket to drain (and gives up after send_timeout).
WRITE_LIMIT_BYTES = 64 << 10
_REDACTED = "<redacted>"
#: Any `token=` query value (request lines), whoever's token it is.
_TOKEN_QUERY = re.compile(r"(token=)[^\s&]+")


class HandshakeError(SessionError):
    """The WebSocket could not be opened; `status` is the HTTP status when the server answered one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OutcomeKind(enum.Enum):
    """Why a session ended."""

    SESSION_ENDED = "session_ended"  # the server sent session_ended (then closed)
    CLOSED_BY_US = "closed_by_us"  # we closed (end of conversation, shutdown, idle)
    CLOSED_BY_SERVER = "closed_by_server"  # a close frame without session_ended (see code/reason)
    DROPPED = "dropped"  # TCP connection lost without a close frame (1006)
    KEEPALIVE_TIMEOUT = "keepalive_timeout"  # no pong in time: the network path is dead
    SEND_TIMEOUT = "send_timeout"  # the server stopped reading our audio
    PROTOCOL_ERROR = "protocol_error"  # WebSocket-level violation (e.g. an oversize message)


@dataclass(frozen=True)
class SessionOutcome:
    """How and why a session ended, for logs and the daemon's next decision."""

    kind: OutcomeKind
    code: int | None = None
    reason: str = ""
    detail: str = ""

    def __str__(self) -> str:
        text = self.kind.value
        if self.code is not None:
            text += f" (code {self.code}{': ' + self.reason if self.reason else ''})"
        if self.detail:
            text += f": {self.detail}"
        return text


@dataclass
class SessionStats:
    """Counters of one session."""

    frames_in: int = 0
    frames_out: int = 0
    audio_bytes_in: int = 0
    audio_bytes_out: int = 0
    bad_frames: int = 0
    unknown_events: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """Passes websockets' log lines on with secrets removed and frames summarised (no payload);
    its INFO chatter ("connection open/closed") goes to DEBUG.
    """

    def __init__(self, logger: logging.Logger, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(logger, {})
        self._secrets = tuple(s for s in secrets if s)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return _TOKEN_QUERY.sub(r"\1" + _REDACTED, text)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level == logging.INFO:
            level = logging.DEBUG
        if not self.isEnabledFor(level):
            return
        if args and isinstance(args[0], Frame):
            # "< %s" / "> %s" frame lines would print the start of the payload (audio, tokens).
            frame = args[0]
            text = f"{str(msg)[:1]} {frame.opcode.name} [{len(frame.data)} bytes]"
        else:
            # Format here (as LogRecord.getMessage would: only with args) so secrets can be cut out.
            text = str(msg) % args if args else str(msg)
        self.logger.log(level, "%s", self._clean(text), **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


def connection_url(ws_base: str, token: str) -> str:
    """`{ws_base}/v1/connection?token=...` (the token URL-quoted)."""
    return f"{ws_base.rstrip('/')}/v1/connection?token={quote(token, safe='')}"


def _handshake_body(body: bytes, secrets: tuple[str, ...]) -> str:
    text = body[:200].decode("utf-8", "replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return " ".join(text.split())


class VatelSession:
    """One voice session over one WebSocket connection. Async context manager (closes on exit)."""

    def __init__(self, ws: ClientConnection, *, send_timeout: float, close_timeout: float) -> None:
        self._ws = ws
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._send_lock = asyncio.Lock()
        self._outcome: SessionOutcome | None = None
        self._pending_outcome: SessionOutcome | None = None
        self._closed_by_us = False
        self._saw_session_ended = False
        self._first_bad_logged = False
        self._summary_logged = False
        self.session_id: str | None = None
        self.stats = SessionStats()

    @classmethod
    async def connect(
        cls,
        ws_base: str,
        token: str,
        *,
        open_timeout: float,
        close_timeout: float = 2.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        send_timeout: float = 5.0,
        write_limit: int = WRITE_LIMIT_BYTES,
    ) -> VatelSession:
        """Open the connection. Raises HandshakeError (a SessionError) without the token in it."""
        url = connection_url(ws_base, token)
        secrets = (token, quote(token, safe=""))
        try:
            ws = await connect(
                url,
                open_timeout=open_timeout,
                close_timeout=close_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                max_size=MAX_MESSAGE_BYTES,
                write_limit=write_limit,
                compression=None,  # small frames, predictable CPU on the device
                user_agent_header=f"vatel-edge/{__version__}",
                logger=RedactingLogger(ws_log, secrets),
            )
        except InvalidStatus as exc:
            resp = exc.response
            body = _handshake_body(bytes(resp.body or b""), secrets)
            message = f"WebSocket handshake rejected: HTTP {resp.status_code} {resp.reason_phrase}"
            if body:
                message += f": {body}"
            raise HandshakeError(message, status=resp.status_code) from None
        except TimeoutError:
            raise HandshakeError(f"WebSocket handshake timed out after {open_timeout:g} s") from None
        except InvalidURI:
            raise HandshakeError("invalid WebSocket URL (check vatel.base_url)") from None
        except InvalidHandshake as exc:
            text = str(exc)
            for secret in secrets:
                text = text.replace(secret, _REDACTED)
            raise HandshakeError(f"WebSocket handshake failed: {exc.__class__.__name__}: {text[:200]}") from None
        except ConnectionRefusedError:
            raise HandshakeError("WebSocket connection refused") from None
        except OSError as exc:
            raise HandshakeError(
                f"WebSocket connection failed: {exc.__class__.__name__} (errno {exc.errno})"
            ) from None
        log.info("voice session connected")
        return cls(ws, send_timeout=send_timeout, close_timeout=close_timeout)

    async def __aenter__(self) -> VatelSession:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ outcome

    @property
    def outcome(self) -> SessionOutcome | None:
        """Why the session ended; None while it is open.

        Final once events() ended or close()/wait_closed() returned; before that, a closed socket
        gives a provisional answer (a session_ended still queued unread is not known yet).
        """
        if self._outcome is None and self._ws.state is State.CLOSED:
            return self._classify()
        return self._outcome

    @property
    def open(self) -> bool:
        """The connection is open and usable for sends."""
        return self._outcome is None and self._pending_outcome is None and self._ws.state is State.OPEN

    def _finish(self) -> SessionOutcome:
        """Decide the outcome once, when the connection is closed (or declared dead); log it."""
        if self._outcome is None:
            self._outcome = self._classify()
            self._log_end()
        return self._outcome

    def _classify(self) -> SessionOutcome:
        if self._pending_outcome is not None:
            return self._pending_outcome
        proto = self._ws.protocol
        rcvd, sent = proto.close_rcvd, proto.close_sent
        if self._saw_session_ended:
            code = rcvd.code if rcvd is not None else None
            return SessionOutcome(OutcomeKind.SESSION_ENDED, code, rcvd.reason if rcvd else "")
        if self._closed_by_us:
            return SessionOutcome(OutcomeKind.CLOSED_BY_US, sent.code if sent else None, sent.reason if sent else "")
        if rcvd is not None and (sent is None or proto.close_rcvd_then_sent):
            return SessionOutcome(OutcomeKind.CLOSED_BY_SERVER, rcvd.code, rcvd.reason)
        if sent is not None:
            # We closed without asking: websockets failed the connection.
            if sent.code == 1011 and "keepalive" in sent.reason:
                return SessionOutcome(OutcomeKind.KEEPALIVE_TIMEOUT, 1006, "", "no pong from the server")
            return SessionOutcome(OutcomeKind.PROTOCOL_ERROR, sent.code, sent.reason)
        return SessionOutcome(OutcomeKind.DROPPED, 1006, "", "connection lost without a close frame")

    def _log_end(self) -> None:
        if self.stats.bad_frames > 1 and not self._summary_logged:
            self._summary_logged = True
            log.warning("skipped %d malformed server frames in this session", self.stats.bad_frames)
        level = logging.INFO
        if self._outcome is not None and self._outcome.kind in (
            OutcomeKind.DROPPED,
            OutcomeKind.KEEPALIVE_TIMEOUT,
            OutcomeKind.SEND_TIMEOUT,
            OutcomeKind.PROTOCOL_ERROR,
        ):
            level = logging.WARNING
        log.log(level, "voice session ended: %s", self._outcome)

    # ------------------------------------------------------------------ receiving

    async def events(self) -> AsyncIterator[protocol.ServerEvent]:
        """Decoded server events until the socket closes; malformed frames are logged and skipped."""
        while True:
            try:
                frame = await self._ws.recv()
            except ConnectionClosed:
                self._finish()
                return
            self.stats.frames_in += 1
            try:
                event = protocol.decode_server_message(frame)
            except ProtocolError as exc:
                self._bad_frame(exc)
                continue
            self._note_event(event)
            yield event

    def _bad_frame(self, exc: ProtocolError) -> None:
        self.stats.bad_frames += 1
        if not self._first_bad_logged:
            self._first_bad_logged = True
            log.warning("skipping malformed server frame: %s (further ones counted)", exc)
        else:
            log.debug("skipping malformed server frame #%d: %s", self.stats.bad_frames, exc)

    def _note_event(self, event: protocol.ServerEvent) -> None:
        if isinstance(event, protocol.ResponseAudio):
            self.stats.audio_bytes_in += len(event.audio)
            if log.isEnabledFor(logging.DEBUG):  # hot path: 50 chunks a second
                log.debug("%s", protocol.describe(event))
            return
        if isinstance(event, protocol.SessionStarted):
            self.session_id = event.session_id
        elif isinstance(event, protocol.SessionEnded):
            self._saw_session_ended = True
        elif isinstance(event, protocol.UnknownEvent):
            self.stats.unknown_events += 1
        log.info("%s", protocol.describe(event))

    # ------------------------------------------------------------------ sending

    async def send_input_audio(self, pcm: bytes) -> None:
        """Send one chunk of microphone audio. Raises SessionError once the session has ended."""
        await self._send(protocol.encode_input_audio(pcm))
        self.stats.audio_bytes_out += len(pcm)

    async def send_tool_call_output(self, tool_call_id: str, output: str) -> None:
        """Answer a tool_call. Raises SessionError once the session has ended."""
        await self._send(protocol.encode_tool_call_output(tool_call_id, output))
        log.info("tool_call_output id=%s (%d chars)", tool_call_id, len(output))

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            if not self.open:
                raise SessionError(f"voice session is closed: {self.outcome or 'closing'}")
            try:
                async with asyncio.timeout(self._send_timeout):
                    await self._ws.send(text)
            except TimeoutError:
                self._pending_outcome = SessionOutcome(
                    OutcomeKind.SEND_TIMEOUT,
                    1006,
                    "",
                    f"a send did not complete within {self._send_timeout:g} s (server not reading)",
                )
                self._ws.transport.abort()
                raise SessionError(f"voice session ended: {self._pending_outcome}") from None
            except ConnectionClosed:
                raise SessionError(f"voice session ended: {self.outcome or 'closed'}") from None
            self.stats.frames_out += 1

    # ------------------------------------------------------------------ closing

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close politely (bounded by close_timeout); idempotent, never raises for a dead socket."""
        if self._outcome is None and self._ws.state is not State.CLOSED:
            self._closed_by_us = self._ws.state is State.OPEN
            with contextlib.suppress(ConnectionClosed, OSError):
                await self._ws.close(code, reason)
        with contextlib.suppress(ConnectionClosed, OSError):
            await self._ws.wait_closed()
        self._finish()

    async def wait_closed(self) -> SessionOutcome:
        """Wait until the connection is closed; the outcome."""
        await self._ws.wait_closed()
        return self._finish()
