"""The protocol core against JSON fixtures: every server message, every malformed shape, the encoders."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from vatel_edge import protocol
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.devkit.simulator.messages import (
    ClientInputAudio,
    ClientMessageError,
    ClientToolCallOutput,
    parse_client_message,
    server_message,
)
from vatel_edge.errors import ProtocolError

PCM = bytes(range(256)) * 3  # 768 bytes, even
B64 = base64.b64encode(PCM).decode()


def frame(mtype: Any, data: Any = None, *, with_data: bool = True) -> str:
    msg: dict[str, Any] = {"type": mtype}
    if with_data:
        msg["data"] = data
    return json.dumps(msg)


# ----------------------------------------------------------------------------- valid messages


def test_session_started() -> None:
    ev = protocol.decode_server_message(frame("session_started", {"id": "call-1"}))
    assert ev == protocol.SessionStarted(session_id="call-1")


def test_response_audio_decodes_pcm() -> None:
    ev = protocol.decode_server_message(frame("response_audio", {"turn_id": "t1", "audio": B64, "is_final": True}))
    assert isinstance(ev, protocol.ResponseAudio)
    assert (ev.turn_id, ev.audio, ev.is_final) == ("t1", PCM, True)


def test_response_audio_repr_and_describe_never_show_the_payload() -> None:
    ev = protocol.ResponseAudio(turn_id="t1", audio=PCM, is_final=False)
    assert B64[:16] not in repr(ev) and "768 bytes" in repr(ev)
    assert protocol.describe(ev) == "response_audio turn=t1 768 bytes"


def test_response_text() -> None:
    ev = protocol.decode_server_message(frame("response_text", {"turn_id": "t1", "text": "Hi", "is_final": False}))
    assert ev == protocol.ResponseText(turn_id="t1", text="Hi", is_final=False)


def test_input_audio_transcript_with_and_without_turn_id() -> None:
    ev = protocol.decode_server_message(frame("input_audio_transcript", {"transcript": "hey", "is_final": True}))
    assert ev == protocol.InputAudioTranscript(transcript="hey", is_final=True, turn_id=None)
    ev = protocol.decode_server_message(
        frame("input_audio_transcript", {"transcript": "he", "is_final": False, "turn_id": "u1"})
    )
    assert ev == protocol.InputAudioTranscript(transcript="he", is_final=False, turn_id="u1")


@pytest.mark.parametrize("emulated", [True, False])
def test_speech_started(emulated: bool) -> None:
    ev = protocol.decode_server_message(frame("speech_started", {"emulated": emulated}))
    assert ev == protocol.SpeechStarted(emulated=emulated)


def test_tool_call_with_arguments() -> None:
    data = {
        "toolCallId": "c1",
        "toolName": "set_light",
        "arguments": [
            {"name": "room", "type": "static", "dataType": "string", "description": "d", "required": True,
             "value": "kitchen"},
            {"name": "level", "dataType": "number", "value": 40},
        ],
    }
    ev = protocol.decode_server_message(frame("tool_call", data))
    assert isinstance(ev, protocol.ToolCall)
    assert (ev.tool_call_id, ev.tool_name) == ("c1", "set_light")
    assert ev.argument_map() == {"room": "kitchen", "level": 40}
    assert ev.arguments[0] == protocol.ToolArgument(
        name="room", value="kitchen", data_type="string", required=True, description="d", kind="static"
    )
    assert protocol.describe(ev) == "tool_call set_light id=c1 args=[room,level]"


@pytest.mark.parametrize(
    ("mtype", "expected"),
    [
        ("speech_stopped", protocol.SpeechStopped()),
        ("interruption", protocol.Interruption()),
        ("session_ended", protocol.SessionEnded()),
        ("speech_started", protocol.SpeechStarted(emulated=False)),
    ],
)
@pytest.mark.parametrize("shape", ["empty", "null", "missing"])
def test_signal_messages_are_lenient_about_data(mtype: str, expected: protocol.ServerEvent, shape: str) -> None:
    """PROTOCOL.md: data may be missing on speech_started/stopped, interruption and session_ended."""
    text = {"empty": frame(mtype, {}), "null": frame(mtype, None), "missing": frame(mtype, with_data=False)}[shape]
    assert protocol.decode_server_message(text) == expected


def test_unknown_type_is_an_event_not_an_error() -> None:
    ev = protocol.decode_server_message(frame("agent_thinking", {"x": 1}))
    assert ev == protocol.UnknownEvent(event_type="agent_thinking")
    assert "agent_thinking" in protocol.describe(ev)


def test_unknown_type_name_is_truncated() -> None:
    ev = protocol.decode_server_message(frame("x" * 500, {}))
    assert isinstance(ev, protocol.UnknownEvent) and len(ev.event_type) == 64


def test_describe_covers_every_event() -> None:
    events: list[protocol.ServerEvent] = [
        protocol.SessionStarted("s"), protocol.ResponseText("t", "hello", True),
        protocol.InputAudioTranscript("hey", False), protocol.SpeechStarted(True), protocol.SpeechStopped(),
        protocol.Interruption(), protocol.SessionEnded(),
    ]
    lines = [protocol.describe(e) for e in events]
    assert lines == [
        "session_started id=s", "response_text turn=t (final): hello", "input_audio_transcript (interim): hey",
        "speech_started (VAD emulated)", "speech_stopped", "interruption", "session_ended",
    ]


# ----------------------------------------------------------------------------- malformed shapes

MALFORMED = {
    "empty frame": "",
    "not JSON": "{type: session_started",
    "JSON array": json.dumps([{"type": "session_started"}]),
    "JSON string": json.dumps("session_started"),
    "JSON null": "null",
    "missing type": json.dumps({"data": {}}),
    "non-string type": json.dumps({"type": 7, "data": {}}),
    "empty type": json.dumps({"type": "", "data": {}}),
    "session_started without data": frame("session_started", with_data=False),
    "session_started data is a list": frame("session_started", []),
    "session_started id missing": frame("session_started", {}),
    "session_started id is a number": frame("session_started", {"id": 12}),
    "response_audio data is a string": frame("response_audio", "abc"),
    "response_audio turn_id missing": frame("response_audio", {"audio": B64, "is_final": True}),
    "response_audio turn_id is a number": frame("response_audio", {"turn_id": 1, "audio": B64, "is_final": True}),
    "response_audio audio missing": frame("response_audio", {"turn_id": "t", "is_final": True}),
    "response_audio audio is a list": frame("response_audio", {"turn_id": "t", "audio": [1, 2], "is_final": True}),
    "response_audio bad base64": frame("response_audio", {"turn_id": "t", "audio": "!!notbase64!!", "is_final": True}),
    "response_audio base64 with bad padding": frame(
        "response_audio", {"turn_id": "t", "audio": "AAA", "is_final": True}
    ),
    "response_audio odd-length PCM": frame(
        "response_audio", {"turn_id": "t", "audio": base64.b64encode(b"abc").decode(), "is_final": True}
    ),
    "response_audio is_final is a string": frame("response_audio", {"turn_id": "t", "audio": B64, "is_final": "yes"}),
    "response_text text missing": frame("response_text", {"turn_id": "t", "is_final": True}),
    "response_text text is null": frame("response_text", {"turn_id": "t", "text": None, "is_final": True}),
    "response_text is_final is 1": frame("response_text", {"turn_id": "t", "text": "x", "is_final": 1}),
    "transcript missing": frame("input_audio_transcript", {"is_final": True}),
    "transcript turn_id is a number": frame("input_audio_transcript", {"transcript": "x", "is_final": True,
                                                                        "turn_id": 3}),
    "transcript is_final is null": frame("input_audio_transcript", {"transcript": "x", "is_final": None}),
    "speech_started emulated is a string": frame("speech_started", {"emulated": "true"}),
    "speech_stopped data is a list": frame("speech_stopped", []),
    "interruption data is a number": frame("interruption", 5),
    "tool_call without data": frame("tool_call", with_data=False),
    "tool_call without id": frame("tool_call", {"toolName": "x", "arguments": []}),
    "tool_call with empty id": frame("tool_call", {"toolCallId": "", "toolName": "x", "arguments": []}),
    "tool_call id is a number": frame("tool_call", {"toolCallId": 5, "toolName": "x", "arguments": []}),
    "tool_call without name": frame("tool_call", {"toolCallId": "c", "arguments": []}),
    "tool_call arguments is an object": frame("tool_call", {"toolCallId": "c", "toolName": "x",
                                                            "arguments": {"a": 1}}),
    "tool_call argument is a string": frame("tool_call", {"toolCallId": "c", "toolName": "x", "arguments": ["a"]}),
    "tool_call argument without name": frame("tool_call", {"toolCallId": "c", "toolName": "x",
                                                           "arguments": [{"value": 1}]}),
    "deeply nested JSON": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("text", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_frames_raise_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_server_message(text)


def test_binary_frame_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="binary frame"):
        protocol.decode_server_message(frame("session_started", {"id": "x"}).encode())


def test_oversize_frame_is_rejected_before_parsing() -> None:
    big = frame("response_text", {"turn_id": "t", "text": "a" * protocol.MAX_FRAME_BYTES, "is_final": True})
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.decode_server_message(big)
    # just under the limit is accepted
    ok = frame("response_text", {"turn_id": "t", "text": "a" * 1000, "is_final": True})
    assert isinstance(protocol.decode_server_message(ok, max_bytes=len(ok)), protocol.ResponseText)


def test_error_messages_never_quote_the_audio_payload() -> None:
    secretish = base64.b64encode(b"\x01\x02\x03").decode()
    with pytest.raises(ProtocolError) as info:
        protocol.decode_server_message(frame("response_audio", {"turn_id": "t", "audio": secretish, "is_final": True}))
    assert secretish not in str(info.value)


# ----------------------------------------------------------------------------- encoders


def test_input_audio_round_trips_through_the_simulator_decoder() -> None:
    pcm = bytes(VATEL_FORMAT.nbytes(20))
    msg = parse_client_message(protocol.encode_input_audio(pcm))
    assert msg == ClientInputAudio(pcm)


def test_input_audio_refuses_odd_length_pcm() -> None:
    with pytest.raises(ProtocolError):
        protocol.encode_input_audio(b"\x00\x01\x02")


def test_tool_call_output_round_trips_with_unicode() -> None:
    text = protocol.encode_tool_call_output("c1", "ok ✓ \"quoted\"")
    assert parse_client_message(text) == ClientToolCallOutput("c1", "ok ✓ \"quoted\"")
    assert json.loads(text) == {"type": "tool_call_output", "data": {"toolCallId": "c1", "output": "ok ✓ \"quoted\""}}


def test_tool_call_output_refuses_an_empty_id() -> None:
    with pytest.raises(ProtocolError):
        protocol.encode_tool_call_output("", "x")


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "[]",
        json.dumps({"type": "input_audio"}),
        json.dumps({"type": "input_audio", "data": {"audio": "!!"}}),
        json.dumps({"type": "input_audio", "data": {"audio": base64.b64encode(b"abc").decode()}}),
        json.dumps({"type": "tool_call_output", "data": {"toolCallId": "", "output": "x"}}),
        json.dumps({"type": "tool_call_output", "data": {"toolCallId": "c", "output": 5}}),
        json.dumps({"type": "hello", "data": {}}),
    ],
)
def test_simulator_decoder_rejects_bad_client_messages(text: str) -> None:
    with pytest.raises(ClientMessageError):
        parse_client_message(text)


def test_simulator_server_messages_decode_with_the_client_decoder() -> None:
    ev = protocol.decode_server_message(server_message("response_audio", {"turn_id": "t", "audio": B64,
                                                                          "is_final": False}))
    assert ev == protocol.ResponseAudio(turn_id="t", audio=PCM, is_final=False)
