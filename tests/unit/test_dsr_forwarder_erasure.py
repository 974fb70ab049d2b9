"""Rows a forwarder holds when their user is erased (`Delivery.forget`), against a real local partner that fails
on demand, without Ray: the erased user's rows (waiting in its lane, its lane head in a retry's pause, in a
coalesced group, behind an open breaker, or handed over after the erasure) never reach the partner once it
recovers, and are counted and acknowledged; another user's rows all arrive."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from cdp_actors.forwarding.delivery import Delivery
from cdp_actors.forwarding.erased import ErasedSubjects
from tests.support import Receiver, wait_for
from tests.unit.test_delivery_faults import batches, config, row

ERASED, KEPT = 10, 20
HOLDING_RETRY = {"max_attempts": 1_000, "base_delay_s": 0.05, "max_delay_s": 0.2, "request_timeout_s": 2}
"""Retries that never give up while the test holds the partner down (a dropped row would pass the test)."""


def held_then_erased(partner: Receiver, batches_per_request: int, retry: dict[str, Any]) -> tuple[Delivery, int]:
    """Queue three rows of each user while the partner fails, erase ERASED while they are held, let the partner
    recover; returns the delivery once no lane is left, and what `forget` counted."""
    rows = [row(n, mpid=ERASED if n % 2 else KEPT) for n in range(1, 7)]
    late = row(7, mpid=ERASED)  # handed over after the erasure (a shard's window in flight meanwhile)
    workspace = config(partner.url, batches_per_request=batches_per_request, retry=retry)

    async def main() -> tuple[Delivery, int]:
        delivery = Delivery(workspace)
        partner.always = 503
        delivery.queue(rows)
        await asyncio.to_thread(wait_for, lambda: partner.attempts >= 4, 10, 0.01, "failed attempts")
        discarded = await delivery.forget([ERASED], timeout_s=10)
        delivery.queue([late])
        partner.always = None
        deadline = time.monotonic() + 15
        while delivery.lanes:
            assert time.monotonic() < deadline, delivery.status(0)
            await asyncio.sleep(0.01)
        await delivery.close()
        return delivery, discarded

    delivery, discarded = asyncio.run(main())
    assert sorted(r.key for r in [*rows, late]) == sorted(delivery.acks[0])  # every row acknowledged
    return delivery, discarded


@pytest.mark.parametrize("batches_per_request", [1, 10], ids=["alone", "coalesced"])
def test_an_erased_users_held_rows_never_arrive_and_anothers_do(partner: Receiver, batches_per_request: int) -> None:
    delivery, discarded = held_then_erased(partner, batches_per_request, HOLDING_RETRY)
    assert [b["mpid"] for b in batches(partner) if b["mpid"] == ERASED] == []
    assert sorted(b["n"] for b in batches(partner)) == [2, 4, 6]
    assert discarded == 3 and delivery.discarded == 4 and delivery.status(0).discarded_batches == 4


def test_rows_behind_an_open_breaker_are_discarded_at_once(partner: Receiver) -> None:
    """The breaker opens after two failures and waits 30 s before a probe: `forget` does not wait for it."""
    retry = {**HOLDING_RETRY, "breaker_failures": 2, "breaker_open_s": 30.0, "breaker_max_open_s": 30.0}
    workspace = config(partner.url, retry=retry)

    async def main() -> tuple[int, float, Delivery]:
        delivery = Delivery(workspace)
        partner.always = 503
        delivery.queue([row(n, mpid=ERASED if n % 2 else KEPT) for n in range(1, 7)])
        await asyncio.to_thread(wait_for, lambda: delivery.breakers[1].state == "open", 10, 0.01, "open breaker")
        started = time.monotonic()
        discarded = await delivery.forget([ERASED], timeout_s=10)
        took = time.monotonic() - started
        await delivery.close()
        return discarded, took, delivery

    discarded, took, delivery = asyncio.run(main())
    assert discarded == 3 and took < 2.0
    assert set(delivery.lanes) == {(1, KEPT)}  # still held for the probe
    assert [b for b in batches(partner) if b["mpid"] == ERASED] == []


def test_forget_times_out_while_a_request_of_the_user_is_on_the_wire(partner: Receiver) -> None:
    partner.delay_s = 1.5  # the request is out when the erasure comes; forget waits for its outcome
    workspace = config(partner.url, retry=HOLDING_RETRY)

    async def main() -> None:
        delivery = Delivery(workspace)
        delivery.queue([row(1, mpid=ERASED)])
        await asyncio.to_thread(wait_for, lambda: partner.attempts >= 1, 10, 0.01, "the request on the wire")
        with pytest.raises(TimeoutError):
            await delivery.forget([ERASED], timeout_s=0.2)
        assert await delivery.forget([ERASED], timeout_s=5) == 0  # delivered: its outcome stood
        await delivery.close()

    asyncio.run(main())
    assert [b["n"] for b in batches(partner)] == [1]


def test_erased_subjects_are_bounded_oldest_first() -> None:
    erased = ErasedSubjects(capacity=3)
    erased.add([1, 2, 3])
    erased.add([1, 4])  # 1 again: now the newest
    assert (2 in erased, 1 in erased, 3 in erased, 4 in erased, len(erased)) == (False, True, True, True, 3)
