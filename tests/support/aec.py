"""Formats and helpers of the echo-cancellation tests: engine params, webrtcvad decisions on 24 kHz audio."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import webrtcvad

from vatel_edge.audio.aec import available_engines
from vatel_edge.audio.format import AudioFormat

RATE = 24_000
FMT = AudioFormat(rate=RATE)
FRAME_MS = 20
VAD_FMT = AudioFormat(rate=16_000)
VAD_FRAME_MS = 30


def engine_params() -> list[object]:
    """One pytest param per known engine, skipped with the reason when it is not installed here."""
    installed = available_engines()
    hints = {"webrtc": "pip install pywebrtc-audio", "speex": "apt-get install libspeexdsp1"}
    return [
        pytest.param(kind, marks=pytest.mark.skipif(kind not in installed, reason=f"{kind} not installed ({hint})"))
        for kind, hint in hints.items()
    ]


def to_16k(x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """24 -> 16 kHz: upsample by 2 (zero stuffing), low-pass at 7.2 kHz (windowed sinc), keep every 3rd sample."""
    up = np.zeros(x.size * 2)
    up[::2] = x.astype(np.float64) * 2
    taps = np.arange(-96, 97)
    h = np.sinc(2 * 7200 / 48000 * taps) * (2 * 7200 / 48000) * np.hamming(taps.size)
    y = np.convolve(up, h, mode="same")[::3]
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def vad_flags(x24: npt.NDArray[np.int16], aggressiveness: int = 2) -> npt.NDArray[np.bool_]:
    """webrtcvad's decision per 30 ms frame of a 24 kHz signal (after decimation to 16 kHz)."""
    vad = webrtcvad.Vad(aggressiveness)
    x = to_16k(x24)
    n = VAD_FMT.samples(VAD_FRAME_MS)
    return np.array(
        [vad.is_speech(x[i * n : (i + 1) * n].astype("<i2").tobytes(), VAD_FMT.rate) for i in range(x.size // n)]
    )
