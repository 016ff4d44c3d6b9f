"""One simulated voice session: the server side of a WebSocket, driven by websockets' sans-I/O protocol.

`SimSession` is both the record of what the client sent (input_audio bytes, message log, tool
outputs, client errors) and the handle a script uses to play the agent (send turns, tool calls,
faults such as an abrupt drop or a server that stops reading).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat
from vatel_edge.devkit.simulator.messages import (
    ClientInputAudio,
    ClientMessageError,
    ClientToolCallOutput,
    parse_client_message,
    server_message,
    tool_arguments,
)

log = logging.getLogger(__name__)

Script = Callable[["SimSession"], Awaitable[None]]


class SimSessionClosed(Exception):
    """The client side is gone; raised into a script that tries to use the session."""


@dataclass(frozen=True)
class MessageRecord:
    """One message in or out, with the monotonic time it was seen."""

    t: float
    direction: str  # "in" (from the client) or "out" (to the client)
    type: str
    summary: str


@dataclass
class SimSession:
    """Server side of one voice connection (records + script handle)."""

    id: str
    token: str
    strict: bool
    fmt: AudioFormat = VATEL_FORMAT
    input_audio: bytearray = field(default_factory=bytearray)
    messages: list[MessageRecord] = field(default_factory=list)
    tool_outputs: dict[str, str] = field(default_factory=dict)
    client_errors: list[str] = field(default_factory=list)
    client_close: tuple[int, str] | None = None  # close frame received from the client
    server_close: tuple[int, str] | None = None  # close frame we sent
    dropped: bool = False
    started_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._proto: ServerProtocol | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._audio_cond = asyncio.Condition()
        self._closed = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._tool_waiters: dict[str, asyncio.Future[str]] = {}
        self._tool_ids = itertools.count(1)
        self._text_parts: list[bytes] = []
        self._audio_arrived = False
        self._error_sink: list[str] | None = None

    # ------------------------------------------------------------------ records

    @property
    def closed(self) -> bool:
        """The connection is gone (either side)."""
        return self._closed.is_set()

    def audio_ms(self) -> float:
        """Milliseconds of input_audio received so far."""
        return self.fmt.duration_ms(len(self.input_audio))

    def types_in(self) -> list[str]:
        """Types of the client's messages, in order."""
        return [m.type for m in self.messages if m.direction == "in"]

    def _record(self, direction: str, mtype: str, summary: str) -> None:
        self.messages.append(MessageRecord(time.monotonic(), direction, mtype, summary))

    def _client_error(self, text: str) -> None:
        self.client_errors.append(text)
        if self._error_sink is not None:
            self._error_sink.append(f"session {self.id}: {text}")
        log.warning("simulator: client error in session %s: %s", self.id, text)
        self._record("in", "error", text)
        if self.strict:
            self._close_now(1008, "protocol violation")

    # ------------------------------------------------------------------ the pump

    async def run(
        self,
        proto: ServerProtocol,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        script: Script,
        *,
        send_session_started: bool,
        script_errors: list[str],
    ) -> None:
        """Serve the open connection: read frames, run the script, until either side closes."""
        self._proto, self._reader, self._writer = proto, reader, writer
        script_task: asyncio.Task[None] | None = None
        try:
            if send_session_started:
                await self.send("session_started", {"id": self.id})
            script_task = asyncio.create_task(self._run_script(script, script_errors), name=f"sim-script-{self.id}")
            await self._read_loop()
        finally:
            self._closed.set()
            if script_task is not None:
                script_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await script_task
            for fut in self._tool_waiters.values():
                if not fut.done():
                    fut.set_exception(SimSessionClosed("client gone before the tool output"))
            self._tool_waiters.clear()
            async with self._audio_cond:
                self._audio_cond.notify_all()
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _run_script(self, script: Script, script_errors: list[str]) -> None:
        try:
            await script(self)
        except SimSessionClosed:
            log.debug("simulator: session %s: client left during the script", self.id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken script is a test failure: record it, close 1011
            script_errors.append(f"session {self.id}: {exc.__class__.__name__}: {exc}")
            log.exception("simulator: script of session %s failed", self.id)
            self._close_now(1011, "simulator script error")

    async def _read_loop(self) -> None:
        assert self._proto is not None and self._reader is not None
        proto = self._proto
        while proto.state is not State.CLOSED:
            await self._reading.wait()
            try:
                data = await self._reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            if self.dropped:
                return
            if data:
                proto.receive_data(data)
            else:
                proto.receive_eof()
            for event in proto.events_received():
                if isinstance(event, Frame):
                    self._on_frame(event)
            self._flush()
            if self._audio_arrived:
                self._audio_arrived = False
                async with self._audio_cond:
                    self._audio_cond.notify_all()
            if not data:
                return

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            assert self._proto is not None
            rcvd = self._proto.close_rcvd
            if rcvd is not None:
                self.client_close = (rcvd.code, rcvd.reason)
                self._record("in", "close", f"code {rcvd.code} {rcvd.reason}".strip())
            return
        if frame.opcode in (Opcode.PING, Opcode.PONG):
            self._record("in", frame.opcode.name.lower(), f"{len(frame.data)} bytes")
            return
        if frame.opcode is Opcode.BINARY:
            self._client_error(f"binary frame ({len(frame.data)} bytes)")
            return
        self._text_parts.append(bytes(frame.data))
        if not frame.fin:
            return
        raw, self._text_parts = b"".join(self._text_parts), []
        if frame.opcode is Opcode.CONT and not raw:
            return
        self._on_text(raw.decode("utf-8", "replace"))

    def _on_text(self, text: str) -> None:
        try:
            msg = parse_client_message(text)
        except ClientMessageError as exc:
            self._client_error(str(exc))
            return
        if isinstance(msg, ClientInputAudio):
            self.input_audio += msg.pcm
            self._record("in", "input_audio", f"{len(msg.pcm)} bytes")
            self._audio_arrived = True
            return
        assert isinstance(msg, ClientToolCallOutput)
        self._record("in", "tool_call_output", f"id={msg.tool_call_id} {len(msg.output)} chars")
        fut = self._tool_waiters.get(msg.tool_call_id)
        if msg.tool_call_id in self.tool_outputs:
            self._client_error(f"tool_call_output for {msg.tool_call_id!r} already answered")
            return
        if fut is None:
            self._client_error(f"tool_call_output for unknown toolCallId {msg.tool_call_id!r}")
            return
        self.tool_outputs[msg.tool_call_id] = msg.output
        if not fut.done():
            fut.set_result(msg.output)

    def _flush(self) -> None:
        assert self._proto is not None and self._writer is not None
        for data in self._proto.data_to_send():
            if self._writer.is_closing():
                return
            if data:
                self._writer.write(data)
            elif self._writer.can_write_eof():
                self._writer.write_eof()

    def _close_now(self, code: int, reason: str) -> None:
        if self._proto is None or self._proto.state is not State.OPEN:
            return
        self.server_close = (code, reason)
        self._record("out", "close", f"code {code} {reason}".strip())
        self._proto.send_close(code, reason)
        self._flush()

    # ------------------------------------------------------------------ script handle: sending

    def _check_open(self) -> ServerProtocol:
        if self._proto is None or self._proto.state is not State.OPEN or self.closed:
            raise SimSessionClosed(f"session {self.id} is closed")
        return self._proto

    async def send(self, mtype: str, data: Mapping[str, Any] | None = None, *, summary: str = "") -> None:
        """Send one server message `{"type": mtype, "data": data}`."""
        await self.send_raw(server_message(mtype, data), record_type=mtype, summary=summary)

    async def send_raw(self, frame: str | bytes, *, record_type: str = "raw", summary: str = "") -> None:
        """Send any frame as is: str as a text frame, bytes as a binary frame (garbage, huge...)."""
        proto = self._check_open()
        if isinstance(frame, bytes):
            proto.send_binary(frame)
        else:
            proto.send_text(frame.encode("utf-8"))
        self._record("out", record_type, summary or f"{len(frame)} chars")
        self._flush()
        assert self._writer is not None
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise SimSessionClosed(str(exc)) from None

    async def send_transcript(self, text: str, *, is_final: bool = True, turn_id: str | None = None) -> None:
        """`input_audio_transcript`."""
        data: dict[str, Any] = {"transcript": text, "is_final": is_final}
        if turn_id is not None:
            data["turn_id"] = turn_id
        await self.send("input_audio_transcript", data)

    async def speech_started(self, *, emulated: bool = False) -> None:
        """`speech_started`."""
        await self.send("speech_started", {"emulated": emulated})

    async def speech_stopped(self) -> None:
        """`speech_stopped`."""
        await self.send("speech_stopped")

    async def interrupt(self) -> None:
        """`interruption`: the client should stop playing now."""
        await self.send("interruption")

    async def send_turn(
        self,
        turn_id: str,
        pcm: bytes,
        *,
        text: str | None = None,
        chunk_ms: float = 40.0,
        realtime: bool = False,
    ) -> None:
        """One agent utterance: optional response_text, then response_audio chunks, the last is_final.

        realtime paces chunks at their playback duration (like the platform's TTS stream).
        """
        if text is not None:
            await self.send("response_text", {"turn_id": turn_id, "text": text, "is_final": True})
        step = self.fmt.nbytes(chunk_ms)
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)] or [b""]
        start = time.monotonic()
        for n, chunk in enumerate(chunks):
            if realtime:
                due = start + n * chunk_ms / 1000.0
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            is_final = n == len(chunks) - 1
            data = {"turn_id": turn_id, "audio": base64.b64encode(chunk).decode("ascii"), "is_final": is_final}
            await self.send("response_audio", data, summary=f"turn={turn_id} {len(chunk)} bytes{' final' * is_final}")

    async def tool_call(
        self, name: str, args: Mapping[str, Any] | Sequence[Mapping[str, Any]] = (), *, timeout: float = 10.0
    ) -> str:
        """Send a tool_call and wait for its tool_call_output; the output string."""
        call_id = f"call_{self.id}_{next(self._tool_ids)}"
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tool_waiters[call_id] = fut
        arguments = tool_arguments(args) if isinstance(args, Mapping) else [dict(a) for a in args]
        await self.send("tool_call", {"toolCallId": call_id, "toolName": name, "arguments": arguments})
        async with asyncio.timeout(timeout):
            return await fut

    async def end_session(self, *, code: int = 1000, reason: str = "") -> None:
        """`session_ended`, then a normal close (as the platform does)."""
        await self.send("session_ended")
        await self.close(code, reason)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame with `code` (the client answers, then the TCP connection ends)."""
        self._check_open()
        self._close_now(code, reason)

    def drop(self) -> None:
        """Abrupt TCP close, no close frame (the client sees 1006)."""
        if self._writer is None or self.closed:
            return
        self.dropped = True
        self._record("out", "drop", "TCP reset, no close frame")
        transport = self._writer.transport
        transport.abort()
        self._reading.set()

    def stop_reading(self) -> None:
        """Stop reading from the socket (the client's sends back up, then block)."""
        self._reading.clear()
        if self._writer is not None:
            self._writer.transport.pause_reading()  # type: ignore[attr-defined]
        self._record("out", "stop_reading", "")

    def resume_reading(self) -> None:
        """Read from the socket again."""
        if self._writer is not None:
            self._writer.transport.resume_reading()  # type: ignore[attr-defined]
        self._reading.set()

    # ------------------------------------------------------------------ script handle: waiting

    async def wait_audio(self, ms: float, *, timeout: float = 10.0) -> None:
        """Wait until at least `ms` of input_audio has arrived (SimSessionClosed if the client leaves)."""
        need = self.fmt.nbytes(ms)
        async with asyncio.timeout(timeout), self._audio_cond:
            while len(self.input_audio) < need:
                if self.closed:
                    raise SimSessionClosed(f"client left after {self.audio_ms():.0f} ms of audio")
                await self._audio_cond.wait()

    async def wait_seconds(self, seconds: float) -> None:
        """Sleep (a script step)."""
        await asyncio.sleep(seconds)

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait until the connection is gone."""
        async with asyncio.timeout(timeout):
            await self._closed.wait()
