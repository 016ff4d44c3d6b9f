"""PCM formats and the byte sizes derived from them (no literal sizes elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass

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
