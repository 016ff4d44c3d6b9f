"""Soak, short CI version: bench/soak with 40 sessions (10 warm-up) as a subprocess.

The full soak (500 sessions, `bench/soak`) is a benchmark run by hand; this one proves in CI that a run of
back-to-back sessions with random faults from the matrix neither crashes the daemon nor leaks fds, asyncio
tasks or threads, with RSS growth under 5 MB after the warm-up. Marked `soak` (deselect with -m "not soak").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak"

pytestmark = [pytest.mark.soak, pytest.mark.timeout(180)]


def test_short_soak_with_random_faults_has_no_crash_and_no_leak(tmp_path: Path) -> None:
    """40 sessions, seeded random faults: every check of bench/soak passes (see its JSON for the figures)."""
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--sessions", "40", "--warmup", "10", "--seed", "3", "--quiet", "--json", str(out)],
        capture_output=True, text=True, timeout=170,
    )
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["checks"], "no checks ran"
    failed = [name for name, ok in result["checks"].items() if not ok]
    assert failed == [], f"{failed}: {result['failures']} {result['growth_after_warmup']}"
    assert proc.returncode == 0
    assert sum(result["cases"].values()) == 40
    assert result["planned_cases"] >= 10, "the seed should draw a good part of the matrix"
