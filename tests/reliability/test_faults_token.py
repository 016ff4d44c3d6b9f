"""Fault matrix, token endpoint: every way POST /v1/session-token can fail, at the daemon level.

Each case: the fault is in place from start-up (the prefetcher meets it too), three wakes during the fault
each go CONNECTING -> LISTENING (CONNECT_FAILED) within RECOVERY_S, the cause is logged at most once per
logger however many retries and wakes, sd_notify STATUS says offline, the status names the problem
without secrets, and the first wake after the fault clears opens a real session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from tests.support.config import config_toml, reliability_config
from tests.support.daemon import RECOVERY_S, live_daemon, quick_end, wake_and_wait
from tests.support.events import Events
from tests.support.logs import all_log_text, assert_no_secrets, count_mentions, sim_secrets
from tests.support.net import free_port
from tests.support.notify import NotifyListener
from tests.support.pulse import PulseServer
from vatel_edge.devkit.simulator import Simulator, TokenFault
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(90)

#: Enough queued copies of a fault to outlast every retry of a test (the simulator consumes one per request).
PERSISTENT = 200
WAKES_DURING_FAULT = 3

# case id -> (fault, text the cause is recognised by)
TOKEN_FAULTS: dict[str, tuple[TokenFault, str]] = {
    "http-400": (TokenFault.http(400), "HTTP 400"),
    "http-401": (TokenFault.http(401), "HTTP 401"),
    "http-403": (TokenFault.http(403), "HTTP 403"),
    "http-404": (TokenFault.http(404), "HTTP 404"),
    "http-429-retry-after": (TokenFault.http(429, retry_after="1"), "HTTP 429"),
    "http-500": (TokenFault.http(500), "HTTP 500"),
    "http-503": (TokenFault.http(503), "HTTP 503"),
    "timeout": (TokenFault.slow(3.0), "timed out"),
    "non-json-body": (TokenFault.non_json(), "non-JSON"),
    "json-without-token": (TokenFault.without_token(), "without a `token`"),
    "expired-jwt": (TokenFault.expired_jwt(), "already expired"),
}


@pytest.mark.parametrize("case", list(TOKEN_FAULTS))
async def test_token_endpoint_fault_is_contained_logged_once_and_recovers(
    case: str, pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, notify: NotifyListener
) -> None:
    """A token fault: wakes fail back to LISTENING, one log line per logger, STATUS offline; then it works."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    fault, cause = TOKEN_FAULTS[case]
    events = Events()
    async with Simulator(script=quick_end) as sim:
        sim.faults.token_fault(*[fault] * PERSISTENT)
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key, notifier=notify.notifier(), events=events) as daemon:
            for _ in range(WAKES_DURING_FAULT):
                t0 = time.monotonic()
                await wake_and_wait(daemon)
                assert time.monotonic() - t0 < RECOVERY_S
            assert daemon.state is State.LISTENING
            assert sim.sessions == []
            assert daemon.counters.token_failures == WAKES_DURING_FAULT
            status = daemon.status()
            assert status["token_status"] != "ready"
            assert cause.lower() in (status["last_error"] or "").lower()
            assert any(s.startswith("offline:") and cause.lower() in s.lower() for s in notify.statuses()), \
                notify.statuses()
            per_logger = count_mentions(caplog, cause)
            assert per_logger, "the cause was never logged"
            assert all(n == 1 for n in per_logger.values()), f"cause logged repeatedly: {per_logger}"
            # The fault clears: the next wake opens a session and the daemon listens again.
            sim.faults.token.clear()
            await wake_and_wait(daemon)
            assert len(sim.sessions) == 1
            assert daemon.counters.sessions == 1
            assert [s for s in notify.statuses() if s.startswith("in session")]
    assert_no_secrets([all_log_text(caplog), repr(status), *events.of("error")], sim_secrets(sim), case)


async def test_token_that_is_not_a_jwt_is_used_with_the_configured_ttl(pulse: PulseServer, tmp_path: Path) -> None:
    """An opaque (non-JWT) token is not a fault: the session opens with it (lifetime = vatel.token_ttl_s)."""
    async with Simulator(script=quick_end) as sim:
        sim.faults.token_fault(*[TokenFault.not_a_jwt()] * PERSISTENT)
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            await wake_and_wait(daemon)
            assert len(sim.sessions) == 1
            assert sim.sessions[0].token.startswith("opaque-")
            assert daemon.counters.token_failures == 0


async def test_connection_refused_then_the_service_comes_up(
    pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, notify: NotifyListener
) -> None:
    """Nothing listens on the port: wakes fail (logged once per logger); once the service listens, a wake works."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    port = free_port()
    cfg = reliability_config(tmp_path, f"http://127.0.0.1:{port}", "6f1c1f4e-8a43-4ff0-9d7c-6a0b1b0f7d11")
    api_key = "sim_refused_" + "k" * 24
    async with live_daemon(cfg, api_key, notifier=notify.notifier()) as daemon:
        for _ in range(WAKES_DURING_FAULT):
            await wake_and_wait(daemon)
        assert daemon.counters.token_failures == WAKES_DURING_FAULT
        assert "connection refused" in (daemon.status()["last_error"] or "")
        assert any(s.startswith("offline:") for s in notify.statuses())
        per_logger = count_mentions(caplog, "connection refused")
        assert per_logger and all(n == 1 for n in per_logger.values()), per_logger
        async with Simulator(port=port, api_key=api_key, agent_id=cfg.vatel.agent_id, script=quick_end) as sim:
            await wake_and_wait(daemon)
            assert len(sim.sessions) == 1
    assert_no_secrets([all_log_text(caplog)], [api_key], "logs")


async def test_dns_failure_then_a_reload_to_a_reachable_service(
    pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unresolvable host: wakes fail with "DNS lookup failed" (logged once per logger); SIGHUP-style reload
    to a reachable base_url makes the next wake work."""
    caplog.set_level(logging.DEBUG, logger="vatel_edge")
    async with Simulator(script=quick_end) as sim:
        monkeypatch.setenv("ORG_API_KEY", sim.api_key)  # the reload reads the key again
        good = tmp_path / "config.toml"
        bad_url = "http://vatel-edge-test.invalid"
        good.write_text(config_toml(tmp_path, bad_url, sim.agent_id, allow_insecure=True))
        from vatel_edge.config import load_config

        cfg = load_config(good)
        async with live_daemon(cfg, sim.api_key) as daemon:
            for _ in range(2):
                await wake_and_wait(daemon, timeout=RECOVERY_S + 10)  # a resolver may take its time
            assert "DNS lookup failed" in (daemon.status()["last_error"] or "")
            per_logger = count_mentions(caplog, "DNS lookup failed")
            assert per_logger and all(n == 1 for n in per_logger.values()), per_logger
            good.write_text(config_toml(tmp_path, sim.base_url, sim.agent_id))
            assert daemon.request_reload()
            await _wait_for(lambda: daemon.cfg.vatel.base_url == sim.base_url and daemon.capture is not None
                            and daemon.state is State.LISTENING, RECOVERY_S)
            await wake_and_wait(daemon)
            assert len(sim.sessions) == 1


async def _wait_for(cond: object, timeout: float) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
