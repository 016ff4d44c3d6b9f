"""The visible state: a table of the daemon's states, the mute and the service's reachability, and the model that
follows the daemon's events (no I/O)."""

from __future__ import annotations

import pytest

from vatel_edge.feedback.visible import FeedbackModel, Visible, visible_state
from vatel_edge.state import State

V, S = Visible, State


@pytest.mark.parametrize(
    ("state", "muted", "offline", "expected"),
    [
        (S.STARTING, False, False, V.OFF),
        (S.STARTING, True, False, V.MUTED),
        (S.LISTENING, False, False, V.LISTENING),
        (S.LISTENING, False, True, V.OFFLINE),
        (S.LISTENING, True, True, V.MUTED),
        (S.CONNECTING, False, True, V.CONNECTING),
        (S.IN_SESSION, False, False, V.IN_SESSION),
        (S.AGENT_SPEAKING, False, False, V.AGENT_SPEAKING),
        (S.ENDING, False, False, V.IN_SESSION),
        (S.ENDING, True, False, V.MUTED),
        (S.STOPPING, True, False, V.OFF),
        (S.STOPPED, False, False, V.OFF),
    ],
)
def test_visible_state_table(state: State, muted: bool, offline: bool, expected: Visible) -> None:
    """Muted wins over every live state, offline shows only while listening, stopping is off."""
    assert visible_state(state, muted=muted, offline=offline) is expected


def _state(old: str, new: str, event: str) -> tuple[str, dict[str, str]]:
    return "state", {"old": old, "new": new, "event": event}


def test_a_whole_session_gives_each_visible_state_once_in_order() -> None:
    """wake, connected, agent audio, barge-in, session end, ended: one change each, none for the repeats."""
    model = FeedbackModel(S.STARTING, muted=False)
    events = [
        _state("starting", "listening", "started"), ("wake", {"reason": "test"}),
        _state("listening", "connecting", "wake"), _state("connecting", "in_session", "connected"),
        ("session_started", {}), _state("in_session", "agent_speaking", "agent_audio"),
        _state("agent_speaking", "in_session", "barge_in"), ("barge_in", {"source": "server"}),
        _state("in_session", "ending", "session_end"), _state("ending", "listening", "ended"),
    ]
    changes = [c for kind, fields in events if (c := model.event(kind, fields)) is not None]
    assert changes == [V.LISTENING, V.CONNECTING, V.IN_SESSION, V.AGENT_SPEAKING, V.IN_SESSION, V.LISTENING]


def test_offline_after_a_failed_open_until_a_session_opens_and_while_tokens_fail() -> None:
    """A failed open shows offline at once (not listening first); a failing token prefetch too; both clear."""
    model = FeedbackModel(S.LISTENING, muted=False)
    assert model.event(*_state("listening", "connecting", "wake")) is V.CONNECTING
    assert model.event(*_state("connecting", "listening", "connect_failed")) is V.OFFLINE
    assert model.event("error", {"stage": "connect", "error": "x"}) is None
    assert model.event(*_state("listening", "connecting", "wake")) is V.CONNECTING
    assert model.event(*_state("connecting", "in_session", "connected")) is V.IN_SESSION
    model.event(*_state("in_session", "ending", "session_end"))
    assert model.event(*_state("ending", "listening", "ended")) is V.LISTENING
    assert model.token_status("offline: token endpoint unreachable (retrying in 2 s)") is V.OFFLINE
    assert model.token_status("offline: still") is None
    assert model.token_status("ready") is V.LISTENING


def test_mute_shows_over_everything_and_unmute_returns_to_the_state() -> None:
    model = FeedbackModel(S.LISTENING, muted=False)
    assert model.event("mute", {"muted": True, "source": "switch"}) is V.MUTED
    assert model.token_status("offline: x") is None  # still muted
    assert model.event("mute", {"muted": False, "source": "switch"}) is V.OFFLINE
