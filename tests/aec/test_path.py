"""EchoPath (the daemon's echo path) and check_duplex (the echo-related start-up checks), without devices."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from tests.support.aec import FMT, FRAME_MS
from vatel_edge.audio import aec, aec_path
from vatel_edge.audio.aec import EchoReference
from vatel_edge.audio.aec_path import EchoPath, check_duplex
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.config import config_from_dict
from vatel_edge.errors import ConfigError

N = FMT.samples(FRAME_MS)
NBYTES = FMT.nbytes(FRAME_MS)
FRAME_S = FRAME_MS / 1000


class Recorder:
    """A canceller that records its calls and returns the mic minus the reference (a perfect, instant AEC)."""

    name = "recorder"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[bytes, bytes]] = []
        self.closed = 0
        self.fail = fail

    def process(self, mic: bytes, ref: bytes) -> bytes:
        if self.fail:
            raise RuntimeError("native engine error")
        self.calls.append((mic, ref))
        m = np.frombuffer(mic, dtype="<i2").astype(np.int32)
        r = np.frombuffer(ref, dtype="<i2").astype(np.int32)
        return bytes(np.clip(m - r, -32768, 32767).astype("<i2").tobytes())

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


def noise(n: int, seed: int, level: int = 6000) -> bytes:
    return np.random.default_rng(seed).integers(-level, level, n).astype("<i2").tobytes()


def cfg(**sections: Any) -> Any:
    raw: dict[str, Any] = {"vatel": {"agent_id": "0b7e6c1e-7d38-4c1e-9a8f-3f7f2b6c9d10"}, **sections}
    return config_from_dict(raw)


def test_frames_pass_untouched_and_skip_the_engine_while_nothing_played() -> None:
    """Idle (nothing ever played): each frame comes back as it was and the engine is never called."""
    engine = Recorder()
    path = EchoPath(engine, frame_ms=FRAME_MS)
    frames = [CaptureFrame(noise(N, k), 100.0 + k * FRAME_S, k) for k in range(20)]
    assert [path.process(f) for f in frames] == frames
    assert engine.calls == [] and path.stats["bypassed"] == 20


def test_played_audio_is_cancelled_then_the_engine_rests_after_the_hold() -> None:
    """While the reference plays the engine gets mic + aligned reference; HOLD_S after the last reference
    audio it is skipped again (the echo tail has died away)."""
    engine = Recorder()
    ref = EchoReference(FMT, lead_s=0.0)
    path = EchoPath(engine, frame_ms=FRAME_MS, reference=ref, hold_s=0.2)
    t0 = 50.0
    played = [noise(N, 100 + k) for k in range(10)]
    for k, chunk in enumerate(played):
        path.on_written(chunk, t0 + k * FRAME_S)
    outs = [path.process(CaptureFrame(played[k], t0 + (k + 1) * FRAME_S, k)) for k in range(10)]
    assert all(o.pcm == bytes(NBYTES) for o in outs[1:]), "the aligned reference removed the echo"
    assert len(engine.calls) == 10
    later = [path.process(CaptureFrame(noise(N, k), t0 + (11 + k) * FRAME_S, 11 + k)) for k in range(30)]
    assert path.stats["bypassed"] > 0
    assert later[-1].pcm == noise(N, 29), "after the hold the mic passes unchanged"


def test_drop_after_a_barge_in_silences_the_reference() -> None:
    """on_dropped (the writer's barge-in drop) makes what was queued after it never count as played."""
    ref = EchoReference(FMT, lead_s=0.0)
    path = EchoPath(Recorder(), frame_ms=FRAME_MS, reference=ref)
    t0 = 10.0
    for k in range(50):
        path.on_written(noise(N, k), t0 + k * FRAME_S)
    path.on_dropped(t0 + 10 * FRAME_S)
    assert ref.frame_for(t0 + 30 * FRAME_S, 0.0, NBYTES) == bytes(NBYTES)


def test_an_engine_failure_falls_back_to_the_raw_mic_and_disarms() -> None:
    """A failing engine is closed once and the mic passes uncancelled; `active` turns False (auto then mutes)."""
    engine = Recorder(fail=True)
    path = EchoPath(engine, frame_ms=FRAME_MS, reference=EchoReference(FMT, lead_s=0.0))
    for k in range(5):
        path.on_written(noise(N, k), 5.0 + k * FRAME_S)
    frame = CaptureFrame(noise(N, 9), 5.0 + 2 * FRAME_S, 0)
    assert path.process(frame) == frame
    assert not path.active and not path.converged and engine.closed == 1
    assert path.process(frame) == frame
    path.close()
    assert engine.closed == 1  # idempotent


def test_converged_needs_reference_time_and_echo_reduction() -> None:
    """With an audible residual (not the quiet rule), `converged` turns True only after CONVERGE_S of
    reference audio with the echo reduced enough."""
    path = EchoPath(Recorder(), frame_ms=FRAME_MS, reference=EchoReference(FMT, lead_s=0.0), converge_s=0.5)
    t0 = 20.0
    frames = int(1.0 / FRAME_S)
    seen = []
    for k in range(frames):
        chunk = noise(N, 500 + k, level=12000)
        residual = np.frombuffer(noise(N, 900 + k, level=300), dtype="<i2")  # -45 dBFS: not quiet
        mic = (np.frombuffer(chunk, dtype="<i2") + residual).astype("<i2").tobytes()
        path.on_written(chunk, t0 + k * FRAME_S)
        path.process(CaptureFrame(mic, t0 + (k + 1) * FRAME_S, k))
        seen.append(path.converged)
    assert not seen[0] and seen[-1]
    assert seen.index(True) * FRAME_S >= 0.5 - FRAME_S
    erle = path.erle_db
    assert erle is not None and erle > 30


def _user_over_agent(engine: Recorder, seconds: float, *, user: bool = True) -> tuple[EchoPath, list[bool]]:
    """Loud reference for `seconds`, its echo at the mic unchanged, and (`user`) a loud user (independent
    noise) on three of every five frames (syllables and the gaps between them); `converged` after each frame."""
    path = EchoPath(engine, frame_ms=FRAME_MS, reference=EchoReference(FMT, lead_s=0.0), converge_s=0.5)
    seen = []
    for k in range(int(seconds / FRAME_S)):
        ref = noise(N, 500 + k, level=12000)
        talk = np.frombuffer(noise(N, 7000 + k, level=9000), dtype="<i2").astype(np.int32) * (user and k % 5 < 3)
        mic = np.clip(np.frombuffer(ref, dtype="<i2") + talk, -32768, 32767).astype("<i2").tobytes()
        path.on_written(ref, 20.0 + k * FRAME_S)
        path.process(CaptureFrame(mic, 20.0 + (k + 1) * FRAME_S, k))
        seen.append(path.converged)
    return path, seen


def test_a_user_talking_from_the_agents_first_word_does_not_hold_off_convergence() -> None:
    """A canceller that removes the echo while the user talks over the agent from the start: the smoothed
    echo reduction stays far below CONVERGED_ERLE_DB (the user is in the output), but the frames between the
    user's syllables show the echo removed, so the path converges once QUARTILE_FRAMES of them are seen."""
    path, seen = _user_over_agent(Recorder(), 3.0)
    window_s = aec_path.QUARTILE_FRAMES * FRAME_S
    assert True in seen, f"never converged (smoothed echo reduction {path.erle_db} dB)"
    assert window_s - FRAME_S <= seen.index(True) * FRAME_S <= window_s + FRAME_S
    erle = path.erle_db
    assert erle is not None and erle < aec_path.CONVERGED_ERLE_DB  # the smoothed rule alone would still wait


class Leaking(Recorder):
    """A canceller that removes only 70 % of the echo amplitude (about 10 dB of echo reduction)."""

    def process(self, mic: bytes, ref: bytes) -> bytes:
        m = np.frombuffer(mic, dtype="<i2").astype(np.float64)
        r = np.frombuffer(ref, dtype="<i2").astype(np.float64)
        return bytes(np.clip(m - 0.7 * r, -32768, 32767).astype("<i2").tobytes())


@pytest.mark.parametrize("user", [True, False], ids=["user-talking", "echo-only"])
def test_a_leaking_canceller_never_converges_whether_or_not_the_user_talks(user: bool) -> None:
    """About 10 dB of echo reduction: neither the smoothed figure nor the upper quartile of the frames reaches
    CONVERGED_ERLE_DB, with or without a loud user over it (the user lowers the frames' figures)."""
    _, seen = _user_over_agent(Leaking(), 4.0, user=user)
    assert not any(seen)


class PassThrough(Recorder):
    """A canceller that has learned nothing: its output is the microphone."""

    def process(self, mic: bytes, ref: bytes) -> bytes:
        return mic


def _quiet_rule(mic_of: Any, seconds: float) -> list[bool]:
    """Loud reference for `seconds`; the microphone frame k is mic_of(k); `converged` after each frame."""
    path = EchoPath(PassThrough(), frame_ms=FRAME_MS, reference=EchoReference(FMT, lead_s=0.0), converge_s=60.0)
    t0 = 20.0
    seen = []
    for k in range(int(seconds / FRAME_S)):
        path.on_written(noise(N, 500 + k, level=12000), t0 + k * FRAME_S)
        path.process(CaptureFrame(mic_of(k), t0 + (k + 1) * FRAME_S, k))
        seen.append(path.converged)
    return seen


def test_a_quiet_residual_for_quiet_run_s_of_agent_audio_converges_early() -> None:
    """No echo path and nobody talking: the residual is quiet, so the path converges after ECHO_LEAD_S +
    QUIET_RUN_S of agent audio (not CONVERGE_S)."""
    seen = _quiet_rule(lambda k: noise(N, 700 + k, level=20), 3.0)  # -70 dBFS room noise
    first = seen.index(True)
    expected = aec_path.ECHO_LEAD_S + aec_path.QUIET_RUN_S
    assert expected - 2 * FRAME_S <= (first + 1) * FRAME_S <= expected + 2 * FRAME_S


@pytest.mark.parametrize("lag_s", [0.25, 0.7])
def test_an_echo_arriving_late_breaks_the_quiet_run(lag_s: float) -> None:
    """An uncancelled echo up to 0.7 s behind the reference (less than ECHO_LEAD_S): the quiet frames before it
    arrives never add up to a quiet run, nor do 200 ms dips of the echo (shorter than QUIET_RUN_S)."""
    lag = int(lag_s / FRAME_S)

    def mic(k: int) -> bytes:
        dip = 50 <= k % 100 < 60  # the reference keeps playing
        if k < lag or dip:
            return noise(N, 700 + k, level=20)
        return noise(N, 300 + k, level=4000)

    assert not any(_quiet_rule(mic, 4.0))


def test_no_echo_path_and_a_user_who_pauses_converges_in_the_pause() -> None:
    """No echo path, the user talking over the agent with a 0.6 s pause at 1.0 s: converged in the pause."""
    pause = range(int(1.0 / FRAME_S), int(1.6 / FRAME_S))
    seen = _quiet_rule(lambda k: noise(N, 700 + k, level=20 if k in pause else 5000), 3.0)
    assert not any(seen[: pause[0]])
    assert seen.index(True) < pause[-1]


def test_mic_envelope_is_continuous_across_frames_not_on_block_boundaries() -> None:
    """Regression: capture frames that do not start on a 2.5 ms block boundary still feed the delay search
    (a split block at every frame edge used to leave a gap, so no estimate was ever accepted)."""
    from vatel_edge.devkit import aec_lab

    signal = aec_lab.speech_like(6.0, FMT.rate, seed=3)
    scene = aec_lab.make_scene(signal, FMT.rate, room=aec_lab.Room(delay_s=0.08))
    ref = EchoReference(FMT)
    t0 = 1000.0 + 7 / FMT.rate  # odd offset: frames straddle envelope blocks
    played = scene.ref.astype("<i2").tobytes()
    mic = scene.mic.astype("<i2").tobytes()
    for k in range(len(played) // NBYTES):
        ref.push(played[k * NBYTES : (k + 1) * NBYTES], t0 + k * FRAME_S, 0.0)
        ref.frame_for(t0 + (k + 1) * FRAME_S + 0.0031, 0.0, NBYTES, mic=mic[k * NBYTES : (k + 1) * NBYTES])
    assert ref.stats["estimates_accepted"] > 0
    assert ref.estimated_delay_s is not None and abs(ref.estimated_delay_s - 0.08) < 0.03


def test_mic_envelope_kept_per_update_is_the_envelope_of_the_samples_at_their_positions() -> None:
    """The mic envelope is computed once per update from the frames kept since (not frame by frame): with
    frames that straddle the 2.5 ms blocks and a 100 ms gap, every whole block holds the log energy of exactly
    the mic samples at its position, and the blocks of the gap none."""
    ref = EchoReference(FMT)
    t0 = 50.0
    ref.push(bytes(NBYTES), t0, 0.0)  # starts the timeline at t0 (index 0)
    rng = np.random.default_rng(9)
    mic = (rng.normal(0, 2000, FMT.rate * 3) * np.repeat(rng.random(30) * 2, FMT.rate // 10)).astype("<i2")
    starts = [7 + k * N for k in range(40)] + [7 + k * N for k in range(45, 120)]
    seen = np.zeros(mic.size, dtype=bool)
    for a in starts:
        ref.frame_for(t0 + (a + N) / FMT.rate, 0.0, NBYTES, mic=mic[a : a + N].tobytes())
        seen[a : a + N] = True
    ref._absorb()  # the frames kept since the last update
    b = ref._block
    counted = {"whole": 0, "gap": 0}
    for k in range((starts[-1] + N) // b):
        env = ref._mic_env[k % ref._mic_cap]
        block = mic[k * b : (k + 1) * b].astype(np.float64)
        if seen[k * b : (k + 1) * b].all():
            assert env == pytest.approx(float(np.log10(np.mean(block**2) + aec._FLOOR_ENERGY)), rel=1e-12), k
            counted["whole"] += 1
        elif not seen[k * b : (k + 1) * b].any() and k * b > starts[0]:
            assert np.isnan(env), k
            counted["gap"] += 1
    assert counted["whole"] > 900 and counted["gap"] >= 39, counted


def test_check_duplex_refuses_local_barge_in_without_a_canceller() -> None:
    """session.barge_in local/both with echo_cancel off is a ConfigError naming session.barge_in."""
    for mode in ("local", "both"):
        with pytest.raises(ConfigError, match=r"session\.barge_in"):
            check_duplex(cfg(audio={"echo_cancel": "off"}, session={"barge_in": mode}))
    assert check_duplex(cfg(audio={"echo_cancel": "off"}, session={"barge_in": "server"})) is None


def test_check_duplex_refuses_local_barge_in_when_auto_finds_no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """echo_cancel = auto with nothing installed: server barge-in is fine, local is refused."""
    monkeypatch.setattr(aec, "available_engines", lambda: [])
    assert check_duplex(cfg(audio={"echo_cancel": "auto"})) is None
    with pytest.raises(ConfigError, match=r"session\.barge_in = 'local'.*found no installed engine"):
        check_duplex(cfg(audio={"echo_cancel": "auto"}, session={"barge_in": "local"}))


def test_check_duplex_names_a_missing_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A named engine that is not installed is a ConfigError naming audio.echo_cancel (raised at start)."""
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)
    with pytest.raises(ConfigError, match=r"audio\.echo_cancel = 'webrtc'"):
        check_duplex(cfg(audio={"echo_cancel": "webrtc"}))


def test_self_aligning_engines_keep_their_reference_in_place() -> None:
    """webrtc finds the delay itself: an in-range estimate is recorded but does not move the reference."""
    assert aec_path.SELF_ALIGNING_S["webrtc"] > 0.1
    from vatel_edge.devkit import aec_lab

    signal = aec_lab.speech_like(6.0, FMT.rate, seed=4)
    scene = aec_lab.make_scene(signal, FMT.rate, room=aec_lab.Room(delay_s=0.06))
    ref = EchoReference(FMT, self_aligning_s=0.25)
    played = scene.ref.astype("<i2").tobytes()
    mic = scene.mic.astype("<i2").tobytes()
    for k in range(len(played) // NBYTES):
        ref.push(played[k * NBYTES : (k + 1) * NBYTES], 7.0 + k * FRAME_S, 0.0)
        ref.frame_for(7.0 + (k + 1) * FRAME_S, 0.0, NBYTES, mic=mic[k * NBYTES : (k + 1) * NBYTES])
    assert ref.estimated_delay_s is not None and abs(ref.estimated_delay_s - 0.06) < 0.03
    assert ref.delay_s == 0.0 and ref.stats["delay_changes"] == 0


def test_echo_likeness_tells_a_leaking_echo_from_the_user() -> None:
    """Through a canceller that removed nothing, the agent's voice 60 ms late and 10 dB down resembles the
    reference (>= 0.5); recorded human speech with no echo in it does not (< ECHO_LIKE_CORRELATION)."""
    from vatel_edge.devkit.fixtures import shipped_speech
    from vatel_edge.devkit.speech import human_speech

    agent = np.frombuffer(shipped_speech("agent_answer.wav"), dtype="<i2")[: FMT.samples(3000)]
    user = np.frombuffer(human_speech("dashwood"), dtype="<i2")[FMT.samples(500) : FMT.samples(3500)]
    lag = FMT.samples(60)
    echo = np.concatenate([np.zeros(lag), agent[:-lag] * 10 ** (-10 / 20)]).astype("<i2")

    def likeness(mic: np.ndarray) -> float:
        path = EchoPath(PassThrough(), frame_ms=FRAME_MS, reference=EchoReference(FMT, lead_s=0.0))
        for k in range(agent.size // N):
            path.on_written(agent[k * N : (k + 1) * N].tobytes(), 20.0 + k * FRAME_S)
            path.process(CaptureFrame(mic[k * N : (k + 1) * N].tobytes(), 20.0 + (k + 1) * FRAME_S, k))
        return path.echo_likeness()

    assert likeness(echo) >= 0.5
    assert likeness(user) < aec_path.ECHO_LIKE_CORRELATION


def test_the_first_frames_of_a_turn_after_a_bypass_are_judged_by_echo_likeness() -> None:
    """After seconds of bypass (nothing played), a turn whose first 150 ms of echo leak through the engine (as
    AEC3 resuming was measured to do in the real-time room) already resembles the reference 120 ms into the
    turn, when a 90 ms barge-in debounce could fire: the likeness window ran on through the bypass. (It used to
    be emptied there, so echo_likeness was 0.0 for the first 0.5 s and the leak cut the turn.)"""
    from vatel_edge.devkit.fixtures import shipped_speech

    agent = np.frombuffer(shipped_speech("agent_answer.wav"), dtype="<i2")[: FMT.samples(2000)]
    lag = FMT.samples(30)
    echo = np.concatenate([np.zeros(lag), agent[:-lag] * 10 ** (-6 / 20)]).astype("<i2")
    rng = np.random.default_rng(5)

    class LeakingAtStart(PassThrough):
        """Passes the mic through for its first 8 frames after a pause, then removes everything."""

        def __init__(self) -> None:
            super().__init__()
            self.ran = 0

        def process(self, mic: bytes, ref: bytes) -> bytes:
            self.ran += 1
            return mic if self.ran <= 8 else bytes(len(mic))

    path = EchoPath(LeakingAtStart(), frame_ms=FRAME_MS, reference=EchoReference(FMT, lead_s=0.0))
    t = 30.0
    for k in range(100):  # 2 s of room noise, nothing playing: bypassed
        noise = np.clip(rng.normal(0, 20, N), -32768, 32767).astype("<i2").tobytes()
        path.process(CaptureFrame(noise, t, k))
        t += FRAME_S
    assert path.stats["bypassed"] == 100
    for k in range(6):  # 120 ms of the turn
        path.on_written(agent[k * N : (k + 1) * N].tobytes(), t - FRAME_S)
        path.process(CaptureFrame(echo[k * N : (k + 1) * N].tobytes(), t, 100 + k))
        t += FRAME_S
    assert path.stats["cancelled"] >= 5
    assert path.echo_likeness() >= aec_path.ECHO_LIKE_CORRELATION


class Collapsing(Recorder):
    """Cancels perfectly until `after` frames, then passes the microphone through (a diverged filter)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.n, self.resets = after, 0, 0

    def process(self, mic: bytes, ref: bytes) -> bytes:
        self.n += 1
        return super().process(mic, ref) if self.n <= self.after else mic

    def reset(self) -> None:
        self.resets += 1


def _collapse_run(engine: Collapsing, mic_of: Any, seconds: float) -> tuple[EchoPath, list[bool]]:
    path = EchoPath(engine, frame_ms=FRAME_MS, reference=EchoReference(FMT, lead_s=0.0), converge_s=1.0)
    seen = []
    for k in range(int(seconds / FRAME_S)):
        ref = noise(N, 500 + k, level=12000)
        path.on_written(ref, 20.0 + k * FRAME_S)
        path.process(CaptureFrame(mic_of(k, ref), 20.0 + (k + 1) * FRAME_S, k))
        seen.append(path.converged)
    return path, seen


def test_a_collapsed_canceller_is_reset_and_the_path_mutes_again() -> None:
    """Converged, then the engine lets the echo through (0 dB): after COLLAPSED_S of it the engine is reset once
    and `converged` drops (so 'auto' mutes again), and the stream keeps flowing."""
    engine = Collapsing(after=int(2.0 / FRAME_S))
    path, seen = _collapse_run(engine, lambda k, ref: ref, 6.0)
    collapse = int(2.0 / FRAME_S)
    assert seen[collapse - 1], "converged before the collapse"
    dropped = seen.index(False, collapse)
    assert (dropped - collapse) * FRAME_S <= aec_path.COLLAPSED_S + 1.0  # the ~1 s smoothing, then COLLAPSED_S
    assert engine.resets == 1 and path.stats["recoveries"] == 1


def test_the_user_talking_over_the_agent_is_not_a_collapse() -> None:
    """Converged, then the microphone carries the user's voice (independent of the reference) and the engine
    passes it: the echo reduction figure falls as in a collapse, but the output does not resemble the
    reference, so nothing is reset."""
    engine = Collapsing(after=int(2.0 / FRAME_S))

    def mic(k: int, ref: bytes) -> bytes:
        return ref if k < int(2.0 / FRAME_S) else noise(N, 9000 + k, level=8000)

    path, seen = _collapse_run(engine, mic, 6.0)
    assert all(seen[int(1.5 / FRAME_S) :])
    assert engine.resets == 0 and path.stats["recoveries"] == 0


@pytest.mark.skipif(not aec.available_engines(), reason="no echo engine installed")
def test_the_keeper_reuses_the_path_for_the_same_devices_and_opens_a_new_one_when_they_change() -> None:
    """EchoKeeper (the daemon, across reloads): the same path while the settings it learned with stay (the
    volume is not one of them), resumed: the bypass's held samples of the old stream are gone; a new path for
    another device, and after the engine failed (closed); close() closes the kept one."""
    def audio(**keys: Any) -> Any:
        agent = {"agent_id": "00000000-0000-4000-8000-000000000000"}
        return config_from_dict({"vatel": agent, "audio": {"echo_cancel": "auto", **keys}}).audio

    keeper = aec_path.EchoKeeper()
    first = keeper.open(audio())
    assert first is not None and first.latency > 0
    first.process(CaptureFrame(np.full(FMT.samples(FRAME_MS), 1000, "<i2").tobytes(), 1.0, 0))  # bypassed, held
    assert keeper.open(audio(volume=0.5, mic_during_playback="stream")) is first
    out = first.process(CaptureFrame(bytes(FMT.nbytes(FRAME_MS)), 2.0, 0))
    assert out.pcm == bytes(FMT.nbytes(FRAME_MS)), "the old stream's held samples came out after the resume"
    second = keeper.open(audio(capture_device="hw:1"))
    assert second is not None and second is not first and not first.active
    second.close()  # an engine failure closes the path
    third = keeper.open(audio(capture_device="hw:1"))
    assert third is not None and third is not second and third.active
    keeper.close()
    assert not third.active
    keeper.close()  # idempotent
