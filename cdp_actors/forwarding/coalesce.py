"""Coalescing: one output's concurrent requests sent as one HTTP request (for webhooks, a JSON array).

Natural batching, no timer: while fewer than `in_flight` combined requests are out, a request goes at
once; those that arrive meanwhile go together in the next, up to `max_items`. So an idle output adds no
delay, and a busy one pays one HTTP round trip for many batches. Every caller gets the combined request's
outcome, so retries, alerts and the circuit breaker still work per batch, and a lane still waits for its
batch before sending the user's next one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from cdp_actors.forwarding.retry import Attempt
from cdp_actors.integrations.base import HttpRequest

IN_FLIGHT = 8


class Coalescer:
    def __init__(self, combine: Callable[[list[HttpRequest]], HttpRequest], max_items: int,
                 send: Callable[[HttpRequest], Awaitable[Attempt]], in_flight: int = IN_FLIGHT) -> None:  # fmt: skip
        self.combine, self.max_items, self._send, self.in_flight = combine, max_items, send, in_flight
        self.waiting: deque[tuple[HttpRequest, asyncio.Future[Attempt]]] = deque()
        self.out = 0

    async def send(self, request: HttpRequest) -> Attempt:
        outcome: asyncio.Future[Attempt] = asyncio.get_running_loop().create_future()
        self.waiting.append((request, outcome))
        self._start()
        return await outcome

    def _start(self) -> None:
        while self.waiting and self.out < self.in_flight:
            group = [self.waiting.popleft() for _ in range(min(self.max_items, len(self.waiting)))]
            self.out += 1
            asyncio.get_running_loop().create_task(self._flush(group))

    async def _flush(self, group: list[tuple[HttpRequest, asyncio.Future[Attempt]]]) -> None:
        try:
            attempt = await self._send(self.combine([request for request, _ in group]))
        finally:
            self.out -= 1
        for _, outcome in group:
            if not outcome.done():  # a caller cancelled meanwhile (the actor stopping) needs no answer
                outcome.set_result(attempt)
        self._start()
