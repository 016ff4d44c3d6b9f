"""Fault matrix, WebSocket and server frames: handshake failures, broken connections, hostile frames.

Every case runs the real daemon (manual wake, real-time PulseAudio devices) against the simulator and
checks that it is LISTENING again within the stated bound, logged the cause at most once per logger,
kept its secrets, and that the next session works.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from tests.support.config import reliability_config
from tests.support.daemon import RECOVERY_S, live_daemon, quick_end, wake_and_wait
from tests.support.events import Events
from tests.support.logs import all_log_text, assert_no_secrets, count_mentions, sim_secrets
from tests.support.pulse import PulseServer
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.simulator.messages import tool_arguments
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(90)
FMT = VATEL_FORMAT


# ---------------------------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
async def test_handshake_rejection_fails_the_wake_logs_once_and_recovers(
    status: int, pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Handshakes rejected with `status`: each wake -> CONNECT_FAILED -> LISTENING; logged once; then a session."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    async with Simulator(script=quick_end) as sim:
        for _ in range(50):
            sim.faults.reject_handshake(status)
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            for _ in range(3):
                await wake_and_wait(daemon)
            assert daemon.counters.connection_failures == 3
            assert sim.sessions == []
            assert f"HTTP {status}" in (daemon.status()["last_error"] or "")
            per_logger = count_mentions(caplog, f"HTTP {status}")
            assert per_logger and all(n == 1 for n in per_logger.values()), per_logger
            sim.faults.handshake.clear()
            await wake_and_wait(daemon)
            assert len(sim.sessions) == 1
    assert_no_secrets([all_log_text(caplog), daemon.last_error or ""], sim_secrets(sim), "logs")


async def test_handshake_that_never_answers_times_out_and_recovers(
    pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A handshake never answered: the wake fails after vatel.connect_timeout_s (1 s here), then LISTENING."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    async with Simulator(script=quick_end) as sim:
        sim.faults.hang_handshake()
        sim.faults.hang_handshake()
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            for _ in range(2):
                t0 = time.monotonic()
                await wake_and_wait(daemon)
                assert time.monotonic() - t0 < RECOVERY_S
            assert "timed out" in (daemon.status()["last_error"] or "")
            per_logger = count_mentions(caplog, "timed out")
            assert per_logger and all(n == 1 for n in per_logger.values()), per_logger
            await wake_and_wait(daemon)
            assert len(sim.sessions) == 1


# ---------------------------------------------------------------------------------------------- mid-session


async def _drop(s: SimSession) -> None:
    await s.wait_audio(200)
    s.drop()


def _close(code: int) -> Callable[[SimSession], Awaitable[None]]:
    async def script(s: SimSession) -> None:
        await s.wait_audio(200)
        await s.close(code, f"test close {code}")

    return script


async def _stop_reading_forever(s: SimSession) -> None:
    await s.wait_audio(200)
    s.stop_reading()
    await s.wait_closed(timeout=60)


# case -> (script, text of the logged cause, recovery bound in s)
MID_SESSION: dict[str, tuple[Callable[[SimSession], Awaitable[None]], str, float]] = {
    "drop-no-close-frame": (_drop, "dropped", RECOVERY_S),
    "close-1000": (_close(1000), "code 1000", RECOVERY_S),
    "close-1001": (_close(1001), "code 1001", RECOVERY_S),
    "close-1008": (_close(1008), "code 1008", RECOVERY_S),
    "close-1011": (_close(1011), "code 1011", RECOVERY_S),
    # The server stops reading for good: the idle timeout (5 s here) ends the session, the polite close
    # times out (0.5 s) and the socket is aborted.
    "server-stops-reading": (_stop_reading_forever, "idle", 5.0 + RECOVERY_S),
}


@pytest.mark.parametrize("case", list(MID_SESSION))
async def test_connection_fault_mid_session_returns_to_listening(
    case: str, pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A session broken by the server: the daemon ends it, logs the cause once, listens, and the next works."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    script, cause, bound = MID_SESSION[case]
    events = Events()
    async with Simulator(script=script) as sim:
        sim.scripts.append(script)
        sim.script = quick_end
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key, events=events) as daemon:
            await wake_and_wait(daemon, timeout=bound)
            assert len(sim.sessions) == 1
            closed = events.of("session_closed")
            assert closed and cause in closed[0], closed
            per_logger = count_mentions(caplog, cause, level=logging.INFO)
            assert per_logger and all(n <= 2 for n in per_logger.values()), per_logger
            # the warning-level account (if any) is a single line
            warnings = count_mentions(caplog, cause, level=logging.WARNING)
            assert all(n == 1 for n in warnings.values()), warnings
            await wake_and_wait(daemon)
            assert len(sim.sessions) == 2
            assert sim.sessions[1].client_close is not None or sim.sessions[1].closed
    assert_no_secrets([all_log_text(caplog), *(t for _, t in events.rows)], sim_secrets(sim), "logs/events")


async def test_missing_session_started_does_not_stop_the_session(pulse: PulseServer, tmp_path: Path) -> None:
    """A server that never sends session_started: audio flows, tool calls are answered, the session ends."""
    outputs: list[str] = []

    async def script(s: SimSession) -> None:
        await s.wait_audio(200)
        outputs.append(await s.tool_call("set_light", {"on": True}))
        await s.end_session()

    async with Simulator(script=script, send_session_started=False) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            await wake_and_wait(daemon)
            assert outputs == ["ok"]
            assert daemon.status()["session_id"] is None


async def test_no_captured_audio_is_lost_across_a_slow_connect_and_a_server_stall(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """Noise fed to the mic: everything from the pre-roll on arrives sample-exact and contiguous although the
    token took 0.8 s and the server stopped reading for 1.5 s mid-session (held audio, bounded at 30 s)."""
    from vatel_edge.devkit.simulator import TokenFault

    rng = np.random.default_rng(7)
    fed = rng.normal(0, 3000, FMT.samples(7000)).clip(-32768, 32767).astype("<i2").tobytes()

    async def script(s: SimSession) -> None:
        await s.wait_audio(800)
        s.stop_reading()
        await s.wait_seconds(1.5)
        s.resume_reading()
        await s.wait_audio(3500, timeout=15)
        await s.end_session()

    async with Simulator(script=script) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id, vatel={"http_timeout_s": 5.0})
        async with live_daemon(cfg, sim.api_key) as daemon:
            assert daemon.tokens is not None
            sim.faults.token_fault(TokenFault.slow(0.8))
            daemon.tokens._ready = None  # make the wake fetch (and meet the slow answer) now
            feeder = pulse.feed_mic(fed)
            await asyncio.sleep(1.0)  # the pre-roll fills with noise
            await wake_and_wait(daemon, timeout=30)
            await asyncio.to_thread(feeder.wait, 15)
    got = np.frombuffer(bytes(sim.sessions[0].input_audio), dtype="<i2")
    src = np.frombuffer(fed, dtype="<i2")
    assert sim.token_requests[-1].status == 200
    nz = np.flatnonzero(got)
    assert nz.size, "no audio arrived"
    got = got[nz[0]:]
    # Locate the first 10 ms of what arrived in the fed signal, then compare everything after it.
    probe = got[: FMT.samples(10)]
    hits = [i for i in np.flatnonzero(src == probe[0]) if np.array_equal(src[i : i + probe.size], probe)]
    assert len(hits) == 1, "received audio does not match the fed signal"
    start = hits[0]
    n = min(got.size, src.size - start)
    assert n >= FMT.samples(3500)
    assert np.array_equal(got[:n], src[start:start + n]), "a gap or corruption in the sent audio"


# ---------------------------------------------------------------------------------------------- frames


def _msg(mtype: str, data: object) -> str:
    return json.dumps({"type": mtype, "data": data})


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# case -> frames sent before a valid tool_call that must still be answered
BAD_FRAMES: dict[str, list[str | bytes]] = {
    "non-json": ["this is not json {", "\x00\x01"],
    "binary": [b"\x00\x01\x02binary", bytes(4096)],
    "missing-type": [json.dumps({"data": {}})],
    "missing-data": [json.dumps({"type": "response_audio"})],
    "wrong-field-types": [
        _msg("response_audio", {"turn_id": 5, "audio": 123, "is_final": "yes"}),
        _msg("tool_call", {"toolCallId": 1, "toolName": ["x"], "arguments": "none"}),
        json.dumps(["a", "list"]),
    ],
    "bad-base64": [_msg("response_audio", {"turn_id": "t", "audio": "!!!not*base64", "is_final": False})],
    "odd-length-pcm": [_msg("response_audio", {"turn_id": "t", "audio": _b64(b"\x01\x02\x03"), "is_final": True})],
    "unknown-types": [_msg("brand_new_event", {"x": 1}), _msg("", {})],
    "tool-call-without-id": [_msg("tool_call", {"toolName": "set_light", "arguments": tool_arguments({"on": True})})],
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
async def test_hostile_frames_are_skipped_and_the_session_carries_on(
    case: str, pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed frames are skipped (warned once per session); a tool_call after them is answered; no crash."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    outputs: list[str] = []

    async def script(s: SimSession) -> None:
        await s.wait_audio(100)
        for frame in BAD_FRAMES[case]:
            await s.send_raw(frame)
        outputs.append(await s.tool_call("set_light", {"on": True}))
        await s.end_session()

    async with Simulator(script=script) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            await wake_and_wait(daemon)
            assert outputs == ["ok"]
            assert sim.script_errors == []
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "malformed" in r.getMessage()]
            assert len(warnings) <= 2, [r.getMessage() for r in warnings]  # first one + the session summary
            await wake_and_wait(daemon)  # and the daemon still opens sessions
            assert len(sim.sessions) == 2


async def test_flood_of_ten_thousand_tiny_frames_is_survived_and_logged_once(
    pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """10 000 tiny junk frames: counted, one warning plus one summary, and a tool_call after them is answered."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    outputs: list[str] = []

    async def script(s: SimSession) -> None:
        await s.wait_audio(100)
        for n in range(10_000):
            await s.send_raw(f"#{n}")
        outputs.append(await s.tool_call("set_light", {"on": False}, timeout=30))
        await s.end_session()

    async with Simulator(script=script) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id, session={"idle_timeout_s": 30.0})
        async with live_daemon(cfg, sim.api_key) as daemon:
            await wake_and_wait(daemon, timeout=60)
    assert outputs == ["ok"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "malformed" in r.message]
    assert len(warnings) == 2, warnings
    assert "10000" in warnings[-1]


async def test_sixteen_mib_frame_ends_the_session_not_the_daemon(
    pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 16 MiB text frame exceeds the message limit: the session ends (1009), the daemon listens again."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    events = Events()

    async def script(s: SimSession) -> None:
        await s.wait_audio(100)
        await s.send_raw(_msg("response_text", {"turn_id": "t", "text": "x" * (16 << 20), "is_final": True}))
        await s.wait_closed(timeout=20)

    async with Simulator(script=script) as sim:
        sim.scripts.append(script)
        sim.script = quick_end
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key, events=events) as daemon:
            await wake_and_wait(daemon, timeout=30)
            assert events.of("session_closed"), "the session did not end"
            per_logger = count_mentions(caplog, "1009")
            assert per_logger.get("vatel_edge.session") == 1, per_logger
            await wake_and_wait(daemon)
            assert len(sim.sessions) == 2


async def test_duplicate_tool_call_id_is_answered_exactly_once(pulse: PulseServer, tmp_path: Path) -> None:
    """The same toolCallId sent twice: one tool_call_output, the duplicate is ignored (and logged)."""
    args = tool_arguments({"on": True})
    call = _msg("tool_call", {"toolCallId": "dup-1", "toolName": "set_light", "arguments": args})

    async def script(s: SimSession) -> None:
        await s.wait_audio(100)
        await s.send_raw(call)
        await s.send_raw(call)
        await s.wait_seconds(1.0)
        await s.end_session()

    async with Simulator(script=script) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            await wake_and_wait(daemon)
            assert daemon.counters.tool_calls["ok"] == 1
    outputs = [m for m in sim.sessions[0].messages if m.direction == "in" and m.type == "tool_call_output"]
    assert len(outputs) == 1 and "dup-1" in outputs[0].summary
    # (the simulator notes "unknown toolCallId" because the call was sent raw, without a waiter)
    assert not [e for e in sim.client_errors if "already answered" in e]


async def test_response_audio_after_session_ended_is_harmless(pulse: PulseServer, tmp_path: Path) -> None:
    """session_ended, then response_audio before the close: the daemon ends the session and listens again."""

    async def script(s: SimSession) -> None:
        await s.wait_audio(100)
        await s.send("session_ended")
        chunk = bytes(FMT.nbytes(200))
        await s.send("response_audio", {"turn_id": "late", "audio": _b64(chunk), "is_final": True})
        await s.wait_seconds(0.2)
        await s.close(1000)

    async with Simulator(script=script) as sim:
        sim.scripts.append(script)
        sim.script = quick_end
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            await wake_and_wait(daemon)
            assert daemon.player is not None
            assert daemon.state is State.LISTENING
            await wake_and_wait(daemon)
            assert len(sim.sessions) == 2


async def test_a_tool_call_id_seen_in_an_earlier_session_is_answered_in_a_new_one(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """Duplicate detection is per session: the same toolCallId in the next session is a new call, answered."""
    answered: list[int] = []

    async def script(s: SimSession) -> None:
        await s.wait_audio(100)
        args = tool_arguments({"on": True})
        await s.send_raw(_msg("tool_call", {"toolCallId": "call-1", "toolName": "set_light", "arguments": args}))
        deadline = time.monotonic() + 5
        while not [m for m in s.messages if m.type == "tool_call_output"] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        answered.append(len([m for m in s.messages if m.type == "tool_call_output"]))
        await s.end_session()

    async with Simulator(script=script) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            await wake_and_wait(daemon)
            await wake_and_wait(daemon)
    assert answered == [1, 1]
