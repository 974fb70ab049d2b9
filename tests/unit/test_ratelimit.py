"""Platform API rate limits: a token bucket per account and per org, mParticle's headers, a 429 with Retry-After that
a client can trust, bounded memory. Time is stepped by hand: no sleeps."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_actors.errors import RateLimited
from cdp_actors.ratelimit import (
    PERCENTAGE_USED_HEADER,
    PLATFORM_API_LIMITS,
    Limit,
    RateLimiter,
)
from serve_apps.errors import answer_of

PER_MINUTE = (Limit("account", 6, 60.0),)
"""Six requests a minute per account: one token every 10 s."""


def spend(limiter: RateLimiter, n: int, now: float, **keys: str | int) -> None:
    for _ in range(n):
        limiter.admit(keys, now)


def test_a_full_bucket_admits_a_burst_then_refuses_naming_the_limit_and_the_wait() -> None:
    limiter = RateLimiter(PER_MINUTE)
    spend(limiter, 6, 100.0, account=1)
    with pytest.raises(RateLimited) as refused:
        limiter.admit({"account": 1}, 100.0)
    assert (refused.value.retry_after_s, refused.value.exceeded) == (10, "account")
    assert "6 requests per 60 s per account" in refused.value.message
    with pytest.raises(RateLimited) as later:
        limiter.admit({"account": 1}, 104.5)
    assert later.value.retry_after_s == 6  # 5.5 s to the next token, rounded up


def test_after_retry_after_the_same_request_is_admitted() -> None:
    limiter = RateLimiter(PER_MINUTE)
    spend(limiter, 6, 0.0, account=1)
    with pytest.raises(RateLimited) as refused:
        limiter.admit({"account": 1}, 3.0)
    limiter.admit({"account": 1}, 3.0 + refused.value.retry_after_s)
    with pytest.raises(RateLimited):
        limiter.admit({"account": 1}, 3.0 + refused.value.retry_after_s)


def test_a_refusal_never_says_retry_at_once() -> None:
    limiter = RateLimiter((Limit("account", 100, 1.0),))  # a token every 10 ms
    spend(limiter, 100, 0.0, account=1)
    with pytest.raises(RateLimited) as refused:
        limiter.admit({"account": 1}, 0.0)
    assert refused.value.retry_after_s == 1


def test_accounts_are_limited_apart() -> None:
    limiter = RateLimiter(PER_MINUTE)
    spend(limiter, 6, 0.0, account=1)
    assert limiter.admit({"account": 2}, 0.0).percentage_used == 16
    with pytest.raises(RateLimited):
        limiter.admit({"account": 1}, 0.0)


def test_the_org_limit_covers_its_accounts_and_its_refusal_costs_the_account_nothing() -> None:
    limiter = RateLimiter((Limit("account", 6, 60.0), Limit("org", 8, 60.0)))
    spend(limiter, 6, 0.0, account=1, org=9)
    spend(limiter, 2, 0.0, account=2, org=9)
    with pytest.raises(RateLimited) as refused:
        limiter.admit({"account": 2, "org": 9}, 0.0)
    assert refused.value.exceeded == "org"
    assert limiter.admit({"account": 2, "org": 10}, 0.0).percentage_used == 50  # account 2 spent 3 of 6


def test_a_refusal_names_the_limit_that_makes_the_caller_wait_longest() -> None:
    limiter = RateLimiter((Limit("account", 1, 10.0), Limit("org", 1, 60.0)))
    limiter.admit({"account": 1, "org": 1}, 0.0)
    with pytest.raises(RateLimited) as refused:
        limiter.admit({"account": 1, "org": 1}, 0.0)
    assert (refused.value.exceeded, refused.value.retry_after_s) == ("org", 60)


def test_percentage_used_is_the_fullest_buckets_share() -> None:
    limiter = RateLimiter((Limit("account", 10, 60.0), Limit("org", 100, 60.0)))
    shares = [limiter.admit({"account": 1, "org": 1}, 0.0).percentage_used for _ in range(5)]
    assert shares == [10, 20, 30, 40, 50]
    assert limiter.admit({"account": 1, "org": 1}, 30.0).headers() == {PERCENTAGE_USED_HEADER: "10"}


def test_the_refusal_answers_429_with_mparticles_headers() -> None:
    limiter = RateLimiter(PER_MINUTE)
    spend(limiter, 6, 0.0, account=1)
    with pytest.raises(RateLimited) as refused:
        limiter.admit({"account": 1}, 0.0)
    response = answer_of(refused.value)
    assert response.status_code == 429
    assert (response.headers["retry-after"], response.headers["x-mp-rate-limit-exceeded"]) == ("10", "account")
    assert json.loads(bytes(response.body))["errors"][0]["code"] == "TOO_MANY_REQUESTS"


def test_a_clock_that_steps_back_refills_nothing() -> None:
    limiter = RateLimiter(PER_MINUTE)
    spend(limiter, 6, 100.0, account=1)
    with pytest.raises(RateLimited):
        limiter.admit({"account": 1}, 50.0)
    with pytest.raises(RateLimited):
        limiter.admit({"account": 1}, 105.0)  # the step back did not move the refill's origin
    limiter.admit({"account": 1}, 110.0)


def test_memory_is_bounded_and_eviction_only_forgets_the_least_recently_used() -> None:
    limiter = RateLimiter(PER_MINUTE, max_buckets=3)
    spend(limiter, 6, 0.0, account="busy")
    for n in range(2):
        limiter.admit({"account": n}, 0.0)
    with pytest.raises(RateLimited):
        limiter.admit({"account": "busy"}, 0.0)  # used again: now the most recent
    limiter.admit({"account": 99}, 0.0)  # evicts account 0, the least recently used
    assert limiter.tracked() == 3
    with pytest.raises(RateLimited):
        limiter.admit({"account": "busy"}, 0.0)


def test_the_platform_api_limits_are_mparticles() -> None:
    assert {(limit.scope, limit.requests, limit.per_s) for limit in PLATFORM_API_LIMITS} == {
        ("account", 3_000, 60.0),
        ("org", 6_000, 60.0),
    }


REQUESTS = st.lists(st.tuples(st.integers(0, 3_000), st.sampled_from(["a", "b"])), min_size=1, max_size=120)
"""(milliseconds since the previous request, account)."""


@settings(max_examples=150, deadline=None)
@given(REQUESTS)
def test_no_window_admits_more_than_the_burst_plus_the_refill(requests: list[tuple[int, str]]) -> None:
    """The token bucket's promise, checked against every window of the run: within any span of t seconds one
    account gets at most `requests + t × rate` admitted."""
    limit = Limit("account", 3, 1.0)
    limiter = RateLimiter((limit,))
    now_ms = 0
    admitted: dict[str, list[int]] = {"a": [], "b": []}
    for gap_ms, account in requests:
        now_ms += gap_ms
        try:
            limiter.admit({"account": account}, now_ms / 1000)
            admitted[account].append(now_ms)
        except RateLimited as refused:
            assert refused.retry_after_s >= 1
    for times in admitted.values():
        for first in range(len(times)):
            for last in range(first, len(times)):
                span_s = (times[last] - times[first]) / 1000
                assert last - first + 1 <= limit.requests + span_s * limit.refill_per_s + 1e-9


@settings(max_examples=150, deadline=None)
@given(REQUESTS)
def test_a_client_that_waits_retry_after_is_admitted(requests: list[tuple[int, str]]) -> None:
    limiter = RateLimiter((Limit("account", 3, 1.0),))
    now_s = 0.0
    for gap_ms, account in requests:
        now_s += gap_ms / 1000
        try:
            limiter.admit({"account": account}, now_s)
        except RateLimited as refused:
            limiter.admit({"account": account}, now_s + refused.retry_after_s)


def test_admitting_a_request_costs_microseconds() -> None:
    limiter = RateLimiter(PLATFORM_API_LIMITS)
    rounds = 20_000
    started = time.perf_counter()
    for n in range(rounds):
        limiter.admit({"account": n % 50, "org": 1}, n * 0.02)
    per_request_us = (time.perf_counter() - started) / rounds * 1e6
    print(f"RateLimiter.admit: {per_request_us:.1f} µs per request, two limits")
    assert per_request_us < 500  # a generous bound on a busy CI machine; the figure is what matters
