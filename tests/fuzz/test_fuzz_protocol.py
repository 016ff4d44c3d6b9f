"""Property tests of the protocol core: the decoder raises only ProtocolError; encode/decode round-trip."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vatel_edge.audio.format import SAMPLE_WIDTH
from vatel_edge.errors import ProtocolError
from vatel_edge.protocol import (
    SERVER_TYPES,
    InputAudioTranscript,
    ResponseAudio,
    ResponseText,
    ServerEvent,
    SessionStarted,
    SpeechStarted,
    ToolCall,
    UnknownEvent,
    decode_server_message,
    describe,
    encode_input_audio,
    encode_tool_call_output,
)

# No per-example deadline (the machine is shared and loaded); a bounded number of examples keeps it quick,
# and pytest-timeout bounds the whole test, so a hang still fails.
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Text that is valid UTF-8 once encoded (no lone surrogates), as a real WebSocket text frame is.
frame_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]))
# The names the decoder looks at, so random objects often hit the interesting branches.
FIELD_NAMES = (
    "id", "turn_id", "audio", "is_final", "text", "transcript", "emulated",
    "toolCallId", "toolName", "arguments", "name", "value", "dataType", "required", "type",
)  # fmt: skip
field_names = st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
b64_ish = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=12)
field_values = json_values | b64_ish | st.lists(st.dictionaries(field_names, json_values, max_size=6), max_size=3)


def decode_or_protocol_error(frame: str | bytes) -> ServerEvent | None:
    """Decode; ProtocolError is the only acceptable failure (anything else fails the test)."""
    try:
        event = decode_server_message(frame)
    except ProtocolError as exc:
        assert str(exc)  # a message for the log line
        return None
    describe(event)  # every decoded event can be logged
    return event


@FUZZ
@given(frame_text)
def test_arbitrary_text_raises_only_protocol_error(frame: str) -> None:
    """Any text frame decodes or raises ProtocolError; nothing else escapes."""
    decode_or_protocol_error(frame)


@FUZZ
@given(st.binary())
def test_binary_frames_are_refused(frame: bytes) -> None:
    """A binary frame is always a ProtocolError (frames are JSON text)."""
    with pytest.raises(ProtocolError):
        decode_server_message(frame)


@FUZZ
@given(json_values)
def test_arbitrary_json_raises_only_protocol_error(value: Any) -> None:
    """Any JSON document decodes or raises ProtocolError."""
    decode_or_protocol_error(json.dumps(value))


@FUZZ
@given(
    mtype=st.sampled_from(SERVER_TYPES) | st.text(max_size=10),
    data=st.none() | json_values | st.dictionaries(field_names, field_values, max_size=8),
    extra=st.dictionaries(st.text(max_size=6), json_values, max_size=2),
)
def test_structured_random_messages_raise_only_protocol_error(mtype: str, data: Any, extra: dict[str, Any]) -> None:
    """Objects with a known (or random) type and random data decode to that type or raise ProtocolError."""
    message = {**extra, "type": mtype, "data": data}
    event = decode_or_protocol_error(json.dumps(message))
    if event is None:
        return
    if mtype in SERVER_TYPES:
        assert event.type == mtype
    else:
        assert isinstance(event, UnknownEvent)
        assert event.event_type == mtype[:64]


@FUZZ
@given(st.binary(max_size=4800).map(lambda b: b[: len(b) - len(b) % SAMPLE_WIDTH]))
def test_input_audio_round_trip(pcm: bytes) -> None:
    """encode_input_audio -> JSON -> base64 decode gives back the PCM."""
    message = json.loads(encode_input_audio(pcm))
    assert message["type"] == "input_audio"
    assert base64.b64decode(message["data"]["audio"], validate=True) == pcm


@FUZZ
@given(st.binary(max_size=99).filter(lambda b: len(b) % SAMPLE_WIDTH))
def test_input_audio_refuses_odd_length(pcm: bytes) -> None:
    """Half a PCM16 sample is a ProtocolError, never a malformed message."""
    with pytest.raises(ProtocolError):
        encode_input_audio(pcm)


@FUZZ
@given(tool_call_id=frame_text.filter(bool), output=frame_text)
def test_tool_call_output_round_trip(tool_call_id: str, output: str) -> None:
    """tool_call_output carries the id and output unchanged and is valid UTF-8 JSON."""
    encoded = encode_tool_call_output(tool_call_id, output)
    message = json.loads(encoded.encode("utf-8"))
    assert message == {"type": "tool_call_output", "data": {"toolCallId": tool_call_id, "output": output}}


def test_tool_call_output_with_lone_surrogate_is_sendable_or_protocol_error() -> None:
    """Output text that is not valid Unicode must give a sendable frame or a ProtocolError."""
    try:
        encoded = encode_tool_call_output("call-1", "bad \udcff byte")
    except ProtocolError:
        return
    encoded.encode("utf-8")


def test_huge_integer_literal_is_a_protocol_error() -> None:
    """A 5000-digit number in a frame is a ProtocolError like any other malformed frame."""
    with pytest.raises(ProtocolError):
        decode_server_message('{"type": "response_text", "data": {"x": ' + "1" * 5000 + "}}")


# --------------------------------------------------------------------------- server messages round trip

ids = frame_text.filter(bool)


@FUZZ
@given(session_id=frame_text)
def test_session_started_fields(session_id: str) -> None:
    """session_started carries data.id into session_id."""
    event = decode_server_message(json.dumps({"type": "session_started", "data": {"id": session_id}}))
    assert event == SessionStarted(session_id=session_id)


@FUZZ
@given(turn_id=frame_text, pcm=st.binary(max_size=4800), is_final=st.booleans())
def test_response_audio_fields(turn_id: str, pcm: bytes, is_final: bool) -> None:
    """response_audio gives back the turn, the exact PCM bytes and is_final."""
    pcm = pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH]
    data = {"turn_id": turn_id, "audio": base64.b64encode(pcm).decode(), "is_final": is_final}
    event = decode_server_message(json.dumps({"type": "response_audio", "data": data}))
    assert event == ResponseAudio(turn_id=turn_id, audio=pcm, is_final=is_final)
    assert f"audio=<{len(pcm)} bytes>" in repr(event)  # the payload is never in a log line


@FUZZ
@given(turn_id=frame_text, text=frame_text, is_final=st.booleans(), ensure_ascii=st.booleans())
def test_response_text_fields(turn_id: str, text: str, is_final: bool, ensure_ascii: bool) -> None:
    """response_text gives back turn, text and is_final, however the JSON escapes them."""
    data = {"turn_id": turn_id, "text": text, "is_final": is_final}
    event = decode_server_message(json.dumps({"type": "response_text", "data": data}, ensure_ascii=ensure_ascii))
    assert event == ResponseText(turn_id=turn_id, text=text, is_final=is_final)


@FUZZ
@given(transcript=frame_text, is_final=st.booleans(), turn_id=st.none() | frame_text)
def test_input_audio_transcript_fields(transcript: str, is_final: bool, turn_id: str | None) -> None:
    """input_audio_transcript gives back transcript, is_final and the optional turn_id."""
    data: dict[str, Any] = {"transcript": transcript, "is_final": is_final}
    if turn_id is not None:
        data["turn_id"] = turn_id
    event = decode_server_message(json.dumps({"type": "input_audio_transcript", "data": data}))
    assert event == InputAudioTranscript(transcript=transcript, is_final=is_final, turn_id=turn_id)


@FUZZ
@given(emulated=st.none() | st.booleans())
def test_speech_started_fields(emulated: bool | None) -> None:
    """speech_started carries emulated, false when absent."""
    data = {} if emulated is None else {"emulated": emulated}
    event = decode_server_message(json.dumps({"type": "speech_started", "data": data}))
    assert event == SpeechStarted(emulated=bool(emulated))


argument = st.fixed_dictionaries(
    {"name": ids, "value": json_values},
    optional={
        "dataType": st.text(max_size=8),
        "required": st.booleans(),
        "description": frame_text,
        "type": st.text(max_size=8),
    },
)


@FUZZ
@given(tool_call_id=ids, tool_name=ids, arguments=st.lists(argument, max_size=5))
def test_tool_call_fields(tool_call_id: str, tool_name: str, arguments: list[dict[str, Any]]) -> None:
    """tool_call gives back id, name and every argument binding in order, values unchanged."""
    data = {"toolCallId": tool_call_id, "toolName": tool_name, "arguments": arguments}
    event = decode_server_message(json.dumps({"type": "tool_call", "data": data}))
    assert isinstance(event, ToolCall)
    assert (event.tool_call_id, event.tool_name) == (tool_call_id, tool_name)
    assert len(event.arguments) == len(arguments)
    for got, sent in zip(event.arguments, arguments, strict=True):
        assert got.name == sent["name"]
        # NaN != NaN; compare through JSON, which is how the value arrived.
        assert json.dumps(got.value) == json.dumps(sent["value"])
        assert got.data_type == sent.get("dataType")
        assert got.required == sent.get("required")
        assert got.description == sent.get("description")
        assert got.kind == sent.get("type")
    assert event.argument_map() == {a.name: a.value for a in event.arguments}
