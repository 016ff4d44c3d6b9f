"""The simulator's side of the protocol: validate client messages, build server messages, mint JWTs.

Pure functions (no I/O), so the client's encoders can be round-tripped against them in tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vatel_edge.audio.format import SAMPLE_WIDTH

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

#: GenerateSessionTokenRequest properties (openapi-session.json; additionalProperties false).
TOKEN_REQUEST_KEYS = frozenset(
    {"agent_id", "version_id", "chat_id", "transport", "first_message", "prompt", "chat"}
)


class ClientMessageError(ValueError):
    """A client frame does not match the client message schemas."""


@dataclass(frozen=True)
class ClientInputAudio:
    """A valid `input_audio`: decoded PCM16."""

    pcm: bytes


@dataclass(frozen=True)
class ClientToolCallOutput:
    """A valid `tool_call_output`."""

    tool_call_id: str
    output: str


ClientMessage = ClientInputAudio | ClientToolCallOutput


def parse_client_message(frame: str | bytes) -> ClientMessage:
    """Validate one client frame against VoiceSessionClient*Message; ClientMessageError if it does not fit."""
    if isinstance(frame, bytes):
        raise ClientMessageError(f"binary frame ({len(frame)} bytes); the protocol uses JSON text frames")
    try:
        msg = json.loads(frame)
    except json.JSONDecodeError as exc:
        raise ClientMessageError(f"not JSON: {exc.msg}") from None
    if not isinstance(msg, dict):
        raise ClientMessageError(f"not a JSON object ({type(msg).__name__})")
    mtype, data = msg.get("type"), msg.get("data")
    if not isinstance(data, dict):
        raise ClientMessageError(f"{mtype!r}: data must be an object")
    if mtype == "input_audio":
        audio = data.get("audio")
        if not isinstance(audio, str):
            raise ClientMessageError("input_audio: data.audio must be a string")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientMessageError("input_audio: data.audio is not valid base64") from None
        if len(pcm) % SAMPLE_WIDTH:
            raise ClientMessageError(f"input_audio: odd-length PCM16 ({len(pcm)} bytes)")
        return ClientInputAudio(pcm)
    if mtype == "tool_call_output":
        call_id, output = data.get("toolCallId"), data.get("output")
        if not isinstance(call_id, str) or not call_id:
            raise ClientMessageError("tool_call_output: data.toolCallId must be a non-empty string")
        if not isinstance(output, str):
            raise ClientMessageError("tool_call_output: data.output must be a string")
        return ClientToolCallOutput(call_id, output)
    raise ClientMessageError(f"unknown client message type {mtype!r}")


def server_message(mtype: str, data: Mapping[str, Any] | None = None) -> str:
    """One server frame `{"type": ..., "data": {...}}`."""
    return json.dumps({"type": mtype, "data": dict(data or {})}, separators=(",", ":"), ensure_ascii=False)


def tool_arguments(args: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A name -> value mapping as the `arguments` binding list of a tool_call."""
    out = []
    for name, value in args.items():
        if isinstance(value, bool):
            dtype = "boolean"
        elif isinstance(value, (int, float)):
            dtype = "number"
        elif isinstance(value, str):
            dtype = "string"
        else:
            dtype = "object"
        out.append(
            {"name": name, "type": "static", "dataType": dtype, "description": "", "required": True, "value": value}
        )
    return out


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def make_jwt(claims: Mapping[str, Any], secret: bytes) -> str:
    """An HS256 JWT (header.payload.signature, base64url) like the platform's session tokens."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = _b64url(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def session_claims(
    agent_id: str, *, now: float, ttl_s: float, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """JWT claims of a session token: agent, scope, iat, exp, jti."""
    claims: dict[str, Any] = {
        "sub": agent_id,
        "agent_id": agent_id,
        "scope": ["voice"],
        "iat": int(now),
        "exp": round(now + ttl_s, 3),
        "jti": uuid.uuid4().hex,
    }
    claims.update(extra or {})
    return claims


def validate_token_request(body: object) -> str | None:
    """Why a token request body breaks GenerateSessionTokenRequest (400), or None if it fits."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    extra = sorted(set(body) - TOKEN_REQUEST_KEYS)
    if extra:
        return f"additional properties are not allowed: {', '.join(extra)}"
    agent_id = body.get("agent_id")
    if not isinstance(agent_id, str) or not UUID_RE.match(agent_id):
        return "agent_id is required and must be a UUID"
    for key in ("version_id", "chat_id"):
        if key in body and (not isinstance(body[key], str) or not UUID_RE.match(body[key])):
            return f"{key} must be a UUID"
    for key in ("first_message", "prompt"):
        if key in body and not isinstance(body[key], str):
            return f"{key} must be a string"
    if "transport" in body and body["transport"] not in ("websocket", "webrtc"):
        return "transport must be websocket or webrtc"
    if "chat" in body and not isinstance(body["chat"], bool):
        return "chat must be a boolean"
    return None
