"""The daemon's echo path: what the speaker played in, echo-cancelled microphone frames out.

`EchoPath` joins one `EchoReference` and one `EchoCanceller` between the Player (its writer-thread hooks
`on_written` / `on_dropped`) and the microphone path (audio/mic.py: it is the path's first stage, in the
capture thread), so every consumer of the microphone (wake VAD, pre-roll, session audio, local barge-in)
sees the cancelled signal. The engine's latency (measured at open) is kept while bypassed, so the stream
never jumps when the engine starts or stops. `check_duplex` is the start-up (and
reload) check of the echo-related settings: which engine runs, and whether local barge-in is allowed.

Cost: while nothing has played for `HOLD_S`, a frame only updates the reference timeline (~12 us); the
engine is skipped and the frame passes through a delay line of the engine's latency. Skipping the engine
for both streams together keeps its learned echo path (measured: ERLE of the next turn's first second is the
same as with silence processed).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from vatel_edge.audio.aec import EchoCanceller, EchoReference, make_echo_canceller, measure_latency, resolve_engine
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat
from vatel_edge.config import AudioConfig, Config
from vatel_edge.errors import ConfigError

log = logging.getLogger(__name__)

HOLD_S = 1.0
"""Keep running the engine this long after the last reference audio: the echo tail plus the delay range."""

CONVERGE_S = 2.0
"""Reference audio (seconds, cumulative) the engine must have processed before its output counts as
echo-free for local barge-in: AEC3 spends its first ~2 s finding the echo path (docs/ECHO.md)."""

CONVERGED_ERLE_DB = 25.0
"""...and the echo reduction it must have reached (once; latched): an engine that does not cancel this room
(speex in the PulseAudio room, docs/ECHO.md) never arms local barge-in, which then stays with the server.
A residual below QUIET_DBFS also counts (no echo path at all, e.g. headphones: nothing to reduce)."""

QUIET_DBFS = -55.0

TALKING_DBFS = -40.0
"""Only frames whose reference is at least this loud count for `erle_db` and convergence (not pauses)."""

SELF_ALIGNING_S: dict[str, float] = {"webrtc": 0.25}
"""Engines that find the echo delay themselves, and the echo lag (s) they cover: the reference is moved under
them only outside it (moving it re-costs AEC3 ~3 s of convergence, measured in the PulseAudio room)."""

_TALKING_POWER = (32768.0 * 10 ** (TALKING_DBFS / 20)) ** 2
_ERLE_SMOOTHING = 0.02  # per far-end-active frame: ~1 s memory at 20 ms frames


def check_duplex(cfg: Config) -> str | None:
    """The echo engine `cfg` selects on this machine (None: no cancellation); ConfigError if it cannot run.

    Raises ConfigError naming ``audio.echo_cancel`` when a named engine is missing, and naming
    ``session.barge_in`` when local barge-in is asked for without an echo canceller (the device's own voice
    would cut its playback).
    """
    engine = resolve_engine(cfg.audio.echo_cancel)
    if engine is None and cfg.session.barge_in in ("local", "wakeword", "both"):
        why = "is off" if cfg.audio.echo_cancel == "off" else "found no installed engine"
        raise ConfigError(
            f"session.barge_in = {cfg.session.barge_in!r} needs an echo canceller, but audio.echo_cancel = "
            f"{cfg.audio.echo_cancel!r} {why}: the local voice detector would hear the agent and cut its own "
            "playback. Use session.barge_in = 'server', or install one (docs/ECHO.md)."
        )
    return engine


def open_echo_path(audio: AudioConfig) -> EchoPath | None:
    """The echo path for ``[audio]``, or None when echo cancellation is off or no engine is installed.

    The engine's latency is measured first (on the same instance, reset afterwards), so the path delays its
    bypass by exactly as much and the stream keeps one constant lag."""
    canceller = make_echo_canceller(audio.echo_cancel, audio.frame_ms)
    if canceller is None:
        return None
    latency = measure_latency(canceller, audio.frame_ms)
    log.info("echo canceller %s delays the microphone by %d samples (%.1f ms), also while bypassed",
             canceller.name, latency, 1000.0 * latency / VATEL_FORMAT.rate)
    return EchoPath(canceller, frame_ms=audio.frame_ms, latency=latency)


class EchoPath:
    """Echo cancellation between the Player and the microphone path (see the module docstring).

    Threading: `on_written` and `on_dropped` run on the playback writer thread and only touch the
    EchoReference (which has its own lock); `process` runs in the capture thread (the microphone path);
    `close` after that thread stopped; the properties are read from either.
    If the engine fails, the path logs it once and passes frames through (`active` turns False).
    """

    def __init__(
        self,
        canceller: EchoCanceller,
        *,
        frame_ms: int,
        fmt: AudioFormat = VATEL_FORMAT,
        reference: EchoReference | None = None,
        hold_s: float = HOLD_S,
        converge_s: float = CONVERGE_S,
        latency: int = 0,
    ) -> None:
        """`latency`: the samples the engine delays its output by (aec.measure_latency); the bypass matches it."""
        self._engine: EchoCanceller | None = canceller
        self.latency = latency
        self._tail = bytes(2 * latency)  # the newest `latency` input samples: what the bypass outputs first
        self._engine_ran = False  # the previous frame went through the engine (its internal delay line is ours)
        self.name = canceller.name
        self.reference = reference or EchoReference(fmt, self_aligning_s=SELF_ALIGNING_S.get(canceller.name))
        self._nbytes = fmt.nbytes(frame_ms)
        self._frame_s = frame_ms / 1000.0
        self._silence = bytes(self._nbytes)
        self._hold_s = hold_s
        self._converge_s = converge_s
        self._last_far: float | None = None  # capture time of the newest frame with reference audio
        self._far_s = 0.0  # reference audio processed so far (seconds)
        self._converged = False
        self._mic_power = 0.0
        self._out_power = 0.0
        self.stats: dict[str, int] = {"frames": 0, "cancelled": 0, "bypassed": 0, "failures": 0}

    # ------------------------------------------------------------------ playback writer thread

    def on_written(self, pcm: bytes, t_heard: float) -> None:
        """Player.on_written: `pcm` (24 kHz mono, as written) starts sounding at `t_heard`."""
        self.reference.push(pcm, t_heard, 0.0)

    def on_dropped(self, t: float) -> None:
        """Player.on_dropped: the device buffer was dropped at `t` (barge-in); nothing after it sounds."""
        self.reference.drop_after(t)

    # ------------------------------------------------------------------ capture side

    @property
    def active(self) -> bool:
        """An engine is cancelling echo (False after close or an engine failure)."""
        return self._engine is not None

    @property
    def converged(self) -> bool:
        """The engine has processed enough reference audio to have found the echo path."""
        return self._engine is not None and self._converged

    @property
    def erle_db(self) -> float | None:
        """Recent echo reduction (mic power over output power while the reference plays), for status/logs.

        Falls in double talk (the user is not echo); None before any reference audio."""
        if self._out_power <= 0.0 or self._mic_power <= 0.0:
            return None
        return 10.0 * math.log10(self._mic_power / self._out_power)

    def process(self, frame: CaptureFrame) -> CaptureFrame:
        """`frame` with the echo of what the speaker played removed (unchanged while nothing played)."""
        self.stats["frames"] += 1
        engine = self._engine
        if len(frame.pcm) != self._nbytes:
            return frame
        if engine is None:
            return self._bypass(frame)
        ref = self.reference.frame_for(frame.t, 0.0, len(frame.pcm), mic=frame.pcm)
        far = ref != self._silence
        if far:
            self._last_far = frame.t
        elif self._last_far is None or frame.t - self._last_far > self._hold_s:
            self.stats["bypassed"] += 1
            return self._bypass(frame)
        try:
            out = engine.process(frame.pcm, ref)
        except (ValueError, RuntimeError, OSError) as exc:
            self.stats["failures"] += 1
            log.error("echo canceller %s failed (%s); passing the microphone through uncancelled", self.name, exc)
            self.close()
            return self._bypass(frame)
        if self.latency:
            if not self._engine_ran:
                # The engine's first `latency` output samples are from its last run (or zeros): the stream
                # continues with the real samples the bypass held instead.
                out = self._tail + out[len(self._tail) :]
            self._tail = frame.pcm[len(frame.pcm) - len(self._tail) :]
        self._engine_ran = True
        self.stats["cancelled"] += 1
        if far:
            self._far_s += self._frame_s
            r = np.frombuffer(ref, dtype="<i2").astype(np.float64)
            if float(np.dot(r, r)) / r.size >= _TALKING_POWER:
                self._track_erle(frame.pcm, out)
        return CaptureFrame(out, frame.t, frame.seq)

    def _bypass(self, frame: CaptureFrame) -> CaptureFrame:
        """The frame uncancelled, delayed by the engine's latency (so the stream's lag never changes)."""
        self._engine_ran = False
        if not self.latency:
            return frame
        joined = self._tail + frame.pcm
        self._tail = joined[len(frame.pcm) :]
        return CaptureFrame(joined[: len(frame.pcm)], frame.t, frame.seq)

    def _track_erle(self, mic: bytes, out: bytes) -> None:
        m = np.frombuffer(mic, dtype="<i2").astype(np.float64)
        o = np.frombuffer(out, dtype="<i2").astype(np.float64)
        a = _ERLE_SMOOTHING
        self._mic_power += a * (float(np.dot(m, m)) / m.size - self._mic_power)
        self._out_power += a * (float(np.dot(o, o)) / o.size + 1.0 - self._out_power)  # +1: digital silence
        if not self._converged and self._far_s >= self._converge_s:
            erle = self.erle_db
            quiet = self._out_power < (32768.0 * 10 ** (QUIET_DBFS / 20)) ** 2
            if quiet or (erle is not None and erle >= CONVERGED_ERLE_DB):
                self._converged = True
                log.info("echo canceller %s converged: %.0f dB echo reduction", self.name, erle or 0.0)

    def close(self) -> None:
        """Release the engine; idempotent. Frames pass through unchanged afterwards."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
