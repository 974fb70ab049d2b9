"""Firehose output: exact request bodies built from real outbound batches, settings, membership requests,
and one delivery over real HTTP to a local aiohttp server."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from aiohttp import web
from pydantic import ValidationError

from cdp_actors.integrations import firehose
from cdp_actors.integrations.base import MembershipChange
from cdp_actors.integrations.registry import build_adapter, settings_model
from cdp_actors.profiles.model import ConsentRecord, Profile
from cdp_actors.profiles.outbound import build_outbound
from cdp_actors.profiles.update import apply_batch
from cdp_actors.schema.events import decode_batch
from cdp_actors.schema.records import ShardRecord
from tests.unit.partners import LocalPartner, Received

MPID, BATCH_ID, RECEIVED_MS = 8675309, 4242, 1714592744067
MESSAGE_ID = "1d3517ce-095a-5b80-a737-026d90cb7b59"  # literal: a change here breaks partners' dedupe of replays
EVENT_1001, EVENT_1002 = "9d7352ec-acbf-549b-9be8-d0ec31387163", "38c96f17-7dfa-5d86-9cce-059b02497e53"
ACCOUNT = {"account_id": 1234, "account_settings": {"apiKey": "partner-key"}}
SETTINGS = firehose.Settings(
    url="https://partner.example.com/firehose",
    api_key="key-123",
    api_secret="secret-456",
    account_id=1234,
    account_settings={"apiKey": "partner-key"},
)
IOS_CONTEXT: dict[str, Any] = {
    "source_request_id": "req-1",
    "user_identities": {"customer_id": "cust-1", "email": "jane@example.com", "alias": "no-firehose-type"},
    "user_attributes": {"plan": "gold", "age": 42, "vip": True, "tags": ["a", "b"]},
    "device_info": {
        "platform": "iOS",
        "device_manufacturer": "Apple",
        "os_version": "17.4",
        "device_model": "iPhone15,2",
        "locale_language": "en",
        "timezone_offset": -5,
        "http_header_user_agent": "Shop/2.0",
        "ios_advertising_id": "IDFA-1",
        "push_token": "APNS-1",
        "ios_idfv": "IDFV-1",
    },
    "application_info": {"application_name": "Shop", "application_version": "2.0.1", "package": "com.example.shop"},
    "mp_deviceid": "das-1",
    "ip": "203.0.113.9",
    "sdk_version": "8.19.0",
    "source_info": {"channel": "native"},
}
IOS_REQUEST: dict[str, Any] = {
    "type": "event_processing_request",
    "id": MESSAGE_ID,
    "timestamp_ms": RECEIVED_MS,
    "firehose_version": "3.2.0",
    "source_id": "req-1",
    "account": ACCOUNT,
    "mpid": str(MPID),
    "device_application_stamp": "das-1",
    "source_channel": "native",
    "user_identities": [
        {"type": "customer", "encoding": "raw", "value": "cust-1"},
        {"type": "email", "encoding": "raw", "value": "jane@example.com"},
    ],
    "user_attributes": {"plan": "gold", "age": "42", "vip": "true"},
    "user_attribute_lists": {"tags": ["a", "b"]},
    "runtime_environment": {
        "type": "ios",
        "client_ip_address": "203.0.113.9",
        "sdk_version": "8.19.0",
        "http_header_user_agent": "Shop/2.0",
        "identities": [
            {"type": "ios_advertising_id", "encoding": "raw", "value": "IDFA-1"},
            {"type": "apple_push_notification_token", "encoding": "raw", "value": "APNS-1"},
            {"type": "ios_vendor_id", "encoding": "raw", "value": "IDFV-1"},
        ],
        "os_version": "17.4",
        "locale_language": "en",
        "timezone_offset": -5,
        "manufacturer": "Apple",
        "model": "iPhone15,2",
        "application_name": "Shop",
        "application_version": "2.0.1",
        "application_package": "com.example.shop",
    },
}


def outbound(batch: dict[str, Any], before: Profile | None = None, batch_id: int = BATCH_ID) -> dict[str, Any]:
    """The outbound batch the forwarder hands the adapter, made by the real pipeline."""
    raw = msgspec.json.encode({"environment": "production", **batch})
    decoded = decode_batch(raw)
    before = before or Profile(mpid=MPID)
    after, notifications = apply_batch(before, decoded, 1, RECEIVED_MS)
    record = ShardRecord(seq=1, batch_id=batch_id, mpid=MPID, input_id=1, received_ms=RECEIVED_MS, raw=raw)
    created = {name for name, value in after.user_identities.items() if before.user_identities.get(name) != value}
    return json.loads(msgspec.json.encode(build_outbound(decoded, after, record, notifications, created)))


def prepared_body(batch: dict[str, Any], settings: firehose.Settings = SETTINGS) -> dict[str, Any]:
    prepared = firehose.Adapter(settings).prepare(outbound(batch), now_ms=RECEIVED_MS + 5000)
    assert len(prepared.requests) == 1
    return json.loads(prepared.requests[0].body)


def event_data(event_id: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "timestamp_unixtime_ms": 1714592700000, **fields}


# ---- event processing requests ---------------------------------------------------------------------------


def test_custom_event_becomes_an_event_processing_request() -> None:
    event = {
        "event_type": "custom_event",
        "data": event_data(
            1001,
            event_name="Add Review",
            custom_event_type="user_content",
            source_message_id="msg-1",
            session_id=77,
            location={"latitude": 40.7, "longitude": -74.0, "accuracy": 15.0, "city_name": "NYC"},
            custom_attributes={"stars": 5, "verified": True, "title": "Great", "price": 9.5, "note": None},
            custom_flags={"Team.Flag": "x", "Multi": ["a", "b"]},
        ),
    }
    prepared = firehose.Adapter(SETTINGS).prepare(outbound({**IOS_CONTEXT, "events": [event]}), RECEIVED_MS + 5000)

    assert prepared.forwarded_events == 1 and prepared.skipped == {} and prepared.rejections == []
    [request] = prepared.requests
    assert request.url == "https://partner.example.com/firehose" and request.method == "POST"
    assert request.headers == {
        "Content-Type": "application/json",
        "User-Agent": "cdp-actors/0.1",
        "Authorization": "Token key-123",
        "X-Firehose-Api-Secret": "secret-456",
    }
    assert json.loads(request.body) == {
        **IOS_REQUEST,
        "events": [
            {
                "type": "custom_event",
                "id": EVENT_1001,
                "timestamp_ms": 1714592700000,
                "source_id": "msg-1",
                "session_id": 77,
                "location": {"latitude": 40.7, "longitude": -74.0, "accuracy": 15.0},
                "name": "Add Review",
                "custom_event_type": "user_content",
                "attributes": {"stars": "5", "verified": "true", "title": "Great", "price": "9.5", "note": None},
                "custom_flags": {"Team.Flag": "x", "Multi": '["a","b"]'},
            }
        ],
    }


def test_screen_view_from_the_web_uses_the_web_runtime_environment() -> None:
    body = prepared_body(
        {
            "environment": "development",
            "device_info": {
                "platform": "web",
                "device_manufacturer": "Apple",
                "device_model": "Macintosh",
                "is_dst": True,
                "http_header_user_agent": "Mozilla/5.0",
            },
            "application_info": {"application_name": "Shop Web"},
            "events": [
                {
                    "event_type": "screen_view",
                    "data": event_data(
                        1002,
                        screen_name="Checkout",
                        custom_attributes={"step": 2},
                        custom_flags={"ga.page": "/checkout"},
                    ),
                }
            ],
        }
    )

    assert body["runtime_environment"] == {
        "type": "mobileweb",
        "is_debug": True,
        "http_header_user_agent": "Mozilla/5.0",
        "device_manufacturer": "Apple",
        "device_model": "Macintosh",
        "is_dst": "true",
    }
    assert body["events"] == [
        {
            "type": "screen_view",
            "id": EVENT_1002,
            "timestamp_ms": 1714592700000,
            "screen_name": "Checkout",
            "attributes": {"step": "2"},
            "custom_flags": {"ga.page": "/checkout"},
        }
    ]


def test_purchase_becomes_a_product_action_event() -> None:
    purchase = {
        "event_type": "commerce_event",
        "data": event_data(
            1001,
            currency_code="USD",
            custom_attributes={"channel": "app"},
            product_action={
                "action": "purchase",
                "transaction_id": "T-1",
                "affiliation": "Store",
                "total_amount": 89.96,
                "tax_amount": 5.0,
                "shipping_amount": 5.0,
                "coupon_code": "SPRING",
                "products": [
                    {
                        "id": "sku-1",
                        "name": "Shoe",
                        "brand": "Acme",
                        "category": "Shoes",
                        "variant": "Red",
                        "position": 1,
                        "price": 19.99,
                        "quantity": 4,
                        "coupon_code": "P1",
                        "total_product_amount": 79.96,
                        "custom_attributes": {"size": 42},
                    },
                    {"id": "sku-2", "price": 10.0, "quantity": 1},
                ],
            },
        ),
    }

    assert prepared_body({"events": [purchase]})["events"] == [
        {
            "type": "product_action",
            "id": EVENT_1001,
            "timestamp_ms": 1714592700000,
            "action": "purchase",
            "transaction_id": "T-1",
            "affiliation": "Store",
            "total_amount": 89.96,
            "tax_amount": 5.0,
            "shipping_amount": 5.0,
            "currency_code": "USD",
            "coupon_code": "SPRING",
            "products": [
                {
                    "id": "sku-1",
                    "name": "Shoe",
                    "brand": "Acme",
                    "category": "Shoes",
                    "variant": "Red",
                    "position": 1,
                    "price": 19.99,
                    "quantity": 4,
                    "coupon_code": "P1",
                    "total_amount": 79.96,
                    "attributes": {"size": "42"},
                },
                {"id": "sku-2", "price": 10.0, "quantity": 1},
            ],
            "attributes": {"channel": "app"},
        }
    ]


def test_promotions_and_impressions_become_their_firehose_events() -> None:
    promoted = {"id": "promo-1", "name": "Spring", "creative": "banner", "position": "top"}
    shown = {"id": "sku-9", "position": 0, "price": 40.0}
    promotion = {
        "event_type": "commerce_event",
        "data": event_data(1001, promotion_action={"action": "click", "promotions": [promoted]}),
    }
    impressions = {
        "event_type": "commerce_event",
        "data": event_data(
            1002, product_impressions=[{"product_impression_list": "Search results", "products": [shown]}]
        ),
    }

    assert prepared_body({"events": [promotion, impressions]})["events"] == [
        {
            "type": "promotion_action",
            "id": EVENT_1001,
            "timestamp_ms": 1714592700000,
            "action": "click",
            "promotions": [promoted],
        },
        {
            "type": "impression",
            "id": EVENT_1002,
            "timestamp_ms": 1714592700000,
            "impressions": [{"impression_list_name": "Search results", "products": [shown]}],
        },
    ]


def test_other_event_types_map_to_their_firehose_names() -> None:
    events = [
        {"event_type": "session_start", "data": {"session_id": 9}},
        {"event_type": "session_end", "data": {"session_id": 9, "session_duration_ms": 336000}},
        {
            "event_type": "crash_report",
            "data": {
                "message": "NPE",
                "exception_handled": False,
                "stack_trace": "at x",
                "breadcrumbs": ["opened cart"],
            },
        },
        {"event_type": "opt_out", "data": {"is_opted_out": True}},
        {"event_type": "user_attribute_change", "data": {"user_attribute_name": "plan", "new": "gold"}},
        {"event_type": "user_attribute_change", "data": {"user_attribute_name": "city", "old": "Oy", "deleted": True}},
        {"event_type": "push_registration", "data": {"register": True, "registration_token": "tok"}},
        {"event_type": "push_message", "data": {"push_message_type": "action", "push_notification_payload": "{}"}},
        {
            "event_type": "application_state_transition",
            "data": {"application_transition_type": "application_initialized", "is_first_run": True},
        },
    ]
    converted = prepared_body({"events": events})["events"]
    specific = [{k: v for k, v in e.items() if k not in ("id", "timestamp_ms", "session_id")} for e in converted]

    assert specific == [
        {"type": "session_start"},
        {"type": "session_end", "session_length_ms": 336000},
        {"type": "error", "message": "NPE", "is_crash": True, "stack_trace": "at x", "breadcrumbs": ["opened cart"]},
        {"type": "privacy_setting_change", "setting": "app_data_collection", "is_enabled": False},
        {"type": "user_attribute_change", "added": {"plan": "gold"}},
        {"type": "user_attribute_change", "removed": {"city": "Oy"}},
        {"type": "push_subscription", "action": "subscribe", "token": "tok"},
        {"type": "push_message_open", "payload": "{}"},
        {"type": "application_state_transition", "application_state": "install"},
    ]
    assert converted[0]["session_id"] == 9


def test_identity_changes_from_resolution_become_user_identity_change_events() -> None:
    batch = outbound({"events": [{"event_type": "screen_view", "data": {"screen_name": "Home"}}]})
    batch["events"].append(
        {
            "event_type": "user_identity_change",
            "data": {
                "new": {"identity_type": "email", "identity": "new@example.com", "timestamp_unixtime_ms": 1},
                "old": {"identity_type": "email", "identity": "old@example.com", "timestamp_unixtime_ms": 1},
                "event_id": 1003,
                "timestamp_unixtime_ms": RECEIVED_MS,
            },
        }
    )

    [_, change] = json.loads(firehose.Adapter(SETTINGS).prepare(batch, RECEIVED_MS).requests[0].body)["events"]
    assert change == {
        "type": "user_identity_change",
        "id": firehose.derived_uuid("event", 1003),
        "timestamp_ms": RECEIVED_MS,
        "added": [{"type": "email", "encoding": "raw", "value": "new@example.com"}],
        "removed": [{"type": "email", "encoding": "raw", "value": "old@example.com"}],
    }


def test_consent_changes_are_sent_as_firehose_system_notifications() -> None:
    before = Profile(mpid=MPID, consent={"gdpr": {"location": ConsentRecord(consented=False, timestamp_unixtime_ms=1)}})
    batch = outbound(
        {
            "consent_state": {
                "gdpr": {
                    "location": {
                        "consented": True,
                        "document": "v2",
                        "timestamp_unixtime_ms": 1714592000000,
                        "location": "example.com/consent",
                        "hardware_id": "IDFA-1",
                    }
                },
                "ccpa": {"data_sale_opt_out": {"consented": True, "timestamp_unixtime_ms": 1714592000000}},
            }
        },
        before=before,
    )
    prepared = firehose.Adapter(SETTINGS).prepare(batch, RECEIVED_MS)
    body = json.loads(prepared.requests[0].body)

    gdpr_now = {
        "consented": True,
        "document": "v2",
        "timestamp_unixtime_ms": 1714592000000,
        "location": "example.com/consent",
        "hardware_id": "IDFA-1",
    }
    ccpa_now = {"consented": True, "timestamp_unixtime_ms": 1714592000000}
    assert prepared.forwarded_events == 0
    assert body["consent_state"] == {
        "gdpr_consent_state": {"location": gdpr_now},
        "ccpa_consent_state": {"data_sale_opt_out": ccpa_now},
    }
    assert body["system_notifications"] == [
        {
            "type": "gdpr_consent_state",
            "purpose": "location",
            "old_gdpr_consent_state": {"consented": False, "timestamp_unixtime_ms": 1},
            "new_gdpr_consent_state": gdpr_now,
        },
        {"type": "ccpa_consent_state", "purpose": "data_sale_opt_out", "new_ccpa_consent_state": ccpa_now},
    ]
    assert "events" not in body


def test_unsupported_event_types_are_skipped_and_counted() -> None:
    events = [
        {"event_type": "custom_event", "data": {"event_name": "kept", "custom_event_type": "attribution"}},
        {"event_type": "breadcrumb", "data": {"label": "a"}},
        {"event_type": "breadcrumb", "data": {"label": "b"}},
        {"event_type": "network_performance", "data": {"url": "https://x"}},
        {"event_type": "uninstall", "data": {}},
        {"event_type": "push_registration", "data": {"register": True}},  # no token: nothing to subscribe
        {"event_type": "commerce_event", "data": {"product_action": {"action": "unknown"}}},
    ]
    prepared = firehose.Adapter(SETTINGS).prepare(outbound({"events": events}), RECEIVED_MS)
    sent = json.loads(prepared.requests[0].body)["events"]

    assert prepared.skipped == {
        "breadcrumb": 2,
        "network_performance": 1,
        "uninstall": 1,
        "push_registration": 1,
        "commerce_event": 1,
    }
    assert prepared.forwarded_events == 1
    assert [(e["type"], e["name"], e["custom_event_type"]) for e in sent] == [("custom_event", "kept", "other")]


def test_a_batch_with_nothing_to_send_makes_no_request_unless_eventless_batches_are_allowed() -> None:
    batch = outbound({"events": [{"event_type": "breadcrumb", "data": {"label": "a"}}]})

    quiet = firehose.Adapter(SETTINGS).prepare(batch, RECEIVED_MS)
    assert quiet.requests == [] and quiet.skipped == {"breadcrumb": 1}
    allowing = firehose.Adapter(SETTINGS.model_copy(update={"allow_eventless_batches": True}))
    body = json.loads(allowing.prepare(batch, RECEIVED_MS).requests[0].body)
    assert body["id"] == MESSAGE_ID and "events" not in body


def test_the_same_batch_always_makes_the_byte_identical_request() -> None:
    events = [
        {"event_type": "custom_event", "data": {"event_name": "a", "custom_event_type": "other"}},
        {"event_type": "screen_view", "data": {"screen_name": "b"}},
    ]
    adapter = firehose.Adapter(SETTINGS)
    first = adapter.prepare(outbound({**IOS_CONTEXT, "events": events}), now_ms=1)
    replay = adapter.prepare(outbound({**IOS_CONTEXT, "events": events}), now_ms=999_999)
    other = adapter.prepare(outbound({**IOS_CONTEXT, "events": events}, batch_id=BATCH_ID + 1), now_ms=1)

    assert first.requests[0].body == replay.requests[0].body
    body, other_body = json.loads(first.requests[0].body), json.loads(other.requests[0].body)
    assert body["id"] == MESSAGE_ID and other_body["id"] != MESSAGE_ID
    assert len({e["id"] for e in body["events"] + other_body["events"]}) == 4  # event ids follow their batch


# ---- settings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({}, "url"),
        ({"url": "ftp://partner.example.com"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://p.example.com", "firehose_version": "3.2"}, "firehose_version"),
        ({"url": "https://p.example.com", "account_id": -1}, "account_id"),
        ({"url": "https://p.example.com", "auth_header": "Bearer x"}, "auth_header"),
    ],
)
def test_settings_reject_invalid_values(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as raised:
        firehose.Settings.model_validate(fields)
    assert [error["loc"][0] for error in raised.value.errors()] == [where]


def test_settings_take_secrets_from_the_environment_and_never_show_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREHOSE_KEY", "from-env")
    settings = firehose.Settings(
        url="http://localhost:9000/", api_key="${FIREHOSE_KEY}", account_settings={"apiKey": "${FIREHOSE_KEY}"}
    )

    assert settings.firehose_version == "3.2.0"
    assert "from-env" not in repr(settings)
    adapter = firehose.Adapter(settings)
    assert adapter.headers["Authorization"] == "Token from-env" and "X-Firehose-Api-Secret" not in adapter.headers
    assert adapter.account == {"account_id": 0, "account_settings": {"apiKey": "from-env"}}


def test_the_registry_builds_the_firehose_adapter() -> None:
    settings = settings_model("firehose").model_validate({"url": "https://partner.example.com/firehose"})
    assert isinstance(build_adapter("firehose", settings), firehose.Adapter)


# ---- membership messages -----------------------------------------------------------------------------------------


def change(mpid: int, audience_id: int, action: str, ts: int, **identities: str) -> MembershipChange:
    return MembershipChange(audience_id, f"Audience {audience_id}", mpid, action, identities, ts)


def test_membership_changes_become_user_profiles_with_their_audiences() -> None:
    changes = [
        change(
            11,
            456,
            "add",
            1000,
            email="a@example.com",
            customer_id="c-11",
            ios_advertising_id="IDFA-11",
            alias="no-firehose-type",
            push_token="no-platform-known",
        ),
        change(22, 456, "delete", 1001, android_advertising_id="GAID-22"),
        change(11, 789, "delete", 1002, email="a@example.com"),
    ]
    prepared = firehose.AudienceAdapter(SETTINGS).prepare_memberships(changes, now_ms=5000)
    [request] = prepared.requests
    body = json.loads(request.body)

    assert body == {
        "type": "audience_membership_change_request",
        "id": body["id"],
        "timestamp_ms": 1002,
        "firehose_version": "3.2.0",
        "account": ACCOUNT,
        "user_profiles": [
            {
                "user_identities": [
                    {"type": "email", "encoding": "raw", "value": "a@example.com"},
                    {"type": "customer", "encoding": "raw", "value": "c-11"},
                ],
                "device_identities": [{"type": "ios_advertising_id", "encoding": "raw", "value": "IDFA-11"}],
                "mpid": "11",
                "audiences": [
                    {"audience_id": 456, "audience_name": "Audience 456", "action": "add"},
                    {"audience_id": 789, "audience_name": "Audience 789", "action": "delete"},
                ],
            },
            {
                "device_identities": [{"type": "google_advertising_id", "encoding": "raw", "value": "GAID-22"}],
                "mpid": "22",
                "audiences": [{"audience_id": 456, "audience_name": "Audience 456", "action": "delete"}],
            },
        ],
    }
    assert request.headers["Authorization"] == "Token key-123"
    replay = firehose.AudienceAdapter(SETTINGS).prepare_memberships(changes, now_ms=9999)
    assert replay.requests[0].body == request.body


def test_membership_requests_carry_at_most_max_batch_changes() -> None:
    class SmallBatches(firehose.AudienceAdapter):
        max_batch = 2

    changes = [change(mpid, 456, "add", mpid) for mpid in range(1, 6)]
    bodies = [json.loads(r.body) for r in SmallBatches(SETTINGS).prepare_memberships(changes, 0).requests]

    assert [[p["mpid"] for p in b["user_profiles"]] for b in bodies] == [["1", "2"], ["3", "4"], ["5"]]
    assert len({b["id"] for b in bodies}) == 3
    assert firehose.AudienceAdapter(SETTINGS).prepare_memberships([], 0).requests == []
    assert firehose.AudienceAdapter(SETTINGS).max_age_s == 300


# ---- over real HTTP --------------------------------------------------------------------------------------


def firehose_reply(received: Received) -> web.Response:
    """A Firehose partner's answer: the request's type as a response, with its id, time and version."""
    message = received.json()
    return web.json_response(
        {
            "type": message["type"].replace("_request", "_response"),
            "id": message["id"],
            "timestamp_ms": message["timestamp_ms"],
            "firehose_version": message["firehose_version"],
        }
    )


def test_prepared_requests_reach_a_partner_over_http() -> None:
    event = {"event_type": "custom_event", "data": event_data(1001, event_name="Signup", custom_event_type="other")}
    event_request = firehose.Adapter(SETTINGS).prepare(outbound({**IOS_CONTEXT, "events": [event]}), 0).requests[0]
    membership = firehose.AudienceAdapter(SETTINGS).prepare_memberships([change(11, 456, "add", 1000)], 0)

    partner = LocalPartner()
    requests = [
        msgspec.structs.replace(r, url=f"{partner.url}/firehose") for r in [event_request, *membership.requests]
    ]
    attempts, received = partner.deliver(requests, firehose_reply)

    assert [attempt.status for attempt in attempts] == [200, 200]
    assert [(r.method, r.path) for r in received] == [("POST", "/firehose")] * 2
    events, memberships = (r.json() for r in received)
    headers = received[0].headers
    assert events == json.loads(event_request.body)
    assert events["id"] == MESSAGE_ID and events["events"][0]["name"] == "Signup"
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Token key-123" and headers["X-Firehose-Api-Secret"] == "secret-456"
    assert memberships["user_profiles"][0]["audiences"][0]["action"] == "add"
