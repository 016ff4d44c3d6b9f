"""`vatel-edge demo` writes the report page of its own session (from the daemon's session recording) next to
agent_audio.wav; the page shows that session, and headless chromium renders its waveforms and events."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.report.test_report_browser import check_screenshot
from vatel_edge.devkit.demo import USER_TEXT
from vatel_edge.report import TRACKS

WAVE = re.compile(r'<path class="wave" fill="(#[0-9a-f]{6})" d="M')


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the demo once; the report page it printed."""
    out_dir = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "vatel_edge.cli", "demo", "--out", str(out_dir)],
                          capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next((ln for ln in proc.stdout.splitlines() if "session report:" in ln), None)
    assert line is not None, proc.stdout[-3000:]
    page = out_dir / "report.html"
    assert str(page) in line and page.is_file()
    assert (out_dir / "agent_audio.wav").is_file()  # next to it
    return page


@pytest.mark.timeout(100)
def test_the_demo_report_shows_its_session(demo_page: Path) -> None:
    page = demo_page.read_text(encoding="utf-8")
    assert len(page.encode("utf-8")) < 300_000
    assert set(WAVE.findall(page)) == {colour for _, _, colour in TRACKS.values()}  # three waveforms, none absent
    assert "absent" not in page.split('<h2>Files</h2>')[1]
    table = page[page.index('<table class="events">'):]
    for kind in ("wake", "speech_started", "transcript", "tool_call", "agent_turn_start", "interrupted",
                 "barge_in", "end"):
        assert f">{kind}</td>" in table, kind
    assert html.escape(USER_TEXT, quote=True) in table
    assert "set_light" in table and "log_request" in table
    summary = page[page.index('<table class="summary">'):page.index("</table>")]
    assert re.search(r"<th>wake latency</th><td>\d+ ms</td>", summary), summary
    assert re.search(r"<th>barge-in stop time</th><td>\d+ ms</td>", summary), summary


@pytest.mark.timeout(100)
def test_the_demo_report_renders_in_headless_chromium(demo_page: Path, tmp_path: Path) -> None:
    check_screenshot(demo_page, tmp_path / "demo-report.png")
