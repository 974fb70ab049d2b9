from __future__ import annotations

import random

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


def test_retry_after_is_honoured() -> None:
    verdict = policy.judge(1, Attempt(status=429, retry_after_s=7.0))
    assert verdict.retry and verdict.delay_s == 7.0
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after(None) is None
