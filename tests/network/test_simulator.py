"""The simulator itself: it validates what clients send, records it, refuses non-loopback, runs the echo agent."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid

import httpx
import pytest
from websockets.asyncio.client import connect

from vatel_edge import protocol
from vatel_edge.audio.format import VATEL_FORMAT, level_dbfs
from vatel_edge.config import VatelConfig
from vatel_edge.devkit.simulator import SimSession, Simulator, run_simulator_command, tone
from vatel_edge.session import OutcomeKind, VatelSession
from vatel_edge.token import TokenClient, jwt_claims

KEY = "sk_test_SECRETKEY_0123456789"


async def post(sim: Simulator, body: object, *, key: str | None = KEY, raw: bytes | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with httpx.AsyncClient() as client:
        content = raw if raw is not None else json.dumps(body).encode()
        return await client.post(sim.base_url + "/v1/session-token", content=content, headers=headers)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_refuses_non_loopback_addresses(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        Simulator(host)


async def test_ipv6_loopback_works() -> None:
    async with Simulator("::1", api_key=KEY) as sim:
        assert sim.base_url.startswith("http://[::1]:")
        resp = await post(sim, {"agent_id": sim.agent_id})
        assert resp.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"agent_id": "AGENT", "colour": "red"}, 400, "additional properties"),
        ({}, 400, "agent_id"),
        ({"agent_id": "not-a-uuid"}, 400, "agent_id"),
        ({"agent_id": "AGENT", "version_id": "v1"}, 400, "version_id"),
        ({"agent_id": "AGENT", "prompt": 5}, 400, "prompt"),
        ({"agent_id": "AGENT", "chat": "yes"}, 400, "chat"),
        ({"agent_id": "AGENT", "transport": "carrier-pigeon"}, 400, "transport"),
        ([1, 2], 400, "object"),
        ({"agent_id": str(uuid.UUID(int=5))}, 404, "not found"),
        ({"agent_id": "AGENT", "transport": "webrtc"}, 503, "webrtc"),
    ],
)
async def test_token_endpoint_validates_the_body(sim: Simulator, body: object, status: int, text: str) -> None:
    body = json.loads(json.dumps(body).replace("AGENT", sim.agent_id))
    resp = await post(sim, body)
    assert resp.status_code == status
    assert text in resp.json()["error"]


async def test_token_endpoint_checks_the_key(sim: Simulator) -> None:
    assert (await post(sim, {"agent_id": sim.agent_id}, key="wrong")).status_code == 401
    assert (await post(sim, {"agent_id": sim.agent_id}, key=None)).status_code == 401
    assert all(r.headers.get("authorization") in (None, "<redacted>") for r in sim.token_requests)
    assert not any(r.auth_ok for r in sim.token_requests)


async def test_non_json_request_body_is_400_and_recorded(sim: Simulator) -> None:
    resp = await post(sim, None, raw=b"agent_id=1")
    assert resp.status_code == 400
    assert sim.token_requests[-1].body == "agent_id=1"


async def test_unknown_route_is_404(sim: Simulator) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.get(sim.base_url + "/v2/whatever")
    assert resp.status_code == 404


async def test_issued_tokens_are_jwts_with_exp_iat_and_jti(sim: Simulator) -> None:
    resp = await post(sim, {"agent_id": sim.agent_id})
    token = resp.json()["token"]
    claims = jwt_claims(token)
    assert claims is not None
    assert claims["agent_id"] == sim.agent_id and claims["jti"]
    assert claims["exp"] - claims["iat"] == pytest.approx(sim.token_ttl_s, abs=1.0)


async def test_client_message_errors_are_recorded(sim: Simulator) -> None:
    async def script(s: SimSession) -> None:
        await s.tool_call("lamp", {"on": True})
        await s.wait_seconds(30)

    sim.script = script
    url = VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url).ws_base + "/v1/connection?token="
    async with connect(url + sim.issue_token()) as ws:
        json.loads(await ws.recv())  # session_started
        call = json.loads(await ws.recv())
        call_id = call["data"]["toolCallId"]
        await ws.send(b"\x00binary")
        await ws.send("not json")
        await ws.send(json.dumps({"type": "input_audio", "data": {"audio": base64.b64encode(b"abc").decode()}}))
        await ws.send(json.dumps({"type": "input_audio", "data": {"audio": "%%%"}}))
        await ws.send(json.dumps({"type": "hello", "data": {}}))
        await ws.send(protocol.encode_tool_call_output("call_unknown", "x"))
        await ws.send(protocol.encode_tool_call_output(call_id, "on"))
        await ws.send(protocol.encode_tool_call_output(call_id, "on again"))
        await ws.send(protocol.encode_input_audio(bytes(VATEL_FORMAT.nbytes(20))))
        session = sim.sessions[0]
        async with asyncio.timeout(10):
            while len(session.input_audio) < VATEL_FORMAT.nbytes(20):
                await asyncio.sleep(0.01)
    errors = sim.client_errors
    expected = ["binary frame", "not JSON", "odd-length", "base64", "unknown client message type",
                "unknown toolCallId", "already answered"]
    assert len(errors) == len(expected)
    for err, text in zip(errors, expected, strict=True):
        assert text in err
    assert session.tool_outputs == {call_id: "on"}


async def test_reused_token_is_rejected_at_the_handshake(sim: Simulator) -> None:
    sim.script = lambda s: s.end_session()
    token = sim.issue_token()
    ws_base = VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url).ws_base
    async with await VatelSession.connect(ws_base, token, open_timeout=5) as session:
        [ev async for ev in session.events()]
    with pytest.raises(Exception, match="401"):
        await VatelSession.connect(ws_base, token, open_timeout=5)
    assert [h["status"] for h in sim.handshakes] == [101, 401]


async def test_default_echo_agent_answers_after_speech_and_silence() -> None:
    """The default script: user speech then a pause -> transcript, text, a tone turn, session_ended."""
    async with Simulator(api_key=KEY) as sim:
        cfg = VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url)
        async with TokenClient(cfg, KEY) as tokens:
            token = await tokens.fetch()
        events: list[protocol.ServerEvent] = []
        async with await VatelSession.connect(cfg.ws_base, token.value, open_timeout=5) as session:

            async def mic() -> None:
                speech, silence = tone(20, freq=300, level_dbfs=-10), bytes(VATEL_FORMAT.nbytes(20))
                for i in range(100):
                    await session.send_input_audio(speech if i < 20 else silence)

            sender = asyncio.create_task(mic())
            async with asyncio.timeout(20):
                events = [ev async for ev in session.events()]
            await sender
        types = [e.type for e in events]
        assert types[:4] == ["session_started", "speech_started", "speech_stopped", "input_audio_transcript"]
        assert "response_text" in types and types[-1] == "session_ended"
        audio = b"".join(e.audio for e in events if isinstance(e, protocol.ResponseAudio))
        assert VATEL_FORMAT.duration_ms(len(audio)) == pytest.approx(800, abs=1)
        assert level_dbfs(audio) > -20
        assert session.outcome is not None and session.outcome.kind is OutcomeKind.SESSION_ENDED
        assert sim.client_errors == [] and sim.script_errors == []


async def test_next_session_waits_for_sessions_in_order(sim: Simulator) -> None:
    sim.script = lambda s: s.end_session()
    ws_base = VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url).ws_base
    waiter = asyncio.create_task(sim.next_session())
    async with await VatelSession.connect(ws_base, sim.issue_token(), open_timeout=5) as session:
        [ev async for ev in session.events()]
    first = await waiter
    assert first is sim.sessions[0]
    await first.wait_closed()
    assert first.closed and first.client_close is not None


async def test_script_errors_are_recorded_and_close_1011(sim: Simulator) -> None:
    async def broken(s: SimSession) -> None:
        raise RuntimeError("script bug")

    sim.script = broken
    ws_base = VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url).ws_base
    async with await VatelSession.connect(ws_base, sim.issue_token(), open_timeout=5) as session:
        [ev async for ev in session.events()]
    assert session.outcome is not None and session.outcome.code == 1011
    assert sim.script_errors and "script bug" in sim.script_errors[0]


async def test_simulate_command_prints_how_to_connect_and_stops_on_cancel() -> None:
    out = io.StringIO()
    task = asyncio.create_task(run_simulator_command("127.0.0.1", 0, None, None, out))
    async with asyncio.timeout(10):
        while "ORG_API_KEY=" not in out.getvalue():
            await asyncio.sleep(0.01)
    text = out.getvalue()
    assert "http://127.0.0.1:" in text and "agent_id" in text
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_simulate_command_refuses_a_public_address() -> None:
    out = io.StringIO()
    assert await run_simulator_command("0.0.0.0", 0, "k", None, out) == 2
    assert "loopback" in out.getvalue()
