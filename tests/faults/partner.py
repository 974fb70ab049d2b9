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

MEMBERSHIP_DOCUMENT = "audience_membership_change_request"
Change = tuple[int, int, str]  # (mpid, audience id, action) of one membership change


def membership_changes(document: dict) -> list[tuple[str, Change]]:
    """(change_id, (mpid, audience id, action)) of each change a Firehose membership document carries."""
    if not isinstance(document, dict) or document.get("type") != MEMBERSHIP_DOCUMENT:
        return []
    return [
        (audience["change_id"], (int(profile["mpid"]), audience["audience_id"], audience["action"]))
        for profile in document["user_profiles"]
        for audience in profile["audiences"]
    ]


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
    whole); per request path, `seen` holds every source_request_id it was offered, `offered` the same in the
    order of their first offer, `refused` those it refused with a 400. One partner can stand for several
    outputs, one path each."""

    flapping: Flapping = CALM
    rng: random.Random = field(default_factory=random.Random)
    seen: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    offered: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    refused: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    answers: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (path, source_request_id, what happened)
    # per path, every audience membership change offered (taken or not), in order: (change_id, its content)
    changes: defaultdict[str, list[tuple[str, Change]]] = field(default_factory=lambda: defaultdict(list))

    def flap(self, seed: int, flapping: Flapping) -> None:
        self.rng = random.Random(seed)
        self.flapping = flapping

    def reset(self) -> None:
        super().reset()
        self.flapping = CALM
        self.seen.clear()
        self.offered.clear()
        self.refused.clear()
        self.answers.clear()
        self.log.clear()
        self.changes.clear()

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        batches = body if isinstance(body, list) else [body]  # a coalescing webhook POSTs an array of batches
        srids = [b.get("source_request_id", "") for b in batches]
        if isinstance(body, dict) and body.get("type") == MEMBERSHIP_DOCUMENT:  # its changes stand for batches
            offered = membership_changes(body)
            self.changes[request.path] += offered
            srids = [change_id for change_id, _ in offered]
        self.attempt_times.append(time.monotonic())
        seen = self.seen[request.path]
        self.offered[request.path] += [srid for srid in srids if srid not in seen]
        seen.update(srids)
        f, roll = self.flapping, self.rng.random()
        if roll < f.refuse:
            self.refused[request.path].update(srids)
            return self._answer(400, request.path, srids)
        roll -= f.refuse
        if roll < f.unavailable:
            return self._answer(503, request.path, srids)
        roll -= f.unavailable
        if roll < f.hang:
            self._note(request.path, srids, "hung")
            await asyncio.sleep(f.hang_s)
            return self._answer(503, request.path, srids)
        roll -= f.hang
        for item in batches:
            self.received.append(Received(item, dict(request.headers), time.time(), request.path, request.method))
        if roll < f.taken_then_hang:
            self._note(request.path, srids, "taken, hung")
            await asyncio.sleep(f.hang_s)
        return self._answer(200, request.path, srids)

    def taken_changes(self, path: str) -> list[tuple[str, Change]]:
        """The audience membership changes the partner took at `path`, in arrival order (duplicates included)."""
        return [change for body in self.bodies_at(path) for change in membership_changes(body)]

    def bodies_at(self, path: str) -> list[dict]:
        return [r.body for r in list(self.received) if r.path == path]

    def history(self, path: str, prefix: str) -> list[tuple[str, str]]:
        """What happened to the batches whose source_request_id starts with `prefix` at `path`, in order."""
        return [(srid, what) for p, srid, what in list(self.log) if p == path and srid.startswith(prefix)]

    def _note(self, path: str, srids: list[str], what: str) -> None:
        self.log += [(path, srid, what) for srid in srids]

    def _answer(self, status: int, path: str, srids: list[str]) -> web.Response:
        self._note(path, srids, str(status))
        self.answers[str(status)] = self.answers.get(str(status), 0) + 1
        return web.Response(status=status)
