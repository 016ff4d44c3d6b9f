"""notify.py: sd_notify messages over a real datagram socket, watchdog interval, and the watchdog gating."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator

import pytest

from vatel_edge.notify import Notifier, Watchdog, notify_address, parse_watchdog_interval

WAIT_S = 10.0  # generous bound for anything that should happen within a few watchdog periods


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket (short path: sun_path is limited to 108 bytes)."""
    d = tempfile.mkdtemp(prefix="ve-notify-")
    path = os.path.join(d, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()
    shutil.rmtree(d)


def recv_all(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def recv_one(sock: socket.socket, timeout: float = WAIT_S) -> str:
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
    return data.decode()


def test_messages_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    """ready/status/watchdog/stopping/ready_after_reload send their assignments, one datagram each."""
    sock, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready() and n.status("listening\nfor wake") and n.watchdog() and n.stopping()
    assert n.ready_after_reload()
    assert recv_all(sock) == ["READY=1", "STATUS=listening for wake", "WATCHDOG=1", "STOPPING=1", "READY=1"]
    n.close()


def test_reloading_carries_monotonic_usec(notify_socket: tuple[socket.socket, str]) -> None:
    """RELOADING=1 goes with MONOTONIC_USEC = CLOCK_MONOTONIC in microseconds at the time of sending."""
    sock, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    (msg,) = recv_all(sock)
    lines = msg.split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].split("=", 1)[1]) <= after


def test_abstract_socket_is_supported() -> None:
    """NOTIFY_SOCKET=@name addresses the abstract namespace."""
    name = f"vatel-edge-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.setblocking(False)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert recv_all(sock) == ["READY=1"]
    finally:
        sock.close()


def test_no_socket_means_no_op() -> None:
    """Without NOTIFY_SOCKET every call returns False and nothing is sent."""
    n = Notifier({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.status("x")
    assert n.watchdog_interval() is None


def test_failed_send_never_raises_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A socket path nobody listens on: sends return False, one warning, later failures at debug only."""
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent/vatel-edge-notify.sock"})
    with caplog.at_level(logging.DEBUG, logger="vatel_edge.notify"):
        assert not n.ready()
        assert not n.watchdog()
        assert not n.stopping()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "sd_notify" in warnings[0].getMessage()


def test_unsupported_address_disables_notify() -> None:
    """A relative or vsock: NOTIFY_SOCKET disables notifications instead of failing later."""
    assert notify_address("vsock:2:1234") is None
    assert not Notifier({"NOTIFY_SOCKET": "relative.sock"}).enabled


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "200000"}, 0.2),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "OWN"}, 30.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_environment(env: dict[str, str], expected: float | None) -> None:
    """WATCHDOG_USEC gives the interval; a WATCHDOG_PID of another process or a bad value disables it."""
    env = {k: (str(os.getpid()) if v == "OWN" else v) for k, v in env.items()}
    assert parse_watchdog_interval(env, os.getpid()) == expected
    assert Notifier(dict(env)).watchdog_interval() == expected


def test_unset_environment_hides_variables_from_children(notify_socket: tuple[socket.socket, str]) -> None:
    """unset_environment=True removes NOTIFY_SOCKET/WATCHDOG_* after reading them; sending still works."""
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid()), "OTHER": "1"}
    n = Notifier(env, unset_environment=True)
    assert env == {"OTHER": "1"}
    assert n.watchdog_interval() == 0.2
    assert n.ready()
    assert recv_all(sock) == ["READY=1"]


# --------------------------------------------------------------------------- Watchdog


class FrameSource:
    """Stands in for Capture.last_frame_at: a task marks a frame every 20 ms while `running`."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.running = True

    def last_frame_at(self) -> float | None:
        return self.last

    async def run(self) -> None:
        while True:
            if self.running:
                self.last = time.monotonic()
            await asyncio.sleep(0.02)


async def count_pings(sock: socket.socket, n: int) -> list[str]:
    return [await recv_one(sock) for _ in range(n)]


async def test_watchdog_pings_while_frames_arrive(notify_socket: tuple[socket.socket, str]) -> None:
    """With frames arriving, WATCHDOG=1 is sent repeatedly (WATCHDOG_USEC=200 ms: every ~100 ms)."""
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    frames = FrameSource()
    feeder = asyncio.create_task(frames.run())
    try:
        async with Watchdog(notifier, frames.last_frame_at, max_frame_age_s=2.0, max_loop_lag_s=5.0) as wd:
            assert wd.active
            assert await count_pings(sock, 3) == ["WATCHDOG=1"] * 3
        assert not wd.active
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)


async def test_watchdog_withholds_pings_while_frames_stall_and_resumes(
    notify_socket: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Stalled frames: no WATCHDOG=1 (logged once); frames again: pings resume."""
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    last: list[float | None] = [time.monotonic() - 60.0]  # the newest frame is a minute old
    caplog.set_level(logging.INFO, logger="vatel_edge.notify")
    async with Watchdog(notifier, lambda: last[0], max_frame_age_s=1.0, max_loop_lag_s=5.0) as wd:
        deadline = time.monotonic() + WAIT_S
        while wd.withheld < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert wd.withheld >= 4
        assert wd.stalled
        assert recv_all(sock) == []
        stalls = [r for r in caplog.records if "microphone stalled" in r.getMessage()]
        assert len(stalls) == 1
        assert "withholding watchdog pings so systemd restarts the service" in stalls[0].getMessage()
        last[0] = time.monotonic() + 3600.0  # frames are back (a fresh timestamp far ahead of every check)
        assert await recv_one(sock) == "WATCHDOG=1"
        assert not wd.stalled
    assert any("pings resumed" in r.getMessage() for r in caplog.records)


async def test_watchdog_counts_startup_as_grace_before_first_frame(notify_socket: tuple[socket.socket, str]) -> None:
    """Before the first frame (last_frame_at None) pings continue until max_frame_age_s after start."""
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    async with Watchdog(notifier, lambda: None, max_frame_age_s=30.0, max_loop_lag_s=5.0) as wd:
        assert await recv_one(sock) == "WATCHDOG=1"
        assert wd.frame_age(time.monotonic()) < 30.0


async def test_watchdog_withholds_ping_when_loop_lags(notify_socket: tuple[socket.socket, str]) -> None:
    """A blocked event loop (1 s with a 0.25 s lag bound) withholds that ping, then pings resume."""
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    frames = FrameSource()
    frames.last = time.monotonic() + 3600.0
    async with Watchdog(notifier, frames.last_frame_at, max_frame_age_s=10.0, max_loop_lag_s=0.25) as wd:
        await recv_one(sock)
        before = wd.withheld
        time.sleep(1.0)  # block the loop: the watchdog task wakes at least 0.9 s late
        deadline = time.monotonic() + WAIT_S
        while wd.withheld == before and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert wd.withheld > before
        recv_all(sock)
        assert await recv_one(sock) == "WATCHDOG=1"  # resumes once the loop is on time


async def test_watchdog_inactive_without_watchdog_usec(notify_socket: tuple[socket.socket, str]) -> None:
    """No WatchdogSec= configured: no task runs and nothing is sent; closing twice is fine."""
    sock, path = notify_socket
    wd = Watchdog(Notifier({"NOTIFY_SOCKET": path}), lambda: None, max_frame_age_s=1.0)
    async with wd:
        assert not wd.active
        await asyncio.sleep(0.05)
    await wd.aclose()
    assert recv_all(sock) == []
