"""The bridge against a real Mosquitto broker, seen by an outside consumer (mosquitto_sub/mosquitto_pub), with
the real daemon in-process on the real-time test devices and the local Vatel simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.audio import tone_level_db
from tests.support.config import daemon_config
from tests.support.daemon import live_daemon
from tests.support.mqtt import DEVICE_PASSWORD, DEVICE_USER, Broker
from tests.support.pulse import PulseServer
from vatel_edge.daemon import Daemon
from vatel_edge.devkit.fixtures import steady_tone
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(120)
DEV = "testdev"
BASE = f"vatel-edge/{DEV}"


def mqtt_section(broker: Broker, tmp_path: Path, *, tls: bool = True, password: str = DEVICE_PASSWORD,
                 **extra: Any) -> dict[str, Any]:
    pw = tmp_path / "mqtt_password"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    url = f"mqtts://localhost:{broker.tls_port}" if tls else f"mqtt://127.0.0.1:{broker.port}"
    section = {"enabled": True, "url": url, "username": DEVICE_USER, "password_file": str(pw), "device_id": DEV,
               "keepalive_s": 5}
    if tls:
        section["ca_file"] = str(broker.ca_file)
    return {**section, **extra}


@asynccontextmanager
async def bridged(sim: Simulator, broker: Broker, tmp_path: Path, *, session: dict[str, Any] | None = None,
                  **mqtt: Any) -> AsyncIterator[Daemon]:
    cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, wake={"mode": "manual", "cooldown_ms": 0},
                        mqtt=mqtt_section(broker, tmp_path, **mqtt), **({"session": session} if session else {}))
    async with live_daemon(cfg, sim.api_key) as daemon:
        yield daemon


def bridge_of(daemon: Daemon) -> Any:
    """The running MqttBridge (found on the runtime's exit stack through the event hub's subscriber)."""
    import gc

    from vatel_edge.mqtt.bridge import MqttBridge

    for o in gc.get_objects():
        try:
            if isinstance(o, MqttBridge) and o._daemon is daemon:
                return o
        except ReferenceError:  # a dead weak proxy among the objects
            continue
    raise AssertionError("no MqttBridge for this daemon")


async def until(pred: Any, timeout: float = 15.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.05)


async def test_discovery_availability_and_state_are_retained_for_an_outside_consumer(
    pulse: PulseServer, broker: Broker, tmp_path: Path
) -> None:
    """Over TLS with a password: the retained device discovery message parses and names every component (with
    their command topics), availability says online, the state document has the issue's fields."""
    async with Simulator() as sim, bridged(sim, broker, tmp_path):
        await asyncio.to_thread(broker.wait_retained, f"{BASE}/availability", b"online")
        disc = json.loads(await asyncio.to_thread(broker.wait_retained, f"homeassistant/device/{DEV}/config"))
        state = json.loads(await asyncio.to_thread(broker.wait_retained, f"{BASE}/state"))
    assert disc["o"]["name"] == "vatel-edge" and disc["o"]["sw_version"]
    assert disc["dev"]["identifiers"] == [f"vatel_edge_{DEV}"]
    assert disc["availability_topic"] == f"{BASE}/availability"
    cmps = disc["cmps"]
    assert {c["p"] for c in cmps.values()} == {"binary_sensor", "sensor", "button", "switch", "number", "event"}
    assert {"connectivity", "in_session", "state", "last_error", "sessions", "interruptions", "capture_overruns",
            "echo_reduction", "trigger", "end_session", "mute", "volume", "timeline"} == set(cmps)
    assert cmps["trigger"]["command_topic"] == f"{BASE}/cmd/trigger"
    assert state["state"] == "listening" and state["muted"] is False and state["volume"] == 100
    assert {"session_id", "wake_mode", "last_error", "counters", "version"} <= set(state)
    assert DEVICE_PASSWORD not in json.dumps(disc) + json.dumps(state)


async def test_cmd_trigger_opens_a_session_and_the_timeline_goes_out_without_transcripts(
    pulse: PulseServer, broker: Broker, tmp_path: Path
) -> None:
    """cmd/trigger opens a session against the simulator; wake, session_started and session_ended arrive on the
    event topic; the state follows; no transcript text leaves the device."""
    async def script(s: SimSession) -> None:
        await s.send_transcript("my secret words")
        await s.wait_audio(1500)
        await s.end_session()

    events = broker.subscribe(f"{BASE}/#")
    try:
        async with Simulator(script=script) as sim, bridged(sim, broker, tmp_path, tls=False) as daemon:
            await asyncio.to_thread(broker.wait_retained, f"{BASE}/availability", b"online")
            broker.publish(f"{BASE}/cmd/trigger", "PRESS")
            session = await sim.next_session(timeout=15)
            await session.wait_closed(timeout=20)
            await daemon.wait_state(State.LISTENING, timeout=10)
            done = await asyncio.to_thread(events.wait_for, f"{BASE}/event",
                                           lambda d: d["event_type"] == "session_ended")
            await asyncio.to_thread(events.wait_for, f"{BASE}/state",
                                    lambda d: d["state"] == "listening" and d["counters"]["sessions"] == 1)
    finally:
        events.stop()
    kinds = [d["event_type"] for d in events.json_of(f"{BASE}/event")]
    assert kinds.index("wake") < kinds.index("session_started") < kinds.index("session_ended")
    assert events.json_of(f"{BASE}/event")[kinds.index("wake")]["reason"] == "mqtt"
    assert done["session_id"] == session.id
    states = [d["state"] for d in events.json_of(f"{BASE}/state")]
    assert "in_session" in states, states
    assert b"secret words" not in b"".join(p for _, p, _ in events.messages)


async def test_mute_stops_wakes_and_volume_changes_the_played_gain(
    pulse: PulseServer, broker: Broker, tmp_path: Path
) -> None:
    """cmd/mute ON: a cmd/trigger opens no session and the state says muted; OFF: wakes work again.
    cmd/volume 25 plays the agent's tone about 12 dB lower than volume 100."""
    tone = steady_tone(600, 1000.0, -12.0)

    async def play_tone(s: SimSession) -> None:
        await s.wait_audio(100)
        await s.send_turn("t1", tone, realtime=True)
        await asyncio.sleep(0.6)
        await s.end_session()

    levels = []
    async with Simulator(script=play_tone) as sim, bridged(sim, broker, tmp_path, tls=False) as daemon:
        await asyncio.to_thread(broker.wait_retained, f"{BASE}/availability", b"online")
        broker.publish(f"{BASE}/cmd/mute", "ON")
        await until(lambda: daemon.muted)
        state = json.loads(await asyncio.to_thread(broker.wait_retained, f"{BASE}/state"))
        assert state["muted"] is True or json.loads(broker.retained(f"{BASE}/state")[f"{BASE}/state"])["muted"]
        broker.publish(f"{BASE}/cmd/trigger", "PRESS")
        await asyncio.sleep(1.0)
        assert not sim.sessions and daemon.state is State.LISTENING
        broker.publish(f"{BASE}/cmd/mute", "OFF")
        await until(lambda: not daemon.muted)
        for volume in (100, 25):
            broker.publish(f"{BASE}/cmd/volume", str(volume))
            await until(lambda v=volume: bridge_of(daemon)._volume == v)
            rec = pulse.record_spk(tmp_path / f"spk{volume}.raw")
            broker.publish(f"{BASE}/cmd/trigger", "PRESS")
            session = await sim.next_session(timeout=15)
            await session.wait_closed(timeout=20)
            await daemon.wait_state(State.LISTENING, timeout=10)
            played = np.frombuffer(rec.stop(), dtype="<i2")
            levels.append(tone_level_db(played, 1000.0))
        state = json.loads(broker.retained(f"{BASE}/state")[f"{BASE}/state"])
    assert state["volume"] == 25
    assert levels[0] - levels[1] == pytest.approx(12.04, abs=1.5), levels


async def test_broker_restart_mid_session_leaves_the_session_alone_and_everything_is_republished(
    pulse: PulseServer, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker goes away for 2 s during a session: the session keeps streaming (the simulator keeps receiving
    input_audio), the daemon logs the loss once and the return once, and availability, discovery and state are
    retained again afterwards (the broker kept nothing: no persistence)."""
    caplog.set_level(logging.INFO, logger="vatel_edge.mqtt")

    async def hold(s: SimSession) -> None:
        await s.wait_closed(timeout=60)

    # The mic hears silence: the session must outlive the broker's absence and the bridge's reconnect
    # backoff (several seconds on a loaded machine), so its idle timeout is not the daemon_config's 10 s.
    async with Simulator(script=hold) as sim, bridged(sim, broker, tmp_path,
                                                      session={"idle_timeout_s": 120.0}) as daemon:
        await asyncio.to_thread(broker.wait_retained, f"{BASE}/availability", b"online")
        broker.publish(f"{BASE}/cmd/trigger", "PRESS")
        session = await sim.next_session(timeout=15)
        await session.wait_audio(300)
        before = len(session.input_audio)
        await asyncio.to_thread(broker.restart, 2.0)
        assert not session.closed and daemon.state in (State.IN_SESSION, State.AGENT_SPEAKING)
        assert len(session.input_audio) > before + 24_000 * 2 * 1.5  # audio kept flowing while it was down
        await asyncio.to_thread(broker.wait_retained, f"{BASE}/availability", b"online", timeout=20)
        await asyncio.to_thread(broker.wait_retained, f"homeassistant/device/{DEV}/config")
        state = json.loads(await asyncio.to_thread(broker.wait_retained, f"{BASE}/state"))
        assert not session.closed, "the session ended while the bridge reconnected"
        assert state["state"] == "in_session" and state["session_id"] == session.id
        daemon.end_session("test")
        await daemon.wait_state(State.LISTENING, timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("vatel_edge.mqtt")]
    assert sum("lost" in m for m in lines) == 1, lines
    assert sum("is back" in m for m in lines) == 1, lines


async def test_home_assistant_birth_message_republishes_discovery_and_state(
    pulse: PulseServer, broker: Broker, tmp_path: Path
) -> None:
    """homeassistant/status "online" (Home Assistant restarted): discovery and state are published again."""
    async with Simulator() as sim, bridged(sim, broker, tmp_path, tls=False):
        topic = f"homeassistant/device/{DEV}/config"
        await asyncio.to_thread(broker.wait_retained, topic)
        broker.publish(topic, b"", retain=True)  # clears the retained message
        await asyncio.sleep(0.3)
        assert topic not in broker.retained(topic)
        broker.publish("homeassistant/status", "online")
        await asyncio.to_thread(broker.wait_retained, topic, timeout=5)


@pytest.mark.parametrize("fault", ["password", "certificate"])
async def test_wrong_password_or_untrusted_certificate_is_one_clear_error(
    pulse: PulseServer, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """A refused login names mqtt.username and the password source; a broker certificate no CA vouches for says
    so; each once (no spam while retrying); the daemon keeps running and the password is in no log line."""
    caplog.set_level(logging.DEBUG)
    extra: dict[str, Any] = {"password": "wrong-pw-9"} if fault == "password" else {"ca_file": None}
    async with Simulator() as sim, bridged(sim, broker, tmp_path, **extra) as daemon:
        await asyncio.sleep(4.0)
        assert daemon.state is State.LISTENING
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
              and r.name.startswith("vatel_edge.mqtt")]
    assert len(errors) == 1, errors
    if fault == "password":
        assert "mqtt.username 'device'" in errors[0] and "mqtt.password_file" in errors[0]
    else:
        assert "TLS" in errors[0] and "certificate" in errors[0].lower()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "wrong-pw-9" not in text and DEVICE_PASSWORD not in text


FLOOD = r"""
import sys, time
import paho.mqtt.client as mqtt
port, user, pw, base = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
c.username_pw_set(user, pw)
c.connect("127.0.0.1", int(port))
c.loop_start()
payloads = [("cmd/volume", "50"), ("cmd/volume", "loud"), ("cmd/mute", "OFF"), ("cmd/bogus", "1"),
            ("cmd/end_session", "PRESS")]
start = time.monotonic()
n = 0
while time.monotonic() - start < 10.0:
    ahead = start + n / 1000.0 - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
    topic, payload = payloads[n % len(payloads)]
    c.publish(base + "/" + topic, payload)
    n += 1
time.sleep(0.5)
c.loop_stop()
print(n)
"""


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


async def test_a_flood_of_commands_neither_stalls_the_loop_nor_grows_memory(
    pulse: PulseServer, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1000 commands a second for 10 s (valid, bad and unknown ones): the event loop stays on time (a probe's
    sleeps overshoot little), RSS stays flat, the excess is rate-limited (counted, logged once per burst), and
    the daemon still answers a trigger right after."""
    caplog.set_level(logging.WARNING, logger="vatel_edge.mqtt")
    async with Simulator() as sim, bridged(sim, broker, tmp_path, tls=False) as daemon:
        await asyncio.to_thread(broker.wait_retained, f"{BASE}/availability", b"online")
        await asyncio.sleep(1.0)
        rss0 = _rss_kb()
        lags: list[float] = []
        loop = asyncio.get_running_loop()
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOOD, str(broker.port), "consumer", "consumer-pw-0815", BASE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while flood.returncode is None:
            t0 = loop.time()
            await asyncio.sleep(0.02)
            lags.append(loop.time() - t0 - 0.02)
            if len(lags) > 700:
                break
        out, err = await flood.communicate()
        assert flood.returncode == 0, err.decode(errors="replace")[-2000:]
        sent = int(out)
        bridge = bridge_of(daemon)
        rss1 = _rss_kb()
        stats = bridge.describe()
        assert daemon.state is State.LISTENING
        assert daemon.trigger("test")
        session = await sim.next_session(timeout=15)
        await session.wait_audio(100)
    assert sent > 9000
    handled = stats["commands"] + stats["commands_rejected"] + stats["commands_rate_limited"]
    assert handled + stats["incoming_dropped"] >= sent * 0.95, stats
    assert stats["commands"] + stats["commands_rejected"] <= 20 + 10 * 11, stats  # 10/s plus the burst
    lags.sort()
    assert lags[len(lags) // 2] < 0.01 and lags[int(len(lags) * 0.99)] < 0.1, lags[-10:]
    assert rss1 - rss0 < 10_000, (rss0, rss1)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) <= 3, warnings


async def test_metrics_textfile_is_written_atomically_with_the_daemons_figures(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """[metrics] textfile without MQTT: a node_exporter text file that prometheus-client's parser reads, with up,
    the state, counters and tool calls by outcome; rewritten by rename (never a partial file)."""
    from prometheus_client.parser import text_string_to_metric_families

    path = tmp_path / "vatel_edge.prom"

    async with Simulator() as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, wake={"mode": "manual", "cooldown_ms": 0},
                            metrics={"textfile": str(path), "interval_s": 1.0})
        async with live_daemon(cfg, sim.api_key) as daemon:
            await until(path.exists)
            inode = path.stat().st_ino
            assert daemon.trigger("test")
            session = await sim.next_session(timeout=15)
            await session.wait_audio(100)
            await session.end_session()
            await daemon.wait_state(State.LISTENING, timeout=10)
            await asyncio.sleep(2.5)
            text = path.read_text()
            assert path.stat().st_ino != inode  # replaced, not rewritten in place
            assert not [p for p in tmp_path.iterdir() if p.name.startswith("vatel_edge.prom.")]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("vatel_edge_up", ())] == 1
    assert samples[("vatel_edge_state", (("state", "listening"),))] == 1
    assert samples[("vatel_edge_sessions_total", ())] == 1 and samples[("vatel_edge_wakes_total", ())] == 1
    assert samples[("vatel_edge_last_session_end_timestamp_seconds", ())] > 0
    assert ("vatel_edge_echo_reduction_db", ()) in samples
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    final = {s.name: s.value for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}
    assert final["vatel_edge_up"] == 0  # the last write, at shutdown
