"""The local control socket: newline-delimited JSON over a Unix stream socket, one request per connection.

Requests are objects with a "cmd" string, e.g. {"cmd": "trigger"}, {"cmd": "status"}, {"cmd": "end_session"};
responses are objects with "ok" (true/false) and, on failure, "error". The daemon supplies the handler;
`ControlServer` owns the socket, limits and error containment; `control_request` is the CLI's client.

{"cmd": "events"} is the one streaming request: the answer {"ok": true, "events": true} is followed by one
line per daemon event (events.DaemonEvent.to_dict) until the client closes the connection. A subscriber that
falls behind (the hub's bounded queue, or a write that cannot finish within STREAM_WRITE_TIMEOUT_S) gets a
last {"ok": false, "error": "dropped: ..."} line if it still can and is disconnected; the daemon never waits
for it. At most MAX_SUBSCRIBERS streams at once, apart from the request limit. `event_stream` is the client.

The socket file is mode 0660 (service user and group; never writable by others) and is created under a
temporary name and renamed into place, so it is never reachable with looser permissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

from vatel_edge.errors import ControlError, VatelEdgeError
from vatel_edge.events import EventHub, Subscription
from vatel_edge.lifecycle import AsyncClosing, cancel_and_wait

log = logging.getLogger(__name__)

DEFAULT_SOCKET_PATH: Final = "/run/vatel-edge/control.sock"
MAX_REQUEST_BYTES: Final = 64 * 1024
MAX_RESPONSE_BYTES: Final = 1024 * 1024
READ_TIMEOUT_S: Final = 5.0
HANDLER_TIMEOUT_S: Final = 10.0
MAX_CONNECTIONS: Final = 16
SOCKET_MODE: Final = 0o660
DIR_MODE: Final = 0o755
MAX_SUBSCRIBERS: Final = 8
#: A subscriber whose socket takes no more of the stream for this long is dropped.
STREAM_WRITE_TIMEOUT_S: Final = 5.0
EVENTS_CMD: Final = "events"
#: On close, how long streams get to end by themselves before they are cancelled.
STREAM_CLOSE_S: Final = 1.0

ControlHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _encode(response: Mapping[str, Any]) -> bytes:
    return json.dumps(response, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


class ControlServer(AsyncClosing):
    """Serves the control socket at `path` until exit; removes the socket file on exit.

    Overflow policy: at most `max_connections` requests are served at once; further connections get
    {"ok": false, "error": "busy ..."} at once and are closed. A request line is at most `max_request_bytes`
    and must arrive within `read_timeout_s`; the handler gets `handler_timeout_s`.
    """

    def __init__(
        self,
        path: str,
        handler: ControlHandler,
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        read_timeout_s: float = READ_TIMEOUT_S,
        handler_timeout_s: float = HANDLER_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        events: EventHub | None = None,
        max_subscribers: int = MAX_SUBSCRIBERS,
        stream_write_timeout_s: float = STREAM_WRITE_TIMEOUT_S,
    ) -> None:
        self.path = path
        self._events = events
        self._max_subscribers = max_subscribers
        self._stream_write_timeout_s = stream_write_timeout_s
        self._streams: set[asyncio.Task[None]] = set()
        self._subscriptions: set[Subscription] = set()
        self._handler = handler
        self._max_request_bytes = max_request_bytes
        self._read_timeout_s = read_timeout_s
        self._handler_timeout_s = handler_timeout_s
        self._max_connections = max_connections
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._inode: tuple[int, int] | None = None

    async def __aenter__(self) -> ControlServer:
        sock = self._bind()
        try:
            # limit: readuntil() raises LimitOverrunError beyond it (the +1 leaves room for the newline).
            self._server = await asyncio.start_unix_server(
                self._on_connection, sock=sock, limit=self._max_request_bytes + 1
            )
        except BaseException:
            sock.close()
            self._unlink()
            raise
        log.info("control socket listening at %s", self.path)
        return self


    async def aclose(self) -> None:
        """Stop listening, cancel requests in progress, remove the socket file (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for sub in list(self._subscriptions):
            sub.close()  # each stream ends by itself (a cancelled connection task upsets asyncio's streams)
        if self._streams:
            await asyncio.wait(set(self._streams), timeout=STREAM_CLOSE_S)
        await cancel_and_wait(*self._connections, *self._streams)
        if server is not None:
            await server.wait_closed()
        self._unlink()

    # ------------------------------------------------------------------ socket file

    def _bind(self) -> socket.socket:
        """A listening socket at self.path, mode 0660, created under a private temporary name first."""
        target = Path(self.path)
        parent = target.parent
        if not parent.is_dir():
            parent.mkdir(parents=True, exist_ok=True)
            os.chmod(parent, DIR_MODE)
        self._check_existing(target)
        staging = tempfile.mkdtemp(prefix=".control-", dir=parent)  # mode 0700: nobody else can reach inside
        tmp_path = os.path.join(staging, "sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(tmp_path)
            os.chmod(tmp_path, SOCKET_MODE)
            sock.listen(self._max_connections)
            os.rename(tmp_path, target)  # atomically replaces a stale socket file
            st = os.stat(target)
            self._inode = (st.st_dev, st.st_ino)
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot create control socket at {self.path}: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            os.rmdir(staging)
        sock.setblocking(False)
        return sock

    def _check_existing(self, target: Path) -> None:
        """Refuse a non-socket file or a socket a live process listens on; a stale socket may be replaced."""
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{target} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.settimeout(1.0)
            probe.connect(str(target))
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                log.info("replacing stale control socket %s", target)
                return
            raise ControlError(f"cannot check existing control socket {target}: {exc.strerror or exc}") from None
        else:
            raise ControlError(f"another process is already listening on {target} (is vatel-edge running?)")
        finally:
            probe.close()

    def _unlink(self) -> None:
        """Remove our socket file, unless another process has replaced it meanwhile."""
        inode, self._inode = self._inode, None
        if inode is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove control socket %s: %s", self.path, exc.strerror or exc)

    # ------------------------------------------------------------------ requests

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        busy = len(self._connections) >= self._max_connections
        self._connections.add(task)
        try:
            if busy:
                response = _error("busy: too many control requests at once; try again")
            else:
                request, response = await self._read_request(reader)
                if request is not None and request["cmd"] == EVENTS_CMD and self._events is not None:
                    self._connections.discard(task)  # a stream holds no request slot
                    await self._stream(self._events, reader, writer, task)
                    return
                if request is not None:
                    response = await self._call_handler(request["cmd"], request)
            writer.write(_encode(response))
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("control client went away: %s", exc.__class__.__name__)
        finally:
            self._connections.discard(task)
            self._streams.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(the request object with a "cmd" string, or None and the error response)."""
        request, error = None, await self._parse_request(reader)
        if "cmd" in error:
            request, error = error, {}
        return request, error

    async def _parse_request(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self._read_timeout_s)
        except asyncio.IncompleteReadError as exc:
            line = exc.partial  # the client closed its side without a newline: take what it sent
        except asyncio.LimitOverrunError:
            return _error(f"request too large (limit {self._max_request_bytes} bytes)")
        except TimeoutError:
            return _error(f"no complete request within {self._read_timeout_s:g} s")
        if len(line) > self._max_request_bytes:
            return _error(f"request too large (limit {self._max_request_bytes} bytes)")
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(f"bad request: not JSON ({exc.__class__.__name__})")
        if not isinstance(request, dict):
            return _error("bad request: expected a JSON object")
        cmd = request.get("cmd")
        if not isinstance(cmd, str) or not cmd:
            return _error('bad request: "cmd" must be a non-empty string')
        return request

    # ------------------------------------------------------------------ the event stream

    async def _stream(self, hub: EventHub, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      task: asyncio.Task[None]) -> None:
        """Serve one `events` subscriber until it leaves or is dropped (see the module docstring)."""
        if len(self._streams) >= self._max_subscribers:
            writer.write(_encode(_error(f"busy: {self._max_subscribers} event subscribers already")))
            await writer.drain()
            return
        self._streams.add(task)
        sub = hub.subscribe()
        self._subscriptions.add(sub)
        writer.write(_encode({"ok": True, "events": True}))
        pump = asyncio.ensure_future(self._pump(sub, writer))
        left = asyncio.ensure_future(_until_eof(reader))
        try:
            await asyncio.wait({pump, left}, return_when=asyncio.FIRST_COMPLETED)
            reason = pump.result() if pump.done() else None  # else: the client left
        finally:
            sub.close()
            self._subscriptions.discard(sub)
            await cancel_and_wait(pump, left)
        if reason is not None:
            log.warning("event subscriber dropped: %s", reason)
            writer.write(_encode(_error(f"dropped: {reason}")))  # best effort: nobody waits for it
            writer.transport.abort()

    async def _pump(self, sub: Subscription, writer: asyncio.StreamWriter) -> str | None:
        """Write events as they come; why the subscriber is dropped, or None when the stream just ended."""
        async for event in sub:
            writer.write(_encode(event.to_dict()))
            try:
                async with asyncio.timeout(self._stream_write_timeout_s):
                    await writer.drain()
            except TimeoutError:
                return f"its socket took nothing for {self._stream_write_timeout_s:g} s"
        return "it fell behind by the hub's whole queue" if sub.dropped else None

    async def _call_handler(self, cmd: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await asyncio.wait_for(self._handler(request), self._handler_timeout_s)
        except TimeoutError:
            log.error("control command %r took longer than %g s", cmd, self._handler_timeout_s)
            return _error(f"{cmd}: no answer within {self._handler_timeout_s:g} s")
        except VatelEdgeError as exc:
            log.warning("control command %r failed: %s", cmd, exc)
            return _error(f"{cmd}: {exc}")
        except Exception:  # the boundary: a handler bug must not take the control socket down
            log.exception("control command %r raised", cmd)
            return _error(f"{cmd}: internal error (see the journal)")
        if not isinstance(response, dict):
            log.error("control command %r returned %s, not a dict", cmd, type(response).__name__)
            return _error(f"{cmd}: internal error (see the journal)")
        try:
            json.dumps(response)
        except (TypeError, ValueError):
            log.exception("control command %r returned a response that is not JSON", cmd)
            return _error(f"{cmd}: internal error (see the journal)")
        return response


async def control_request(path: str, request: Mapping[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the daemon's control socket and return its response (which may be ok: false).

    Raises ControlError when the daemon is not running, access is denied, or it does not answer in time.
    """
    try:
        return await asyncio.wait_for(_exchange(path, request), timeout)
    except TimeoutError:
        raise ControlError(f"vatel-edge did not answer on {path} within {timeout:g} s") from None


async def _connect(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the control socket; ControlError saying why there is none."""
    try:
        return await asyncio.open_unix_connection(path, limit=MAX_RESPONSE_BYTES)
    except FileNotFoundError:
        raise ControlError(f"vatel-edge is not running (no control socket at {path})") from None
    except ConnectionRefusedError:
        raise ControlError(f"vatel-edge is not running (stale control socket at {path})") from None
    except PermissionError:
        raise ControlError(
            f"permission denied on {path}: run as root or add your user to the vatel-edge group"
        ) from None
    except OSError as exc:
        raise ControlError(f"cannot reach vatel-edge at {path}: {exc.strerror or exc}") from None


async def _exchange(path: str, request: Mapping[str, Any]) -> dict[str, Any]:
    reader, writer = await _connect(path)
    try:
        writer.write(_encode(request))
        await writer.drain()
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        raise ControlError("vatel-edge closed the control connection without answering") from None
    except asyncio.LimitOverrunError:
        raise ControlError("vatel-edge sent an oversized answer") from None
    except OSError as exc:
        raise ControlError(f"control connection failed: {exc.strerror or exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    try:
        response = json.loads(line)
    except ValueError:
        raise ControlError("vatel-edge sent an answer that is not JSON") from None
    if not isinstance(response, dict):
        raise ControlError("vatel-edge sent an answer that is not a JSON object")
    return response


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Wait until the client closes its side (anything it sends meanwhile is discarded)."""
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(4096):
            pass


async def event_stream(path: str, *, connect_timeout: float = 5.0) -> AsyncIterator[dict[str, Any]]:
    """Subscribe to the daemon's events: each event as a dict, until the daemon closes the stream.

    Raises ControlError when the daemon is not running, access is denied, it refuses the subscription, or it
    dropped this subscriber (the error says why)."""
    reader, writer = await asyncio.wait_for(_connect(path), connect_timeout)
    try:
        writer.write(_encode({"cmd": EVENTS_CMD}))
        await writer.drain()
        first = True
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                if first:
                    raise ControlError("vatel-edge closed the control connection without answering") from None
                return
            except asyncio.LimitOverrunError:
                raise ControlError("vatel-edge sent an oversized event") from None
            try:
                item = json.loads(line)
            except ValueError:
                raise ControlError("vatel-edge sent an event that is not JSON") from None
            if not isinstance(item, dict):
                raise ControlError("vatel-edge sent an event that is not a JSON object")
            if item.get("ok") is False:
                raise ControlError(str(item.get("error", "events refused")))
            if first:
                first = False
                if item.get("ok") is True:
                    continue
                raise ControlError("this vatel-edge does not stream events (too old?)")
            yield item
    except OSError as exc:
        raise ControlError(f"event stream failed: {exc.strerror or exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
