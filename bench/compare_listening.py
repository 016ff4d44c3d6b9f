#!/usr/bin/env python3
"""Listening CPU of this checkout next to another commit's, in ONE run: same noise, same window, and arecord.

    .venv/bin/python bench/compare_listening.py --base REV [--seconds 60] [--echo-cancel auto|off]

REV is checked out into a temporary git worktree; its daemon runs from there (PYTHONPATH first on the
path) with this venv's interpreter and libraries, beside this checkout's daemon and `arecord -D demo_mic`
reading the same mic sink, fed with -50 dBFS pink room noise, energy gate open (VAD on every frame).
A shared machine's absolute speed drifts; the two daemons see the same drift, so their ratio is the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.listening import NOISE_DBFS, daemon_config
from bench.measure import cpu_seconds
from bench.rig import FMT, REPO, DaemonProc, Rig, kill, pink_noise, start_arecord
from vatel_edge.audio.capture import capture_periods
from vatel_edge.devkit.simulator import Simulator


async def compare(base_tree: Path, seconds: float, echo_cancel: str) -> dict[str, float]:
    """CPU % of a core of both daemons and of arecord over the same window."""
    with Rig() as rig:
        async with Simulator() as sim:
            feeder = rig.feed_mic(pink_noise(seconds + 40.0, NOISE_DBFS))
            cfg = daemon_config(sim, wake={"min_level_dbfs": -96.0}, audio={"echo_cancel": echo_cancel})
            head = DaemonProc(rig, "listen-head", cfg, sim.api_key)
            base = DaemonProc(rig, "listen-base", cfg, sim.api_key)
            rig_env = dict(rig.env)
            arecord = None
            try:
                head.start()
                await head.wait_ready()
                rig.env = {**rig_env, "PYTHONPATH": str(base_tree)}
                base.start()
                await base.wait_ready()
                rig.env = rig_env
                arecord = start_arecord(rig, "demo_mic", FMT.samples(20), capture_periods(20))
                await asyncio.sleep(1.5)
                t0, h0, b0, a0 = time.monotonic(), head.cpu(), base.cpu(), cpu_seconds(arecord.pid)
                await asyncio.sleep(seconds)
                t1, h1, b1, a1 = time.monotonic(), head.cpu(), base.cpu(), cpu_seconds(arecord.pid)
            finally:
                if arecord is not None:
                    await asyncio.to_thread(kill, arecord)
                await head.stop()
                await base.stop()
                await asyncio.to_thread(kill, feeder)
            if sim.sessions:
                raise RuntimeError("a daemon woke on the room noise: the figures are void")
    wall = t1 - t0
    return {"head": 100 * (h1 - h0) / wall, "base": 100 * (b1 - b0) / wall, "arecord": 100 * (a1 - a0) / wall,
            "window_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (e.g. HEAD~5)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--echo-cancel", default="auto", choices=("auto", "off"))
    args = parser.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout.strip()
    head_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="vatel-base-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO, check=True,
                       capture_output=True)
        try:
            r = asyncio.run(compare(tree, args.seconds, args.echo_cancel))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
    print(f"listening CPU, vad mode, echo_cancel {args.echo_cancel}, energy gate open, "
          f"{r['window_s']:.0f} s window, one run:")
    print("| daemon | % of a core | x arecord |")
    print("|---|---|---|")
    for name, label in (("head", f"this checkout ({head_rev})"), ("base", f"base {rev}")):
        print(f"| {label} | {r[name]:.3f} | {r[name] / r['arecord']:.2f}x |")
    print(f"| arecord, 20 ms periods (floor) | {r['arecord']:.3f} | 1.00x |")
    print(f"this checkout / base: {r['head'] / r['base']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
