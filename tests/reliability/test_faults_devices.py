"""Fault matrix, audio devices: a microphone that does not exist, and sound devices that vanish for real.

Vanishing is real: a private PulseAudio server (not the suite-wide one, whose sinks other tests use) has
its `mic` and `spk` null-sink modules unloaded with `pactl unload-module` mid-session, which kills the ALSA
pulse plugin's streams under the daemon, and loaded again later. PULSE_SERVER points at the private server
for the test and is restored by PulseServer.stop().
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import reliability_config
from tests.support.daemon import RECOVERY_S, live_daemon, wake_and_wait
from tests.support.events import Events
from tests.support.logs import count_mentions
from tests.support.pulse import RATE, PulseServer
from vatel_edge import daemon as daemon_module
from vatel_edge.audio.capture import Capture
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.playback import Player
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.simulator.script import tone
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(120)
FMT = VATEL_FORMAT
SINK_ARGS = f"format=s16le rate={RATE} channels=1"


@pytest.fixture
def private_pulse(tmp_path: Path) -> Iterator[PulseServer]:
    """A PulseAudio server of this test only (PULSE_SERVER points at it until the test ends)."""
    server = PulseServer.start(tmp_path / "pulse")
    try:
        yield server
    finally:
        server.stop()


def _unload(server: PulseServer, sink: str) -> None:
    for line in server.pactl("list", "short", "modules").stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1] == "module-null-sink" and f"sink_name={sink}" in parts[2]:
            server.pactl("unload-module", parts[0])
            return
    raise AssertionError(f"no null sink {sink} loaded")


def _load(server: PulseServer, sink: str) -> None:
    server.pactl("load-module", "module-null-sink", f"sink_name={sink}", *SINK_ARGS.split())


async def _wait_for(cond: object, timeout: float, what: str) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _short(s: SimSession) -> None:
    await s.wait_seconds(0.3)
    await s.end_session()



def _short_turn(turn_id: str, *, wait_ms: float) -> Callable[[SimSession], Awaitable[None]]:
    """A session script: after `wait_ms` of microphone audio, one short agent turn, then the end."""
    async def script(s: SimSession) -> None:
        await s.wait_audio(wait_ms, timeout=15)
        await s.send_turn(turn_id, tone(300), realtime=True)
        await s.wait_seconds(0.5)
        await s.end_session()
    return script

async def test_capture_device_that_does_not_exist_is_retried_and_the_daemon_still_serves(
    pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """audio.capture_device names no PCM: READY anyway (status says why), retries logged once, sessions work."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    monkeypatch.setattr(daemon_module, "READY_WAIT_S", 1.0)
    async with Simulator(script=_short) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id, audio={"capture_device": "no_such_pcm"})
        async with live_daemon(cfg, sim.api_key) as daemon:
            assert "microphone" in (daemon.status()["last_error"] or "")
            await asyncio.sleep(2.5)  # several reopen attempts
            await wake_and_wait(daemon)
            assert len(sim.sessions) == 1
            per_logger = count_mentions(caplog, "microphone unavailable")
            assert per_logger == {"vatel_edge.audio.capture": 1}, per_logger


async def test_pulseaudio_source_missing_at_start_then_appearing(
    private_pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mic's PulseAudio source is absent at start: the daemon is READY anyway; when it appears, frames flow."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    monkeypatch.setattr(daemon_module, "READY_WAIT_S", 1.0)
    _unload(private_pulse, "mic")
    async with Simulator(script=_short) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            assert daemon.capture is not None and daemon.capture.last_frame_at is None
            _load(private_pulse, "mic")
            await _wait_for(lambda: daemon.capture is not None and daemon.capture.last_frame_at is not None,
                            RECOVERY_S + 10, "capture frames after the source appeared")
            await wake_and_wait(daemon)
            assert sim.sessions[0].audio_ms() > 0
    assert count_mentions(caplog, "microphone unavailable") == {"vatel_edge.audio.capture": 1}
    assert count_mentions(caplog, "microphone is back") == {"vatel_edge.audio.capture": 1}


async def test_mic_and_speaker_vanish_mid_turn_and_come_back(
    private_pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both sinks are unloaded while the agent speaks: the session ends or carries on, the daemon listens again,
    each device's loss and return is logged once, and the next session has microphone audio and sound."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    events = Events()
    turn_started = asyncio.Event()

    async def speaking(s: SimSession) -> None:
        await s.wait_audio(200)
        turn_started.set()
        try:
            await s.send_turn("t1", tone(4000), realtime=True)
        finally:
            await s.end_session()

    listening = _short_turn("t2", wait_ms=500)
    async with Simulator(script=listening) as sim:
        sim.scripts.append(speaking)
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id, session={"idle_timeout_s": 8.0})
        async with live_daemon(cfg, sim.api_key, events=events) as daemon:
            assert daemon.capture is not None and daemon.player is not None
            assert daemon.trigger("test")
            await asyncio.wait_for(turn_started.wait(), 15)
            await _wait_for(lambda: daemon.state is State.AGENT_SPEAKING, 10, "agent speaking")
            _unload(private_pulse, "mic")
            _unload(private_pulse, "spk")
            await asyncio.sleep(3.0)  # longer than the capture stall detector
            assert daemon.state is not State.STOPPED
            _load(private_pulse, "mic")
            _load(private_pulse, "spk")
            await daemon.wait_state(State.LISTENING, timeout=RECOVERY_S + 10)
            capture = daemon.capture
            await _wait_for(
                lambda: capture.last_frame_at is not None and time.monotonic() - capture.last_frame_at < 0.5,
                RECOVERY_S + 10, "capture frames after the mic came back",
            )
            player = daemon.player
            periods_before = player.stats["periods"]
            await wake_and_wait(daemon, timeout=30)
            assert sim.sessions[1].audio_ms() >= 500
            # the speaker played the second turn (periods written after it came back)
            assert player.stats["periods"] > periods_before
    assert capture.stats["reopens"] >= 1
    assert count_mentions(caplog, "microphone lost") == {"vatel_edge.audio.capture": 1}
    assert count_mentions(caplog, "microphone is back") == {"vatel_edge.audio.capture": 1}
    assert player.stats["reopens"] >= 1
    assert count_mentions(caplog, "speaker lost") == {"vatel_edge.audio.playback": 1}
    assert count_mentions(caplog, "speaker is back") == {"vatel_edge.audio.playback": 1}


async def test_both_devices_missing_for_several_retries_are_logged_once_each_way(
    private_pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Microphone and speaker absent at start: the daemon tries to open each several times (counted by a spy
    on the real open), logs "unavailable" once per device, not per attempt, and "is back" once when they
    appear; then a session has microphone audio and the speaker plays."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    monkeypatch.setattr(daemon_module, "READY_WAIT_S", 1.0)
    attempts = {"capture": 0, "playback": 0}

    def counting(cls: type[Capture] | type[Player], direction: str) -> None:
        real = cls._open

        def _open(self: Any) -> Any:
            attempts[direction] += 1
            return real(self)

        monkeypatch.setattr(cls, "_open", _open)

    counting(Capture, "capture")
    counting(Player, "playback")
    _unload(private_pulse, "mic")
    _unload(private_pulse, "spk")

    speak = _short_turn("t1", wait_ms=300)
    async with Simulator(script=speak) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            await _wait_for(lambda: min(attempts.values()) >= 4, 15, "four open attempts of each device")
            assert count_mentions(caplog, "unavailable") == {"vatel_edge.audio.capture": 1,
                                                             "vatel_edge.audio.playback": 1}
            _load(private_pulse, "mic")
            _load(private_pulse, "spk")
            capture, player = daemon.capture, daemon.player
            assert capture is not None and player is not None
            await _wait_for(lambda: capture.last_frame_at is not None, RECOVERY_S + 10, "frames after the mic appeared")
            await _wait_for(lambda: count_mentions(caplog, "speaker is back") != {}, RECOVERY_S + 10,
                            "the speaker back")
            periods_before = player.stats["periods"]
            await wake_and_wait(daemon, timeout=30)
            assert sim.sessions[0].audio_ms() >= 300
            assert player.stats["periods"] > periods_before
    assert min(attempts.values()) >= 4, attempts
    assert count_mentions(caplog, "unavailable") == {"vatel_edge.audio.capture": 1, "vatel_edge.audio.playback": 1}
    assert count_mentions(caplog, "microphone is back") == {"vatel_edge.audio.capture": 1}
    assert count_mentions(caplog, "speaker is back") == {"vatel_edge.audio.playback": 1}
