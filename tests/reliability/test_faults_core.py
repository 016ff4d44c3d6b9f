"""Fault matrix, the daemon's own core: a microphone path that fails must not leave a daemon that pretends
to hear.

The path is broken for real (a stage that raises is added to the running path, in the capture thread) in a
daemon running in-process on the real-time test devices with a watchdog: the watchdog stops pinging at once
and `run()` ends with DaemonFailure (so `vatel-edge run` exits non-zero and systemd restarts the service).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import reliability_config
from tests.support.notify import NotifyListener
from tests.support.pulse import PulseServer
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.daemon import Daemon
from vatel_edge.devkit.simulator import Simulator
from vatel_edge.errors import DaemonFailure
from vatel_edge.notify import Notifier
from vatel_edge.runtime import open_runtime
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(60)


class _Broken:
    """A microphone-path stage that fails (a bug in a stage); records when it first ran."""

    def __init__(self) -> None:
        self.ran_at: list[float] = []

    def process(self, frame: CaptureFrame) -> CaptureFrame:
        self.ran_at.append(time.monotonic())
        raise RuntimeError("simulated stage failure")


def _pings(notify: NotifyListener) -> list[float]:
    """Arrival times of the WATCHDOG=1 pings received so far."""
    notify.poll()
    return [t for t, line in notify.messages if line == "WATCHDOG=1"]


async def _poll_forever(notify: NotifyListener) -> None:
    """Take each datagram as it arrives, so its arrival time is when it was sent (within 10 ms)."""
    while True:
        notify.poll()
        await asyncio.sleep(0.01)


async def test_a_failed_microphone_path_stops_the_watchdog_and_ends_run_with_a_failure(
    pulse: PulseServer, tmp_path: Path, notify: NotifyListener
) -> None:
    async with Simulator() as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        notifier = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
        daemon = Daemon(cfg, api_key=sim.api_key, notifier=notifier)
        task = asyncio.get_running_loop().create_task(daemon.run())
        poller = asyncio.get_running_loop().create_task(_poll_forever(notify))
        try:
            await daemon.wait_state(State.LISTENING, timeout=20)
            deadline = time.monotonic() + 10
            while len(_pings(notify)) < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert len(_pings(notify)) >= 5, "the healthy daemon did not ping its watchdog"
            await asyncio.sleep(2.5)  # past the watchdog's start-up grace (max frame age 2 s)
            rt = daemon.runtime
            assert rt is not None
            broken = _Broken()
            rt.mic.stages.append(broken)
            with pytest.raises(DaemonFailure, match="microphone path failed"):
                await asyncio.wait_for(task, timeout=20)
            await asyncio.sleep(0.5)  # a ping the daemon would still send arrives by now
        finally:
            poller.cancel()
            if not task.done():
                daemon.stop()
                await asyncio.wait({task}, timeout=10)
    assert broken.ran_at, "the path never ran the broken stage"
    late = [t for t in _pings(notify) if t > broken.ran_at[0] + 0.05]
    assert late == [], f"the watchdog kept pinging {len(late)} time(s) after the microphone path failed"
    assert daemon.state is State.STOPPED


async def test_the_watchdog_follows_the_path_not_only_the_device(
    pulse: PulseServer, tmp_path: Path, notify: NotifyListener
) -> None:
    """The runtime's watchdog reads frame times through the microphone path: while the capture device still
    delivers frames but the path that routes them failed, no ping is sent."""
    cfg = reliability_config(tmp_path, "http://127.0.0.1:9", "00000000-0000-4000-8000-000000000000")
    notifier = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
    loop = asyncio.get_running_loop()
    async with open_runtime(cfg, api_key="k", notifier=notifier, control=_no_control) as rt:
        poller = loop.create_task(_poll_forever(notify))
        try:
            await asyncio.sleep(2.5)  # healthy, and past the watchdog's start-up grace (max frame age 2 s)
            assert len(_pings(notify)) >= 5, "the healthy path's watchdog did not ping"
            broken = _Broken()
            rt.mic.stages.append(broken)
            await asyncio.sleep(1.5)
            assert broken.ran_at, "the path never ran the broken stage"
            assert rt.mic.failed.done()
            assert isinstance(rt.mic.failed.exception(), RuntimeError)  # retrieved: no "never retrieved" at exit
            device_frame_at = rt.capture.last_frame_at
            assert device_frame_at is not None and device_frame_at > broken.ran_at[0] + 1.0, "the device kept going"
        finally:
            poller.cancel()
    late = [t for t in _pings(notify) if t > broken.ran_at[0] + 0.05]
    assert late == [], f"the watchdog kept pinging {len(late)} time(s) after the microphone path failed"


async def _no_control(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "error": "no control in this test"}
