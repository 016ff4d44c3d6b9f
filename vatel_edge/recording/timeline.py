"""A recording's timeline.json from the daemon's events: the event kinds, the summary figures. No I/O.

The daemon's event hub (events.py) has the facts; this maps them to the recording's kinds (recording/__init__.py
documents the file) and keeps what the summary needs. Times are time.monotonic() seconds; `t` in the file is
seconds since the recording's t0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: protocol.describe's transcript lines: "input_audio_transcript (final): TEXT", "response_text turn=t1: TEXT".
_TRANSCRIPT = re.compile(
    r"(?P<kind>input_audio_transcript|response_text)(?: turn=(?P<turn>\S+))?(?: \((?P<final>final|interim)\))?: "
    r"(?P<text>.*)",
    re.DOTALL,
)
_ROLES = {"input_audio_transcript": "user", "response_text": "agent"}
#: The hub's kinds copied as they are.
_SAME = ("speech_started", "speech_stopped")


def _ms(seconds: float) -> float:
    return round(1000.0 * seconds, 1)


class TimelineBuilder:
    """Collects one recording's events (in hub order) and the facts of its summary (of its first session)."""

    def __init__(self, t0: float, session: str) -> None:
        self.t0 = t0
        self.session = session  # the server's session id once session_started named it
        self._named = False
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.erle: list[list[float]] = []
        self.wake_at: float | None = None
        self.first_sent_at: float | None = None  # when the first input_audio was sent
        self.first_sent_captured: float | None = None  # capture time of its first sample
        self.sent_from_s: float | None = None
        self._interruption_at: float | None = None
        self.barge_trigger_at: float | None = None  # the first barge-in's decision (server interruption or local)
        self.end_reason: str | None = None
        self._tool_calls: dict[str, float] = {}

    def _event(self, at: float, kind: str, text: str, **fields: Any) -> None:
        self.events.append((at, {"kind": kind, "text": text, **fields}))

    def add(self, kind: str, text: str, fields: Mapping[str, Any], at: float) -> None:
        """One hub event published at monotonic time `at`."""
        if kind == "state":
            old, new = str(fields.get("old", "")), str(fields.get("new", ""))
            self._event(at, "state", f"{old} -> {new}", old=old, new=new, event=fields.get("event"))
            if new == "agent_speaking":
                self._event(at, "agent_turn_start", "the agent starts speaking")
            elif old == "agent_speaking":
                self._event(at, "agent_turn_end", f"the agent stops speaking ({fields.get('event')})",
                            reason=fields.get("event"))
        elif kind == "wake":
            self.wake_at = self.wake_at if self.wake_at is not None else at
            self._event(at, "wake", text, reason=fields.get("reason", text))
        elif kind in _SAME:
            self._event(at, kind, text)
        elif kind in _ROLES:
            m = _TRANSCRIPT.fullmatch(text)
            words = m.group("text") if m else text
            final = m is None or m.group("final") != "interim"
            self._event(at, "transcript", words, role=_ROLES[kind], final=final,
                        **({"turn_id": m.group("turn")} if m and m.group("turn") else {}))
        elif kind == "interruption":
            self._interruption_at = at
            self._event(at, "interrupted", "the server interrupted the agent")
        elif kind == "tool_call":
            self._tool_calls[str(fields.get("id"))] = at
        elif kind == "tool_call_output":
            called = self._tool_calls.pop(str(fields.get("id")), at)
            name, outcome = fields.get("name"), fields.get("outcome")
            self.events.append((called, {"kind": "tool_call", "text": f"{name}: {outcome}", "name": name,
                                         "outcome": outcome, "id": fields.get("id"), "duration_ms": _ms(at - called)}))
        elif kind == "barge_in":
            source = str(fields.get("source", ""))
            if self.barge_trigger_at is None:
                server = source.startswith("server") and self._interruption_at is not None
                self.barge_trigger_at = self._interruption_at if server else at
            self._event(at, "barge_in", text, source=source, heard_ms=fields.get("heard_ms"))
        elif kind == "session_started":
            if not self._named and fields.get("session_id"):
                self.session, self._named = str(fields["session_id"]), True
        elif kind == "session_closed":
            self.end_reason = self.end_reason or text
            self._event(at, "end", text, reason=fields.get("reason", text))
        elif kind == "error" and fields.get("stage") == "connect":
            self.end_reason = self.end_reason or f"connect failed: {text}"
            self._event(at, "end", f"connect failed: {text}", reason="connect failed")
        elif kind == "mute":
            self._event(at, "state", text, muted=fields.get("muted"))

    def sent(self, sent_at: float, captured_at: float) -> None:
        """An input_audio frame was sent at `sent_at`, its first sample captured at `captured_at` (first one kept)."""
        if self.first_sent_at is None:
            self.first_sent_at, self.first_sent_captured = sent_at, captured_at
            self.sent_from_s = round(captured_at - self.t0, 6)  # sample-exact: 1 sample is 42 us

    def add_erle(self, at: float, db: float) -> None:
        """The echo canceller's echo reduction at `at`."""
        self.erle.append([round(at - self.t0, 3), round(db, 1)])

    def summary(self, drops: list[float], end_reason: str) -> dict[str, Any]:
        """The summary figures (duration_s is the writer's to fill in: it knows the files' length)."""
        wake_latency = preroll = stop = None
        if self.wake_at is not None and self.first_sent_at is not None:
            wake_latency = _ms(self.first_sent_at - self.wake_at)
            assert self.first_sent_captured is not None
            preroll = _ms(max(0.0, self.wake_at - self.first_sent_captured))
        if self.barge_trigger_at is not None:
            after = [d for d in drops if d >= self.barge_trigger_at - 0.005]
            stop = _ms(max(0.0, min(after) - self.barge_trigger_at)) if after else None
        return {"wake_latency_ms": wake_latency, "preroll_ms": preroll, "barge_in_stop_ms": stop,
                "end_reason": self.end_reason or end_reason, "duration_s": None, "sent_from_s": self.sent_from_s}

    def document(self, started_at: str, rate: int, files: Mapping[str, str], summary: dict[str, Any]) -> dict[str, Any]:
        """timeline.json as a dict: events sorted by time, relative to t0."""
        events = [{"t": round(at - self.t0, 4), **ev} for at, ev in sorted(self.events, key=lambda e: e[0])]
        return {"version": 1, "session": self.session, "started_at": started_at, "rate": rate, "files": dict(files),
                "events": events, "erle": self.erle, "summary": summary}
