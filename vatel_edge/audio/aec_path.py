"""The daemon's echo path: what the speaker played in, echo-cancelled microphone frames out.

`EchoPath` joins one `EchoReference` and one `EchoCanceller` between the Player (its writer-thread hooks
`on_written` / `on_dropped`) and the microphone path (audio/mic.py: it is the path's first stage, in the
capture thread), so every consumer of the microphone (wake VAD, pre-roll, session audio, local barge-in)
sees the cancelled signal. The engine's latency (measured at open, also when longer than a frame) is kept
while bypassed, so the stream never jumps when the engine starts or stops. An adaptive engine (AEC3, speex)
counts as converged once its echo reduction shows it (the rules below); one without an adaptive filter
(DTLN-aec: `needs_convergence = False`) from its first frame. `check_duplex` is the start-up (and
reload) check of the echo-related settings: which engine runs, and whether local barge-in is allowed.

Cost: while nothing has played for `HOLD_S`, a frame only updates the reference timeline (~12 us); the
engine is skipped and the frame passes through a delay line of the engine's latency. Skipping the engine
for both streams together keeps its learned echo path (measured: ERLE of the next turn's first second is the
same as with silence processed).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque

import numpy as np

from vatel_edge.audio.aec import (
    LEAD_S,
    EchoCanceller,
    EchoReference,
    make_echo_canceller,
    measure_latency,
    resolve_engine,
)
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat, power_of_dbfs
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

QUARTILE_FRAMES = 50
"""The other way to reach CONVERGED_ERLE_DB after CONVERGE_S: the upper quartile of the per-frame echo
reduction (mic over output power) over the last QUARTILE_FRAMES frames with a loud reference (1 s of 20 ms
frames). The user talking over the agent from its first word keeps the smoothed figure low (what the output
keeps of the user counts as residual echo), while the frames between the user's syllables show what the
canceller removes. A loud user lowers these frames' figures too, so a user cannot make a leaking canceller
look converged. Measured offline (bench/double_talk.py --first-turn, AEC3, the reverberant room, the user at
1.5 m from the turn's start): converged 1.98 s into the turn instead of 5.68 s, 11/57 user blocks reached
the server instead of 4/57, and 0 of 129 echo-only frames after it looked like speech (docs/ECHO.md)."""

COLLAPSED_ERLE_DB = 10.0
COLLAPSED_S = 2.0
"""A converged canceller whose echo reduction stays below COLLAPSED_ERLE_DB for COLLAPSED_S of agent speech
while its output resembles the reference (echo_likeness: not the user talking over the agent) has
collapsed (issue 14 saw AEC3 fall to 1-8 dB on later turns): the engine is reset and the convergence latch
dropped, so 'auto' mutes the microphone during agent audio and local barge-in disarms until it converges
again, instead of streaming the agent's own voice. Counted as `recoveries` in the stats."""

QUIET_RUN_S = 0.4
"""The other way to converge, without waiting for CONVERGE_S: the residual stayed below QUIET_DBFS this long
without a break, late in a stretch of agent speech (see ECHO_LEAD_S): either there is no echo path (a
headset, a speaker far away) or it is cancelled. With no echo path and a user talking over the agent, a pause
of QUIET_RUN_S is enough; the smoothed residual of the CONVERGE_S rule needs ~1 s of quiet."""

ECHO_GAP_S = 0.4
"""A stretch of agent speech: loud reference frames no further apart than this."""

ECHO_LEAD_S = 0.8
"""Quiet frames count only this long after the stretch began: an echo arriving up to this late behind the
reference (acoustics plus device buffering the playback clock does not see) is in the microphone by then.
Measured: in the PulseAudio room of tests/daemon/test_room_speech.py the first 0.4 s of agent audio had a quiet
residual with a real echo path (a rule without this lead concluded 'no echo' there)."""

TALKING_DBFS = -40.0
"""Only frames whose reference is at least this loud count for `erle_db` and convergence (not pauses)."""

ECHO_LIKE_CORRELATION = 0.15
"""`echo_likeness` at or above this: what the microphone path just heard is the agent's own voice leaking
through the canceller, not the user. Measured offline (tests/aec/test_path.py checks one case of each):
with pre-emphasis over 0.5 s, six recorded human speakers against the agent's voice (independent speech)
reached at most 0.11 (99th percentile 0.10); the webrtc engine's leaking residual after an echo path jump
(a delay line, the pyroomacoustics room) 0.08-0.28, the uncancelled room echo 0.81-0.86. The threshold
favours the user: a weak leak can pass (it then needs the VAD's debounce too), the user is not vetoed."""

ECHO_LIKE_WINDOW_S = 0.5
ECHO_LIKE_MAX_LAG_S = 0.35

SELF_ALIGNING_S: dict[str, float] = {"webrtc": 0.25}
"""Engines that find the echo delay themselves, and the echo lag (s) they cover: the reference is moved under
them only outside it (moving it re-costs AEC3 ~3 s of convergence, measured in the PulseAudio room)."""

REFERENCE_LEAD_S: dict[str, float] = {"dtln": 0.04}
"""Engines whose reference must lead its echo by more than EchoReference's default (LEAD_S, 20 ms), and by
how much.
DTLN-aec (a causal model trained on loopback that leads the echo) loses the user when the reference lags the
echo: replayed offline on a real-time room recording (docs/ECHO.md), 16/73 user blocks with the reference 10 ms
late, 45/73 exactly aligned, 57-59/73 leading by 10-40 ms, 48/73 by 80 ms. 40 ms keeps it leading when the
delay estimate is off or not yet made (the rig's echo came 5-34 ms after the playback clock's prediction)."""

_TALKING_POWER = power_of_dbfs(TALKING_DBFS)
_QUIET_POWER = power_of_dbfs(QUIET_DBFS)
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


def _learned_with(audio: AudioConfig) -> AudioConfig:
    """The [audio] settings what an engine learned depends on: all but the ones that leave the devices, their
    timing and the engine as they were: the software volume is in the reference (it holds the samples as
    written, after the gain), the prebuffer and the capture queue are before the device or after the path."""
    return dataclasses.replace(audio, volume=1.0, prebuffer_ms=0, capture_buffer_frames=0,
                               mic_during_playback="auto")


class EchoKeeper:
    """The daemon's echo path across SIGHUP reloads, so a reload does not bring back the deaf first turn.

    A reload rebuilds the runtime (player, capture, microphone path); a fresh engine would spend the next
    agent turn finding the echo path again, with `mic_during_playback = "auto"` muting the microphone until it
    has (the first turn after start measured ~5.8 s in the reverberant room, docs/ECHO.md). So the path, with
    what its engine learned and its convergence, is kept when the new config leaves the settings it learned
    with unchanged (`_learned_with`: the devices, their buffers and periods, the frame length, the engine);
    otherwise, or after an engine failure, the old one is closed and a new one opened. Owned by the daemon,
    which closes it when it stops; open and close run on the event loop between runtimes (no thread of the
    old runtime is running then)."""

    def __init__(self) -> None:
        self._path: EchoPath | None = None
        self._audio: AudioConfig | None = None

    def open(self, audio: AudioConfig) -> EchoPath | None:
        """The echo path for `audio`: the kept one if it still fits (resumed for new streams), else a new one."""
        learned = _learned_with(audio)
        path = self._path
        if path is not None and path.active and learned == self._audio:
            path.resume()
            log.info("echo canceller %s kept across the reload (converged: %s)", path.name,
                     "yes" if path.converged else "no")
            return path
        self.close()
        self._path, self._audio = open_echo_path(audio), learned
        return self._path

    def close(self) -> None:
        """Close the kept path (the daemon stops); idempotent."""
        path, self._path, self._audio = self._path, None, None
        if path is not None:
            path.close()


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
        quartile_frames: int = QUARTILE_FRAMES,
    ) -> None:
        """`latency`: the samples the engine delays its output by (aec.measure_latency); the bypass matches it.
        `quartile_frames`: the window of the QUARTILE_FRAMES rule (0: the smoothed figure only, for benches)."""
        self._engine: EchoCanceller | None = canceller
        self.latency = latency
        self._tail = bytes(2 * latency)  # the newest `latency` input samples: what the bypass outputs first
        # bytes of engine output still to replace with held samples: after the engine (re)starts, its first
        # `latency` output samples are from its last run (or zeros); any latency, also longer than a frame
        self._stale = len(self._tail)
        self.name = canceller.name
        self.reference = reference or EchoReference(fmt, self_aligning_s=SELF_ALIGNING_S.get(canceller.name),
                                                    lead_s=REFERENCE_LEAD_S.get(canceller.name, LEAD_S))
        self._nbytes = fmt.nbytes(frame_ms)
        self._frame_s = frame_ms / 1000.0
        self._silence = bytes(self._nbytes)
        self._hold_s = hold_s
        self._converge_s = converge_s
        self._last_far: float | None = None  # capture time of the newest frame with reference audio
        self._far_s = 0.0  # reference audio processed so far (seconds)
        # an engine without an adaptive filter (DTLN-aec) cancels from its first frame: nothing to wait for
        self._adaptive: bool = getattr(canceller, "needs_convergence", True)
        self._converged = not self._adaptive
        self._mic_power = 0.0
        self._out_power = 0.0
        # dB, one per loud-reference frame; filled from the first one, so the window is whole at CONVERGE_S
        self._frame_erle: deque[float] = deque(maxlen=max(0, quartile_frames))
        self._last_talking: float | None = None  # capture time of the newest frame with loud reference audio
        self._talk_since = 0.0  # capture time the current stretch of agent speech began
        self._quiet_run_s = 0.0
        keep = math.ceil((ECHO_LIKE_WINDOW_S + ECHO_LIKE_MAX_LAG_S) / self._frame_s)
        self._recent_out: deque[bytes] = deque(maxlen=keep)  # the newest output frames, for echo_likeness
        self._recent_ref: deque[bytes] = deque(maxlen=keep)  # ...and the reference frames they were cancelled with
        self.echo_like_threshold = ECHO_LIKE_CORRELATION  # read at construction (bench/self_interruption.py)
        self._collapsed_s = 0.0
        # barge_in_vetoes: local barge-in detections dropped as echo (mic.py); recoveries: COLLAPSED_S resets
        self.stats: dict[str, int] = {"frames": 0, "cancelled": 0, "bypassed": 0, "failures": 0,
                                     "barge_in_vetoes": 0, "recoveries": 0}

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
            held = self._tail + frame.pcm  # the held samples, then this frame: the bypass's stream
            if self._stale:
                # The engine's first `latency` output samples are from its last run (or zeros): the stream
                # continues with the real samples the bypass held instead.
                k = min(self._stale, len(out))
                out = held[:k] + out[k:]
                self._stale -= k
            self._tail = held[len(frame.pcm) :]
        self.stats["cancelled"] += 1
        if far or not self._converged:
            # the mean powers of the three signals in one pass (per-frame numpy calls are what costs here)
            x = np.frombuffer(frame.pcm + out + ref, dtype="<i2").astype(np.float64).reshape(3, -1)
            p_mic, p_out, p_ref = (float(v) for v in np.einsum("ij,ij->i", x, x) / x.shape[1])
            if far:
                self._far_s += self._frame_s
                if p_ref >= _TALKING_POWER:
                    if self._last_talking is None or frame.t - self._last_talking > ECHO_GAP_S:
                        self._talk_since = frame.t
                    self._last_talking = frame.t
                    self._track_erle(p_mic, p_out)
            if not self._converged:
                self._watch_quiet(frame.t, p_out)
        self._recent_out.append(out)
        self._recent_ref.append(ref)
        return CaptureFrame(out, frame.t, frame.seq)

    def resembles_echo(self) -> bool:
        """What the path just output is the agent's own voice leaking through (echo_likeness at or above
        ECHO_LIKE_CORRELATION)."""
        return self.echo_likeness() >= self.echo_like_threshold

    def echo_likeness(self) -> float:
        """How much the last ECHO_LIKE_WINDOW_S of output resembles the reference at some lag up to
        ECHO_LIKE_MAX_LAG_S (the peak normalised cross-correlation of the pre-emphasised signals, 0..1): echo
        leaking through the canceller is a filtered copy of the reference; the user's voice is not. 0.0
        without enough recent frames (after start); the window runs on through bypassed frames, so the start of
        an agent turn is judged against the quiet before it.

        For the local barge-in decision: called in the capture thread only when a detector fires."""
        n_frames = round(ECHO_LIKE_WINDOW_S / self._frame_s)
        if len(self._recent_out) < n_frames:
            return 0.0
        # pre-emphasis (first difference): speech's strong low frequencies correlate by chance between talkers
        o = np.diff(np.frombuffer(b"".join(list(self._recent_out)[-n_frames:]), dtype="<i2").astype(np.float64))
        r = np.diff(np.frombuffer(b"".join(self._recent_ref), dtype="<i2").astype(np.float64))
        lags = r.size - o.size
        size = 1 << (r.size + o.size - 1).bit_length()
        c = np.fft.irfft(np.fft.rfft(r, size) * np.conj(np.fft.rfft(o, size)), size)[: lags + 1]
        energy = np.concatenate(([0.0], np.cumsum(r * r)))
        norms = np.sqrt(energy[o.size : o.size + lags + 1] - energy[: lags + 1]) * math.sqrt(float(np.dot(o, o)))
        ok = norms > 1e-6
        if not ok.any():
            return 0.0
        return float(np.max(np.abs(c[ok]) / norms[ok]))

    def _watch_quiet(self, t: float, p_out: float) -> None:
        """The QUIET_RUN_S rule: count the unbroken run of quiet residual frames late in agent speech
        (`p_out`: the output frame's mean power)."""
        if self._last_talking is None or t - self._last_talking > ECHO_GAP_S:
            self._quiet_run_s = 0.0
            return
        if t - self._talk_since < ECHO_LEAD_S:
            return
        if p_out >= _QUIET_POWER:
            self._quiet_run_s = 0.0
            return
        self._quiet_run_s += self._frame_s
        if self._quiet_run_s >= QUIET_RUN_S - 1e-9:
            self._converged = True
            log.info("echo canceller %s converged: no echo in the microphone for %.1f s of agent audio",
                     self.name, self._quiet_run_s)

    def _bypass(self, frame: CaptureFrame) -> CaptureFrame:
        """The frame uncancelled, delayed by the engine's latency (so the stream's lag never changes)."""
        self._stale = len(self._tail)
        if self.latency:
            joined = self._tail + frame.pcm
            self._tail = joined[len(frame.pcm) :]
            frame = CaptureFrame(joined[: len(frame.pcm)], frame.t, frame.seq)
        # the echo_likeness window runs on through the bypass (the output, nothing playing), so it can judge the
        # first frames of the next agent turn: measured in the real-time room, AEC3 resuming after a bypass
        # let the first ~100 ms of a turn's echo through, and local barge-in cut 2-3 of 4 turns at 0.12-0.28 s
        # while an emptied window could not veto (echo_likeness 0.0 for its first 0.5 s)
        self._recent_out.append(frame.pcm)
        self._recent_ref.append(self._silence)
        return frame

    def _track_erle(self, p_mic: float, p_out: float) -> None:
        """Smooth the mic and output frame powers (mean square) into the echo reduction figure."""
        a = _ERLE_SMOOTHING
        self._mic_power += a * (p_mic - self._mic_power)
        self._out_power += a * (p_out + 1.0 - self._out_power)  # +1: digital silence
        erle = self.erle_db
        if self._converged:
            self._watch_collapse(erle)
            return
        frames = self._frame_erle
        frames.append(10.0 * math.log10((p_mic + 1.0) / (p_out + 1.0)))
        if self._far_s >= self._converge_s:
            quiet = self._out_power < _QUIET_POWER
            full = 0 < len(frames) == frames.maxlen
            upper = sorted(frames)[len(frames) * 3 // 4] if full else None
            if quiet or (erle is not None and erle >= CONVERGED_ERLE_DB):
                self._converged = True
                log.info("echo canceller %s converged: %.0f dB echo reduction", self.name, erle or 0.0)
            elif upper is not None and upper >= CONVERGED_ERLE_DB:
                self._converged = True
                log.info("echo canceller %s converged: %.0f dB echo reduction in the upper quartile of the last "
                         "second's frames (smoothed: %.0f dB)", self.name, upper, erle or 0.0)

    def _watch_collapse(self, erle: float | None) -> None:
        """COLLAPSED_ERLE_DB / COLLAPSED_S: reset a converged engine that lets the agent's voice through."""
        if erle is None or erle >= COLLAPSED_ERLE_DB or self._out_power < _QUIET_POWER:
            self._collapsed_s = 0.0
            return
        self._collapsed_s += self._frame_s
        if self._collapsed_s < COLLAPSED_S:
            return
        self._collapsed_s = 0.0
        if not self.resembles_echo():  # the user talking over the agent also lowers the figure
            return
        self.stats["recoveries"] += 1
        log.log(logging.WARNING if self.stats["recoveries"] == 1 else logging.DEBUG,
                "echo canceller %s collapsed (%.0f dB echo reduction for %.0f s of agent speech): restarting it; "
                "the microphone is muted during agent audio until it converges again (later ones: counted as "
                "recoveries in the echo stats)", self.name, erle, COLLAPSED_S)
        engine = self._engine
        if engine is not None:
            engine.reset()
        self._stale = len(self._tail)  # the engine's delay line restarted: the next frames take the held samples
        self._converged = not self._adaptive
        self._far_s = 0.0
        self._quiet_run_s = 0.0
        self._mic_power = self._out_power = 0.0
        self._frame_erle.clear()

    def resume(self) -> None:
        """Continue with a new player and capture stream (EchoKeeper, after a reload), keeping what the engine
        learned, the reference's delay estimate and the convergence: what belonged to the old streams goes
        (the bypass's held samples, the echo_likeness window, the stretch of agent speech being watched)."""
        self._tail = bytes(len(self._tail))
        self._stale = len(self._tail)
        self._last_far = self._last_talking = None
        self._quiet_run_s = self._collapsed_s = 0.0
        self._recent_out.clear()
        self._recent_ref.clear()
        self._frame_erle.clear()

    def close(self) -> None:
        """Release the engine; idempotent. Frames pass through unchanged afterwards."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
