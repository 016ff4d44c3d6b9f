"""The local control socket: newline-delimited JSON over a Unix stream socket, one request per connection.

Requests are objects with a "cmd" string, e.g. {"cmd": "trigger"}, {"cmd": "status"}, {"cmd": "end_session"};
responses are objects with "ok" (true/false) and, on failure, "error". The daemon supplies the handler;
`ControlServer` owns the socket, limits and error containment; `control_request` is the CLI's client.

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
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

from vatel_edge.errors import ControlError, VatelEdgeError
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
    ) -> None:
        self.path = path
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
        await cancel_and_wait(*self._connections)
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
                response = await self._serve(reader)
            writer.write(_encode(response))
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("control client went away: %s", exc.__class__.__name__)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader) -> dict[str, Any]:
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
        return await self._call_handler(cmd, request)

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


async def _exchange(path: str, request: Mapping[str, Any]) -> dict[str, Any]:
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_RESPONSE_BYTES)
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
