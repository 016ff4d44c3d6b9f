"""Capture through real alsa-lib: file devices (byte-exact), a 48 kHz stereo-only device, PulseAudio."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.audio import counting_pcm, level_db, tone
from tests.support.pulse import PulseServer
from vatel_edge.audio.capture import Capture, CaptureFrame, FrameClock
from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat
from vatel_edge.audio.resample import Resampler
from vatel_edge.config import AudioConfig

pytestmark = pytest.mark.timeout(60)


async def read_n(capture: Capture, n: int, timeout: float = 20.0) -> list[CaptureFrame]:
    return [await asyncio.wait_for(capture.read(), timeout) for _ in range(n)]


async def test_frames_are_byte_exact_and_sized_from_frame_ms(tmp_path: Path) -> None:
    """Each frame is frame_ms of 24 kHz mono and equals the input file at its seq's offset."""
    src = counting_pcm(VATEL_FORMAT.samples(5000))
    (tmp_path / "in.raw").write_bytes(src)
    cfg = AudioConfig(capture_device=f"fcap:IN={tmp_path}/in.raw", frame_ms=30, capture_buffer_frames=10_000)
    size = VATEL_FORMAT.nbytes(30)
    async with Capture(cfg) as capture:
        frames = await read_n(capture, 50)
    assert all(len(f.pcm) == size for f in frames)
    assert [f.seq for f in frames] == sorted(f.seq for f in frames)
    for f in frames:
        if (f.seq + 1) * size <= len(src):
            assert f.pcm == src[f.seq * size : (f.seq + 1) * size], f.seq
    assert frames[0].seq == 0 or capture.stats["dropped"] > 0
    assert capture.last_frame_at is not None


async def test_48k_stereo_only_device_is_resampled_from_the_configured_channel(tmp_path: Path) -> None:
    """A device refusing 24 kHz mono opens at 48 kHz stereo; channel 1 (a 1 kHz tone) arrives at 24 kHz."""
    native = AudioFormat(48000, 2)
    n = native.samples(3000)
    left, right = tone(7000, 48000, n, 8000), tone(1000, 48000, n)
    (tmp_path / "in.raw").write_bytes(np.stack([left, right], axis=1).astype("<i2").tobytes())
    cfg = AudioConfig(capture_device=f"f48cap:IN={tmp_path}/in.raw", capture_channel=1, capture_buffer_frames=10_000)
    async with Capture(cfg) as capture:
        frames = await read_n(capture, 100)
        negotiated = capture.negotiated
    assert negotiated is not None and "48000 Hz, 2 ch" in negotiated
    # 60 frames with consecutive seqs (drops may leave gaps; a gap would break the tone's phase)
    run = next(
        (frames[i : i + 60] for i in range(len(frames) - 59) if frames[i + 59].seq - frames[i].seq == 59), None
    )
    assert run is not None, "too many frames dropped to analyse"
    pcm = b"".join(f.pcm for f in run)
    y = np.frombuffer(pcm, dtype="<i2")
    assert len(y) == 60 * VATEL_FORMAT.samples(20)
    assert abs(level_db(y, 1000, 24000)) < 0.5  # the right channel, at the right pitch
    assert level_db(y, 7000, 24000) < -60  # not the left channel


@pytest.mark.parametrize("device", ["fcap", "f48cap"])
async def test_a_batching_sink_gets_every_frame_in_order_a_drain_per_call(tmp_path: Path, device: str) -> None:
    """With a sink and batch_s set (listening), each call carries the frames of one drain, several at a time, and
    together they are the source without a gap: cut from the bytes at 24 kHz mono, converted at 48 kHz stereo."""
    if device == "fcap":
        src = counting_pcm(VATEL_FORMAT.samples(3000))
        (tmp_path / "in.raw").write_bytes(src)
    else:
        native = AudioFormat(48000, 2)
        mono = tone(1000, 48000, native.samples(3000))
        (tmp_path / "in.raw").write_bytes(np.stack([mono, mono], axis=1).astype("<i2").tobytes())
    calls: list[list[CaptureFrame]] = []
    got = threading.Event()
    capture = Capture(AudioConfig(capture_device=f"{device}:IN={tmp_path}/in.raw"))

    def sink(frames: list[CaptureFrame]) -> None:
        calls.append(frames)
        if sum(len(c) for c in calls) >= 100:
            got.set()

    capture.set_sink(sink)
    capture.batch_s = 0.1
    async with capture:
        assert await asyncio.to_thread(got.wait, 20)
    frames = [f for c in calls for f in c]
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert max(len(c) for c in calls) > 1
    pcm = b"".join(f.pcm for f in frames[:100])
    if device == "fcap":
        assert pcm == src[: len(pcm)]
    else:  # the stream equals the whole source converted at once: no gap, no repeat, nothing shifted
        expected = Resampler(48000, 24000).process(mono).astype("<i2").tobytes()
        assert pcm == expected[: len(pcm)]


async def test_slow_consumer_drops_oldest_frames_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a full buffer the oldest frames are dropped (seq gap), counted, and logged once per burst."""
    (tmp_path / "in.raw").write_bytes(counting_pcm(VATEL_FORMAT.samples(2000)))
    cfg = AudioConfig(capture_device=f"fcap:IN={tmp_path}/in.raw", capture_buffer_frames=8)
    caplog.set_level(logging.WARNING, logger="vatel_edge.audio.capture")
    async with Capture(cfg) as capture:
        for _ in range(200):  # the file device is not paced: frames pile up while we do not read
            await asyncio.sleep(0.01)
            if capture.stats["dropped"] >= 20:
                break
        first = await capture.read()
        rest = [await capture.read() for _ in range(7)]
    dropped = capture.stats["dropped"]
    assert dropped >= 20
    assert first.seq >= dropped - 8 >= 0  # the oldest went first: what is left is recent
    assert [f.seq for f in rest] == list(range(first.seq + 1, first.seq + 8))
    overflow_logs = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert 1 <= len(overflow_logs) < dropped


async def test_missing_device_is_retried_until_it_appears(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A device that fails to open is retried with backoff (logged once) and frames flow once it works."""
    path = tmp_path / "late.raw"
    cfg = AudioConfig(capture_device=f"fcap:IN={path}", capture_buffer_frames=10_000)
    caplog.set_level(logging.INFO, logger="vatel_edge.audio.capture")
    async with Capture(cfg, retry_base_s=0.05, retry_max_s=0.2) as capture:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(capture.read(), 0.8)
        path.write_bytes(counting_pcm(VATEL_FORMAT.samples(1000)))
        frame = await asyncio.wait_for(capture.read(), 20)
    assert frame.pcm == counting_pcm(VATEL_FORMAT.samples(20), VATEL_FORMAT.samples(20) * frame.seq)
    lost = [r for r in caplog.records if "microphone unavailable" in r.getMessage()]
    back = [r for r in caplog.records if "microphone is back" in r.getMessage()]
    assert len(lost) == 1 and len(back) == 1


async def test_close_joins_the_reader_thread_even_when_the_device_never_opens(tmp_path: Path) -> None:
    """Closing returns promptly and leaves no reader thread, whether the device is open or being retried."""
    cfg = AudioConfig(capture_device=f"fcap:IN={tmp_path}/never.raw")
    capture = Capture(cfg, retry_base_s=30, retry_max_s=30)
    async with capture:
        await asyncio.sleep(0.2)
    assert not any(t.name == "vatel-capture" for t in threading.enumerate())
    await capture.aclose()  # idempotent


async def test_realtime_pulse_microphone_delivers_the_fed_audio(pulse: PulseServer) -> None:
    """Through PulseAudio (real time) a 440 Hz tone fed into the mic arrives as 20 ms frames at 24 kHz."""
    cfg = AudioConfig(capture_device="test_mic")
    async with Capture(cfg) as capture:
        await read_n(capture, 2)
        feeder = pulse.feed_mic(tone(440, 24000, 24000 * 2).astype("<i2").tobytes())
        try:
            frames = await read_n(capture, 75)
        finally:
            feeder.kill()
            feeder.wait()
    y = np.frombuffer(b"".join(f.pcm for f in frames[-40:]), dtype="<i2")
    assert abs(level_db(y, 440, 24000)) < 1.0
    assert capture.stats["dropped"] == 0
    assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + 75))


def test_frame_clock_stamps_drained_frames_at_their_end_not_when_read() -> None:
    """Frames complete every 20 ms (a card 300 ppm slow against the clock); a drain every 40 ms, at a random
    phase and a random extra delay, reads all complete ones. Stamped when read they would be off by up to a
    sleep (32 ms); on the frame clock each stamp is within 3 ms of its frame's end, and never after its read."""
    rng = np.random.default_rng(7)
    frame_s, true_frame_s = 0.02, 0.02 * (1 + 300e-6)
    clock = FrameClock(frame_s)
    t, seq, errors = 100.0, 0, []
    while seq < 3000:  # one minute of audio
        t += 0.04 + rng.uniform(0.0, 0.012)  # the sleep, and a late wake-up now and then
        complete = int((t - 100.0) / true_frame_s)
        if complete > seq:
            stamps = clock.stamps(t, seq, complete - seq)
            assert max(stamps) <= t + 1e-9
            assert len(stamps) == 1 or np.allclose(np.diff(stamps), frame_s)
            errors += [s - (100.0 + (seq + k + 1) * true_frame_s) for k, s in enumerate(stamps)]
            seq = complete
    late = np.abs(errors[100:])  # after the first two seconds (the first read is as late as it came)
    assert late.max() < 0.003, late.max()
    clock.reset()  # a reopened stream: the next read starts a new offset
    assert clock.stamps(t + 5.0, seq, 1) == [t + 5.0]


async def _batches(batch_s: float, frames: int) -> list[tuple[float, list[CaptureFrame]]]:
    """The sink calls of a real-time capture from test_mic with `batch_s`: (time of the call, its frames)."""
    calls: list[tuple[float, list[CaptureFrame]]] = []
    got = threading.Event()
    capture = Capture(AudioConfig(capture_device="test_mic"))

    def sink(batch: list[CaptureFrame]) -> None:
        calls.append((time.monotonic(), batch))
        if sum(len(c) for _, c in calls) >= frames:
            got.set()

    capture.set_sink(sink)
    capture.batch_s = batch_s
    async with capture:
        assert await asyncio.to_thread(got.wait, 20)
    return calls


async def test_realtime_batched_stamps_are_a_frame_apart_like_waking_per_period(pulse: PulseServer) -> None:
    """Through PulseAudio (real time), draining every 40 ms or waking per 20 ms period: the frame stamps
    advance by one frame each within 5 ms (the echo reference keeps contiguous frames back to back within that
    deadband; measured: a step of 1-3.5 ms now and then while draining, when a read came sooner after the audio
    than any in the window), although the reads come late by up to a sleep (stamped when read, they jitter by
    several ms even waking per period on a loaded machine), and no stamp is after the read that delivered its
    frame."""
    for batch_s in (0.0, 0.04):
        calls = await _batches(batch_s, 200)
        frames = [f for _, c in calls for f in c][100:200]  # 2 s in: the stream's latency settled
        assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + 100))
        steps = np.diff([f.t for f in frames])
        bad = [(int(i), round(float(steps[i]) * 1000, 2)) for i in np.flatnonzero(np.abs(steps - 0.02) >= 0.005)]
        assert not bad, f"batch_s {batch_s}: steps (index, ms) off by >= 5 ms: {bad}"
        assert min(read - c[-1].t for read, c in calls) >= 0.0, batch_s
        if batch_s:
            assert max(len(c) for _, c in calls) > 1
