"""Audio test helpers (the asoundrc and the PulseAudio fixture are suite-wide, in tests/conftest.py)."""

from __future__ import annotations

import numpy as np


def tone(freq: float, rate: int, n: int, amp: float = 16000.0) -> np.ndarray:
    """n samples of a sine at freq Hz, int16."""
    return np.rint(amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.int16)


def counting_pcm(n: int, start: int = 0) -> bytes:
    """n int16 samples whose values are their positions (mod 2**16, as signed): every sample is findable."""
    return ((np.arange(start, start + n) % 65536).astype(np.uint16).view(np.int16)).astype("<i2").tobytes()
