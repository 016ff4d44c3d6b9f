"""TokenClient against the simulator over real HTTP: success, every error class, and no leaked secrets."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from tests.support.net import free_port
from vatel_edge.config import VatelConfig
from vatel_edge.devkit.simulator import Simulator, TokenFault
from vatel_edge.devkit.simulator.messages import make_jwt
from vatel_edge.errors import TokenError
from vatel_edge.token import TokenClient, jwt_claims, token_lifetime

KEY = "sk_test_SECRETKEY_0123456789"


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in (KEY, *secrets):
        assert secret not in text


async def fetch(cfg: VatelConfig, key: str = KEY) -> tuple[object, Exception | None]:
    async with TokenClient(cfg, key) as client:
        try:
            return await client.fetch(), None
        except TokenError as exc:
            return None, exc


async def fetch_error(cfg: VatelConfig, key: str = KEY) -> TokenError:
    _, exc = await fetch(cfg, key)
    assert isinstance(exc, TokenError)
    return exc


async def test_success_sends_agent_and_optional_fields(sim: Simulator) -> None:
    version = str(uuid.uuid4())
    cfg = VatelConfig(
        agent_id=sim.agent_id, base_url=sim.base_url, version_id=version, first_message="Hello there",
        prompt="Be brief.",
    )
    before = time.monotonic()
    async with TokenClient(cfg, KEY) as client:
        token = await client.fetch()
    req = sim.token_requests[-1]
    assert req.status == 200 and req.auth_ok
    assert req.body == {"agent_id": sim.agent_id, "version_id": version, "first_message": "Hello there",
                        "prompt": "Be brief."}
    assert req.headers["authorization"] == "<redacted>"
    assert token.value in sim.issued
    assert token.exp_source == "jwt"
    lifetime = token.expires_at - token.obtained_at
    assert 55 <= lifetime <= 61  # simulator ttl 60 s, exp read from the JWT
    assert before <= token.obtained_at < token.refresh_at < token.expires_at
    assert token.expires_at - token.refresh_at == pytest.approx(cfg.token_refresh_margin_s)
    assert token.value not in repr(token) and token.value not in str(token)


async def test_minimal_body_has_only_agent_id(sim: Simulator, cfg: VatelConfig) -> None:
    await fetch(cfg)
    assert sim.token_requests[-1].body == {"agent_id": sim.agent_id}


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (403, False), (404, False), (500, True), (503, True)],
)
async def test_http_error_classes(sim: Simulator, cfg: VatelConfig, status: int, retryable: bool) -> None:
    sim.faults.token_fault(TokenFault.http(status, f"simulated failure {status}"))
    exc = await fetch_error(cfg)
    assert exc.status == status
    assert exc.retryable is retryable
    assert f"HTTP {status}" in str(exc)
    assert f"simulated failure {status}" in str(exc)


async def test_real_validation_errors_come_from_the_simulator(sim: Simulator, cfg: VatelConfig) -> None:
    """Without injected faults: wrong key -> 401, unknown agent -> 404, foreign agent -> 403."""
    exc = await fetch_error(cfg, key="sk_wrong")
    assert exc.status == 401 and not exc.retryable
    other = VatelConfig(agent_id=str(uuid.uuid4()), base_url=sim.base_url)
    assert (await fetch_error(other)).status == 404
    foreign = str(uuid.uuid4())
    sim.foreign_agents.add(foreign)
    assert (await fetch_error(VatelConfig(agent_id=foreign, base_url=sim.base_url))).status == 403


async def test_429_carries_retry_after(sim: Simulator, cfg: VatelConfig) -> None:
    sim.faults.token_fault(TokenFault.http(429, "slow down", retry_after="17"))
    exc = await fetch_error(cfg)
    assert (exc.status, exc.retryable, exc.retry_after_s) == (429, True, 17.0)


async def test_long_error_text_is_truncated(sim: Simulator, cfg: VatelConfig) -> None:
    sim.faults.token_fault(TokenFault.http(500, "x" * 5000))
    exc = await fetch_error(cfg)
    assert len(str(exc)) < 300


async def test_error_text_echoing_the_key_is_redacted(sim: Simulator, cfg: VatelConfig) -> None:
    sim.faults.token_fault(TokenFault.http(401, f"invalid key {KEY}"))
    exc = await fetch_error(cfg)
    assert_no_secret(str(exc))
    assert "<redacted>" in str(exc)


async def test_timeout(sim: Simulator) -> None:
    cfg = VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url, http_timeout_s=0.5)
    sim.faults.token_fault(TokenFault.slow(3.0))
    exc = await fetch_error(cfg)
    assert exc.retryable and exc.status is None
    assert "timed out" in str(exc)


async def test_connection_refused_on_a_closed_port() -> None:
    port = free_port()
    cfg = VatelConfig(agent_id=str(uuid.uuid4()), base_url=f"http://127.0.0.1:{port}")
    exc = await fetch_error(cfg)
    assert exc.retryable and exc.status is None
    assert "connection refused" in str(exc)


async def test_dns_failure() -> None:
    cfg = VatelConfig(agent_id=str(uuid.uuid4()), base_url="http://no-such-host.invalid", allow_insecure=True)
    exc = await fetch_error(cfg)
    assert exc.retryable
    assert "DNS" in str(exc) or "cannot connect" in str(exc)


async def test_non_json_body(sim: Simulator, cfg: VatelConfig) -> None:
    sim.faults.token_fault(TokenFault.non_json())
    exc = await fetch_error(cfg)
    assert exc.retryable and "non-JSON" in str(exc)


async def test_json_without_token(sim: Simulator, cfg: VatelConfig) -> None:
    sim.faults.token_fault(TokenFault.without_token())
    exc = await fetch_error(cfg)
    assert exc.retryable and "without a `token`" in str(exc)


async def test_not_a_jwt_is_accepted_with_the_configured_ttl(sim: Simulator) -> None:
    cfg = VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url, token_ttl_s=42)
    sim.faults.token_fault(TokenFault.not_a_jwt())
    async with TokenClient(cfg, KEY) as client:
        token = await client.fetch()
    assert token.exp_source == "ttl"
    assert token.expires_at - token.obtained_at == pytest.approx(42)
    assert token.value.startswith("opaque-")


async def test_expired_jwt_is_a_retryable_error(sim: Simulator, cfg: VatelConfig) -> None:
    sim.faults.token_fault(TokenFault.expired_jwt())
    exc = await fetch_error(cfg)
    assert exc.retryable and "expired" in str(exc)


async def test_secrets_never_in_errors_or_logs(
    sim: Simulator, cfg: VatelConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []
    async with TokenClient(cfg, KEY) as client:
        tokens.append((await client.fetch()).value)
        for fault in (TokenFault.http(401), TokenFault.http(429, retry_after="3"), TokenFault.non_json(),
                      TokenFault.expired_jwt(), TokenFault.http(500, KEY)):
            sim.faults.token_fault(fault)
            with pytest.raises(TokenError) as info:
                await client.fetch()
            assert_no_secret(str(info.value), *tokens)
    assert caplog.records  # httpx logs the request line at INFO/DEBUG; the key must not be there
    assert_no_secret(caplog.text, *tokens)


def test_jwt_claims_parsing() -> None:
    tok = make_jwt({"exp": 123, "iat": 100}, b"k")
    assert jwt_claims(tok) == {"exp": 123, "iat": 100}
    assert jwt_claims("abc") is None
    assert jwt_claims("a.b") is None
    assert jwt_claims("a.!!!.c") is None
    assert jwt_claims("a.bm90IGpzb24.c") is None  # "not json"
    assert jwt_claims("a.WzFd.c") is None  # [1]: a JSON array, not a claims object


def test_lifetime_from_exp_without_iat_and_with_a_skewed_clock() -> None:
    now = 1_700_000_000.0
    assert token_lifetime(make_jwt({"exp": now + 30}, b"k"), wall_now=now, default_ttl_s=60) == (30.0, "jwt")
    assert token_lifetime(make_jwt({"exp": "soon"}, b"k"), wall_now=now, default_ttl_s=60) == (60.0, "ttl")
    # Our clock is an hour behind (no RTC, no NTP yet): trust exp - iat instead of declaring it valid for 1 h.
    skewed = make_jwt({"iat": now + 3600, "exp": now + 3660}, b"k")
    assert token_lifetime(skewed, wall_now=now, default_ttl_s=60) == (60.0, "jwt")
    with pytest.raises(TokenError):
        token_lifetime(make_jwt({"iat": now - 100, "exp": now - 40}, b"k"), wall_now=now, default_ttl_s=60)
