"""The grouper sends what is added together as one group, and what waits while its groups are out together next;
as a property over any arrivals and delivery times: every item once, in order, in groups of at most `max_items`,
never more than `in_flight` groups out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_actors.forwarding.coalesce import Grouper
from cdp_actors.integrations.base import HttpRequest
from cdp_actors.integrations.webhook import Adapter, Settings


def request(n: int) -> HttpRequest:
    return HttpRequest("http://partner/", f'{{"n":{n}}}'.encode())


class Partner:
    """Records each group and holds it until released."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.release = asyncio.Event()

    async def deliver(self, group: list[int]) -> None:
        self.groups.append(group)
        await self.release.wait()


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0)


def test_items_added_together_go_together_up_to_the_maximum() -> None:
    async def run() -> list[list[int]]:
        partner = Partner()
        grouper = Grouper(4, partner.deliver, in_flight=8)
        for n in range(10):
            grouper.add(n)
        assert partner.groups == []  # nothing goes before the loop's next turn, so the ten go together
        await until(lambda: len(partner.groups) == 3)
        partner.release.set()
        await until(lambda: grouper.out == 0)
        return partner.groups

    assert asyncio.run(run()) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_what_arrives_while_the_groups_are_out_waits_and_goes_together_next() -> None:
    async def run() -> tuple[Grouper[int], list[list[int]]]:
        partner = Partner()
        grouper = Grouper(100, partner.deliver, in_flight=1)
        grouper.add(0)
        await until(lambda: len(partner.groups) == 1)
        for n in range(1, 6):
            grouper.add(n)
            await asyncio.sleep(0)
        assert partner.groups == [[0]] and list(grouper.waiting) == [1, 2, 3, 4, 5]
        partner.release.set()
        await until(lambda: len(partner.groups) == 2 and grouper.out == 0)
        return grouper, partner.groups

    grouper, groups = asyncio.run(run())
    assert groups == [[0], [1, 2, 3, 4, 5]] and not grouper.waiting


def test_a_group_that_raises_frees_its_slot() -> None:
    async def run() -> list[int]:
        seen: list[int] = []

        async def deliver(group: list[int]) -> None:
            seen.extend(group)
            raise RuntimeError("boom")

        grouper = Grouper(1, deliver, in_flight=1)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda *_: None)  # the raising task's error is expected here
        grouper.add(1)
        grouper.add(2)
        await until(lambda: seen == [1, 2] and grouper.out == 0)
        return seen

    assert asyncio.run(run()) == [1, 2]


def test_webhook_combines_bodies_into_a_json_array_and_defaults_to_one_batch_per_post() -> None:
    assert Settings(url="http://partner/").max_batches_per_request == 1
    webhook = Adapter(Settings(url="http://partner/", max_batches_per_request=10))
    combined = webhook.combine([request(1), request(2)])
    assert combined.body == b'[{"n":1},{"n":2}]' and combined.headers["Content-Type"] == "application/json"


@dataclass
class Recorder:
    """A partner whose n-th group takes `turns[n % len]` loop turns and, where `fails` says so, raises."""

    turns: list[int]
    fails: list[bool]
    groups: list[list[int]] = field(default_factory=list)
    out: int = 0
    most_out: int = 0

    async def deliver(self, group: list[int]) -> None:
        n = len(self.groups)
        self.groups.append(group)
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        try:
            for _ in range(self.turns[n % len(self.turns)]):
                await asyncio.sleep(0)
            if self.fails[n % len(self.fails)]:
                raise RuntimeError("partner failed")  # the grouper does not retry: the item was handed over once
        finally:
            self.out -= 1


bursts = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 5)), min_size=1, max_size=20)  # (items, turns after)


@settings(deadline=None)  # an example runs its own event loop: slow on a loaded machine, never wrong
@given(
    max_items=st.integers(1, 10),
    in_flight=st.integers(1, 4),
    bursts=bursts,
    turns=st.lists(st.integers(0, 6), min_size=1, max_size=10),
    fails=st.lists(st.booleans(), min_size=1, max_size=5),
)
def test_every_item_goes_once_in_order_in_bounded_groups_with_bounded_groups_out(
    max_items: int, in_flight: int, bursts: list[tuple[int, int]], turns: list[int], fails: list[bool]
) -> None:
    partner = Recorder(turns, fails)

    async def run() -> list[int]:
        asyncio.get_running_loop().set_exception_handler(lambda *_: None)  # failed groups are expected here
        grouper = Grouper(max_items, partner.deliver, in_flight=in_flight)
        added: list[int] = []
        for items, pause in bursts:
            for _ in range(items):
                added.append(len(added))
                grouper.add(added[-1])
            for _ in range(pause):
                await asyncio.sleep(0)
        await until(lambda: grouper.out == 0 and not grouper.waiting and not grouper.scheduled)
        return added

    added = asyncio.run(run())
    assert [item for group in partner.groups for item in group] == added  # each once, in the order added
    assert all(1 <= len(group) <= max_items for group in partner.groups)
    assert partner.most_out <= in_flight
