"""Smoke test of the benchmarks: `bench/run --quick` runs end to end and reports every figure.

Speeds are not asserted (that is what the benchmarks are for); only that each figure was measured,
printed in the markdown table and present in valid JSON, on stdout and in the --json file alike.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import FIGURE_KEYS

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("pulseaudio") is None or shutil.which("arecord") is None,
                       reason="needs pulseaudio and alsa-utils"),
]


def test_quick_bench_prints_a_table_and_json_with_every_figure_measured(tmp_path: Path) -> None:
    """`bench/run --quick --json PATH`: exit 0, one table row per figure, and the same JSON on stdout and in PATH
    with a numeric value and floor for every figure name."""
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run"), "--quick", "--json", str(out_json),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=220,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "| figure | value | floor (same run) | ratio | goal | verdict | notes |" in out
    table_rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    assert len(table_rows) == len(FIGURE_KEYS)
    doc = json.loads(out[out.index("\n{") :])
    assert doc == json.loads(out_json.read_text())
    assert doc["mode"] == "quick"
    assert list(doc["figures"]) == list(FIGURE_KEYS)
    for key, fig in doc["figures"].items():
        assert isinstance(fig["value"], float) and math.isfinite(fig["value"]), (key, fig["note"])
        assert isinstance(fig["floor"], float) and math.isfinite(fig["floor"]), (key, fig["note"])
        assert fig["met"] in (True, False, None)
    assert doc["machine"]["nproc"] >= 1


def test_quick_bench_rejects_unknown_arguments() -> None:
    """A mistyped option is refused with a usage message instead of running the (long) benchmarks."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run"), "--qiuck"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "usage: bench/run" in proc.stderr
