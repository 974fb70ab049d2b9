"""Facebook Conversions API output: server events built from outbound batches, and their delivery over HTTP."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from cdp_actors.config import Output
from cdp_actors.integrations import facebook_capi as fb
from cdp_actors.integrations.base import Prepared
from cdp_actors.integrations.registry import build_adapter
from tests.unit import partners
from tests.unit.partners import EVENT_MS, NOW_MS, LocalPartner, Received, user_identities

URL = "https://graph.facebook.com/v22.0/1234567890/events?access_token=tok%2Fen"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64)"
PAGE = "https://shop.example.com/boots"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
PRODUCTS = [
    {"id": "sku-1", "name": "Boots", "category": "shoes", "price": 49.5, "quantity": 2},
    {"id": "sku-2", "name": "Laces", "price": 3.0, "quantity": 1},
]

# Meta's own examples: `Person@Example.com` and `+44 844 412 4653` hash, once normalised, to these.
EMAIL_HASH = "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345"
PHONE_HASH = "dc008fda46e2e64002cf2f82a4906236282d431c4f75e5b60bfe79fc48546383"
FEMALE_HASH = "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"
CA_HASH = "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126"
US_HASH = "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


WEB_USER_DATA = {
    "fn": [sha("ada")],
    "ln": [sha("lovelace")],
    "ge": [FEMALE_HASH],
    "ct": [sha("sanfrancisco")],
    "st": [CA_HASH],
    "zp": [sha("94107")],
    "country": [US_HASH],
    "em": [EMAIL_HASH],
    "ph": [PHONE_HASH],
    "external_id": [sha("cust-1")],
    "client_ip_address": "203.0.113.7",
    "client_user_agent": USER_AGENT,
}


def adapter(**settings: Any) -> fb.Adapter:
    return fb.Adapter(fb.Settings(pixel_id="1234567890", access_token="tok/en", **settings))


def page_stamps(n: int) -> dict[str, Any]:
    """What every sample event carries for Facebook: its source message id and the page it happened on."""
    return {"source_message_id": f"smid-{n}", "custom_flags": {"Facebook.EventSourceUrl": PAGE}}


def event(event_type: str, n: int = 1, ts: int = EVENT_MS, **data: Any) -> dict[str, Any]:
    return partners.nth_event(event_type, n, ts=ts, **{**page_stamps(n), **data})


def custom(name: str = "Signed Up", n: int = 1, ts: int = EVENT_MS, **attributes: Any) -> dict[str, Any]:
    return partners.custom_event(name, 1000 + n, ts, attributes, custom_event_type="other", **page_stamps(n))


def commerce(action: str, products: list[dict[str, Any]], n: int = 1) -> dict[str, Any]:
    return partners.nth_commerce(action, products, n, **page_stamps(n))


WEB_BATCH = {
    "mpid": 8_000_000_000_000_001,
    "batch_id": 42,
    "user_identities": user_identities(customer_id="Cust-1", email=" Person@Example.com "),
    "user_attributes": {
        "$FirstName": " Ada ",
        "$LastName": "Lovelace",
        "$Gender": "Female",
        "$City": "San Francisco",
        "$State": "CA",
        "$Zip": "94107-1234",
        "$Country": "US",
        "$Mobile": "+44 844 412 4653",
        "plan": "gold",
    },
    "device_info": {"platform": "web", "http_header_user_agent": USER_AGENT},
    "ip": "203.0.113.7",
}


def outbound(*events: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return partners.outbound_batch(*events, **{**WEB_BATCH, **overrides})


def app_batch(*events: dict[str, Any], **device: Any) -> dict[str, Any]:
    device_info = {
        "platform": "iOS",
        "os_version": "17.1",
        "device_model": "iPhone15,2",
        "locale_language": "en",
        "locale_country": "GB",
        "network_carrier": "EE",
        "screen_width": 1179,
        "screen_height": 2556,
        "screen_dpi": 460,
        "ios_advertising_id": IDFA,
        "att_authorization_status": "authorized",
        **device,
    }
    application = {"package": "com.example.app", "application_version": "1.2.0", "application_build_number": "120"}
    return outbound(*events, device_info=device_info, application_info=application, user_attributes={})


def server_events(prepared: Prepared) -> list[dict[str, Any]]:
    return [e for request in prepared.requests for e in json.loads(request.body)["data"]]


# ---- hashing ---------------------------------------------------------------------------------------------


def test_customer_information_is_normalised_then_hashed_as_meta_documents() -> None:
    assert fb.phone_digits("+44 844 412 4653") == "448444124653"
    assert fb.phone_digits("(0044) 844-412-4653") == "448444124653"
    assert fb.user_data(outbound(), "customer_id", app=False) == WEB_USER_DATA


def test_unusable_attribute_values_are_left_out() -> None:
    batch = outbound(user_attributes={"$gender": "x", "$country": "United States", "$city": "  ", "$zip": 94107})
    assert set(fb.user_data(batch, "customer_id", app=False)) == {
        "em",
        "external_id",
        "client_ip_address",
        "client_user_agent",
    }


# ---- request shapes --------------------------------------------------------------------------------------


def test_website_custom_event_is_one_server_event_with_hashed_user_data() -> None:
    prepared = adapter().prepare(outbound(custom("Signed Up", plan="gold")), NOW_MS)

    [request] = prepared.requests
    assert (request.method, request.url, request.headers) == ("POST", URL, {"Content-Type": "application/json"})
    assert json.loads(request.body) == {
        "data": [
            {
                "event_name": "Signed Up",
                "event_id": "smid-1",
                "event_time": EVENT_MS // 1000,
                "action_source": "website",
                "user_data": WEB_USER_DATA,
                "event_source_url": PAGE,
                "custom_data": {"plan": "gold"},
            }
        ]
    }
    assert (prepared.forwarded_events, prepared.rejections, prepared.skipped) == (1, [], {})


def test_event_id_falls_back_to_the_event_id_without_a_source_message_id() -> None:
    plain = custom()
    del plain["data"]["source_message_id"]
    assert server_events(adapter().prepare(outbound(plain), NOW_MS))[0]["event_id"] == "1001"


def test_web_screen_view_is_a_page_view() -> None:
    screen = event("screen_view", screen_name="Boots", custom_attributes={"tab": "x"})
    [server_event] = server_events(adapter().prepare(outbound(screen), NOW_MS))
    assert (server_event["event_name"], server_event["custom_data"]) == ("PageView", {"tab": "x"})


def test_purchase_of_two_products_is_one_purchase_with_the_total_value() -> None:
    [purchase] = server_events(adapter().prepare(outbound(commerce("purchase", PRODUCTS)), NOW_MS))

    assert purchase["event_name"] == "Purchase"
    assert purchase["event_id"] == "smid-1"
    assert purchase["custom_data"] == {
        "currency": "EUR",
        "value": 102.0,
        "content_type": "product",
        "num_items": 2,
        "contents": [
            {"id": "sku-1", "quantity": 2, "item_price": 49.5},
            {"id": "sku-2", "quantity": 1, "item_price": 3.0},
        ],
        "content_ids": ["sku-1", "sku-2"],
        "order_id": "t-1",
    }


def test_add_to_cart_is_valued_by_its_products() -> None:
    [added] = server_events(adapter().prepare(outbound(commerce("add_to_cart", PRODUCTS)), NOW_MS))
    assert (added["event_name"], added["custom_data"]["value"]) == ("AddToCart", 102.0)


def test_unmapped_commerce_events_go_expanded_with_distinct_event_ids() -> None:
    refund = server_events(adapter().prepare(outbound(commerce("refund", PRODUCTS)), NOW_MS))
    assert [(e["event_name"], e["event_id"]) for e in refund] == [
        ("eCommerce - refund - Item", "smid-1-1"),
        ("eCommerce - refund - Item", "smid-1-2"),
        ("eCommerce - refund - Total", "smid-1-3"),
    ]


def test_app_events_carry_app_data_and_the_advertising_id() -> None:
    [server_event] = server_events(adapter().prepare(app_batch(custom()), NOW_MS))

    assert server_event["action_source"] == "app"
    assert "event_source_url" in server_event  # the flag is passed along even for app events
    assert server_event["user_data"]["madid"] == IDFA
    assert server_event["app_data"] == {
        "advertiser_tracking_enabled": True,
        "application_tracking_enabled": True,
        "extinfo": [
            "i2",
            "com.example.app",
            "1.2.0",
            "120",
            "17.1",
            "iPhone15,2",
            "en_GB",
            "",
            "EE",
            "1179",
            "2556",
            "460",
            "",
            "",
            "",
            "",
        ],
    }


@pytest.mark.parametrize(
    ("device", "enabled"),
    [
        ({"att_authorization_status": "denied"}, False),
        ({"att_authorization_status": None, "limit_ad_tracking": False}, True),
        ({"att_authorization_status": None}, False),
        ({"platform": "Android", "att_authorization_status": None}, True),
    ],
)
def test_advertiser_tracking_follows_att_then_limit_ad_tracking(device: dict, enabled: bool) -> None:
    [server_event] = server_events(adapter().prepare(app_batch(custom(), **device), NOW_MS))
    assert server_event["app_data"]["advertiser_tracking_enabled"] is enabled
    assert server_event["app_data"]["extinfo"][0] == ("a2" if device.get("platform") == "Android" else "i2")


def test_all_zero_advertising_ids_are_not_sent() -> None:
    batch = app_batch(custom(), ios_advertising_id="00000000-0000-0000-0000-000000000000")
    assert "madid" not in server_events(adapter().prepare(batch, NOW_MS))[0]["user_data"]


def test_ccpa_data_sale_opt_out_sends_limited_data_use() -> None:
    consent = {"ccpa": {"data_sale_opt_out": {"consented": True, "timestamp_unixtime_ms": EVENT_MS}}}
    [server_event] = server_events(adapter().prepare(outbound(custom(), consent_state=consent), NOW_MS))
    assert server_event["data_processing_options"] == ["LDU"]
    assert (server_event["data_processing_options_country"], server_event["data_processing_options_state"]) == (0, 0)


def test_test_event_code_and_1000_events_per_request() -> None:
    prepared = adapter(test_event_code="TEST123").prepare(outbound(*[custom(f"E{n}", n) for n in range(1001)]), NOW_MS)

    assert [len(json.loads(r.body)["data"]) for r in prepared.requests] == [1000, 1]
    assert all(json.loads(r.body)["test_event_code"] == "TEST123" for r in prepared.requests)
    assert prepared.forwarded_events == 1001


# ---- rejections and skipped types ------------------------------------------------------------------------


def test_events_older_than_7_days_arrive_late_and_the_rest_are_sent() -> None:
    week = 7 * 24 * 3600 * 1000
    batch = outbound(custom("Old", 1, ts=NOW_MS - week - 1), custom("Edge", 2, ts=NOW_MS - week), custom("New", 3))
    prepared = adapter().prepare(batch, NOW_MS)

    assert [r.alert_type for r in prepared.rejections] == ["Event Arrived Late"]
    assert [e["event_name"] for e in server_events(prepared)] == ["Edge", "New"]
    assert prepared.forwarded_events == 2


def test_website_events_need_a_user_agent_and_a_page_url() -> None:
    no_agent = outbound(custom(), device_info={"platform": "web"})
    prepared = adapter().prepare(no_agent, NOW_MS)
    assert (prepared.requests, [r.alert_type for r in prepared.rejections]) == ([], ["Missing Required Attribute"])

    no_page = custom(n=2)
    del no_page["data"]["custom_flags"]
    prepared = adapter().prepare(outbound(custom(), no_page), NOW_MS)
    assert [r.alert_type for r in prepared.rejections] == ["Missing Required Attribute"]
    assert len(server_events(prepared)) == 1


def test_ios_app_events_need_the_os_version() -> None:
    prepared = adapter().prepare(app_batch(custom(), os_version=None), NOW_MS)
    assert (prepared.requests, [r.alert_type for r in prepared.rejections]) == ([], ["Missing OS Version"])


def test_app_events_from_a_non_app_platform_are_rejected() -> None:
    prepared = adapter(action_source="app").prepare(outbound(custom()), NOW_MS)
    assert [r.alert_type for r in prepared.rejections] == ["Missing Required Attribute"]


def test_a_user_facebook_cannot_match_is_rejected() -> None:
    batch = outbound(custom(), user_identities=[], user_attributes={}, ip=None)
    prepared = adapter(action_source="physical_store").prepare(batch, NOW_MS)
    assert (prepared.requests, [r.alert_type for r in prepared.rejections]) == ([], ["Missing Required Attribute"])


def test_unsupported_types_are_counted_and_unnamed_events_rejected() -> None:
    unnamed = event("custom_event", 3, custom_event_type="other")
    batch = app_batch(custom(n=1), event("screen_view", 2, screen_name="Home"), unnamed, event("session_start", 4))
    prepared = adapter().prepare(batch, NOW_MS)

    assert prepared.skipped == {"screen_view": 1, "session_start": 1}
    assert [r.alert_type for r in prepared.rejections] == ["Missing Event Name"]
    assert prepared.forwarded_events == 1


def test_the_same_batch_gives_byte_identical_requests() -> None:
    batch = outbound(custom(), commerce("purchase", PRODUCTS, 2), event("screen_view", 3, screen_name="Home"))
    first = adapter().prepare(batch, NOW_MS)
    again = adapter().prepare(json.loads(json.dumps(batch)), NOW_MS)
    assert [(r.url, r.headers, r.body) for r in first.requests] == [(r.url, r.headers, r.body) for r in again.requests]


# ---- settings --------------------------------------------------------------------------------------------


def test_pixel_id_and_access_token_are_required_settings() -> None:
    with pytest.raises(ValidationError, match="access_token"):
        fb.Settings(pixel_id="123")
    with pytest.raises(ValidationError, match="access_token"):
        fb.Settings(pixel_id="123", access_token="")
    with pytest.raises(ValidationError, match="pixel_id"):
        fb.Settings(pixel_id="px-1", access_token="t")
    with pytest.raises(ValidationError, match="action_source"):
        fb.Settings(pixel_id="1", access_token="t", action_source="web")
    with pytest.raises(ValidationError, match=r"\.settings\.pixel_id"):
        Output.model_validate({"id": 1, "name": "fb", "kind": "facebook_capi", "settings": {"access_token": "t"}})
    settings = fb.Settings(pixel_id="1", access_token="secret-token", api_version="23.0")
    assert "secret-token" not in repr(settings)
    assert build_adapter("facebook_capi", settings).url.startswith("https://graph.facebook.com/v23.0/1/events?")  # type: ignore[attr-defined]


# ---- over real HTTP --------------------------------------------------------------------------------------


def facebook_reply(received: Received) -> web.Response:
    return web.json_response({"events_received": 1, "fbtrace_id": "A"})


def test_prepared_requests_reach_a_real_http_server() -> None:
    partner = LocalPartner()
    local = fb.Adapter(fb.Settings(pixel_id="555", access_token="a b/c", api_url=partner.url))
    prepared = local.prepare(outbound(custom(), commerce("purchase", PRODUCTS, 2)), NOW_MS)

    attempts, [received] = partner.deliver(prepared.requests, facebook_reply)

    assert [a.status for a in attempts] == [200]
    assert (received.method, received.path, received.query) == ("POST", "/v22.0/555/events", {"access_token": "a b/c"})
    assert received.headers["Content-Type"] == "application/json"
    assert [e["event_name"] for e in received.json()["data"]] == ["Signed Up", "Purchase"]
    assert received.json() == json.loads(prepared.requests[0].body)
