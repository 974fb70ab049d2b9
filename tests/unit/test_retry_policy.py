from __future__ import annotations

import math
import random
from datetime import datetime, timezone

import pytest

from cdp_actors.forwarding.retry import (
    FATAL,
    RETRY_COUNT_EXCEEDED,
    WARNING,
    Attempt,
    RetryPolicy,
    parse_retry_after,
)

policy = RetryPolicy(max_attempts=4, base_delay_s=1.0, max_delay_s=5.0)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_with_a_warning(status: int) -> None:
    verdict = policy.judge(1, Attempt(status=status))
    assert verdict.retry and verdict.severity == WARNING
    assert verdict.alert_type.startswith(str(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 414, 422, 525])
def test_client_errors_are_never_retried(status: int) -> None:
    verdict = policy.judge(1, Attempt(status=status))
    assert not verdict.retry and verdict.severity == FATAL
    assert verdict.alert_type.startswith(f"{status}-")


def test_named_alert_types_follow_the_system_alerts_table() -> None:
    assert policy.judge(1, Attempt(status=500)).alert_type == "500-Internal Server Error"
    assert policy.judge(1, Attempt(status=400)).alert_type == "400-Bad Request"
    assert policy.judge(1, Attempt(timed_out=True)).alert_type == "408-Request Timeout"
    assert policy.judge(1, Attempt(error="refused")).alert_type == "306-Unknown"


def test_the_last_allowed_attempt_is_dropped_as_retry_count_exceeded() -> None:
    assert policy.judge(3, Attempt(status=503)).retry
    verdict = policy.judge(4, Attempt(status=503))
    assert (verdict.retry, verdict.alert_type, verdict.severity) == (False, RETRY_COUNT_EXCEEDED, FATAL)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)]:
        delays = [policy.backoff(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def test_retry_after_is_honoured_up_to_the_backoff_cap() -> None:
    verdict = policy.judge(1, Attempt(status=429, retry_after_s=3.0))
    assert verdict.retry and verdict.delay_s == 3.0  # above the 1 s backoff of a first attempt: the partner's wish
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("header", ["inf", "Infinity", "1e12", "9" * 5000, "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_of_forever_waits_max_delay_s(header: str) -> None:
    seconds = parse_retry_after(header, NOW)
    assert seconds is not None and seconds > policy.max_delay_s
    verdict = policy.judge(1, Attempt(status=503, retry_after_s=seconds))
    assert verdict.retry and verdict.delay_s == policy.max_delay_s


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", NOW) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 -0000", NOW) == 30.0  # no zone: UTC, as HTTP dates are
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW) == 0.0  # past: at once


@pytest.mark.parametrize("header", ["nan", "NaN", "-1", "-inf", "soon", "Thu, 99 Foo 2026", ""])
def test_unusable_retry_after_falls_back_to_backoff(header: str) -> None:
    assert parse_retry_after(header, NOW) is None
    verdict = policy.judge(1, Attempt(status=429, retry_after_s=parse_retry_after(header, NOW)))
    assert 0.5 <= verdict.delay_s <= 1.0 and not math.isnan(verdict.delay_s)


@pytest.mark.parametrize(
    ("status", "alert_type"),
    [
        (301, "301-Moved Permanently"),
        (302, "302-Found"),
        (307, "307-Temporary Redirect"),
        (308, "308-Permanent Redirect"),
    ],
)
def test_redirects_are_fatal_delivery_errors(status: int, alert_type: str) -> None:
    attempt = Attempt(status=status)
    assert not attempt.ok and not attempt.retryable
    verdict = policy.judge(1, attempt)
    assert (verdict.retry, verdict.alert_type, verdict.severity) == (False, alert_type, FATAL)
