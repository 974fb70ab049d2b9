"""Coalescing: an output's ready batches delivered together, as one HTTP request (for webhooks, a JSON array).

Natural batching, no timer: what is added goes in the event loop's next turn, as groups of up to `max_items`,
while fewer than `in_flight` groups are out; what arrives meanwhile waits and goes together in the next group.
So an idle output adds no delay, and a busy one pays one HTTP round trip, and one task, for many batches.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from cdp_actors.constants import COALESCED_IN_FLIGHT
from cdp_actors.tasks import Tasks

T = TypeVar("T")


class Grouper(Generic[T]):
    def __init__(
        self, max_items: int, deliver: Callable[[list[T]], Awaitable[None]], in_flight: int = COALESCED_IN_FLIGHT
    ) -> None:
        self.max_items, self._deliver, self.in_flight = max_items, deliver, in_flight
        self.waiting: deque[T] = deque()
        self.out = 0
        self.scheduled = False
        self.tasks = Tasks("grouper")

    def add(self, item: T) -> None:
        self.waiting.append(item)
        if not self.scheduled:  # once per loop turn, so that items added together go together
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self.scheduled = False
        while self.waiting and self.out < self.in_flight:
            group = [self.waiting.popleft() for _ in range(min(self.max_items, len(self.waiting)))]
            self.out += 1
            self.tasks.spawn(self._run(group))

    async def _run(self, group: list[T]) -> None:
        try:
            await self._deliver(group)
        finally:
            self.out -= 1
            self._start()
