"""Privacy mute: while muted nothing the user says leaves the device, whatever they say and however it wakes.

The real daemon on the real-time test devices against the simulator; mute and unmute go through the control
socket, as `vatel-edge mute` sends them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.config import config_toml, daemon_config
from tests.support.events import Events
from tests.support.pulse import PulseServer
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.config import load_config
from vatel_edge.control import control_request
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(90)
FMT = VATEL_FORMAT


async def _hold(s: SimSession) -> None:
    await s.wait_closed(timeout=60)


async def test_nothing_reaches_the_server_while_muted_whatever_is_said(pulse: PulseServer, tmp_path: Path) -> None:
    """Muted: speech does not wake, a trigger is refused, no token is fetched for a session; status says so.
    Unmuted: the same speech wakes again."""
    speech = shipped_speech("user_request.wav")
    async with Simulator(script=_hold) as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id)
        events = Events()
        daemon = Daemon(cfg, api_key=sim.api_key, on_event=events)
        sock = cfg.control.socket_path
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            reply = await control_request(sock, {"cmd": "mute"})
            assert reply == {"ok": True, "muted": True, "source": "software"}
            feed = pulse.feed_mic(speech + bytes(FMT.nbytes(300)) + speech + bytes(FMT.nbytes(500)))
            assert (await control_request(sock, {"cmd": "trigger"}))["started"] is False
            await asyncio.to_thread(feed.wait, 20)
            await asyncio.sleep(0.5)
            assert sim.sessions == [] and daemon.state is State.LISTENING
            status = (await control_request(sock, {"cmd": "status"}))["status"]
            assert status["muted"] is True and status["counters"]["wakes"] == 0
            assert "wake" not in events.kinds()
            assert (await control_request(sock, {"cmd": "unmute"}))["muted"] is False
            pulse.feed_mic(bytes(FMT.nbytes(300)) + speech + bytes(FMT.nbytes(800)))
            session = await sim.next_session(timeout=20)
            assert session is not None
    assert ("mute", "muted (software)") in events.rows and ("mute", "unmuted (software)") in events.rows


async def test_muting_mid_session_ends_it_and_stops_the_microphone_at_once(pulse: PulseServer, tmp_path: Path) -> None:
    """Mute during a session (the user still talking): the session ends and no input_audio is sent after."""
    speech = shipped_speech("user_request.wav")
    async with Simulator(script=_hold) as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id)
        daemon = Daemon(cfg, api_key=sim.api_key)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            pulse.feed_mic(speech + speech + speech + speech)  # talking on and on
            session = await sim.next_session(timeout=20)
            await session.wait_audio(500)
            muted_at = time.monotonic()
            assert daemon.set_muted(True)
            await session.wait_closed(timeout=10)
            await daemon.wait_state(State.LISTENING, timeout=10)
            await asyncio.sleep(1.0)
            assert len(sim.sessions) == 1
    late = [m for m in session.messages if m.direction == "in" and m.type == "input_audio" and m.t > muted_at + 0.05]
    assert late == [], f"{len(late)} input_audio frames reached the server after the mute"


async def test_the_hardware_switch_wins_and_mute_survives_a_reload(
    pulse: PulseServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mute by the switch cannot be lifted by software; a reload (new runtime) keeps the mute, and an
    always-on daemon muted before the reload opens no session after it."""
    path = tmp_path / "config.toml"
    async with Simulator() as sim:
        monkeypatch.setenv("ORG_API_KEY", sim.api_key)  # a reload re-reads the key
        path.write_text(config_toml(tmp_path, sim.base_url, sim.agent_id), encoding="utf-8")
        daemon = Daemon(load_config(path), api_key=sim.api_key)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            assert daemon.set_muted(True, source="switch")
            assert not daemon.set_muted(False), "software unmuted what the switch muted"
            assert daemon.muted and daemon.status()["mute_source"] == "switch"
            assert daemon.set_muted(False, source="switch") and not daemon.muted
            assert daemon.set_muted(True)
            before = daemon.runtime
            path.write_text(config_toml(tmp_path, sim.base_url, sim.agent_id).replace('mode = "manual"',
                                                                                     'mode = "always"'))
            assert daemon.request_reload()
            deadline = time.monotonic() + 10
            while (daemon.runtime is before or daemon.runtime is None) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert daemon.cfg.wake.mode == "always" and daemon.runtime is not None
            assert daemon.muted and daemon.runtime.mic.muted
            await asyncio.sleep(1.5)
            assert sim.sessions == [], "the always-on wake opened a session while muted"
