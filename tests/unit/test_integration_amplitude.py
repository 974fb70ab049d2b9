"""The Amplitude output: requests for representative outbound batches, rejections, settings, and real HTTP."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from cdp_actors.integrations.amplitude import Adapter, Settings
from cdp_actors.integrations.base import HttpRequest
from cdp_actors.integrations.registry import build_adapter, settings_model
from tests.unit import partners
from tests.unit.partners import NOW_MS as NOW
from tests.unit.partners import LocalPartner, Received, custom, event, user_identities

HEADERS = {"Content-Type": "application/json", "Accept": "*/*", "User-Agent": "cdp-actors/0.1"}
BOOTS = {"id": "sku-1", "name": "Boots", "price": 49.5, "quantity": 2}
HAT = {"id": "sku-2", "name": "Hat", "price": 10.0, "quantity": 1}
ALL_ZERO_IDFA = "00000000-0000-0000-0000-000000000000"
MPID = -3_486_123_907_112_554_301


def adapter(**settings: Any) -> Adapter:
    return Adapter(Settings(api_key="key-1", **settings))


def commerce(
    action: str = "purchase",
    products: list[dict[str, Any]] | None = None,
    event_id: int = 301,
    total: float | None = 59.5,
) -> dict[str, Any]:
    products = [BOOTS, HAT] if products is None else products
    return partners.commerce_event(action, products, event_id, total=total, transaction_id="t-9")


IOS_BATCH = {
    "mpid": MPID,
    "batch_id": 77,
    "ip": "203.0.113.9",
    "user_attributes": {},
    "user_identities": user_identities(customer_id="cust-1", email="ann@example.com"),
    "device_info": {
        "platform": "iOS",
        "os_version": "17.1",
        "brand": "Apple",
        "device_model": "iPhone15,2",
        "ios_advertising_id": "idfa-1234",
        "ios_idfv": "idfv-1234",
    },
    "application_info": {"application_version": "2.0"},
}


def outbound(*events: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An enriched outbound batch from an iOS device."""
    return partners.outbound_batch(*events, **{**IOS_BATCH, **fields})


def sent_events(requests: list[HttpRequest]) -> list[dict[str, Any]]:
    return [e for request in requests for e in json.loads(request.body)["events"]]


WHO = {"user_id": "cust-1", "device_id": "idfa-1234"}
DEVICE = {
    "platform": "iOS",
    "os_version": "17.1",
    "device_brand": "Apple",
    "device_model": "iPhone15,2",
    "idfa": "idfa-1234",
    "idfv": "idfv-1234",
    "app_version": "2.0",
    "ip": "203.0.113.9",
}


# ---- events -----------------------------------------------------------------------------------------------


def test_a_custom_event_is_sent_with_the_documented_body() -> None:
    prepared = adapter().prepare(outbound(custom("Played", song="x", n=3), user_attributes={"plan": "gold"}), NOW)
    [request] = prepared.requests
    assert (request.method, request.url, request.headers) == ("POST", "https://api2.amplitude.com/2/httpapi", HEADERS)
    assert json.loads(request.body) == {
        "api_key": "key-1",
        "events": [
            {
                "event_type": "Played",
                **WHO,
                "time": NOW - 60_000,
                "insert_id": "101",
                "event_properties": {"song": "x", "n": 3},
                "user_properties": {"plan": "gold"},
                **DEVICE,
            },
        ],
    }
    assert (prepared.forwarded_events, prepared.rejections, prepared.skipped) == (1, [], {})


def test_a_screen_view_is_sent_as_viewed_screen_name_in_its_session() -> None:
    batch = outbound(event("screen_view", screen_name="Home", session_start_unixtime_ms=NOW - 90_000))
    [sent] = sent_events(adapter().prepare(batch, NOW).requests)
    assert (sent["event_type"], sent["session_id"], sent["time"]) == ("Viewed Home", NOW - 90_000, NOW - 60_000)


def test_session_start_and_end_keep_their_names_and_the_session_start_as_id() -> None:
    batch = outbound(
        event("session_start", 1, NOW - 90_000),
        event(
            "session_end", 2, NOW - 1_000, session_start_unixtime_ms=NOW - 90_000, custom_attributes={"reason": "idle"}
        ),
    )
    start, end = sent_events(adapter().prepare(batch, NOW).requests)
    assert (start["event_type"], start["session_id"]) == ("session_start", NOW - 90_000)
    assert (end["event_type"], end["session_id"], end["event_properties"]) == (
        "session_end",
        NOW - 90_000,
        {"reason": "idle"},
    )


def test_a_purchase_of_two_products_expands_to_items_a_total_and_a_revenue_event() -> None:
    prepared = adapter().prepare(outbound(commerce()), NOW)
    sent = sent_events(prepared.requests)
    assert [e["event_type"] for e in sent] == [
        "eCommerce - purchase - Item",
        "eCommerce - purchase - Item",
        "eCommerce - purchase - Total",
        "revenue_amount",
    ]
    assert [e["insert_id"] for e in sent] == ["301-0", "301-1", "301-2", "301-3"]
    assert sent[1]["event_properties"] == {
        "Currency Code": "EUR",
        "Id": "sku-2",
        "Name": "Hat",
        "Price": 10.0,
        "Quantity": 1,
    }
    assert sent[2]["event_properties"]["products"] == [BOOTS, HAT]
    revenue = sent[3]
    assert {k: revenue[k] for k in ("price", "quantity", "revenue", "revenueType")} == {
        "price": 59.5,
        "quantity": 1,
        "revenue": 59.5,
        "revenueType": "purchase",
    }
    assert "productId" not in revenue
    assert all("revenue" not in e and "price" not in e for e in sent[:3])  # counted once, on the revenue event
    assert prepared.forwarded_events == 1


def test_a_single_product_refund_has_a_negative_revenue_with_its_product_id() -> None:
    sent = sent_events(adapter().prepare(outbound(commerce("refund", [BOOTS], total=99.0)), NOW).requests)
    assert [e["event_type"] for e in sent] == [
        "eCommerce - refund - Item",
        "eCommerce - refund - Total",
        "revenue_amount",
    ]
    assert (sent[2]["revenue"], sent[2]["price"], sent[2]["productId"], sent[2]["revenueType"]) == (
        -99.0,
        -99.0,
        "sku-1",
        "refund",
    )


def test_a_product_action_other_than_purchase_has_no_revenue_event() -> None:
    sent = sent_events(adapter().prepare(outbound(commerce("add_to_cart", [HAT])), NOW).requests)
    assert [e["event_type"] for e in sent] == ["eCommerce - add_to_cart - Item"]


def test_a_consent_change_is_sent_as_consent_given() -> None:
    notification = {
        "type": "gdpr_change",
        "data": {
            "purpose": "location_collection",
            "old": None,
            "current": {
                "consented": True,
                "document": "doc-v4",
                "timestamp_unixtime_ms": NOW - 5,
                "location": None,
                "hardware_id": None,
            },
        },
    }
    prepared = adapter().prepare(outbound(system_notifications=[notification]), NOW)
    assert sent_events(prepared.requests) == [
        {
            "event_type": "Consent Given",
            **WHO,
            "time": NOW - 5,
            "insert_id": "77-0",
            "event_properties": {"regulation": "gdpr", "purpose": "location_collection", "document": "doc-v4"},
            **DEVICE,
        },
    ]
    assert prepared.forwarded_events == 1


def test_user_attributes_are_sent_even_without_events() -> None:
    prepared = adapter().prepare(outbound(user_attributes={"plan": "gold", "gone": None}), NOW)
    assert sent_events(prepared.requests) == [
        {
            "event_type": "$identify",
            **WHO,
            "time": NOW,
            "insert_id": "77-identify",
            "user_properties": {"plan": "gold"},
            **DEVICE,
        },
    ]
    assert prepared.forwarded_events == 0


def test_an_empty_batch_sends_nothing() -> None:
    prepared = adapter().prepare(outbound(), NOW)
    assert (prepared.requests, prepared.rejections, prepared.forwarded_events) == ([], [], 0)


# ---- identities -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_info", "expected"),
    [
        ({"ios_advertising_id": "idfa-1234", "ios_idfv": "idfv-1234"}, "idfa-1234"),
        ({"ios_advertising_id": ALL_ZERO_IDFA, "ios_idfv": "idfv-1234"}, "idfv-1234"),
        ({"ios_idfv": "idfv-1234"}, "idfv-1234"),
        ({"android_uuid": "android-id-1", "android_advertising_id": "gaid-1234"}, "android-id-1"),
        ({"android_advertising_id": "gaid-1234"}, "gaid-1234"),
        ({"roku_publisher_id": "roku-pub-1"}, "roku-pub-1"),
        ({"fire_advertising_id": "fire-1234"}, "fire-1234"),
    ],
)
def test_the_device_id_falls_back_in_the_documented_order(device_info: dict[str, str], expected: str) -> None:
    [sent] = sent_events(adapter().prepare(outbound(custom("A"), device_info=device_info), NOW).requests)
    assert sent["device_id"] == expected


def test_an_all_zero_idfa_is_not_sent() -> None:
    batch = outbound(custom("A"), device_info={"ios_advertising_id": ALL_ZERO_IDFA, "ios_idfv": "idfv-1234"})
    [sent] = sent_events(adapter().prepare(batch, NOW).requests)
    assert "idfa" not in sent and sent["idfv"] == "idfv-1234"


def test_the_device_id_order_is_configurable_with_the_mpid_as_last_resort() -> None:
    idfv_first = adapter(device_id_types=["ios_idfv", "ios_advertising_id"]).prepare(outbound(custom("A")), NOW)
    assert sent_events(idfv_first.requests)[0]["device_id"] == "idfv-1234"
    mpid_last = adapter(device_id_types=["android_uuid", "mpid"]).prepare(outbound(custom("A")), NOW)
    assert sent_events(mpid_last.requests)[0]["device_id"] == str(MPID)


@pytest.mark.parametrize(
    ("user_id_type", "expected"),
    [("customer_id", "cust-1"), ("email", "ann@example.com"), ("mpid", str(MPID)), ("other", None), ("none", None)],
)
def test_the_user_id_follows_the_setting(user_id_type: str, expected: str | None) -> None:
    [sent] = sent_events(adapter(user_id_type=user_id_type).prepare(outbound(custom("A")), NOW).requests)
    assert sent.get("user_id") == expected and sent["device_id"] == "idfa-1234"


def test_without_user_or_device_id_the_batch_is_rejected() -> None:
    batch = outbound(custom("A"), custom("B", event_id=2), user_identities=[], device_info={"platform": "web"})
    prepared = adapter().prepare(batch, NOW)
    assert prepared.requests == [] and prepared.forwarded_events == 0
    [rejection] = prepared.rejections
    assert rejection.alert_type == "Missing Identity and Device ID"
    assert "2 events not forwarded" in rejection.message


def test_ids_shorter_than_amplitudes_minimum_count_as_missing_unless_configured() -> None:
    short = outbound(custom("A"), device_info={}, user_identities=[{"identity_type": "customer_id", "identity": "42"}])
    assert [r.alert_type for r in adapter().prepare(short, NOW).rejections] == ["Missing Identity and Device ID"]
    [request] = adapter(min_id_length=2).prepare(short, NOW).requests
    body = json.loads(request.body)
    assert body["options"] == {"min_id_length": 2} and body["events"][0]["user_id"] == "42"


# ---- rejections, skipped types, batching ------------------------------------------------------------------


def test_events_without_a_name_are_rejected() -> None:
    prepared = adapter().prepare(outbound(custom(None), event("screen_view"), custom("Kept", event_id=5)), NOW)
    assert [r.alert_type for r in prepared.rejections] == ["Missing Event Name", "Missing Event Name"]
    assert [e["event_type"] for e in sent_events(prepared.requests)] == ["Kept"]
    assert prepared.forwarded_events == 1


def test_unsupported_event_types_and_commerce_events_without_products_are_skipped_and_counted() -> None:
    batch = outbound(
        event("crash_report"),
        event("push_registration"),
        event("crash_report"),
        event("user_attribute_change"),
        commerce(products=[]),
        custom("Kept"),
    )
    prepared = adapter().prepare(batch, NOW)
    assert prepared.skipped == {
        "crash_report": 2,
        "push_registration": 1,
        "user_attribute_change": 1,
        "commerce_event": 1,
    }
    assert [e["event_type"] for e in sent_events(prepared.requests)] == ["Kept"]


def test_requests_carry_at_most_the_configured_number_of_events() -> None:
    prepared = adapter(max_events_per_request=2).prepare(outbound(*(custom(f"E{n}", n) for n in range(5))), NOW)
    assert [[e["event_type"] for e in json.loads(r.body)["events"]] for r in prepared.requests] == [
        ["E0", "E1"],
        ["E2", "E3"],
        ["E4"],
    ]


def test_the_api_url_is_configurable() -> None:
    prepared = adapter(api_url="https://api.eu.amplitude.com/").prepare(outbound(custom("A")), NOW)
    assert [r.url for r in prepared.requests] == ["https://api.eu.amplitude.com/2/httpapi"]


def test_the_same_batch_gives_byte_identical_requests_and_is_left_unchanged() -> None:
    notification = {"type": "ccpa_change", "data": {"purpose": "data_sale_opt_out", "current": {"consented": True}}}
    batch = outbound(
        custom("A"),
        commerce(),
        event("screen_view", screen_name="Home"),
        user_attributes={"plan": "gold"},
        system_notifications=[notification],
    )
    original = copy.deepcopy(batch)
    first = adapter().prepare(batch, NOW)
    second = build_adapter("amplitude", Settings(api_key="key-1")).prepare(copy.deepcopy(batch), NOW)
    assert first == second and first.requests[0].body == second.requests[0].body
    assert [e["event_type"] for e in sent_events(first.requests)][-1] == "Consent Rejected"
    assert batch == original


# ---- settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"api_key": ""},
        {"api_key": "k", "api_url": "api2.amplitude.com"},
        {"api_key": "k", "user_id_type": "x"},
        {"api_key": "k", "device_id_types": ["imei"]},
        {"api_key": "k", "min_id_length": 0},
        {"api_key": "k", "max_events_per_request": 2001},
        {"api_key": "k", "unknown": 1},
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings_model("amplitude").model_validate(settings)


def test_the_api_key_comes_from_the_environment_and_stays_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMPLITUDE_TEST_KEY", "from-env")
    settings = Settings.model_validate({"api_key": "${AMPLITUDE_TEST_KEY}"})
    assert settings.api_key.get_secret_value() == "from-env" and "from-env" not in repr(settings)


def test_partner_statuses_are_named() -> None:
    assert Adapter.status_alerts[403] == "Invalid Credentials" and Adapter.status_alerts[413] == "Request Too Long"


# ---- over real HTTP ---------------------------------------------------------------------------------------


def amplitude_reply(received: Received) -> web.Response:
    return web.json_response({"code": 200, "events_ingested": 1})


def test_requests_arrive_over_http_as_prepared() -> None:
    batch = outbound(*(custom(f"E{n}", n) for n in range(3)), commerce(), user_attributes={"plan": "gold"})
    partner = LocalPartner()
    prepared = adapter(api_url=partner.url, max_events_per_request=4).prepare(batch, NOW)
    attempts, received = partner.deliver(prepared.requests, amplitude_reply)
    assert all(a.ok for a in attempts) and len(attempts) == 2
    assert [(r.method, r.path_qs) for r in received] == [("POST", "/2/httpapi"), ("POST", "/2/httpapi")]
    assert all(r.headers["Content-Type"] == "application/json" for r in received)
    first, second = (r.json() for r in received)
    assert first["api_key"] == second["api_key"] == "key-1"
    assert [e["event_type"] for e in first["events"] + second["events"]] == [
        "E0",
        "E1",
        "E2",
        "eCommerce - purchase - Item",
        "eCommerce - purchase - Item",
        "eCommerce - purchase - Total",
        "revenue_amount",
    ]
    assert second["events"][-1]["revenue"] == 59.5 and second["events"][-1]["user_properties"] == {"plan": "gold"}
