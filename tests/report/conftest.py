"""A synthetic session recording in the layout the daemon writes: real WAVs of shipped speech, a timeline."""

from __future__ import annotations

import json
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vatel_edge.devkit.fixtures import shipped_speech

RATE = 24000
HOSTILE = "<script>alert('pwned')</script> & turn on the \"kitchen\" light"
#: Where the synthetic session puts things (seconds since t0).
USER_AT, AGENT_AT, CUT_AT, CLICK_AT = 1.0, 4.0, 6.5, 9.0


def write_wav(path: Path, samples: np.ndarray[Any, Any], rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())


def _speech(name: str) -> np.ndarray[Any, Any]:
    return np.frombuffer(shipped_speech(name), dtype="<i2").astype(np.int32)


def events() -> list[dict[str, Any]]:
    """One event of every kind the spec names, one unknown kind, one with a hostile kind name."""
    return [
        {"t": 0.0, "kind": "state", "text": "listening"},
        {"t": USER_AT + 0.1, "kind": "wake", "text": "wake (voice)"},
        {"t": USER_AT + 0.1, "kind": "state", "text": "listening -> connecting"},
        {"t": USER_AT + 0.3, "kind": "speech_started", "text": "speech started"},
        {"t": 3.2, "kind": "speech_stopped", "text": "speech stopped"},
        {"t": 3.4, "kind": "transcript", "role": "user", "text": HOSTILE},
        {"t": 3.6, "kind": "tool_call", "name": "set_light", "outcome": "ok", "text": "set_light -> ok"},
        {"t": AGENT_AT, "kind": "agent_turn_start", "text": "turn-1"},
        {"t": AGENT_AT + 0.1, "kind": "transcript", "role": "agent", "text": "Sure. Turning on the kitchen light."},
        {"t": CUT_AT, "kind": "barge_in", "text": "playback stopped in 42 ms"},
        {"t": CUT_AT, "kind": "interrupted", "text": "turn-1 interrupted"},
        {"t": 7.0, "kind": "mystery_kind", "text": "an event kind this report does not know"},
        {"t": CLICK_AT, "kind": "agent_turn_start", "text": "click"},
        {"t": 9.2, "kind": "agent_turn_end", "text": "click done"},
        {"t": 11.5, "kind": "end", "text": "agent ended the session"},
    ]


def build_recording(root: Path, *, seconds: float = 12.0, summary: dict[str, Any] | None = None) -> Path:
    """Write mic.wav, sent.wav, played.wav and timeline.json for a session of `seconds` under `root`.

    The user's request starts at USER_AT on the microphone; the agent's answer plays from AGENT_AT until the
    barge-in at CUT_AT and reaches the microphone as an echo 18 dB down, which sent.wav lacks (cancelled);
    sent.wav is silent before the wake. A full-scale 20 ms click (1 kHz square) plays at CLICK_AT (an alignment mark).
    For long sessions the request repeats every 6 s so that the whole axis carries speech.
    """
    root.mkdir(parents=True, exist_ok=True)
    n = round(seconds * RATE)
    request, answer = _speech("user_request.wav"), _speech("agent_answer.wav")
    mic, played = np.zeros(n, np.int32), np.zeros(n, np.int32)
    for start in np.arange(USER_AT, seconds, 6.0) if seconds > 12 else [USER_AT]:
        a = round(start * RATE)
        seg = request[: max(0, min(len(request), n - a))]
        mic[a : a + len(seg)] += seg
    a, b = round(AGENT_AT * RATE), round(CUT_AT * RATE)
    played[a:b] = answer[: b - a]
    c = round(CLICK_AT * RATE)
    played[c : c + RATE // 50] = np.where(np.arange(RATE // 50) % 24 < 12, 32767, -32767)  # a 1 kHz square
    echo = played // 8
    sent = mic.copy()
    mic += echo
    sent[: round((USER_AT + 0.1) * RATE) - RATE // 2] = 0  # before the pre-roll: nothing was sent
    for name, x in (("mic", mic), ("sent", sent), ("played", played)):
        write_wav(root / f"{name}.wav", x)
    doc = {
        "version": 1, "session": "sess-<b>42</b>", "started_at": "2026-12-01T12:00:00Z", "rate": RATE,
        "files": {"mic": "mic.wav", "sent": "sent.wav", "played": "played.wav"},
        "events": events(),
        "erle": [[AGENT_AT + 0.25 * i, 3.0 + 2.5 * i] for i in range(10)],
        "summary": summary if summary is not None else {
            "wake_latency_ms": 183.4, "preroll_ms": 500, "barge_in_stop_ms": 42, "end_reason": "agent_ended",
            "duration_s": seconds},
    }
    (root / "timeline.json").write_text(json.dumps(doc), encoding="utf-8")
    return root


@pytest.fixture
def make_recording(tmp_path: Path) -> Callable[..., Path]:
    """Factory: build_recording under tmp_path/NAME."""

    def make(name: str = "rec", **kw: Any) -> Path:
        return build_recording(tmp_path / name, **kw)

    return make
