"""The device's controls as plain decisions (talk/stop, volume steps, the switch debouncer) and the state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vatel_edge.feedback.controls import SwitchPosition, talk_action, volume_after
from vatel_edge.feedback.store import DEFAULT_VOLUME, StateStore, state_directory
from vatel_edge.state import State


@pytest.mark.parametrize(
    ("state", "cuttable", "action"),
    [
        (State.LISTENING, False, "trigger"),
        (State.AGENT_SPEAKING, True, "cut"),
        (State.AGENT_SPEAKING, False, "end"),  # the turn was cut already: a second press ends the session
        (State.IN_SESSION, False, "end"),
        (State.CONNECTING, False, "end"),
        (State.ENDING, False, None),
        (State.STARTING, False, None),
    ],
)
def test_talk_button(state: State, cuttable: bool, action: str | None) -> None:
    """Press to start a session, press during agent speech to cut it, press otherwise in a session to end it."""
    assert talk_action(state, cuttable) == action


def test_volume_steps_stay_within_0_and_100() -> None:
    assert volume_after(100, 10, up=True) == 100
    assert volume_after(95, 10, up=True) == 100
    assert volume_after(50, 10, up=False) == 40
    assert volume_after(5, 10, up=False) == 0


def test_the_switch_counts_only_a_stable_position() -> None:
    """Contact bounce (one odd read) never toggles the mute; two equal reads do."""
    pos = SwitchPosition(False)
    assert [pos.read(x) for x in (True, False, True, False)] == [None, None, None, None]
    assert pos.read(True) is None and pos.read(True) is True and pos.position is True
    assert pos.read(True) is None
    assert pos.read(False) is None and pos.read(False) is False


def test_state_store_keeps_the_volume_atomically(tmp_path: Path) -> None:
    """The volume survives a new store on the same directory; a broken file means the default."""
    store = StateStore(tmp_path)
    assert store.volume == DEFAULT_VOLUME
    store.set_volume(70)
    assert json.loads((tmp_path / "state.json").read_text()) == {"volume": 70}
    assert StateStore(tmp_path).volume == 70
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left
    (tmp_path / "state.json").write_text("{not json")
    assert StateStore(tmp_path).volume == DEFAULT_VOLUME
    (tmp_path / "state.json").write_text('{"volume": 400}')
    assert StateStore(tmp_path).volume == DEFAULT_VOLUME


def test_an_unwritable_directory_is_logged_once_and_the_value_kept_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path / "missing")
    store.set_volume(60)
    store.set_volume(50)
    assert store.volume == 50
    assert len([r for r in caplog.records if "cannot keep the volume" in r.getMessage()]) == 1


def test_state_directory_is_the_configured_one_else_systemds() -> None:
    assert state_directory("/x", {"STATE_DIRECTORY": "/y"}) == Path("/x")
    assert state_directory("", {"STATE_DIRECTORY": "/var/lib/vatel-edge:/other"}) == Path("/var/lib/vatel-edge")
    assert state_directory("", {}) is None
    assert StateStore(None).volume == DEFAULT_VOLUME
