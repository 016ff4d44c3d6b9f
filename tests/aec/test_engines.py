"""Each installed echo canceller on a synthetic room: echo removed, wake VAD quiet, the user's voice kept."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tests.support.aec import FMT, FRAME_MS, RATE, VAD_FRAME_MS, engine_params, vad_flags
from vatel_edge.audio.aec import EchoReference, make_echo_canceller
from vatel_edge.devkit import aec_lab

# Floors well under what was measured here (docs/ECHO.md: webrtc ~41 dB, speex ~29 dB on this room), so a
# loaded machine or a library update does not flake, while a broken alignment or engine (~0 dB) fails.
MIN_ERLE_DB = {"webrtc": 30.0, "speex": 18.0}
GATE_DBFS = -45.0  # wake.min_level_dbfs default: the daemon's energy gate in front of webrtcvad
VAD_N = FMT.samples(VAD_FRAME_MS)
WAKE_WINDOW, WAKE_MIN = 480 // VAD_FRAME_MS, 240 // VAD_FRAME_MS  # wake.window_ms / wake.min_speech_ms defaults


def voiced(x: npt.NDArray[np.int16]) -> npt.NDArray[np.bool_]:
    """The daemon's per-frame speech decision: webrtcvad (aggressiveness 2) behind the -45 dBFS energy gate."""
    flags = vad_flags(x, aggressiveness=2)
    loud = 10 * np.log10(aec_lab.frame_power(x, VAD_N) / 32768.0**2 + 1e-20) >= GATE_DBFS
    result: npt.NDArray[np.bool_] = flags & loud[: flags.size]
    return result


def would_wake(flags: npt.NDArray[np.bool_]) -> bool:
    """True if some 480 ms window holds 240 ms of voiced frames (the default VAD wake rule)."""
    windows = np.convolve(flags.astype(int), np.ones(WAKE_WINDOW, dtype=int), mode="valid")
    return bool(windows.size and windows.max() >= WAKE_MIN)


@pytest.fixture(scope="module")
def echo_scene(agent_speech: npt.NDArray[np.float64]) -> aec_lab.Scene:
    return aec_lab.make_scene(agent_speech, RATE, room=aec_lab.Room(delay_s=0.05, gain=0.3))


@pytest.fixture(scope="module")
def double_talk_scene(agent_speech: npt.NDArray[np.float64], user_speech: npt.NDArray[np.float64]) -> aec_lab.Scene:
    return aec_lab.make_scene(agent_speech, RATE, user=user_speech, user_at_s=5.0)


@pytest.mark.parametrize("kind", engine_params())
def test_echo_is_reduced(kind: str, echo_scene: aec_lab.Scene) -> None:
    """After 2 s of convergence the engine removes at least its floor of echo (ERLE over echo-only frames)."""
    engine = make_echo_canceller(kind, FRAME_MS)
    assert engine is not None
    out, _ = aec_lab.run_engine(engine, echo_scene, FRAME_MS)
    assert aec_lab.erle_db(echo_scene, out, FMT.samples(FRAME_MS)) >= MIN_ERLE_DB[kind]


@pytest.mark.parametrize("kind", engine_params())
def test_wake_vad_hears_the_agent_without_aec_but_not_with_it(kind: str, echo_scene: aec_lab.Scene) -> None:
    """The problem and its fix: the raw mic wakes the VAD on the agent's own voice; the cleaned mic does not."""
    engine = make_echo_canceller(kind, FRAME_MS)
    assert engine is not None
    out, _ = aec_lab.run_engine(engine, echo_scene, FRAME_MS)
    echo_only = aec_lab.echo_only_frames(echo_scene, VAD_N)
    raw = voiced(echo_scene.mic[: out.size])
    clean = voiced(out)
    k = min(raw.size, clean.size, echo_only.size)
    assert raw[:k][echo_only[:k]].mean() > 0.9
    assert would_wake(raw[:k] & echo_only[:k])
    assert clean[:k][echo_only[:k]].mean() < 0.1
    assert not would_wake(clean[:k] & echo_only[:k])


@pytest.mark.parametrize("kind", engine_params())
def test_user_survives_double_talk(kind: str, echo_scene: aec_lab.Scene, double_talk_scene: aec_lab.Scene) -> None:
    """A user talking over the agent loses under 6 dB and is still voiced in most frames where alone it is."""
    n = VAD_N
    out_dt, _ = aec_lab.run_engine(make_echo_canceller(kind, FRAME_MS), double_talk_scene, FRAME_MS)  # type: ignore[arg-type]
    out_echo, _ = aec_lab.run_engine(make_echo_canceller(kind, FRAME_MS), echo_scene, FRAME_MS)  # type: ignore[arg-type]
    user = double_talk_scene.user[: out_dt.size]
    user_p = aec_lab.frame_power(user, n)
    talking = user_p > user_p.max() * 1e-2
    # the user's share of the output: output power minus what the same engine leaves of the echo alone
    user_out = aec_lab.frame_power(out_dt, n)[talking].sum() - aec_lab.frame_power(out_echo, n)[talking].sum()
    assert user_out > 0
    drop_db = 10 * np.log10(user_p[talking].sum() / user_out)
    assert drop_db < 6.0
    alone = vad_flags(np.round(user).astype(np.int16))
    kept = vad_flags(out_dt)
    frames = talking[: alone.size] & alone
    assert frames.sum() >= 20
    assert kept[frames].mean() >= 0.5


@pytest.mark.parametrize("kind", engine_params())
def test_reset_relearns_the_echo_path(kind: str, echo_scene: aec_lab.Scene) -> None:
    """reset() forgets the path but the engine converges again on the same room."""
    engine = make_echo_canceller(kind, FRAME_MS)
    assert engine is not None
    aec_lab.run_engine(engine, echo_scene, FRAME_MS)
    engine.reset()
    out, _ = aec_lab.run_engine(engine, echo_scene, FRAME_MS)
    assert aec_lab.erle_db(echo_scene, out, FMT.samples(FRAME_MS)) >= MIN_ERLE_DB[kind]


@pytest.mark.parametrize("kind", engine_params())
def test_reference_alignment_with_a_hidden_delay(kind: str, agent_speech: npt.NDArray[np.float64]) -> None:
    """End to end: playback pushes with its reported latency, the echo comes 150 ms later than reported (an
    unreported buffer), and capture pulls aligned reference frames: the delay is found and the echo removed."""
    hidden_s = 0.15
    scene = aec_lab.make_scene(agent_speech, RATE, room=aec_lab.Room(delay_s=hidden_s, gain=0.3))
    ref = EchoReference(FMT)
    engine = make_echo_canceller(kind, FRAME_MS)
    assert engine is not None
    n, nbytes = FMT.samples(FRAME_MS), FMT.nbytes(FRAME_MS)
    frame_s = FRAME_MS / 1000
    t0, play_delay, cap_delay = 50.0, 0.08, 0.01
    out = bytearray()
    for k in range(scene.ref.size // n):
        ref.push(scene.ref[k * n : (k + 1) * n].astype("<i2").tobytes(), t0 + k * frame_s - play_delay, play_delay)
        mic = scene.mic[k * n : (k + 1) * n].astype("<i2").tobytes()
        aligned = ref.frame_for(t0 + (k + 1) * frame_s + cap_delay, cap_delay, nbytes, mic=mic)
        out += engine.process(mic, aligned)
    assert abs(ref.delay_s - hidden_s) < frame_s
    result = np.frombuffer(bytes(out), dtype="<i2").astype(np.int16)
    # the first estimate needs ~update_s + window of speech; judge after 4 s
    assert aec_lab.erle_db(scene, result, n, skip_s=4.0) >= MIN_ERLE_DB[kind]
