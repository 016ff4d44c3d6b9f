"""`vatel-edge run` as systemd runs it: sd_notify messages, watchdog gated on capture frames, the
control socket (`status`, `trigger`), SIGTERM. A real subprocess on the real-time test devices, talking
to the local simulator; NOTIFY_SOCKET is a datagram socket bound by the test, as systemd does."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.asound import install_alsa_config
from tests.support.notify import NotifyListener
from tests.support.pulse import PulseServer
from vatel_edge.devkit.simulator import SimSession, Simulator

pytestmark = pytest.mark.timeout(120)


def _config(tmp_path: Path, sim: Simulator) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[vatel]
agent_id = "{sim.agent_id}"
base_url = "{sim.base_url}"
[audio]
capture_device = "test_mic"
playback_device = "test_spk"
[wake]
mode = "manual"
[control]
socket_path = "{tmp_path / 'ctl.sock'}"
[gpio]
backend = "fake"
""",
        encoding="utf-8",
    )
    return path


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vatel_edge.cli", *args], env=env, capture_output=True, text=True, timeout=20
    )


async def _end_quickly(s: SimSession) -> None:
    await s.wait_audio(200)
    await s.end_session()


async def test_run_under_systemd_notify_watchdog_control_socket_and_sigterm(
    pulse: PulseServer, tmp_path: Path, notify: NotifyListener
) -> None:
    async with Simulator(script=_end_quickly) as sim:
        cfg = _config(tmp_path, sim)
        env = {
            **os.environ,
            "ALSA_CONFIG_PATH": str(install_alsa_config()),
            "ORG_API_KEY": sim.api_key,
            "NOTIFY_SOCKET": str(notify.path),
            "WATCHDOG_USEC": "1000000",
        }
        env.pop("WATCHDOG_PID", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vatel_edge.cli", "run", "--config", str(cfg),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        # A low-latency stream into the mic sink keeps its monitor (our microphone) steady: a null sink
        # nobody asks for low latency renders in 2 s blocks.
        silence = subprocess.Popen(
            ["pacat", "--playback", "-d", "mic", "--latency-msec=20", "--raw", "--format=s16le", "--rate=24000",
             "--channels=1", "/dev/zero"],
            env=pulse.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        poller = asyncio.create_task(notify.run())
        try:
            await notify.wait_for("READY=1", timeout=30)
            await notify.wait_for("STATUS=listening", timeout=5)

            # Watchdog pings flow while capture frames arrive (interval 1 s -> a ping every 0.5 s).
            t0 = time.monotonic()
            await asyncio.sleep(2.0)
            assert notify.count("WATCHDOG=1", since=t0) >= 2

            # The control socket: status, then trigger opens a session at the simulator.
            client_env = {k: v for k, v in env.items() if k not in ("NOTIFY_SOCKET", "ORG_API_KEY")}
            status = await asyncio.to_thread(_cli, "status", "--json", "--config", str(cfg), env=client_env)
            assert status.returncode == 0, status.stderr
            data = json.loads(status.stdout)
            assert data["state"] == "listening" and data["wake_mode"] == "manual"
            assert sim.api_key not in status.stdout
            trig = await asyncio.to_thread(_cli, "trigger", "--config", str(cfg), env=client_env)
            assert trig.returncode == 0, trig.stdout + trig.stderr
            session = await sim.next_session(timeout=10)
            await session.wait_closed(timeout=10)
            await notify.wait_for("STATUS=in session " + session.id, timeout=5)
            human = await asyncio.to_thread(_cli, "status", "--config", str(cfg), env=client_env)
            assert "sessions" in human.stdout and human.returncode == 0

            # A stalled microphone (the sound server frozen with SIGSTOP: reads just stop returning
            # audio, like a wedged USB microphone): the pings stop, so systemd would restart the
            # service; they resume when frames come back.
            os.kill(pulse.proc.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(3.5)  # frames older than 2 s -> pings withheld
                stalled_from = time.monotonic()
                await asyncio.sleep(2.0)
                assert notify.count("WATCHDOG=1", since=stalled_from) == 0
            finally:
                os.kill(pulse.proc.pid, signal.SIGCONT)
            resumed = time.monotonic()
            deadline = resumed + 20
            while notify.count("WATCHDOG=1", since=resumed) == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert notify.count("WATCHDOG=1", since=resumed) >= 1

            # SIGTERM: STOPPING=1 and exit 0 within 5 s.
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), timeout=5)
            assert rc == 0
            notify.poll()
            assert ("STOPPING=1" in [m for _, m in notify.messages])
        finally:
            poller.cancel()
            silence.terminate()
            silence.wait(5)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.stderr is not None
        stderr = (await proc.stderr.read()).decode()
        assert sim.api_key not in stderr
        assert session.token not in stderr


def test_run_refuses_an_invalid_config_with_exit_78(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[vatel]\nagent_id = "not-a-uuid"\n[wake]\nmode = "VAD"\n', encoding="utf-8")
    proc = _cli("run", "--config", str(cfg), env=dict(os.environ))
    assert proc.returncode == 78
    assert "vatel.agent_id: expected a UUID" in proc.stderr
    assert 'wake.mode: expected one of' in proc.stderr and 'did you mean "vad"' in proc.stderr
