"""`vatel-edge report DIR`: the page of a synthetic recording (real WAVs, a timeline) shows the three waveforms
and every event on one time axis, escapes user text, stays small, and tolerates what a recording lacks."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.report.conftest import CLICK_AT, HOSTILE, RATE, events
from vatel_edge.cli import main
from vatel_edge.report import LANE_H, LEFT, PLOT_W, TRACKS, envelope

MakeRecording = Callable[..., Path]
WAVE = re.compile(r'<path class="wave" fill="(#[0-9a-f]{6})" d="M([^"]*)Z"/>')


def report(directory: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["report", str(directory), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def waves(page: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Colour -> (x, upper y, lower y) per column of each envelope path on the page."""
    out = {}
    for colour, d in WAVE.findall(page):
        pts = np.array([[float(v) for v in p.split(",")] for p in d.split()])
        half = len(pts) // 2
        upper, lower = pts[:half], pts[half:][::-1]
        assert np.array_equal(upper[:, 0], lower[:, 0])
        out[colour] = (upper[:, 0], upper[:, 1], lower[:, 1])
    return out


def column_x(t: float, duration: float) -> float:
    return LEFT + PLOT_W * t / duration


def ink(wave: tuple[np.ndarray, np.ndarray, np.ndarray], t0: float, t1: float, duration: float) -> float:
    """Largest envelope height (SVG units) over the columns between t0 and t1."""
    x, upper, lower = wave
    sel = (x >= column_x(t0, duration)) & (x < column_x(t1, duration))
    assert sel.any()
    return float(np.max(lower[sel] - upper[sel]))


def test_the_page_draws_three_waveforms_from_the_audio_and_every_event(
        make_recording: MakeRecording, capsys: pytest.CaptureFixture[str]) -> None:
    rec = make_recording()
    code, out, _ = report(rec, capsys)
    assert code == 0
    assert out.strip() == str(rec / "report.html")
    page = (rec / "report.html").read_text(encoding="utf-8")
    drawn = waves(page)
    mic, sent, played = (drawn[colour] for _, _, colour in TRACKS.values())
    duration = 12.0
    # the user's request is on mic and sent; silence after the session's audio is a hairline
    assert ink(mic, 1.3, 2.5, duration) > LANE_H / 4
    assert ink(sent, 1.3, 2.5, duration) > LANE_H / 4
    assert ink(mic, 10.0, 11.5, duration) <= 1.0
    # the agent's echo (18 dB down) is on the microphone and not in what was sent
    assert ink(mic, 4.5, 6.3, duration) > 3.0
    assert ink(sent, 4.5, 6.3, duration) <= 1.0
    # played: the answer until the cut, nothing between the cut and the click
    assert ink(played, 4.5, 6.3, duration) > 3.0
    assert ink(played, 6.6, 8.9, duration) <= 1.0
    for event in events():
        assert html.escape(event["text"][:20], quote=True) in page, event
    table = page[page.index('<table class="events">'):]
    assert table.count("<tr><td") == len(events())
    assert html.escape(HOSTILE, quote=True) in table  # the whole transcript, readable
    assert "an event kind this report does not know" in page and "mystery_kind" in page
    for label in ("183 ms", "500 ms", "42 ms", "agent_ended", "12.00 s"):
        assert label in page
    assert '<polyline points="' in page  # the echo-reduction curve
    # the state lane: "listening -> connecting" at 1.1 s starts a segment labelled with the new state
    segment = re.search(r'<title>1\.10 s connecting</title><rect x="([0-9.]+)"[^>]*class="state s\d"/>'
                        r'<text [^>]*>connecting</text>', page)
    assert segment is not None and abs(float(segment.group(1)) - column_x(1.1, duration)) <= 0.1


def test_waveforms_and_events_share_one_time_axis(make_recording: MakeRecording,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The full-scale click played at CLICK_AT is drawn in the column of the event at CLICK_AT."""
    rec = make_recording()
    assert report(rec, capsys)[0] == 0
    page = (rec / "report.html").read_text(encoding="utf-8")
    x, upper, lower = waves(page)[TRACKS["played"][2]]
    click_x = x[np.argmax(lower - upper)]
    marker = re.search(r'<title>9\.00 s agent_turn_start: click</title><line x1="([0-9.]+)"', page)
    assert marker is not None
    assert abs(float(marker.group(1)) - click_x) <= 1.0
    assert abs(click_x - column_x(CLICK_AT, 12.0)) <= 1.0


def test_every_text_from_the_recording_is_escaped(make_recording: MakeRecording,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rec = make_recording()
    doc = json.loads((rec / "timeline.json").read_text())
    doc["events"].append({"t": 8.0, "kind": '"><svg onload=alert(2)>', "text": "</title><script>x()</script>",
                          "name": "<img src=x onerror=alert(3)>"})
    doc["summary"]["end_reason"] = "<i>agent</i>"
    (rec / "timeline.json").write_text(json.dumps(doc))
    assert report(rec, capsys)[0] == 0
    page = (rec / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "<svg onload" not in page and "<img" not in page and "<b>42" not in page and "<i>agent" not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "sess-&lt;b&gt;42&lt;/b&gt;" in page


def test_the_page_of_a_60_s_session_stays_small(make_recording: MakeRecording,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rec = make_recording(seconds=60.0)
    assert report(rec, capsys)[0] == 0
    page = (rec / "report.html").read_text(encoding="utf-8")
    size = len(page.encode("utf-8"))
    assert size < 300_000, size
    drawn = waves(page)
    assert len(drawn) == 3
    for x, _, _ in drawn.values():
        assert len(x) <= PLOT_W  # one column per unit of the axis, whatever the session's length
    mic = drawn[TRACKS["mic"][2]]
    assert ink(mic, 55.2, 56.0, 60.0) > LANE_H / 4  # the request repeated at 55 s is drawn at its place


def test_a_missing_or_unreadable_wav_is_shown_absent(make_recording: MakeRecording,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rec = make_recording()
    (rec / "played.wav").unlink()
    (rec / "sent.wav").write_bytes(b"RIFF not really a wave file")
    code, out, _ = report(rec, capsys)
    assert code == 0 and out.strip().endswith("report.html")
    page = (rec / "report.html").read_text(encoding="utf-8")
    assert list(waves(page)) == [TRACKS["mic"][2]]
    assert "played.wav absent: file not found" in page
    assert "sent.wav absent: unreadable" in page


def test_missing_summary_figures_and_echo_curve_are_shown_absent(make_recording: MakeRecording,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rec = make_recording(summary={"wake_latency_ms": 200, "preroll_ms": None, "barge_in_stop_ms": None,
                                         "sent_from_s": 0.6, "future_figure": 7})
    doc = json.loads((rec / "timeline.json").read_text())
    del doc["erle"]
    doc["events"] = [{"kind": "wake", "text": "no time"}, "not an event", {"t": "soon", "kind": "end"}]
    (rec / "timeline.json").write_text(json.dumps(doc))
    assert report(rec, capsys)[0] == 0
    page = (rec / "report.html").read_text(encoding="utf-8")
    summary = page[page.index('<table class="summary">'):page.index("</table>")]
    assert "200 ms" in summary
    assert summary.count("not recorded") == 2  # end reason, duration
    assert "<th>pre-roll</th><td><span class=\"absent\">not measured</span>" in summary
    assert "<th>sent audio starts at</th><td>0.60 s</td>" in summary  # a recorder figure, labelled
    assert "<th>future_figure</th><td>7</td>" in summary  # a figure this report does not know, as it is
    assert "<th>barge-in stop time</th><td><span class=\"absent\">none</span>" in summary
    assert "no echo reduction recorded" in page
    table = page[page.index('<table class="events">'):]
    assert table.count("<tr><td") == 2 and table.count('<td class="num">?</td>') == 2


@pytest.mark.parametrize("layout", ["empty", "wavs-only", "bad-json", "not-an-object", "no-such-dir"])
def test_a_directory_that_is_not_a_recording_is_refused_naming_what_is_missing(
        make_recording: MakeRecording, tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str) -> None:
    target = tmp_path / layout
    if layout == "wavs-only":
        make_recording(layout)
        (target / "timeline.json").unlink()
    elif layout in ("bad-json", "not-an-object"):
        make_recording(layout)
        (target / "timeline.json").write_text("{ nope" if layout == "bad-json" else "[1, 2]")
    elif layout == "empty":
        target.mkdir()
    code, out, err = report(target, capsys)
    assert code == 1 and out == ""
    assert not (target / "report.html").exists()
    expect = {
        "empty": ["is not a session recording", "missing timeline.json, mic.wav, sent.wav, played.wav"],
        "wavs-only": ["is not a session recording", "missing timeline.json ("],
        "bad-json": ["timeline.json is unreadable"],
        "not-an-object": ["timeline.json is not a JSON object"],
        "no-such-dir": ["is not a directory"],
    }[layout]
    for fragment in expect:
        assert fragment in err, err


def test_the_installed_command_writes_where_out_says(make_recording: MakeRecording, tmp_path: Path) -> None:
    rec = make_recording()
    target = tmp_path / "elsewhere.html"
    proc = subprocess.run([sys.executable, "-m", "vatel_edge.cli", "report", str(rec), "--out", str(target)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(target)
    assert target.stat().st_size > 10_000 and not (rec / "report.html").exists()
    proc = subprocess.run([sys.executable, "-m", "vatel_edge.cli", "report", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "is not a directory" in proc.stderr


def test_envelope_is_the_min_and_max_of_each_column() -> None:
    x = np.array([0, 5, -3, 2, 9, -9, 1, 1, 4, -1], dtype=np.int16)
    cols, lo, hi = envelope(x, rate=10, duration=2.0, columns=4)  # 5 samples per column; 2 columns of audio
    assert cols.tolist() == [0, 1]
    assert lo.tolist() == [-3, -9] and hi.tolist() == [9, 4]
    cols, lo, hi = envelope(np.zeros(0, dtype=np.int16), rate=RATE, duration=1.0)
    assert cols.size == 0
