"""Backoff delays and the retryable-or-fatal classification (pure functions)."""

from __future__ import annotations

import email.utils

import pytest

from vatel_edge.backoff import Backoff, Failure, RetryLimits, RetryPolicy, classify_status, retry_after_seconds


def test_no_jitter_doubles_up_to_the_cap() -> None:
    b = Backoff(1.0, 2.0, 10.0, jitter="none")
    assert [b.next_delay() for _ in range(6)] == [1, 2, 4, 8, 10, 10]


def test_reset_starts_over() -> None:
    b = Backoff(1.0, 2.0, 10.0, jitter="none")
    b.next_delay()
    b.next_delay()
    b.reset()
    assert b.next_delay() == 1.0
    assert b.attempts == 1


def test_full_jitter_uses_the_random_source_within_the_ceiling() -> None:
    b = Backoff(1.0, 2.0, 100.0, jitter="full", rng=lambda: 0.5)
    assert [b.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]


def test_full_jitter_never_goes_below_the_floor() -> None:
    b = Backoff(2.0, 2.0, 100.0, jitter="full", rng=lambda: 0.0)
    assert b.next_delay() == 1.0  # floor = base / 2
    assert b.next_delay() == 1.0


def test_decorrelated_jitter_stays_between_base_and_cap() -> None:
    values = iter([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    b = Backoff(1.0, 2.0, 20.0, jitter="decorrelated", rng=lambda: next(values) * 0.999999)
    delays = [b.next_delay() for _ in range(6)]
    assert all(1.0 <= d <= 20.0 for d in delays)
    assert delays[:3] == pytest.approx([3.0, 9.0, 20.0], rel=1e-5)  # 3x the previous, capped
    assert delays[5] == 1.0  # rng 0 -> base


def test_huge_attempt_counts_do_not_overflow() -> None:
    b = Backoff(1.0, 2.0, 30.0, jitter="none")
    b.attempts = 10_000
    assert b.next_delay() == 30.0


@pytest.mark.parametrize("kwargs", [{"base": 0}, {"factor": 0.5}, {"cap": 0.1}, {"jitter": "weird"}])
def test_invalid_parameters_are_refused(kwargs: dict[str, object]) -> None:
    params: dict[str, object] = {"base": 1.0, "factor": 2.0, "cap": 10.0, **kwargs}
    with pytest.raises(ValueError):
        Backoff(**params)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "failure", "retryable"),
    [
        (None, Failure.TRANSIENT, True),
        (500, Failure.TRANSIENT, True),
        (502, Failure.TRANSIENT, True),
        (503, Failure.TRANSIENT, True),
        (408, Failure.TRANSIENT, True),
        (429, Failure.RATE_LIMITED, True),
        (401, Failure.CONFIGURATION, False),
        (403, Failure.CONFIGURATION, False),
        (404, Failure.CONFIGURATION, False),
        (400, Failure.BAD_REQUEST, False),
        (422, Failure.BAD_REQUEST, False),
        (200, Failure.TRANSIENT, True),
    ],
)
def test_status_classification(status: int | None, failure: Failure, retryable: bool) -> None:
    assert classify_status(status) is failure
    assert failure.retryable is retryable


def test_retry_after_in_seconds() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 7 ") == 7.0


def test_retry_after_as_http_date_is_relative_to_now() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(header, now=now) == pytest.approx(30.0, abs=1.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_seconds(past, now=now) == 0.0


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "1.5", "Mon, 99 Foo 2020"])
def test_unreadable_retry_after_is_none(header: str | None) -> None:
    assert retry_after_seconds(header) is None


def test_policy_slow_retry_for_configuration_errors() -> None:
    policy = RetryPolicy()
    delays = [policy.delay(Failure.CONFIGURATION) for _ in range(4)]
    assert delays == [60.0, 120.0, 240.0, 300.0]
    assert policy.delay(Failure.BAD_REQUEST) == 300.0


def test_policy_honours_retry_after_for_429_but_bounded() -> None:
    policy = RetryPolicy(limits=RetryLimits(max_retry_after_s=100.0))
    assert policy.delay(Failure.RATE_LIMITED, 42.0) == 42.0
    assert policy.delay(Failure.RATE_LIMITED, 10_000.0) == 100.0


def test_policy_transient_uses_fast_backoff_and_resets() -> None:
    policy = RetryPolicy(fast=Backoff(1.0, 2.0, 60.0, jitter="none"))
    assert [policy.delay(Failure.TRANSIENT) for _ in range(3)] == [1.0, 2.0, 4.0]
    policy.reset()
    assert policy.delay(Failure.TRANSIENT) == 1.0
