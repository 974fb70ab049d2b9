"""Membership changes from the shards' outboxes to audience outputs, through the running platform to local
partners: a webhook output (Firehose membership documents) and a Facebook audience output.

The shards' writing of membership rows is stood in for: the test writes them into a real shard's outbox (LMDB,
in the shard's process) and lets it hand them on as it hands any row. Everything after is the real path: the
shard's lane windows, the forwarder's bulk queues, the uploads, the acknowledgements that delete the rows, and
the shard's resend to a forwarder restarted after `kill -9`."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import msgspec
import ray

from cdp_actors.integrations.base import MembershipChange, sha256_hex
from cdp_actors.partition import NAMESPACE
from cdp_actors.profiles.handoff import membership_key
from cdp_actors.schema.records import OutboxRow
from tests.conftest import demo_config
from tests.faults.kill import kill_9_actor
from tests.integration.test_forwarding import with_outputs
from tests.samples import batch, custom
from tests.support import Api, Receiver, wait_for

WEBHOOK, FACEBOOK = 1, 2
BUYERS = 7
PATIENT_RETRY = {"max_attempts": 1000, "base_delay_s": 0.05, "max_delay_s": 0.2, "request_timeout_s": 2}
"""Retries that outlast a partner down for the whole test: changes stay in flight, never dropped."""


def config(receiver: Receiver, audiences: list[dict[str, Any]] | None = None) -> Any:
    outputs = with_outputs(
        demo_config(receiver.url, retry=PATIENT_RETRY),
        {"kind": "webhook", "settings": {"url": f"{receiver.base}/webhook", "audience_max_age_s": 0.2}},
        {
            "kind": "facebook_audience",
            "settings": {
                "access_token": "fb-token",
                "audience_ids": {str(BUYERS): "fb-7"},
                "api_url": f"{receiver.base}/fb",
                "bulk_max_age_s": 0.2,
            },
        },
    )
    if not audiences:
        return outputs
    return outputs.model_validate({**outputs.model_dump(mode="python"), "audiences": audiences})


def changes(first_change_no: int, adds: range, deletes: range) -> list[tuple[int, MembershipChange]]:
    """(change number, change): `adds` join, then `deletes` leave, one millisecond apart."""
    made = [(mpid, "add") for mpid in adds] + [(mpid, "delete") for mpid in deletes]
    return [
        (first_change_no + n, MembershipChange(BUYERS, "Buyers", mpid, action, {"email": f"u{mpid}@x.io"}, 1_000 + n))
        for n, (mpid, action) in enumerate(made)
    ]


def write_to_outbox(shard: int, numbered: list[tuple[int, MembershipChange]]) -> None:
    """Write one membership row per change and output into shard `shard`'s outbox, in its process, in one
    transaction, and let it hand them on (as the shard does after applying a chunk)."""
    rows = [
        OutboxRow(
            key=membership_key(0, output_id, change_no, BUYERS, change_no),
            shard=shard,
            connection_id=0,
            input_id=0,
            output_id=output_id,
            environment="production",
            mpid=change.mpid,
            event_count=0,
            payload=msgspec.msgpack.encode(change),
            audience_id=BUYERS,
        )
        for change_no, change in numbered
        for output_id in (WEBHOOK, FACEBOOK)
    ]

    def write(actor: Any) -> None:
        with actor.core.store.write() as txn:
            for row in rows:
                txn.put(row.key, msgspec.msgpack.encode(row), db=actor.core.store.db("outbox"))
        actor._pump_all()

    ray.get(ray.get_actor(f"shard-{shard}", namespace=NAMESPACE).__ray_call__.remote(write), timeout=60)


def webhook_changes(receiver: Receiver) -> list[tuple[str, int, str]]:
    """(change id, mpid, action) of every audience entry the webhook received, in order."""
    return [
        (audience["change_id"], int(profile["mpid"]), audience["action"])
        for r in list(receiver.received)
        if r.path == "/webhook" and r.body.get("type") == "audience_membership_change_request"
        for profile in r.body["user_profiles"]
        for audience in profile["audiences"]
    ]


def members(entries: list[tuple[Any, int, str]]) -> set[int]:
    """The users an audience holds at the partner after these adds and deletes, in order."""
    last = {mpid: action for _, mpid, action in entries}
    return {mpid for mpid, action in last.items() if action == "add"}


def facebook_members(receiver: Receiver) -> set[str]:
    """The hashed emails Facebook's audience holds after the uploads received, in order."""
    held: set[str] = set()
    for r in list(receiver.received):
        if r.path == "/fb/fb-7/users":
            emails = {row[0] for row in r.body["payload"]["data"]}
            held = held | emails if r.method == "POST" else held - emails
    return held


def hashed(mpids: set[int]) -> set[str]:
    return {sha256_hex(f"u{mpid}@x.io") for mpid in mpids}


def outbox_rows(api: Api) -> int:
    return sum(shard["outbox"] for shard in api.status()["shards"])


def eventually(api: Api, receiver: Receiver, predicate: Any, what: str) -> None:
    """`wait_for`, saying on a timeout what the partners received and what the forwarder and shards hold."""
    try:
        wait_for(predicate, timeout=120, what=what)
    except AssertionError as timed_out:
        status = api.status()
        received = [(r.path, r.method, r.body) for r in receiver.received if r.path != "/webhook" or "type" in r.body]
        raise AssertionError(
            f"{timed_out}; shards {status['shards']}; forwarders {status['forwarders']}; received {received}"
        ) from None


def test_membership_rows_reach_both_outputs_and_leave_the_outboxes(platform, receiver) -> None:
    api = platform(config(receiver))
    write_to_outbox(0, changes(1, adds=range(1, 21), deletes=range(1, 11)))
    write_to_outbox(1, changes(1, adds=range(101, 111), deletes=range(0)))
    expected = set(range(11, 21)) | set(range(101, 111))

    eventually(
        api,
        receiver,
        lambda: members(webhook_changes(receiver)) == expected and facebook_members(receiver) == hashed(expected),
        "both partners holding the audience's members",
    )
    eventually(api, receiver, lambda: outbox_rows(api) == 0, "every membership row acknowledged and deleted")
    ids = [change_id for change_id, _, _ in webhook_changes(receiver)]
    assert all(change_id.split("-")[0] in ("0", "1") for change_id in ids)
    assert len(set(ids)) == len(ids)  # no change sent twice


def test_changes_in_flight_at_a_forwarder_kill_9_all_arrive_once(platform, receiver) -> None:
    api = platform(config(receiver))
    receiver.always = 503  # the partner is down: every change stays in flight, unacknowledged
    numbered = changes(1_000, adds=range(201, 241), deletes=range(201, 221))
    write_to_outbox(0, numbered)
    rows = 2 * len(numbered)
    wait_for(lambda: receiver.attempts >= 2, what="uploads to both outputs being tried")
    assert outbox_rows(api) == rows  # a row leaves its outbox only once its upload is done
    assert api.status()["forwarders"][0]["held_rows"] == rows

    kill_9_actor("forwarder-0")
    receiver.always = None
    expected = set(range(221, 241))
    eventually(
        api,
        receiver,
        lambda: members(webhook_changes(receiver)) == expected and facebook_members(receiver) == hashed(expected),
        "both partners holding the audience's members after the restart",
    )
    eventually(api, receiver, lambda: outbox_rows(api) == 0, "every membership row acknowledged and deleted")
    received = webhook_changes(receiver)
    by_id = Counter(change_id for change_id, _, _ in received)
    assert max(by_id.values()) == 1, "a change arrived twice"
    # each user's last change arrived, under the id of its row
    last = {change.mpid: f"0-{change_no}" for change_no, change in numbered}
    assert {change_id for change_id, _, _ in received} == set(last.values())


GOLD = {
    "id": BUYERS,
    "name": "Gold",
    "criteria": {"user_attribute": "tier", "type": "string", "operator": "equals", "value": "gold"},
    "connected_outputs": [WEBHOOK, FACEBOOK],
}


def webhook_changes_by_email(receiver: Receiver) -> list[tuple[str, str, str]]:
    """(change id, email, action) of every audience entry the webhook received, in order."""
    return [
        (audience["change_id"], emails[0], audience["action"])
        for r in list(receiver.received)
        if r.path == "/webhook"
        and isinstance(r.body, dict)
        and r.body.get("type") == "audience_membership_change_request"
        for profile in r.body["user_profiles"]
        if (emails := [i["value"] for i in profile.get("user_identities", []) if i["type"] == "email"])
        for audience in profile["audiences"]
    ]


def set_tier(api: Api, users: range, tier: str) -> None:
    now = int(time.time() * 1000)
    for n in users:
        body = batch(
            None,
            [custom("Visited", now)],
            user_identities={"customer_id": f"tier-{n}", "email": f"tier-{n}@x.io"},
            user_attributes={"tier": tier},
        )
        assert api.post("/v2/events", body).status_code == 202


def test_an_audiences_outputs_receive_exactly_its_adds_and_drops(platform, receiver) -> None:
    api = platform(config(receiver, [GOLD]))
    set_tier(api, range(1, 7), "gold")
    joined = {f"tier-{n}@x.io" for n in range(1, 7)}
    wait_for(
        lambda: (
            {email for _, email, action in webhook_changes_by_email(receiver) if action == "add"} == joined
            and facebook_members(receiver) == {sha256_hex(email) for email in joined}
        ),
        what="six users added at both partners",
    )
    set_tier(api, range(1, 4), "silver")
    set_tier(api, range(4, 7), "gold")  # no change: still members
    left = {f"tier-{n}@x.io" for n in range(1, 4)}
    wait_for(
        lambda: (
            {email for _, email, action in webhook_changes_by_email(receiver) if action == "delete"} == left
            and facebook_members(receiver) == {sha256_hex(email) for email in joined - left}
        ),
        what="three users dropped at both partners",
    )
    wait_for(lambda: api.settled(), what="every outbox row acknowledged")
    received = webhook_changes_by_email(receiver)
    assert sorted((email, action) for _, email, action in received) == sorted(
        [(email, "add") for email in joined] + [(email, "delete") for email in left]
    )
    assert len({change_id for change_id, _, _ in received}) == len(received) == 9
    uploads = [(r.method, len(r.body["payload"]["data"])) for r in receiver.received if r.path == "/fb/fb-7/users"]
    assert sum(n for method, n in uploads if method == "POST") == 6
    assert sum(n for method, n in uploads if method == "DELETE") == 3


def test_a_new_connection_first_receives_the_current_members(platform, receiver) -> None:
    """Initial sync: an output connected to an audience that already has members gets an add for each current
    member (not for those who left), then the changes that follow."""
    api = platform(config(receiver, [{**GOLD, "connected_outputs": [FACEBOOK]}]))
    set_tier(api, range(1, 6), "gold")
    set_tier(api, range(1, 3), "silver")  # members once, not any more: no add for them
    wait_for(lambda: api.settled(), what="every batch applied and its rows acknowledged")
    assert webhook_changes_by_email(receiver) == []
    answer = api.post(
        f"/platform/v1/audiences/{BUYERS}/connections?accountId=1", {"output_id": WEBHOOK}, auth=api.bearer()
    )
    assert answer.status_code in (200, 201), answer.text
    current = {f"tier-{n}@x.io" for n in range(3, 6)}
    wait_for(
        lambda: {email for _, email, action in webhook_changes_by_email(receiver) if action == "add"} == current,
        what="the webhook to receive an add for each current member",
    )
    set_tier(api, range(3, 4), "silver")
    wait_for(
        lambda: (
            ("tier-3@x.io", "delete") in {(email, action) for _, email, action in webhook_changes_by_email(receiver)}
        ),
        what="a later drop after the initial sync",
    )
    wait_for(lambda: api.settled(), what="every row acknowledged")
    received = webhook_changes_by_email(receiver)
    assert sorted((email, action) for _, email, action in received) == sorted(
        [(email, "add") for email in current] + [("tier-3@x.io", "delete")]
    )
