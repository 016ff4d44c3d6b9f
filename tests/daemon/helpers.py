"""Shared pieces of the daemon tests: a config on the test devices, speech and tones, spectral checks."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.wav import load_wav
from vatel_edge.config import Config, config_from_dict

FMT = VATEL_FORMAT


def speech(name: str) -> bytes:
    """A shipped espeak-ng utterance as 24 kHz mono PCM16."""
    with resources.as_file(resources.files("vatel_edge") / "data" / name) as path:
        return load_wav(path)


def agent_tone(ms: float, freq: float, level_dbfs: float = -12.0) -> bytes:
    """A steady tone (agent speech stand-in whose presence in a recording is easy to measure)."""
    n = FMT.samples(ms)
    amp = 32767 * 10 ** (level_dbfs / 20)
    return np.rint(amp * np.sin(2 * np.pi * freq * np.arange(n) / FMT.rate)).astype("<i2").tobytes()


def tone_level_db(x: np.ndarray, freq: float) -> float:
    """Level (dBFS, amplitude of the sinusoid) of `freq` in the whole recording `x`."""
    if x.size == 0:
        return -120.0
    t = np.arange(x.size) / FMT.rate
    amp = 2 * abs(np.dot(x.astype(np.float64), np.exp(-2j * np.pi * freq * t))) / x.size
    return float(20 * np.log10(max(amp, 1e-9) / 32768))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def daemon_config(tmp_path: Path, base_url: str, agent_id: str, **overrides: Any) -> Config:
    """A daemon config on the real-time test devices with a fake-GPIO tool; sections overridable."""
    raw: dict[str, Any] = {
        "vatel": {"agent_id": agent_id, "base_url": base_url},
        "audio": {
            "capture_device": "test_mic",
            "playback_device": "test_spk",
            "mic_during_playback": "stream",
            "echo_cancel": "off",
        },
        "wake": {"mode": "vad", "preroll_ms": 500, "cooldown_ms": 300},
        "session": {"idle_timeout_s": 10.0},
        "control": {"socket_path": str(tmp_path / "control.sock")},
        "gpio": {"backend": "fake"},
        "tools": {
            "set_light": {"action": "gpio", "chip": "gpiochip0", "line": 17, "value": "{on}"},
        },
    }
    return config_from_dict(_merge(raw, overrides))
