"""Local voice activity detection for the wake trigger.

webrtcvad accepts 8/16/32/48 kHz only, so 24 kHz capture frames are decimated by 3 to 8 kHz with an
anti-aliasing filter first: webrtcvad analyses every rate at 8 kHz internally, so nothing is lost, and
an integer decimation is the cheapest filter (this runs on every frame, all day). soxr was measured as the
alternative (bench note in docs/PERFORMANCE.md): ~5 us per 20 ms frame against ~25 us here, but it streams in
bursts (HQ/MQ: ~500 samples every 3rd-4th frame, LQ every 2nd; only the cubic QQ streams evenly, without the
anti-aliasing), which would move every VAD decision, the speech onset and the wake 40-60 ms later. webrtcvad calls loud
stationary noise speech, so an energy gate (`wake.min_level_dbfs`) vetoes quiet frames, and a wake
needs `wake.min_speech_ms` of voiced audio within a sliding `wake.window_ms`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat, level_dbfs
from vatel_edge.audio.resample import Resampler
from vatel_edge.config import WakeConfig

VAD_RATE = 8_000
VAD_FORMAT = AudioFormat(rate=VAD_RATE)


@dataclass(frozen=True)
class VadParams:
    """What a VoiceDetector decides by (the wake section's VAD keys, or the local barge-in variant)."""

    aggressiveness: int = 2  # webrtcvad 0 (lenient) .. 3 (strict)
    frame_ms: int = 30  # webrtcvad frame: 10, 20 or 30 ms
    min_speech_ms: int = 240  # voiced audio needed within window_ms to trigger
    window_ms: int = 480
    min_level_dbfs: float = -45.0  # energy gate: quieter VAD frames are never speech

    @classmethod
    def from_wake(cls, wake: WakeConfig) -> VadParams:
        """The wake trigger's parameters."""
        return cls(wake.vad_aggressiveness, wake.vad_frame_ms, wake.min_speech_ms, wake.window_ms,
                   wake.min_level_dbfs)

    @classmethod
    def for_barge_in(cls, wake: WakeConfig, min_speech_ms: int) -> VadParams:
        """Local barge-in: the wake VAD with its own debounce (session.barge_in_min_speech_ms)."""
        return cls(wake.vad_aggressiveness, wake.vad_frame_ms, min_speech_ms, max(wake.window_ms, min_speech_ms),
                   wake.min_level_dbfs)


@dataclass(frozen=True)
class VadResult:
    """The decision for one capture frame."""

    voiced: bool  # at least one VAD frame inside it was speech (and passed the energy gate)
    level_dbfs: float  # level of the capture frame
    triggered: bool  # the min_speech_ms-within-window_ms rule fired at this frame


class VoiceDetector:
    """Feed 24 kHz mono PCM16 capture frames of any length; get a decision per frame."""

    def __init__(self, params: VadParams, in_format: AudioFormat = VATEL_FORMAT) -> None:
        self.params = params
        self._min_level = params.min_level_dbfs
        self._vad = webrtcvad.Vad(params.aggressiveness)
        self._resampler = Resampler(in_format.rate, VAD_RATE)
        self._frame_samples = VAD_FORMAT.samples(params.frame_ms)
        self._pending = np.zeros(0, dtype=np.int16)
        window_frames = max(1, params.window_ms // params.frame_ms)
        self._window: deque[bool] = deque(maxlen=window_frames)
        self._needed = max(1, math.ceil(params.min_speech_ms / params.frame_ms))

    def reset(self) -> None:
        """Forget the window (after a session), so old speech cannot trigger a new wake."""
        self._window.clear()
        self._pending = np.zeros(0, dtype=np.int16)

    def process(self, pcm: bytes) -> VadResult:
        """Run the detector over one capture frame."""
        samples = np.frombuffer(pcm, dtype="<i2")
        frame_level = level_dbfs(samples)
        down = self._resampler.process(samples)
        buf = np.concatenate((self._pending, down)) if self._pending.size else down
        voiced_any = False
        triggered = False
        n = self._frame_samples
        usable = (buf.size // n) * n
        for start in range(0, usable, n):
            chunk = buf[start : start + n]
            voiced = level_dbfs(chunk) >= self._min_level and self._vad.is_speech(
                chunk.astype("<i2").tobytes(), VAD_RATE
            )
            self._window.append(voiced)
            voiced_any = voiced_any or voiced
            if voiced and sum(self._window) >= self._needed:
                triggered = True
        self._pending = buf[usable:].copy()
        return VadResult(voiced=voiced_any, level_dbfs=frame_level, triggered=triggered)

    def __call__(self, pcm: bytes) -> tuple[bool, float]:
        """(voiced, level_dbfs): the shape `vatel-edge mic-test` wants."""
        r = self.process(pcm)
        return r.voiced, r.level_dbfs
