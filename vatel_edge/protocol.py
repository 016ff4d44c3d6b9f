"""Vatel voice-session protocol core: encode client messages, decode server messages.

No I/O here: JSON text in, typed events out (and the reverse). See ../shared/vatel/PROTOCOL.md.
Lenient where the public clients are (missing `data` on speech_started, speech_stopped,
interruption and session_ended), strict everywhere else: every malformed shape raises ProtocolError.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vatel_edge.audio.format import SAMPLE_WIDTH
from vatel_edge.errors import ProtocolError

#: Largest server frame we accept. A 1 s response_audio chunk at 24 kHz is 48 kB (64 kB in
#: base64); 1 MiB leaves room for long text while refusing hostile frames.
MAX_FRAME_BYTES = 1 << 20


@dataclass(frozen=True)
class SessionStarted:
    """`session_started`: the call started."""

    session_id: str
    type: str = field(default="session_started", init=False)


@dataclass(frozen=True)
class ResponseAudio:
    """`response_audio`: a chunk of the agent's speech (decoded PCM16 LE mono 24 kHz)."""

    turn_id: str
    audio: bytes
    is_final: bool
    type: str = field(default="response_audio", init=False)

    def __repr__(self) -> str:  # never put the payload in a log line
        return (
            f"ResponseAudio(turn_id={self.turn_id!r}, audio=<{len(self.audio)} bytes>, "
            f"is_final={self.is_final})"
        )


@dataclass(frozen=True)
class ResponseText:
    """`response_text`: the agent's text for a turn; may refine until is_final."""

    turn_id: str
    text: str
    is_final: bool
    type: str = field(default="response_text", init=False)


@dataclass(frozen=True)
class InputAudioTranscript:
    """`input_audio_transcript`: speech-to-text of the user, interim until is_final."""

    transcript: str
    is_final: bool
    turn_id: str | None = None
    type: str = field(default="input_audio_transcript", init=False)


@dataclass(frozen=True)
class SpeechStarted:
    """`speech_started`: server VAD heard the user start (emulated: synthesized from a transcript)."""

    emulated: bool = False
    type: str = field(default="speech_started", init=False)


@dataclass(frozen=True)
class SpeechStopped:
    """`speech_stopped`: server VAD heard the user stop."""

    type: str = field(default="speech_stopped", init=False)


@dataclass(frozen=True)
class Interruption:
    """`interruption`: the user interrupted the agent; stop playing now."""

    type: str = field(default="interruption", init=False)


@dataclass(frozen=True)
class ToolArgument:
    """One binding of a tool call's `arguments` list."""

    name: str
    value: Any
    data_type: str | None = None
    required: bool | None = None
    description: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class ToolCall:
    """`tool_call`: run a client-side tool, then answer with tool_call_output."""

    tool_call_id: str
    tool_name: str
    arguments: tuple[ToolArgument, ...] = ()
    type: str = field(default="tool_call", init=False)

    def argument_map(self) -> dict[str, Any]:
        """The argument list as name -> value (a later duplicate name wins)."""
        return {a.name: a.value for a in self.arguments}


@dataclass(frozen=True)
class SessionEnded:
    """`session_ended`: the call ended; the server closes the socket."""

    type: str = field(default="session_ended", init=False)


@dataclass(frozen=True)
class UnknownEvent:
    """A well-formed message of a type this client does not know: reported, not fatal."""

    event_type: str
    type: str = field(default="unknown", init=False)


ServerEvent = (
    SessionStarted
    | ResponseAudio
    | ResponseText
    | InputAudioTranscript
    | SpeechStarted
    | SpeechStopped
    | Interruption
    | ToolCall
    | SessionEnded
    | UnknownEvent
)

SERVER_TYPES = (
    "session_started",
    "response_audio",
    "response_text",
    "input_audio_transcript",
    "speech_started",
    "speech_stopped",
    "interruption",
    "tool_call",
    "session_ended",
)

# PROTOCOL.md "Leniency seen in the public clients": data may be missing on these.
_DATA_OPTIONAL = frozenset({"speech_started", "speech_stopped", "interruption", "session_ended"})


# --------------------------------------------------------------------------- encoding


def encode_input_audio(pcm: bytes) -> str:
    """`input_audio` with base64 PCM16 LE mono 24 kHz."""
    if len(pcm) % SAMPLE_WIDTH:
        raise ProtocolError(f"input_audio: odd-length PCM16 ({len(pcm)} bytes)")
    audio = base64.b64encode(pcm).decode("ascii")
    return json.dumps({"type": "input_audio", "data": {"audio": audio}}, separators=(",", ":"))


def encode_tool_call_output(tool_call_id: str, output: str) -> str:
    """`tool_call_output` answering the tool_call with `tool_call_id`."""
    if not tool_call_id:
        raise ProtocolError("tool_call_output: empty toolCallId")
    # Tool output may carry lone surrogates (surrogateescape-decoded bytes); the frame must be UTF-8.
    output = output.encode("utf-8", "replace").decode("utf-8")
    return json.dumps(
        {"type": "tool_call_output", "data": {"toolCallId": tool_call_id, "output": output}},
        separators=(",", ":"),
        ensure_ascii=False,
    )


# --------------------------------------------------------------------------- decoding


def _str(data: Mapping[str, Any], key: str, mtype: str, *, allow_empty: bool = True) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{mtype}: data.{key} must be a string, got {_kind(value)}")
    if not allow_empty and not value:
        raise ProtocolError(f"{mtype}: data.{key} must not be empty")
    return value


def _bool(data: Mapping[str, Any], key: str, mtype: str, default: bool | None = None) -> bool:
    if key not in data and default is not None:
        return default
    value = data.get(key)
    if not isinstance(value, bool):
        raise ProtocolError(f"{mtype}: data.{key} must be a boolean, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return type(value).__name__


def decode_pcm(b64: str, mtype: str = "response_audio") -> bytes:
    """Decode base64 PCM16; reject bad base64 and odd lengths."""
    try:
        pcm = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"{mtype}: data.audio is not valid base64") from exc
    if len(pcm) % SAMPLE_WIDTH:
        raise ProtocolError(f"{mtype}: data.audio is odd-length PCM16 ({len(pcm)} bytes)")
    return pcm


def _tool_arguments(raw: object) -> tuple[ToolArgument, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ProtocolError(f"tool_call: data.arguments must be a list, got {_kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ProtocolError(f"tool_call: data.arguments[{i}] must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"tool_call: data.arguments[{i}].name must be a non-empty string")
        dtype = item.get("dataType")
        req = item.get("required")
        desc = item.get("description")
        kind = item.get("type")
        out.append(
            ToolArgument(
                name=name,
                value=item.get("value"),
                data_type=dtype if isinstance(dtype, str) else None,
                required=req if isinstance(req, bool) else None,
                description=desc if isinstance(desc, str) else None,
                kind=kind if isinstance(kind, str) else None,
            )
        )
    return tuple(out)


def decode_server_message(frame: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> ServerEvent:
    """Decode one server frame into a typed event.

    Raises ProtocolError for anything malformed; an unknown `type` gives UnknownEvent.
    """
    if isinstance(frame, bytes):
        # PROTOCOL.md: every frame is a UTF-8 JSON *text* object.
        raise ProtocolError(f"binary frame ({len(frame)} bytes); expected a JSON text frame")
    if len(frame) > max_bytes:
        raise ProtocolError(f"frame of {len(frame)} characters exceeds the {max_bytes} limit")
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and int literals > 4300 digits
        raise ProtocolError(f"frame is not valid JSON: {exc.__class__.__name__}") from exc
    if not isinstance(msg, dict):
        raise ProtocolError(f"frame must be a JSON object, got {_kind(msg)}")
    mtype = msg.get("type")
    if not isinstance(mtype, str) or not mtype:
        raise ProtocolError("frame has no string `type`")
    data = msg.get("data")
    if data is None and mtype in _DATA_OPTIONAL:
        data = {}
    if mtype not in SERVER_TYPES:
        return UnknownEvent(event_type=mtype[:64])
    if not isinstance(data, dict):
        raise ProtocolError(f"{mtype}: `data` must be an object, got {_kind(data)}")

    if mtype == "session_started":
        return SessionStarted(session_id=_str(data, "id", mtype))
    if mtype == "response_audio":
        return ResponseAudio(
            turn_id=_str(data, "turn_id", mtype),
            audio=decode_pcm(_str(data, "audio", mtype), mtype),
            is_final=_bool(data, "is_final", mtype, default=False),
        )
    if mtype == "response_text":
        return ResponseText(
            turn_id=_str(data, "turn_id", mtype),
            text=_str(data, "text", mtype),
            is_final=_bool(data, "is_final", mtype, default=False),
        )
    if mtype == "input_audio_transcript":
        turn = data.get("turn_id")
        if turn is not None and not isinstance(turn, str):
            raise ProtocolError(f"{mtype}: data.turn_id must be a string, got {_kind(turn)}")
        return InputAudioTranscript(
            transcript=_str(data, "transcript", mtype),
            is_final=_bool(data, "is_final", mtype, default=False),
            turn_id=turn,
        )
    if mtype == "speech_started":
        return SpeechStarted(emulated=_bool(data, "emulated", mtype, default=False))
    if mtype == "speech_stopped":
        return SpeechStopped()
    if mtype == "interruption":
        return Interruption()
    if mtype == "tool_call":
        return ToolCall(
            tool_call_id=_str(data, "toolCallId", mtype, allow_empty=False),
            tool_name=_str(data, "toolName", mtype, allow_empty=False),
            arguments=_tool_arguments(data.get("arguments")),
        )
    return SessionEnded()


def describe(event: ServerEvent) -> str:
    """One log line per event, like the reference web example's event list; never a payload."""
    if isinstance(event, SessionStarted):
        return f"session_started id={event.session_id}"
    if isinstance(event, ResponseAudio):
        final = " final" if event.is_final else ""
        return f"response_audio turn={event.turn_id} {len(event.audio)} bytes{final}"
    if isinstance(event, ResponseText):
        final = " (final)" if event.is_final else ""
        return f"response_text turn={event.turn_id}{final}: {event.text}"
    if isinstance(event, InputAudioTranscript):
        final = " (final)" if event.is_final else " (interim)"
        return f"input_audio_transcript{final}: {event.transcript}"
    if isinstance(event, SpeechStarted):
        return "speech_started (VAD emulated)" if event.emulated else "speech_started"
    if isinstance(event, SpeechStopped):
        return "speech_stopped"
    if isinstance(event, Interruption):
        return "interruption"
    if isinstance(event, ToolCall):
        names = ",".join(a.name for a in event.arguments)
        return f"tool_call {event.tool_name} id={event.tool_call_id} args=[{names}]"
    if isinstance(event, SessionEnded):
        return "session_ended"
    return f"unknown message type {event.event_type!r} ignored"
