"""control.py: the control socket over real Unix sockets, the client's errors, and the status text."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from vatel_edge.control import ControlServer, control_request
from vatel_edge.errors import ControlError, ToolError
from vatel_edge.status import Counters, DaemonStatus, format_status

TIMEOUT = 10.0


async def echo(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "echo": request}


async def raw_exchange(path: Path, payload: bytes) -> dict[str, Any]:
    """Send raw bytes (no framing help) and parse the one-line answer."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), TIMEOUT)
    writer.close()
    await writer.wait_closed()
    result: dict[str, Any] = json.loads(line)
    return result


async def test_round_trip(sock_dir: Path) -> None:
    """A request reaches the handler and its answer comes back to control_request."""
    path = sock_dir / "control.sock"
    async with ControlServer(str(path), echo):
        resp = await control_request(str(path), {"cmd": "status", "n": 1}, timeout=TIMEOUT)
    assert resp == {"ok": True, "echo": {"cmd": "status", "n": 1}}


async def test_socket_mode_is_0660_and_file_removed_on_exit(sock_dir: Path) -> None:
    """The socket file is mode 0660 (never world-writable) while serving and gone afterwards."""
    path = sock_dir / "control.sock"
    async with ControlServer(str(path), echo):
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert not st.st_mode & stat.S_IWOTH
        assert [p.name for p in sock_dir.iterdir()] == ["control.sock"]  # no staging leftovers
    assert not path.exists()


async def test_missing_parent_directory_is_created_0755(sock_dir: Path) -> None:
    """A missing parent directory is created with mode 0755."""
    path = sock_dir / "run" / "vatel-edge" / "control.sock"
    async with ControlServer(str(path), echo):
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755
        assert (await control_request(str(path), {"cmd": "x"}, timeout=TIMEOUT))["ok"] is True


async def test_bad_json_gets_an_error_answer(sock_dir: Path) -> None:
    """Malformed JSON, a non-object and a missing cmd each get {"ok": false, "error": ...}."""
    path = sock_dir / "c.sock"
    async with ControlServer(str(path), echo):
        bad = await raw_exchange(path, b"{nope\n")
        assert bad["ok"] is False
        assert "not JSON" in bad["error"]
        arr = await raw_exchange(path, b"[1, 2]\n")
        assert arr == {"ok": False, "error": "bad request: expected a JSON object"}
        no_cmd = await raw_exchange(path, b'{"command": "status"}\n')
        assert no_cmd["ok"] is False
        assert '"cmd"' in no_cmd["error"]


async def test_request_without_newline_is_accepted_at_eof(sock_dir: Path) -> None:
    """A client that half-closes after the JSON (no newline) still gets its answer."""
    path = sock_dir / "c.sock"
    async with ControlServer(str(path), echo):
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"cmd": "trigger"}')
        writer.write_eof()
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        writer.close()
        await writer.wait_closed()
    assert json.loads(line)["echo"] == {"cmd": "trigger"}


async def test_oversize_request_is_refused(sock_dir: Path) -> None:
    """A request line over the 64 kB limit is answered with an error, not passed to the handler."""
    path = sock_dir / "c.sock"
    calls: list[dict[str, Any]] = []

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        calls.append(req)
        return {"ok": True}

    async with ControlServer(str(path), handler):
        big = json.dumps({"cmd": "status", "pad": "x" * (70 * 1024)}).encode() + b"\n"
        resp = await raw_exchange(path, big)
        assert resp["ok"] is False
        assert "too large" in resp["error"]
        assert (await control_request(str(path), {"cmd": "status"}, timeout=TIMEOUT))["ok"] is True
    assert calls == [{"cmd": "status"}]


async def test_handler_exception_is_contained_and_logged(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A handler bug answers ok:false (no traceback to the client), is logged, and the server keeps serving."""
    path = sock_dir / "c.sock"

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        if req["cmd"] == "crash":
            raise RuntimeError("handler bug")
        if req["cmd"] == "refuse":
            raise ToolError("no such tool")
        return {"ok": True}

    async with ControlServer(str(path), handler):
        crash = await control_request(str(path), {"cmd": "crash"}, timeout=TIMEOUT)
        refuse = await control_request(str(path), {"cmd": "refuse"}, timeout=TIMEOUT)
        fine = await control_request(str(path), {"cmd": "status"}, timeout=TIMEOUT)
    assert crash == {"ok": False, "error": "crash: internal error (see the journal)"}
    assert refuse == {"ok": False, "error": "refuse: no such tool"}
    assert fine == {"ok": True}
    logged = [r for r in caplog.records if r.name == "vatel_edge.control" and r.exc_info]
    assert logged and "handler bug" in str(logged[0].exc_info[1] if logged[0].exc_info else "")


async def test_handler_non_dict_answer_is_an_error(sock_dir: Path) -> None:
    """A handler answer that is not a JSON-able dict becomes ok:false."""
    path = sock_dir / "c.sock"

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "when": object()}

    async with ControlServer(str(path), handler):
        resp = await control_request(str(path), {"cmd": "status"}, timeout=TIMEOUT)
    assert resp["ok"] is False


async def test_silent_client_times_out(sock_dir: Path) -> None:
    """A client that connects and sends nothing gets an error after the read timeout."""
    path = sock_dir / "c.sock"
    async with ControlServer(str(path), echo, read_timeout_s=0.2):
        reader, writer = await asyncio.open_unix_connection(str(path))
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        writer.close()
        await writer.wait_closed()
    assert "no complete request" in json.loads(line)["error"]


async def test_busy_beyond_max_connections(sock_dir: Path) -> None:
    """With max_connections=1 and one request in progress, a second connection is answered 'busy'."""
    path = sock_dir / "c.sock"
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return {"ok": True}

    async with ControlServer(str(path), slow, max_connections=1):
        first = asyncio.create_task(control_request(str(path), {"cmd": "status"}, timeout=TIMEOUT))
        await asyncio.wait_for(entered.wait(), TIMEOUT)
        second = await control_request(str(path), {"cmd": "status"}, timeout=TIMEOUT)
        release.set()
        assert (await first)["ok"] is True
    assert second["ok"] is False
    assert "busy" in second["error"]


async def test_stale_socket_file_is_replaced(sock_dir: Path) -> None:
    """A socket file left by a dead daemon (nobody listening) is replaced."""
    path = sock_dir / "c.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    old_ino = os.stat(path).st_ino
    async with ControlServer(str(path), echo):
        assert os.stat(path).st_ino != old_ino
        assert (await control_request(str(path), {"cmd": "status"}, timeout=TIMEOUT))["ok"] is True


async def test_live_socket_is_not_stolen(sock_dir: Path) -> None:
    """When another server listens on the path, starting fails with ControlError and the path is untouched."""
    path = sock_dir / "c.sock"
    async with ControlServer(str(path), echo):
        with pytest.raises(ControlError, match="already listening"):
            async with ControlServer(str(path), echo):
                pass
        assert (await control_request(str(path), {"cmd": "status"}, timeout=TIMEOUT))["ok"] is True


async def test_regular_file_is_not_replaced(sock_dir: Path) -> None:
    """A regular file at the socket path is refused and left as it was."""
    path = sock_dir / "c.sock"
    path.write_text("important")
    with pytest.raises(ControlError, match="not a socket"):
        async with ControlServer(str(path), echo):
            pass
    assert path.read_text() == "important"


async def test_client_error_when_daemon_absent(sock_dir: Path) -> None:
    """No socket: ControlError says vatel-edge is not running and names the path."""
    path = sock_dir / "control.sock"
    with pytest.raises(ControlError, match=r"vatel-edge is not running \(no control socket at .*control\.sock\)"):
        await control_request(str(path), {"cmd": "status"}, timeout=TIMEOUT)


async def test_client_error_on_stale_socket(sock_dir: Path) -> None:
    """A socket file nobody listens on: ControlError says not running (stale socket)."""
    path = sock_dir / "c.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    with pytest.raises(ControlError, match="not running"):
        await control_request(str(path), {"cmd": "status"}, timeout=TIMEOUT)


def _python_for_nobody() -> str | None:
    """An interpreter user nobody may execute (the venv's may live under /root), or None."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        try:
            probe = subprocess.run(
                [candidate, "-c", "pass"], user="nobody", group="nogroup", extra_groups=[], cwd="/",
                capture_output=True, check=False, timeout=60,
            )
        except (PermissionError, FileNotFoundError):
            continue
        if probe.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the client as another user")
async def test_client_permission_denied_for_other_users(sock_dir: Path) -> None:
    """A user outside the socket's owner and group gets 'permission denied' (mode 0660 enforced by the kernel)."""
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python interpreter here that user nobody may execute")
    path = sock_dir / "c.sock"
    os.chmod(sock_dir, 0o755)
    repo = Path(__file__).resolve().parents[2]
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(repo)!r})
        from vatel_edge.control import control_request
        from vatel_edge.errors import ControlError
        try:
            asyncio.run(control_request({str(path)!r}, {{"cmd": "status"}}, timeout=5))
        except ControlError as exc:
            print(exc)
            sys.exit(3)
        """
    )
    async with ControlServer(str(path), echo):
        proc = await asyncio.create_subprocess_exec(
            python, "-c", script, user="nobody", group="nogroup", extra_groups=[], cwd="/",
            env={"PATH": "/usr/bin:/bin"}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 3, err.decode()
    assert "permission denied on" in out.decode()
    assert "vatel-edge group" in out.decode()


async def test_exit_is_idempotent_and_keeps_a_replaced_socket(sock_dir: Path) -> None:
    """aclose twice is fine; a socket file that another process put in place is not deleted by us."""
    path = sock_dir / "c.sock"
    server = ControlServer(str(path), echo)
    await server.__aenter__()
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    try:
        await server.aclose()
        await server.aclose()
        assert path.exists()
    finally:
        other.close()


# --------------------------------------------------------------------------- status


def sample_status() -> DaemonStatus:
    return DaemonStatus(
        state="in_session",
        uptime_s=2 * 3600 + 3 * 60 + 4,
        pid=4242,
        wake_mode="vad",
        session_id="sess_123",
        session_age_s=75,
        token_status="ready",
        counters=Counters(
            wakes=12, sessions=10, sessions_failed=2, interruptions=3,
            tool_calls={"ok": 7, "error": 1}, capture_overruns=0, capture_dropped=4,
            token_failures=1, connection_failures=2,
        ),
        last_error="SessionError: handshake failed (HTTP 503)",
        last_error_at=1_000_000.0,
    )


def test_status_to_dict_is_json_ready() -> None:
    """DaemonStatus.to_dict() survives a JSON round trip unchanged."""
    d = sample_status().to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["counters"]["tool_calls"] == {"ok": 7, "error": 1}


def test_format_status_shows_every_part() -> None:
    """The status text shows state, session, uptime, each counter and the last error with its age."""
    text = format_status(sample_status().to_dict(), now=1_000_000.0 + 300)
    assert "vatel-edge 0.1.0 (pid 4242), up 2 h 03 min" in text
    for fragment in (
        "state:        in_session",
        "session:      sess_123 (for 1 min 15 s)",
        "token:        ready",
        "wakes                12",
        "sessions             10 (2 failed)",
        "interruptions        3",
        "tool calls           1 error, 7 ok",
        "capture              0 overruns, 4 dropped frames",
        "token failures       1",
        "connection failures  2",
        "last error:   SessionError: handshake failed (HTTP 503) (5 min 00 s ago)",
    ):
        assert fragment in text, fragment


def test_format_status_tolerates_a_sparse_dict() -> None:
    """Missing keys show as '?' or 'none' instead of failing (an older daemon's answer)."""
    text = format_status({"state": "listening"})
    assert "state:        listening" in text
    assert "session:      none" in text
    assert "wakes                ?" in text
    assert "last error:   none" in text


async def test_status_over_the_socket(sock_dir: Path) -> None:
    """The daemon's status answer travels through the socket and formats on the client side."""
    path = sock_dir / "c.sock"

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "status": sample_status().to_dict()}

    async with ControlServer(str(path), handler):
        resp = await control_request(str(path), {"cmd": "status"}, timeout=TIMEOUT)
    assert "state:        in_session" in format_status(resp["status"])


def test_no_logging_configured_by_module() -> None:
    """Importing control adds no handlers (library code never configures logging)."""
    assert not logging.getLogger("vatel_edge.control").handlers
