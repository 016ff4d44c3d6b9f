#!/usr/bin/env python3
"""Does the daemon cut its own voice? Local barge-in over many agent turns in the PulseAudio echo room.

    .venv/bin/python bench/self_interruption.py [--turns 60] [--delay-ms 50] [--gain-db -6] [--json out.json]

Each turn is one session of the real daemon (fresh process state, so every turn is the first one after
start: the canceller converges anew each time) with `session.barge_in = "local"` (VAD debounce 90 ms) and
the microphone streamed, against the simulator; the agent says the shipped 10 s answer while
module-loopback carries the speaker into the microphone (`--delay-ms`, `--gain-db`). Nobody talks, so every
local barge-in is a self-interruption. Two rows, run one after the other in the same process and room:

* "as shipped": EchoPath.echo_likeness vetoes detections that resemble the reference (barge_in_vetoes);
* "no veto" (the floor: the daemon before the veto): the veto disabled by raising the threshold.

Reported per row: agent speech played (minutes), self-interruptions, vetoes, and the echo reduction per
turn (median, worst). The rig's module-loopback re-adjusts its latency as it runs, which moves the echo
path under the canceller now and then; that is what the veto is for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vatel_edge.audio import aec_path
from vatel_edge.devkit import aec_room
from vatel_edge.devkit.sandbox import PulseServer

BARGE_IN_SPEECH_MS = 90


def run_row(pulse: PulseServer, work: Path, turns: int, delay_ms: int, gain_db: float) -> dict[str, Any]:
    sc = aec_room.EchoScenario(echo_cancel="webrtc", barge_in="local", min_speech_ms=BARGE_IN_SPEECH_MS)
    cuts, vetoes, erles, seconds = 0, 0, [], 0.0
    off_power: float | None = None
    with aec_room.LoopbackRoom(pulse, delay_ms=delay_ms, gain_db=gain_db):
        off = asyncio.run(aec_room.run_echo_session(pulse, work, aec_room.EchoScenario(echo_cancel="off")))
        off_power = aec_room.power(off.sent[aec_room.echo_window(off)])
        for k in range(turns):
            run = asyncio.run(aec_room.run_echo_session(pulse, work, sc))
            n_cuts = len(run.barge_ins())
            cuts += n_cuts
            vetoes += run.echo_stats.get("barge_in_vetoes", 0)
            sent = run.sent[aec_room.echo_window(run)]
            erles.append(10 * math.log10(off_power / max(aec_room.power(sent), 1e-3)))
            seconds += run.turn_samples / aec_room.FMT.rate
            print(f"  turn {k + 1}/{turns}: self-cuts {n_cuts}, vetoes {run.echo_stats.get('barge_in_vetoes', 0)}, "
                  f"echo reduction {erles[-1]:.1f} dB", file=sys.stderr, flush=True)
    return {"agent_minutes": seconds / 60, "self_interruptions": cuts, "vetoes": vetoes,
            "erle_median_db": float(np.median(erles)), "erle_worst_db": float(min(erles)), "turns": turns}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=60)
    ap.add_argument("--delay-ms", type=int, default=50)
    ap.add_argument("--gain-db", type=float, default=-6.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="vatel-selfcut-"))
    aec_room.install_room_devices(work)
    pulse = PulseServer.start(work / "pulse")
    rows: dict[str, Any] = {}
    shipped = aec_path.ECHO_LIKE_CORRELATION
    try:
        for name, threshold in (("as shipped", shipped), ("no veto", math.inf)):
            aec_path.ECHO_LIKE_CORRELATION = threshold
            print(f"{name}: {args.turns} turns", file=sys.stderr, flush=True)
            rows[name] = run_row(pulse, work, args.turns, args.delay_ms, args.gain_db)
    finally:
        aec_path.ECHO_LIKE_CORRELATION = shipped
        pulse.stop()
    print("| row | agent speech | self-interruptions | vetoes | echo reduction per turn (median / worst) |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['agent_minutes']:.1f} min ({r['turns']} turns) | {r['self_interruptions']} | "
              f"{r['vetoes']} | {r['erle_median_db']:.1f} / {r['erle_worst_db']:.1f} dB |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
