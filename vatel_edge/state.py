"""The conversation state machine: one enum, one transition table, one place that logs transitions.

    STARTING --started--> LISTENING --wake--> CONNECTING --connected--> IN_SESSION
    IN_SESSION --agent_audio--> AGENT_SPEAKING --agent_done--> IN_SESSION
    AGENT_SPEAKING --barge_in--> IN_SESSION          (the user interrupted: playback cut)
    CONNECTING --connect_failed--> LISTENING
    IN_SESSION | AGENT_SPEAKING --session_end--> ENDING --ended--> LISTENING
    any live state --stop--> STOPPING --stopped--> STOPPED
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from vatel_edge.errors import VatelEdgeError

log = logging.getLogger(__name__)


class State(enum.Enum):
    """Where the conversation is."""

    STARTING = "starting"
    LISTENING = "listening"
    CONNECTING = "connecting"
    IN_SESSION = "in_session"
    AGENT_SPEAKING = "agent_speaking"
    ENDING = "ending"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Event(enum.Enum):
    """What happened; each legal (state, event) pair is one row of TRANSITIONS."""

    STARTED = "started"
    WAKE = "wake"
    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"
    AGENT_AUDIO = "agent_audio"
    AGENT_DONE = "agent_done"
    BARGE_IN = "barge_in"
    SESSION_END = "session_end"
    ENDED = "ended"
    STOP = "stop"
    STOPPED = "stopped"


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.STARTING, E.STARTED): S.LISTENING,
    (S.LISTENING, E.WAKE): S.CONNECTING,
    (S.CONNECTING, E.CONNECTED): S.IN_SESSION,
    (S.CONNECTING, E.CONNECT_FAILED): S.LISTENING,
    (S.IN_SESSION, E.AGENT_AUDIO): S.AGENT_SPEAKING,
    (S.AGENT_SPEAKING, E.AGENT_DONE): S.IN_SESSION,
    (S.AGENT_SPEAKING, E.BARGE_IN): S.IN_SESSION,
    (S.IN_SESSION, E.SESSION_END): S.ENDING,
    (S.AGENT_SPEAKING, E.SESSION_END): S.ENDING,
    (S.ENDING, E.ENDED): S.LISTENING,
    **{
        (s, E.STOP): S.STOPPING
        for s in (S.STARTING, S.LISTENING, S.CONNECTING, S.IN_SESSION, S.AGENT_SPEAKING, S.ENDING)
    },
    (S.STOPPING, E.STOPPED): S.STOPPED,
}

SESSION_STATES = frozenset({S.CONNECTING, S.IN_SESSION, S.AGENT_SPEAKING, S.ENDING})


class IllegalTransition(VatelEdgeError):
    """An event that the current state does not accept (a bug, never a user error)."""


@dataclass(frozen=True)
class Transition:
    """One performed transition, handed to listeners."""

    old: State
    event: Event
    new: State
    at: float
    reason: str


Listener = Callable[[Transition], None]


class StateMachine:
    """Holds the state; `fire()` is the only way to change it, and it logs every change."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._state = State.STARTING
        self._clock = clock
        self._listeners: list[Listener] = []
        self.entered_at = clock()

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    def can(self, event: Event) -> bool:
        """Whether `event` is legal now."""
        return (self._state, event) in TRANSITIONS

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` after every transition (must not raise, must not block)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener` (no error when it is not registered)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def fire(self, event: Event, reason: str = "") -> State:
        """Perform the transition for `event`; IllegalTransition when the state does not accept it."""
        old = self._state
        new = TRANSITIONS.get((old, event))
        if new is None:
            raise IllegalTransition(f"{event.value} is not allowed in state {old.value}")
        self._state = new
        now = self._clock()
        self.entered_at = now
        why = f" ({reason})" if reason else ""
        log.info(
            "state %s -> %s on %s%s",
            old.value,
            new.value,
            event.value,
            why,
            extra={"vatel": {"state": new.value, "event": event.value}},
        )
        tr = Transition(old, event, new, now, reason)
        for listener in list(self._listeners):
            listener(tr)
        return new

    def fire_if(self, event: Event, reason: str = "") -> bool:
        """Fire `event` when it is legal now; return whether it was."""
        if not self.can(event):
            return False
        self.fire(event, reason)
        return True
