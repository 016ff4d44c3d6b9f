"""State hooks as real subprocesses through the shell tools' runner: calls recorded in order, the newest state
replacing a waiting one, a hanging hook killed with its process group, a flooding hook capped, never blocking."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from vatel_edge.config.schema import HooksConfig
from vatel_edge.feedback.hooks import StateHook
from vatel_edge.feedback.visible import Visible

pytestmark = pytest.mark.timeout(60)
V = Visible


def recorder(tmp_path: Path, delay_s: float = 0.0) -> tuple[HooksConfig, Path]:
    """A hook appending "old new env-old env-new stdin" to a file, after `delay_s`."""
    log = tmp_path / "calls.txt"
    script = tmp_path / "hook.py"
    script.write_text(
        "import os, sys, time\n"
        f"time.sleep({delay_s})\n"
        "with open(sys.argv[3], 'a') as f:\n"
        "    f.write(' '.join([sys.argv[1], sys.argv[2], os.environ['VATEL_OLD_STATE'], "
        "os.environ['VATEL_NEW_STATE'], sys.stdin.read().replace(' ', ''), str(sorted(os.environ))]) + '\\n')\n"
    )
    return HooksConfig(command=(sys.executable, str(script), "{old}", "{new}", str(log)), timeout_s=10), log


def alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for a reaper that is not ours does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] not in ("Z", "X")


async def wait_idle(hook: StateHook, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while hook.busy:
            await asyncio.sleep(0.02)


def calls(log: Path) -> list[list[str]]:
    return [line.split(" ", 5) for line in log.read_text().splitlines()] if log.exists() else []


async def test_a_hook_records_each_change_in_order_with_old_and_new(tmp_path: Path) -> None:
    """argv placeholders, environment and stdin carry the change; the environment is minimal."""
    cfg, log = recorder(tmp_path)
    hook = StateHook(cfg, environ={"PATH": os.environ["PATH"], "SECRET_TOKEN": "x"})
    async with hook:
        for new in (V.LISTENING, V.CONNECTING, V.IN_SESSION, V.LISTENING):
            hook.notify(new)
            await wait_idle(hook)
    rows = calls(log)
    assert [r[:2] for r in rows] == [["off", "listening"], ["listening", "connecting"], ["connecting", "in_session"],
                                     ["in_session", "listening"], ["listening", "off"]]  # "off" at close
    assert all(r[0] == r[2] and r[1] == r[3] for r in rows)
    assert rows[1][4] == '{"old":"listening","new":"connecting"}'
    env = rows[0][5]
    assert "SECRET_TOKEN" not in env and "NOTIFY_SOCKET" not in env and "VATEL_NEW_STATE" in env


async def test_newer_states_replace_the_waiting_one_and_slowness_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Five changes during one slow run: the hook runs twice (the first and the latest), its chain stays
    consistent, notify never waits, and one warning is logged for the burst."""
    cfg, log = recorder(tmp_path, delay_s=0.4)
    caplog.set_level(logging.DEBUG, logger="vatel_edge.feedback.hooks")
    hook = StateHook(cfg)
    hook.notify(V.LISTENING)
    started = time.monotonic()
    for new in (V.CONNECTING, V.IN_SESSION, V.AGENT_SPEAKING, V.IN_SESSION, V.MUTED):
        hook.notify(new)
    assert time.monotonic() - started < 0.05, "notify waited for the hook"
    await wait_idle(hook)
    assert [r[:2] for r in calls(log)] == [["off", "listening"], ["listening", "muted"]]
    assert hook.replaced == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "newer states replace" in warnings[0].getMessage()
    hook.notify(V.LISTENING)  # a new burst: logged again if slow again
    await wait_idle(hook)
    await hook.aclose()


async def test_a_hanging_hook_is_killed_with_its_children_and_the_next_state_still_runs(tmp_path: Path) -> None:
    """A hook that hangs (with a child that hangs too) is killed after timeout_s, its whole process group."""
    pids = tmp_path / "pids"
    script = tmp_path / "hang.sh"
    script.write_text(f'#!/bin/sh\nsleep 300 &\necho "$$ $!" >> {pids}\nwait\n')
    script.chmod(0o755)
    hook = StateHook(HooksConfig(command=(str(script),), timeout_s=0.5))
    hook.notify(V.LISTENING)
    await asyncio.sleep(0.3)
    hook.notify(V.CONNECTING)  # waits behind the hanging run
    async with asyncio.timeout(10):
        while hook.timeouts < 1:
            await asyncio.sleep(0.05)
    await wait_idle(hook)
    assert hook.runs == 2 and hook.timeouts == 2  # the second run hung as well, and was killed as well
    await asyncio.sleep(0.3)
    started = [int(x) for x in pids.read_text().split()]
    assert len(started) == 4 and not any(alive(pid) for pid in started), "a hook process survived its timeout"
    await hook.aclose()


async def test_a_flooding_hook_finishes_with_its_output_capped(tmp_path: Path) -> None:
    """50 MB on stdout and stderr is read and discarded; the run ends normally and the next one follows."""
    cfg, log = recorder(tmp_path)
    flood = (sys.executable, "-c", "import sys; b = b'x' * 1_000_000\n"
             "for _ in range(25): sys.stdout.buffer.write(b); sys.stderr.buffer.write(b)")
    hook = StateHook(HooksConfig(command=flood, timeout_s=20))
    started = time.monotonic()
    hook.notify(V.LISTENING)
    await wait_idle(hook, timeout=20)
    assert hook.runs == 1 and hook.timeouts == 0 and hook.failures == 0
    assert time.monotonic() - started < 15
    later = StateHook(cfg)
    later.notify(V.LISTENING)
    await wait_idle(later)
    assert len(calls(log)) == 1


async def test_a_missing_command_is_a_logged_failure_not_an_exception(tmp_path: Path) -> None:
    hook = StateHook(HooksConfig(command=(str(tmp_path / "nope"),)))
    hook.notify(V.LISTENING)
    await wait_idle(hook)
    assert hook.failures == 1
    await hook.aclose()
