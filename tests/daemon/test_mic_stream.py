"""The microphone stream the server receives: pre-roll before the speech onset, and one constant lag.

The real daemon on the real-time test devices (PulseAudio null sinks) against the simulator. What the
simulator received (`input_audio`) is compared with what was fed into the microphone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.support.config import daemon_config
from tests.support.events import Events
from tests.support.pulse import PulseServer
from vatel_edge.audio.aec import available_engines
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.room_scene import three_turn_script
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.simulator.script import wait_for_utterance
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(120)
FMT = VATEL_FORMAT
Pcm = npt.NDArray[np.int16]


@asynccontextmanager
async def daemon_with(sim: Simulator, tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Daemon, Events]]:
    events = Events()
    daemon = Daemon(daemon_config(tmp_path, sim.base_url, sim.agent_id, **overrides), api_key=sim.api_key,
                    on_event=events)
    async with running(daemon):
        await daemon.wait_state(State.LISTENING, timeout=20)
        yield daemon, events


def pcm(data: bytes) -> Pcm:
    return np.frombuffer(data, dtype="<i2")


def first_sound(x: Pcm, threshold: int = 64) -> int:
    """Index of the first sample louder than `threshold` (the onset of a clean source)."""
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > threshold)
    assert loud.size, "no sound"
    return int(loud[0])


def soft_onset(speech: bytes, fade_ms: float) -> bytes:
    """The utterance with a linear fade-in over its first `fade_ms` after its first sound (a breathy start)."""
    x = pcm(speech).astype(np.float64)
    start = first_sound(pcm(speech))
    n = FMT.samples(fade_ms)
    x[start : start + n] *= np.linspace(0.0, 1.0, n)
    return np.rint(x).astype("<i2").tobytes()


async def _listen_then_end(s: SimSession) -> None:
    await wait_for_utterance(s, speech_ms=200, silence_ms=600)
    await s.end_session()


@pytest.mark.parametrize("min_speech_ms", [120, 240, 480])
@pytest.mark.parametrize("onset", ["hard", "soft"])
async def test_preroll_starts_before_the_speech_onset(
    pulse: PulseServer, tmp_path: Path, min_speech_ms: int, onset: str
) -> None:
    """Whatever the VAD's debounce and however softly the speech starts, the server's audio starts at least
    250 ms before the first sound of the utterance (wake.preroll_ms = 500 before the voiced stretch's onset),
    and the utterance arrives whole and sample-exact."""
    speech = shipped_speech("user_request.wav")
    if onset == "soft":
        speech = soft_onset(speech, 400)
    lead_in = FMT.nbytes(1500)  # silence before the speech: more than any pre-roll
    async with Simulator(script=_listen_then_end) as sim, daemon_with(
        sim, tmp_path, wake={"min_speech_ms": min_speech_ms, "window_ms": max(480, 2 * min_speech_ms)}
    ) as (daemon, _events):
        pulse.feed_mic(bytes(lead_in) + speech + bytes(FMT.nbytes(1500)))
        session = await sim.next_session(timeout=20)
        await session.wait_closed(timeout=30)
        await daemon.wait_state(State.LISTENING, timeout=10)
    received = bytes(session.input_audio)
    sound = first_sound(pcm(speech))
    block = speech[2 * sound : 2 * sound + FMT.nbytes(20)]
    at = received.find(block)
    assert at >= 0 and at % 2 == 0, "the utterance's first sound did not arrive sample-exact"
    lead_ms = 1000.0 * (at // 2) / FMT.rate
    assert lead_ms >= 250.0, f"the server's audio started only {lead_ms:.0f} ms before the first sound"
    assert received[at : at + len(speech) - 2 * sound] == speech[2 * sound :], "the utterance was not whole"


def best_lag(received: Pcm, source: Pcm, block: slice, around: int, span: int) -> tuple[int, float]:
    """The lag (received index - source index) within `around` +- `span` at which `source[block]` correlates
    best with the received stream, and that correlation."""
    ref = source[block].astype(np.float64)
    best, best_c = around, -2.0
    for lag in range(around - span, around + span + 1):
        lo = block.start + lag
        seg = received[lo : lo + ref.size].astype(np.float64)
        if lo < 0 or seg.size < ref.size or not seg.any():
            continue
        c = float(np.corrcoef(seg, ref)[0, 1])
        if c > best_c:
            best, best_c = lag, c
    return best, best_c


@pytest.mark.skipif(not available_engines(), reason="no echo engine installed")
async def test_the_stream_keeps_one_lag_across_agent_turns_a_barge_in_and_pauses(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """A session of three agent turns (the third cut by an interruption) with the user talking across their
    starts and ends and pausing: what the server received is the microphone at ONE constant lag. Outside the
    echo engine's stretches it is sample-exact at that lag (before, between and after them); inside them (the
    engine runs while the agent plays) 200 ms windows match best at that same lag."""
    talk = shipped_speech("user_request.wav") + bytes(FMT.nbytes(700)) + shipped_speech("user_interrupt.wav")
    user = bytes(FMT.nbytes(1000)) + talk + bytes(FMT.nbytes(400)) + talk + bytes(FMT.nbytes(300)) + talk
    script = three_turn_script(heard_ms=600, gaps_s=(1.0, 0.6), third_times=2, cut_after_s=1.0, tail_s=2.5)

    async with Simulator(script=script) as sim, daemon_with(
        sim, tmp_path, audio={"echo_cancel": "auto", "mic_during_playback": "stream"}
    ) as (daemon, events):
        pulse.feed_mic(user + bytes(FMT.nbytes(3000)))
        session = await sim.next_session(timeout=20)
        await session.wait_closed(timeout=40)
        await daemon.wait_state(State.LISTENING, timeout=10)
        echo = daemon.echo
        assert echo is not None and echo.latency > 0, "the engine's latency was not measured"
    assert "barge_in" in events.kinds()
    received = pcm(bytes(session.input_audio))
    source = pcm(user)
    sound = first_sound(source)
    at = bytes(received).find(bytes(source[sound : sound + FMT.samples(20)]))
    assert at >= 0, "the first words did not arrive sample-exact (the engine idles before the agent talks)"
    lag = at // 2 - sound
    # 1. Sample-exact wherever the engine idled: at the same lag before, between and after its stretches.
    n = FMT.samples(20)
    exact = [start for start in range(sound, min(source.size, received.size - lag) - n, n)
             if np.array_equal(received[start + lag : start + lag + n], source[start : start + n])]
    stretches = np.flatnonzero(np.diff(exact) > n)  # gaps between exact runs: where the engine ran
    assert exact and len(stretches) >= 2, f"the engine must have started and stopped at least twice ({stretches})"
    assert exact[-1] > exact[stretches[-1] + 1] >= 0 and len(exact) - stretches[-1] > 10, (
        "no sample-exact audio after the last engine stretch: the lag changed")
    # 2. Inside the engine's stretches: 200 ms windows (longer than any pitch self-similarity) match best at
    #    the same lag, give or take the engine's group delay; windows it changed too much are counted.
    w = FMT.samples(200)
    located = damaged = 0
    for gap in stretches:
        lo, hi = exact[gap] + n, exact[gap + 1]
        for start in range(lo, hi - w, w // 2):
            if float(np.abs(source[start : start + w].astype(np.float64)).mean()) < 300:
                continue  # a pause
            found, best = best_lag(received, source, slice(start, start + w), lag, 300)
            if best < 0.85:
                damaged += 1
                continue
            located += 1
            here = best_lag(received, source, slice(start, start + w), lag, 2)[1]
            assert abs(found - lag) <= 8, (
                f"window at {start / FMT.rate:.2f} s fits best {found - lag:+d} samples off "
                f"({best:.2f}, here {here:.2f})"
            )
    assert located >= 3, f"too few windows inside the engine's stretches to check ({located}, {damaged} damaged)"

