"""Events API over real HTTP: every event type accepted, every kind of bad input refused with nothing stored."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import demo_config
from tests.samples import COMMERCE_VARIANTS, EVENT_DATA, batch, custom, event
from tests.support import Api, wait_for


@pytest.fixture
def api(platform, receiver) -> Api:
    return platform(
        demo_config(receiver.url, limits={"max_batch_bytes": 8192, "max_request_bytes": 32768, "max_bulk_batches": 5})
    )


def full_batch() -> dict:
    return batch(
        "cust-1",
        [event(t, 1_700_000_000_000 + n) for n, t in enumerate(EVENT_DATA)],
        user_identities={
            "customerid": "cust-1",
            "email": "a@x.io",
            "other_id_2": "o2",
            "other_id_10": "o10",
            "mobile_number": "+4712345678",
            "phone_number_2": "+1",
            "phone_number_3": "+2",
        },
        device_info={
            "platform": "iOS",
            "ios_idfv": "0A1B2C3D-0000-4000-8000-000000000001",
            "brand": "Apple",
            "is_tablet": False,
            "screen_width": 390,
            "att_authorization_status": "authorized",
        },
        application_info={"application_name": "demo", "application_version": "1.2", "os": "IOS"},
        consent_state={
            "gdpr": {"location": {"consented": True, "document": "v4", "timestamp_unixtime_ms": 1_700_000_000_000}},
            "ccpa": {"data_sale_opt_out": {"consented": False, "timestamp_unixtime_ms": 1_700_000_000_000}},
        },
        user_attributes={"$firstname": "Ada", "tags": ["a", "b"]},
    )


def test_every_event_type_is_accepted_and_delivered(api: Api, receiver) -> None:
    response = api.post("/v2/events", full_batch())
    assert response.status_code == 202, response.text
    commerce = [
        batch("cust-1", [{"event_type": "commerce_event", "data": variant}]) for variant in COMMERCE_VARIANTS.values()
    ]
    for body in commerce:
        assert api.post("/v2/events", body).status_code == 202
    wait_for(lambda: len(receiver.received) == 3, what="three deliveries")
    delivered = next(b for b in receiver.bodies() if len(b["events"]) >= len(EVENT_DATA))
    inbound = [e["event_type"] for e in delivered["events"][: len(EVENT_DATA)]]  # identity changes follow
    assert inbound == list(EVENT_DATA)
    identities = {i["identity_type"]: i["identity"] for i in delivered["user_identities"]}
    assert identities["customer_id"] == "cust-1" and identities["other_id_10"] == "o10"
    assert delivered["consent_state"]["gdpr"]["location"]["consented"] is True
    assert delivered["device_info"]["ios_idfv"].startswith("0A1B")


def settled_count(api: Api) -> int:
    """Accepted batches once an earlier test's deliveries are acknowledged, so what follows starts quiet."""
    wait_for(api.settled, what="the platform to settle")
    return api.accepted_batches()


def assert_nothing_stored(api: Api, receiver, before: int) -> None:
    assert api.accepted_batches() == before
    assert api.settled() and receiver.attempts == 0


BAD_BODIES = [
    ("not json", b"{oops", "$"),
    ("unknown event type", json.dumps(batch("u", [{"event_type": "teleport", "data": {}}])).encode(), "event_type"),
    (
        "wrong type deep inside",
        json.dumps(
            batch(
                "u",
                [
                    custom("x", 1)
                    | {"data": {"event_name": "x", "custom_event_type": "other", "timestamp_unixtime_ms": "yesterday"}}
                ],
            )
        ).encode(),
        "$.events[0].data.timestamp_unixtime_ms",
    ),
    ("bad enum", json.dumps(batch("u", environment="staging")).encode(), "environment"),
    (
        "missing event name",
        json.dumps(batch("u", [{"event_type": "custom_event", "data": {"custom_event_type": "other"}}])).encode(),
        "event_name",
    ),
    (
        "two commerce actions",
        json.dumps(batch("u", [event("commerce_event", 1, **COMMERCE_VARIANTS["promotion"])])).encode(),
        "$.events[0].data",
    ),
    (
        "ccpa purpose",
        json.dumps(batch("u", consent_state={"ccpa": {"marketing": {"consented": True}}})).encode(),
        "ccpa",
    ),
]


@pytest.mark.parametrize(("case", "body", "path"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_malformed_batches_get_400_naming_the_field(api: Api, receiver, case: str, body: bytes, path: str) -> None:
    before = settled_count(api)
    response = api.post("/v2/events", None, raw=body)
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "BAD_REQUEST" and path in error["message"]
    bulk = api.post("/v2/bulkevents", None, raw=b"[" + body + b"]")
    assert bulk.status_code == 400
    assert_nothing_stored(api, receiver, before)


def test_authentication(api: Api, receiver) -> None:
    before = settled_count(api)
    missing = api.post("/v2/events", batch("u"), auth=None)
    assert missing.status_code == 401 and missing.json()["errors"][0]["code"] == "UNAUTHORIZED"
    wrong = "Basic " + base64.b64encode(b"demo-key:nope").decode()
    assert api.post("/v2/events", batch("u"), auth=wrong).status_code == 403
    unknown = "Basic " + base64.b64encode(b"who:demo-secret").decode()
    assert api.post("/v2/events", batch("u"), auth=unknown).status_code == 403
    assert api.post("/v2/events", batch("u"), auth="Bearer abc").status_code == 401
    assert_nothing_stored(api, receiver, before)


def test_size_limits_answer_413(api: Api, receiver) -> None:
    before = settled_count(api)
    big = batch("u", [custom("x", n, blob="y" * 4000) for n in range(3)])
    response = api.post("/v2/events", big)
    assert response.status_code == 413 and "8192" in response.json()["errors"][0]["message"]
    huge = [batch("u", [custom("x", 1, blob="y" * 4000)]) for _ in range(9)]
    response = api.post("/v2/bulkevents", huge)
    assert response.status_code == 413 and "32768" in response.json()["errors"][0]["message"]
    too_many = [batch("u") for _ in range(6)]
    response = api.post("/v2/bulkevents", too_many)
    assert response.status_code == 413 and "at most 5" in response.json()["errors"][0]["message"]
    assert_nothing_stored(api, receiver, before)


def test_bulk_accepts_the_valid_batches_and_reports_the_invalid(api: Api, receiver) -> None:
    good = [batch(f"bulk-{n}", [custom("ok", 1000 + n)]) for n in range(3)]
    bad = batch("bulk-x", [{"event_type": "custom_event", "data": {"custom_event_type": "other"}}])
    response = api.post("/v2/bulkevents", [good[0], bad, good[1], good[2]])
    assert response.status_code == 202
    report = response.json()
    assert report["accepted"] == 3
    assert [r["index"] for r in report["rejected"]] == [1]
    assert "event_name" in report["rejected"][0]["message"]
    wait_for(lambda: len(receiver.received) == 3, what="three deliveries")
    assert sorted(b["source_request_id"] for b in receiver.bodies()) == sorted(g["source_request_id"] for g in good)
    all_bad = api.post("/v2/bulkevents", [bad, bad])
    assert all_bad.status_code == 400
    assert [e["index"] for e in all_bad.json()["errors"]] == [0, 1]


def test_other_methods_and_paths(api: Api) -> None:
    assert api.get("/v2/events").status_code == 405
    assert api.post("/v2/nothing", batch("u")).status_code == 404
    assert api.post("/v2/bulkevents", {"not": "a list"}).status_code == 400
