"""Running the daemon in a test: in-process (LISTENING when the block starts), woken by trigger(), with
short simulator scripts; and the installed `vatel-edge` console script for subprocess tests."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support.events import Events
from vatel_edge.config import Config
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.simulator import SimSession
from vatel_edge.notify import Notifier
from vatel_edge.state import State

#: How long the daemon may take to be LISTENING again after a fault (generous: loaded 2-core CI machine).
RECOVERY_S = 10.0
#: The installed console script (next to this interpreter), as systemd's unit runs it.
VATEL_EDGE = shutil.which("vatel-edge", path=str(Path(sys.executable).parent)) or "vatel-edge"


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
