"""Microphone capture: a reader thread -> a bounded buffer -> asyncio.

The reader thread owns the ALSA device. It converts whatever the device negotiated to 24 kHz mono
(channel pick + Resampler), cuts `audio.frame_ms` frames and hands each to the event loop with
`call_soon_threadsafe`. Overflow policy: the buffer holds `audio.capture_buffer_frames` frames; when
the consumer is slower, the OLDEST frame is dropped (a gap in `seq`), counted in stats["dropped"], and
logged once per burst. A device that fails to open or vanishes is reopened with backoff; `read()`
just waits meanwhile (logged once when lost, once when back).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import threading
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

CAPTURE_PERIODS = 4
STALL_S = 2.0  # no audio for this long from an open device: treat it as gone and reopen


@dataclass(frozen=True)
class CaptureFrame:
    """One frame of microphone audio."""

    pcm: bytes  # PCM16 LE mono 24 kHz, exactly audio.frame_ms long
    t: float  # time.monotonic() when the frame was complete
    seq: int  # 0, 1, 2, ... (gaps = dropped frames)
    wake: bool = False  # the frame on which the capture-thread listener fired (see Capture.listen)


FrameListener = Callable[[CaptureFrame], bool]


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
        self._buffer: collections.deque[CaptureFrame] = collections.deque()
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Quiet listening (see listen()): guarded by _mode_lock, shared with the reader thread.
        self._mode_lock = threading.Lock()
        self._listener: FrameListener | None = None
        self._ring: collections.deque[CaptureFrame] = collections.deque()
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

    @property
    def listening(self) -> bool:
        """A quiet-listening listener is set."""
        return self._listener is not None

    def listen(self, listener: FrameListener | None, keep_frames: int = 0) -> None:
        """Quiet listening: run `listener` on each frame in the reader thread, without waking the loop.

        While a listener is set, frames are kept in a ring of the newest `keep_frames` (the pre-roll)
        instead of being delivered. When the listener returns True, the ring is delivered in order with
        its last frame marked `wake=True`, and normal delivery resumes. `listen(None)` ends quiet mode
        and delivers the ring in order behind anything already on its way. The listener runs in the
        reader thread: it must be cheap and must not touch event-loop state. Listening all day costs
        one loop wake-up per wake instead of one per frame.
        """
        with self._mode_lock:
            if listener is not None:
                self._ring = collections.deque(maxlen=max(1, keep_frames))
                self._listener = listener
                return
            if self._listener is None:
                return
            self._listener = None
            frames = list(self._ring)
            self._ring.clear()
        if frames and self._loop is not None:
            # call_soon: FIFO behind frames the thread already handed over with call_soon_threadsafe.
            self._loop.call_soon(self._deliver_many, frames)

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

    def _deliver_many(self, frames: list[CaptureFrame]) -> None:
        for frame in frames:
            self._deliver(frame)

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
        self.last_frame_at = frame.t
        assert self._ready is not None
        self._ready.set()

    # ------------------------------------------------------------------ reader thread

    def _quiet(self, frame: CaptureFrame) -> list[CaptureFrame] | None:
        """Quiet listening in the reader thread: None keeps the frame in the ring; else what to deliver."""
        with self._mode_lock:
            listener = self._listener
            if listener is None:
                return [frame]
            self._ring.append(frame)
            self.last_frame_at = frame.t  # the watchdog's "frames keep arriving", without a delivery
            if not listener(frame):
                return None
            self._listener = None
            frames = list(self._ring)
            self._ring.clear()
        frames[-1] = dataclasses.replace(frames[-1], wake=True)
        return frames

    def _run(self) -> None:
        seq = 0

        def pump(pcm: AlsaPcm) -> None:
            nonlocal seq
            seq = self._pump(pcm, seq)

        self.run_reopening(self._open, pump)

    def _open(self) -> AlsaPcm:
        return AlsaPcm(self._cfg.capture_device, "capture", period_ms=self._cfg.frame_ms, periods=CAPTURE_PERIODS)

    def _pump(self, pcm: AlsaPcm, seq: int) -> int:
        """Read until stopped (returns the next seq) or the device fails (raises AudioDeviceError)."""
        native = pcm.native
        resampler = Resampler(native.rate, VATEL_FORMAT.rate)
        channel = min(self._cfg.capture_channel, native.channels - 1)
        pending = b""  # device bytes not yet a whole sample frame
        out = np.zeros(0, dtype=np.int16)  # 24 kHz mono samples not yet a whole frame
        period_s = pcm.negotiated.period_frames / native.rate
        last_data = time.monotonic()
        while not self._stop.is_set():
            data = pcm.read()
            if data is None:
                self._stats["overruns"] += 1
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("capture overrun (recovered)")
                continue
            now = time.monotonic()
            if not data:
                if now - last_data > STALL_S:
                    raise AudioDeviceError(f"no audio from {pcm.negotiated.device!r} for {STALL_S:.0f} s")
                pcm.wait(2 * period_s, self._wake_r)
                continue
            last_data = now
            pending += data
            usable = len(pending) - len(pending) % native.bytes_per_frame
            raw = np.frombuffer(pending[:usable], dtype="<i2")
            pending = pending[usable:]
            mono = to_mono(raw, native.channels, channel)
            out = np.concatenate([out, resampler.process(mono)])
            while len(out) >= self._frame_samples:
                frame = CaptureFrame(out[: self._frame_samples].astype("<i2").tobytes(), time.monotonic(), seq)
                out = out[self._frame_samples :]
                seq += 1
                self._stats["frames"] += 1
                batch = self._quiet(frame)
                if batch is None:
                    continue
                loop = self._loop
                assert loop is not None
                try:
                    loop.call_soon_threadsafe(self._deliver_many, batch)
                except RuntimeError:  # the loop is closed: nobody is listening any more
                    return seq
        return seq
