"""IDSync over real HTTP: every documented strategy flow, errors, auth modes, concurrency, batches."""

from __future__ import annotations

import hashlib
import hmac
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import requests

from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import Api, wait_for

T0 = 1_700_000_000_000
UNIQUE_EMAIL = {"unique_ids": ["customer_id", "email"], "login_ids": ["customer_id", "email"]}


def idsync(api: Api, operation: str, previous: str | None = None, status: int = 200, **identities: str) -> Any:
    body = {"environment": "production", "known_identities": identities, "context": "ctx-1"}
    if previous:
        body["previous_mpid"] = previous
    response = api.post(f"/v1/{operation}", body)
    assert response.status_code == status, response.text
    return response.json()


def modify(api: Api, mpid: str, *changes: tuple[str, str | None, str | None], status: int = 200) -> Any:
    body = {
        "environment": "production",
        "identity_changes": [{"identity_type": t, "old_value": old, "new_value": new} for t, old, new in changes],
    }
    response = api.post(f"/v1/{mpid}/modify", body)
    assert response.status_code == status, response.text
    return response.json()


def users_holding(api: Api, identity_type: str, value: str) -> list[dict]:
    return api.get("/cdp/users/search", identity_type=identity_type, value=value).json()["users"]


def test_profile_conversion_flow_over_http(platform, receiver) -> None:
    api = platform(demo_config(receiver.url, identity=UNIQUE_EMAIL))
    p1 = idsync(api, "identify", ios_idfv="9876")
    assert p1["is_logged_in"] is False and p1["context"] == "ctx-1" and int(p1["mpid"])
    login = idsync(api, "login", p1["mpid"], customerid="c1", email="a@x.io", ios_idfv="9876")
    assert (login["mpid"], login["is_logged_in"]) == (p1["mpid"], True)
    assert login["matched_identities"] == {"ios_idfv": "9876"}
    p2 = idsync(api, "logout", ios_idfv="9876")
    assert p2["mpid"] != p1["mpid"] and p2["is_logged_in"] is False
    again = idsync(api, "login", p2["mpid"], customerid="c1", email="a@x.io")
    assert again["mpid"] == p1["mpid"]
    assert again["matched_identities"] == {"customerid": "c1", "email": "a@x.io"}

    # A feed batch creates P3 with an email; modifying P1's email to it orphans P3.
    feed = batch(None, [custom("x", T0)], user_identities={"email": "b@x.io"})
    assert api.post("/v2/events", feed).status_code == 202
    p3 = wait_for(lambda: users_holding(api, "email", "b@x.io"), what="the feed profile")[0]
    assert modify(api, p1["mpid"], ("email", "a@x.io", "b@x.io")) == {
        "change_results": [{"identity_type": "email", "modified_mpid": p1["mpid"]}]
    }
    orphan = api.get(f"/cdp/users/{p3['mpid']}").json()
    assert orphan["orphaned"] is True
    assert [u["mpid"] for u in users_holding(api, "email", "b@x.io")] == [int(p1["mpid"])]
    idsync(api, "search", status=404, email="a@x.io")

    p4 = idsync(api, "identify", roku_aid="roku-1")
    assert p4["mpid"] not in (p1["mpid"], p2["mpid"])
    assert idsync(api, "login", p4["mpid"], customerid="c1", roku_aid="roku-1")["mpid"] == p1["mpid"]
    assert api.get(f"/cdp/users/{p1['mpid']}").json()["identities"] == {"customer_id": ["c1"], "email": ["b@x.io"]}
    assert users_holding(api, "roku_advertising_id", "roku-1")[-1]["mpid"] == int(p1["mpid"])


def test_profile_link_flow_over_http(platform, receiver) -> None:
    api = platform(demo_config(receiver.url, identity={"strategy": "profile_link"}))
    p1 = idsync(api, "identify", ios_idfv="d-link")
    p2 = idsync(api, "login", p1["mpid"], customerid="c-link", ios_idfv="d-link")
    assert p2["mpid"] != p1["mpid"] and p2["is_logged_in"]
    p3 = idsync(api, "logout", ios_idfv="d-link")
    assert p3["mpid"] not in (p1["mpid"], p2["mpid"])
    assert idsync(api, "logout", ios_idfv="d-link")["mpid"] != p3["mpid"]
    assert idsync(api, "login", p3["mpid"], customerid="c-link")["mpid"] == p2["mpid"]


def test_profile_isolation_flow_over_http(platform, receiver) -> None:
    api = platform(demo_config(receiver.url, identity={"strategy": "profile_isolation"}))
    p1 = idsync(api, "identify", ios_idfv="d-iso")
    p2 = idsync(api, "login", p1["mpid"], email="e@iso.io", ios_idfv="d-iso")
    assert p2["mpid"] != p1["mpid"]
    assert idsync(api, "logout", ios_idfv="d-iso")["mpid"] == p1["mpid"]
    assert idsync(api, "login", email="e@iso.io", ios_idfv="d-iso")["mpid"] == p2["mpid"]


def test_best_match_flow_over_http(platform, receiver) -> None:
    api = platform(demo_config(receiver.url, identity={"strategy": "best_match"}))
    p1 = idsync(api, "identify", ios_idfv="v-best")
    assert idsync(api, "identify", email="e@best.io", ios_idfv="v-best")["mpid"] == p1["mpid"]
    assert idsync(api, "identify", android_uuid="a-best", email="e@best.io")["mpid"] == p1["mpid"]
    error = idsync(api, "login", status=400, email="e@best.io")
    assert "no login" in error["errors"][0]["message"]


def test_bad_requests_and_auth_modes(platform, receiver) -> None:
    api = platform(demo_config(receiver.url))
    cases = [
        ({"environment": "production", "known_identities": {}}, "at least one identifier"),
        ({"environment": "production", "known_identities": {"shoe_size": "42"}}, "Unknown identity type `shoe_size`"),
        ({"known_identities": {"email": "x@y.io"}}, "environment"),
        ({"environment": "staging", "known_identities": {"email": "x@y.io"}}, "environment"),
    ]
    for body, expected in cases:
        response = api.post("/v1/identify", body)
        assert response.status_code == 400 and expected in response.json()["errors"][0]["message"], response.text
    assert api.post("/v1/identify", None, raw=b"{not json").status_code == 400
    assert api.post("/v1/search", {"environment": "production", "known_identities": {"email": "no@x.io"}}).json() == {
        "errors": [{"code": "NOT_FOUND_ERROR", "message": "User Profile Not Found."}]
    }
    assert users_holding(api, "email", "no@x.io") == []  # search never creates
    assert modify(api, "12345", ("email", None, "e@x.io"), status=404)["errors"][0]["code"] == "NOT_FOUND_ERROR"
    assert modify(api, "not-a-number", ("email", None, "e@x.io"), status=400)
    assert (
        api.post(
            "/v1/identify", {"environment": "production", "known_identities": {"email": "a@b.c"}}, auth=None
        ).status_code
        == 401
    )

    body = json.dumps({"environment": "production", "known_identities": {"email": "signed@x.io"}}).encode()
    date = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")  # the docs' ISO-8601 form, within the skew
    signature = hmac.new(b"demo-secret", b"POST\n" + date.encode() + b"\n/v1/identify" + body, hashlib.sha256)
    headers = {"x-mp-key": "demo-key", "Date": date, "Content-Type": "application/json"}
    signed = requests.post(
        api.base + "/v1/identify", data=body, headers={**headers, "x-mp-signature": signature.hexdigest()}, timeout=30
    )
    assert signed.status_code == 200 and int(signed.json()["mpid"])
    forged = requests.post(
        api.base + "/v1/identify", data=body, headers={**headers, "x-mp-signature": "00" * 32}, timeout=30
    )
    assert forged.status_code == 401


def test_concurrent_identify_and_login_with_overlapping_new_identities(platform, receiver) -> None:
    api = platform(demo_config(receiver.url))
    customers = [f"race-{n}" for n in range(30)]
    calls = [(op, c, d) for c in customers for d in range(5) for op in ("identify", "login")]

    def call(args: tuple[str, str, int]) -> tuple[str, str]:
        operation, customer, device = args
        body = {
            "environment": "production",
            "known_identities": {"customerid": customer, "ios_idfv": f"{customer}-dev-{device}"},
        }
        response = requests.post(
            f"{api.base}/v1/{operation}", json=body, timeout=60, headers={"Authorization": api_auth()}
        )
        assert response.status_code == 200, response.text
        return customer, response.json()["mpid"]

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, calls))
    mpids: dict[str, set[str]] = {}
    for customer, mpid in results:
        mpids.setdefault(customer, set()).add(mpid)
    assert all(len(found) == 1 for found in mpids.values()), mpids  # one MPID per new customer ID
    assert len({next(iter(m)) for m in mpids.values()}) == len(customers)
    for customer in customers:
        (mpid,) = mpids[customer]
        holders = users_holding(api, "customer_id", customer)
        assert [u["mpid"] for u in holders] == [int(mpid)]
        assert len(holders[0]["identities"]["customer_id"]) == 1
        devices = idsync(api, "search", customerid=customer)
        assert devices["mpid"] == mpid  # no identity was lost


def api_auth() -> str:
    from tests.support import DEMO_AUTH

    return DEMO_AUTH


def test_batches_resolve_through_idsync_and_carry_identity_changes(platform, receiver) -> None:
    api = platform(demo_config(receiver.url))
    known = idsync(api, "identify", customerid="batch-user")
    first = batch("batch-user", [custom("a", T0)], user_identities={"customer_id": "batch-user", "email": "bu@x.io"})
    assert api.post("/v2/events", first).status_code == 202
    wait_for(lambda: receiver.received, what="the delivery")
    body = receiver.bodies()[0]
    assert str(body["mpid"]) == known["mpid"]  # resolved by the customer ID IDSync created
    changes = [e["data"] for e in body["events"] if e["event_type"] == "user_identity_change"]
    assert len(changes) == 1 and changes[0]["old"] is None and changes[0]["message_id"]
    new = changes[0]["new"]
    assert (new["identity_type"], new["identity"], new["created_this_batch"]) == ("email", "bu@x.io", True)
    found = idsync(api, "search", customerid="batch-user", email="bu@x.io")
    assert (found["mpid"], found["matched_identities"]) == (
        known["mpid"],
        {"customerid": "batch-user", "email": "bu@x.io"},
    )
    idsync(api, "search", status=404, email="bu@x.io")  # a known profile needs its login ID (customer ID)


def test_a_batch_spelling_one_identity_two_ways_reaches_profile_and_index_alike(platform, receiver) -> None:
    """`customer_id` and the Python SDK's `customerid` in one batch: the canonical spelling wins on both paths,
    the profile (whose identities the delivered batch carries) and the identity index (IDSync, /cdp/users)."""
    api = platform(demo_config(receiver.url))
    body = batch(None, [custom("a", T0)], user_identities={"customer_id": "a", "customerid": "b"})
    assert api.post("/v2/events", body).status_code == 202
    delivered = wait_for(receiver.bodies, what="the delivery")[0]
    assert [(i["identity_type"], i["identity"]) for i in delivered["user_identities"]] == [("customer_id", "a")]
    found = idsync(api, "search", customerid="a")
    assert found["mpid"] == str(delivered["mpid"])
    idsync(api, "search", status=404, customerid="b")
    assert api.get(f"/cdp/users/{delivered['mpid']}").json()["identities"] == {"customer_id": ["a"]}
