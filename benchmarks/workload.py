"""Bulk Events API payloads for load: 100 batches × 10 mixed events over N users.

Users are drawn uniformly, or with Zipf popularity (`zipf` = the exponent s: user k is picked with
weight 1/k^s, so a few users send most batches, as on real sites). Every 20th batch carries a GDPR consent
change and every 50th a new mobile number for its user (identity churn, which the platform answers with
a `user_identity_change` event). Each batch's `source_request_id` is `<sent_ms>-<n>`, unique and carrying
its send time, so a sink can measure end-to-end latency per batch.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import msgspec

BATCHES_PER_REQUEST = 100
EVENTS_PER_BATCH = 10
CONSENT_EVERY = 20
CHURN_EVERY = 50
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
    """Generates bulk request bodies, deterministic for a seed."""

    def __init__(
        self, users: int, zipf: float = 0.0, seed: int = 7, batches_per_request: int = BATCHES_PER_REQUEST
    ) -> None:
        self.users = users
        self.batches_per_request = batches_per_request
        self.rng = random.Random(seed)
        self.counter = itertools.count()
        self.population = range(users)
        self.cumulative = list(itertools.accumulate(1 / rank**zipf for rank in range(1, users + 1))) if zipf else None

    @property
    def events_per_request(self) -> int:
        return self.batches_per_request * EVENTS_PER_BATCH

    def user(self) -> int:
        if self.cumulative is None:
            return self.rng.randrange(self.users)
        return self.rng.choices(self.population, cum_weights=self.cumulative)[0]  # bisect: O(log users)

    def batch(self, sent_ms: int) -> dict[str, Any]:
        n = next(self.counter)
        user = self.user()
        events = [_event((n + e) % 4 % 3, sent_ms - e, n * EVENTS_PER_BATCH + e) for e in range(EVENTS_PER_BATCH)]
        identities = {"customer_id": f"user-{user}", "email": f"user-{user}@example.com"}
        body = {
            "environment": "production",
            "source_request_id": f"{sent_ms}-{n}",
            "user_identities": identities,
            "user_attributes": {"plan": ("free", "pro", "team")[n % 3], "visits": str(n % 1000)},
            "events": events,
        }
        if n % CONSENT_EVERY == 0:
            consent = {"consented": n % 40 == 0, "document": "bench_v1", "timestamp_unixtime_ms": sent_ms}
            body["consent_state"] = {"gdpr": {"analytics": consent}}
        if n % CHURN_EVERY == 0:
            identities["mobile_number"] = f"+1555{n:09d}"
        return body

    def request(self) -> tuple[bytes, int, int]:
        """One bulk request body, the number of events and of batches in it."""
        sent_ms = int(time.time() * 1000)
        body = _encode([self.batch(sent_ms) for _ in range(self.batches_per_request)])
        return body, self.events_per_request, self.batches_per_request


def sent_ms_of(source_request_id: str) -> int:
    return int(source_request_id.split("-", 1)[0])
