"""Membership-change outbox rows through `Delivery`, against real local partners, without Ray: each goes into its
(output, audience) bulk queue and is acknowledged to its shard only once the upload carrying its change (or the
newer change that replaced it) is done; a webhook output posts them as Firehose membership documents."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec

from cdp_actors.config import WorkspaceConfig
from cdp_actors.forwarding.delivery import OUTPUT_REMOVED, Delivery
from cdp_actors.forwarding.retry import FATAL
from cdp_actors.integrations.base import MembershipChange
from cdp_actors.profiles.handoff import HandOff, MembershipChanges, lane_window, membership_key, outbox_lane
from cdp_actors.schema.records import OutboxRow, Window
from tests.conftest import demo_config
from tests.support import Receiver
from tests.unit.test_delivery_faults import FAST_RETRY, row

WEBHOOK, FACEBOOK = 1, 2
BUYERS = 7


def workspace(partner: Receiver, webhook_age_s: float = 0.05, retry: dict[str, Any] = FAST_RETRY) -> WorkspaceConfig:
    """The demo webhook (output 1, also taking memberships) and a Facebook audience output (2), both at `partner`."""
    data = demo_config(partner.url, retry=retry).model_dump(mode="python")
    data["outputs"][0]["settings"]["audience_max_age_s"] = webhook_age_s
    facebook = {"access_token": "fb-token", "audience_ids": {BUYERS: "fb-7"}, "api_url": partner.base}
    data["outputs"].append(
        {"id": FACEBOOK, "name": "fb", "kind": "facebook_audience", "settings": {**facebook, "bulk_max_age_s": 0.05}}
    )
    return WorkspaceConfig.model_validate(data)


def membership_row(
    output_id: int, change_no: int, mpid: int, action: str = "add", ts: int = 1_000, shard: int = 0
) -> OutboxRow:
    """A row of one change in the shape stored before rows carried all of a batch's changes (an upgraded shard may
    hold some): the tests below show these still deliver."""
    change = MembershipChange(BUYERS, "Buyers", mpid, action, {"email": f"u{mpid}@example.com"}, ts)
    return OutboxRow(
        key=membership_key(0, output_id, change_no, BUYERS, change_no),
        shard=shard,
        connection_id=0,
        input_id=0,
        output_id=output_id,
        environment="production",
        mpid=mpid,
        event_count=0,
        payload=msgspec.msgpack.encode(change),
        received_ms=int(time.time() * 1000),
        audience_id=BUYERS,
    )


def changes_row(output_id: int, change_no: int, mpid: int, changes: list[tuple[int, str, str]]) -> OutboxRow:
    """A row of one batch's membership changes of one user for one output, as shards write them now."""
    payload = MembershipChanges(mpid, {"email": f"u{mpid}@example.com"}, 1_000, changes)
    return msgspec.structs.replace(
        membership_row(output_id, change_no, mpid),
        payload=msgspec.msgpack.encode(payload),
        event_count=len(changes),
        audience_id=changes[0][0],
    )


async def until(predicate: Callable[[], Any], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def run(workspace: WorkspaceConfig, steps: Callable[[Delivery], Any]) -> Delivery:
    """Run `steps(delivery)` (a coroutine) with the bulk flush loop going."""

    async def main() -> Delivery:
        delivery = Delivery(workspace)
        flushing = asyncio.get_running_loop().create_task(delivery.flush_bulk_forever())
        try:
            await steps(delivery)
        finally:
            flushing.cancel()
            await delivery.close()
        return delivery

    return asyncio.run(main())


def acked(delivery: Delivery) -> list[bytes]:
    return sorted(key for keys in delivery.acks.values() for key in keys)


def test_a_membership_row_is_acknowledged_only_once_its_change_was_uploaded(partner: Receiver) -> None:
    partner.script = [503, 503]  # two failed attempts first: the row must stay unacknowledged through them
    rows = [membership_row(FACEBOOK, 1, mpid=10)]
    seen_unacked_while_retrying = []

    async def steps(delivery: Delivery) -> None:
        delivery.queue(rows)
        await until(lambda: partner.attempts >= 1, "the first attempt")
        seen_unacked_while_retrying.append(acked(delivery))
        await until(lambda: acked(delivery), "the acknowledgement")

    delivery = run(workspace(partner), steps)
    assert seen_unacked_while_retrying == [[]]
    assert partner.attempts == 3 and len(partner.received) == 1
    assert acked(delivery) == [rows[0].key] and delivery.forwarded_memberships[FACEBOOK] == 1


def test_a_replaced_rows_key_is_acknowledged_with_the_upload_of_its_replacement(partner: Receiver) -> None:
    older, newer = membership_row(WEBHOOK, 1, mpid=10, ts=1_000), membership_row(WEBHOOK, 2, 10, "delete", 2_000)

    async def steps(delivery: Delivery) -> None:
        delivery.queue([older, newer])
        await until(lambda: len(acked(delivery)) == 2, "both acknowledgements")

    delivery = run(workspace(partner), steps)
    [document] = partner.bodies()
    [profile] = document["user_profiles"]
    assert profile["audiences"] == [
        {"audience_id": BUYERS, "audience_name": "Buyers", "action": "delete", "change_id": "0-2"}
    ]
    assert acked(delivery) == sorted([older.key, newer.key])


def test_a_change_the_partner_refuses_is_dropped_with_a_fatal_alert_and_acknowledged(partner: Receiver) -> None:
    partner.script = [400]
    rows = [membership_row(FACEBOOK, 1, mpid=10)]

    async def steps(delivery: Delivery) -> None:
        delivery.queue(rows)
        await until(lambda: acked(delivery), "the acknowledgement")

    delivery = run(workspace(partner), steps)
    assert partner.attempts == 1 and partner.received == []  # not retried
    assert [(a.type, a.severity, a.output_id) for a in delivery.alerts] == [("400-Bad Request", FATAL, FACEBOOK)]
    assert acked(delivery) == [rows[0].key] and delivery.forwarded_memberships[FACEBOOK] == 0


def test_a_row_of_a_removed_output_is_dropped_with_a_fatal_alert(partner: Receiver) -> None:
    rows = [membership_row(FACEBOOK, 1, mpid=10)]
    config = workspace(partner)
    without = config.model_copy(update={"outputs": config.outputs[:1]})

    async def steps(delivery: Delivery) -> None:
        delivery.use(without)
        delivery.queue(rows)
        await until(lambda: acked(delivery), "the acknowledgement")

    delivery = run(config, steps)
    assert [(a.type, a.severity) for a in delivery.alerts] == [(OUTPUT_REMOVED, FATAL)] and partner.attempts == 0


def test_a_webhook_window_carries_batches_and_membership_changes_as_a_firehose_document(partner: Receiver) -> None:
    event_row = row(1, mpid=42)
    rows = [event_row, membership_row(WEBHOOK, 5, mpid=42), membership_row(WEBHOOK, 6, 43, "delete", shard=1)]

    async def steps(delivery: Delivery) -> None:
        delivery.queue(rows)
        await until(lambda: len(acked(delivery)) == 3, "three acknowledgements")

    delivery = run(workspace(partner), steps)
    batch, document = sorted(partner.bodies(), key=lambda body: "type" in body)
    assert batch == {"mpid": 42, "n": 1}
    assert document["type"] == "audience_membership_change_request"
    assert isinstance(document["id"], str) and document["timestamp_ms"] == 1_000
    assert document["firehose_version"] == "3.2.0" and document["account"] == {"account_id": 0}
    assert document["user_profiles"] == [
        {
            "mpid": "42",
            "user_identities": [{"type": "email", "encoding": "raw", "value": "u42@example.com"}],
            "audiences": [{"audience_id": BUYERS, "audience_name": "Buyers", "action": "add", "change_id": "0-5"}],
        },
        {
            "mpid": "43",
            "user_identities": [{"type": "email", "encoding": "raw", "value": "u43@example.com"}],
            "audiences": [{"audience_id": BUYERS, "audience_name": "Buyers", "action": "delete", "change_id": "1-6"}],
        },
    ]
    assert dict(delivery.acks) == {0: [event_row.key, rows[1].key], 1: [rows[2].key]}


def test_an_audience_only_outputs_lane_gets_the_bulk_queue_bound_as_its_window(partner: Receiver) -> None:
    config = workspace(partner)
    config = config.model_copy(
        update={"runtime": config.runtime.model_copy(update={"max_buffered_audience_changes": 2_000})}
    )
    webhook_lane, facebook_lane = outbox_lane(0, WEBHOOK), outbox_lane(0, FACEBOOK)
    handoff = HandOff([webhook_lane, facebook_lane], lane_window(config))

    def read(lane: bytes, after: bytes | None, limit: int) -> Window:
        window = Window()
        for n in range(limit):
            window.add(lane + n.to_bytes(8, "big"), b"\x90")
        return window

    handed = handoff.next_windows([webhook_lane, facebook_lane], read, lambda _: True)
    sizes = {window.keys[0][:6]: len(window.keys) for window in handed[0]}
    assert sizes == {webhook_lane: config.runtime.forwarder_window, facebook_lane: 2_000}
    assert {len(window.keys) for window in handoff.resend(0, read)} == {config.runtime.forwarder_window, 2_000}


def test_membership_rows_filling_half_an_event_outputs_window_upload_before_their_age(partner: Receiver) -> None:
    """A webhook lane's window (`forwarder_window`) is shared with its event rows: changes waiting an hour for
    their age limit would hold the output's events back, so half a window of them uploads at once."""
    config = workspace(partner, webhook_age_s=3600)
    config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"forwarder_window": 4})})
    rows = [membership_row(WEBHOOK, 1, mpid=10), membership_row(WEBHOOK, 2, mpid=11)]

    async def steps(delivery: Delivery) -> None:
        delivery.queue(rows[:1])
        await asyncio.sleep(0.3)
        assert partner.attempts == 0  # one row of four: it waits for its age limit
        delivery.queue(rows[1:])
        await until(lambda: len(acked(delivery)) == 2, "both acknowledgements", timeout_s=5)

    run(config, steps)
    [document] = partner.bodies()
    assert [profile["mpid"] for profile in document["user_profiles"]] == ["10", "11"]


def test_two_shards_membership_rows_with_equal_keys_are_both_delivered(partner: Receiver) -> None:
    """Each shard numbers its own changes, so two shards' membership keys may be equal: held apart by shard."""
    from_0, from_1 = membership_row(WEBHOOK, 1, mpid=10), membership_row(WEBHOOK, 1, mpid=20, shard=1)
    assert from_0.key == from_1.key

    async def steps(delivery: Delivery) -> None:
        delivery.queue([from_0])
        await until(lambda: acked(delivery), "shard 0's acknowledgement")
        delivery.queue([from_1])  # shard 0's row is still held: not acknowledged by its shard yet
        await until(lambda: len(acked(delivery)) == 2, "shard 1's acknowledgement")
        assert delivery.status(0).held_rows == 2
        delivery.acknowledged(0, [from_0.key])
        assert delivery.status(0).held_rows == 1

    delivery = run(workspace(partner), steps)
    assert {profile["mpid"] for body in partner.bodies() for profile in body["user_profiles"]} == {"10", "20"}
    assert dict(delivery.acks) == {0: [from_0.key], 1: [from_1.key]}


def test_a_queue_takes_its_outputs_new_age_limit_when_the_settings_change(partner: Receiver) -> None:
    """A change queued under a one-hour age limit goes out once the output's setting says 0.05 s: the queue does
    not keep the old adapter's limits."""
    rows = [membership_row(WEBHOOK, 1, mpid=10)]
    patient = workspace(partner, webhook_age_s=3600)

    async def steps(delivery: Delivery) -> None:
        delivery.queue(rows)
        await until(lambda: delivery.bulk, "the change queued")
        assert not acked(delivery)
        delivery.use(workspace(partner, webhook_age_s=0.05))
        await until(lambda: acked(delivery), "the acknowledgement")

    delivery = run(patient, steps)
    assert len(partner.bodies()) == 1 and acked(delivery) == [rows[0].key]


def test_a_row_of_several_changes_is_acknowledged_once_the_uploads_of_all_of_them_are_done(partner: Receiver) -> None:
    partner.script = [200, 503, 503]  # one audience's upload goes at once, the other's is retried twice
    row = changes_row(WEBHOOK, 5, mpid=10, changes=[(BUYERS, "Buyers", "add"), (BUYERS + 1, "Sellers", "delete")])
    acked_early = []

    def acknowledged(delivery: Delivery) -> bool:
        delivered = sum(len(body["user_profiles"]) for body in partner.bodies())
        if acked(delivery) and delivered < 2:
            acked_early.append(delivered)
        return bool(acked(delivery))

    async def steps(delivery: Delivery) -> None:
        delivery.queue([row])
        await until(lambda: partner.received, "the first upload")
        await until(lambda: acknowledged(delivery), "the acknowledgement")

    delivery = run(workspace(partner), steps)
    assert acked_early == []
    assert partner.attempts == 4 and acked(delivery) == [row.key] and not delivery.parts_left
    sent = sorted(
        (a["audience_id"], a["action"], a["change_id"])
        for body in partner.bodies()
        for profile in body["user_profiles"]
        for a in profile["audiences"]
    )
    assert sent == [(BUYERS, "add", "0-5"), (BUYERS + 1, "delete", "0-6")]
