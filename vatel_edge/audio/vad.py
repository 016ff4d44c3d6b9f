"""Local voice activity detection for the wake trigger.

webrtcvad accepts 8/16/32/48 kHz only, so 24 kHz capture frames are decimated by 3 to 8 kHz with an
anti-aliasing filter first: webrtcvad analyses every rate at 8 kHz internally, so nothing is lost, and
an integer decimation is the cheapest filter (this runs on every frame, all day); it is polyphase (only
the kept outputs are computed). soxr was measured as the alternative (bench note in docs/PERFORMANCE.md):
~5 us per 20 ms frame against ~15-25 us here, but it streams in bursts (HQ/MQ: ~500 samples every 3rd-4th
frame, LQ every 2nd; only the cubic QQ streams evenly, without the anti-aliasing), which would move every
VAD decision, the speech onset and the wake 40-60 ms later. `process_batch` decides several capture
frames in one call with the same decisions as frame by frame: the listening thread hands over a drain of
the device at a time, and fewer numpy calls per wake-up is what saves CPU there. webrtcvad calls loud
stationary noise speech, so an energy gate (`wake.min_level_dbfs`) vetoes quiet frames, and a wake
needs `wake.min_speech_ms` of voiced audio within a sliding `wake.window_ms`.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import webrtcvad

from vatel_edge.audio.format import SILENCE_DBFS, VATEL_FORMAT, AudioFormat, level_dbfs, power_of_dbfs
from vatel_edge.audio.resample import Resampler
from vatel_edge.config import WakeConfig

VAD_RATE = 8_000
VAD_FORMAT = AudioFormat(rate=VAD_RATE)


def _powers(x: npt.NDArray[np.int16], rows: int) -> npt.NDArray[np.float64]:
    """Mean square of each of `rows` equal consecutive parts of `x`."""
    m = x.reshape(rows, -1).astype(np.float64)
    power: npt.NDArray[np.float64] = np.einsum("ij,ij->i", m, m) / m.shape[1]
    return power


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
        # the energy gate as a power: level_dbfs(chunk) >= min_level_dbfs (level_dbfs floors at SILENCE_DBFS)
        self._gate_power = -1.0 if params.min_level_dbfs <= SILENCE_DBFS else power_of_dbfs(params.min_level_dbfs)

    def reset(self) -> None:
        """Forget the window (after a session), so old speech cannot trigger a new wake."""
        self._window.clear()
        self._pending = np.zeros(0, dtype=np.int16)

    def process(self, pcm: bytes) -> VadResult:
        """Run the detector over one capture frame."""
        return self.process_batch([pcm])[0]

    def process_batch(self, pcms: list[bytes]) -> list[VadResult]:
        """Run the detector over consecutive capture frames at once: the same decisions as `process` on each
        in turn (each VAD frame counts in the capture frame its last sample came in), with one resampler call
        and one energy-gate computation for the whole batch. The listening thread hands over a drain of
        several frames at a time, and right after its sleep each numpy call costs several times its hot-loop
        time (measured: docs/PERFORMANCE.md, listening CPU), so fewer calls per wake-up is what saves CPU."""
        if not pcms:
            return []
        lengths = [len(p) // 2 for p in pcms]
        samples = np.frombuffer(b"".join(pcms), dtype="<i2")
        counts = self._resampler.output_counts(lengths)
        down = self._resampler.process(samples)
        buf = np.concatenate((self._pending, down)) if self._pending.size else down
        n = self._frame_samples
        chunks = buf.size // n
        voiced = [False] * len(pcms)
        triggered = [False] * len(pcms)
        if chunks:
            gated = _powers(buf[: chunks * n], chunks) >= self._gate_power if self._gate_power >= 0 else None
            raw = buf[: chunks * n].astype("<i2").tobytes()
            ends = list(itertools.accumulate(counts, initial=self._pending.size))[1:]  # each frame's end in buf
            for j in range(chunks):
                loud = gated is None or bool(gated[j])
                v = loud and self._vad.is_speech(raw[2 * n * j : 2 * n * (j + 1)], VAD_RATE)
                self._window.append(v)
                if v:
                    i = bisect.bisect_left(ends, n * (j + 1))  # the frame this VAD frame's last sample came in
                    voiced[i] = True
                    if sum(self._window) >= self._needed:
                        triggered[i] = True
        self._pending = buf[chunks * n :].copy()
        return [VadResult(voiced=voiced[i], triggered=triggered[i]) for i in range(len(pcms))]

    def __call__(self, pcm: bytes) -> tuple[bool, float]:
        """(voiced, level_dbfs): the shape `vatel-edge mic-test` wants."""
        return self.process(pcm).voiced, level_dbfs(pcm)
