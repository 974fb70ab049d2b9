"""End to end over HTTP: many users, per-user order, enrichment, last-write-wins, consent, de-duplication."""

from __future__ import annotations

import json
from collections import defaultdict

from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import wait_for

USERS, BATCHES_PER_USER, EVENTS_PER_BATCH = 40, 5, 3
T0 = 1_700_000_000_000


def test_many_users_each_batch_delivered_once_in_order_and_enriched(platform, receiver) -> None:
    api = platform(demo_config(receiver.url))
    sent = []
    for round_no in range(BATCHES_PER_USER):
        events = [custom("step", T0 + round_no * 10 + e, round=round_no) for e in range(EVENTS_PER_BATCH)]
        bodies = [batch(f"user-{u}", events, user_attributes={"round": str(round_no)}) for u in range(USERS)]
        for start in range(0, USERS, 20):
            assert api.post("/v2/bulkevents", bodies[start : start + 20]).status_code == 202
        sent += bodies
    wait_for(lambda: len(receiver.received) >= len(sent), what="every batch delivered")
    wait_for(api.settled, what="outboxes drained")
    bodies = receiver.bodies()
    assert len(bodies) == len(sent)
    assert {b["source_request_id"] for b in bodies} == {b["source_request_id"] for b in sent}

    rounds: dict[int, list[int]] = defaultdict(list)
    mpid_of_user: dict[str, int] = {}
    for body in bodies:
        customer = next(i["identity"] for i in body["user_identities"] if i["identity_type"] == "customer_id")
        assert mpid_of_user.setdefault(customer, body["mpid"]) == body["mpid"]
        rounds[body["mpid"]].append(body["events"][0]["data"]["custom_attributes"]["round"])
    assert len(mpid_of_user) == USERS
    assert all(r == list(range(BATCHES_PER_USER)) for r in rounds.values())

    one = bodies[0]
    assert isinstance(one["batch_id"], int) and isinstance(one["timestamp_unixtime_ms"], int)
    assert one["schema_version"] == 2 and one["environment"] == "production"
    changes = [e for b in bodies for e in b["events"] if e["event_type"] == "user_identity_change"]
    assert len(changes) == USERS  # each user's customer ID is new in its first batch, and only then
    assert all(c["data"]["new"]["created_this_batch"] and c["data"]["old"] is None for c in changes)
    assert {c["data"]["new"]["identity"] for c in changes} == set(mpid_of_user)
    assert len({e["data"]["message_id"] for b in bodies for e in b["events"]}) == len(sent) * EVENTS_PER_BATCH + USERS
    assert all(e["data"]["source_message_id"] for e in one["events"] if e["event_type"] == "custom_event")

    profile = api.get(f"/cdp/users/{mpid_of_user['user-3']}").json()
    assert profile["batches"] == BATCHES_PER_USER and profile["events"] == BATCHES_PER_USER * EVENTS_PER_BATCH
    assert profile["attributes"]["round"]["value"] == str(BATCHES_PER_USER - 1)
    assert profile["identities"] == {"customer_id": ["user-3"]}
    assert len(profile["recent_events"]) == min(20, BATCHES_PER_USER * EVENTS_PER_BATCH)


def test_attributes_last_write_wins_deletes_and_consent_notifications(platform, receiver) -> None:
    api = platform(demo_config(receiver.url))
    newer = batch("lww", [custom("a", T0 + 2000)], user_attributes={"plan": "gold", "city": "Oslo"})
    older = batch("lww", [custom("b", T0 + 1000)], user_attributes={"plan": "silver", "color": "red"})
    assert api.post("/v2/events", newer).status_code == 202
    assert api.post("/v2/events", older).status_code == 202
    wait_for(lambda: len(receiver.received) == 2, what="two deliveries")
    mpid = receiver.bodies()[0]["mpid"]
    assert receiver.bodies()[1]["user_attributes"] == {"plan": "gold", "city": "Oslo", "color": "red"}

    delete = batch("lww", [custom("c", T0 + 3000)], deleted_user_attributes=["city"])
    assert api.post("/v2/events", delete).status_code == 202
    wait_for(lambda: len(receiver.received) == 3, what="the deletion")
    assert receiver.bodies()[2]["user_attributes"] == {"plan": "gold", "color": "red"}
    assert receiver.bodies()[2]["deleted_user_attributes"] == ["city"]

    consent = {"gdpr": {"location": {"consented": True, "document": "v1", "timestamp_unixtime_ms": T0 + 4000}}}
    assert api.post("/v2/events", batch("lww", [custom("d", T0 + 4000)], consent_state=consent)).status_code == 202
    assert api.post("/v2/events", batch("lww", [custom("e", T0 + 4100)], consent_state=consent)).status_code == 202
    revoked = {"gdpr": {"location": {"consented": False, "document": "v1", "timestamp_unixtime_ms": T0 + 5000}}}
    assert api.post("/v2/events", batch("lww", [custom("f", T0 + 5000)], consent_state=revoked)).status_code == 202
    wait_for(lambda: len(receiver.received) == 6, what="the consent batches")
    granted, unchanged, withdrawn = receiver.bodies()[3:]
    note = granted["system_notifications"][0]
    assert note["type"] == "gdpr_change" and note["data"]["purpose"] == "location"
    assert note["data"]["old"] is None and note["data"]["current"]["consented"] is True
    assert "system_notifications" not in unchanged
    change = withdrawn["system_notifications"][0]["data"]
    assert change["old"]["consented"] is True and change["current"]["consented"] is False
    profile = api.get(f"/cdp/users/{mpid}").json()
    assert profile["consent"]["gdpr"]["location"]["consented"] is False
    assert {k: v["value"] for k, v in profile["attributes"].items()} == {"plan": "gold", "color": "red"}


def test_same_source_request_id_is_forwarded_once(platform, receiver) -> None:
    api = platform(demo_config(receiver.url))
    start = api.accepted_batches()
    body = batch("dup", [custom("once", T0)])
    for _ in range(3):
        assert api.post("/v2/events", body).status_code == 202
    assert api.post("/v2/bulkevents", [body, batch("dup", [custom("other", T0 + 1)])]).status_code == 202
    before = api.accepted_batches()
    wait_for(lambda: len(receiver.received) == 2 and api.settled(), what="two deliveries")
    events = [e for b in receiver.bodies() for e in b["events"]]
    names = [e["data"]["event_name"] for e in events if e["event_type"] == "custom_event"]
    assert sorted(names) == ["once", "other"]
    assert api.accepted_batches() == before == start + 2
    profile = api.get(f"/cdp/users/{receiver.bodies()[0]['mpid']}").json()
    assert profile["batches"] == 2


def test_spans_are_exported_around_ingest_profile_update_and_delivery(platforms, receiver) -> None:
    api = platforms(demo_config(receiver.url, telemetry={"exporter": "file"}))
    assert api.post("/v2/events", batch("traced", [custom("t", T0)])).status_code == 202
    spans_file = platforms.data_dir / "spans.jsonl"

    def names() -> set[str]:
        if not spans_file.exists():
            return set()
        return {json.loads(line)["name"] for line in spans_file.read_text().splitlines() if line}

    wait_for(lambda: {"ingest.request", "profile.apply", "forward.deliver"} <= names(), what="spans")
