"""The per-output circuit breaker: opens after consecutive failures, admits one half-open probe, closes on
success, and gives up at a caller's deadline."""

from __future__ import annotations

import asyncio
import time

from cdp_actors.forwarding.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_opens_after_consecutive_failures_and_probes_once() -> None:
    async def scenario() -> None:
        breaker = Breaker(failures_to_open=3, open_s=0.05, max_open_s=1)
        for _ in range(2):
            breaker.record(False)
        assert breaker.state == CLOSED and await breaker.admit()
        breaker.record(False)
        assert breaker.state == OPEN
        started = time.monotonic()
        assert await breaker.admit()  # the probe, once the open time is up
        assert breaker.state == HALF_OPEN and time.monotonic() - started >= 0.04
        second = asyncio.create_task(breaker.admit())
        await asyncio.sleep(0.1)
        assert not second.done()  # only one probe at a time
        breaker.record(True)
        assert await second and breaker.state == CLOSED

    run(scenario())


def test_a_failed_probe_reopens_for_longer() -> None:
    async def scenario() -> None:
        breaker = Breaker(failures_to_open=1, open_s=0.05, max_open_s=1)
        breaker.record(False)
        assert await breaker.admit()
        breaker.record(False)
        assert breaker.state == OPEN and breaker.open_s == 0.1

    run(scenario())


def test_admit_gives_up_at_the_deadline() -> None:
    async def scenario() -> None:
        breaker = Breaker(failures_to_open=1, open_s=10, max_open_s=10)
        breaker.record(False)
        started = time.monotonic()
        assert await breaker.admit(deadline=time.monotonic() + 0.1) is False
        assert 0.08 <= time.monotonic() - started < 1

    run(scenario())
