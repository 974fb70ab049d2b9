"""A partner that flaps: a seeded random share of requests get a 503, hang past the forwarder's timeout, are
taken but answered too late (so the forwarder sends them again), or are refused for good with a 400."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import web

from tests.support import Received, Receiver


@dataclass(frozen=True)
class Flapping:
    """Probabilities per request; whatever is left is a plain 200."""

    unavailable: float = 0.0  # 503 at once
    hang: float = 0.0  # no answer until after the forwarder gave up (then a 503), nothing taken
    taken_then_hang: float = 0.0  # recorded as delivered, but answered only after the forwarder gave up
    refuse: float = 0.0  # 400: not retried, a Fatal alert, the batch is dropped
    hang_s: float = 0.0


CALM = Flapping()


@dataclass
class FlappingPartner(Receiver):
    """`received` holds the batches the partner took (in arrival order; a POSTed array is taken, or not, as a
    whole); per request path, `seen` holds every source_request_id it was offered, `refused` those it refused
    with a 400. One partner can stand for several outputs, one path each."""

    flapping: Flapping = CALM
    rng: random.Random = field(default_factory=random.Random)
    seen: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    refused: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    answers: dict[str, int] = field(default_factory=dict)

    def flap(self, seed: int, flapping: Flapping) -> None:
        self.rng = random.Random(seed)
        self.flapping = flapping

    def reset(self) -> None:
        super().reset()
        self.flapping = CALM
        self.seen.clear()
        self.refused.clear()
        self.answers.clear()

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        batches = body if isinstance(body, list) else [body]  # a coalescing webhook POSTs an array of batches
        srids = {b.get("source_request_id", "") for b in batches}
        self.attempt_times.append(time.monotonic())
        self.seen[request.path].update(srids)
        f, roll = self.flapping, self.rng.random()
        if roll < f.refuse:
            self.refused[request.path].update(srids)
            return self._answer(400)
        roll -= f.refuse
        if roll < f.unavailable:
            return self._answer(503)
        roll -= f.unavailable
        if roll < f.hang:
            await asyncio.sleep(f.hang_s)
            return self._answer(503)
        roll -= f.hang
        for item in batches:
            self.received.append(Received(item, dict(request.headers), time.time(), request.path, request.method))
        if roll < f.taken_then_hang:
            await asyncio.sleep(f.hang_s)
        return self._answer(200)

    def bodies_at(self, path: str) -> list[dict]:
        return [r.body for r in list(self.received) if r.path == path]

    def _answer(self, status: int) -> web.Response:
        self.answers[str(status)] = self.answers.get(str(status), 0) + 1
        return web.Response(status=status)
