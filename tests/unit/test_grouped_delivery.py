"""Delivery's group path, against a real local partner: a lane head that needs requests of its own leaves its
group but keeps the preparation it had, so its rejections are alerted and its skipped events counted once."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec

from cdp_actors.forwarding.delivery import Delivery
from cdp_actors.integrations import webhook
from cdp_actors.integrations.base import HttpRequest, Prepared, Rejection
from cdp_actors.schema.records import OutboxRow
from tests.conftest import demo_config
from tests.support import Receiver


class SplittingWebhook(webhook.Adapter):
    """A combining output for which a batch marked `split` takes two requests, with one event rejected and
    one skipped. No shipping combining output does this yet; the group path must handle it when one does."""

    def prepare_raw(self, payload: bytes, event_count: int) -> Prepared:
        if not msgspec.json.decode(payload).get("split"):
            return super().prepare_raw(payload, event_count)
        halves = [HttpRequest(self.url, payload, self.headers)] * 2
        rejected = [Rejection("Missing Event Name", "an event without a name")]
        return Prepared(halves, rejected, skipped={"media": 1}, forwarded_events=event_count - 2)


def row(key: int, mpid: int, payload: dict) -> OutboxRow:
    return OutboxRow(
        key=key.to_bytes(8, "big"),
        shard=0,
        connection_id=1,
        input_id=1,
        output_id=1,
        environment="production",
        mpid=mpid,
        event_count=3,
        payload=msgspec.json.encode(payload),
        received_ms=int(time.time() * 1000),
    )


async def deliver(rows: list[OutboxRow], url: str) -> Delivery:
    config = demo_config(url)
    output = config.outputs[0]
    combining = output.model_copy(
        update={"settings": output.settings.model_copy(update={"max_batches_per_request": 10})}
    )
    delivery = Delivery(config.model_copy(update={"outputs": [combining]}))
    assert delivery.passthrough[1] and 1 in delivery.groupers  # the raw, grouped path is the one under test
    delivery.adapters[1] = SplittingWebhook(combining.settings)
    delivery.queue(rows)  # both heads are ready in the same loop turn: one group
    deadline = time.monotonic() + 10
    while delivery.lanes:
        assert time.monotonic() < deadline, "rows still out after 10 s"
        await asyncio.sleep(0.01)
    await delivery.close()
    return delivery


def canonical(body: object) -> str:
    return json.dumps(body, sort_keys=True)


def test_a_grouped_row_that_needs_its_own_requests_is_prepared_once() -> None:
    partner = Receiver().start()
    try:
        plain, split = row(1, mpid=10, payload={"mpid": 10}), row(2, mpid=20, payload={"mpid": 20, "split": True})
        delivery = asyncio.run(deliver([plain, split], partner.url))
        assert delivery.delivered == 2 and sorted(delivery.acks[0]) == [plain.key, split.key]
        assert [alert.type for alert in delivery.alerts] == ["Missing Event Name"]
        assert delivery.skipped_events == {(1, "media"): 1}
        assert delivery.forwarded_events[1] == 3 + 1
        sent = [[{"mpid": 10}], {"mpid": 20, "split": True}, {"mpid": 20, "split": True}]  # the plain row as a group
        assert sorted(map(canonical, partner.bodies())) == sorted(map(canonical, sent))
    finally:
        partner.stop()
