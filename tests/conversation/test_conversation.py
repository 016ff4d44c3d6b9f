"""conversation.py: what server events mean, fed as JSON frames, asserted as commands. No sockets, no sound."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import pytest

from vatel_edge.conversation import (
    CancelTools,
    Conversation,
    Cut,
    EndSession,
    Fire,
    Identified,
    Limits,
    Note,
    Play,
    RunTool,
)
from vatel_edge.state import Event
from vatel_edge.status import Counters

PCM = bytes(range(256)) * 4  # 1024 bytes of PCM16


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame(mtype: str, data: Any = None) -> str:
    return json.dumps({"type": mtype, "data": data if data is not None else {}})


def audio(turn: str, *, final: bool = False, pcm: bytes = PCM) -> str:
    return frame("response_audio", {"turn_id": turn, "audio": base64.b64encode(pcm).decode(), "is_final": final})


def tool_call(call_id: str, name: str = "set_light") -> str:
    return frame("tool_call", {"toolCallId": call_id, "toolName": name,
                               "arguments": [{"name": "on", "dataType": "boolean", "value": True}]})


def make(idle: float = 30.0, max_s: float = 300.0, **kw: Any) -> tuple[Conversation, Clock]:
    clock = Clock()
    conv = Conversation(Limits(idle, max_s), clock=clock, **kw)
    conv.start()
    return conv, clock


def kinds(commands: list[Any]) -> list[str]:
    return [type(c).__name__ for c in commands]


# ----------------------------------------------------------------------------- audio and turns


def test_response_audio_plays_and_enters_agent_speaking() -> None:
    conv, _ = make()
    out = conv.receive_frame(audio("t1"))
    assert out == [Play("t1", PCM, False, new_turn=True), Fire(Event.AGENT_AUDIO, "turn t1")]
    assert conv.agent_speaking and conv.current_turn == "t1"
    # the next chunk of the same turn is no new turn
    assert conv.receive_frame(audio("t1", final=True))[0] == Play("t1", PCM, True, new_turn=False)


def test_play_command_repr_never_shows_audio() -> None:
    (play, _fire) = make()[0].receive_frame(audio("t1"))
    assert "1024 bytes" in repr(play) and repr(PCM[:8]) not in repr(play)


def test_late_chunk_of_a_cut_turn_is_dropped_and_counted() -> None:
    counters = Counters()
    conv, _ = make(counters=counters)
    conv.receive_frame(audio("t1"))
    cut = conv.receive_frame(frame("interruption"))
    assert [c for c in cut if not isinstance(c, Note)] == [
        Cut("t1", "server interruption"), CancelTools(), Fire(Event.BARGE_IN, "server interruption")]
    assert conv.receive_frame(audio("t1", final=True)) == []
    assert counters.late_chunks_dropped == 1 and counters.interruptions == 1
    # the next turn plays normally
    assert kinds(conv.receive_frame(audio("t2"))) == ["Play", "Fire"]


def test_local_voice_cuts_once_and_the_servers_interruption_after_it_cuts_nothing() -> None:
    counters = Counters()
    conv, _ = make(counters=counters)
    conv.receive_frame(audio("t1"))
    assert conv.accepts_local_barge_in()
    assert conv.local_voice() == [Cut("t1", "local vad"), CancelTools(), Fire(Event.BARGE_IN, "local vad")]
    assert not conv.accepts_local_barge_in() and conv.is_cut("t1")
    assert conv.local_voice() == [], "a second local detection must not cut again"
    # The server's interruption of the same turn arrives later: noted on the timeline, nothing cut twice.
    assert conv.receive_frame(frame("interruption")) == [Note("interruption", "interruption")]
    assert counters.interruptions == 1


def test_local_voice_while_the_agent_is_silent_does_nothing() -> None:
    conv, _ = make()
    assert conv.local_voice() == []
    conv.receive_frame(audio("t1"))
    conv.tick(playing=False)  # drained
    assert conv.local_voice() == []


def test_server_interruption_with_nothing_playing_is_still_a_barge_in() -> None:
    """Every barge_in mode honours the server: its interruption cuts whatever may still be queued."""
    conv, _ = make()
    out = conv.receive_frame(frame("interruption"))
    assert kinds(out) == ["Note", "Cut", "CancelTools", "Fire"] and out[1] == Cut(None, "server interruption")


def test_agent_done_when_playback_drained() -> None:
    conv, clock = make()
    conv.receive_frame(audio("t1", final=True))
    clock.now += 1.0
    assert conv.tick(playing=True) == []
    clock.now += 1.0
    assert conv.tick(playing=False) == [Fire(Event.AGENT_DONE)]
    assert not conv.agent_speaking
    assert conv.tick(playing=False) == [], "agent_done fires once per stretch of speech"


def test_no_agent_done_after_a_cut() -> None:
    conv, _ = make()
    conv.receive_frame(audio("t1"))
    conv.local_voice()
    assert conv.tick(playing=False) == []


# ----------------------------------------------------------------------------- tools


def test_tool_call_runs_once_and_a_duplicate_id_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    conv, _ = make()
    out = conv.receive_frame(tool_call("c1"))
    assert out[0] == Note("tool_call", "tool_call set_light id=c1 args=[on]", {"name": "set_light", "id": "c1"})
    assert isinstance(out[1], RunTool) and out[1].call.tool_call_id == "c1"
    assert conv.receive_frame(tool_call("c1")) == [out[0]]
    assert "duplicate toolCallId c1" in caplog.text
    assert kinds(conv.receive_frame(tool_call("c2"))) == ["Note", "RunTool"]


def test_tool_answered_counts_the_outcome_and_notes_it() -> None:
    counters = Counters()
    conv, _ = make(counters=counters)
    (_, run) = conv.receive_frame(tool_call("c1"))
    assert isinstance(run, RunTool)
    assert conv.tool_answered(run.call, "ok") == [
        Note("tool_call_output", "set_light id=c1 -> ok", {"name": "set_light", "id": "c1", "outcome": "ok"})]
    conv.tool_answered(run.call, "error: exit 1")
    assert counters.tool_calls == {"ok": 1, "error": 1}


def test_tool_call_ids_are_per_session() -> None:
    """A new Conversation (a new session) runs an id the previous session already answered."""
    first, _ = make()
    first.receive_frame(tool_call("c1"))
    second, _ = make()
    assert kinds(second.receive_frame(tool_call("c1"))) == ["Note", "RunTool"]


# ----------------------------------------------------------------------------- the end of a session


def test_session_started_names_the_session() -> None:
    conv, _ = make()
    assert conv.receive_frame(frame("session_started", {"id": "call-7"})) == [
        Note("session_started", "session_started id=call-7", {"session_id": "call-7"}), Identified("call-7")]
    assert conv.session_id == "call-7"


def test_session_ended_ends_once_with_the_servers_reason() -> None:
    conv, _ = make()
    out = conv.receive_frame(frame("session_ended"))
    assert out == [Note("session_ended", "session_ended"), EndSession("session_ended by server")]
    assert conv.end("button") == [], "the first reason wins"
    assert conv.end_reason == "session_ended by server" and conv.ended


def test_idle_limit_ends_the_session_and_activity_postpones_it() -> None:
    conv, clock = make(idle=10.0)
    clock.now += 9.0
    conv.receive_frame(frame("speech_started", {"emulated": False}))  # the user talks: activity
    clock.now += 9.0
    assert conv.tick(playing=False) == []
    clock.now += 1.5
    assert conv.tick(playing=False) == [EndSession("idle for 10 s")]
    assert conv.tick(playing=False) == []


def test_playback_counts_as_activity() -> None:
    conv, clock = make(idle=10.0)
    conv.receive_frame(audio("t1"))
    for _ in range(30):
        clock.now += 1.0
        assert conv.tick(playing=True) == []


def test_max_duration_ends_even_an_active_session() -> None:
    conv, clock = make(idle=10.0, max_s=60.0)
    for _ in range(59):
        clock.now += 1.0
        assert not [c for c in conv.tick(playing=True) if isinstance(c, EndSession)]
    clock.now += 1.5
    assert conv.tick(playing=True) == [EndSession("max duration 60 s reached")]


def test_limits_count_from_start() -> None:
    """Time spent connecting (before start()) does not count against the limits."""
    clock = Clock()
    conv = Conversation(Limits(10.0, 300.0), clock=clock)
    clock.now += 60.0
    conv.start()
    assert conv.tick(playing=False) == []


def test_closed_sets_the_outcome_unless_a_reason_exists() -> None:
    conv, _ = make()
    conv.closed("dropped: connection lost")
    assert conv.end_reason == "dropped: connection lost"
    other, _ = make()
    other.end("button")
    other.closed("closed (code 1000)")
    assert other.end_reason == "button"


# ----------------------------------------------------------------------------- bad input


def test_timeline_fields_never_carry_transcripts_or_tool_outputs() -> None:
    """A note's text may quote the user (local consumers); its fields, which leave the device (MQTT), never do."""
    conv, _ = make()
    (note,) = conv.receive_frame(frame("input_audio_transcript", {"transcript": "my pin is 1234", "is_final": True}))
    assert isinstance(note, Note) and "1234" in note.text and note.fields == {}
    (_, run) = conv.receive_frame(tool_call("c9"))
    assert isinstance(run, RunTool)
    (answered,) = conv.tool_answered(run.call, "the secret output")
    assert isinstance(answered, Note) and "secret" not in repr(answered.fields)


def test_unknown_event_is_a_timeline_note_only() -> None:
    conv, _ = make()
    out = conv.receive_frame(frame("agent_thinking", {"x": 1}))
    assert len(out) == 1 and isinstance(out[0], Note) and "agent_thinking" in out[0].text


@pytest.mark.parametrize("bad", [
    "not json", json.dumps([1, 2]), json.dumps({"type": 7}),
    frame("response_audio", {"turn_id": "t1", "audio": "!!!", "is_final": False}),
    frame("response_audio", {"turn_id": "t1", "audio": base64.b64encode(b"odd").decode(), "is_final": False}),
    frame("tool_call", {"toolName": "x"}),
])
def test_malformed_frames_are_counted_and_change_nothing(bad: str) -> None:
    counters = Counters()
    conv, _ = make(counters=counters)
    conv.receive_frame(audio("t1"))
    out = conv.receive_frame(bad)
    assert kinds(out) == ["Note"] and out[0].kind == "bad_frame"  # type: ignore[union-attr]
    assert counters.bad_frames == 1
    assert conv.current_turn == "t1" and conv.agent_speaking and not conv.ended


# ----------------------------------------------------------------------------- the microphone policy


@pytest.mark.parametrize(("policy", "playing", "converged", "muted"), [
    ("auto", False, None, False),
    ("auto", True, None, True),  # no canceller: the echo would reach the server
    ("auto", True, False, True),  # a canceller that has not converged yet
    ("auto", True, True, False),
    ("mute", True, True, True),
    ("mute", False, True, False),
    ("stream", True, None, False),
])
def test_mic_during_playback_policy(policy: str, playing: bool, converged: bool | None, muted: bool) -> None:
    conv, _ = make(mic_policy=policy)
    assert conv.mute_mic(playing, converged) is muted


def test_conversation_imports_neither_asyncio_nor_websockets() -> None:
    """The conversation core has no I/O: importing it loads neither asyncio nor websockets."""
    code = ("import sys; import vatel_edge.conversation; "
            "print(sorted(m for m in ('asyncio', 'websockets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
