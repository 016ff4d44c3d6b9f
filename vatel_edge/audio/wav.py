"""WAV files for feedback sounds and tests: load any PCM16 WAV as 24 kHz mono, save 24 kHz mono."""

from __future__ import annotations

import os
import wave

import numpy as np

from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat
from vatel_edge.audio.resample import Resampler, to_mono
from vatel_edge.errors import AudioDeviceError


def load_wav(path: str | os.PathLike[str]) -> bytes:
    """PCM16 LE mono 24 kHz from a PCM16 WAV of any rate and channel count (channels averaged)."""
    try:
        with wave.open(os.fspath(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioDeviceError(f"cannot read WAV {os.fspath(path)!r}: {exc}") from None
    if width != VATEL_FORMAT.width:
        raise AudioDeviceError(f"WAV {os.fspath(path)!r}: {8 * width}-bit samples; only 16-bit PCM is supported")
    src = AudioFormat(rate=rate, channels=channels)
    samples = np.frombuffer(raw[: len(raw) - len(raw) % src.bytes_per_frame], dtype="<i2")
    mono = to_mono(samples, channels, None)
    if rate != VATEL_FORMAT.rate:
        resampler = Resampler(rate, VATEL_FORMAT.rate)
        # flush the filter delay with silence so the end of the sound is not cut off
        flush = np.zeros(src.samples(1000 * resampler.delay_s * 2) + 1, dtype=np.int16)
        out = np.concatenate([resampler.process(mono), resampler.process(flush)])
        delay = VATEL_FORMAT.samples(1000 * resampler.delay_s)
        want = round(len(mono) * VATEL_FORMAT.rate / rate)
        mono = out[delay : delay + want]
    return mono.astype("<i2").tobytes()


def save_wav(path: str | os.PathLike[str], pcm: bytes, fmt: AudioFormat = VATEL_FORMAT) -> None:
    """Write PCM16 LE `pcm` in format `fmt` as a WAV file."""
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(fmt.channels)
        w.setsampwidth(fmt.width)
        w.setframerate(fmt.rate)
        w.writeframes(pcm)
