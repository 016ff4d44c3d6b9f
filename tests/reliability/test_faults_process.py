"""Fault matrix, the process: signals, reloads, broken stderr, hanging and flooding tools.

`vatel-edge run` runs as a real subprocess (the installed console script) with a config file pointing at
an in-test simulator and the real-time test devices; it is driven over its control socket and signals.
Tool faults at the daemon level run in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.config import config_toml, reliability_config
from tests.support.daemon import VATEL_EDGE, live_daemon, wake_and_wait
from tests.support.logs import assert_no_secrets, sim_secrets
from tests.support.pulse import PulseServer
from vatel_edge.control import control_request
from vatel_edge.devkit.simulator import SimSession, SimSessionClosed, Simulator
from vatel_edge.errors import ControlError

pytestmark = pytest.mark.timeout(120)
#: The bound of a shutdown (systemd's stop timeout is longer; the unit's TimeoutStopSec is the real limit).
STOP_BOUND_S = 5.0


def config_text(tmp_path: Path, sim: Simulator, *, tools: str = "") -> str:
    """A daemon config file for the subprocess: manual wake, test devices, the simulator, optional tools."""
    return config_toml(tmp_path, sim.base_url, sim.agent_id, http_timeout_s=2.0, connect_timeout_s=2.0,
                       idle_timeout_s=30.0, extra=tools)


PID_TOOL = """
[tools.slow_job]
action = "shell"
argv = ["/bin/sh", "-c", "echo $$ > {pidfile}; exec sleep 60", "slow_job"]
timeout_s = 120
"""


class DaemonProcess:
    """A running `vatel-edge run` subprocess and what it needs."""

    def __init__(self, proc: subprocess.Popen[bytes], socket_path: str, log_path: Path | None) -> None:
        self.proc = proc
        self.socket_path = socket_path
        self.log_path = log_path

    async def request(self, cmd: str) -> dict[str, Any]:
        return await control_request(self.socket_path, {"cmd": cmd})

    async def wait_listening(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}: {self.log()[-3000:]}"
            try:
                reply = await self.request("status")
                if reply["status"]["state"] == "listening":
                    return reply
            except (ControlError, OSError):
                pass
            assert time.monotonic() < deadline, f"daemon not listening: {self.log()[-3000:]}"
            await asyncio.sleep(0.1)

    async def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon still running {timeout} s after the signal")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path is not None else ""


@asynccontextmanager
async def daemon_process(
    tmp_path: Path, sim: Simulator, *, tools: str = "", stderr: IO[bytes] | None = None, args: tuple[str, ...] = ()
) -> AsyncIterator[DaemonProcess]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path, sim, tools=tools))
    env = {**os.environ, "ORG_API_KEY": sim.api_key}
    env.pop("NOTIFY_SOCKET", None)
    log_path = None
    if stderr is None:
        log_path = tmp_path / "daemon.log"
        stderr = open(log_path, "wb")  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(
            [VATEL_EDGE, *args, "run", "--config", str(cfg)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    finally:
        stderr.close()
    try:
        yield DaemonProcess(proc, str(tmp_path / "control.sock"), log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.fixture
def wait_pidfile() -> Iterator[Any]:
    async def wait(path: Path, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while not (path.exists() and path.read_text().strip()):
            assert time.monotonic() < deadline, "the tool never started"
            await asyncio.sleep(0.05)
        return int(path.read_text().strip())

    yield wait


async def test_sigterm_mid_session_exits_zero_quickly_and_nothing_leaks(pulse: PulseServer, tmp_path: Path) -> None:
    """SIGTERM while a session is open: exit 0 within 5 s; argv, `status --json` and the log hold no secrets."""

    async def hold(s: SimSession) -> None:
        await s.wait_closed(timeout=60)

    async with Simulator(script=hold) as sim, daemon_process(tmp_path, sim, args=("--log-level", "debug")) as d:
        await d.wait_listening()
        cmdline = Path(f"/proc/{d.proc.pid}/cmdline").read_bytes().decode(errors="replace")
        started = await d.request("trigger")
        assert started["started"] is True
        session = await sim.next_session(timeout=15)
        await session.wait_audio(200)
        status_json = subprocess.run(
            [VATEL_EDGE, "status", "--json", "--config", str(tmp_path / "config.toml")],
            capture_output=True, text=True, timeout=20, env={**os.environ},
        )
        assert status_json.returncode == 0, status_json.stderr
        status = json.loads(status_json.stdout)
        assert status["state"] in ("in_session", "agent_speaking")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        rc = await d.wait_exit(STOP_BOUND_S)
        took = time.monotonic() - t0
        await session.wait_closed(timeout=5)
    assert rc == 0, d.log()[-3000:]
    assert took < STOP_BOUND_S
    assert "voice session connected" in d.log(), "the debug log is not what was scanned"
    assert session.client_close is not None, "the session was not closed politely"
    assert_no_secrets([cmdline, status_json.stdout, status_json.stderr, d.log()], sim_secrets(sim),
                      "argv / status --json / the debug log")


async def test_sigterm_mid_tool_kills_the_tool_process_group(
    pulse: PulseServer, tmp_path: Path, wait_pidfile: Any
) -> None:
    """SIGTERM while a shell tool runs: exit 0 within 5 s and the tool's process group is gone; the tool's
    argv and environment never held the key or the token."""
    pidfile = tmp_path / "tool.pid"
    tool_started = asyncio.Event()

    async def script(s: SimSession) -> None:
        await s.wait_audio(100)
        tool_started.set()
        with contextlib.suppress(SimSessionClosed):  # the daemon is killed mid-call
            await s.tool_call("slow_job", {}, timeout=60)
        await s.wait_closed(timeout=60)

    tools = PID_TOOL.replace("{pidfile}", str(pidfile))
    async with Simulator(script=script) as sim, daemon_process(tmp_path, sim, tools=tools) as d:
        await d.wait_listening()
        assert (await d.request("trigger"))["started"] is True
        pid = await wait_pidfile(pidfile)
        tool_cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        tool_environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        pgid = os.getpgid(pid)
        assert pgid != os.getpgid(d.proc.pid), "the tool should run in its own process group"
        d.proc.send_signal(signal.SIGTERM)
        rc = await d.wait_exit(STOP_BOUND_S)
    assert rc == 0, d.log()[-3000:]
    deadline = time.monotonic() + 2.0
    while _group_alive(pgid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _alive(pid), "the tool outlived the daemon"
    assert not _group_alive(pgid), "a process of the tool's group outlived the daemon"
    assert "sleep" in tool_cmdline
    assert_no_secrets([tool_cmdline, tool_environ], sim_secrets(sim), "the tool's argv/environment")


async def test_sighup_with_an_invalid_config_keeps_running_on_the_old_one(pulse: PulseServer, tmp_path: Path) -> None:
    """SIGHUP after the config file was broken: the daemon says why, keeps the old config and still serves."""

    async def short(s: SimSession) -> None:
        await s.wait_audio(100)
        await s.end_session()

    async with Simulator(script=short) as sim, daemon_process(tmp_path, sim) as d:
        await d.wait_listening()
        (tmp_path / "config.toml").write_text('[vatel]\nagent_id = "not-a-uuid"\n[wake]\nmode = "sometimes"\n')
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload refused" not in d.log():
            assert time.monotonic() < deadline, d.log()[-2000:]
            await asyncio.sleep(0.1)
        reply = await d.wait_listening()
        assert "reload refused" in (reply["status"]["last_error"] or "")
        assert (await d.request("trigger"))["started"] is True
        session = await sim.next_session(timeout=15)
        await session.wait_closed(timeout=15)
        await d.wait_listening()
        d.proc.send_signal(signal.SIGTERM)
        assert await d.wait_exit(STOP_BOUND_S) == 0
    log = d.log()
    assert "agent_id" in log and "wake.mode" in log  # the reasons are named
    assert log.count("reload refused") == 1


async def test_unwritable_stderr_does_not_kill_the_daemon(pulse: PulseServer, tmp_path: Path) -> None:
    """stderr is /dev/full (every log write fails with ENOSPC) at debug level: sessions still run, exit 0."""

    async def short(s: SimSession) -> None:
        await s.wait_audio(200)
        await s.end_session()

    full = open("/dev/full", "wb")  # noqa: SIM115 - handed to the child and closed by daemon_process
    async with Simulator(script=short) as sim, daemon_process(
        tmp_path, sim, stderr=full, args=("--log-level", "debug")
    ) as d:
        await d.wait_listening()
        for _ in range(2):
            assert (await d.request("trigger"))["started"] is True
            session = await sim.next_session(timeout=15)
            await session.wait_closed(timeout=15)
            await d.wait_listening()
        d.proc.send_signal(signal.SIGTERM)
        assert await d.wait_exit(STOP_BOUND_S) == 0
    assert len(sim.sessions) == 2


# ---------------------------------------------------------------------------------------------- tools in-process


async def test_hanging_and_flooding_tools_are_bounded_and_the_session_carries_on(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """A tool that hangs is killed at its timeout_s and answered with an error; one that floods stdout is
    answered with capped output; the session answers the next call and the daemon listens again."""
    outputs: dict[str, str] = {}

    async def script(s: SimSession) -> None:
        await s.wait_audio(100)
        outputs["hang"], outputs["flood"] = await asyncio.gather(
            s.tool_call("hang", {}, timeout=30), s.tool_call("flood", {}, timeout=30)
        )
        outputs["light"] = await s.tool_call("set_light", {"on": True})
        await s.end_session()

    tools = {
        "hang": {"action": "shell", "argv": ["/bin/sleep", "600"], "timeout_s": 1.0, "kill_grace_s": 0.5},
        "flood": {"action": "shell", "argv": ["/usr/bin/yes", "flood"], "timeout_s": 1.0, "max_output_bytes": 1024},
    }
    async with Simulator(script=script) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id, tools=tools, session={"idle_timeout_s": 30.0})
        async with live_daemon(cfg, sim.api_key) as daemon:
            t0 = time.monotonic()
            await wake_and_wait(daemon, timeout=30)
            took = time.monotonic() - t0
    assert outputs["hang"].startswith("error") and "time" in outputs["hang"], outputs["hang"]
    assert outputs["flood"].startswith("error") or len(outputs["flood"]) <= 1024 + 200, outputs["flood"][:200]
    assert len(outputs["flood"]) <= 1024 + 200
    assert outputs["light"] == "ok"
    assert took < 20
