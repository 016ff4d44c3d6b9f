"""Session tokens: one POST /v1/session-token per WebSocket connection, never reused.

`TokenClient` does one request; `TokenProvider` keeps one fresh, unused token prefetched while the
device is idle so a session opens without a round trip. Neither ever logs the key or a token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from vatel_edge import __version__
from vatel_edge.backoff import Failure, RetryPolicy, classify_status, retry_after_seconds
from vatel_edge.config import VatelConfig
from vatel_edge.errors import TokenError
from vatel_edge.lifecycle import AsyncClosing, cancel_and_wait

log = logging.getLogger(__name__)

#: Longest slice of a server error text quoted in a TokenError.
MAX_ERROR_TEXT = 200
#: A JWT `iat` further than this from our wall clock means our clock is wrong (a Pi without RTC
#: before NTP sync): the lifetime is then taken as exp - iat instead of exp - now.
CLOCK_SKEW_TOLERANCE_S = 300.0
#: Optional request keys taken from the config (GenerateSessionTokenRequest, additionalProperties false).
_OPTIONAL_KEYS = ("version_id", "first_message", "prompt")


@dataclass(frozen=True)
class SessionToken:
    """A session token and its lifetime on the monotonic clock; repr never shows the value."""

    value: str = field(repr=False)
    expires_at: float
    obtained_at: float
    refresh_at: float
    exp_source: str = "jwt"  # "jwt" (exp claim) or "ttl" (assumed vatel.token_ttl_s)

    def __str__(self) -> str:
        return f"<session token, {self.expires_at - self.obtained_at:.0f} s lifetime ({self.exp_source})>"

    def fresh(self, now: float) -> bool:
        """Still good to hand out (before its refresh point)."""
        return now < self.refresh_at


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT (base64url JSON, signature not checked); None if `token` is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def token_lifetime(token: str, *, wall_now: float, default_ttl_s: float) -> tuple[float, str]:
    """Remaining lifetime in seconds and its source ("jwt" or "ttl").

    Raises TokenError (retryable) when the JWT is already expired.
    """
    claims = jwt_claims(token)
    if claims is None:
        log.debug("session token is not a JWT; assuming a %.0f s lifetime", default_ttl_s)
        return default_ttl_s, "ttl"
    exp = _number(claims.get("exp"))
    if exp is None:
        log.debug("session token has no numeric exp claim; assuming a %.0f s lifetime", default_ttl_s)
        return default_ttl_s, "ttl"
    iat = _number(claims.get("iat"))
    if iat is not None and abs(wall_now - iat) > CLOCK_SKEW_TOLERANCE_S and exp > iat:
        log.warning(
            "session token issued %.0f s from our clock: the system clock looks wrong; "
            "using the token's own lifetime (exp - iat)",
            iat - wall_now,
        )
        return exp - iat, "jwt"
    remaining = exp - wall_now
    if remaining <= 0:
        raise TokenError(
            f"token endpoint returned an already expired token (exp {-remaining:.0f} s ago): "
            "server problem or wrong system clock",
            retryable=True,
        )
    return remaining, "jwt"


def request_body(cfg: VatelConfig) -> dict[str, str]:
    """GenerateSessionTokenRequest from the config: agent_id plus the optional keys that are set."""
    body = {"agent_id": cfg.agent_id}
    for key in _OPTIONAL_KEYS:
        value = getattr(cfg, key)
        if value is not None:
            body[key] = value
    return body


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def _connect_cause(exc: BaseException) -> str:
    """A short cause of a connection failure from the exception chain (no URL, no secrets)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, socket.gaierror):
            return "DNS lookup failed"
        if isinstance(cur, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cur, ConnectionResetError):
            return "connection reset"
        cur = cur.__cause__ or cur.__context__
    text = str(exc).lower()
    if "name or service not known" in text or "name resolution" in text or "nodename" in text:
        return "DNS lookup failed"
    if "refused" in text:
        return "connection refused"
    return f"cannot connect ({exc.__class__.__name__})"


class TokenClient(AsyncClosing):
    """One POST /v1/session-token per fetch(). Async context manager when it owns its httpx client."""

    def __init__(self, cfg: VatelConfig, api_key: str, *, client: httpx.AsyncClient | None = None) -> None:
        self.cfg = cfg
        self._key = api_key
        self._url = cfg.base_url.rstrip("/") + "/v1/session-token"
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.http_timeout_s),
            verify=True,
            follow_redirects=False,
            headers={"User-Agent": f"vatel-edge/{__version__}"},
        )

    async def __aenter__(self) -> TokenClient:
        return self


    async def aclose(self) -> None:
        """Close the httpx client if we created it (idempotent)."""
        if self._owns_client and not self._client.is_closed:
            await self._client.aclose()

    async def fetch(self, *, clock: Callable[[], float] = time.monotonic) -> SessionToken:
        """Request one new token. Raises TokenError (never containing the key or a token)."""
        secrets = (self._key,)
        try:
            resp = await self._client.post(
                self._url,
                json=request_body(self.cfg),
                headers={"Authorization": f"Bearer {self._key}", "Accept": "application/json"},
            )
        except httpx.TimeoutException as exc:
            raise TokenError(
                f"token request timed out after {self.cfg.http_timeout_s:g} s ({exc.__class__.__name__})"
            ) from None
        except httpx.ConnectError as exc:
            raise TokenError(f"token endpoint unreachable: {_connect_cause(exc)}") from None
        except httpx.HTTPError as exc:
            raise TokenError(
                f"token request failed: {exc.__class__.__name__}: {_redact(str(exc), secrets)[:MAX_ERROR_TEXT]}"
            ) from None
        obtained_at = clock()
        status = resp.status_code
        if status != 200:
            raise self._status_error(resp, secrets)
        try:
            payload = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TokenError(
                f"token endpoint answered HTTP 200 with a non-JSON body ({len(resp.content)} bytes)"
            ) from None
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenError("token endpoint answered HTTP 200 without a `token` string")
        lifetime, source = token_lifetime(token, wall_now=time.time(), default_ttl_s=self.cfg.token_ttl_s)
        margin = min(self.cfg.token_refresh_margin_s, lifetime / 2)
        return SessionToken(
            value=token,
            expires_at=obtained_at + lifetime,
            obtained_at=obtained_at,
            refresh_at=obtained_at + lifetime - margin,
            exp_source=source,
        )

    def _status_error(self, resp: httpx.Response, secrets: tuple[str, ...]) -> TokenError:
        status = resp.status_code
        failure = classify_status(status)
        text = ""
        try:
            body = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            text = body["error"]
        elif resp.content:
            text = resp.content[:MAX_ERROR_TEXT].decode("utf-8", "replace")
        text = " ".join(_redact(text, secrets).split())
        if len(text) > MAX_ERROR_TEXT:
            text = text[:MAX_ERROR_TEXT] + "..."
        reason = resp.reason_phrase or ""
        message = f"token endpoint answered HTTP {status}" + (f" {reason}" if reason else "")
        if text:
            message += f": {text}"
        retry_after = None
        if status == 429 or status == 503:
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
        return TokenError(message, status=status, retryable=failure.retryable, retry_after_s=retry_after)


def failure_of(exc: TokenError) -> Failure:
    """Failure class of a TokenError (no status: transient)."""
    return classify_status(exc.status)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


_STATUS_LABEL = {
    Failure.TRANSIENT: "offline",
    Failure.RATE_LIMITED: "rate limited",
    Failure.CONFIGURATION: "configuration error",
    Failure.BAD_REQUEST: "configuration error",
}


class TokenProvider(AsyncClosing):
    """Keeps one fresh, never-handed-out token ready while idle (an owned prefetch task).

    Async context manager. `get()` hands out the prefetched token (at most once) or fetches one now.
    """

    def __init__(
        self,
        cfg: VatelConfig,
        api_key: str,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.cfg = cfg
        self._client = TokenClient(cfg, api_key, client=client)
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self._ready: SessionToken | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._streak = 0
        self._streak_key: tuple[Failure, int | None] | None = None
        self.on_status: Callable[[str], None] | None = None  # called when `status` changes (sd_notify STATUS)
        self._status = "starting"
        self.last_error: str | None = None
        self.tokens_fetched = 0
        self.tokens_handed_out = 0
        self.failures: dict[str, int] = {f.value: 0 for f in Failure}

    @property
    def status(self) -> str:
        """"starting", "ready", "stopped", or what keeps the prefetcher from a token and when it retries."""
        return self._status

    @status.setter
    def status(self, text: str) -> None:
        changed, self._status = text != self._status, text
        if changed and self.on_status is not None:
            self.on_status(text)

    @property
    def stats(self) -> dict[str, int]:
        """Counters for status reports."""
        out = {"tokens_fetched": self.tokens_fetched, "tokens_handed_out": self.tokens_handed_out}
        out.update({f"failures_{k}": v for k, v in self.failures.items()})
        return out

    @property
    def ready(self) -> bool:
        """A prefetched, fresh token is waiting."""
        return self._ready is not None and self._ready.fresh(self._clock())

    async def __aenter__(self) -> TokenProvider:
        self._task = asyncio.create_task(self._prefetch_loop(), name="token-prefetch")
        return self


    async def aclose(self) -> None:
        """Stop prefetching and close the HTTP client (idempotent)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._ready = None
        await self._client.aclose()
        self.status = "stopped"

    async def get(self) -> SessionToken:
        """A fresh token never handed out before; fetched now if none is ready. Raises TokenError."""
        if self._task is None:
            raise RuntimeError("TokenProvider.get() outside `async with`")
        token, self._ready = self._ready, None
        if token is not None:
            self._wake.set()  # the prefetcher replaces what we take (or what went stale)
        if token is not None and token.fresh(self._clock()):
            self.tokens_handed_out += 1
            return token
        # Nothing usable prefetched (offline, or stale): the user is talking, try once right now.
        try:
            token = await self._client.fetch(clock=self._clock)
        except TokenError as exc:
            self._note_failure(exc, retry_in=None)
            raise
        self.tokens_fetched += 1
        self.tokens_handed_out += 1
        self._note_success()
        self._wake.set()  # the endpoint works again: let the prefetcher stop backing off
        return token

    async def _prefetch_loop(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            if self._ready is not None and self._ready.fresh(now):
                self.status = "ready"
                await self._sleep(self._ready.refresh_at - now)
                continue
            self._ready = None
            try:
                token = await self._client.fetch(clock=self._clock)
            except TokenError as exc:
                delay = self._policy.delay(failure_of(exc), exc.retry_after_s)
                self._note_failure(exc, retry_in=delay)
                await self._sleep(delay)
                continue
            self.tokens_fetched += 1
            self._ready = token
            self._note_success()

    async def _sleep(self, seconds: float) -> None:
        """Sleep until `seconds` passed or get() woke us."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._wake.wait()

    def _note_failure(self, exc: TokenError, *, retry_in: float | None) -> None:
        failure = failure_of(exc)
        self.failures[failure.value] += 1
        self.last_error = str(exc)
        self._streak += 1
        label = _STATUS_LABEL[failure]
        cause = str(exc)
        retry = f"retrying in {_seconds(retry_in)}" if retry_in is not None else "will retry"
        if retry_in is not None:  # only the prefetcher's view of the retry schedule goes in the status
            self.status = f"{label}: {cause} ({retry})"
        key = (failure, exc.status)
        if key != self._streak_key:
            # Once per failure streak (or when the kind of failure changes), not every retry.
            self._streak_key = key
            level = logging.ERROR if failure in (Failure.CONFIGURATION, Failure.BAD_REQUEST) else logging.WARNING
            log.log(level, "session token: %s (%s)", exc, retry)
        else:
            log.debug("session token still failing (%d in a row): %s", self._streak, exc)

    def _note_success(self) -> None:
        if self._streak:
            log.info("session token endpoint recovered after %d failed attempt(s)", self._streak)
        self._streak = 0
        self._streak_key = None
        self.last_error = None
        self._policy.reset()
        self.status = "ready"
