"""EchoReference: the played-audio timeline, alignment with capture frames, and the delay estimate."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pytest

from tests.support.aec import FMT, FRAME_MS, RATE
from vatel_edge.audio.aec import EchoReference, estimate_lag
from vatel_edge.devkit import aec_lab

N = FMT.samples(FRAME_MS)
NBYTES = FMT.nbytes(FRAME_MS)
FRAME_S = FRAME_MS / 1000


def pcm(x: npt.NDArray[np.int16]) -> bytes:
    return x.astype("<i2").tobytes()


def samples(b: bytes) -> npt.NDArray[np.int16]:
    return np.frombuffer(b, dtype="<i2").astype(np.int16)


def noise(n: int, seed: int = 0) -> npt.NDArray[np.int16]:
    return np.random.default_rng(seed).integers(-8000, 8000, n).astype(np.int16)


def play(ref: EchoReference, signal: npt.NDArray[np.int16], t0: float, delay_s: float, jitter_s: float = 0.0) -> None:
    """Push `signal` in frames as a playback writer would: frame k starts sounding at t0 + k*frame."""
    rng = np.random.default_rng(1)
    for k in range(signal.size // N):
        jitter = float(rng.uniform(0, jitter_s))
        ref.push(pcm(signal[k * N : (k + 1) * N]), t0 + k * FRAME_S - delay_s + jitter, delay_s)


def test_silence_before_anything_played() -> None:
    """Before any push, and for times nothing was played, the reference is silence of the asked length."""
    ref = EchoReference(FMT, lead_s=0.0)
    assert ref.frame_for(100.0, 0.01, NBYTES) == bytes(NBYTES)
    play(ref, noise(10 * N), t0=100.0, delay_s=0.05)
    assert ref.frame_for(50.0, 0.0, NBYTES) == bytes(NBYTES)  # long before
    assert ref.frame_for(100.0 + 20 * FRAME_S, 0.0, NBYTES) == bytes(NBYTES)  # after the end


def test_frame_lines_up_with_what_sounded_then() -> None:
    """A capture frame whose last sample hit the mic at t gets the samples that sounded during that frame,
    shifted `lead_s` ahead, with the device delays on both sides taken into account."""
    lead_s = 0.01
    ref = EchoReference(FMT, lead_s=lead_s)
    signal = noise(50 * N)
    t0 = 200.0
    play(ref, signal, t0=t0, delay_s=0.08)
    lead = FMT.samples(lead_s * 1000)
    for k in (5, 6, 17, 30):
        capture_delay = 0.015
        frame_end_t = t0 + (k + 1) * FRAME_S  # the mic frame covers what sounded in frame k
        got = samples(ref.frame_for(frame_end_t + capture_delay, capture_delay, NBYTES))
        start = k * N + lead  # the reference runs ahead of its echo
        np.testing.assert_array_equal(got, signal[start : start + N])


def test_jittery_timestamps_still_give_a_contiguous_reference() -> None:
    """Scheduling jitter of a few ms on both sides does not cut or repeat samples: consecutive reference
    frames concatenate to one contiguous slice of what was played."""
    ref = EchoReference(FMT, lead_s=0.0)
    signal = noise(100 * N, seed=2)
    t0 = 10.0
    play(ref, signal, t0=t0, delay_s=0.06, jitter_s=0.004)
    rng = np.random.default_rng(5)
    got = np.concatenate(
        [
            samples(ref.frame_for(t0 + (k + 1) * FRAME_S + float(rng.uniform(0, 0.004)), 0.0, NBYTES))
            for k in range(10, 90)
        ]
    )
    # find where the run starts in the signal, then the whole run must match contiguously
    start = int(np.argmax([np.array_equal(got[:N], signal[s : s + N]) for s in range(9 * N, 11 * N)])) + 9 * N
    np.testing.assert_array_equal(got, signal[start : start + got.size])


def test_pause_between_turns_is_silence_and_next_turn_lands_in_place() -> None:
    """After a pause longer than the jitter tolerance, the gap reads as silence and the next turn is placed
    by its own timestamps."""
    ref = EchoReference(FMT, lead_s=0.0)
    first, second = noise(20 * N, 1), noise(20 * N, 2)
    play(ref, first, t0=0.0, delay_s=0.05)
    play(ref, second, t0=2.0, delay_s=0.05)
    assert ref.frame_for(1.0, 0.0, NBYTES) == bytes(NBYTES)
    np.testing.assert_array_equal(samples(ref.frame_for(2.0 + 4 * FRAME_S, 0.0, NBYTES)), second[3 * N : 4 * N])
    np.testing.assert_array_equal(samples(ref.frame_for(4 * FRAME_S, 0.0, NBYTES)), first[3 * N : 4 * N])


def test_drop_after_silences_what_never_sounded() -> None:
    """Barge-in drops the device buffer: audio scheduled after the drop time reads as silence."""
    ref = EchoReference(FMT, lead_s=0.0)
    signal = noise(30 * N)
    play(ref, signal, t0=0.0, delay_s=0.1)
    ref.drop_after(10 * FRAME_S)
    np.testing.assert_array_equal(samples(ref.frame_for(10 * FRAME_S, 0.0, NBYTES)), signal[9 * N : 10 * N])
    assert ref.frame_for(15 * FRAME_S, 0.0, NBYTES) == bytes(NBYTES)


def test_history_is_bounded_and_old_audio_expires() -> None:
    """Pushing a minute of audio keeps the ring at its fixed size; audio older than the history is silence."""
    ref = EchoReference(FMT, window_s=2.0, lead_s=0.0)
    size = ref._ring.nbytes
    minute = noise(FMT.samples(60_000), seed=3)
    play(ref, minute, t0=0.0, delay_s=0.02)
    assert ref._ring.nbytes == size
    assert ref.frame_for(1.0, 0.0, NBYTES) == bytes(NBYTES)
    assert ref.frame_for(59.9, 0.0, NBYTES) != bytes(NBYTES)


def run_with_hidden_delay(
    ref: EchoReference, agent: npt.NDArray[np.float64], hidden_s: float, *, echo: bool = True, seconds: float = 8.0
) -> None:
    """Play `agent`; the mic hears it through a room `hidden_s` later than the reported latencies say."""
    room = aec_lab.Room(delay_s=hidden_s, gain=0.3)
    scene = aec_lab.make_scene(agent[: FMT.samples(seconds * 1000)], RATE, room=room, noise_dbfs=-65)
    mic = scene.mic if echo else np.clip(scene.mic - np.round(scene.echo), -32768, 32767).astype(np.int16)
    frames = scene.ref.size // N
    t0, play_delay, cap_delay = 1000.0, 0.06, 0.012
    for k in range(frames):
        ref.push(pcm(scene.ref[k * N : (k + 1) * N]), t0 + k * FRAME_S - play_delay, play_delay)
        t_cap = t0 + (k + 1) * FRAME_S + cap_delay
        ref.frame_for(t_cap, cap_delay, NBYTES, mic=pcm(mic[k * N : (k + 1) * N]))


@pytest.mark.parametrize("hidden_s", [0.0, 0.035, 0.087, 0.2])
def test_hidden_delay_is_recovered_within_one_frame(agent_speech: npt.NDArray[np.float64], hidden_s: float) -> None:
    """Echo arriving `hidden_s` later than ALSA's latencies predict is found within one frame (20 ms)."""
    ref = EchoReference(FMT)
    run_with_hidden_delay(ref, agent_speech, hidden_s)
    assert ref.stats["estimates_accepted"] >= 3
    assert abs(ref.delay_s - hidden_s) < FRAME_S, ref.delay_s


def test_delay_is_clamped_to_the_configured_range(agent_speech: npt.NDArray[np.float64]) -> None:
    """A hidden delay beyond max_delay_s never pushes the correction past it."""
    ref = EchoReference(FMT, max_delay_s=0.1)
    run_with_hidden_delay(ref, agent_speech, 0.25)
    assert 0.0 <= ref.delay_s <= 0.1


def test_no_echo_keeps_the_initial_delay(agent_speech: npt.NDArray[np.float64]) -> None:
    """When the mic does not hear the speaker (headphones), the estimates are rejected and nothing moves."""
    ref = EchoReference(FMT, initial_delay_s=0.04)
    run_with_hidden_delay(ref, agent_speech, 0.1, echo=False)
    assert ref.stats["estimates_rejected"] >= 3
    assert ref.stats["estimates_accepted"] == 0
    assert ref.delay_s == 0.04


def test_estimate_lag_finds_a_shift_between_envelopes() -> None:
    """The pure lag search recovers a known integer shift of a random envelope with correlation ~1."""
    rng = np.random.default_rng(0)
    env = rng.standard_normal(400)
    min_lag, max_lag, true = -10, 40, 23
    w = 200
    mic = env[100 : 100 + w]
    # ref block j pairs with mic block k at lag L when j = k + max_lag - L
    ref_env = env[100 + true - max_lag : 100 + true - max_lag + w + max_lag - min_lag]
    result = estimate_lag(mic, ref_env, min_lag, max_lag)
    assert result is not None
    assert abs(result[0] - true) < 0.5 and result[1] > 0.99


def test_push_and_read_from_two_threads() -> None:
    """A playback thread pushing while the capture side reads never corrupts sizes or raises."""
    ref = EchoReference(FMT)
    errors: list[BaseException] = []
    signal = noise(200 * N)

    def writer() -> None:
        try:
            play(ref, signal, t0=0.0, delay_s=0.05)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    for k in range(200):
        assert len(ref.frame_for(k * FRAME_S, 0.0, NBYTES, mic=pcm(signal[k * N : (k + 1) * N]))) == NBYTES
    thread.join(timeout=30)
    assert not thread.is_alive() and not errors
    assert ref.stats["pushed_samples"] == signal.size
