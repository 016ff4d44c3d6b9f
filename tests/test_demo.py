"""`vatel-edge demo` end to end, as a newcomer runs it: exit code, timeline, the WAV of what was played."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import pytest


@pytest.mark.timeout(90)
def test_demo_runs_the_whole_product_and_writes_the_played_audio(tmp_path: Path) -> None:
    out_dir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "vatel_edge.cli", "demo", "--out", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()

    def first(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line)

    # The timeline, in the order a conversation happens.
    order = [
        "state starting -> listening",
        "wake (voice)",
        "session_started",
        "speech_started (VAD emulated)",
        "input_audio_transcript (final): Hey there",
        "tool_call set_light",
        "tool_call_output set_light",
        "tool_call log_request",
        "response_text turn=turn-1",
        "interruption",
        "barge-in:",
        "response_text turn=turn-2",
        "session_ended",
        "back to listening",
    ]
    positions = [first(f) for f in order]
    assert positions == sorted(positions), "\n".join(lines)
    assert "-> ok" in lines[first("tool_call_output set_light")]
    assert "logged" in lines[first("tool_call_output log_request")]
    assert (out_dir / "requests.log").read_text().strip().endswith("kitchen light on")
    for fragment in ("wake latency", "audio sent", "audio played", "barge-in: playback dropped"):
        assert any(fragment in line for line in lines), fragment
    with wave.open(str(out_dir / "agent_audio.wav"), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)
        seconds = wav.getnframes() / wav.getframerate()
    # 1.5 s of the answer before the interruption, then the 1.7 s goodbye.
    assert 2.0 < seconds < 9.0
