"""A webhook output with `max_batches_per_request` posts JSON arrays of batches, keeps each user's order,
and retries a failed combined request without losing or repeating a batch."""

from __future__ import annotations

from collections import defaultdict

from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import wait_for

FAST_RETRY = {"max_attempts": 5, "base_delay_s": 0.05, "max_delay_s": 0.2, "request_timeout_s": 2}
USERS, STEPS = 30, 10


def test_batches_go_together_in_order_per_user_and_a_failed_request_is_retried(platform, receiver) -> None:
    receiver.script = [503]
    config = demo_config(receiver.url, retry=FAST_RETRY).with_output_settings(1, max_batches_per_request=50)
    api = platform(config)
    for step in range(STEPS):
        bodies = [batch(f"user-{u}", [custom("step", 1_700_000_000_000 + step, step=step)]) for u in range(USERS)]
        assert api.post("/v2/bulkevents", bodies).status_code == 202

    def delivered() -> list[dict]:
        return [b for body in receiver.bodies() for b in (body if isinstance(body, list) else [body])]

    wait_for(lambda: len(delivered()) >= USERS * STEPS and api.settled(), what="every batch delivered")
    assert all(isinstance(body, list) for body in receiver.bodies())
    assert len(receiver.received) < USERS * STEPS  # combined: fewer requests than batches
    assert receiver.attempts == len(receiver.received) + 1  # the one 503 was retried
    batches = delivered()
    assert len({b["source_request_id"] for b in batches}) == len(batches) == USERS * STEPS
    steps = defaultdict(list)
    for b in batches:
        customer = next(i["identity"] for i in b["user_identities"] if i["identity_type"] == "customer_id")
        steps[customer].append(b["events"][0]["data"]["custom_attributes"]["step"])
    assert all(order == list(range(STEPS)) for order in steps.values()), steps
