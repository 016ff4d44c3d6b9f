"""Echo-safe full duplex, measured end to end: the real daemon in a PulseAudio room with an acoustic echo.

Run: .venv/bin/python bench/echo_room.py [--delay-ms 50] [--gain-db -6] [--json out.json]

For echo cancellation off and each installed engine: the daemon (manual wake, simulator session) plays the
shipped agent answer (10 s espeak WAV) into null sink `spk`; module-loopback carries it into `mic` with
`--delay-ms` latency and `--gain-db` volume; the daemon captures `mic.monitor`. Reported per engine:
  * ERLE: echo energy the server received over the turn after 2 s, relative to echo_cancel = off;
  * voiced: webrtcvad (aggressiveness 2, 30 ms) over that audio, and whether the 240-of-480 ms rule fires;
  * self-cut: local barge-in (armed) fired on the agent's own voice;
  * double talk: the user (user_interrupt.wav, -6 dB) starts 4 s into the turn; how much of the user's voiced
    frames survive, and when the speaker stopped after the onset (session.barge_in = local);
  * CPU per 20 ms frame of the engine (time.process_time over a synthetic 10 s scene) and of the idle path.
Prints a markdown table and a JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vatel_edge.audio.aec import EchoReference, available_engines, make_echo_canceller
from vatel_edge.audio.aec_path import EchoPath
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.devkit import aec_lab, aec_room
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.sandbox import PulseServer

FRAME_MS = 20
USER_WAV = "user_interrupt.wav"
BARGE_IN_SPEECH_MS = 90  # wake.min_speech_ms: the local barge-in debounce used here (3 VAD frames)


def cpu_per_frame(kind: str) -> float:
    """Engine CPU seconds per 20 ms frame on a synthetic 10 s echo scene."""
    engine = make_echo_canceller(kind, FRAME_MS)
    assert engine is not None
    agent = np.frombuffer(shipped_speech("agent_answer.wav"), dtype="<i2").astype(np.float64)
    scene = aec_lab.make_scene(agent, VATEL_FORMAT.rate, room=aec_lab.Room(delay_s=0.05))
    _, cpu = aec_lab.run_engine(engine, scene, FRAME_MS)
    engine.close()
    return cpu


def idle_cpu_per_frame(kind: str, frames: int = 3000) -> float:
    """EchoPath CPU per frame while nothing plays (reference timeline kept, engine skipped)."""
    engine = make_echo_canceller(kind, FRAME_MS)
    assert engine is not None
    path = EchoPath(engine, frame_ms=FRAME_MS, reference=EchoReference(VATEL_FORMAT))
    n = VATEL_FORMAT.samples(FRAME_MS)
    mic = np.random.default_rng(0).normal(0, 30, n).astype("<i2").tobytes()
    path.on_written(bytes(VATEL_FORMAT.nbytes(FRAME_MS)), 0.0)
    c0 = time.process_time()
    for k in range(frames):
        path.process(CaptureFrame(mic, 5.0 + k * FRAME_MS / 1000, k))
    cpu = (time.process_time() - c0) / frames
    path.close()
    return cpu


def db(x: float) -> float:
    return float(10 * np.log10(max(x, 1e-9)))


async def measure(pulse: PulseServer, work: Path, delay_ms: int, gain_db: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    off = await _in_room(pulse, work, delay_ms, gain_db, aec_room.EchoScenario(echo_cancel="off"))
    off_power = aec_room.power(off.sent[aec_room.echo_window(off)])
    off_voiced = aec_room.vad_frames(off.sent[aec_room.echo_window(off)])
    results["off"] = {"echo_dbfs": db(off_power / 32768**2), "voiced": float(off_voiced.mean()),
                      "rule_fires": aec_room.wake_rule_fires(off_voiced)}
    for kind in available_engines():
        echo = await _in_room(pulse, work, delay_ms, gain_db, aec_room.EchoScenario(
            echo_cancel=kind, barge_in="local", min_speech_ms=BARGE_IN_SPEECH_MS))
        window = echo.sent[aec_room.echo_window(echo)]
        voiced = aec_room.vad_frames(window)
        whole = aec_room.vad_frames(echo.sent[echo.turn_pos : echo.turn_pos + echo.turn_samples])
        dt = await _in_room(pulse, work, delay_ms, gain_db, aec_room.EchoScenario(
            echo_cancel=kind, mic_during_playback="stream", barge_in="local", user_wav=USER_WAV,
            min_speech_ms=BARGE_IN_SPEECH_MS))
        user = np.frombuffer(aec_room.scaled(shipped_speech(USER_WAV), dt.scenario.user_gain_db), dtype="<i2")
        pos = aec_room.locate(dt.sent, user)
        kept = aec_room.vad_frames(dt.sent[pos : pos + user.size]).mean() / max(aec_room.vad_frames(user).mean(), 1e-9)
        talk = aec_room.double_talk(dt.mic, user)
        cuts = dt.barge_ins()
        results[kind] = {
            "erle_db": db(off_power) - db(aec_room.power(window)),
            "voiced_after_2s": float(voiced.mean()),
            "voiced_whole_turn": float(whole.mean()),
            "rule_fires_after_2s": aec_room.wake_rule_fires(voiced),
            "self_cut": [text for _, text in echo.barge_ins()],
            "engine_erle_estimate_db": echo.erle_estimate_db,
            "echo_delay_estimate_s": echo.echo_delay_s,
            "double_talk_user_voiced_kept": float(kept),
            "double_talk_cut": cuts[0][1] if cuts else None,
            "stop_after_onset_ms": talk.stop_after_onset_ms(delay_ms),
            "cpu_ms_per_frame": 1000 * cpu_per_frame(kind),
            "idle_cpu_ms_per_frame": 1000 * idle_cpu_per_frame(kind),
        }
    return results


async def _in_room(pulse: PulseServer, work: Path, delay_ms: int, gain_db: float,
                   sc: aec_room.EchoScenario) -> aec_room.EchoRun:
    with aec_room.LoopbackRoom(pulse, delay_ms=delay_ms, gain_db=gain_db):
        return await aec_room.run_echo_session(pulse, work, sc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay-ms", type=int, default=50)
    ap.add_argument("--gain-db", type=float, default=-6.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vatel-echo-room-"))
    aec_room.install_room_devices(work)
    pulse = PulseServer.start(work / "pulse")
    try:
        results = asyncio.run(measure(pulse, work, args.delay_ms, args.gain_db))
    finally:
        pulse.stop()
    doc = {"machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
           "room": {"delay_ms": args.delay_ms, "gain_db": args.gain_db}, "results": results}
    off = results["off"]
    print(f"room: module-loopback {args.delay_ms} ms, {args.gain_db} dB; echo in sent audio with echo_cancel=off: "
          f"{off['echo_dbfs']:.1f} dBFS, voiced {off['voiced']:.0%}, voice rule fires: {off['rule_fires']}\n")
    print("| engine | ERLE (sent, after 2 s) | voiced after 2 s / whole turn | self-cut | user voiced kept "
          "| speaker stop after onset | CPU / 20 ms frame | idle path / frame |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        if kind == "off":
            continue
        stop = r["stop_after_onset_ms"]
        print(f"| {kind} | {r['erle_db']:.1f} dB | {r['voiced_after_2s']:.0%} / {r['voiced_whole_turn']:.0%} "
              f"| {'yes' if r['self_cut'] else 'no'} | {r['double_talk_user_voiced_kept']:.0%} "
              f"| {'-' if stop is None else f'{stop:.0f} ms'}{'' if r['double_talk_cut'] else ' (no local cut)'} "
              f"| {r['cpu_ms_per_frame']:.3f} ms | {r['idle_cpu_ms_per_frame'] * 1000:.0f} us |")
    print()
    print(json.dumps(doc, indent=2))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
