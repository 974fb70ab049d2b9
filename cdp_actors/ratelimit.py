"""Rate limits on the Platform API, as mParticle documents them (https://docs.mparticle.com/guides/default-service-limits/).

mParticle counts Platform API requests per account and per organisation (the Data Planning API, part of the
Platform API v2: 3,000 requests a minute per account, 6,000 per organisation; no other figure is published for the
Platform API). Past a limit it answers 429 with `Retry-After` (seconds) and `X-mp-rate-limit-exceeded: <scope>`
(`org`, `account`, `app`, `feed`, `workspace`, ...); a 2xx on a limited endpoint carries
`X-mp-rate-limit-percentage-used: <int>`. This module gives those values; the HTTP face only copies them.

The algorithm is a token bucket per (scope, key): `requests` tokens, refilled continuously at `requests / per_s` a
second. A full bucket lets a client spend its minute's allowance in a burst, then the steady rate; unlike a fixed
window it never lets 2× the limit through around a window boundary. A request is admitted only if every scope's
bucket has a token (and then takes one from each), so a refusal by the org limit costs the account nothing.

What it offers: `RateLimiter(limits).admit({"account": 1, "org": 1}, now)` returns an `Admitted` (its
`headers()` for the 2xx) or raises `RateLimited` (429: `Retry-After` and `X-mp-rate-limit-exceeded`, from the one
error table in serve_apps/errors.py). Time is passed in (monotonic seconds), so tests step it without sleeping.

How the next session wires it: the Platform API app (and the admin endpoints, under the same limits) hold one
`RateLimiter(PLATFORM_API_LIMITS)` per replica and call `admit` once per request, after authentication (the
token names the client's account and org; an unauthenticated request is refused before it costs a token), with
`time.monotonic()`; it adds `headers()` to the 2xx answer. Cost: one dict lookup and a few float operations per
scope, about 5 µs a request with both limits (test_ratelimit.py prints it). Each replica counts alone: run the
Platform API as one replica (an admin API: tens of requests a second at most) or divide the limits by the replicas.
Memory is bounded: at most `MAX_TRACKED_BUCKETS` buckets, the least recently used dropped first; a dropped
bucket is as good as full, so eviction can only be lenient, never refuse a request that should pass.
The same class can guard the console's password login against guessing (keyed by user name and by client
address, a few attempts a minute): that limit is ours, not mParticle's, and is not set here.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cdp_actors.errors import RateLimited

PERCENTAGE_USED_HEADER = "X-mp-rate-limit-percentage-used"
MAX_TRACKED_BUCKETS = 10_000
"""Buckets held at once (one per scope and account or org): far above the accounts of one deployment; about
100 bytes each, so at most a megabyte whatever keys callers send."""
MIN_RETRY_AFTER_S = 1
"""`Retry-After` is whole seconds; a wait under one second is rounded up to one, never to zero (an immediate
retry would be refused again)."""


@dataclass(frozen=True)
class Limit:
    """At most `requests` per `per_s` seconds for each key of `scope` (e.g. each account)."""

    scope: str
    requests: int
    per_s: float

    @property
    def refill_per_s(self) -> float:
        return self.requests / self.per_s


PLATFORM_API_LIMITS = (Limit("account", 3_000, 60.0), Limit("org", 6_000, 60.0))
"""mParticle's published Platform API (v2, data planning) limits: per account and per organisation, per minute."""


@dataclass(frozen=True)
class Admitted:
    """A request within every limit; `percentage_used` is the fullest bucket's share spent, 0-100."""

    percentage_used: int

    def headers(self) -> dict[str, str]:
        return {PERCENTAGE_USED_HEADER: str(self.percentage_used)}


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class RateLimiter:
    """Token buckets for `limits`, keyed by each scope's key; not thread-safe (one per event loop)."""

    def __init__(self, limits: Sequence[Limit] = PLATFORM_API_LIMITS, max_buckets: int = MAX_TRACKED_BUCKETS) -> None:
        self.limits = tuple(limits)
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    def admit(self, keys: Mapping[str, str | int], now: float) -> Admitted:
        """Take one token from the bucket of each limit whose scope `keys` names, or raise RateLimited (taking none)
        naming the limit that makes the caller wait longest."""
        applied = [(limit, self._refilled(limit, str(keys[limit.scope]), now)) for limit in self.limits
                   if limit.scope in keys]  # fmt: skip
        short = [(math.ceil((1 - bucket.tokens) / limit.refill_per_s), limit) for limit, bucket in applied
                 if bucket.tokens < 1]  # fmt: skip
        if short:
            wait_s, limit = max(short, key=lambda item: item[0])
            raise RateLimited(
                f"Rate limit exceeded: at most {limit.requests} requests per {limit.per_s:g} s per {limit.scope}.",
                max(wait_s, MIN_RETRY_AFTER_S),
                limit.scope,
            )
        used = 0
        for limit, bucket in applied:
            bucket.tokens -= 1
            used = max(used, math.floor(100 * (limit.requests - bucket.tokens) / limit.requests))
        return Admitted(used)

    def _refilled(self, limit: Limit, key: str, now: float) -> _Bucket:
        name = (limit.scope, key)
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(float(limit.requests), now)
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(name)
            elapsed = max(0.0, now - bucket.at)  # a clock that steps back refills nothing
            bucket.tokens = min(float(limit.requests), bucket.tokens + elapsed * limit.refill_per_s)
            bucket.at = max(bucket.at, now)
        return bucket

    def tracked(self) -> int:
        return len(self._buckets)
