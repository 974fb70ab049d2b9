"""The Mixpanel output: requests for representative outbound batches, rejections, settings, and real HTTP."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from pydantic import ValidationError

from cdp_actors.config import ConfigError, parse_workspace
from cdp_actors.integrations.base import HttpRequest
from cdp_actors.integrations.mixpanel import Adapter, Settings
from cdp_actors.integrations.registry import build_adapter, settings_model
from tests.unit import partners
from tests.unit.partners import NOW_MS as NOW
from tests.unit.partners import LocalPartner, Received, custom, event, user_identities

DAY = 86_400_000
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "cdp-actors/0.1"}
BOOTS = {"id": "sku-1", "name": "Boots", "price": 49.5, "quantity": 2}
HAT = {"id": "sku-2", "name": "Hat", "price": 10.0, "quantity": 1, "custom_attributes": {"gift": "true"}}


def adapter(**settings: Any) -> Adapter:
    return Adapter(Settings(project_token="tok-1", **settings))


def purchase(event_id: int = 301, ts: int = NOW - 60_000, action: str = "purchase") -> dict[str, Any]:
    return partners.commerce_event(action, [BOOTS, HAT], event_id, ts, total=109.0, transaction_id="t-9")


BATCH = {
    "mpid": 4242,
    "batch_id": 77,
    "ip": "203.0.113.9",
    "user_attributes": {},
    "user_identities": user_identities(customer_id="cust-1", email="ann@example.com"),
    "device_info": {"platform": "iOS", "os_version": "17.1", "ios_idfv": "idfv-1"},
    "application_info": {"application_version": "2.0"},
}


def outbound(*events: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return partners.outbound_batch(*events, **{**BATCH, **fields})


def bodies(prepared_requests: list[HttpRequest]) -> list[Any]:
    return [json.loads(request.body) for request in prepared_requests]


CONTEXT = {"$os": "iOS", "$os_version": "17.1", "$app_version_string": "2.0"}
ENVELOPE = {"token": "tok-1", "distinct_id": "4242", "ip": "203.0.113.9"}


# ---- events -----------------------------------------------------------------------------------------------


def test_a_recent_custom_event_is_tracked_with_the_documented_body() -> None:
    prepared = adapter(send_people=False).prepare(outbound(custom("Played", song="x", n=3)), NOW)
    assert len(prepared.requests) == 1
    request = prepared.requests[0]
    assert (request.method, request.url, request.headers) == ("POST", "https://api.mixpanel.com/track", JSON_HEADERS)
    assert json.loads(request.body) == [
        {
            "event": "Played",
            "properties": {**CONTEXT, "song": "x", "n": 3, **ENVELOPE, "time": NOW - 60_000, "$insert_id": "101"},
        },
    ]
    assert (prepared.forwarded_events, prepared.rejections, prepared.skipped) == (1, [], {})


def test_true_and_false_strings_become_booleans_in_any_case() -> None:
    batch = outbound(
        custom("Played", a="true", b="FALSE", c="True", d="yes", e=1, f=None),
        user_attributes={"vip": "tRuE", "tags": ["true"]},
    )
    track, engage = bodies(adapter().prepare(batch, NOW).requests)
    properties = track[0]["properties"]
    assert (properties["a"], properties["b"], properties["c"], properties["d"], properties["e"]) == (
        True,
        False,
        True,
        "yes",
        1,
    )
    assert "f" not in properties
    assert engage[0]["$set"]["vip"] is True and engage[0]["$set"]["tags"] == ["true"]


def test_reserved_names_cannot_be_overwritten_by_attributes() -> None:
    track = bodies(
        adapter(send_people=False).prepare(outbound(custom("Played", token="x", distinct_id="y")), NOW).requests
    )[0]
    assert (track[0]["properties"]["token"], track[0]["properties"]["distinct_id"]) == ("tok-1", "4242")


def test_a_screen_view_is_tracked_as_viewed_screen_name() -> None:
    batch = outbound(event("screen_view", screen_name="Home", custom_attributes={"tab": "new"}))
    [track] = bodies(adapter(send_people=False).prepare(batch, NOW).requests)
    assert track == [
        {
            "event": "Viewed Home",
            "properties": {**CONTEXT, "tab": "new", **ENVELOPE, "time": NOW - 60_000, "$insert_id": "201"},
        }
    ]


def test_a_purchase_of_two_products_expands_to_two_items_and_a_total_with_a_transaction() -> None:
    prepared = adapter().prepare(outbound(purchase()), NOW)
    track, engage = bodies(prepared.requests)
    assert [e["event"] for e in track] == [
        "eCommerce - purchase - Item",
        "eCommerce - purchase - Item",
        "eCommerce - purchase - Total",
    ]
    assert [e["properties"]["$insert_id"] for e in track] == ["301-0", "301-1", "301-2"]
    assert track[1]["properties"]["Id"] == "sku-2" and track[1]["properties"]["gift"] is True
    assert track[2]["properties"]["Total Amount"] == 109.0 and track[2]["properties"]["Product Count"] == 2
    envelope = {"$token": "tok-1", "$distinct_id": "4242", "$ip": "203.0.113.9"}
    assert engage == [
        {**envelope, "$time": NOW, "$set": {"$email": "ann@example.com"}},
        {
            **envelope,
            "$time": NOW - 60_000,
            "$append": {"$transactions": {"$time": "2023-11-14T22:12:20", "$amount": 109.0}},
        },
    ]
    assert prepared.forwarded_events == 1


def test_a_refund_records_a_negative_transaction() -> None:
    engage = bodies(adapter().prepare(outbound(purchase(action="refund")), NOW).requests)[1]
    assert engage[1]["$append"]["$transactions"]["$amount"] == -109.0


def test_a_consent_change_is_tracked_as_consent_given() -> None:
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
    [track] = bodies(adapter(send_people=False).prepare(outbound(system_notifications=[notification]), NOW).requests)
    assert track == [
        {
            "event": "Consent Given",
            "properties": {
                **CONTEXT,
                "regulation": "gdpr",
                "purpose": "location_collection",
                "document": "doc-v4",
                **ENVELOPE,
                "time": NOW - 5,
                "$insert_id": "77-0",
            },
        }
    ]


def test_a_ccpa_opt_out_is_tracked_as_consent_rejected() -> None:
    notification = {
        "type": "ccpa_change",
        "data": {"purpose": "data_sale_opt_out", "current": {"consented": True, "timestamp_unixtime_ms": NOW}},
    }
    [track] = bodies(adapter(send_people=False).prepare(outbound(system_notifications=[notification]), NOW).requests)
    assert track[0]["event"] == "Consent Rejected" and track[0]["properties"]["regulation"] == "ccpa"


# ---- historical events ------------------------------------------------------------------------------------


def test_events_older_than_five_days_go_to_import_with_the_api_secret_as_basic_auth() -> None:
    batch = outbound(custom("Old", event_id=1, ts=NOW - 5 * DAY - 1), custom("Edge", event_id=2, ts=NOW - 5 * DAY))
    prepared = adapter(api_secret="sec-1", send_people=False).prepare(batch, NOW)
    track, imported = prepared.requests
    assert track.url == "https://api.mixpanel.com/track" and "Authorization" not in track.headers
    assert [e["event"] for e in json.loads(track.body)] == ["Edge"]
    assert imported.url == "https://api.mixpanel.com/import?strict=1"
    assert imported.headers == {**JSON_HEADERS, "Authorization": "Basic " + base64.b64encode(b"sec-1:").decode()}
    assert json.loads(imported.body) == [
        {"event": "Old", "properties": {**CONTEXT, **ENVELOPE, "time": NOW - 5 * DAY - 1, "$insert_id": "1"}}
    ]
    assert prepared.forwarded_events == 2 and prepared.rejections == []


def test_without_the_api_secret_old_events_are_rejected_as_late() -> None:
    batch = outbound(custom("Old", event_id=1, ts=NOW - 6 * DAY), custom("New", event_id=2))
    prepared = adapter(send_people=False).prepare(batch, NOW)
    assert [r.alert_type for r in prepared.rejections] == ["Event Arrived Late"]
    assert "'Old' is 6.0 days old" in prepared.rejections[0].message
    [track] = bodies(prepared.requests)
    assert [e["event"] for e in track] == ["New"]
    assert prepared.forwarded_events == 1


# ---- people and identity ----------------------------------------------------------------------------------


def test_user_attributes_are_set_on_the_profile_with_the_email() -> None:
    attributes = {
        "$FirstName": "Ann",
        "$LastName": "Lee",
        "$Mobile": "+1555",
        "$City": "Oslo",
        "$State": "OS",
        "$Age": 40,
        "plan": "gold",
        "gone": None,
    }
    [engage] = bodies(adapter().prepare(outbound(user_attributes=attributes, ip=None), NOW).requests)
    assert engage == [
        {
            "$token": "tok-1",
            "$distinct_id": "4242",
            "$ip": "0",
            "$time": NOW,
            "$set": {
                "$first_name": "Ann",
                "$last_name": "Lee",
                "$phone": "+1555",
                "$city": "Oslo",
                "$region": "OS",
                "Age": 40,
                "plan": "gold",
                "$email": "ann@example.com",
            },
        }
    ]


def test_people_updates_can_be_turned_off_and_user_attributes_put_on_events() -> None:
    batch = outbound(custom("Played"), user_attributes={"plan": "gold"})
    [track] = bodies(adapter(send_people=False, include_user_attributes=True).prepare(batch, NOW).requests)
    assert track[0]["properties"]["plan"] == "gold" and track[0]["properties"]["$email"] == "ann@example.com"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("mpid", "4242"),
        ("customer_id", "cust-1"),
        ("email", "ann@example.com"),
        ("ios_idfv", "idfv-1"),
        ("other", "4242"),
    ],  # no `other` identity: the MPID stands in
)
def test_the_distinct_id_follows_the_setting(choice: str, expected: str) -> None:
    [track] = bodies(adapter(distinct_id_type=choice, send_people=False).prepare(outbound(custom("A")), NOW).requests)
    assert track[0]["properties"]["distinct_id"] == expected


# ---- rejections, skipped types, batching ------------------------------------------------------------------


def test_events_without_a_name_are_rejected() -> None:
    batch = outbound(custom(None), event("screen_view"), custom("Kept", event_id=5))
    prepared = adapter(send_people=False).prepare(batch, NOW)
    assert [r.alert_type for r in prepared.rejections] == ["Missing Event Name", "Missing Event Name"]
    assert [e["event"] for e in bodies(prepared.requests)[0]] == ["Kept"]


def test_unsupported_event_types_are_skipped_and_counted() -> None:
    no_products = event("commerce_event", product_action={"action": "add_to_cart", "products": []})
    batch = outbound(
        event("session_start"),
        event("session_end"),
        event("crash_report"),
        event("session_start"),
        event("user_identity_change"),
        no_products,
        custom("Kept"),
    )
    prepared = adapter(send_people=False).prepare(batch, NOW)
    assert prepared.skipped == {
        "session_start": 2,
        "session_end": 1,
        "crash_report": 1,
        "user_identity_change": 1,
        "commerce_event": 1,
    }
    assert prepared.forwarded_events == 1 and prepared.rejections == []


def test_requests_carry_at_most_the_configured_number_of_events() -> None:
    batch = outbound(*(custom(f"E{n}", event_id=n) for n in range(5)))
    prepared = adapter(max_events_per_request=2, send_people=False).prepare(batch, NOW)
    assert [[e["event"] for e in body] for body in bodies(prepared.requests)] == [["E0", "E1"], ["E2", "E3"], ["E4"]]


def test_an_empty_batch_sends_nothing() -> None:
    prepared = adapter().prepare(outbound(user_identities=[]), NOW)
    assert (prepared.requests, prepared.rejections, prepared.forwarded_events) == ([], [], 0)


def test_the_api_url_is_configurable() -> None:
    prepared = adapter(api_url="https://api-eu.mixpanel.com/").prepare(outbound(custom("A")), NOW)
    assert [r.url for r in prepared.requests] == [
        "https://api-eu.mixpanel.com/track",
        "https://api-eu.mixpanel.com/engage",
    ]


def test_the_same_batch_gives_byte_identical_requests_and_is_left_unchanged() -> None:
    notification = {"type": "gdpr_change", "data": {"purpose": "ads", "current": {"consented": False}}}
    batch = outbound(
        custom("A", x="true"),
        purchase(),
        custom("Old", event_id=9, ts=NOW - 9 * DAY),
        user_attributes={"plan": "gold"},
        system_notifications=[notification],
    )
    original = copy.deepcopy(batch)
    first = adapter(api_secret="s").prepare(batch, NOW)
    second = build_adapter("mixpanel", Settings(project_token="tok-1", api_secret="s")).prepare(
        copy.deepcopy(batch), NOW
    )
    assert first == second and len(first.requests) == 3
    assert [r.body for r in first.requests] == [r.body for r in second.requests]
    assert batch == original


# ---- settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"project_token": ""},
        {"project_token": "  "},
        {"project_token": "t", "api_url": "ftp://x"},
        {"project_token": "t", "distinct_id_type": "guess"},
        {"project_token": "t", "max_events_per_request": 0},
        {"project_token": "t", "max_events_per_request": 2001},
        {"project_token": "t", "unknown": 1},
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings_model("mixpanel").model_validate(settings)


def test_secrets_come_from_the_environment_and_stay_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXPANEL_TEST_SECRET", "from-env")
    settings = Settings.model_validate({"project_token": "tok-1", "api_secret": "${MIXPANEL_TEST_SECRET}"})
    assert settings.api_secret is not None and settings.api_secret.get_secret_value() == "from-env"
    assert "from-env" not in repr(settings) and "tok-1" not in repr(settings)


def test_a_workspace_names_the_bad_mixpanel_setting() -> None:
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "workspace.yaml").read_text())
    data["outputs"][0].update(kind="mixpanel", settings={"project_token": "t", "distinct_id_type": "nope"})
    with pytest.raises(ConfigError, match="distinct_id_type"):
        parse_workspace(data)


def test_partner_statuses_are_named() -> None:
    assert Adapter.status_alerts[401] == "Invalid Credentials" and Adapter.status_alerts[413] == "Request Too Long"


# ---- over real HTTP ---------------------------------------------------------------------------------------


def mixpanel_reply(received: Received) -> web.Response:
    return web.Response(text="1")


def test_requests_arrive_over_http_as_prepared() -> None:
    batch = outbound(
        custom("Played", vip="true"), custom("Old", event_id=7, ts=NOW - 10 * DAY), user_attributes={"plan": "gold"}
    )
    partner = LocalPartner()
    prepared = adapter(api_url=partner.url, api_secret="sec-1").prepare(batch, NOW)
    attempts, received = partner.deliver(prepared.requests, mixpanel_reply)
    assert all(a.ok for a in attempts) and len(attempts) == 3
    assert [r.path_qs for r in received] == ["/track", "/import?strict=1", "/engage"]
    assert [r.method for r in received] == ["POST"] * 3
    assert [r.headers["Content-Type"] for r in received] == ["application/json"] * 3
    assert "Authorization" not in received[0].headers
    assert received[1].headers["Authorization"] == "Basic " + base64.b64encode(b"sec-1:").decode()
    track, imported, engage = (r.json() for r in received)
    assert track[0]["event"] == "Played" and track[0]["properties"]["vip"] is True
    assert imported[0]["properties"]["$insert_id"] == "7"
    assert engage[0]["$set"] == {"plan": "gold", "$email": "ann@example.com"}
