"""Hostile and careless input over real HTTP: one regression test per trigger of issue 13's point 1.

Each of the formerly stalling batches got a 202 and then stopped all processing for good. Now each gets a 400
naming the field, nothing is stored, and a normal batch sent right after it is delivered. The same values sent
through IDSync, the Profile API, the alias endpoint and the admin edit endpoint get the same treatment.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from mparticle import AppEvent, Batch, CommerceEvent, MediaInfo, Product, ProductAction, UserIdentities
from mparticle.api_client import ApiClient

from tests.conftest import demo_config
from tests.integration.test_events_api import settled_count
from tests.samples import batch, custom, event
from tests.support import Api, wait_for

T0 = 1_700_000_000_000
LONG = "a" * 481  # one byte over the 480 an identity value may have
IMMUTABLE_CID = {"immutable_ids": ["customer_id"]}


@pytest.fixture
def api(platform, receiver) -> Api:
    return platform(demo_config(receiver.url, identity=IMMUTABLE_CID))


def purchase(total: float) -> dict[str, Any]:
    return event("commerce_event", T0, product_action={"action": "purchase", "total_amount": total})


def nested(depth: int) -> bytes:
    return json.dumps(batch("deep")).encode()[:-1] + b', "extra": ' + b"[" * depth + b"]" * depth + b"}"


# (case, raw body, the path the 400 names): each stalled all processing after its 202, or was a 500
TRIGGERS: list[tuple[str, bytes, str]] = [
    (
        "user identity over LMDB's key limit",
        batch(None, user_identities={"email": "x" * 600}),
        "$.user_identities.email",
    ),
    ("identity in IDSync spelling", batch(None, user_identities={"other2": LONG}), "$.user_identities.other2"),
    ("device id", batch(None, device_info={"ios_idfv": LONG}), "$.device_info.ios_idfv"),
    ("multi-byte device id", batch(None, device_info={"push_token": "é" * 241}), "$.device_info.push_token"),
    ("mp_deviceid", batch(None, mp_deviceid=LONG), "$.mp_deviceid"),
    ("mpid 2^63", batch("u", mpid=2**63), "$.mpid"),
    ("mpid below -2^63", batch("u", mpid=-(2**63) - 1), "$.mpid"),
    ("origin_mpid", batch("u", origin_mpid=2**64), "$.origin_mpid"),
    ("batch_id", batch("u", batch_id=2**63), "$.batch_id"),
    ("negative purchase", batch("u", [purchase(-5.0)]), "$.events[0].data.product_action.total_amount"),
    ("purchase past the counters", batch("u", [purchase(2e17)]), "$.events[0].data.product_action.total_amount"),
    ("user attribute 2^64", batch("u", user_attributes={"n": 2**64}), "$.user_attributes[...]"),
    ("event attribute 2^64", batch("u", [custom("x", T0, n=2**64)]), "$.events[0].data.custom_attributes[...]"),
    ("event timestamp 2^64", batch("u", [custom("x", 2**64)]), "$.events[0].data.timestamp_unixtime_ms"),
    ("batch timestamp 2^63", batch("u", timestamp_unixtime_ms=2**63), "$.timestamp_unixtime_ms"),
    ("source_request_id over the intake's key", batch("u", source_request_id="s" * 600), "$.source_request_id"),
    (
        "deleted attributes",
        batch("u", deleted_user_attributes=[f"attr-{n}" for n in range(101)]),
        "$.deleted_user_attributes",
    ),
    ("deleted attribute name", batch("u", deleted_user_attributes=["n" * 257]), "$.deleted_user_attributes[0]"),
    (
        "consent purposes",
        batch("u", consent_state={"gdpr": {f"p{n}": {"consented": True} for n in range(101)}}),
        "$.consent_state.gdpr",
    ),
    (
        "integration attributes",
        batch("u", integration_attributes={"x": {f"k{n}": "v" for n in range(101)}}),
        '$.integration_attributes["x"]',
    ),
]
RAW_TRIGGERS = [(case, json.dumps(body).encode(), path) for case, body, path in TRIGGERS]
RAW_TRIGGERS.append(("JSON nested 5,000 deep", nested(5000), "$"))


def assert_refused(response: requests.Response, path: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "BAD_REQUEST" and f"- at `{path}" in error["message"], error
    return error["message"]


def assert_still_processing(api: Api, receiver, customer: str) -> None:
    """A normal batch sent after the hostile one is delivered: processing did not stall."""
    assert api.post("/v2/events", batch(customer, [custom("canary", T0)])).status_code == 202
    wait_for(
        lambda: any(
            b["events"][0]["data"].get("event_name") == "canary"
            and any(i["identity"] == customer for i in b["user_identities"])
            for b in receiver.bodies()
        ),
        timeout=30,
        what=f"{customer}'s canary",
    )


@pytest.mark.parametrize(("case", "raw", "path"), RAW_TRIGGERS, ids=[t[0] for t in RAW_TRIGGERS])
def test_each_trigger_is_refused_at_the_door(api: Api, receiver, case: str, raw: bytes, path: str) -> None:
    before = settled_count(api)
    message = assert_refused(api.post("/v2/events", None, raw=raw), path)
    if "identity" in case or "device" in case:
        assert message.startswith("Identifier Too Long")
    bulk = api.post(
        "/v2/bulkevents", None, raw=b"[" + json.dumps(batch("fine", [custom("ok", T0)])).encode() + b"," + raw + b"]"
    )
    if path == "$":  # the bulk list itself cannot be decoded: the whole request is refused
        assert_refused(bulk, "$")
        assert api.accepted_batches() == before
    else:  # the good batch is accepted, the hostile one listed by index
        assert bulk.status_code == 202, bulk.text
        assert [(r["index"], path in r["message"]) for r in bulk.json()["rejected"]] == [(1, True)]
        assert api.accepted_batches() == before + 1
    assert_still_processing(api, receiver, f"after-{case}")


def test_a_long_event_name_is_counted_not_a_stall(api: Api, receiver) -> None:
    """An event name becomes part of a report counter's LMDB key: a long one once failed the shard's commit."""
    name = "é" * 1000
    now = int(time.time() * 1000)  # reports leave out events stamped over 72 hours before their receipt
    assert api.post("/v2/events", batch("long-name", [custom(name, now)])).status_code == 202
    wait_for(
        lambda: any(b["events"][0]["data"]["event_name"] == name for b in receiver.bodies()),
        what="the long-named event's delivery",
    )
    assert_still_processing(api, receiver, "after-long-name")


def test_a_request_lmdb_cannot_store_never_fails_the_others(api: Api, receiver) -> None:
    """Concurrent requests share the intake's group commits; one whose de-duplication key LMDB cannot hold is
    refused alone (a 400, not a 503 to retry for ever), and all the others are stored and delivered. (The door
    refuses such a key first; tests/unit/test_intake_isolation.py drives the intake's own isolation.)"""
    before = settled_count(api)
    good = [batch(f"group-{n}", [custom("grouped", T0)]) for n in range(24)]
    bad = batch("group-bad", source_request_id="k" * 600)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda body: api.post("/v2/events", body), [*good[:12], bad, *good[12:]]))
    assert [r.status_code for r in responses] == [202] * 12 + [400] + [202] * 12
    wait_for(lambda: api.accepted_batches() == before + 24, what="24 accepted")
    wait_for(lambda: len({b["source_request_id"] for b in receiver.bodies()}) == 24, what="24 deliveries")


# ---- the same values through the other entries ------------------------------------------------------------


def identity_counts(api: Api) -> dict[str, int]:
    return {k: v for k, v in api.status()["identity"].items() if k in ("profiles", "identities")}


def test_idsync_and_alias_refuse_the_same_values(api: Api, receiver) -> None:
    before = identity_counts(api)
    identify = {"environment": "production", "known_identities": {"email": LONG}}
    assert "Identifier Too Long" in assert_refused(api.post("/v1/identify", identify), "$.known_identities.email")
    login = {"environment": "production", "known_identities": {"customerid": "c"}, "previous_mpid": str(2**63)}
    assert_refused(api.post("/v1/login", login), "$.previous_mpid")
    stamp = {"environment": "production", "known_identities": {"customerid": "c"}, "request_timestamp_ms": 2**64}
    assert_refused(api.post("/v1/identify", stamp), "$.request_timestamp_ms")
    deep = b'{"environment": "production", "known_identities": {"email": "a@x.io"}, "x": ' + b"[" * 5000
    assert_refused(api.post("/v1/identify", None, raw=deep + b"]" * 5000 + b"}"), "$")
    mpid = api.post("/v1/identify", {"environment": "production", "known_identities": {"email": "ok@x.io"}}).json()
    change = {"identity_changes": [{"identity_type": "customerid", "old_value": None, "new_value": "é" * 241}]}
    assert_refused(api.post(f"/v1/{mpid['mpid']}/modify", change), "$.identity_changes[0].new_value")
    assert_refused(api.post(f"/v1/{2**64}/modify", change), "mpid")

    def alias(**data: Any) -> requests.Response:
        body = {"environment": "production", "data": {"source_mpid": 1, "destination_mpid": 2, **data}}
        return api.post("/v1/identity/demo-key/alias", body)

    assert_refused(alias(source_mpid=2**63), "$.data.source_mpid")
    assert_refused(alias(destination_mpid=str(-(2**63) - 1)), "$.data.destination_mpid")
    assert_refused(alias(start_unixtime_ms=2**64), "$.data.start_unixtime_ms")
    after = identity_counts(api)
    assert after == {"profiles": before["profiles"] + 1, "identities": before["identities"] + 1}  # only ok@x.io
    assert_still_processing(api, receiver, "after-idsync")


def test_profile_api_refuses_them(api: Api, receiver) -> None:
    body = {"client_id": "demo-client", "client_secret": "demo-client-secret", "grant_type": "client_credentials"}
    auth = {
        "Authorization": "Bearer "
        + requests.post(api.base + "/oauth/token", json=body, timeout=30).json()["access_token"]
    }
    resolve = requests.post(
        f"{api.base}/userprofile/v1/resolve/1/1/1",
        params={"fields": "user_identities"},
        headers=auth,
        json={"identity": {"type": "customer_id", "value": "x" * 600}},
        timeout=30,
    )
    assert "Identifier Too Long" in assert_refused(resolve, "$.identity.value")
    surrogate = b'{"identity": {"type": "customer_id", "value": "\\ud800"}}'
    resolve = requests.post(
        f"{api.base}/userprofile/v1/resolve/1/1/1",
        params={"fields": "user_identities"},
        headers={**auth, "Content-Type": "application/json"},
        data=surrogate,
        timeout=30,
    )
    assert_refused(resolve, "$.identity.value")
    by_mpid = requests.get(
        f"{api.base}/userprofile/v1/1/1/1/{2**63}", params={"fields": "user_identities"}, headers=auth, timeout=30
    )
    assert by_mpid.status_code == 400 and "mpid" in by_mpid.json()["errors"][0]["message"]


def test_admin_edit_refuses_them(api: Api, receiver) -> None:
    assert api.post("/v2/events", batch("edited", [custom("hello", T0)])).status_code == 202
    mpid = wait_for(
        lambda: next(
            (b["mpid"] for b in receiver.bodies() if any(i["identity"] == "edited" for i in b["user_identities"])), None
        ),
        what="the profile to edit",
    )
    before = settled_count(api)
    edit = f"/cdp/users/{mpid}/edit"
    assert_refused(api.post(edit, {"input_id": 1, "user_attributes": {"n": 2**64}}), "$.user_attributes[...]")
    nan = api.post(edit, None, raw=b'{"input_id": 1, "user_attributes": {"score": NaN}}')
    assert_refused(nan, '$.user_attributes["score"]')
    infinity = api.post(edit, None, raw=b'{"input_id": 1, "user_attributes": {"score": -Infinity}}')
    assert_refused(infinity, '$.user_attributes["score"]')
    assert "Identifier Too Long" in assert_refused(
        api.post(edit, {"input_id": 1, "identities": {"email": LONG}}), "$.identities.email"
    )
    assert_refused(api.post(edit, {"input_id": 1, "identities": {"ios_idfv": "é" * 241}}), "$.identities.ios_idfv")
    many = {"input_id": 1, "deleted_user_attributes": [f"a{n}" for n in range(101)]}
    assert_refused(api.post(edit, many), "$.deleted_user_attributes")
    assert_refused(api.post(edit, {"input_id": 1, "gdpr": {"p" * 257: True}}), "$.gdpr")
    surrogate = api.post(edit, None, raw=b'{"input_id": 1, "user_attributes": {"x": "\\ud800"}}')
    assert_refused(surrogate, "$")
    assert_refused(api.post(f"/cdp/users/{2**63}/edit", {"input_id": 1}), "mpid")
    assert api.accepted_batches() == before
    assert api.post(edit, {"input_id": 1, "user_attributes": {"score": 1.5}}).status_code == 202
    wait_for(
        lambda: any(b["mpid"] == mpid and b["user_attributes"].get("score") == 1.5 for b in receiver.bodies()),
        what="the edit's delivery",
    )


# ---- point 9: what the official Python SDK sends --------------------------------------------------------


def test_a_batch_built_with_the_official_python_sdk_is_accepted_and_forwarded_whole(api: Api, receiver) -> None:
    media = MediaInfo(action="play", format="video", quality="hd", playback_position=12.5)
    played = AppEvent("Played", custom_event_type="media", timestamp_unixtime_ms=T0, media_info=media)
    played.custom_flags = {"answer": 42, "source": "sdk"}
    product = Product(id="sku-1", name="Boots", price=49.5, quantity=2)
    bought = CommerceEvent(ProductAction("purchase", total_amount=99.0, products=[product]), timestamp_unixtime_ms=T0)
    sdk_batch = Batch(
        environment="production",
        source_request_id="python-sdk-1",
        user_identities=UserIdentities(customerid="sdk-user", email="sdk@x.io"),
    )
    sdk_batch.events = [played, bought]
    body = ApiClient.sanitize_for_serialization(sdk_batch)
    response = api.post("/v2/events", body)
    assert response.status_code == 202, response.text
    delivered = wait_for(
        lambda: next((b for b in receiver.bodies() if b["source_request_id"] == "python-sdk-1"), None),
        what="the SDK batch's delivery",
    )
    media, commerce = delivered["events"][0]["data"], delivered["events"][1]["data"]
    assert media["media_info"] == {"action": "play", "format": "video", "quality": "hd", "playback_position": 12.5}
    assert media["custom_flags"] == {"answer": 42, "source": "sdk"}
    quantity = commerce["product_action"]["products"][0]["quantity"]
    assert quantity == 2 and type(quantity) is int
    identities = {i["identity_type"]: i["identity"] for i in delivered["user_identities"]}
    assert identities["customer_id"] == "sdk-user"
