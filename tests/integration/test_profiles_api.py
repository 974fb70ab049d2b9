"""Profile API, aliasing, user search and edit, and the identity report, over real HTTP."""

from __future__ import annotations

import time

import requests

from tests.conftest import demo_config
from tests.integration.test_identity_api import idsync
from tests.samples import batch, custom
from tests.support import Api, wait_for

IMMUTABLE_CID = {"immutable_ids": ["customer_id"]}
FIELDS = "user_identities,device_identities,user_attributes,audience_memberships,attribution"


def token(api: Api, secret: str = "demo-client-secret") -> requests.Response:
    body = {
        "client_id": "demo-client",
        "client_secret": secret,
        "grant_type": "client_credentials",
        "audience": "https://api.mparticle.com",
    }
    return requests.post(api.base + "/oauth/token", json=body, timeout=30)


def delivered_mpid(api: Api, receiver, customer: str, body: dict) -> int:
    assert api.post("/v2/events", body).status_code == 202
    found = wait_for(
        lambda: [b for b in receiver.bodies() if any(i["identity"] == customer for i in b["user_identities"])],
        what=f"{customer}'s delivery",
    )
    return found[-1]["mpid"]


def test_profile_api_with_oauth_tokens(platform, receiver) -> None:
    api = platform(demo_config(receiver.url, identity=IMMUTABLE_CID))
    body = batch(
        "pa-1",
        [custom("a", 1_700_000_000_000)],
        user_attributes={"ltv": 342.1, "vip": True, "recs": ["1", "2"]},
        device_info={"android_uuid": "and-1"},
    )
    mpid = delivered_mpid(api, receiver, "pa-1", body)
    wait_for(api.settled, what="settled")

    wrong = token(api, "wrong")
    assert wrong.status_code == 401, wrong.text
    issued = token(api).json()
    assert issued["token_type"] == "Bearer" and issued["expires_in"] == 28_800
    auth = {"Authorization": f"Bearer {issued['access_token']}"}
    url = f"{api.base}/userprofile/v1/1/1/1/{mpid}"
    profile = requests.get(url, params={"fields": FIELDS}, headers=auth, timeout=30).json()
    assert profile["mpid"] == mpid and profile["created_timestamp_ms"] > 0
    assert profile["user_identities"] == [{"type": "customer_id", "encoding": "none", "value": "pa-1"}]
    assert profile["device_identities"] == [{"type": "android_id", "encoding": "none", "value": "and-1"}]
    assert profile["user_attributes"] == {"ltv": "342.1", "vip": "true", "recs": ["1", "2"]}
    assert profile["audience_memberships"] == []
    only = requests.get(url, params={"fields": "user_attributes"}, headers=auth, timeout=30).json()
    assert "user_identities" not in only and "user_attributes" in only

    assert requests.get(url, params={"fields": FIELDS}, timeout=30).status_code == 401
    forged = {"Authorization": "Bearer " + issued["access_token"][:-2] + "00"}
    assert requests.get(url, params={"fields": FIELDS}, headers=forged, timeout=30).status_code == 401
    assert requests.get(url, headers=auth, timeout=30).status_code == 400  # fields is required
    unknown = requests.get(
        f"{api.base}/userprofile/v1/1/1/1/424242", params={"fields": FIELDS}, headers=auth, timeout=30
    )
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "NOT_FOUND"
    other_workspace = requests.get(
        f"{api.base}/userprofile/v1/1/1/2/{mpid}", params={"fields": FIELDS}, headers=auth, timeout=30
    )
    assert other_workspace.status_code == 404

    resolve = f"{api.base}/userprofile/v1/resolve/1/1/1"
    found = requests.post(
        resolve,
        params={"fields": "user_identities"},
        headers=auth,
        timeout=30,
        json={"environment_type": "production", "identity": {"type": "customer_id", "value": "pa-1"}},
    )
    assert found.status_code == 200 and found.json()["mpid"] == mpid
    not_immutable = requests.post(
        resolve,
        params={"fields": "user_identities"},
        headers=auth,
        timeout=30,
        json={"identity": {"type": "email", "value": "x@y.io"}},
    )
    assert not_immutable.status_code == 400


def test_tokens_expire(platform, receiver) -> None:
    config = demo_config(receiver.url)
    clients = [
        c.model_copy(update={"token_ttl_s": 1}) if c.client_id == "demo-client" else c for c in config.api_clients
    ]
    config = config.model_copy(update={"api_clients": clients})
    api = platform(config)
    mpid = idsync(api, "identify", email="ttl@x.io")["mpid"]
    auth = {"Authorization": "Bearer " + token(api).json()["access_token"]}
    url = f"{api.base}/userprofile/v1/1/1/1/{mpid}"
    assert requests.get(url, params={"fields": "user_identities"}, headers=auth, timeout=30).status_code == 200
    wait_for(
        lambda: requests.get(url, params={"fields": "user_identities"}, headers=auth, timeout=30).status_code == 401,
        timeout=10,
        interval=0.2,
        what="the token to expire",
    )


def test_alias_copies_events_in_the_window_and_first_seen(platform, receiver) -> None:
    api = platform(demo_config(receiver.url))
    now = int(time.time() * 1000)
    early, inside, late = now - 3 * 86_400_000, now - 2 * 86_400_000, now - 3_600_000
    source = delivered_mpid(
        api,
        receiver,
        "alias-src",
        batch("alias-src", [custom("before", early), custom("inside", inside), custom("after", late)]),
    )
    destination = delivered_mpid(api, receiver, "alias-dst", batch("alias-dst", [custom("own", now - 1000)]))
    wait_for(api.settled, what="settled")

    def alias(src: int, dst: int, start: int | None, end: int | None) -> requests.Response:
        body = {
            "request_type": "alias",
            "environment": "production",
            "api_key": "demo-key",
            "data": {"source_mpid": src, "destination_mpid": dst, "start_unixtime_ms": start, "end_unixtime_ms": end},
        }
        return api.post("/v1/identity/demo-key/alias", body)

    assert alias(source, source, early, late).json()["errors"][0]["message"] == (
        "Source MPID is the same as the target MPID."
    )
    assert alias(source, destination, late, early).json()["errors"][0]["message"] == "Given time range is invalid."
    assert alias(source, 987654321, early, late).status_code == 400
    assert (
        api.post("/v1/identity/other-key/alias", {"data": {"source_mpid": 1, "destination_mpid": 2}}).status_code == 403
    )
    assert alias(source, destination, inside - 1000, late - 1000).status_code == 202

    def copied() -> list[str]:
        detail = api.get(f"/cdp/users/{destination}").json()
        return [e["data"]["event_name"] for e in detail["recent_events"]]

    assert wait_for(lambda: "inside" in copied() and copied(), what="the alias copy") == ["inside", "own"]
    detail = api.get(f"/cdp/users/{destination}").json()
    assert detail["first_seen_ms"] == early  # the source's first-seen overwrites the destination's
    assert detail["identities"] == {"customer_id": ["alias-dst"]}  # identities are not copied
    assert any("merged from" in m for m in detail["status_messages"])
    assert any("aliased into" in m for m in api.get(f"/cdp/users/{source}").json()["status_messages"])
    # An overlapping window for the same source is not applied, and not an error.
    assert alias(source, destination, inside - 5000, late).status_code == 202
    wait_for(lambda: api.status()["identity"]["pending_aliases"] == 0, what="the alias queue to drain")
    assert copied() == ["inside", "own"]


def test_user_search_edit_and_identity_report(platform, receiver) -> None:
    # A config of its own (an explicit login ID list), so the report counts only this test's profiles.
    api = platform(demo_config(receiver.url, identity={"login_ids": ["customer_id"]}))
    mpid = delivered_mpid(
        api,
        receiver,
        "edit-me",
        batch("edit-me", [custom("x", 1_700_000_000_000)], device_info={"ios_idfv": "idfv-edit"}),
    )
    users = api.get("/cdp/users/search", identity_type="customerid", value="edit-me").json()["users"]
    assert [u["mpid"] for u in users] == [mpid] and users[0]["devices"]["ios_idfv"]["value"] == "idfv-edit"
    assert api.get("/cdp/users/search", identity_type="shoe", value="1").status_code == 400

    edit = {
        "input_id": 1,
        "user_attributes": {"$firstname": "Ada", "plan": "pro"},
        "gdpr": {"marketing": True},
        "identities": {"email": "ada@x.io"},
    }
    assert api.post(f"/cdp/users/{mpid}/edit", edit).status_code == 202
    forwarded = wait_for(
        lambda: [b for b in receiver.bodies() if b["user_attributes"].get("plan") == "pro"],
        what="the edit to reach the output",
    )[0]
    assert forwarded["mpid"] == mpid and forwarded["events"][0]["event_type"] == "user_identity_change"
    assert forwarded["consent_state"]["gdpr"]["marketing"]["consented"] is True
    assert forwarded["system_notifications"][0]["type"] == "gdpr_change"
    detail = api.get(f"/cdp/users/{mpid}").json()
    assert list(detail["attributes"]) == ["$firstname", "plan"]  # reserved attributes first
    assert detail["identities"] == {"customer_id": ["edit-me"], "email": ["ada@x.io"]}

    refused = api.post(f"/cdp/users/{mpid}/edit", {"input_id": 1, "gdpr": {"marketing": "yes"}})
    assert refused.status_code == 400 and "gdpr.marketing" in refused.json()["errors"][0]["message"]
    assert api.post(f"/cdp/users/{mpid}/edit", {"input_id": 99}).status_code == 400
    assert api.post("/cdp/users/5555/edit", {"input_id": 1}).status_code == 404

    idsync(api, "identify", ios_idfv="anon-device")
    anonymous = batch(None, [custom("y", 1_700_000_000_000)], device_info={"ios_idfv": "anon-device"})
    assert api.post("/v2/events", anonymous).status_code == 202
    wait_for(lambda: api.settled() and len(receiver.received) >= 3, what="everything processed")
    report = api.get("/cdp/reports/identity").json()
    today = report["days"][-1]
    assert (today["input_id"], today["active_profiles"], today["known_profiles"]) == (1, 2, 1)
    assert today["anonymous_profiles"] == 1
    assert today["identifier_coverage"]["ios_idfv"] == 1.0 and today["identifier_coverage"]["customer_id"] == 0.5
