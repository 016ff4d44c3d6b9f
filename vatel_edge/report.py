"""`vatel-edge report DIR`: one session recording as one self-contained HTML page.

The page needs no network and no JavaScript: the three waveforms (microphone, sent, played) as inline SVG
min/max envelopes on one time axis, the timeline's events on the same axis, the echo reduction over time
and the session's summary figures. Every text from the recording is escaped (transcripts are user content).
A recording directory holds mic.wav, sent.wav, played.wav (24 kHz mono PCM16, all starting at t0) and
timeline.json; a missing WAV, an unknown event kind or a missing summary field is shown as absent.
"""

from __future__ import annotations

import html
import json
import math
import os
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from vatel_edge.errors import VatelEdgeError

TIMELINE = "timeline.json"
#: Track key -> (default file name, label, colour). The colours are what tests look for in a screenshot.
TRACKS: dict[str, tuple[str, str, str]] = {
    "mic": ("mic.wav", "microphone (raw)", "#1f6fd0"),
    "sent": ("sent.wav", "sent to the server", "#1a9a3c"),
    "played": ("played.wav", "played (speaker)", "#d2462a"),
}
REPORT_NAME = "report.html"

# Geometry of the page's charts, in SVG user units (= CSS pixels).
PLOT_W = 1150  # one min/max column per unit: the envelope's size does not grow with the session
LEFT = 140
RIGHT = 20
AXIS_H = 26
LANE_H = 84
ROW_H = 17
MAX_ROWS = 12
STATE_H = 20
ERLE_H = 120
LABEL_CHARS = 34
CHAR_W = 6.2  # approximate width of one character of the 11 px label font

#: Event kind -> (colour, draws a line through the waveforms).
KIND_STYLE: dict[str, tuple[str, bool]] = {
    "state": ("#777777", False),
    "wake": ("#e08a00", True),
    "speech_started": ("#7b3fb5", False),
    "speech_stopped": ("#7b3fb5", False),
    "transcript": ("#0b5394", False),
    "agent_turn_start": ("#b04a2a", False),
    "agent_turn_end": ("#b04a2a", False),
    "interrupted": ("#c00000", True),
    "tool_call": ("#2a7f7f", False),
    "barge_in": ("#c00000", True),
    "end": ("#000000", True),
}
UNKNOWN_STYLE = ("#999999", False)

Samples = npt.NDArray[np.int16]


class RecordingError(VatelEdgeError):
    """DIR is not a session recording (the message names what is missing or unreadable)."""


@dataclass(frozen=True)
class Track:
    """One of the three WAVs: its samples, or why it is absent."""

    key: str
    file: str
    samples: Samples | None
    rate: int
    problem: str | None = None

    @property
    def duration_s(self) -> float:
        return 0.0 if self.samples is None else len(self.samples) / self.rate


@dataclass(frozen=True)
class Event:
    """One timeline event; `t` is None when the recording gave no usable time."""

    t: float | None
    kind: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recording:
    """What the page shows, read from a recording directory."""

    path: Path
    session: str | None
    started_at: str | None
    rate: int
    tracks: list[Track]
    events: list[Event]
    erle: list[tuple[float, float]]
    summary: dict[str, Any]

    @property
    def duration_s(self) -> float:
        """The shared time axis: the longest of the files, the events, the echo curve and the summary."""
        ends = [t.duration_s for t in self.tracks]
        ends += [e.t for e in self.events if e.t is not None]
        ends += [t for t, _ in self.erle]
        dur = _number(self.summary.get("duration_s"))
        if dur is not None:
            ends.append(dur)
        return max([0.1, *ends])


def _number(value: object) -> float | None:
    """A finite float from a JSON value, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _read_wav(path: Path) -> tuple[Samples, int]:
    """Mono PCM16 samples and rate of a WAV; a multi-channel file is shown by its first channel."""
    with wave.open(os.fspath(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{8 * width}-bit samples, expected 16-bit PCM")
    x = np.frombuffer(raw[: len(raw) - len(raw) % (2 * channels)], dtype="<i2")
    return x[::channels].astype(np.int16), rate


def _load_track(root: Path, key: str, name: str) -> Track:
    default_name, _, _ = TRACKS[key]
    file = Path(name).name or default_name  # a file of the recording itself, never a path elsewhere
    path = root / file
    if not path.is_file():
        return Track(key, file, None, 1, "file not found")
    try:
        samples, rate = _read_wav(path)
    except (OSError, EOFError, wave.Error, ValueError) as exc:
        return Track(key, file, None, 1, f"unreadable: {exc}")
    if rate <= 0:
        return Track(key, file, None, 1, "unreadable: no sample rate")
    return Track(key, file, samples, rate)


def _event(raw: object) -> Event | None:
    if not isinstance(raw, dict):
        return None
    kind = str(raw.get("kind", "?"))
    text = raw.get("text")
    return Event(_number(raw.get("t")), kind, "" if text is None else str(text),
                 {k: v for k, v in raw.items() if k not in ("t", "kind", "text")})


def _erle(raw: object) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for point in raw if isinstance(raw, list) else []:
        if isinstance(point, list | tuple) and len(point) == 2:
            t, db = _number(point[0]), _number(point[1])
            if t is not None and db is not None:
                out.append((t, db))
    return sorted(out)


def load_recording(directory: str | os.PathLike[str]) -> Recording:
    """Read a recording directory; RecordingError when it is none (no or unreadable timeline.json)."""
    root = Path(directory)
    if not root.is_dir():
        raise RecordingError(f"{root} is not a directory (a session recording is a directory)")
    expected = [TIMELINE, *(name for name, _, _ in TRACKS.values())]
    missing = [name for name in expected if not (root / name).exists()]
    if TIMELINE in missing:
        raise RecordingError(f"{root} is not a session recording: missing {', '.join(missing)} "
                             f"(a recording holds {', '.join(expected)})")
    try:
        doc = json.loads((root / TIMELINE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RecordingError(f"{root / TIMELINE} is unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise RecordingError(f"{root / TIMELINE} is not a JSON object")
    files = _dict(doc.get("files"))
    tracks = [_load_track(root, key, str(files.get(key) or default)) for key, (default, _, _) in TRACKS.items()]
    raw_events = doc.get("events")
    events = [e for e in map(_event, raw_events if isinstance(raw_events, list) else []) if e is not None]
    events.sort(key=lambda e: math.inf if e.t is None else e.t)
    summary = _dict(doc.get("summary"))
    rate = _number(doc.get("rate"))
    return Recording(
        path=root,
        session=None if doc.get("session") is None else str(doc.get("session")),
        started_at=None if doc.get("started_at") is None else str(doc.get("started_at")),
        rate=int(rate) if rate else 24000,
        tracks=tracks,
        events=events,
        erle=_erle(doc.get("erle")),
        summary=summary,
    )


# ---------------------------------------------------------------------------------------------- drawing


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _x(t: float, duration: float) -> float:
    return LEFT + PLOT_W * t / duration


def envelope(samples: Samples, rate: int, duration: float, columns: int = PLOT_W) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    """Per display column of the time axis [0, duration): the column index, min and max sample.

    Columns with no sample (after the end of the file) are left out.
    """
    edges = np.floor(np.arange(columns + 1) * (duration * rate / columns)).astype(np.int64)
    edges = np.clip(edges, 0, len(samples))
    starts, ends = edges[:-1], edges[1:]
    cols = np.flatnonzero(ends > starts)
    if cols.size == 0:
        empty = np.zeros(0, dtype=np.int16)
        return cols.astype(np.int64), empty, empty
    x = samples[: int(ends[cols[-1]])]
    lo = np.minimum.reduceat(x, starts[cols])
    hi = np.maximum.reduceat(x, starts[cols])
    return cols.astype(np.int64), lo.astype(np.int16), hi.astype(np.int16)


def _peak(track: Track) -> int:
    if track.samples is None or track.samples.size == 0:
        return 0
    return int(np.max(np.abs(track.samples.astype(np.int32))))


def _dbfs(peak: int) -> str:
    return "silent" if peak <= 0 else f"{20 * math.log10(peak / 32768):.0f} dBFS"


def _lane_svg(track: Track, top: float, duration: float, scale: int) -> list[str]:
    """One waveform lane (over its background): label, the min/max envelope as one filled path."""
    _, label, colour = TRACKS[track.key]
    mid = top + LANE_H / 2
    half = LANE_H / 2 - 4
    out = [f'<text x="{LEFT - 8}" y="{mid - 4}" class="lbl" text-anchor="end">{_esc(label)}</text>']
    if track.samples is None:
        out.append(f'<text x="{LEFT - 8}" y="{mid + 10}" class="sub" text-anchor="end">{_esc(track.file)}</text>')
        out.append(f'<text x="{LEFT + 12}" y="{mid + 4}" class="absent">{_esc(track.file)} absent: '
                   f'{_esc(track.problem)}</text>')
        return out
    peak = _peak(track)
    out.append(f'<text x="{LEFT - 8}" y="{mid + 10}" class="sub" text-anchor="end">peak {_dbfs(peak)}</text>')
    cols, lo, hi = envelope(track.samples, track.rate, duration)
    if cols.size:
        xs = LEFT + cols + 0.5
        top_y = mid - hi.astype(np.float64) / scale * half
        bot_y = mid - lo.astype(np.float64) / scale * half
        # at least one unit of ink per column, so silence shows as a line in the track's colour
        bot_y = np.maximum(bot_y, top_y + 1.0)
        pts = [f"{x:.0f},{y:.1f}" for x, y in zip(xs, top_y, strict=True)]
        pts += [f"{x:.0f},{y:.1f}" for x, y in zip(xs[::-1], bot_y[::-1], strict=True)]
        out.append(f'<path class="wave" fill="{colour}" d="M{" ".join(pts)}Z"/>')
    return out


def _nice_step(duration: float, ticks: int = 12) -> float:
    raw = duration / ticks
    for step in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if step >= raw:
            return float(step)
    return 1200.0


def _axis_svg(y: float, height: float, duration: float) -> list[str]:
    """Time ticks along the top and their grid lines down through `height`."""
    step = _nice_step(duration)
    out = []
    for i in range(int(duration / step) + 1):
        t = i * step
        x = _x(t, duration)
        label = f"{t:g} s"
        out.append(f'<line x1="{x:.1f}" y1="{y + AXIS_H - 6}" x2="{x:.1f}" y2="{y + height}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{y + AXIS_H - 10}" class="tick" text-anchor="middle">{label}</text>')
    return out


def _label(event: Event) -> str:
    """The short label of an event on the axis (the table below the chart has the whole text)."""
    f = event.fields
    if event.kind == "transcript":
        role = f.get("role")
        text = f"{role}: {event.text}" if role else event.text
    elif event.kind == "tool_call":
        text = event.text or f"tool {f.get('name', '?')} {f.get('outcome', '')}".strip()
    else:
        text = event.text or event.kind
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _spans(events: Sequence[Event], starts: str, stops: Sequence[str], duration: float) -> list[tuple[float, float]]:
    """Intervals from a `starts` event to the next of `stops` (or the end of the axis)."""
    spans: list[tuple[float, float]] = []
    begin: float | None = None
    for e in events:
        if e.t is None:
            continue
        if e.kind == starts and begin is None:
            begin = e.t
        elif e.kind in stops and begin is not None:
            spans.append((begin, e.t))
            begin = None
    if begin is not None:
        spans.append((begin, duration))
    return spans


def state_of(event: Event) -> str | None:
    """The state a "state" event enters (its `new` field, else the text after "->"); None for other events."""
    if event.kind != "state":
        return None
    new = event.fields.get("new")
    if new:
        return str(new)
    if "->" not in event.text:
        return None
    return event.text.rsplit("->", 1)[1].strip() or None


def _states_svg(events: Sequence[Event], top: float, duration: float) -> list[str]:
    """The state lane: one segment per state, from the transition into it to the next one, labelled if it fits."""
    changes = [(e.t, state) for e in events if e.t is not None and (state := state_of(e)) is not None]
    first = next((e for e in events if e.t is not None and state_of(e) is not None), None)
    if first is not None and first.t and first.fields.get("old"):
        changes.insert(0, (0.0, str(first.fields["old"])))
    out = [f'<text x="{LEFT - 8}" y="{top + 14}" class="lbl" text-anchor="end">state</text>']
    for i, (t, state) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else duration
        x0, x1 = _x(max(0.0, t), duration), _x(end, duration)
        chars = int((x1 - x0 - 6) / CHAR_W)
        label = state if len(state) <= chars else state[: chars - 1] + "…" if chars >= 3 else ""
        out.append(f'<g><title>{_esc(f"{t:.2f} s {state}")}</title>'
                   f'<rect x="{x0:.1f}" y="{top}" width="{max(0.5, x1 - x0):.1f}" height="{STATE_H}" '
                   f'class="state s{i % 2}"/>'
                   f'<text x="{x0 + 3:.1f}" y="{top + 14}" class="evl">{_esc(label)}</text></g>')
    return out


def timeline_svg(rec: Recording) -> str:
    """The waveforms and the events on one time axis, as one SVG element."""
    duration = rec.duration_s
    lanes_top = AXIS_H
    states_top = lanes_top + LANE_H * len(rec.tracks) + 6
    events_top = states_top + STATE_H + 8
    # label rows: each label goes to the first row where it does not overlap the previous one
    placed: list[tuple[Event, float, int, bool]] = []
    row_end = [-math.inf] * MAX_ROWS
    for e in rec.events:
        if e.t is None or state_of(e) is not None:  # state changes are the state lane
            continue
        x = _x(max(0.0, e.t), duration)  # an event before t0 is drawn at t0 (the table has its time)
        width = CHAR_W * len(_label(e)) + 12
        # near the right edge the label goes to the left of its marker
        leftwards = x + width > LEFT + PLOT_W + RIGHT
        begin = x - width if leftwards else x
        row = next((r for r in range(MAX_ROWS) if row_end[r] < begin), min(range(MAX_ROWS), key=lambda r: row_end[r]))
        row_end[row] = max(x, begin + width)
        placed.append((e, x, row, leftwards))
    rows = 1 + max((r for _, _, r, _ in placed), default=0)
    height = events_top + rows * ROW_H + 8
    width = LEFT + PLOT_W + RIGHT
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="waveforms and events">']
    out += _axis_svg(0, height, duration)
    for i in range(len(rec.tracks)):
        out.append(f'<rect x="{LEFT}" y="{lanes_top + LANE_H * i}" width="{PLOT_W}" height="{LANE_H}" class="lane"/>')
    # shaded spans: the user speaking (on the microphone lane), the agent's turns (on the played lane)
    keys = [t.key for t in rec.tracks]
    for start, stops, key, cls in (("speech_started", ("speech_stopped",), "mic", "span-user"),
                                   ("agent_turn_start", ("agent_turn_end", "interrupted"), "played", "span-agent")):
        top = lanes_top + LANE_H * keys.index(key)
        for a, b in _spans(rec.events, start, stops, duration):
            x0, x1 = _x(a, duration), _x(b, duration)
            w = max(1.0, x1 - x0)
            out.append(f'<rect x="{x0:.1f}" y="{top}" width="{w:.1f}" height="{LANE_H}" class="{cls}"/>')
    mic_sent = [t for t in rec.tracks if t.key in ("mic", "sent")]
    common = max([_peak(t) for t in mic_sent] + [1])
    for i, track in enumerate(rec.tracks):
        scale = common if track.key in ("mic", "sent") else max(_peak(track), 1)
        out += _lane_svg(track, lanes_top + LANE_H * i, duration, scale)
    out += _states_svg(rec.events, states_top, duration)
    out.append(f'<text x="{LEFT - 8}" y="{events_top + 12}" class="lbl" text-anchor="end">events</text>')
    for e, x, row, leftwards in placed:
        colour, through = KIND_STYLE.get(e.kind, UNKNOWN_STYLE)
        y = events_top + row * ROW_H
        y_from = lanes_top if through else events_top - 4
        tip = f"{e.t:.2f} s {e.kind}: {e.text}"
        anchor = ' text-anchor="end"' if leftwards else ""
        out.append(f'<g class="ev ev-{_esc(e.kind)}"><title>{_esc(tip)}</title>'
                   f'<line x1="{x:.1f}" y1="{y_from}" x2="{x:.1f}" y2="{y + ROW_H - 3}" stroke="{colour}" '
                   f'class="{"mark-strong" if through else "mark"}"/>'
                   f'<text x="{x - 3 if leftwards else x + 3:.1f}" y="{y + 12}" fill="{colour}" class="evl"'
                   f'{anchor}>{_esc(_label(e))}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def erle_svg(rec: Recording) -> str:
    """Echo reduction (dB) over the same time axis: a small line chart."""
    duration = rec.duration_s
    width = LEFT + PLOT_W + RIGHT
    top, bottom = 10, ERLE_H - 22
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{ERLE_H}" '
           f'viewBox="0 0 {width} {ERLE_H}" role="img" aria-label="echo reduction over time">',
           f'<rect x="{LEFT}" y="{top}" width="{PLOT_W}" height="{bottom - top}" class="lane"/>',
           f'<text x="{LEFT - 8}" y="{(top + bottom) / 2}" class="lbl" text-anchor="end">echo reduction</text>']
    if not rec.erle:
        out.append(f'<text x="{LEFT + 12}" y="{(top + bottom) / 2 + 4}" class="absent">'
                   "no echo reduction recorded</text></svg>")
        return "\n".join(out)
    values = [db for _, db in rec.erle]
    lo, hi = min(0.0, min(values)), max(10.0, 1.1 * max(values))
    step = _nice_step(hi - lo, 4)

    def y(db: float) -> float:
        return bottom - (db - lo) / (hi - lo) * (bottom - top)

    for i in range(math.ceil(lo / step), int(hi / step) + 1):
        db = i * step
        out.append(f'<line x1="{LEFT}" y1="{y(db):.1f}" x2="{LEFT + PLOT_W}" y2="{y(db):.1f}" class="grid"/>')
        out.append(f'<text x="{LEFT - 4}" y="{y(db) + 4:.1f}" class="tick" text-anchor="end">{db:g} dB</text>')
    step_t = _nice_step(duration)
    for i in range(int(duration / step_t) + 1):
        x = _x(i * step_t, duration)
        out.append(f'<text x="{x:.1f}" y="{ERLE_H - 6}" class="tick" text-anchor="middle">{i * step_t:g} s</text>')
    pts = " ".join(f"{_x(t, duration):.1f},{y(db):.1f}" for t, db in rec.erle)
    out.append(f'<polyline points="{pts}" class="erle"/>')
    if len(rec.erle) == 1:
        t, db = rec.erle[0]
        out.append(f'<circle cx="{_x(t, duration):.1f}" cy="{y(db):.1f}" r="3" class="erle-dot"/>')
    out.append("</svg>")
    return "\n".join(out)


#: Summary key -> (label, unit); a figure the recording lacks is shown as not recorded.
SUMMARY_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("wake_latency_ms", "wake latency", "ms"),
    ("preroll_ms", "pre-roll", "ms"),
    ("barge_in_stop_ms", "barge-in stop time", "ms"),
    ("end_reason", "end reason", ""),
    ("duration_s", "duration", "s"),
)
RECORDER_FIELDS = (  # shown when the recording has them
    ("sent_from_s", "sent audio starts at", "s"),
    ("dropped", "frames the recorder dropped", ""),
    ("truncated_at_s", "cut at the size bound", "s"),
)
_NONE_MEANS = {"barge_in_stop_ms": "none", "truncated_at_s": "not cut"}


def _figure(key: str, summary: Mapping[str, Any], unit: str) -> str:
    if key not in summary:
        return '<span class="absent">not recorded</span>'
    value = summary[key]
    if value is None:
        return f'<span class="absent">{_NONE_MEANS.get(key, "not measured")}</span>'
    number = _number(value)
    if number is not None:
        shown = f"{number:.0f}" if unit == "ms" else f"{number:.2f}" if unit == "s" else f"{number:g}"
        return _esc(f"{shown} {unit}".strip())
    return _esc(value)


def _summary_html(rec: Recording) -> str:
    fields = [*SUMMARY_FIELDS, *((k, label, unit) for k, label, unit in RECORDER_FIELDS if k in rec.summary)]
    rows = [f"<tr><th>{_esc(label)}</th><td>{_figure(key, rec.summary, unit)}</td></tr>"
            for key, label, unit in fields]
    known = {key for key, _, _ in (*SUMMARY_FIELDS, *RECORDER_FIELDS)}
    rows += [f"<tr><th>{_esc(k)}</th><td>{_esc(json.dumps(v, ensure_ascii=False))}</td></tr>"
             for k, v in rec.summary.items() if k not in known]
    return '<table class="summary">' + "".join(rows) + "</table>"


def _files_html(rec: Recording) -> str:
    items = []
    for t in rec.tracks:
        state = (f"{t.duration_s:.2f} s at {t.rate} Hz" if t.samples is not None
                 else f'<span class="absent">absent: {_esc(t.problem)}</span>')
        items.append(f"<li><code>{_esc(t.file)}</code> ({_esc(TRACKS[t.key][1])}): {state}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _events_html(rec: Recording) -> str:
    rows = []
    for e in rec.events:
        colour, _ = KIND_STYLE.get(e.kind, UNKNOWN_STYLE)
        t = "?" if e.t is None else f"{e.t:.2f}"
        extra = ", ".join(f"{k}={v}" for k, v in e.fields.items())
        rows.append(f'<tr><td class="num">{t}</td><td style="color:{colour}">{_esc(e.kind)}</td>'
                    f"<td>{_esc(e.text)}</td><td class=\"extra\">{_esc(extra)}</td></tr>")
    if not rows:
        return '<p class="absent">no events recorded</p>'
    return ('<table class="events"><tr><th>t (s)</th><th>event</th><th>text</th><th>fields</th></tr>'
            + "".join(rows) + "</table>")


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 6px}
.meta{color:#555} .absent{fill:#a00;color:#a00;font-style:italic}
svg{display:block;max-width:none} .chart{overflow-x:auto}
.lane{fill:#f7f7f7;stroke:#ddd} .grid{stroke:#e4e4e4} .tick{font-size:10px;fill:#666}
.lbl{font-size:12px;fill:#222} .sub{font-size:10px;fill:#666} .evl{font-size:11px}
.state{stroke:#fff} .s0{fill:#e8e8e8} .s1{fill:#d6d6d6}
.mark{stroke-width:1} .mark-strong{stroke-width:2;stroke-dasharray:4 2} .ev line{shape-rendering:crispEdges}
.span-user{fill:#7b3fb5;fill-opacity:.10} .span-agent{fill:#b04a2a;fill-opacity:.10}
.erle{fill:none;stroke:#6a3d9a;stroke-width:1.5} .erle-dot{fill:#6a3d9a}
table{border-collapse:collapse} td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
.summary th{font-weight:normal;color:#555} .summary td{font-weight:600}
.events td{border-top:1px solid #eee} .num{text-align:right;font-variant-numeric:tabular-nums}
.extra{color:#666;font-size:12px} .legend span{display:inline-block;margin-right:18px}
.sw{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px}
"""


def render_report(rec: Recording) -> str:
    """The whole page as one HTML string."""
    title = f"vatel-edge session {rec.session}" if rec.session else f"vatel-edge recording {rec.path.name}"
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{_esc(label)}</span>'
                     for _, label, c in TRACKS.values())
    meta = " · ".join(_esc(s) for s in (f"started {rec.started_at}" if rec.started_at else "start time not recorded",
                                        f"{rec.duration_s:.2f} s", str(rec.path)))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="meta">{meta}</p>',
        "<h2>Summary</h2>",
        _summary_html(rec),
        "<h2>Audio and events</h2>",
        f'<p class="legend">{legend}<span>microphone and sent share one scale; played has its own. '
        "Shaded: the user speaking (microphone), the agent's turns (played).</span></p>",
        f'<div class="chart">{timeline_svg(rec)}</div>',
        "<h2>Echo reduction</h2>",
        f'<div class="chart">{erle_svg(rec)}</div>',
        "<h2>Events</h2>",
        _events_html(rec),
        "<h2>Files</h2>",
        _files_html(rec),
        "</body></html>",
        "",
    ])


def write_report(directory: str | os.PathLike[str], out_file: str | os.PathLike[str] | None = None) -> Path:
    """Render DIR's recording to `out_file` (default DIR/report.html); the path written."""
    rec = load_recording(directory)
    target = Path(out_file) if out_file is not None else rec.path / REPORT_NAME
    target.write_text(render_report(rec), encoding="utf-8")
    return target


def report_command(directory: str, out_file: str | None, out: TextIO) -> int:
    """`vatel-edge report DIR [--out FILE]`: write the page, print its path."""
    try:
        path = write_report(directory, out_file)
    except OSError as exc:
        raise RecordingError(f"cannot write the report: {exc}") from None
    print(path, file=out)
    return 0
