"""End to end: the real daemon against the local simulator with real-time ALSA devices (PulseAudio null sinks).

The microphone is `test_mic` (the monitor of null sink `mic`, fed with pacat), the speaker is `test_spk`
(null sink `spk`, recorded from its monitor with parec). Speech comes from the shipped espeak-ng WAVs.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.audio import tone_level_db
from tests.support.config import daemon_config
from tests.support.events import Events
from tests.support.pulse import PulseServer
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.config import Config
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.fixtures import shipped_speech, steady_tone
from vatel_edge.devkit.simulator import SimSession, Simulator, TokenFault
from vatel_edge.devkit.simulator.script import wait_for_utterance
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(90)
FMT = VATEL_FORMAT


@asynccontextmanager
async def daemon_with(
    sim: Simulator, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[Daemon, Events]]:
    cfg: Config = daemon_config(tmp_path, sim.base_url, sim.agent_id, **overrides)
    events = Events()
    daemon = Daemon(cfg, api_key=sim.api_key, on_event=events)
    async with running(daemon):
        await daemon.wait_state(State.LISTENING, timeout=20)
        yield daemon, events


@pytest.fixture
def recorder(pulse: PulseServer, tmp_path: Path) -> Iterator[Callable[[], bytes]]:
    rec = pulse.record_spk(tmp_path / "spk.raw")
    stopped: list[bytes] = []

    def stop() -> bytes:
        if not stopped:
            stopped.append(rec.stop())
        return stopped[0]

    yield stop
    stop()


@pytest.mark.parametrize("token", ["prefetched", "slow"])
async def test_speech_wakes_and_server_gets_contiguous_audio_from_before_onset(
    pulse: PulseServer, tmp_path: Path, token: str
) -> None:
    """The simulator receives the whole utterance, sample-exact and contiguous, starting before its onset;
    with a slow token endpoint (1.5 s) the audio captured while connecting is held and sent, not lost."""
    utterance = shipped_speech("user_request.wav")
    sim = Simulator(script=_listen_then_end)
    if token == "slow":
        sim.faults.token_fault(TokenFault.slow(1.5), TokenFault.slow(1.5))
    async with sim, daemon_with(sim, tmp_path) as (daemon, events):
        pulse.feed_mic(bytes(FMT.nbytes(300)) + utterance + bytes(FMT.nbytes(1500)))
        session = await sim.next_session(timeout=20)
        await session.wait_closed(timeout=30)
        await daemon.wait_state(State.LISTENING, timeout=10)
    received = bytes(session.input_audio)
    voiced = _from_first_loud_sample(utterance)
    start = received.find(voiced)
    assert start >= 0, "the utterance did not arrive contiguous and sample-exact"
    # Pre-roll: audio from before the onset arrived too (the leading silence of the feed).
    assert start >= FMT.nbytes(100)
    assert events.kinds().index("wake") < events.kinds().index("session_started")


async def test_silence_and_quiet_noise_never_wake(pulse: PulseServer, tmp_path: Path) -> None:
    """4 s of digital silence then quiet noise (-60 dBFS): no wake, no token used, still LISTENING."""
    rng = np.random.default_rng(1)
    quiet = (rng.normal(0, 32768 * 10 ** (-60 / 20), FMT.samples(2500))).astype("<i2").tobytes()
    async with Simulator() as sim, daemon_with(sim, tmp_path) as (daemon, events):
        feeder = pulse.feed_mic(bytes(FMT.nbytes(1500)) + quiet)
        await asyncio.to_thread(feeder.wait, 15)
        await asyncio.sleep(0.5)
        assert daemon.state is State.LISTENING
        assert "wake" not in events.kinds()
        assert sim.sessions == []


async def test_agent_audio_is_heard_and_an_interruption_cuts_it(
    pulse: PulseServer, tmp_path: Path, recorder: Callable[[], bytes]
) -> None:
    """A 6 s agent turn is cut by `interruption` after ~1 s; its late chunk (another tone) never plays."""
    answer = steady_tone(6000, 440.0)
    late = steady_tone(400, 1250.0)
    interrupted = asyncio.Event()

    async def script(s: SimSession) -> None:
        await wait_for_utterance(s, speech_ms=200, silence_ms=400)
        turn = asyncio.create_task(s.send_turn("t1", answer, realtime=True))
        await s.wait_seconds(1.2)
        turn.cancel()
        await s.interrupt()
        interrupted.set()
        await s.send("response_audio", {"turn_id": "t1", "audio": base64.b64encode(late).decode(), "is_final": True})
        await s.wait_seconds(1.5)
        await s.end_session()

    async with Simulator(script=script) as sim, daemon_with(sim, tmp_path) as (daemon, events):
        pulse.feed_mic(shipped_speech("user_request.wav") + bytes(FMT.nbytes(1000)))
        session = await sim.next_session(timeout=20)
        await session.wait_closed(timeout=30)
        await daemon.wait_state(State.LISTENING, timeout=10)
    played = np.frombuffer(recorder(), dtype="<i2")
    assert interrupted.is_set()
    heard_s = _tone_seconds(played, 440.0)
    # Paced at real time for 1.2 s, minus the prebuffer, plus at most a period and PulseAudio's latency.
    assert 0.5 < heard_s < 1.2 + 0.4, f"heard {heard_s:.2f} s of the interrupted turn"
    assert tone_level_db(played, 1250.0) < -60, "a late chunk of the interrupted turn was played"
    assert "barge_in" in events.kinds()
    assert daemon.counters.late_chunks_dropped == 1


async def test_tool_call_is_answered_and_session_end_returns_to_listening_then_a_new_session_uses_a_new_token(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """Two utterances: two sessions, each with its own token; tool calls answered with their ids."""
    outputs: list[str] = []

    async def script(s: SimSession) -> None:
        await wait_for_utterance(s, speech_ms=200, silence_ms=400)
        outputs.append(await s.tool_call("set_light", {"on": True}))
        outputs.append(await s.tool_call("no_such_tool", {}))
        await s.end_session()

    async with Simulator(script=script) as sim, daemon_with(sim, tmp_path) as (daemon, _events):
        pulse.feed_mic(shipped_speech("user_request.wav") + bytes(FMT.nbytes(800)))
        first = await sim.next_session(timeout=20)
        await first.wait_closed(timeout=20)
        await daemon.wait_state(State.LISTENING, timeout=5)
        assert daemon.gpio is not None
        pulse.feed_mic(bytes(FMT.nbytes(1200)) + shipped_speech("user_request.wav") + bytes(FMT.nbytes(800)))
        second = await sim.next_session(timeout=20)
        await second.wait_closed(timeout=20)
        await daemon.wait_state(State.LISTENING, timeout=5)
    assert outputs == ["ok", "error: unknown tool no_such_tool"] * 2
    assert first.token != second.token
    assert sim.client_errors == []
    assert daemon.counters.sessions == 2


async def test_manual_trigger_and_idle_timeout(pulse: PulseServer, tmp_path: Path) -> None:
    """In manual mode speech does not wake; trigger() does; a silent session ends on idle timeout."""

    async def script(s: SimSession) -> None:
        await s.wait_closed(timeout=30)

    async with Simulator(script=script) as sim, daemon_with(
        sim, tmp_path, wake={"mode": "manual"}, session={"idle_timeout_s": 1.0}
    ) as (daemon, events):
        feeder = pulse.feed_mic(shipped_speech("user_request.wav"))
        await asyncio.to_thread(feeder.wait, 15)
        assert sim.sessions == []
        assert daemon.trigger("test") is True
        session = await sim.next_session(timeout=10)
        await session.wait_closed(timeout=10)
        await daemon.wait_state(State.LISTENING, timeout=5)
    assert any(k == "session_closed" and "idle" in t for k, t in events.rows)


async def _listen_then_end(s: SimSession) -> None:
    await wait_for_utterance(s, speech_ms=300, silence_ms=600)
    await s.end_session()


def _from_first_loud_sample(pcm: bytes, threshold: int = 200) -> bytes:
    x = np.frombuffer(pcm, dtype="<i2")
    first = int(np.flatnonzero(np.abs(x) > threshold)[0])
    return x[first:].tobytes()


def _tone_seconds(x: np.ndarray, freq: float, window_ms: int = 20) -> float:
    """Seconds of `x` where a `freq` tone dominates (Goertzel-style projection per window)."""
    n = FMT.samples(window_ms)
    t = np.arange(n) / FMT.rate
    ref = np.exp(-2j * np.pi * freq * t)
    count = 0
    for i in range(0, len(x) - n, n):
        w = x[i : i + n].astype(np.float64)
        energy = float(np.sum(w * w))
        if energy <= 0:
            continue
        proj = abs(np.dot(w, ref)) ** 2 * 2 / n
        if proj > 0.5 * energy and energy / n > (32768 * 10 ** (-40 / 20)) ** 2:
            count += 1
    return count * window_ms / 1000.0


async def test_button_press_starts_a_session_and_a_second_press_ends_it(pulse: PulseServer, tmp_path: Path) -> None:
    """Button mode (fake GPIO backend): press -> session; press again -> session ends, back to listening."""
    from vatel_edge.gpio import FakeGpio

    async def script(s: SimSession) -> None:
        await s.wait_closed(timeout=30)

    async with Simulator(script=script) as sim, daemon_with(
        sim, tmp_path, wake={"mode": "button", "button_line": "GPIO5", "debounce_ms": 10}
    ) as (daemon, events):
        gpio = daemon.gpio
        assert isinstance(gpio, FakeGpio)
        assert gpio.press("gpiochip0", "GPIO5") == 1
        session = await sim.next_session(timeout=10)
        await daemon.wait_state(State.IN_SESSION, timeout=5)
        await asyncio.sleep(0.1)
        assert gpio.press("gpiochip0", "GPIO5") == 1
        await session.wait_closed(timeout=10)
        await daemon.wait_state(State.LISTENING, timeout=5)
    assert any(k == "wake" and t == "button" for k, t in events.rows)
    assert any(k == "session_closed" and t == "button" for k, t in events.rows)
