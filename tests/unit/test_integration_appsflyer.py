"""AppsFlyer output: S2S in-app event requests built from outbound batches, and their delivery over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from cdp_actors.config import Output
from cdp_actors.integrations import appsflyer
from cdp_actors.integrations.base import Prepared
from cdp_actors.integrations.registry import build_adapter
from tests.unit import partners
from tests.unit.partners import EVENT_MS, NOW_MS, LocalPartner, user_identities
from tests.unit.partners import nth_commerce as commerce
from tests.unit.partners import nth_event as event

EVENT_TIME = "2023-11-14 22:12:20.000"
AF_ID = "1700000000000-1234567"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
IDFV = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
IOS_URL = "https://api2.appsflyer.com/inappevent/id123456789"
HEADERS = {"Content-Type": "application/json", "authentication": "dev-key"}
PRODUCTS = [
    {"id": "sku-1", "name": "Boots", "category": "shoes", "price": 49.5, "quantity": 2},
    {"id": "sku,2", "name": "Laces", "price": 3.0, "quantity": 1},
]
IOS_FIELDS = {
    "appsflyer_id": AF_ID,
    "idfa": IDFA,
    "idfv": IDFV,
    "bundleIdentifier": "com.example.app",
    "os": "17.1",
    "att": 3,
    "customer_user_id": "cust-1",
    "ip": "203.0.113.7",
    "app_version_name": "1.2.0",
}


def adapter(**settings: Any) -> appsflyer.Adapter:
    return appsflyer.Adapter(appsflyer.Settings(**{"dev_key": "dev-key", "ios_app_id": "123456789", **settings}))


def custom(name: str = "level_up", n: int = 1, **attributes: Any) -> dict[str, Any]:
    return partners.custom_event(name, 1000 + n, EVENT_MS, attributes, custom_event_type="other")


IOS_BATCH = {
    "mpid": 8_000_000_000_000_001,
    "batch_id": 42,
    "user_identities": user_identities(customer_id="cust-1"),
    "user_attributes": {"plan": "gold"},
    "device_info": {
        "platform": "iOS",
        "os_version": "17.1",
        "ios_advertising_id": IDFA,
        "ios_idfv": IDFV,
        "att_authorization_status": "authorized",
    },
    "application_info": {"package": "com.example.app", "application_version": "1.2.0"},
    "integration_attributes": {"92": {"appsflyer_id_integration_setting": AF_ID}},
    "ip": "203.0.113.7",
}


def outbound(*events: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return partners.outbound_batch(*events, **{**IOS_BATCH, **overrides})


def android(*events: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return outbound(
        *events,
        device_info={"platform": "Android", "android_advertising_id": GAID, "android_uuid": "a1b2"},
        **overrides,
    )


def bodies(prepared: Prepared) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in prepared.requests]


def event_values(prepared: Prepared) -> list[tuple[str, dict[str, Any]]]:
    return [(body["eventName"], json.loads(body["eventValue"])) for body in bodies(prepared)]


# ---- request shapes --------------------------------------------------------------------------------------


def test_ios_custom_event_is_one_request_with_device_identities() -> None:
    prepared = adapter().prepare(outbound(custom("level_up", level=3, hero="ada")), NOW_MS)

    [request] = prepared.requests
    assert (request.method, request.url, request.headers) == ("POST", IOS_URL, HEADERS)
    assert json.loads(request.body) == {
        **IOS_FIELDS,
        "eventName": "level_up",
        "eventValue": '{"level":3,"hero":"ada"}',
        "eventTime": EVENT_TIME,
        "af_events_api": "true",
    }
    assert (prepared.forwarded_events, prepared.rejections, prepared.skipped) == (1, [], {})


def test_android_uses_the_package_as_app_id_and_the_google_advertising_id() -> None:
    [request] = adapter().prepare(android(custom()), NOW_MS).requests

    assert request.url == "https://api2.appsflyer.com/inappevent/com.example.app"
    assert json.loads(request.body) == {
        "appsflyer_id": AF_ID,
        "advertising_id": GAID,
        "customer_user_id": "cust-1",
        "ip": "203.0.113.7",
        "app_version_name": "1.2.0",
        "eventName": "level_up",
        "eventValue": " ",
        "eventTime": EVENT_TIME,
        "af_events_api": "true",
    }
    overridden = adapter(android_app_id="com.example.other").prepare(android(custom()), NOW_MS)
    assert overridden.requests[0].url.endswith("/inappevent/com.example.other")


def test_purchase_of_two_products_is_one_af_purchase_with_revenue_and_currency() -> None:
    prepared = adapter().prepare(outbound(commerce("purchase", PRODUCTS, custom_attributes={"coupon": "X"})), NOW_MS)

    [body] = bodies(prepared)
    assert (body["eventName"], body["eventCurrency"]) == ("af_purchase", "EUR")
    assert json.loads(body["eventValue"]) == {
        "coupon": "X",
        "af_currency": "EUR",
        "af_quantity": 3,
        "af_content_id": "sku-1,sku%2C2",
        "af_revenue": 102.0,
        "af_order_id": "t-1",
    }
    assert prepared.forwarded_events == 1


def test_add_to_cart_is_one_event_per_product() -> None:
    prepared = adapter().prepare(outbound(commerce("add_to_cart", PRODUCTS)), NOW_MS)

    assert event_values(prepared) == [
        (
            "af_add_to_cart",
            {
                "af_currency": "EUR",
                "af_price": 49.5,
                "af_quantity": 2,
                "af_content_id": "sku-1",
                "af_content_type": "shoes",
            },
        ),
        ("af_add_to_cart", {"af_currency": "EUR", "af_price": 3.0, "af_quantity": 1, "af_content_id": "sku,2"}),
    ]
    assert prepared.forwarded_events == 1


def test_checkout_is_one_initiated_checkout_priced_at_the_total() -> None:
    [(name, values)] = event_values(adapter().prepare(outbound(commerce("checkout", PRODUCTS)), NOW_MS))
    assert (name, values["af_price"], values["af_quantity"]) == ("af_initiated_checkout", 102.0, 3)


def test_other_commerce_events_go_expanded() -> None:
    prepared = adapter().prepare(outbound(commerce("refund", PRODUCTS[:1])), NOW_MS)
    assert [name for name, _ in event_values(prepared)] == ["eCommerce - refund - Item", "eCommerce - refund - Total"]


def test_zero_advertising_ids_and_unknown_att_are_left_out() -> None:
    device = {"platform": "iOS", "os_version": "17.1", "ios_advertising_id": "00000000-0000-0000-0000-000000000000"}
    [body] = bodies(adapter().prepare(outbound(custom(), device_info=device), NOW_MS))
    assert not {"idfa", "idfv", "att"} & set(body)


# ---- the AppsFlyer ID and other rejections ---------------------------------------------------------------


def test_without_an_appsflyer_id_the_batch_is_rejected() -> None:
    prepared = adapter().prepare(outbound(custom(), integration_attributes={}), NOW_MS)
    assert (prepared.requests, [r.alert_type for r in prepared.rejections]) == ([], ["Missing Identity and Device ID"])
    assert prepared.forwarded_events == 0


def test_the_appsflyer_id_can_come_from_a_configured_identity() -> None:
    identities = [{"identity_type": "other_id_3", "identity": "af-from-identity"}]
    batch = outbound(custom(), integration_attributes=None, user_identities=identities)
    [body] = bodies(adapter(appsflyer_id_identity="other_id_3").prepare(batch, NOW_MS))
    assert body["appsflyer_id"] == "af-from-identity"
    assert "customer_user_id" not in body


@pytest.mark.parametrize(
    ("settings", "batch", "alert"),
    [
        ({"ios_app_id": None}, outbound(custom()), "Missing Required Setting"),
        ({}, android(custom(), application_info={}), "Missing PackageName"),
        ({}, outbound(custom(), device_info={"platform": "web"}, application_info={}), "No Route Available"),
    ],
)
def test_batches_appsflyer_cannot_take_are_rejected(settings: dict, batch: dict, alert: str) -> None:
    prepared = adapter(**settings).prepare(batch, NOW_MS)
    assert (prepared.requests, [r.alert_type for r in prepared.rejections]) == ([], [alert])


def test_unsupported_types_are_counted_and_unnamed_events_rejected() -> None:
    unnamed = event("custom_event", 2, custom_event_type="other")
    batch = outbound(custom(n=1), unnamed, event("screen_view", 3, screen_name="Home"), event("session_start", 4))
    prepared = adapter().prepare(batch, NOW_MS)

    assert prepared.skipped == {"screen_view": 1, "session_start": 1}
    assert [r.alert_type for r in prepared.rejections] == ["Missing Event Name"]
    assert [body["eventName"] for body in bodies(prepared)] == ["level_up"]
    assert prepared.forwarded_events == 1


def test_only_unsupported_events_need_no_appsflyer_id() -> None:
    prepared = adapter().prepare(outbound(event("screen_view", screen_name="Home"), integration_attributes={}), NOW_MS)
    assert (prepared.requests, prepared.rejections, prepared.skipped) == ([], [], {"screen_view": 1})


def test_the_same_batch_gives_byte_identical_requests() -> None:
    batch = outbound(custom(level=1), commerce("purchase", PRODUCTS), commerce("add_to_cart", PRODUCTS))
    first = adapter().prepare(batch, NOW_MS)
    again = adapter().prepare(json.loads(json.dumps(batch)), NOW_MS)
    assert [(r.url, r.headers, r.body) for r in first.requests] == [(r.url, r.headers, r.body) for r in again.requests]


# ---- settings --------------------------------------------------------------------------------------------


def test_settings_are_validated_on_load() -> None:
    with pytest.raises(ValidationError, match="dev_key"):
        appsflyer.Settings()
    with pytest.raises(ValidationError, match="ios_app_id"):
        appsflyer.Settings(dev_key="k", ios_app_id="com.example.app")
    with pytest.raises(ValidationError, match="unknown identity type"):
        appsflyer.Settings(dev_key="k", appsflyer_id_identity="appsflyer")
    with pytest.raises(ValidationError, match=r"\.settings\.dev_key"):
        Output.model_validate({"id": 1, "name": "af", "kind": "appsflyer", "settings": {}})
    settings = appsflyer.Settings(dev_key="secret-dev-key", ios_app_id="id42")
    assert "secret-dev-key" not in repr(settings)
    assert build_adapter("appsflyer", settings).prepare(outbound(custom()), NOW_MS).requests[0].url.endswith("/id42")


# ---- over real HTTP --------------------------------------------------------------------------------------


def test_prepared_requests_reach_a_real_http_server() -> None:
    partner = LocalPartner()
    local = appsflyer.Adapter(appsflyer.Settings(dev_key="dev-key", api_url=partner.url))
    prepared = local.prepare(android(custom("level_up", level=3), commerce("purchase", PRODUCTS)), NOW_MS)

    attempts, received = partner.deliver(prepared.requests)

    assert [a.status for a in attempts] == [200, 200]
    assert {(r.method, r.path) for r in received} == {("POST", "/inappevent/com.example.app")}
    assert all(r.headers["authentication"] == "dev-key" for r in received)
    assert [r.json()["eventName"] for r in received] == ["level_up", "af_purchase"]
    assert [r.json() for r in received] == bodies(prepared)
