"""`vatel-edge run` processes against one real broker, as an outside consumer sees them: availability online at
start, offline on SIGTERM, offline from the last will after kill -9; and a fleet of 10 daemons (manual wake,
each on its own pair of PulseAudio null sinks) that shows up as 10 distinct devices with no topic collision."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mqtt import DEVICE_PASSWORD, DEVICE_USER, Broker
from tests.support.pulse import PulseServer
from vatel_edge.devkit.fixtures import lab_config, toml_text
from vatel_edge.devkit.simulator import SimSession, Simulator

pytestmark = pytest.mark.timeout(180)

#: Per-daemon devices: "pmic:DEV=micN.monitor" and "pspk:DEV=spkN" on the private PulseAudio server.
ASOUNDRC = """\
pcm.pmic {
    @args [ DEV ]
    @args.DEV { type string }
    type pulse
    device $DEV
}
pcm.pspk {
    @args [ DEV ]
    @args.DEV { type string }
    type pulse
    device $DEV
}
"""
RAW = ["--raw", "--format=s16le", "--rate=24000", "--channels=1"]


@dataclass
class DaemonProc:
    device_id: str
    proc: asyncio.subprocess.Process
    feeder: subprocess.Popen[bytes]
    stderr_path: Path


async def quick_end(s: SimSession) -> None:
    await s.wait_audio(200)
    await s.end_session()


@asynccontextmanager
async def fleet(pulse: PulseServer, broker: Broker, sim: Simulator, tmp_path: Path, n: int,
                keepalive_s: int = 5) -> AsyncIterator[list[DaemonProc]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    asoundrc = tmp_path / "fleet.asoundrc"
    asoundrc.write_text(ASOUNDRC)
    pw = tmp_path / "mqtt_password"
    pw.write_text(DEVICE_PASSWORD + "\n")
    pw.chmod(0o600)
    env = {**os.environ, "ALSA_CONFIG_PATH": str(asoundrc), "ORG_API_KEY": sim.api_key}
    env.pop("NOTIFY_SOCKET", None)
    modules: list[str] = []
    procs: list[DaemonProc] = []
    try:
        for i in range(n):
            for sink in (f"mic{i}", f"spk{i}"):
                out = pulse.pactl("load-module", "module-null-sink", f"sink_name={sink}",
                                  "format=s16le", "rate=24000", "channels=1")
                modules.append(out.stdout.strip())
            feeder = subprocess.Popen(["pacat", "--playback", "-d", f"mic{i}", "--latency-msec=20", *RAW, "/dev/zero"],
                                      env=pulse.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            device_id = f"fleet-{i:02d}"
            doc = lab_config(sim.agent_id, sim.base_url, devices=(f"pmic:DEV=mic{i}.monitor", f"pspk:DEV=spk{i}"),
                             wake={"mode": "manual", "cooldown_ms": 0},
                             session={"idle_timeout_s": 5.0, "close_timeout_s": 0.5},
                             control={"socket_path": str(tmp_path / f"ctl{i}.sock")},
                             mqtt={"enabled": True, "url": f"mqtt://127.0.0.1:{broker.port}",
                                   "username": DEVICE_USER, "password_file": str(pw), "device_id": device_id,
                                   "keepalive_s": keepalive_s})
            cfg = tmp_path / f"config{i}.toml"
            cfg.write_text(toml_text(doc))
            err = tmp_path / f"daemon{i}.log"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vatel_edge.cli", "run", "--config", str(cfg), env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=err.open("wb"))
            procs.append(DaemonProc(device_id, proc, feeder, err))
        yield procs
    finally:
        for d in procs:
            if d.proc.returncode is None:
                d.proc.send_signal(signal.SIGTERM)
        for d in procs:
            with suppress(TimeoutError):
                await asyncio.wait_for(d.proc.wait(), 15)
            if d.proc.returncode is None:
                d.proc.kill()
                await d.proc.wait()
            d.feeder.kill()
            d.feeder.wait()
        for m in modules:
            pulse.pactl("unload-module", m, check=False)


async def test_availability_online_offline_on_sigterm_and_last_will_after_kill_9(
    pulse: PulseServer, broker: Broker, tmp_path: Path
) -> None:
    """online at start; SIGTERM: offline (published by the daemon) and exit 0; a second daemon killed with
    SIGKILL: offline from the broker's last will (keepalive 5 s: within 1.5 x 5 s and the broker's check)."""
    topic = "vatel-edge/fleet-00/availability"
    async with Simulator(script=quick_end) as sim:
        async with fleet(pulse, broker, sim, tmp_path / "a", 1) as (d,):
            await asyncio.to_thread(broker.wait_retained, topic, b"online", timeout=30)
            d.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(d.proc.wait(), 15) == 0
            assert broker.retained(topic)[topic] == b"offline"
        async with fleet(pulse, broker, sim, tmp_path / "b", 1) as (d,):
            await asyncio.to_thread(broker.wait_retained, topic, b"online", timeout=30)
            d.proc.kill()
            await d.proc.wait()
            await asyncio.to_thread(broker.wait_retained, topic, b"offline", timeout=15)
    log = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*/daemon0.log"))
    assert DEVICE_PASSWORD not in log


async def test_ten_daemons_are_ten_distinct_devices_and_a_command_reaches_only_its_own(
    pulse: PulseServer, broker: Broker, tmp_path: Path
) -> None:
    """10 daemons on one broker: the consumer sees 10 discovery documents with distinct identifiers and unique
    ids, 10 availability topics online, 10 state documents; cmd/trigger for one device opens exactly one session
    and only that device counts it."""
    async with Simulator(script=quick_end) as sim, fleet(pulse, broker, sim, tmp_path, 10) as procs:
        ids = [d.device_id for d in procs]
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            avail = broker.retained("vatel-edge/+/availability")
            online = {t.split("/")[1] for t, p in avail.items() if p == b"online"}
            if online == set(ids):
                break
            assert asyncio.get_running_loop().time() < deadline, (online, [p.stderr_path.read_text()[-500:]
                                                                           for p in procs])
            await asyncio.sleep(0.5)
        discovery = {t: json.loads(p) for t, p in broker.retained("homeassistant/device/+/config").items()}
        assert set(discovery) == {f"homeassistant/device/{i}/config" for i in ids}
        idents = [doc["dev"]["identifiers"][0] for doc in discovery.values()]
        uids = [c["unique_id"] for doc in discovery.values() for c in doc["cmps"].values()]
        cmd_topics = [c["command_topic"] for doc in discovery.values() for c in doc["cmps"].values()
                      if "command_topic" in c]
        assert len(set(idents)) == 10 and len(set(uids)) == len(uids) == 130 and len(set(cmd_topics)) == 40
        states = broker.retained("vatel-edge/+/state")
        assert len(states) == 10 and all(json.loads(p)["state"] == "listening" for p in states.values())

        broker.publish("vatel-edge/fleet-03/cmd/trigger", "PRESS")
        session = await sim.next_session(timeout=20)
        await session.wait_closed(timeout=20)
        topic = "vatel-edge/fleet-03/state"
        await asyncio.to_thread(broker.wait_retained, topic, None, timeout=5)
        deadline = asyncio.get_running_loop().time() + 15
        while json.loads(broker.retained(topic)[topic])["counters"].get("sessions") != 1:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)
        assert len(sim.sessions) == 1
        others = {t: json.loads(p)["counters"].get("sessions") for t, p in broker.retained("vatel-edge/+/state").items()
                  if t != topic}
        assert set(others.values()) == {0}, others
