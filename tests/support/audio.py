"""Test signals and their measurement: tones, sample-countable PCM, the level of a frequency."""

from __future__ import annotations

import numpy as np

from vatel_edge.audio.format import VATEL_FORMAT

FMT = VATEL_FORMAT


def tone(freq: float, rate: int, n: int, amp: float = 16000.0) -> np.ndarray:
    """n samples of a sine at freq Hz, int16."""
    return np.rint(amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.int16)


def counting_pcm(n: int, start: int = 0) -> bytes:
    """n int16 samples whose values are their positions (mod 2**16, as signed): every sample is findable."""
    return ((np.arange(start, start + n) % 65536).astype(np.uint16).view(np.int16)).astype("<i2").tobytes()


def level_db(y: np.ndarray, freq: float, rate: int, ref: float = 16000.0) -> float:
    """Amplitude of `freq` in y (steady-state part) relative to `ref`, in dB."""
    y = y[len(y) // 4 :].astype(np.float64)
    n = np.arange(len(y))
    amp = np.abs(np.dot(y, np.exp(-2j * np.pi * freq * n / rate))) * 2 / len(y)
    return float(20 * np.log10(amp / ref + 1e-15))


def tone_level_db(x: np.ndarray, freq: float) -> float:
    """Level (dBFS, amplitude of the sinusoid) of `freq` in the whole 24 kHz recording `x`."""
    if x.size == 0:
        return -120.0
    t = np.arange(x.size) / FMT.rate
    amp = 2 * abs(np.dot(x.astype(np.float64), np.exp(-2j * np.pi * freq * t))) / x.size
    return float(20 * np.log10(max(amp, 1e-9) / 32768))
