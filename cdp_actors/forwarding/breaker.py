"""A circuit breaker per output: after consecutive failures it opens, holding every lane of that output
(without spending their retries) until a single half-open probe succeeds. Other outputs never wait."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    def __init__(self, failures_to_open: int, open_s: float, max_open_s: float) -> None:
        self.failures_to_open, self.base_open_s, self.max_open_s = failures_to_open, open_s, max_open_s
        self.state = CLOSED
        self.failures = 0
        self.open_s = open_s
        self.reopens_at = 0.0
        self.probing = False
        self.changed = asyncio.Event()

    async def admit(self, deadline: float = math.inf) -> bool:
        """Wait until a request may go: at once when closed; one probe at a time once the open time is up.
        False if `deadline` (monotonic) passes first."""
        while True:
            if self.state == CLOSED:
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= self.reopens_at and not self.probing:
                self.state, self.probing = HALF_OPEN, True
                return True
            # While a probe is out, wait for its outcome; else until the open time is up. No polling: a dead
            # output holds thousands of lanes here, and each wake-up costs them all.
            until = deadline if self.probing else min(self.reopens_at, deadline)
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=None if until == math.inf else until - now)

    def release_probe(self) -> None:
        """A probe admitted but not sent (its row was discarded): the next request may probe at once."""
        if self.state == HALF_OPEN and self.probing:
            self.state, self.probing, self.reopens_at = OPEN, False, time.monotonic()
            self.changed.set()

    def record(self, healthy: bool) -> None:
        """`healthy`: the output answered (even with a non-retryable error); else it failed or timed out."""
        if healthy:
            self.state, self.failures, self.open_s, self.probing = CLOSED, 0, self.base_open_s, False
        else:
            self.failures += 1
            if self.state == HALF_OPEN or self.failures >= self.failures_to_open:
                if self.state == HALF_OPEN:
                    self.open_s = min(self.max_open_s, self.open_s * 2)
                self.state, self.probing = OPEN, False
                self.reopens_at = time.monotonic() + self.open_s
        self.changed.set()
