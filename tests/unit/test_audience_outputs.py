from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import pytest
from aiohttp import web
from pydantic import ValidationError

from cdp_actors.integrations import (
    braze_audience,
    facebook_audience,
    pinterest_audience,
    snapchat_audience,
    twitter_audience,
)
from cdp_actors.integrations.base import PARTNER_STATUS_ALERTS, HttpRequest, MembershipChange, Prepared, sha256_hex
from cdp_actors.integrations.registry import build_adapter, settings_model
from tests.unit.partners import LocalPartner, Received

# SHA-256 values: test@example.com's is the widely published one, @AdsAPI's is from X's "Custom Audiences
# User Data" page; the rest were computed once with hashlib and pinned.
EMAIL_HASH = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"  # test@example.com
HANDLE_HASH = "49e0be2aeccfb51a8dee4c945c8a70a9ac500cf6f5cb08112575f74db9b1470d"  # adsapi
PHONE_HASH = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"  # 16505551212
IDFA = "4b61639e-47cc-4056-a16a-c8217e029462"
IDFA_HASH = "225859d35b46df63b4fb381eb3f815b2ef4620bec0a79f2115a6a3eb71a5fa1a"
GAID = "2f5f5391-3e45-4d02-b645-4575a08f86e0"
GAID_HASH = "faae196ce640351669a84b9cb4cd08987932346428c4b0720474fd7a3e642f05"
OTHER_EMAIL_HASH = "5b71ed5f946240dc76f3b7c24bdcbbc3528284ec5f4519249fb702686f0df5b8"  # other@example.com
NOW_MS = 1_700_000_000_123

FULL = {
    "customer_id": "c-1",
    "email": "  Test@Example.COM ",
    "mobile_number": "+1 (650) 555-1212",
    "twitter": "@AdsAPI",
    "ios_advertising_id": IDFA.upper(),
    "android_advertising_id": GAID,
}


def change(mpid: int, action: str = "add", audience: int = 7, **identities: str) -> MembershipChange:
    return MembershipChange(audience, "Big Spenders", mpid, action, identities, NOW_MS - 5_000)


def emails(count: int, action: str = "add") -> list[MembershipChange]:
    return [change(n, action, email=f"user{n}@example.com") for n in range(1, count + 1)]


def body(request: HttpRequest) -> Any:
    return json.loads(request.body)


def rejections(prepared: Prepared) -> list[tuple[str, str]]:
    return [(r.alert_type, r.message) for r in prepared.rejections]


def test_hashing_normalises_then_hashes_to_the_published_values() -> None:
    assert sha256_hex(FULL["email"]) == EMAIL_HASH
    assert sha256_hex("adsapi") == HANDLE_HASH
    assert facebook_audience.phone_digits("+1 (650) 555-1212") == "16505551212"
    assert facebook_audience.phone_digits("0016505551212") == "16505551212"
    assert sha256_hex(IDFA.upper()) == IDFA_HASH


# --- Facebook ---------------------------------------------------------------------------------------

FACEBOOK = facebook_audience.Settings(
    access_token="fb-token", audience_ids={7: "23850001"}, api_url="http://fb.test/v21.0"
)
FACEBOOK_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer fb-token"}


def test_facebook_adds_and_deletes_with_a_multi_key_payload() -> None:
    changes = [change(1, **FULL), change(2, "delete", email="other@example.com", android_advertising_id=GAID)]
    prepared = facebook_audience.Adapter(FACEBOOK).prepare_memberships(changes, NOW_MS)
    add, delete = prepared.requests
    assert (add.method, add.url, add.headers) == ("POST", "http://fb.test/v21.0/23850001/users", FACEBOOK_HEADERS)
    assert body(add) == {"payload": {"schema": ["EMAIL", "PHONE", "MADID"], "data": [[EMAIL_HASH, PHONE_HASH, IDFA]]}}
    assert (delete.method, delete.url) == ("DELETE", "http://fb.test/v21.0/23850001/users")
    assert body(delete) == {"payload": {"schema": ["EMAIL", "PHONE", "MADID"], "data": [[OTHER_EMAIL_HASH, "", GAID]]}}
    assert add.body == facebook_audience.json_body(body(add))  # compact JSON, as sent
    assert prepared.forwarded_events == 2 and prepared.rejections == []


def test_facebook_sends_only_the_configured_identities() -> None:
    settings = FACEBOOK.model_copy(update={"identities": ("email",)})
    prepared = facebook_audience.Adapter(settings).prepare_memberships([change(1, **FULL)], NOW_MS)
    assert body(prepared.requests[0]) == {"payload": {"schema": ["EMAIL"], "data": [[EMAIL_HASH]]}}


def test_facebook_rejects_users_without_a_match_key_and_unmapped_audiences() -> None:
    changes = [change(1, customer_id="c-1"), change(2, email="a@b.c"), change(3, audience=99, email="x@y.z")]
    prepared = facebook_audience.Adapter(FACEBOOK).prepare_memberships(changes, NOW_MS)
    assert len(prepared.requests) == 1 and prepared.forwarded_events == 1
    assert rejections(prepared) == [
        ("Missing Identity", "mpid 1 has none of email, mobile_number, ios_advertising_id, android_advertising_id"),
        ("Missing Required Setting", "audience 99 is not in audience_ids; 1 changes not sent"),
    ]


def test_facebook_keeps_only_a_users_last_change() -> None:
    changes = [change(1, "add", email="a@b.c"), change(1, "delete", email="a@b.c")]
    [request] = facebook_audience.Adapter(FACEBOOK).prepare_memberships(changes, NOW_MS).requests
    assert request.method == "DELETE"


def test_facebook_splits_at_its_documented_limit() -> None:
    assert facebook_audience.Adapter.max_batch == 10_000
    prepared = facebook_audience.Adapter(FACEBOOK).prepare_memberships(emails(10_001), NOW_MS)
    assert [len(body(r)["payload"]["data"]) for r in prepared.requests] == [10_000, 1]


# --- Snapchat ---------------------------------------------------------------------------------------

SNAPCHAT = snapchat_audience.Settings(
    access_token="snap-token", segment_ids={7: "seg-7"}, api_url="http://snap.test/v1"
)


def test_snapchat_sends_one_request_per_identifier_type_and_action() -> None:
    member = change(1, **{**FULL, "phone_number_2": "16505551212"})  # same number twice: sent once
    leaver = change(2, "delete", email="other@example.com")
    prepared = snapchat_audience.Adapter(SNAPCHAT).prepare_memberships([member, leaver], NOW_MS)
    assert [r.method for r in prepared.requests] == ["POST", "POST", "POST", "DELETE"]
    assert {r.url for r in prepared.requests} == {"http://snap.test/v1/segments/seg-7/users"}
    assert [body(r) for r in prepared.requests] == [
        {"users": [{"schema": ["EMAIL_SHA256"], "data": [[EMAIL_HASH]]}]},
        {"users": [{"schema": ["PHONE_SHA256"], "data": [[PHONE_HASH]]}]},
        {"users": [{"schema": ["MOBILE_AD_ID_SHA256"], "data": [[IDFA_HASH], [GAID_HASH]]}]},
        {"users": [{"schema": ["EMAIL_SHA256"], "data": [[OTHER_EMAIL_HASH]]}]},
    ]
    assert prepared.requests[0].headers == {"Content-Type": "application/json", "Authorization": "Bearer snap-token"}
    assert prepared.forwarded_events == 2


def test_snapchat_rejects_users_without_an_accepted_identity() -> None:
    prepared = snapchat_audience.Adapter(SNAPCHAT).prepare_memberships([change(1, twitter="@jack")], NOW_MS)
    assert prepared.requests == []
    assert [r.alert_type for r in prepared.rejections] == ["Missing Identity"]


def test_snapchat_splits_identifiers_at_max_batch() -> None:
    class Small(snapchat_audience.Adapter):
        max_batch: ClassVar[int] = 2

    prepared = Small(SNAPCHAT).prepare_memberships(emails(5), NOW_MS)
    assert [len(body(r)["users"][0]["data"]) for r in prepared.requests] == [2, 2, 1]
    assert snapchat_audience.Adapter.max_batch == 100_000


# --- Twitter / X ------------------------------------------------------------------------------------

TWITTER = twitter_audience.Settings(
    account_id="18ce54d4x5t",
    consumer_key="ck",
    consumer_secret="x-consumer-secret",
    access_token="at",
    access_token_secret="x-token-secret",
    audience_ids={7: "1nmth"},
    api_url="http://x.test/12",
)
TWITTER_URL = "http://x.test/12/accounts/18ce54d4x5t/custom_audiences/1nmth/users"


def test_twitter_updates_and_deletes_hashed_users() -> None:
    changes = [change(1, **FULL), change(2, "delete", ios_advertising_id=IDFA)]
    add, delete = twitter_audience.Adapter(TWITTER).prepare_memberships(changes, NOW_MS).requests
    assert (add.method, add.url, delete.method, delete.url) == ("POST", TWITTER_URL, "POST", TWITTER_URL)
    user = {"email": [EMAIL_HASH], "handle": [HANDLE_HASH], "device_id": [IDFA_HASH, GAID_HASH]}
    assert body(add) == [{"operation_type": "Update", "params": {"users": [user]}}]
    assert body(delete) == [{"operation_type": "Delete", "params": {"users": [{"device_id": [IDFA_HASH]}]}}]
    assert add.headers["Content-Type"] == "application/json"


def test_twitter_signs_requests_with_oauth1() -> None:
    [request] = twitter_audience.Adapter(TWITTER).prepare_memberships([change(1, email="a@b.c")], NOW_MS).requests
    fields = dict(re.findall(r'(\w+)="([^"]*)"', request.headers["Authorization"]))
    assert request.headers["Authorization"].startswith("OAuth ")
    assert fields["oauth_consumer_key"] == "ck" and fields["oauth_token"] == "at"
    assert fields["oauth_timestamp"] == str(NOW_MS // 1000) and fields["oauth_signature_method"] == "HMAC-SHA1"
    keys = twitter_audience.OAuth1Keys("ck", "x-consumer-secret", "at", "x-token-secret")
    expected = twitter_audience.oauth1_header("POST", TWITTER_URL, keys, fields["oauth_nonce"], NOW_MS // 1000)
    assert request.headers["Authorization"] == expected


def test_oauth1_signature_matches_twitters_documented_example() -> None:
    keys = twitter_audience.OAuth1Keys(
        "xvz1evFS4wEEPTGEFPHBog",
        "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
        "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
        "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
    )
    params = {"include_entities": "true", "status": "Hello Ladies + Gentlemen, a signed OAuth request!"}
    url, nonce = "https://api.twitter.com/1.1/statuses/update.json", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"
    header = twitter_audience.oauth1_header("post", url, keys, nonce, 1318622958, params)
    assert 'oauth_signature="hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D"' in header


def test_twitter_splits_and_rejects() -> None:
    class Small(twitter_audience.Adapter):
        max_batch: ClassVar[int] = 2

    prepared = Small(TWITTER).prepare_memberships([*emails(3), change(9, customer_id="c-9")], NOW_MS)
    assert [len(body(r)[0]["params"]["users"]) for r in prepared.requests] == [2, 1]
    assert [r.alert_type for r in prepared.rejections] == ["Missing Identity"]
    assert twitter_audience.Adapter.max_batch == 2_500


# --- Pinterest --------------------------------------------------------------------------------------

PINTEREST = pinterest_audience.Settings(
    ad_account_id="549755885175",
    access_token="pin-token",
    customer_lists={7: pinterest_audience.CustomerLists(email="643", maid="644")},
    api_url="http://pin.test/v5",
)
PIN_LISTS = "http://pin.test/v5/ad_accounts/549755885175/customer_lists"


def test_pinterest_patches_the_email_and_maid_lists() -> None:
    changes = [change(1, **FULL), change(2, email="other@example.com"), change(3, "delete", email="a@b.c")]
    prepared = pinterest_audience.Adapter(PINTEREST).prepare_memberships(changes, NOW_MS)
    assert [(r.method, r.url) for r in prepared.requests] == [
        ("PATCH", f"{PIN_LISTS}/643"),
        ("PATCH", f"{PIN_LISTS}/644"),
        ("PATCH", f"{PIN_LISTS}/643"),
    ]
    assert [body(r) for r in prepared.requests] == [
        {"records": f"{EMAIL_HASH},{OTHER_EMAIL_HASH}", "operation_type": "ADD"},
        {"records": f"{IDFA_HASH},{GAID_HASH}", "operation_type": "ADD"},
        {"records": sha256_hex("a@b.c"), "operation_type": "REMOVE"},
    ]
    assert prepared.requests[0].headers == {"Content-Type": "application/json", "Authorization": "Bearer pin-token"}


def test_pinterest_rejects_identities_with_no_mapped_list() -> None:
    settings = PINTEREST.model_copy(update={"customer_lists": {7: pinterest_audience.CustomerLists(email="643")}})
    changes = [change(1, ios_advertising_id=IDFA), change(2, audience=8, email="a@b.c")]
    prepared = pinterest_audience.Adapter(settings).prepare_memberships(changes, NOW_MS)
    assert prepared.requests == []
    assert rejections(prepared) == [
        ("Missing Identity", "mpid 1 has none of email"),
        ("Missing Required Setting", "audience 8 is not in customer_lists; 1 changes not sent"),
    ]


def test_pinterest_splits_records_at_max_batch() -> None:
    class Small(pinterest_audience.Adapter):
        max_batch: ClassVar[int] = 2

    prepared = Small(PINTEREST).prepare_memberships(emails(3), NOW_MS)
    assert [body(r)["records"].count(",") + 1 for r in prepared.requests] == [2, 1]


# --- Braze ------------------------------------------------------------------------------------------

BRAZE = braze_audience.Settings(api_url="http://braze.test", api_key="braze-key")


def test_braze_sets_one_attribute_per_audience_by_default() -> None:
    changes = [change(1, **FULL), change(2, "delete", customer_id="c-2")]
    [request] = braze_audience.Adapter(BRAZE).prepare_memberships(changes, NOW_MS).requests
    assert (request.method, request.url) == ("POST", "http://braze.test/users/track")
    assert request.headers == {"Content-Type": "application/json", "Authorization": "Bearer braze-key"}
    assert body(request) == {
        "attributes": [
            {"external_id": "c-1", "In Big Spenders": True},
            {"external_id": "c-2", "In Big Spenders": False},
        ]
    }


def test_braze_can_keep_an_array_of_audience_ids_too() -> None:
    settings = BRAZE.model_copy(update={"send_segments_as": "both", "external_id_type": "email"})
    changes = [change(1, email="a@b.c"), change(2, "delete", email="d@e.f")]
    [request] = braze_audience.Adapter(settings).prepare_memberships(changes, NOW_MS).requests
    assert body(request)["attributes"] == [
        {"external_id": "a@b.c", "In Big Spenders": True, "SegmentMembershipArray": {"add": ["7"]}},
        {"external_id": "d@e.f", "In Big Spenders": False, "SegmentMembershipArray": {"remove": ["7"]}},
    ]


def test_braze_rejects_users_without_the_external_id_and_splits_at_75() -> None:
    changes = [change(n, customer_id=f"c-{n}") for n in range(1, 77)] + [change(99, email="a@b.c")]
    prepared = braze_audience.Adapter(BRAZE).prepare_memberships(changes, NOW_MS)
    assert [len(body(r)["attributes"]) for r in prepared.requests] == [75, 1]
    assert rejections(prepared) == [("Missing Identity", "mpid 99 has no customer_id to send as the Braze external_id")]
    assert prepared.forwarded_events == 76


def test_braze_external_id_must_be_a_user_identity() -> None:
    with pytest.raises(ValidationError):
        braze_audience.Settings(api_url="http://braze.test", api_key="k", external_id_type="ios_advertising_id")


def test_at_least_one_identity_must_be_forwarded() -> None:
    with pytest.raises(ValidationError):
        facebook_audience.Settings(access_token="t", identities=())


# --- all of them ------------------------------------------------------------------------------------

SETTINGS = {
    "facebook_audience": FACEBOOK,
    "snapchat_audience": SNAPCHAT,
    "twitter_audience": TWITTER,
    "braze_audience": BRAZE,
    "pinterest_audience": PINTEREST,
}


MAX_BATCH = {
    "facebook_audience": 10_000,
    "snapchat_audience": 100_000,
    "twitter_audience": 2_500,
    "braze_audience": 75,
    "pinterest_audience": 10_000,
}
"""Members per partner request, as each partner's API documents its limit."""


@pytest.mark.parametrize("kind", sorted(SETTINGS))
def test_the_registry_builds_each_audience_output(kind: str) -> None:
    settings = settings_model(kind).model_validate(SETTINGS[kind].model_dump())
    adapter = build_adapter(kind, settings)
    assert adapter.status_alerts == PARTNER_STATUS_ALERTS
    assert adapter.max_batch == MAX_BATCH[kind]  # type: ignore[attr-defined]
    assert adapter.max_age_s == settings.bulk_max_age_s  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", sorted(SETTINGS))
def test_preparing_is_deterministic(kind: str) -> None:
    changes = [change(1, **FULL), change(2, "delete", **FULL), change(3, email="x@y.z")]
    first = build_adapter(kind, SETTINGS[kind]).prepare_memberships(changes, NOW_MS)  # type: ignore[attr-defined]
    again = build_adapter(kind, SETTINGS[kind]).prepare_memberships(changes, NOW_MS)  # type: ignore[attr-defined]
    assert first == again and first.requests


@pytest.mark.parametrize("kind", sorted(SETTINGS))
def test_credentials_stay_out_of_reprs(kind: str) -> None:
    secrets = ("fb-token", "snap-token", "pin-token", "braze-key", "x-consumer-secret", "x-token-secret")
    assert not [secret for secret in secrets if secret in repr(SETTINGS[kind])]


# --- over real HTTP ---------------------------------------------------------------------------------


def ok_json(received: Received) -> web.Response:
    return web.json_response({"ok": True})


def test_prepared_requests_reach_a_partner_over_http() -> None:
    partner = LocalPartner()
    facebook = facebook_audience.Adapter(FACEBOOK.model_copy(update={"api_url": f"{partner.url}/v21.0"}))
    pinterest = pinterest_audience.Adapter(PINTEREST.model_copy(update={"api_url": f"{partner.url}/v5"}))
    changes = [change(1, **FULL), change(2, "delete", email="other@example.com")]
    requests = [
        *facebook.prepare_memberships(changes, NOW_MS).requests,
        *pinterest.prepare_memberships(changes, NOW_MS).requests,
    ]

    attempts, received = partner.deliver(requests, ok_json, timeout_s=5)

    assert [a.status for a in attempts] == [200] * len(requests)
    assert [(r.method, r.path) for r in received] == [
        ("POST", "/v21.0/23850001/users"),
        ("DELETE", "/v21.0/23850001/users"),
        ("PATCH", "/v5/ad_accounts/549755885175/customer_lists/643"),
        ("PATCH", "/v5/ad_accounts/549755885175/customer_lists/644"),
        ("PATCH", "/v5/ad_accounts/549755885175/customer_lists/643"),
    ]
    assert [r.body for r in received] == [r.body for r in requests]
    assert received[1].headers["Authorization"] == "Bearer fb-token"
    assert received[1].headers["Content-Type"] == "application/json"
    assert received[4].json() == {"records": OTHER_EMAIL_HASH, "operation_type": "REMOVE"}
