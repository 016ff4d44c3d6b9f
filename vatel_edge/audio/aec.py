"""Acoustic echo cancellation: the engine interface, the engine factory, and reference alignment.

The daemon streams the microphone while the agent talks (that is how the server hears barge-in), so the
microphone must not carry the agent's own voice back. vatel-edge owns both ALSA streams: the playback
writer feeds `EchoReference` with exactly what it wrote and when it will sound, the capture side pulls the
reference frame that lines up with each capture frame, and an `EchoCanceller` subtracts the echo.

Engines are optional extras, imported only inside `make_echo_canceller`, so the daemon runs without them:
  * ``webrtc``: WebRTC AEC3 through the ``pywebrtc-audio`` wheel (best: ~41 dB ERLE on a synthetic room).
  * ``speex``: speexdsp's MDF canceller plus its residual-echo suppressor, through ctypes on the system
    ``libspeexdsp.so.1`` (Debian ``libspeexdsp1``; nothing to compile; ~28-35 dB).
  * ``dtln``: DTLN-aec, a neural canceller (aec_dtln.py: the ``ai-edge-litert`` wheel and two model files),
    which keeps the user's voice in double talk where AEC3 removes it; chosen by name only, not by ``auto``.
docs/ECHO.md has the measurements behind this choice.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat, power_of_dbfs
from vatel_edge.errors import ConfigError

log = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = ("webrtc", "speex", "dtln")
"""Every engine vatel-edge knows."""

AUTO: tuple[str, ...] = ("webrtc", "speex")
"""The engines `auto` tries, in order. Not dtln (yet): in 4 of 12 real-time first turns it lost most of the
user for a reason not yet known, it costs 3.9x AEC3's CPU and ~38 MB more memory here, and it has not been
measured on a Pi (docs/ECHO.md, "DTLN-aec")."""

_INSTALL_HINT = {
    "webrtc": "pip install pywebrtc-audio (the vatel-edge[aec] extra)",
    "speex": "apt-get install libspeexdsp1",
    "dtln": "pip install ai-edge-litert (the vatel-edge[aec] extra), then python -m vatel_edge.audio.aec_dtln",
}


class EchoCanceller(Protocol):
    """One echo canceller instance: feed it one capture frame and its aligned reference frame at a time.

    Not thread-safe: one owner (the capture-processing side) calls every method. An engine without an adaptive
    filter (nothing to converge, DTLN-aec) says so with a class attribute `needs_convergence = False`; EchoPath
    reads it with True as the default, so the adaptive engines and test doubles need not declare it.
    """

    name: str

    def process(self, mic: bytes, ref: bytes) -> bytes:
        """Return the mic frame with the echo of `ref` removed (PCM16 LE mono, both frames the same length)."""
        ...

    def reset(self) -> None:
        """Forget the learned echo path (e.g. after the device was reopened); keeps the configuration."""
        ...

    def close(self) -> None:
        """Release native state; idempotent. `process` must not be called afterwards."""
        ...


def _probe(kind: str) -> bool:
    """True if engine `kind` can be created on this machine (its library imports / loads)."""
    if kind == "webrtc":
        from vatel_edge.audio import aec_webrtc

        return aec_webrtc.available()
    if kind == "speex":
        from vatel_edge.audio import aec_speex

        return aec_speex.available()
    if kind == "dtln":
        from vatel_edge.audio import aec_dtln

        return aec_dtln.available()
    return False


def available_engines() -> list[str]:
    """The engines `auto` may pick that can run here, in its order (dtln is only chosen by name)."""
    return [kind for kind in AUTO if _probe(kind)]


def resolve_engine(kind: str) -> str | None:
    """The engine ``audio.echo_cancel = kind`` selects here, without building it: "auto" = best installed
    (None if none), "off" = None. An unknown or uninstalled named engine raises ConfigError naming the key."""
    if kind == "off":
        return None
    if kind == "auto":
        installed = available_engines()
        return installed[0] if installed else None
    if kind not in ENGINES:
        raise ConfigError(f"audio.echo_cancel: unknown engine {kind!r} (choose auto, {', '.join(ENGINES)} or off)")
    if not _probe(kind):
        others = [k for k in ENGINES if k != kind and _probe(k)]
        raise ConfigError(
            f"audio.echo_cancel = {kind!r}, but that engine is not installed here ({_INSTALL_HINT[kind]}); "
            f"installed: {', '.join(others) or 'none'}"
        )
    return kind


def make_echo_canceller(kind: str, frame_ms: int, rate: int = VATEL_FORMAT.rate) -> EchoCanceller | None:
    """Build the canceller named by ``audio.echo_cancel``: "auto" = best installed (None if none), "off" = None.

    A named engine that is not installed raises ConfigError naming the key and how to install it.
    """
    engine_kind = resolve_engine(kind)
    if engine_kind is None:
        if kind == "auto":
            log.warning(
                "audio.echo_cancel = auto: no echo canceller installed (%s); the agent may hear itself",
                "; ".join(_INSTALL_HINT.values()),
            )
        return None
    kind = engine_kind
    fmt = AudioFormat(rate=rate)
    engine: EchoCanceller
    if kind == "webrtc":
        from vatel_edge.audio.aec_webrtc import WebRtcEchoCanceller

        engine = WebRtcEchoCanceller(fmt, frame_ms)
    elif kind == "dtln":
        from vatel_edge.audio.aec_dtln import DtlnEchoCanceller

        engine = DtlnEchoCanceller(fmt, frame_ms)
    else:
        from vatel_edge.audio.aec_speex import SpeexEchoCanceller

        engine = SpeexEchoCanceller(fmt, frame_ms)
    log.info("echo canceller: %s, %d ms frames at %d Hz", engine.name, frame_ms, rate)
    return engine


LEAD_S = 0.02
"""How far EchoReference hands the reference over ahead of its echo, by default (see EchoReference)."""

MAX_LATENCY_MS = 100
"""The longest engine latency `measure_latency` looks for."""


def measure_latency(engine: EchoCanceller, frame_ms: int, fmt: AudioFormat = VATEL_FORMAT) -> int:
    """How many samples `engine` delays the microphone by, measured on a scratch instance (then reset).

    A band-limited multi-tone (200 Hz - 5 kHz, speech-like, inside every engine's internal band) goes through
    with a silent reference; the lag of the output's best correlation with the input, up to MAX_LATENCY_MS,
    is the latency. WebRTC AEC3 at 24 kHz resamples inside and measures 224 samples (~9.3 ms); speex one
    frame (480 samples at 20 ms); DTLN-aec 1051 (~44 ms), at every frame length. The echo path delays its
    bypass by the same amount, so the stream never jumps when the engine starts or stops.
    """
    n = fmt.samples(frame_ms)
    max_lag = max(2 * n, fmt.samples(MAX_LATENCY_MS))
    frames = max(12, -(-1200 // frame_ms), -(-3 * max_lag // n))  # ~1.2 s, at least 12 frames and 3 max lags
    rng = np.random.default_rng(7)
    t = np.arange(n * frames) / fmt.rate
    freqs = rng.uniform(200.0, 5000.0, 24)
    phases = rng.uniform(0.0, 2 * np.pi, 24)
    tone = np.sin(2 * np.pi * np.outer(t, freqs) + phases).sum(axis=1)
    x = (tone / np.abs(tone).max() * 8000.0).astype("<i2")
    silence = bytes(2 * n)
    out = np.concatenate(
        [np.frombuffer(engine.process(x[i * n : (i + 1) * n].tobytes(), silence), dtype="<i2") for i in range(frames)]
    ).astype(np.float64)
    engine.reset()
    skip = n * (frames // 3)  # past the engine's start-up transient
    ref = x[skip : skip + n * (frames // 3)].astype(np.float64)
    seg = out[skip : skip + ref.size + max_lag]
    size = 1 << int(np.ceil(np.log2(seg.size + ref.size)))
    corr = np.fft.irfft(np.fft.rfft(seg, size) * np.conj(np.fft.rfft(ref, size)), size)
    return int(np.argmax(corr[: max_lag + 1]))


# --------------------------------------------------------------------------------------------------------------
# Reference alignment


class StreamClock:
    """Places a continuous sample stream on the reference sample axis, absorbing timestamp jitter.

    Each chunk is observed at an index computed from wall-clock timestamps, which jitter by a few ms with
    thread scheduling. A real device plays (and records) samples back to back, so while the observed index
    stays within `tolerance` samples of where the previous chunk ended, the chunk goes right after it.
    Clock drift is followed without jumps: once the smoothed offset of the observations exceeds `deadband`,
    the stream moves by one sample towards them, at most once per `step_every` samples (crystal drift is
    < 200 ppm; faster apparent drift is latency reporting settling, e.g. PulseAudio's buffer growing after a
    start, and following it would shift the reference under a converged canceller; measured in the PulseAudio
    room: 9 ms in 4 s, ERLE 20 dB instead of 55). Further off than `tolerance` (an underrun, a pause between
    turns, dropped capture frames) the stream re-anchors at the observed index.
    """

    _SMOOTHING = 0.05

    def __init__(self, tolerance: int, deadband: int, step_every: int = 1) -> None:
        self._tolerance = tolerance
        self._deadband = deadband
        self._step_every = step_every
        self._since_step = 0
        self._offset = 0.0  # smoothed (observed - placed) in samples
        self.next: int | None = None
        self.reanchors = 0

    def place(self, observed: int, n: int) -> int:
        if self.next is None or abs(observed - self.next) > self._tolerance:
            if self.next is not None:
                self.reanchors += 1
            start = observed
            self._offset = 0.0
        else:
            start = self.next
            self._offset += self._SMOOTHING * ((observed - start) - self._offset)
            self._since_step += n
            if abs(self._offset) > self._deadband and self._since_step >= self._step_every:
                step = 1 if self._offset > 0 else -1
                start += step
                self._offset -= step
                self._since_step = 0
        self.next = start + n
        return start

    def clear(self) -> None:
        self.next = None


def stream_clock(fmt: AudioFormat, tolerance_s: float = 0.03) -> StreamClock:
    """The StreamClock of a played or captured stream at `fmt`'s rate: contiguous within `tolerance_s`, drift
    followed past a 5 ms deadband at most a sample per _DRIFT_STEP_MS (the echo reference's, and the
    recording's played track)."""
    return StreamClock(fmt.samples(tolerance_s * 1000.0), deadband=fmt.samples(5.0),
                       step_every=fmt.samples(_DRIFT_STEP_MS))


class EchoReference:
    """What the speaker played, on a timeline, so each capture frame gets the reference that caused its echo.

    Threading contract: `push` and `drop_after` are called by the playback writer thread, `frame_for` by the
    capture side (asyncio task or capture thread), `reset` by either; every public method takes one internal
    lock, held only for array copies (the delay search runs outside it). Nothing else is shared.

    Time is `time.monotonic()` seconds. Memory is bounded: `history_s` of samples in a ring (older samples
    are overwritten: they can no longer be echoed) plus the mic envelope of the delay search window.

    Delay estimation: device latencies reported by ALSA miss some buffering (USB, PulseAudio, codecs), so the
    echo arrives `delay_s` later than predicted. Every `update_s` the log-energy envelope of the raw mic
    (given to `frame_for(mic=...)`) is cross-correlated with the reference envelope over lags in
    [`min_delay_s`, `max_delay_s`] (over the last `window_s`, or from `min_window_s` of mic after a start or
    a gap); a clear peak is accepted, the median of the last accepted peaks becomes
    the correction (changed only when it moves by more than `hysteresis_s`, since every change shifts the
    reference the canceller has adapted to). `lead_s` hands over the reference that much ahead of its echo,
    so the echo path the canceller sees stays causal despite estimation error (reverberation biases the
    envelope peak ~10 ms late); the cancellers model a 200+ ms path, so a small lead costs nothing.
    `self_aligning_s` (for engines that estimate the delay themselves, like AEC3): an estimate is applied only
    when the echo would otherwise lead its reference (non-causal) or lag it by more than this.
    """

    def __init__(
        self,
        fmt: AudioFormat = VATEL_FORMAT,
        *,
        max_delay_s: float = 0.3,
        min_delay_s: float = -0.1,
        initial_delay_s: float = 0.0,
        lead_s: float = LEAD_S,
        window_s: float = 4.0,
        min_window_s: float = 1.5,
        update_s: float = 0.5,
        block_ms: float = 2.5,
        min_correlation: float = 0.5,
        min_active: float = 0.2,
        median_of: int = 5,
        hysteresis_s: float = 0.004,
        tolerance_s: float = 0.03,
        self_aligning_s: float | None = None,
    ) -> None:
        if fmt.channels != 1 or fmt.width != 2:
            raise ValueError("EchoReference takes PCM16 mono")
        if not min_delay_s <= initial_delay_s <= max_delay_s:
            raise ValueError("initial_delay_s must lie within [min_delay_s, max_delay_s]")
        self.fmt = fmt
        self._rate = fmt.rate
        self._block = max(1, fmt.samples(block_ms))
        self._min_lag = math.floor(min_delay_s * self._rate / self._block)
        self._max_lag = math.ceil(max_delay_s * self._rate / self._block)
        self._min_delay_s = min_delay_s
        self._max_delay_s = max_delay_s
        self._lead = fmt.samples(lead_s * 1000.0)
        self._window_blocks = max(8, round(window_s * self._rate / self._block))
        self._min_window_blocks = max(8, round(min(min_window_s, window_s) * self._rate / self._block))
        self._update = fmt.samples(update_s * 1000.0)
        self._min_corr = min_correlation
        self._min_active = min_active
        self._hysteresis = hysteresis_s
        self._lead_s = lead_s
        self._self_aligning_s = self_aligning_s
        self.estimated_delay_s: float | None = None  # the newest accepted estimate (median), applied or not
        self._estimates: deque[float] = deque(maxlen=median_of)
        # ring of played samples, indexed by absolute sample index i -> time _t0 + i / rate
        margin_s = 1.0
        history_s = window_s + max_delay_s - min(0.0, min_delay_s) + lead_s + margin_s
        self._cap = fmt.samples(history_s * 1000.0)
        self._ring = np.zeros(self._cap, dtype="<i2")
        self._end = 0  # one past the newest written sample; samples at or after it are silence
        self._t0: float | None = None
        self._play_clock = stream_clock(fmt, tolerance_s)
        self._cap_clock = stream_clock(fmt, tolerance_s)
        # mic envelope ring: log-energy per block, NaN where no mic was seen, indexed by absolute block
        self._mic_cap = self._window_blocks + 2 * (self._max_lag - self._min_lag) + 64
        self._mic_env = np.full(self._mic_cap, np.nan)
        self._mic_newest: int | None = None  # absolute block index of the newest mic block
        self._mic_tail = np.zeros(0, dtype=np.float64)  # samples after the newest whole block (partial block)
        self._mic_tail_end = 0  # absolute sample index just after _mic_tail
        self._mic_run: list[bytes] = []  # mic frames not yet in the envelope (contiguous, from _mic_run_start)
        self._mic_run_start = 0
        self._mic_run_end = 0
        self._since_update = 0
        self._delay_s = initial_delay_s
        self._lock = threading.Lock()
        self.stats: dict[str, int] = {
            "pushed_samples": 0,
            "frames": 0,
            "estimates_accepted": 0,
            "estimates_rejected": 0,
            "delay_changes": 0,
        }

    @property
    def delay_s(self) -> float:
        """The applied correction: how much later than the reported latencies predict the echo arrives."""
        return self._delay_s

    def _index(self, t: float) -> int:
        assert self._t0 is not None
        return round((t - self._t0) * self._rate)

    def push(self, pcm: bytes, t_written: float, device_delay_s: float) -> None:
        """Record `pcm` as played: its first sample leaves the speaker at about t_written + device_delay_s.

        Call it from the playback writer with exactly the bytes written to the device, right after the
        write, with `device_delay_s` = (ALSA delay in frames after the write - frames just written) / rate.
        """
        samples = np.frombuffer(pcm, dtype="<i2")
        n = samples.size
        if n == 0:
            return
        if n > self._cap:
            samples = samples[-self._cap :]
            t_written += (n - self._cap) / self._rate
            n = self._cap
        with self._lock:
            if self._t0 is None:
                self._t0 = t_written + device_delay_s
            start = self._play_clock.place(self._index(t_written + device_delay_s), n)
            gap_from = max(self._end, start + n - self._cap)
            if start > gap_from:  # a gap: nothing played there
                self._write(gap_from, np.zeros(start - gap_from, dtype=np.int16))
            self._write(start, samples)
            self._end = start + n  # the newest chunk ends what is known to be played
            self.stats["pushed_samples"] += n

    def drop_after(self, t: float) -> None:
        """Barge-in: the device buffer was dropped at `t`, so nothing scheduled from then on will sound."""
        with self._lock:
            if self._t0 is None:
                return
            cut = self._index(t)
            if cut < self._end:
                self._end = max(cut, self._end - self._cap)
            self._play_clock.clear()

    def reset(self) -> None:
        """Forget all reference audio, mic envelope and timing (e.g. after a device reopen); keeps the delay."""
        with self._lock:
            self._t0 = None
            self._end = 0
            self._play_clock.clear()
            self._cap_clock.clear()
            self._mic_env.fill(np.nan)
            self._mic_newest = None
            self._mic_tail = np.zeros(0, dtype=np.float64)
            self._mic_run.clear()
            self._since_update = 0

    def _write(self, start: int, samples: npt.NDArray[np.int16]) -> None:
        n = samples.size
        pos = start % self._cap
        first = min(n, self._cap - pos)
        self._ring[pos : pos + first] = samples[:first]
        if first < n:
            self._ring[: n - first] = samples[first:]

    def _read(self, start: int, n: int) -> npt.NDArray[np.int16]:
        """Samples [start, start+n) on the absolute axis; silence where nothing (kept) was played."""
        out = np.zeros(n, dtype=np.int16)
        lo = max(start, self._end - self._cap, 0)
        hi = min(start + n, self._end)
        if hi > lo:
            pos = lo % self._cap
            count = hi - lo
            first = min(count, self._cap - pos)
            out[lo - start : lo - start + first] = self._ring[pos : pos + first]
            if first < count:
                out[lo - start + first : hi - start] = self._ring[: count - first]
        return out

    def _read_bytes(self, start: int, n: int) -> bytes:
        """`_read` as PCM16 LE bytes, without the copies where the span is all played or all silence."""
        lo = max(start, self._end - self._cap, 0)
        hi = min(start + n, self._end)
        if hi <= lo:
            return bytes(2 * n)
        pos = start % self._cap
        if lo == start and hi == start + n and pos + n <= self._cap:
            return self._ring[pos : pos + n].tobytes()
        return self._read(start, n).tobytes()

    def frame_for(self, capture_t: float, capture_delay_s: float, nbytes: int, mic: bytes | None = None) -> bytes:
        """The reference frame aligned with one capture frame (silence where nothing was playing).

        `capture_t`: monotonic time the frame was read (complete); `capture_delay_s`: ALSA capture delay then
        (frames recorded but not yet read) / rate, so the frame's last sample hit the mic at about
        capture_t - capture_delay_s. Pass the raw (uncancelled) frame as `mic` to drive delay estimation.
        """
        n = nbytes // self.fmt.bytes_per_frame
        search: tuple[npt.NDArray[np.float64], npt.NDArray[np.int16], int] | None = None
        with self._lock:
            self.stats["frames"] += 1
            if self._t0 is None:
                return bytes(nbytes)
            mic_start = self._cap_clock.place(self._index(capture_t - capture_delay_s) - n, n)
            shift = round(self._delay_s * self._rate) - self._lead  # the reference runs `lead` ahead of its echo
            ref = self._read_bytes(mic_start - shift, n)
            if mic is not None:
                search = self._observe(mic, mic_start)
        if search is not None:
            self._search(*search)
        return ref

    def _observe(self, mic: bytes, mic_start: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int16], int] | None:
        """Keep the mic frame; every `update_s` store the envelope of the frames kept and return what the delay
        search needs (lock held). The envelope is computed once per update, not per frame: in the capture
        thread each numpy call right after a wake-up costs several times its arithmetic, and per frame this
        took ~170 us of the echo path's ~240 us of its own (thread time around each call; the path as a whole:
        bench/echo_frame.py). A run of exactly contiguous frames is one
        array; a frame that starts elsewhere ends the run first, so the envelope is the same as frame by
        frame."""
        n = len(mic) // 2
        if self._mic_run and mic_start != self._mic_run_end:
            self._absorb()
        if not self._mic_run:
            self._mic_run_start = mic_start
        self._mic_run.append(mic)
        self._mic_run_end = mic_start + n
        self._since_update += n
        if self._since_update < self._update:
            return None
        self._absorb()
        if self._mic_newest is None:
            return None
        self._since_update = 0
        b = self._block
        hi = self._mic_newest + 1
        lo = hi - self._window_blocks
        mic_env = self._mic_env[np.arange(lo, hi) % self._mic_cap].copy()
        # reference blocks lo - max_lag .. hi - min_lag (lag L: mic block k hears reference block k - L)
        ref = self._read((lo - self._max_lag) * b, (hi - lo + self._max_lag - self._min_lag) * b)
        return mic_env, ref, lo

    def _absorb(self) -> None:
        """The kept run of contiguous mic frames into the envelope ring (lock held)."""
        x = np.frombuffer(b"".join(self._mic_run), dtype="<i2").astype(np.float64)
        mic_start = self._mic_run_start
        self._mic_run.clear()
        # contiguous (within a drift step): complete the block split between the previous frame and this one
        if self._mic_tail.size and abs(self._mic_tail_end - mic_start) <= _CONTIGUOUS_SLACK:
            x = np.concatenate((self._mic_tail, x))
            mic_start -= self._mic_tail.size
        b = self._block
        first_block = -(-mic_start // b)  # first block boundary inside the frame
        offset = first_block * b - mic_start
        nblocks = max(0, (x.size - offset) // b)
        used = offset + nblocks * b
        self._mic_tail = x[used:].copy() if used < x.size else np.zeros(0, dtype=np.float64)
        self._mic_tail_end = mic_start + x.size
        if nblocks > 0:
            energies = np.mean(x[offset : offset + nblocks * b].reshape(nblocks, b) ** 2, axis=1)
            idx = np.arange(first_block, first_block + nblocks)
            if self._mic_newest is not None and first_block > self._mic_newest + 1:
                gap = np.arange(self._mic_newest + 1, first_block)[-self._mic_cap :]
                self._mic_env[gap % self._mic_cap] = np.nan
            self._mic_env[idx % self._mic_cap] = _log_energy(energies)
            self._mic_newest = first_block + nblocks - 1

    def _search(self, mic_env: npt.NDArray[np.float64], ref: npt.NDArray[np.int16], lo: int) -> None:
        """Cross-correlate mic and reference envelopes; update the delay on a clear peak."""
        b = self._block
        ref_energy = np.mean(ref.astype(np.float64).reshape(-1, b) ** 2, axis=1)
        active = ref_energy > _ACTIVE_ENERGY
        missing = np.flatnonzero(np.isnan(mic_env))
        if missing.size:  # use the newest stretch of mic without a gap, if long enough
            mic_env = mic_env[missing[-1] + 1 :]
            ref_energy = ref_energy[missing[-1] + 1 :]
        if mic_env.size < self._min_window_blocks or np.mean(active[-ref_energy.size :]) < self._min_active:
            return
        lag = estimate_lag(mic_env, _log_energy(ref_energy), self._min_lag, self._max_lag)
        with self._lock:
            if lag is None or lag[1] < self._min_corr:
                self.stats["estimates_rejected"] += 1
                return
            self.stats["estimates_accepted"] += 1
            self._estimates.append(lag[0] * b / self._rate)
            new = float(np.median(np.asarray(self._estimates)))
            new = min(self._max_delay_s, max(self._min_delay_s, new))
            self.estimated_delay_s = new
            if self._self_aligning_s is not None:
                # the engine finds the echo itself within a causal lag range: moving the reference under it
                # only makes it re-converge (measured with AEC3: ~3 s of echo), so correct only outside it
                lag_seen = new - self._delay_s + self._lead_s
                if _CAUSAL_MARGIN_S <= lag_seen <= self._self_aligning_s:
                    return
            if abs(new - self._delay_s) > self._hysteresis:
                log.debug("echo delay correction %.1f ms -> %.1f ms", self._delay_s * 1e3, new * 1e3)
                self._delay_s = new
                self.stats["delay_changes"] += 1


_DRIFT_STEP_MS = 250.0
"""A stream clock moves at most one sample per this much audio (4 samples/s at 24 kHz: ~170 ppm)."""

_CONTIGUOUS_SLACK = 2
"""Samples a capture frame may start off where the previous one ended and still count as contiguous."""

_CAUSAL_MARGIN_S = 0.005
"""A self-aligning engine is left alone while the echo lags its reference by at least this much."""

_ACTIVE_ENERGY = power_of_dbfs(-55)
"""Mean square of a block louder than -55 dBFS: the reference counts as playing."""

_FLOOR_ENERGY = power_of_dbfs(-70)


def _log_energy(energy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = np.log10(energy + _FLOOR_ENERGY)
    return result


def estimate_lag(
    mic_env: npt.NDArray[np.float64], ref_env: npt.NDArray[np.float64], min_lag: int, max_lag: int
) -> tuple[float, float] | None:
    """Lag (in blocks, sub-block by parabolic interpolation) maximising the normalised correlation.

    `mic_env` has W blocks; `ref_env` has W + max_lag - min_lag blocks starting max_lag blocks before the
    mic window, so lag L pairs mic block k with ref block k + max_lag - L. Returns (lag, correlation) or
    None if either envelope is flat.
    """
    w = mic_env.size
    if ref_env.size != w + max_lag - min_lag:
        raise ValueError("ref_env must cover the mic window plus the lag range")
    m = mic_env - mic_env.mean()
    m_norm = float(np.sqrt(np.dot(m, m)))
    if m_norm == 0.0:
        return None
    windows = np.lib.stride_tricks.sliding_window_view(ref_env, w)  # row j pairs with lag max_lag - j
    centred = windows - windows.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", centred, centred))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred @ m) / (norms * m_norm)
    corr = np.nan_to_num(corr, nan=-1.0)
    j = int(np.argmax(corr))
    peak = float(corr[j])
    frac = 0.0
    if 0 < j < corr.size - 1:
        y0, y1, y2 = float(corr[j - 1]), peak, float(corr[j + 1])
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            frac = 0.5 * (y0 - y2) / denom
    return float(max_lag - (j + frac)), peak
