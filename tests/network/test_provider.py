"""TokenProvider: prefetch, refresh before exp, never reuse, offline status and log-once behaviour."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import pytest

from tests.support.net import free_port
from vatel_edge.backoff import Backoff, RetryPolicy
from vatel_edge.config import VatelConfig
from vatel_edge.devkit.simulator import Simulator, TokenFault
from vatel_edge.errors import TokenError
from vatel_edge.session import HandshakeError, VatelSession
from vatel_edge.token import TokenProvider

KEY = "sk_test_SECRETKEY_0123456789"


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def fixed_policy(delay: float) -> RetryPolicy:
    return RetryPolicy(
        fast=Backoff(delay, 1.0, delay, jitter="none"), slow=Backoff(delay, 1.0, delay, jitter="none")
    )


async def test_get_after_prefetch_makes_no_request_then_prefetches_the_next(sim: Simulator, cfg: VatelConfig) -> None:
    async with TokenProvider(cfg, KEY) as provider:
        await until(lambda: provider.ready)
        assert provider.status == "ready"
        requests_before = len(sim.token_requests)
        token = await provider.get()
        assert len(sim.token_requests) == requests_before  # handed out the prefetched one
        assert token.value in sim.issued
        await until(lambda: provider.ready)  # and the next one is fetched in the background
        assert len(sim.token_requests) == requests_before + 1
        assert provider.stats["tokens_handed_out"] == 1


async def test_two_gets_give_two_tokens_and_a_reused_token_is_rejected(sim: Simulator, cfg: VatelConfig) -> None:
    async with TokenProvider(cfg, KEY) as provider:
        first = await provider.get()
        second = await provider.get()
    assert first.value != second.value
    sim.script = lambda s: s.end_session()
    async with await VatelSession.connect(cfg.ws_base, first.value, open_timeout=5) as session:
        async for _ in session.events():
            pass
    with pytest.raises(HandshakeError) as info:
        await VatelSession.connect(cfg.ws_base, first.value, open_timeout=5)
    assert info.value.status == 401
    assert first.value not in str(info.value)


async def test_prefetched_token_is_refreshed_before_exp(sim: Simulator) -> None:
    sim.token_ttl_s = 2.0
    cfg = VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url, token_refresh_margin_s=1.0)
    async with TokenProvider(cfg, KEY) as provider:
        await until(lambda: len(sim.token_requests) >= 3)  # nobody called get(): refreshes only
        await until(lambda: provider.ready)
        token = await provider.get()
    assert token.expires_at - token.refresh_at == pytest.approx(1.0, abs=0.05)
    assert provider.stats["tokens_handed_out"] == 1
    assert all(r.status == 200 for r in sim.token_requests)


async def test_short_lived_token_refreshes_at_half_life_not_in_a_loop(sim: Simulator) -> None:
    """A lifetime shorter than the margin must not make the prefetcher spin."""
    sim.token_ttl_s = 2.0
    cfg = VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url, token_refresh_margin_s=15.0)
    async with TokenProvider(cfg, KEY) as provider:
        await until(lambda: provider.ready)
        await asyncio.sleep(0.3)
        assert len(sim.token_requests) == 1
        assert provider.ready


async def test_offline_status_logs_once_and_get_fails_fast(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vatel_edge.token")
    port = free_port()
    cfg = VatelConfig(agent_id=str(uuid.uuid4()), base_url=f"http://127.0.0.1:{port}")
    async with TokenProvider(cfg, KEY, policy=fixed_policy(0.02)) as provider:
        await until(lambda: provider.failures["transient"] >= 5)
        assert provider.status.startswith("offline: token endpoint unreachable: connection refused (retrying in")
        assert provider.last_error is not None and "connection refused" in provider.last_error
        with pytest.raises(TokenError, match="connection refused"):
            await provider.get()
    warnings = [r for r in caplog.records if r.name == "vatel_edge.token" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def test_configuration_error_status_then_recovery(
    sim: Simulator, cfg: VatelConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vatel_edge.token")
    sim.faults.token_fault(TokenFault.http(401, "invalid key"))
    async with TokenProvider(cfg, KEY) as provider:  # default policy: slow retry for 401
        await until(lambda: provider.failures["configuration"] == 1)
        assert provider.status == (
            "configuration error: token endpoint answered HTTP 401 Unauthorized: invalid key (retrying in 60 s)"
        )
        token = await provider.get()  # the user is talking: one immediate try, which now works
        assert token.value in sim.issued
        await until(lambda: provider.ready)  # the prefetcher stopped its slow backoff
        assert provider.status == "ready" and provider.last_error is None
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "vatel_edge.token"]
    assert [lvl for lvl, _ in messages] == [logging.ERROR, logging.INFO]
    assert "recovered" in messages[1][1]
    assert KEY not in caplog.text


async def test_rate_limit_honours_retry_after(sim: Simulator, cfg: VatelConfig) -> None:
    sim.faults.token_fault(TokenFault.http(429, "slow down", retry_after="1"))
    async with TokenProvider(cfg, KEY) as provider:
        await until(lambda: provider.failures["rate_limited"] == 1)
        assert provider.status.startswith("rate limited:") and "retrying in 1.0 s" in provider.status
        await until(lambda: provider.ready)
    assert [r.status for r in sim.token_requests] == [429, 200]


async def test_get_outside_the_context_is_a_programming_error(cfg: VatelConfig) -> None:
    provider = TokenProvider(cfg, KEY)
    with pytest.raises(RuntimeError):
        await provider.get()
    await provider.aclose()
