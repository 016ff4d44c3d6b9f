"""WebRTC AEC3 echo canceller through the optional ``pywebrtc-audio`` wheel (imported lazily)."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import numpy as np

from vatel_edge.audio.format import AudioFormat
from vatel_edge.errors import ConfigError

log = logging.getLogger(__name__)

_CHUNK_MS = 10  # AEC3 works on 10 ms chunks; the binding splits longer frames and zero-pads a remainder


def available() -> bool:
    """True if ``pywebrtc_audio`` imports here."""
    try:
        importlib.import_module("pywebrtc_audio")
    except ImportError as exc:  # absent, or present but unusable (e.g. a wheel for another libc)
        log.debug("pywebrtc_audio not usable: %s", exc)
        return False
    return True


class WebRtcEchoCanceller:
    """AEC3 (linear filter + delay estimator + residual suppressor) with the high-pass filter it implies.

    Noise suppression and AGC stay off: the server gets the user's voice as the mic heard it.
    """

    name = "webrtc"

    def __init__(self, fmt: AudioFormat, frame_ms: int) -> None:
        if frame_ms % _CHUNK_MS:
            raise ConfigError(f"audio.frame_ms = {frame_ms}: the webrtc echo canceller needs a multiple of 10 ms")
        if fmt.channels != 1 or fmt.width != 2:
            raise ValueError("WebRtcEchoCanceller takes PCM16 mono")
        pywebrtc_audio = importlib.import_module("pywebrtc_audio")  # optional extra: typed loosely on purpose
        self._nbytes = fmt.nbytes(frame_ms)
        # AudioProcessor accepts any rate (resampled inside to 16/32/48 kHz); EchoCanceller only 16/32/48 kHz.
        self._apm: Any = pywebrtc_audio.AudioProcessor(sample_rate=fmt.rate, num_channels=1, echo_cancellation=True)

    def process(self, mic: bytes, ref: bytes) -> bytes:
        if len(mic) != self._nbytes or len(ref) != self._nbytes:
            raise ValueError(f"echo canceller expects {self._nbytes}-byte frames, got {len(mic)} and {len(ref)}")
        if self._apm is None:
            raise RuntimeError("echo canceller is closed")
        near = np.frombuffer(mic, dtype="<i2")
        far = np.frombuffer(ref, dtype="<i2")
        out = self._apm.process(near, far)
        return bytes(np.asarray(out, dtype="<i2").tobytes())

    def reset(self) -> None:
        if self._apm is not None:
            self._apm.reset()

    def close(self) -> None:
        self._apm = None
