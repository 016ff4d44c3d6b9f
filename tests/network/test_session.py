"""VatelSession against the simulator over a real WebSocket: events, sends, handshakes, every way to end."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tests.support.net import free_port
from vatel_edge import protocol
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.config import VatelConfig
from vatel_edge.devkit.simulator import SimSession, Simulator, end, steps, tone
from vatel_edge.errors import SessionError
from vatel_edge.session import HandshakeError, OutcomeKind, VatelSession


def ws_base(sim: Simulator) -> str:
    return VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url).ws_base


async def open_session(sim: Simulator, **kwargs: Any) -> tuple[VatelSession, str]:
    token = sim.issue_token()
    session = await VatelSession.connect(ws_base(sim), token, open_timeout=5, **kwargs)
    return session, token


async def collect(session: VatelSession, timeout: float = 10.0) -> list[protocol.ServerEvent]:
    async with asyncio.timeout(timeout):
        return [ev async for ev in session.events()]


async def test_full_session_audio_both_ways_and_a_tool_call(sim: Simulator) -> None:
    reply = tone(200, freq=500)
    mic = [tone(20, freq=300 + i) for i in range(10)]

    async def script(s: SimSession) -> None:
        await s.wait_audio(200)
        await s.speech_started()
        await s.speech_stopped()
        await s.send_transcript("turn on the light")
        output = await s.tool_call("set_light", {"room": "kitchen", "on": True})
        await s.send_turn("t1", reply, text=f"done: {output}", chunk_ms=40)
        await s.end_session()

    sim.script = script
    session, _ = await open_session(sim)
    events: list[protocol.ServerEvent] = []
    async with session:
        for chunk in mic:
            await session.send_input_audio(chunk)
        async for ev in session.events():
            events.append(ev)
            if isinstance(ev, protocol.ToolCall):
                assert ev.argument_map() == {"room": "kitchen", "on": True}
                await session.send_tool_call_output(ev.tool_call_id, "light on")
    types = [ev.type for ev in events]
    assert types[:5] == ["session_started", "speech_started", "speech_stopped", "input_audio_transcript", "tool_call"]
    assert types[-1] == "session_ended"
    audio = b"".join(ev.audio for ev in events if isinstance(ev, protocol.ResponseAudio))
    assert audio == reply
    finals = [ev.is_final for ev in events if isinstance(ev, protocol.ResponseAudio)]
    assert finals == [False] * (len(finals) - 1) + [True]
    assert any(isinstance(ev, protocol.ResponseText) and ev.text == "done: light on" for ev in events)

    sim_session = sim.sessions[0]
    assert bytes(sim_session.input_audio) == b"".join(mic)  # sample-exact
    assert list(sim_session.tool_outputs.values()) == ["light on"]
    assert sim.client_errors == [] and sim.script_errors == []
    assert session.outcome is not None and session.outcome.kind is OutcomeKind.SESSION_ENDED
    assert session.outcome.code == 1000
    assert session.session_id == sim_session.id
    stats = session.stats
    assert stats.audio_bytes_out == sum(map(len, mic)) and stats.audio_bytes_in == len(reply)
    assert stats.frames_out == len(mic) + 1 and stats.bad_frames == 0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
async def test_handshake_rejection_raises_with_status_and_no_token(
    sim: Simulator, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.faults.reject_handshake(status)
    token = sim.issue_token()
    with pytest.raises(HandshakeError) as info:
        await VatelSession.connect(ws_base(sim), token, open_timeout=5)
    assert info.value.status == status
    assert f"HTTP {status}" in str(info.value)
    assert token not in str(info.value)
    assert token not in caplog.text
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_unknown_token_is_rejected_401(sim: Simulator) -> None:
    with pytest.raises(HandshakeError) as info:
        await VatelSession.connect(ws_base(sim), "not-a-token-we-issued", open_timeout=5)
    assert info.value.status == 401


async def test_expired_token_is_rejected_401(sim: Simulator) -> None:
    with pytest.raises(HandshakeError) as info:
        await VatelSession.connect(ws_base(sim), sim.issue_token(kind="expired"), open_timeout=5)
    assert info.value.status == 401


async def test_handshake_that_never_answers_times_out(sim: Simulator) -> None:
    sim.faults.hang_handshake()
    token = sim.issue_token()
    with pytest.raises(HandshakeError, match="timed out") as info:
        await VatelSession.connect(ws_base(sim), token, open_timeout=0.5)
    assert info.value.status is None and token not in str(info.value)


async def test_connection_refused() -> None:
    port = free_port()
    with pytest.raises(HandshakeError, match="refused"):
        await VatelSession.connect(f"ws://127.0.0.1:{port}", "tok", open_timeout=2)


async def test_drop_without_close_frame_is_an_outcome_not_an_exception(sim: Simulator) -> None:
    async def script(s: SimSession) -> None:
        await s.send_turn("t1", tone(40))
        s.drop()

    sim.script = script
    session, _ = await open_session(sim)
    async with session:
        events = await collect(session)
    assert events[0].type == "session_started"
    assert session.outcome is not None
    assert session.outcome.kind is OutcomeKind.DROPPED and session.outcome.code == 1006
    with pytest.raises(SessionError, match="dropped"):
        await session.send_input_audio(bytes(VATEL_FORMAT.nbytes(20)))


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "going away"), (1008, "policy"), (1011, "oops")])
async def test_server_close_codes_become_outcomes(sim: Simulator, code: int, reason: str) -> None:
    async def script(s: SimSession) -> None:
        await s.close(code, reason)

    sim.script = script
    session, _ = await open_session(sim)
    async with session:
        await collect(session)
    assert session.outcome is not None
    assert session.outcome.kind is OutcomeKind.CLOSED_BY_SERVER
    assert (session.outcome.code, session.outcome.reason) == (code, reason)


async def test_session_ended_then_close_is_session_ended(sim: Simulator) -> None:
    sim.script = lambda s: s.end_session(code=1000, reason="bye")
    session, _ = await open_session(sim)
    async with session:
        events = await collect(session)
    assert events[-1] == protocol.SessionEnded()
    assert session.outcome is not None and session.outcome.kind is OutcomeKind.SESSION_ENDED


async def test_garbage_frames_are_skipped_counted_and_logged_once(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vatel_edge.session")

    async def script(s: SimSession) -> None:
        await s.send_raw("this is not json")
        await s.send_raw(b"\x00\x01binary")
        await s.send_raw(json.dumps([1, 2, 3]))
        await s.send_raw(json.dumps({"type": "response_audio", "data": {"turn_id": "t", "audio": "@@",
                                                                        "is_final": True}}))
        await s.send("brand_new_type", {"x": 1})
        await s.send_transcript("still alive")
        await s.end_session()

    sim.script = script
    session, _ = await open_session(sim)
    async with session:
        events = await collect(session)
    assert [e.type for e in events] == ["session_started", "unknown", "input_audio_transcript", "session_ended"]
    assert session.stats.bad_frames == 4 and session.stats.unknown_events == 1
    skipped = [r for r in caplog.records if "malformed" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(skipped) == 2  # the first one, and the end-of-session summary
    assert "skipped 4 malformed" in skipped[1].getMessage()


async def test_oversize_server_message_ends_with_a_protocol_error(sim: Simulator) -> None:
    async def script(s: SimSession) -> None:
        await s.send_raw("x" * (protocol.MAX_FRAME_BYTES + (128 << 10)))
        await s.wait_seconds(5)

    sim.script = script
    session, _ = await open_session(sim)
    async with session:
        await collect(session)
    assert session.outcome is not None
    assert session.outcome.kind is OutcomeKind.PROTOCOL_ERROR and session.outcome.code == 1009


async def test_closing_ourselves_is_closed_by_us_and_idempotent(sim: Simulator) -> None:
    sim.script = lambda s: s.wait_seconds(30)
    session, _ = await open_session(sim)
    await session.close(1000, "user done")
    await session.close()
    assert session.outcome is not None and session.outcome.kind is OutcomeKind.CLOSED_BY_US
    assert session.outcome.code == 1000
    sim_session = sim.sessions[0]
    await sim_session.wait_closed()
    assert sim_session.client_close == (1000, "user done")
    with pytest.raises(SessionError, match="closed"):
        await session.send_tool_call_output("c1", "x")


async def test_keepalive_pings_do_not_disturb_the_session(sim: Simulator) -> None:
    async def script(s: SimSession) -> None:
        await s.wait_seconds(0.8)
        await s.send_transcript("after pings")
        await s.end_session()

    sim.script = script
    session, _ = await open_session(sim, ping_interval=0.1, ping_timeout=2.0)
    async with session:
        events = await collect(session)
    assert [e.type for e in events] == ["session_started", "input_audio_transcript", "session_ended"]
    assert "ping" in sim.sessions[0].types_in()
    assert session.outcome is not None and session.outcome.kind is OutcomeKind.SESSION_ENDED


async def test_missing_pongs_end_the_session_as_keepalive_timeout(sim: Simulator) -> None:
    async def script(s: SimSession) -> None:
        s.stop_reading()
        await s.wait_seconds(30)

    sim.script = script
    session, _ = await open_session(sim, ping_interval=0.2, ping_timeout=0.3, close_timeout=0.5)
    async with session:
        await collect(session)
    assert session.outcome is not None and session.outcome.kind is OutcomeKind.KEEPALIVE_TIMEOUT


async def test_send_that_cannot_complete_ends_the_session_with_send_timeout(sim: Simulator) -> None:
    """A server that stops reading must not let our send buffer grow without bound."""

    async def script(s: SimSession) -> None:
        s.stop_reading()
        await s.wait_seconds(60)

    sim.script = script
    session, _ = await open_session(sim, send_timeout=0.5, ping_interval=None)
    chunk = bytes(VATEL_FORMAT.nbytes(1000))  # 1 s of audio per send to fill the socket buffers fast
    sent = 0
    async with session:
        with pytest.raises(SessionError, match="send_timeout"):
            for _ in range(5000):
                await session.send_input_audio(chunk)
                sent += 1
    assert session.outcome is not None and session.outcome.kind is OutcomeKind.SEND_TIMEOUT
    assert sent > 0


async def test_strict_simulator_closes_1008_on_a_client_error(sim: Simulator) -> None:
    sim.strict = True
    sim.script = lambda s: s.wait_seconds(30)
    session, _ = await open_session(sim)
    async with session:
        await session.send_tool_call_output("never-sent", "x")
        await collect(session)
    assert sim.client_errors and "unknown toolCallId" in sim.client_errors[0]
    assert session.outcome is not None
    assert (session.outcome.kind, session.outcome.code) == (OutcomeKind.CLOSED_BY_SERVER, 1008)


async def test_token_never_appears_in_logs_of_a_whole_session(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim.script = steps(lambda s: s.wait_audio(20), end)
    session, token = await open_session(sim)
    async with session:
        await session.send_input_audio(tone(20))
        await collect(session)
    assert "connection" in caplog.text  # websockets' handshake lines were logged...
    assert token not in caplog.text  # ...with the token cut out


async def test_audio_payload_never_appears_in_debug_logs(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pcm = tone(100, freq=777)
    import base64

    b64 = base64.b64encode(pcm).decode()

    async def script(s: SimSession) -> None:
        await s.wait_audio(100)
        await s.send_turn("t", pcm)
        await s.end_session()

    sim.script = script
    session, _ = await open_session(sim)
    async with session:
        await session.send_input_audio(pcm)
        await collect(session)
    for i in range(0, len(b64) - 24, 200):
        assert b64[i : i + 24] not in caplog.text
