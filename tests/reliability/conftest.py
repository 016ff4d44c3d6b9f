"""Shared pieces of the reliability suite: a daemon on the real-time test devices in manual wake mode,
short timeouts, a real sd_notify listener, log counting and secret scanning.

Every daemon here runs in-process on `test_mic`/`test_spk` (the session-scoped PulseAudio server of
tests/conftest.py) against a local `Simulator`; wakes come from `daemon.trigger()`, so no speech is needed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.helpers import daemon_config
from vatel_edge.config import Config
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.notify import Notifier
from vatel_edge.state import State

#: How long the daemon may take to be LISTENING again after a fault (generous: loaded 2-core CI machine).
RECOVERY_S = 10.0
#: Overrides that make every fault resolve quickly: manual wake, no cooldown, short network timeouts.
FAST: dict[str, Any] = {
    "wake": {"mode": "manual", "cooldown_ms": 0},
    "session": {"idle_timeout_s": 5.0, "close_timeout_s": 0.5},
    "vatel": {"http_timeout_s": 1.0, "connect_timeout_s": 1.0},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of config override tables (`over` wins)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def reliability_config(tmp_path: Path, base_url: str, agent_id: str, **overrides: Any) -> Config:
    """The daemon config of this suite (tests/daemon/helpers.py's, plus FAST, plus `overrides`)."""
    return daemon_config(tmp_path, base_url, agent_id, **merge(FAST, overrides))


class Events:
    """The daemon's event stream (on_event sink)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []

    def __call__(self, kind: str, text: str) -> None:
        self.rows.append((kind, text))

    def of(self, kind: str) -> list[str]:
        return [t for k, t in self.rows if k == kind]


class NotifyListener:
    """A real sd_notify receiver (AF_UNIX datagram socket) standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def notifier(self) -> Notifier:
        return Notifier({"NOTIFY_SOCKET": str(self.path)})

    def poll(self) -> list[str]:
        """Every datagram received so far, one string per assignment line."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            self.messages.extend(data.decode("utf-8", "replace").splitlines())

    def statuses(self) -> list[str]:
        return [m.removeprefix("STATUS=") for m in self.poll() if m.startswith("STATUS=")]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


@asynccontextmanager
async def live_daemon(
    cfg: Config, api_key: str, *, notifier: Notifier | None = None, events: Events | None = None
) -> AsyncIterator[Daemon]:
    """A running daemon, LISTENING when the block starts; stopped and awaited after it."""
    daemon = Daemon(cfg, api_key=api_key, notifier=notifier, on_event=events)
    async with running(daemon) as task:
        await daemon.wait_state(State.LISTENING, timeout=20)
        yield daemon
        assert not task.done(), f"the daemon's run() ended by itself: {task}"


async def wake_and_wait(daemon: Daemon, *, timeout: float = RECOVERY_S) -> None:
    """trigger(), then wait until the daemon is LISTENING again (after the session or the failed connect)."""
    assert daemon.trigger("test"), f"trigger refused in state {daemon.state}"
    await asyncio.sleep(0)
    await daemon.wait_state(State.LISTENING, timeout=timeout)


async def quick_end(s: SimSession) -> None:
    """Simulator script: take a little audio, then end the session politely."""
    await s.wait_audio(100, timeout=10)
    await s.end_session()


async def hold_open(s: SimSession) -> None:
    """Simulator script: keep the session open until the client leaves."""
    await s.wait_closed(timeout=60)


def records_at_least(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= level]


def count_mentions(caplog: pytest.LogCaptureFixture, needle: str, level: int = logging.WARNING) -> dict[str, int]:
    """Per logger: how many records at `level` or above mention `needle` (message or exception text)."""
    out: dict[str, int] = {}
    for r in records_at_least(caplog, level):
        if r.name.startswith("vatel_edge.devkit.simulator"):
            continue  # the simulator's own account of the fault is not the daemon's
        text = r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        if needle.lower() in text.lower():
            out[r.name] = out.get(r.name, 0) + 1
    return out


def all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record, fully formatted (message, exception, stack), for secret scans."""
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    parts = []
    for r in caplog.records:
        parts.append(fmt.format(r))
        parts.append(repr(r.args))
        parts.append(repr(getattr(r, "vatel", "")))
    return "\n".join(parts)


def sim_secrets(sim: Simulator) -> list[str]:
    """The API key and every token the simulator issued (the values that must never leak)."""
    return [sim.api_key, *sim.issued]


def assert_no_secrets(texts: Iterable[str], secrets: Iterable[str], where: str) -> None:
    blob = "\n".join(texts)
    for secret in secrets:
        assert secret, "empty secret in the scan list"
        assert secret not in blob, f"a secret ({len(secret)} chars) leaked into {where}"
        # also its tail: the JWT signature part alone is as good as the token for nobody, but a key's tail is
        tail = secret[-16:]
        assert tail not in blob, f"the tail of a secret leaked into {where}"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: the short CI soak (bench/soak as a subprocess); -m 'not soak' skips it")


def config_toml(
    tmp_path: Path,
    base_url: str,
    agent_id: str,
    *,
    allow_insecure: bool = False,
    http_timeout_s: float = 5.0,
    connect_timeout_s: float = 1.0,
    idle_timeout_s: float = 5.0,
    extra: str = "",
) -> str:
    """A config *file* for daemons that read one (subprocesses, reloads): manual wake, test devices."""
    return f"""
[vatel]
agent_id = "{agent_id}"
base_url = "{base_url}"
allow_insecure = {"true" if allow_insecure else "false"}
http_timeout_s = {http_timeout_s}
connect_timeout_s = {connect_timeout_s}
[audio]
capture_device = "test_mic"
playback_device = "test_spk"
echo_cancel = "off"
mic_during_playback = "stream"
[wake]
mode = "manual"
cooldown_ms = 0
[session]
idle_timeout_s = {idle_timeout_s}
close_timeout_s = 0.5
[control]
socket_path = "{tmp_path / 'control.sock'}"
[gpio]
backend = "fake"
{extra}
"""
