"""Bulk Events API payloads for load: 100 batches × 10 mixed events over many users.

Each batch's `source_request_id` is `<sent_ms>-<n>`, unique and carrying its send time, so a sink can
measure end-to-end latency per batch.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import msgspec

BATCHES_PER_REQUEST = 100
EVENTS_PER_BATCH = 10
_encode = msgspec.json.Encoder().encode


def _event(kind: int, ts: int, n: int) -> dict[str, Any]:
    if kind == 0:
        data = {"screen_name": f"screen-{n % 20}"}
        return {"event_type": "screen_view", "data": {**data, "timestamp_unixtime_ms": ts}}
    if kind == 1:
        product = {"id": f"sku-{n % 50}", "name": "Thing", "price": 9.5, "quantity": 1}
        action = {"action": "purchase", "transaction_id": f"t-{n}", "total_amount": 9.5, "products": [product]}
        return {"event_type": "commerce_event", "data": {"product_action": action, "timestamp_unixtime_ms": ts}}
    data = {
        "event_name": f"action-{n % 30}",
        "custom_event_type": "navigation",
        "custom_attributes": {"page": f"/p/{n % 100}", "ref": "bench", "n": n},
    }
    return {"event_type": "custom_event", "data": {**data, "timestamp_unixtime_ms": ts}}


class Workload:
    """Generates bulk request bodies; users are drawn uniformly or with Zipf-like popularity."""

    def __init__(self, users: int, zipf: float = 0.0, seed: int = 7) -> None:
        self.users = users
        self.rng = random.Random(seed)
        self.counter = itertools.count()
        self.weights = [1 / (rank**zipf) for rank in range(1, users + 1)] if zipf else None

    def _user(self) -> int:
        if self.weights is None:
            return self.rng.randrange(self.users)
        return self.rng.choices(range(self.users), self.weights)[0]

    def batch(self, sent_ms: int) -> dict[str, Any]:
        n = next(self.counter)
        user = self._user()
        events = [_event((n + e) % 4 % 3, sent_ms - e, n * EVENTS_PER_BATCH + e) for e in range(EVENTS_PER_BATCH)]
        return {
            "environment": "production",
            "source_request_id": f"{sent_ms}-{n}",
            "user_identities": {"customer_id": f"user-{user}", "email": f"user-{user}@example.com"},
            "user_attributes": {"plan": ("free", "pro", "team")[n % 3], "visits": str(n % 1000)},
            "events": events,
        }

    def request(self) -> tuple[bytes, int]:
        """One bulk request body and the number of events in it."""
        sent_ms = int(time.time() * 1000)
        body = _encode([self.batch(sent_ms) for _ in range(BATCHES_PER_REQUEST)])
        return body, BATCHES_PER_REQUEST * EVENTS_PER_BATCH


def sent_ms_of(source_request_id: str) -> int:
    return int(source_request_id.split("-", 1)[0])
