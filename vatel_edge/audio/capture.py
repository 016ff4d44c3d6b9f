"""Microphone capture: a reader thread that owns the ALSA device, then a sink in that thread or asyncio.

The reader thread converts whatever the device negotiated to 24 kHz mono (channel pick + Resampler) and
cuts `audio.frame_ms` frames (a device at 24 kHz mono is cut from its bytes, no conversion). With a sink set
(`set_sink`: the daemon's microphone path, audio/mic.py) the frames go to the sink in the reader thread, in
sequence order, one call per drain of the device (per read when `batch_s` is 0), and the event loop is not
woken per frame; without one, frames are handed to the event loop for `read()`. Overflow policy of
`read()`'s buffer: it holds `audio.capture_buffer_frames` frames; when the consumer is slower, the OLDEST
frame is dropped (a gap in `seq`), counted in stats["dropped"], and logged once per burst. A device that
fails to open or vanishes is reopened with backoff; `read()` just waits meanwhile (logged once when lost,
once when back).

Batching (`batch_s`, set by the microphone path: longer while listening, shorter in a session): the thread
drains every period the device holds and then sleeps `batch_s` (plus or minus up to half a period, see
below), instead of waking once per period; the device buffer (CAPTURE_BUFFER_MS, whatever the frame
length) holds more than that, so nothing is lost and the frames stay contiguous; the sleep never exceeds
half of the buffer the device granted.

Timestamps (`FrameClock`): a frame's `t` is counted on the sample clock, the frame's end sample from the
earliest-seen moment that sample's place in the stream was read. A drain reads frames up to `batch_s` after
they were complete; stamping them when read would move them by up to a sleep from wake-up to wake-up (and
the echo path aligns the microphone with the reference by these stamps), so the stamps are those of the
reads that came soonest after the audio, waking per period or draining alike. The drains' phases against
the device's periods are spread (golden-ratio steps of the sleep) so that such a read comes every few.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vatel_edge.audio.alsa import AlsaPcm
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.resample import Resampler, to_mono
from vatel_edge.audio.worker import DeviceWorker
from vatel_edge.config import AudioConfig
from vatel_edge.errors import AudioDeviceError

log = logging.getLogger(__name__)

#: The capture device's buffer: room for the longest batching sleep (mic.LISTEN_BATCH_S, 0.2 s) twice over.
CAPTURE_BUFFER_MS = 480


def capture_periods(frame_ms: int) -> int:
    """Periods (of frame_ms) the capture device's buffer is asked for: CAPTURE_BUFFER_MS of them."""
    return -(-CAPTURE_BUFFER_MS // frame_ms)


_GOLDEN = 0.6180339887498949  # the batching sleep's phase step (see _pump)
STALL_S = 2.0  # no audio for this long from an open device: treat it as gone and reopen


class FrameClock:
    """Frame end times on the sample clock: `offset + seq_end * frame_s`, where the offset is the smallest
    (time read - seq_end * frame_s) of the reads in the last WINDOW_S. A read is never earlier than its audio,
    so the smallest is the read that came soonest after it; the window keeps clock drift between the sound
    card and time.monotonic() out (it can move the offset by at most WINDOW_S times the drift)."""

    WINDOW_S = 4.0

    def __init__(self, frame_s: float) -> None:
        self.frame_s = frame_s
        self._seen: collections.deque[tuple[float, float]] = collections.deque()  # (read at, offset), rising

    def reset(self) -> None:
        """The stream restarted or lost samples (a reopen, an overrun): the old offsets no longer hold."""
        self._seen.clear()

    def stamps(self, now: float, seq: int, n: int) -> list[float]:
        """The end times of frames seq .. seq+n-1, read (all of them) at `now`."""
        seen, window = now - (seq + n) * self.frame_s, self._seen
        while window and window[-1][1] >= seen:
            window.pop()
        window.append((now, seen))
        while window[0][0] < now - self.WINDOW_S:
            window.popleft()
        offset = window[0][1]
        return [offset + (seq + k + 1) * self.frame_s for k in range(n)]


@dataclass(frozen=True)
class CaptureFrame:
    """One frame of microphone audio."""

    pcm: bytes  # PCM16 LE mono 24 kHz, exactly audio.frame_ms long
    t: float  # time.monotonic() when the frame was complete (FrameClock)
    seq: int  # 0, 1, 2, ... (gaps = dropped frames)


FrameSink = Callable[[list[CaptureFrame]], None]
"""Takes the consecutive frames of one read or drain, oldest first."""


class Capture(DeviceWorker):
    """Async context manager delivering CaptureFrames from the configured microphone."""

    thread_name = "vatel-capture"
    device_name = "microphone"
    logger = log

    def __init__(self, cfg: AudioConfig, *, retry_base_s: float = 0.5, retry_max_s: float = 10.0) -> None:
        super().__init__(retry_base_s=retry_base_s, retry_max_s=retry_max_s)
        self._cfg = cfg
        self._frame_samples = VATEL_FORMAT.samples(cfg.frame_ms)
        self._frame_bytes = VATEL_FORMAT.nbytes(cfg.frame_ms)
        self._clock = FrameClock(cfg.frame_ms / 1000.0)
        self._buffer: collections.deque[CaptureFrame] = collections.deque()
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: FrameSink | None = None  # set before start(); runs in the reader thread
        #: Seconds the reader thread sleeps between drains while not urgent (0: wake on every period).
        self.batch_s = 0.0
        self._burst = 0  # frames dropped in the current overflow burst
        self._stats = {"frames": 0, "dropped": 0, "overruns": 0, "reopens": 0}
        self.last_frame_at: float | None = None

    @property
    def stats(self) -> dict[str, int]:
        """Counters: frames delivered to the buffer, dropped (overflow), overruns, reopens."""
        return dict(self._stats)

    def _on_start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()

    def set_sink(self, sink: FrameSink | None) -> None:
        """Hand the frames to `sink` in the reader thread instead of to `read()` (set it before `start()`): one
        call per device read, or per drain while batching.

        The sink must be quick, must not block, and must not touch event-loop state except through
        `loop.call_soon_threadsafe`."""
        self._sink = sink

    async def read(self) -> CaptureFrame:
        """The oldest buffered frame, waiting for one if needed."""
        assert self._ready is not None, "Capture used outside its context"
        while not self._buffer:
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft()

    def drain(self) -> list[CaptureFrame]:
        """Take every buffered frame now (e.g. to discard stale audio)."""
        frames = list(self._buffer)
        self._buffer.clear()
        return frames

    # ------------------------------------------------------------------ event-loop side

    def _deliver(self, frame: CaptureFrame) -> None:
        if len(self._buffer) >= self._cfg.capture_buffer_frames:
            self._buffer.popleft()  # overflow policy: drop the oldest
            self._stats["dropped"] += 1
            if self._burst == 0:
                log.warning(
                    "capture buffer full (%d frames): consumer too slow, dropping oldest frames",
                    self._cfg.capture_buffer_frames,
                )
            self._burst += 1
        elif self._burst and len(self._buffer) < self._cfg.capture_buffer_frames // 2:
            log.warning("capture overflow ended: %d frames dropped", self._burst)
            self._burst = 0
        self._buffer.append(frame)
        assert self._ready is not None
        self._ready.set()

    # ------------------------------------------------------------------ reader thread

    def _run(self) -> None:
        seq = 0

        def pump(pcm: AlsaPcm) -> None:
            nonlocal seq
            seq = self._pump(pcm, seq)

        self.run_reopening(self._open, pump)

    def _open(self) -> AlsaPcm:
        return AlsaPcm(self._cfg.capture_device, "capture", period_ms=self._cfg.frame_ms,
                       periods=capture_periods(self._cfg.frame_ms))

    def _pump(self, pcm: AlsaPcm, seq: int) -> int:
        """Read until stopped (returns the next seq) or the device fails (raises AudioDeviceError).

        While batching, every period the device holds is read before any is converted, and the frames of
        one drain go to the sink in one call (one pass of numpy work for ~3 periods, not three)."""
        native = pcm.native
        as_is = native == VATEL_FORMAT  # the device runs at 24 kHz mono: frames are cut from the bytes
        resampler = Resampler(native.rate, VATEL_FORMAT.rate)
        channel = min(self._cfg.capture_channel, native.channels - 1)
        pending = b""  # device bytes not yet a whole sample frame (or, as_is, not yet a whole capture frame)
        out = np.zeros(0, dtype=np.int16)  # 24 kHz mono samples not yet a whole frame
        period_s = pcm.negotiated.period_frames / native.rate
        # reads per drain at most (the buffer's periods), and the longest sleep: half the buffer the device
        # granted (a device that grants less than CAPTURE_BUFFER_MS gets shorter sleeps, not overruns)
        most = max(1, pcm.negotiated.buffer_frames // pcm.negotiated.period_frames)
        longest_s = pcm.negotiated.buffer_frames / native.rate / 2
        last_data = time.monotonic()
        drained: list[bytes] = []
        wakes = 0
        self._clock.reset()  # a (re)opened device: a new stream
        while not self._stop.is_set():
            failure: AudioDeviceError | None = None
            try:
                data = pcm.read()
            except AudioDeviceError as exc:
                if not drained:
                    raise
                failure, data = exc, b""  # the device failed mid-drain: deliver what it gave first
            if data is None:
                self._stats["overruns"] += 1
                self._clock.reset()  # samples were lost: the stream's position moved
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("capture overrun (recovered)")
                continue
            now = time.monotonic()
            if data:
                last_data = now
                drained.append(data)
                if self.batch_s > 0 and len(drained) < most:
                    continue  # drain the device first
            if drained:
                pending += b"".join(drained)
                drained.clear()
                if as_is:
                    usable = len(pending) - len(pending) % self._frame_bytes
                    pcms = [pending[i : i + self._frame_bytes] for i in range(0, usable, self._frame_bytes)]
                    pending = pending[usable:]
                else:
                    usable = len(pending) - len(pending) % native.bytes_per_frame
                    raw = np.frombuffer(pending[:usable], dtype="<i2")
                    pending = pending[usable:]
                    out = np.concatenate([out, resampler.process(to_mono(raw, native.channels, channel))])
                    whole = len(out) - len(out) % self._frame_samples
                    block = out[:whole].astype("<i2").tobytes()
                    out = out[whole:]
                    pcms = [block[i : i + self._frame_bytes] for i in range(0, len(block), self._frame_bytes)]
                if pcms and not self._emit(pcms, seq):
                    return seq + len(pcms)
                seq += len(pcms)
            if failure is not None:
                raise failure
            if not data:
                if now - last_data > STALL_S:
                    raise AudioDeviceError(f"no audio from {pcm.negotiated.device!r} for {STALL_S:.0f} s")
                if self.batch_s > 0:  # drained: sleep a batch (stop() still ends it at once)
                    # a sleep of exactly batch_s would read at the same phase of the device's periods for
                    # seconds; moved by a golden-ratio step of up to +-half a period each time, the drains
                    # come at evenly spread phases and the FrameClock sees a read right after the audio soon
                    wakes += 1
                    self._stop.wait(min(self.batch_s, longest_s) + ((wakes * _GOLDEN) % 1.0 - 0.5) * period_s)
                else:
                    pcm.wait(2 * period_s, self._wake_r)
        return seq

    def _emit(self, pcms: list[bytes], seq: int) -> bool:
        """Frames `seq`... to the sink (one call) or the event loop; False once the loop is closed."""
        t = time.monotonic()
        stamps = self._clock.stamps(t, seq, len(pcms))
        frames = [CaptureFrame(p, at, seq + k) for k, (p, at) in enumerate(zip(pcms, stamps, strict=True))]
        self._stats["frames"] += len(frames)
        self.last_frame_at = t
        if self._sink is not None:
            self._sink(frames)
            return True
        loop = self._loop
        assert loop is not None
        try:
            for frame in frames:
                loop.call_soon_threadsafe(self._deliver, frame)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True
