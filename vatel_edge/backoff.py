"""Pure retry decisions: jittered exponential delays and retryable-or-fatal by HTTP status.

No I/O and no clock reads except where a caller passes `now`; the random source is injectable so
tests are exact. Used by the token provider, the session loop and device reopen alike.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

JITTER_MODES = ("full", "decorrelated", "none")


class Backoff:
    """Exponential delays with jitter: next_delay() after each failure, reset() after a success.

    full: uniform in [floor, min(cap, base * factor**n)] (AWS "full jitter", with a small floor so a
    retry is never a busy loop); decorrelated: min(cap, uniform(base, 3 * previous)); none: the
    plain exponential ceiling.
    """

    def __init__(
        self,
        base: float = 1.0,
        factor: float = 2.0,
        cap: float = 60.0,
        *,
        jitter: str = "full",
        floor: float | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or factor < 1 or cap < base:
            raise ValueError(f"invalid backoff base={base} factor={factor} cap={cap}")
        if jitter not in JITTER_MODES:
            raise ValueError(f"jitter must be one of {JITTER_MODES}, got {jitter!r}")
        self.base = base
        self.factor = factor
        self.cap = cap
        self.jitter = jitter
        self.floor = base / 2 if floor is None else floor
        self._rng = rng
        self.attempts = 0
        self._previous = base

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay of retry number `attempt` (0-based)."""
        # Cap the exponent so huge attempt counts do not overflow.
        exp = min(attempt, 64)
        return min(self.cap, self.base * math.pow(self.factor, exp))

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one more failure."""
        ceiling = self.ceiling(self.attempts)
        self.attempts += 1
        if self.jitter == "none":
            delay = ceiling
        elif self.jitter == "full":
            delay = max(min(self.floor, ceiling), ceiling * self._rng())
        else:
            upper = max(self.base, 3 * self._previous)
            delay = min(self.cap, self.base + (upper - self.base) * self._rng())
        self._previous = delay
        return delay

    def reset(self) -> None:
        """Back to the first delay (call after a success)."""
        self.attempts = 0
        self._previous = self.base


class Failure(enum.Enum):
    """What kind of failure a request met, which decides how soon to retry."""

    TRANSIENT = "transient"  # 5xx, timeouts, connection errors, bad bodies: back off and retry
    RATE_LIMITED = "rate_limited"  # 429: honour Retry-After
    CONFIGURATION = "configuration"  # 401/403/404: wrong key or agent; slow retry, logged once
    BAD_REQUEST = "bad_request"  # 400 and other 4xx: configuration or a bug; slow retry

    @property
    def retryable(self) -> bool:
        """True when retrying soon can help (the error is on the network/server side)."""
        return self in (Failure.TRANSIENT, Failure.RATE_LIMITED)


def classify_status(status: int | None) -> Failure:
    """Failure class of an HTTP status; None (no answer: timeout, refused, DNS) is transient."""
    if status is None or status >= 500:
        return Failure.TRANSIENT
    if status == 429:
        return Failure.RATE_LIMITED
    if status == 408:  # request timeout: the server gave up waiting, a network matter
        return Failure.TRANSIENT
    if status in (401, 403, 404):
        return Failure.CONFIGURATION
    if 400 <= status < 500:
        return Failure.BAD_REQUEST
    # A 1xx/2xx/3xx reaching a failure path (e.g. 200 with an unusable body, a redirect): server side.
    return Failure.TRANSIENT


def retry_after_seconds(header: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent or unreadable."""
    if header is None:
        return None
    value = header.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True)
class RetryLimits:
    """Bounds of the slow (configuration) retry and of an honoured Retry-After."""

    slow_base_s: float = 60.0
    slow_cap_s: float = 300.0
    max_retry_after_s: float = 600.0


class RetryPolicy:
    """Delay before the next attempt, by failure class: fast backoff for transient failures,
    Retry-After for 429, a slow backoff (60..300 s) for configuration errors.
    """

    def __init__(
        self,
        fast: Backoff | None = None,
        slow: Backoff | None = None,
        limits: RetryLimits | None = None,
    ) -> None:
        self.limits = limits or RetryLimits()
        self.fast = fast or Backoff(1.0, 2.0, 60.0)
        self.slow = slow or Backoff(
            self.limits.slow_base_s, 2.0, self.limits.slow_cap_s, jitter="none"
        )

    def delay(self, failure: Failure, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retrying after `failure`."""
        if failure in (Failure.CONFIGURATION, Failure.BAD_REQUEST):
            return self.slow.next_delay()
        delay = self.fast.next_delay()
        if failure is Failure.RATE_LIMITED and retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.limits.max_retry_after_s)
        return delay

    def reset(self) -> None:
        """Forget the failure streak (call after a success)."""
        self.fast.reset()
        self.slow.reset()
