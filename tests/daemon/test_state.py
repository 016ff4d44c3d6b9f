"""The conversation state machine: every legal transition, every illegal one, listeners and logging."""

from __future__ import annotations

import itertools
import logging

import pytest

from vatel_edge.state import TRANSITIONS, Event, IllegalTransition, State, StateMachine, Transition

# (from, event, to): the table as the product promises it, written out independently of TRANSITIONS.
LEGAL = [
    (State.STARTING, Event.STARTED, State.LISTENING),
    (State.LISTENING, Event.WAKE, State.CONNECTING),
    (State.CONNECTING, Event.CONNECTED, State.IN_SESSION),
    (State.CONNECTING, Event.CONNECT_FAILED, State.LISTENING),
    (State.IN_SESSION, Event.AGENT_AUDIO, State.AGENT_SPEAKING),
    (State.AGENT_SPEAKING, Event.AGENT_DONE, State.IN_SESSION),
    (State.AGENT_SPEAKING, Event.BARGE_IN, State.IN_SESSION),
    (State.IN_SESSION, Event.SESSION_END, State.ENDING),
    (State.AGENT_SPEAKING, Event.SESSION_END, State.ENDING),
    (State.ENDING, Event.ENDED, State.LISTENING),
    (State.STARTING, Event.STOP, State.STOPPING),
    (State.LISTENING, Event.STOP, State.STOPPING),
    (State.CONNECTING, Event.STOP, State.STOPPING),
    (State.IN_SESSION, Event.STOP, State.STOPPING),
    (State.AGENT_SPEAKING, Event.STOP, State.STOPPING),
    (State.ENDING, Event.STOP, State.STOPPING),
    (State.STOPPING, Event.STOPPED, State.STOPPED),
]


def _machine_in(state: State) -> StateMachine:
    sm = StateMachine()
    sm._state = state  # table tests start from every state directly
    return sm


@pytest.mark.parametrize(("old", "event", "new"), LEGAL, ids=[f"{o.value}-{e.value}" for o, e, _ in LEGAL])
def test_legal_transition_reaches_its_state(old: State, event: Event, new: State) -> None:
    sm = _machine_in(old)
    assert sm.fire(event) is new
    assert sm.state is new


def test_table_has_exactly_the_promised_transitions() -> None:
    assert {(o, e): n for o, e, n in LEGAL} == TRANSITIONS


ILLEGAL = [(s, e) for s, e in itertools.product(State, Event) if (s, e) not in {(o, ev) for o, ev, _ in LEGAL}]


@pytest.mark.parametrize(("old", "event"), ILLEGAL, ids=[f"{o.value}-{e.value}" for o, e in ILLEGAL])
def test_illegal_transition_raises_and_keeps_state(old: State, event: Event) -> None:
    sm = _machine_in(old)
    with pytest.raises(IllegalTransition, match=event.value):
        sm.fire(event)
    assert sm.state is old
    assert sm.fire_if(event) is False


def test_barge_in_is_a_named_transition_back_to_the_users_turn() -> None:
    sm = StateMachine()
    seen: list[Transition] = []
    sm.add_listener(seen.append)
    for ev in (Event.STARTED, Event.WAKE, Event.CONNECTED, Event.AGENT_AUDIO, Event.BARGE_IN):
        sm.fire(ev, reason="test")
    assert sm.state is State.IN_SESSION
    assert [t.event for t in seen][-1] is Event.BARGE_IN
    assert seen[-1].old is State.AGENT_SPEAKING


def test_every_transition_is_logged_once_with_state_field(caplog: pytest.LogCaptureFixture) -> None:
    sm = StateMachine()
    with caplog.at_level(logging.INFO, logger="vatel_edge.state"):
        sm.fire(Event.STARTED)
        sm.fire(Event.WAKE, reason="voice")
    lines = [r for r in caplog.records if r.name == "vatel_edge.state"]
    assert [r.getMessage() for r in lines] == [
        "state starting -> listening on started",
        "state listening -> connecting on wake (voice)",
    ]
    assert lines[1].vatel == {"state": "connecting", "event": "wake"}  # type: ignore[attr-defined]
