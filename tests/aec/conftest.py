"""Shared speech material and helpers for the echo-cancellation tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import webrtcvad

from vatel_edge.audio.aec import available_engines
from vatel_edge.audio.format import AudioFormat
from vatel_edge.devkit import aec_lab

RATE = 24_000
FMT = AudioFormat(rate=RATE)
FRAME_MS = 20
VAD_FMT = AudioFormat(rate=16_000)
VAD_FRAME_MS = 30

AGENT_TEXT = (
    "Hello, I am your voice assistant. The weather today is sunny with a light breeze, and the temperature "
    "will reach twenty two degrees this afternoon. Would you like me to set a reminder for your meeting?"
)
USER_TEXT = "Stop, stop. Please turn off the lights in the kitchen."


def _speech(text: str, seconds: float, seed: int, **kw: str | int) -> npt.NDArray[np.float64]:
    try:
        return aec_lab.espeak(text, RATE, **kw)  # type: ignore[arg-type]
    except FileNotFoundError:  # no espeak-ng/sox: a speech-like signal keeps the tests meaningful
        return aec_lab.speech_like(seconds, RATE, seed=seed, f0=120.0 + 80.0 * seed)


@pytest.fixture(scope="session")
def agent_speech() -> npt.NDArray[np.float64]:
    return _speech(AGENT_TEXT, 12.0, 0)


@pytest.fixture(scope="session")
def user_speech() -> npt.NDArray[np.float64]:
    return _speech(USER_TEXT, 3.0, 1, voice="en-us+f3", wpm=170)


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
