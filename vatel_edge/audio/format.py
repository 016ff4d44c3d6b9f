"""PCM formats and the byte sizes derived from them (no literal sizes elsewhere)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_WIDTH = 2  # PCM16
VATEL_RATE = 24_000  # PROTOCOL.md: PCM16 LE mono 24 kHz both ways


@dataclass(frozen=True)
class AudioFormat:
    """A PCM16 little-endian stream: rate in Hz and interleaved channels."""

    rate: int = VATEL_RATE
    channels: int = 1
    width: int = SAMPLE_WIDTH

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample frame (all channels)."""
        return self.width * self.channels

    def samples(self, ms: float) -> int:
        """Sample frames in `ms` milliseconds."""
        return round(self.rate * ms / 1000.0)

    def nbytes(self, ms: float) -> int:
        """Bytes in `ms` milliseconds."""
        return self.samples(ms) * self.bytes_per_frame

    def duration_ms(self, nbytes: int) -> float:
        """Milliseconds of audio in `nbytes` bytes."""
        return 1000.0 * nbytes / (self.bytes_per_frame * self.rate)


VATEL_FORMAT = AudioFormat()


SILENCE_DBFS = -96.0  # the floor: digital silence and anything quieter
_FULL_SCALE = 32768.0


def power_of_dbfs(dbfs: float) -> float:
    """Mean square of PCM16 samples whose RMS level is `dbfs` (for comparing powers with a level)."""
    return (_FULL_SCALE * 10 ** (dbfs / 20)) ** 2


def level_dbfs(pcm: bytes | npt.NDArray[np.int16]) -> float:
    """RMS level of PCM16 samples (bytes or int16 array) in dBFS, never below SILENCE_DBFS."""
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2") if isinstance(pcm, bytes) else pcm
    if x.size == 0:
        return SILENCE_DBFS
    rms = math.sqrt(float(np.mean(np.square(x.astype(np.float64)))))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / _FULL_SCALE))
