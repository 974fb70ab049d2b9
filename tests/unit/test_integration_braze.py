"""Braze output: `/users/track` requests built from outbound batches, and their delivery over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from cdp_actors.config import Output
from cdp_actors.integrations import braze
from cdp_actors.integrations.base import Prepared
from cdp_actors.integrations.registry import build_adapter, settings_model
from tests.unit import partners
from tests.unit.partners import EVENT_MS, NOW_MS, LocalPartner, Received, user_identities
from tests.unit.partners import nth_commerce as commerce
from tests.unit.partners import nth_event as event

EVENT_TIME = "2023-11-14T22:12:20.000+00:00"
MPID = 8_000_000_000_000_001
URL = "https://rest.iad-01.braze.com/users/track"
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer rest-key"}
PRODUCTS = [
    {"id": "sku-1", "name": "Boots", "category": "shoes", "price": 49.5, "quantity": 2},
    {"id": "sku-2", "name": "Laces", "price": 3.0, "quantity": 1, "custom_attributes": {"$colour": "red"}},
]
ATTRIBUTES = {
    "external_id": "cust-1",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "gender": "F",
    "home_city": "London",
    "country": "GB",
    "phone": "+442079460000",
    "Zip": "N1 9GU",
    "plan": "gold",
    "tags": ["a", "b"],
    "email": "ada@example.com",
}


def adapter(**settings: Any) -> braze.Adapter:
    return braze.Adapter(braze.Settings(api_url="https://rest.iad-01.braze.com", api_key="rest-key", **settings))


def custom(name: str = "Played", n: int = 1, **attributes: Any) -> dict[str, Any]:
    return partners.custom_event(name, 1000 + n, EVENT_MS, attributes, custom_event_type="media")


BATCH = {
    "mpid": MPID,
    "batch_id": 42,
    "user_identities": user_identities(customer_id="cust-1", email="ada@example.com"),
    "user_attributes": {
        "$FirstName": "Ada",
        "$LastName": "Lovelace",
        "$Gender": "female",
        "$City": "London",
        "$Country": "GB",
        "$Mobile": "+442079460000",
        "$Zip": "N1 9GU",
        "plan": "gold",
        "tags": ["a", "b"],
    },
    "device_info": {"platform": "iOS", "os_version": "17.1"},
    "application_info": {"application_version": "1.2.0", "package": "com.example.app"},
    "ip": "203.0.113.7",
}


def outbound(*events: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return partners.outbound_batch(*events, **{**BATCH, **overrides})


def bodies(prepared: Prepared) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in prepared.requests]


# ---- request shapes --------------------------------------------------------------------------------------


def test_custom_event_with_user_attributes_is_one_users_track_request() -> None:
    prepared = adapter().prepare(outbound(custom("Played", song="x", **{"$source": "app", "time": "noon"})), NOW_MS)

    [request] = prepared.requests
    assert (request.method, request.url, request.headers) == ("POST", URL, HEADERS)
    assert json.loads(request.body) == {
        "attributes": [ATTRIBUTES],
        "events": [
            {
                "external_id": "cust-1",
                "name": "Played",
                "time": EVENT_TIME,
                "properties": {"song": "x", "source": "app"},
            }
        ],
    }
    assert (prepared.forwarded_events, prepared.rejections, prepared.skipped) == (1, [], {})


def test_screen_view_is_an_event_named_by_its_screen_with_the_session_id() -> None:
    screen = event("screen_view", screen_name="Home", session_id=77, custom_attributes={"tab": "feed"})
    [body] = bodies(adapter(app_id="braze-app").prepare(outbound(screen, user_attributes={}), NOW_MS))

    assert body == {
        "attributes": [{"external_id": "cust-1", "app_id": "braze-app", "email": "ada@example.com"}],
        "events": [
            {
                "external_id": "cust-1",
                "app_id": "braze-app",
                "name": "Home",
                "time": EVENT_TIME,
                "properties": {"tab": "feed", "session_id": 77},
            }
        ],
    }


def test_purchase_of_two_products_is_two_braze_purchases_and_no_total_event() -> None:
    prepared = adapter().prepare(outbound(commerce("purchase", PRODUCTS, custom_attributes={"coupon": "X"})), NOW_MS)

    [body] = bodies(prepared)
    assert "events" not in body
    assert body["purchases"] == [
        {
            "external_id": "cust-1",
            "product_id": "sku-1",
            "currency": "EUR",
            "price": 49.5,
            "quantity": 2,
            "time": EVENT_TIME,
            "properties": {
                "coupon": "X",
                "Currency Code": "EUR",
                "Id": "sku-1",
                "Name": "Boots",
                "Category": "shoes",
                "Price": 49.5,
                "Quantity": 2,
            },
        },
        {
            "external_id": "cust-1",
            "product_id": "sku-2",
            "currency": "EUR",
            "price": 3.0,
            "quantity": 1,
            "time": EVENT_TIME,
            "properties": {
                "coupon": "X",
                "Currency Code": "EUR",
                "Id": "sku-2",
                "Name": "Laces",
                "Price": 3.0,
                "Quantity": 1,
                "colour": "red",
            },
        },
    ]
    assert prepared.forwarded_events == 1


def test_refund_is_custom_events_per_product_plus_a_total() -> None:
    [body] = bodies(adapter().prepare(outbound(commerce("refund", PRODUCTS[:1]), user_attributes={}), NOW_MS))

    assert "purchases" not in body
    assert [e["name"] for e in body["events"]] == ["eCommerce - refund - Item", "eCommerce - refund - Total"]
    assert body["events"][1]["properties"] == {
        "Currency Code": "EUR",
        "Transaction Id": "t-1",
        "Total Amount": 102.0,
        "Product Count": 1,
    }


def test_consent_change_is_forwarded_as_a_consent_event() -> None:
    notification = {
        "type": "gdpr_change",
        "data": {
            "purpose": "marketing",
            "current": {"consented": True, "document": "v2", "timestamp_unixtime_ms": EVENT_MS, "location": "eu"},
        },
    }
    prepared = adapter().prepare(outbound(system_notifications=[notification], user_attributes={}), NOW_MS)

    [body] = bodies(prepared)
    assert body["events"] == [
        {
            "external_id": "cust-1",
            "name": "Consent Given",
            "time": EVENT_TIME,
            "properties": {"regulation": "gdpr", "purpose": "marketing", "document": "v2", "location": "eu"},
        }
    ]
    assert prepared.forwarded_events == 1


def test_attribute_mapping_drops_unknown_genders_and_falls_back_to_the_mobile_identity() -> None:
    identities = [
        {"identity_type": "customer_id", "identity": "c"},
        {"identity_type": "mobile_number", "identity": "+15550100"},
    ]
    batch = outbound(user_identities=identities, user_attributes={"$gender": "unknown", "$age": 40, "$$x": 1})

    [body] = bodies(adapter().prepare(batch, NOW_MS))
    assert body == {"attributes": [{"external_id": "c", "age": 40, "x": 1, "phone": "+15550100"}]}


# ---- identity --------------------------------------------------------------------------------------------


def test_without_the_external_identity_the_batch_is_rejected() -> None:
    batch = outbound(custom(), user_identities=[{"identity_type": "email", "identity": "a@b.c"}])
    prepared = adapter().prepare(batch, NOW_MS)

    assert prepared.requests == []
    assert [r.alert_type for r in prepared.rejections] == ["Missing Identity and Device ID"]
    assert prepared.forwarded_events == 0


def test_nothing_to_send_and_no_identity_is_neither_sent_nor_rejected() -> None:
    prepared = adapter().prepare(outbound(user_identities=[], user_attributes={}), NOW_MS)
    assert (prepared.requests, prepared.rejections) == ([], [])


@pytest.mark.parametrize(
    ("settings", "device"), [({}, {"push_token": "tok"}), ({"disable_external_id_constraint": True}, {})]
)
def test_push_token_or_disabled_constraint_sends_under_an_mpid_alias(settings: dict, device: dict) -> None:
    batch = outbound(custom(), user_identities=[], user_attributes={"plan": "gold"}, device_info=device)
    [body] = bodies(adapter(**settings).prepare(batch, NOW_MS))

    user = {"user_alias": {"alias_label": "mparticle_id", "alias_name": str(MPID)}, "_update_existing_only": False}
    assert body["attributes"] == [{**user, "plan": "gold"}]
    assert body["events"] == [{**user, "name": "Played", "time": EVENT_TIME}]


@pytest.mark.parametrize(("identity_type", "external_id"), [("email", "ada@example.com"), ("mpid", str(MPID))])
def test_external_identity_type_is_configurable(identity_type: str, external_id: str) -> None:
    [body] = bodies(adapter(external_identity_type=identity_type).prepare(outbound(custom()), NOW_MS))
    assert body["events"][0]["external_id"] == body["attributes"][0]["external_id"] == external_id


# ---- rejections and skipped types ------------------------------------------------------------------------


def test_unsupported_types_are_counted_and_unnamed_events_rejected() -> None:
    batch = outbound(
        custom(n=1),
        event("crash_report", 2),
        event("session_start", 3),
        event("session_end", 4),
        event("custom_event", 5, custom_event_type="other"),
        event("screen_view", 6),
        event("user_identity_change", 7),
        user_attributes={},
    )
    prepared = adapter().prepare(batch, NOW_MS)

    assert prepared.skipped == {"crash_report": 1, "session_start": 1, "session_end": 1, "user_identity_change": 1}
    assert [r.alert_type for r in prepared.rejections] == ["Missing Event Name", "Missing Screen Name"]
    assert [e["name"] for e in bodies(prepared)[0]["events"]] == ["Played"]
    assert prepared.forwarded_events == 1


def test_session_events_are_forwarded_when_enabled() -> None:
    batch = outbound(event("session_start", 1, session_id=9), event("session_end", 2, session_id=9), user_attributes={})
    prepared = adapter(forward_session_events=True).prepare(batch, NOW_MS)

    assert [(e["name"], e["properties"]) for e in bodies(prepared)[0]["events"]] == [
        ("Session Start", {"session_id": 9}),
        ("Session End", {"session_id": 9}),
    ]
    assert (prepared.skipped, prepared.forwarded_events) == ({}, 2)


def test_purchased_product_without_id_or_name_is_rejected() -> None:
    prepared = adapter().prepare(outbound(commerce("purchase", [{"price": 1.0}, PRODUCTS[0]])), NOW_MS)

    assert [r.alert_type for r in prepared.rejections] == ["Missing Required Attribute"]
    assert [p["product_id"] for p in bodies(prepared)[0]["purchases"]] == ["sku-1"]


# ---- splitting and determinism ---------------------------------------------------------------------------


def test_more_than_75_objects_per_array_split_into_several_requests() -> None:
    many_products = [{"id": f"sku-{n}", "price": 1.0, "quantity": 1} for n in range(80)]
    events = [custom(f"E{n}", n) for n in range(160)]
    prepared = adapter().prepare(outbound(*events, commerce("purchase", many_products)), NOW_MS)

    sizes = [
        (len(b.get("attributes", [])), len(b.get("events", [])), len(b.get("purchases", []))) for b in bodies(prepared)
    ]
    assert sizes == [(1, 75, 75), (0, 75, 5), (0, 10, 0)]
    assert [e["name"] for b in bodies(prepared) for e in b.get("events", [])] == [f"E{n}" for n in range(160)]
    assert prepared.forwarded_events == 161


def test_the_same_batch_gives_byte_identical_requests() -> None:
    batch = outbound(custom(), commerce("purchase", PRODUCTS), event("screen_view", 3, screen_name="Home"))
    first = adapter().prepare(batch, NOW_MS)
    again = adapter().prepare(json.loads(json.dumps(batch)), NOW_MS + 5_000)

    assert [(r.url, r.headers, r.body) for r in first.requests] == [(r.url, r.headers, r.body) for r in again.requests]


# ---- settings --------------------------------------------------------------------------------------------


def test_settings_are_validated_on_load(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="api_key"):
        braze.Settings(api_url="https://rest.iad-01.braze.com")
    with pytest.raises(ValidationError, match="api_url"):
        braze.Settings(api_url="rest.iad-01.braze.com", api_key="k")
    with pytest.raises(ValidationError, match="unknown identity type"):
        braze.Settings(api_url="https://x", api_key="k", external_identity_type="customerid")
    with pytest.raises(ValidationError, match="extra"):
        braze.Settings(api_url="https://x", api_key="k", instance="US-01")
    monkeypatch.setenv("BRAZE_KEY", "from-env")
    settings = braze.Settings(api_url="https://x", api_key="${BRAZE_KEY}")
    assert "from-env" not in repr(settings)
    assert build_adapter("braze", settings).headers["Authorization"] == "Bearer from-env"  # type: ignore[attr-defined]


def test_workspace_output_reports_missing_settings_by_path() -> None:
    with pytest.raises(ValidationError, match=r"\.settings\.api_key"):
        Output.model_validate({"id": 1, "name": "braze", "kind": "braze", "settings": {"api_url": "https://x"}})
    assert settings_model("braze") is braze.Settings


# ---- over real HTTP --------------------------------------------------------------------------------------


def braze_reply(received: Received) -> web.Response:
    return web.json_response({"message": "success"}, status=201)


def test_prepared_requests_reach_a_real_http_server() -> None:
    partner = LocalPartner()
    local = braze.Adapter(braze.Settings(api_url=f"{partner.url}/", api_key="rest-key"))
    prepared = local.prepare(outbound(*[custom(f"E{n}", n) for n in range(80)]), NOW_MS)

    attempts, received = partner.deliver(prepared.requests, braze_reply)

    assert [a.status for a in attempts] == [201, 201]
    assert [r.method for r in received] == ["POST", "POST"]
    assert [r.path_qs for r in received] == ["/users/track", "/users/track"]
    assert all(r.headers["Authorization"] == "Bearer rest-key" for r in received)
    assert all(r.headers["Content-Type"] == "application/json" for r in received)
    assert [r.json() for r in received] == bodies(prepared)
    assert [len(r.json()["events"]) for r in received] == [75, 5]
