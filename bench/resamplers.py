#!/usr/bin/env python3
"""24 -> 8 kHz for the wake VAD: the project's numpy decimator next to soxr, per 20 ms frame, and how evenly each
streams (output samples per 20 ms input chunk).

    .venv/bin/pip install soxr && .venv/bin/python bench/resamplers.py

soxr is not a dependency (see vatel_edge/audio/vad.py for why); this script measures the choice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vatel_edge.audio.resample import Resampler

RATE, VAD_RATE, FRAME = 24_000, 8_000, 480


def per_frame_us(make: Callable[[], Any], call: str, frames: list[np.ndarray], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        r = make()
        fn = getattr(r, call)
        t = time.perf_counter()
        for f in frames:
            fn(f)
        best = min(best, time.perf_counter() - t)
    return 1e6 * best / len(frames)


def main() -> int:
    try:
        import soxr
    except ImportError:
        print("soxr is not installed: .venv/bin/pip install soxr")
        return 1
    x = (np.random.default_rng(1).standard_normal(RATE * 10) * 3000).astype(np.int16)
    frames = [x[i : i + FRAME] for i in range(0, x.size, FRAME)]
    print("| resampler | us per 20 ms frame | output samples per 20 ms chunk (first 8) |")
    print("|---|---|---|")
    r = Resampler(RATE, VAD_RATE)
    sizes = [r.process(f).size for f in frames[:8]]
    us = per_frame_us(lambda: Resampler(RATE, VAD_RATE), "process", frames)
    print(f"| numpy polyphase decimator (vatel_edge) | {us:.1f} | {sizes} |")
    for q in ("QQ", "LQ", "MQ", "HQ"):
        def make(q: str = q) -> Any:
            return soxr.ResampleStream(RATE, VAD_RATE, 1, dtype="int16", quality=q)
        s = make()
        sizes = [s.resample_chunk(f).size for f in frames[:8]]
        print(f"| soxr {q} | {per_frame_us(make, 'resample_chunk', frames):.1f} | {sizes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
