"""What `vatel-edge status` shows, in one place: the counters, the status assembly and its text.

`Counters` is the one tally the daemon keeps; `DaemonStatus` is one status answer (the control socket's
`status` command returns `to_dict()`), and `format_status` is the CLI's text of it. Besides the counters
it carries the component statistics collected while running: the player, the echo path (engine,
convergence, echo reduction) and the token provider.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from vatel_edge import __version__


@dataclass
class Counters:
    """Counters since the daemon started."""

    wakes: int = 0
    sessions: int = 0
    sessions_failed: int = 0
    interruptions: int = 0
    tool_calls: dict[str, int] = field(default_factory=Counter)  # by outcome: ok, error, timeout, cancelled, ...
    capture_overruns: int = 0
    capture_dropped: int = 0
    token_failures: int = 0
    connection_failures: int = 0
    bad_frames: int = 0  # malformed server frames skipped
    late_chunks_dropped: int = 0  # response_audio of interrupted turns ignored

    def count_tool_call(self, outcome: str) -> None:
        """One more answered tool call with `outcome` ("ok", "error")."""
        self.tool_calls[outcome] = self.tool_calls.get(outcome, 0) + 1

    def snapshot(self, capture: Mapping[str, int]) -> Counters:
        """A copy for a status answer, with the derived counts filled in (`capture`: Capture.stats)."""
        return dataclasses.replace(
            self,
            sessions_failed=self.token_failures + self.connection_failures,
            tool_calls=dict(self.tool_calls),
            capture_overruns=int(capture.get("overruns", 0)),
            capture_dropped=int(capture.get("dropped", 0)),
        )


@dataclass
class DaemonStatus:
    """What `vatel-edge status` shows; the daemon fills one in per status request (`to_dict()` is the answer).

    Times: `uptime_s` and `session_age_s` are durations; `last_error_at` is wall-clock (epoch seconds).
    """

    state: str
    uptime_s: float
    version: str = __version__
    pid: int = field(default_factory=os.getpid)
    wake_mode: str = ""
    session_id: str | None = None
    session_age_s: float | None = None
    token_status: str = ""
    counters: Counters = field(default_factory=Counters)
    last_error: str | None = None
    last_error_at: float | None = None
    #: Player.stats (underruns, periods, turns, interruptions, late_chunks_dropped, overflow_dropped, reopens).
    player: dict[str, int] = field(default_factory=dict)
    #: The echo path: engine, converged, erle_db and EchoPath.stats; {"engine": "none"} without one.
    echo: dict[str, Any] = field(default_factory=dict)
    #: TokenProvider.stats (tokens fetched and handed out, failures by class).
    tokens: dict[str, int] = field(default_factory=dict)
    #: Privacy mute: no wake fires, no session runs, no microphone audio leaves the device.
    muted: bool = False
    #: Who muted: "software" (control socket, MQTT) or "switch" (the hardware mute switch, which wins).
    mute_source: str | None = None

    @classmethod
    def of(
        cls,
        state: str,
        uptime_s: float,
        wake_mode: str,
        session_id: str | None,
        session_age_s: float | None,
        counters: Counters,
        parts: Mapping[str, Any] | None,
        last_error: str | None,
        last_error_at: float | None,
        *,
        muted: bool = False,
        mute_source: str | None = None,
    ) -> DaemonStatus:
        """The status of a daemon; `parts` is runtime.Runtime.stats() (None while no runtime runs)."""
        p = parts or {}
        return cls(
            state=state,
            uptime_s=round(uptime_s, 1),
            wake_mode=wake_mode,
            session_id=session_id,
            session_age_s=round(session_age_s, 1) if session_age_s is not None else None,
            token_status=str(p.get("token_status", "stopped")),
            counters=counters.snapshot(p.get("capture", {})),
            last_error=last_error,
            last_error_at=last_error_at,
            player=dict(p.get("player", {})),
            echo=dict(p.get("echo", {})),
            tokens=dict(p.get("tokens", {})),
            muted=muted,
            mute_source=mute_source,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the `status` command answers {"ok": true, "status": to_dict()})."""
        return asdict(self)


def format_duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 03 min', '4 d 02 h'."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m:02d} min"
    d, h = divmod(h, 24)
    return f"{d} d {h:02d} h"


def _num(value: object) -> str:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def format_status(status: Mapping[str, Any], *, now: float | None = None) -> str:
    """Human-readable multi-line text of a DaemonStatus dict (tolerant of missing keys)."""
    now = time.time() if now is None else now
    c = status.get("counters")
    counters: Mapping[str, Any] = c if isinstance(c, Mapping) else {}
    uptime = status.get("uptime_s")
    head = f"vatel-edge {status.get('version', '?')} (pid {status.get('pid', '?')})"
    if isinstance(uptime, (int, float)):
        head += f", up {format_duration(uptime)}"
    state = f"{status.get('state', '?')}"
    if status.get("muted"):
        state += f" (muted{' by the ' + str(status['mute_source']) if status.get('mute_source') else ''})"
    lines = [head, f"  state:        {state}"]
    if status.get("wake_mode"):
        lines.append(f"  wake:         {status['wake_mode']}")
    session_id = status.get("session_id")
    if session_id:
        age = status.get("session_age_s")
        lines.append(
            f"  session:      {session_id}"
            + (f" (for {format_duration(age)})" if isinstance(age, (int, float)) else "")
        )
    else:
        lines.append("  session:      none")
    if status.get("token_status"):
        lines.append(f"  token:        {status['token_status']}")
    tools = counters.get("tool_calls")
    tool_text = (
        ", ".join(f"{n} {outcome}" for outcome, n in sorted(tools.items())) or "none"
        if isinstance(tools, Mapping)
        else "?"
    )
    failed = counters.get("sessions_failed")
    sessions = _num(counters.get("sessions")) + (f" ({failed} failed)" if failed else "")
    lines += [
        "  counters:",
        f"    wakes                {_num(counters.get('wakes'))}",
        f"    sessions             {sessions}",
        f"    interruptions        {_num(counters.get('interruptions'))}",
        f"    tool calls           {tool_text}",
        f"    capture              {_num(counters.get('capture_overruns'))} overruns, "
        f"{_num(counters.get('capture_dropped'))} dropped frames",
        f"    token failures       {_num(counters.get('token_failures'))}",
        f"    connection failures  {_num(counters.get('connection_failures'))}",
        f"    bad server frames    {_num(counters.get('bad_frames'))}",
    ]
    lines += _component_lines(status)
    last_error = status.get("last_error")
    if last_error:
        at = status.get("last_error_at")
        when = f" ({format_duration(now - at)} ago)" if isinstance(at, (int, float)) else ""
        lines.append(f"  last error:   {last_error}{when}")
    else:
        lines.append("  last error:   none")
    return "\n".join(lines)


def _component_lines(status: Mapping[str, Any]) -> list[str]:
    """The player, echo path and token provider lines (only for the parts the status carries)."""
    lines: list[str] = []
    player = status.get("player")
    if isinstance(player, Mapping) and player:
        lines.append(
            f"  playback:     {_num(player.get('turns'))} turns, {_num(player.get('interruptions'))} interrupted, "
            f"{_num(player.get('underruns'))} underruns, {_num(player.get('reopens'))} reopens"
        )
    echo = status.get("echo")
    if isinstance(echo, Mapping) and echo:
        engine = echo.get("engine", "?")
        if engine == "none":
            lines.append("  echo:         no canceller")
        else:
            erle = echo.get("erle_db")
            reduction = f", {erle:.0f} dB echo reduction" if isinstance(erle, (int, float)) else ""
            converged = "converged" if echo.get("converged") else "not converged yet"
            lines.append(
                f"  echo:         {engine}, {converged}{reduction}; "
                f"{_num(echo.get('cancelled'))} frames cancelled, {_num(echo.get('failures'))} failures"
            )
    tokens = status.get("tokens")
    if isinstance(tokens, Mapping) and tokens:
        failed = sum(v for k, v in tokens.items() if k.startswith("failures_") and isinstance(v, int))
        lines.append(
            f"  tokens:       {_num(tokens.get('tokens_fetched'))} fetched, "
            f"{_num(tokens.get('tokens_handed_out'))} used, {failed} failed fetches"
        )
    return lines
