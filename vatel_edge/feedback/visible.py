"""What the device shows: the daemon's visible state, derived from its events. No I/O, no asyncio.

    muted (any live state, also while starting)          -> muted
    listening, and the service unreachable                -> offline
    listening                                             -> listening
    connecting                                            -> connecting
    in_session, ending                                    -> in_session
    agent_speaking                                        -> agent_speaking
    starting (not muted), stopping, stopped               -> off

"Unreachable" is the last session open failing (until a session opens again) or the token provider
failing to prefetch (its status is neither "ready" nor "starting").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from vatel_edge.state import State


class Visible(enum.Enum):
    """The states LEDs and hooks show."""

    OFF = "off"
    LISTENING = "listening"
    CONNECTING = "connecting"
    IN_SESSION = "in_session"
    AGENT_SPEAKING = "agent_speaking"
    MUTED = "muted"
    OFFLINE = "offline"


_OF_STATE = {
    State.LISTENING: Visible.LISTENING,
    State.CONNECTING: Visible.CONNECTING,
    State.IN_SESSION: Visible.IN_SESSION,
    State.ENDING: Visible.IN_SESSION,
    State.AGENT_SPEAKING: Visible.AGENT_SPEAKING,
}
_TOKEN_OK = ("ready", "starting", "stopped")


def visible_state(state: State, *, muted: bool, offline: bool) -> Visible:
    """The visible state of the daemon in `state` (see the module docstring)."""
    if state in (State.STOPPING, State.STOPPED):
        return Visible.OFF
    if muted:
        return Visible.MUTED
    if state is State.LISTENING and offline:
        return Visible.OFFLINE
    return _OF_STATE.get(state, Visible.OFF)


class FeedbackModel:
    """Follows the daemon's events (and the token provider's status) and says when the visible state changes."""

    def __init__(self, state: State, *, muted: bool) -> None:
        self.state = state
        self.muted = muted
        self.connect_failed = False
        self.token_offline = False
        self.visible = self._compute()

    def _compute(self) -> Visible:
        return visible_state(self.state, muted=self.muted, offline=self.connect_failed or self.token_offline)

    def _update(self) -> Visible | None:
        new = self._compute()
        if new is self.visible:
            return None
        self.visible = new
        return new

    def event(self, kind: str, fields: Mapping[str, Any]) -> Visible | None:
        """One daemon event (events.DaemonEvent kind and fields); the new visible state, or None if unchanged."""
        if kind == "state":
            self.state = State(fields["new"])
            if fields.get("event") in ("connected", "connect_failed"):
                self.connect_failed = fields.get("event") == "connect_failed"
        elif kind == "mute":
            self.muted = bool(fields["muted"])
        elif kind == "error" and fields.get("stage") == "connect":
            self.connect_failed = True
        return self._update()

    def token_status(self, status: str) -> Visible | None:
        """The token provider's status now (polled); the new visible state, or None if unchanged."""
        self.token_offline = status not in _TOKEN_OK
        return self._update()
