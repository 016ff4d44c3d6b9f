"""The microphone path in a real-time reverberant room, with recorded human speech (issue 14's tests).

The real daemon (in process) on the suite's PulseAudio test devices; `RealTimeRoom` carries what it plays
through a reverberant room with a soft-clipping loudspeaker back into its microphone, and mixes in the user
(recorded human speech, devkit/speech.py) 1-3 m away. What the simulator received is compared with a
`SourceRecorder` on mic.monitor (what the microphone really captured), never with the clean clip. Each test
takes 15-40 s of real time; they are real-time tests (marked `realtime`), and timing bounds are generous,
sample counts and exactness are not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.config import daemon_config
from tests.support.pulse import PulseServer
from vatel_edge.audio import aec_dtln
from vatel_edge.audio.aec import available_engines
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.config import WakeConfig
from vatel_edge.devkit import room
from vatel_edge.devkit.room_scene import (
    finish,
    first_turn,
    room_daemon,
    session_lag,
    three_turns,
    wait_room,
    where_blocks,
)
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.simulator.script import wait_for_utterance
from vatel_edge.devkit.speech import human_speech, speech_available
from vatel_edge.state import State

pytest.importorskip("pyroomacoustics")
pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not (speech_available("front_right") and speech_available("dashwood")),
                       reason="needs the recorded speech packages (alsa-utils, pocketsphinx-testdata)"),
]
FMT = VATEL_FORMAT


def config(sim: Simulator, tmp_path: Path, **sections: Any) -> Any:
    return daemon_config(tmp_path, sim.base_url, sim.agent_id, **sections)


async def _listen_then_end(s: SimSession) -> None:
    await wait_for_utterance(s, speech_ms=200, silence_ms=700)
    await s.end_session()


@pytest.mark.parametrize(("clip", "distance_m", "min_speech_ms"), [
    # soft: a 90 ms /f/ 33 dB below the vowel, then a 240 ms pause
    # (in full-suite runs this first case once saw 67-72 ms: test_mute.py's pacat feeds were still playing into
    # the mic; tests/conftest.py now stops every test's feeds after it)
    ("front_right", 1.0, 120),
    ("front_right", 3.0, 120),
    # 480: the voiced run that fires is the second word; the pause after the first one is bridged
    # (mic.ONSET_GAP_MS) so the first word belongs to the stretch (before: the audio began 367-395 ms into it)
    ("front_right", 1.0, 480),
    ("eight_of_spades", 1.0, 120),  # hard: a vowel from the noise floor in 10 ms
    # 3 m, the default 240: the first syllable is below the energy gate; the default 1000 ms pre-roll covers
    # it (with 500 ms the audio began 20-48 ms after the first sound in 2 of 3 runs)
    ("eight_of_spades", 3.0, 240),
    ("eight_of_spades", 3.0, 480),
])
async def test_room_preroll_starts_250_ms_before_the_first_sound_of_human_speech(
    pulse: PulseServer, tmp_path: Path, clip: str, distance_m: float, min_speech_ms: int
) -> None:
    """Recorded human speech with a soft and a hard onset, 1 and 3 m from the device, VAD debounce 120 and
    480 ms: the audio the server received contains the microphone at the moment the clip's first sound reached
    it, sample for sample, with at least 250 ms of microphone before it."""
    setup = room.RoomSetup(user_distance_m=distance_m)
    wake = {"min_speech_ms": min_speech_ms, "window_ms": max(480, 2 * min_speech_ms),
            "preroll_ms": WakeConfig().preroll_ms}  # the product's default
    async with room_daemon(pulse, lambda sim: config(sim, tmp_path, wake=wake, audio={"echo_cancel": "auto"}),
                           _listen_then_end, setup=setup) as (sim, daemon, rt, recorder, events):
        assert rt is not None
        # later than the pre-roll after LISTENING: the ring starts empty when listening starts
        said = rt.say(human_speech(clip), at_s=rt.position / FMT.rate + 2.0)
        session = await sim.next_session(timeout=20)
        await session.wait_closed(timeout=30)
        await wait_room(rt, said.end, timeout=10)
        await daemon.wait_state(State.LISTENING, timeout=10)
        rec = finish(session, rt, recorder, daemon, events)
    lag = session_lag(rec.received, rec.recorded)
    onset = rec.onset(said)
    first = onset - lag  # index in what was sent
    assert first >= 0, f"what was sent starts {-first / FMT.rate * 1000:.0f} ms after the first sound"
    n = FMT.samples(20)
    assert np.array_equal(rec.received[first : first + n], rec.recorded[onset : onset + n]), (
        "the first sound did not arrive sample for sample")
    lead_ms = 1000.0 * first / FMT.rate
    print(f"pre-roll {clip} {distance_m} m min_speech {min_speech_ms}: {lead_ms:.0f} ms before the first sound")
    assert lead_ms >= 250.0, f"only {lead_ms:.0f} ms before the first sound"


needs_dtln = pytest.mark.skipif(not aec_dtln.available(), reason=f"dtln not installed: {aec_dtln.missing()}")


@pytest.mark.skipif(not available_engines(), reason="no echo engine installed")
@pytest.mark.parametrize("engine", ["auto", pytest.param("dtln", marks=needs_dtln)])
async def test_room_session_is_the_microphone_at_one_lag_outside_the_canceller_across_turns_and_a_barge_in(
    pulse: PulseServer, tmp_path: Path, engine: str
) -> None:
    """Three agent turns (the third cut by an interruption), the user (recorded human speech, 2 m) talking
    across their starts and ends, and a pause (room_scene.three_turns): what the server received is the
    microphone recording at ONE lag, sample for sample, everywhere except while the echo canceller runs (agent
    audio plus its hold), with audio at that lag before, between and after the turns; inside the turns the
    user's 100 ms blocks are compared with the user's part of the microphone and the figures printed (the
    engine changes them: AEC3 suppresses the user in double talk, docs/ECHO.md). With dtln the engine's
    latency (1051 samples) is longer than a frame: the bypass and every restart of the engine keep the lag."""
    audio = {"echo_cancel": engine, "mic_during_playback": "stream"}
    t = await three_turns(pulse, lambda sim: config(sim, tmp_path, audio=audio, session={"idle_timeout_s": 30}))
    assert "barge_in" in [k for k, _ in t.rec.events]
    assert len(t.engine) >= 3, f"expected three agent turns in the room, found {len(t.engine)}"
    n = FMT.samples(20)
    stretches = [(round(a / FMT.rate, 2), round(b / FMT.rate, 2)) for a, b in t.engine]
    assert t.bad.size == 0, (f"{t.bad.size} of {t.outside.size} blocks outside the canceller differ from the mic "
                             f"at the session's lag: first at {t.bad[:5] * n / FMT.rate} s, in the recording at "
                             f"lags {where_blocks(t.rec.received, t.rec.recorded, t.lag, t.bad[:5])} from the "
                             f"session's; the canceller's stretches (s): {stretches}; echo path {t.rec.echo}; the "
                             f"daemon's capture {t.rec.capture}; room {t.rec.room}; sent {t.rec.received.size}, "
                             f"recorded {t.rec.recorded.size} samples")
    print(f"exact blocks before, between and after the canceller's stretches: {t.exact_between}")
    assert min(t.exact_between) >= 5, f"too little exact audio before, between or after the turns: {t.exact_between}"
    ok = sum(c >= 0.5 for c in t.corr)
    print(f"stream: lag {t.lag} samples, {t.outside.size} blocks outside the canceller all exact; "
          f"user blocks during agent audio correlating >= 0.5: {ok}/{len(t.corr)}; median {np.median(t.corr):.2f}; "
          f"echo path {t.rec.echo}; capture {t.rec.capture}; room {t.rec.room}")
    assert t.corr, "the user did not speak during agent audio"
    assert max(t.corr) > 0.3, "nothing of the user correlates inside the canceller's stretches"


@pytest.mark.skipif(not available_engines(), reason="no echo engine installed")
@pytest.mark.parametrize("echo", [
    pytest.param(True, marks=pytest.mark.xfail(strict=False, reason=(
        "measured 2026-12-03: before the upper-quartile convergence rule 4 of 22 runs failed (AEC3 converged only "
        "after the overlap or never, so 'auto' muted all of it); with it 12 of 13 passed (muted 1.88-1.91 s), "
        "one run with two cores kept busy failed before the scene printed its figures"))),
    False,
], ids=["echo-path", "no-echo-path"])
async def test_room_first_agent_turn_after_start_the_user_is_heard_once_the_canceller_is_ready(
    pulse: PulseServer, tmp_path: Path, echo: bool
) -> None:
    """The first agent turn of a freshly started daemon (mic_during_playback = "auto", the default), the user
    (recorded human speech, 1.5 m) talking over it (room_scene.first_turn). Known gap (docs/ECHO.md): "auto"
    mutes the microphone until the canceller converged, so the start of the overlap is lost. Checked: the muted
    stretch is digital silence and ends before the turn does (the canceller converged; with no echo path its
    quiet residual counts), and after it user blocks correlating >= 0.5 with the user's part of the microphone
    reach the server; the figures are printed."""
    audio = {"echo_cancel": "auto", "mic_during_playback": "auto"}
    f = await first_turn(pulse, lambda sim: config(sim, tmp_path, audio=audio, session={"idle_timeout_s": 30}),
                         echo=echo, setup=room.RoomSetup(user_distance_m=1.5))
    ok, ok_after = sum(c >= 0.5 for c in f.during), sum(c >= 0.5 for c in f.after)
    print(f"first turn, {'echo path' if echo else 'no echo path'}: mic muted for the first {f.deaf_ms:.0f} ms of "
          f"agent audio; user blocks during agent audio correlating >= 0.5: {ok}/{len(f.during)} "
          f"({100 * ok / max(1, len(f.during)):.0f} %); after the muted stretch {ok_after}/{len(f.after)}; "
          f"echo {f.rec.echo}; room {f.rec.room}")
    assert f.during, "the user did not talk over the agent"
    assert f.deaf_end < f.user_end, "the microphone stayed muted for as long as the user talked over the agent"
    assert ok_after >= 1, "nothing the user said after the canceller was ready reached the server"


@needs_dtln
async def test_room_first_agent_turn_with_dtln_the_user_is_heard_from_the_first_word(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """The same first turn with `audio.echo_cancel = "dtln"` and mic_during_playback = "auto": DTLN-aec has
    nothing to converge, so the path counts it converged at once and nothing is muted, and the user's words
    over the agent reach the server. Measured 2026-12-04 (docs/ECHO.md, "DTLN-aec"): 51-58 of 72-73 user
    blocks in 8 of 12 runs, 9-35 in the 4 after a long bench sequence on the same sound server (AEC3:
    12-16, after 1.9 s muted); the bound here is below both, so what it checks is that nothing is muted and
    the user is not erased wholesale."""
    audio = {"echo_cancel": "dtln", "mic_during_playback": "auto"}
    f = await first_turn(pulse, lambda sim: config(sim, tmp_path, audio=audio, session={"idle_timeout_s": 30}),
                         echo=True, setup=room.RoomSetup(user_distance_m=1.5))
    ok = sum(c >= 0.5 for c in f.during)
    print(f"first turn, dtln: mic muted for the first {f.deaf_ms:.0f} ms of agent audio; user blocks during agent "
          f"audio correlating >= 0.5: {ok}/{len(f.during)} ({100 * ok / max(1, len(f.during)):.0f} %); "
          f"echo {f.rec.echo}; room {f.rec.room}")
    assert f.rec.echo.get("name") == "dtln" and f.rec.echo.get("converged")
    assert len(f.during) >= 40, "the user did not talk over the agent"
    assert f.deaf_ms < 100, f"the microphone was muted for {f.deaf_ms:.0f} ms"
    assert ok >= 5, f"only {ok} of {len(f.during)} user blocks reached the server"
