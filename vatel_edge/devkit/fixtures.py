"""Material shared by the demo, the benchmarks and the tests: lab daemon configs, shipped speech, tones.

One copy of each, so that a daemon in the demo, in a bench run and in a test is set up the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import numpy as np

from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat
from vatel_edge.audio.wav import load_wav

#: The sandbox's ALSA devices (devkit/sandbox.py's asoundrc): the demo and the benchmarks.
SANDBOX_DEVICES = ("demo_mic", "demo_spk")
#: The test suite's ALSA devices (tests/asound/test.asoundrc), on the same kind of null sinks.
TEST_DEVICES = ("test_mic", "test_spk")


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over` on top; tables present in both are merged key by key, everything else `over` wins."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def lab_config(
    agent_id: str, base_url: str, *, devices: tuple[str, str] = SANDBOX_DEVICES, **sections: dict[str, Any]
) -> dict[str, Any]:
    """A lab daemon's config as TOML tables: `devices` (capture, playback) are null sinks with no acoustic path
    between them, so echo cancellation is off and the mic is streamed during agent speech (the server hears
    barge-in); GPIO is the recording fake. `sections` are deep-merged over it."""
    capture, playback = devices
    base: dict[str, Any] = {
        "vatel": {"agent_id": agent_id, "base_url": base_url},
        "audio": {
            "capture_device": capture,
            "playback_device": playback,
            "mic_during_playback": "stream",
            "echo_cancel": "off",
        },
        "gpio": {"backend": "fake"},
    }
    return deep_merge(base, sections)


def toml_text(doc: Mapping[str, Any]) -> str:
    """A config dict as TOML: tables (nested ones as [a.b]) of strings, numbers, booleans and arrays of them."""
    out: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))  # a TOML basic string: JSON's escapes are TOML's

    def table(name: str, body: Mapping[str, Any]) -> None:
        out.append(f"[{name}]")
        out.extend(f"{k} = {value(v)}" for k, v in body.items() if not isinstance(v, Mapping))
        out.append("")
        for k, v in body.items():
            if isinstance(v, Mapping):
                table(f"{name}.{k}", v)

    for name, body in doc.items():
        table(name, body)
    return "\n".join(out)


def shipped_speech(name: str) -> bytes:
    """A shipped espeak-ng utterance (vatel_edge/data/`name`, 16 kHz WAV) as 24 kHz mono PCM16."""
    with resources.as_file(resources.files("vatel_edge") / "data" / name) as path:
        return load_wav(path)


def steady_tone(ms: float, freq: float = 440.0, level_dbfs: float = -12.0, fmt: AudioFormat = VATEL_FORMAT) -> bytes:
    """A sine tone as PCM16 LE mono, without fades: its first and last loud samples mark its start and end
    exactly, and its presence in a recording is easy to measure (an agent-speech stand-in)."""
    n = fmt.samples(ms)
    amp = 32767 * 10 ** (level_dbfs / 20)
    return np.rint(amp * np.sin(2 * np.pi * freq * np.arange(n) / fmt.rate)).astype("<i2").tobytes()
