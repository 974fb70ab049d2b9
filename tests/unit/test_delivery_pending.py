"""What Delivery buffers for the Forwarder: taken at once, empty after, and kept for the next take when
the Forwarder gives it back (a shard or the alert store was restarting). Against a real local partner."""

from __future__ import annotations

import asyncio
from collections import Counter

from cdp_actors.forwarding.delivery import Delivery, Pending
from cdp_actors.schema.records import Alert
from tests.support import Receiver
from tests.unit.test_delivery_faults import config, deliver, row


def alert(n: int) -> Alert:
    return Alert(
        ts_ms=n,
        connection_id=1,
        input_id=1,
        output_id=1,
        environment="production",
        type=f"t{n}",
        severity="Warning",
        message=f"alert {n}",
    )


def test_take_pending_returns_what_delivery_buffered_and_starts_empty_again(partner: Receiver) -> None:
    partner.script = [400]  # the first row is refused: dropped, with a Fatal alert
    rows = [row(1, mpid=10), row(2, mpid=10)]

    async def main() -> tuple[Pending, Pending]:
        delivery = await deliver(Delivery(config(partner.url)), rows)
        return delivery.take_pending(), delivery.take_pending()

    taken, again = asyncio.run(main())
    assert dict(taken.acks) == {0: [rows[0].key, rows[1].key]}
    assert [(a.type, a.severity) for a in taken.alerts] == [("400-Bad Request", "Fatal")]
    assert dict(taken.forwarded_events) == {1: 1} and sum(taken.report_counts.values()) == 1
    assert (dict(again.acks), again.alerts, again.report_counts, again.forwarded_events) == ({}, [], {}, {})


def test_what_is_given_back_is_taken_again_its_alerts_first(partner: Receiver) -> None:
    async def main() -> Pending:
        delivery = Delivery(config(partner.url))
        delivery.acks[0].append(b"new")
        delivery.alerts.append(alert(3))
        delivery.report_counts["k"] += 2
        delivery.give_back(Pending(acks={0: [b"old"], 1: [b"other"]}, alerts=[alert(1), alert(2)]))
        delivery.give_back(Pending(report_counts=Counter(k=5)))
        await delivery.close()
        return delivery.take_pending()

    taken = asyncio.run(main())
    assert dict(taken.acks) == {0: [b"new", b"old"], 1: [b"other"]}
    assert [a.message for a in taken.alerts] == ["alert 1", "alert 2", "alert 3"]
    assert dict(taken.report_counts) == {"k": 7}
