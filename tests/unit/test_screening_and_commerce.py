"""Connection screening (filters, forwarding rules, sampling, versions) and commerce expansion."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from cdp_actors.config import Connection
from cdp_actors.forwarding.screening import passes_everything, sampled_in, screen, version_key
from cdp_actors.integrations.commerce import expand_commerce
from cdp_actors.reports import HOUR_MS, LATE_MS, formatted, inbound_counts, parse_key
from cdp_actors.schema.events import decode_batch
from tests.samples import batch, custom, event

PRODUCT = {"id": "sku-1", "name": "Boots", "price": 49.5, "quantity": 2, "custom_attributes": {"size": "42"}}


def outbound(**fields: Any) -> dict[str, Any]:
    batch = {
        "environment": "production",
        "mpid": 42,
        "user_identities": [
            {"identity_type": "customer_id", "identity": "c1"},
            {"identity_type": "email", "identity": "a@x.io"},
        ],
        "user_attributes": {"plan": "gold", "$city": "Oslo"},
        "consent_state": {
            "gdpr": {"marketing": {"consented": True}},
            "ccpa": {"data_sale_opt_out": {"consented": False}},
        },
        "application_info": {"application_version": "2.10.1"},
        "events": [
            {
                "event_type": "custom_event",
                "data": {"event_name": "Played", "custom_attributes": {"song": "x", "tier": "paid"}},
            },
            {"event_type": "screen_view", "data": {"screen_name": "Home"}},
            {"event_type": "custom_event", "data": {"event_name": "Paused", "custom_attributes": {"tier": "free"}}},
        ],
    }
    return {**batch, **fields}


def connection(**settings: Any) -> Connection:
    return Connection(id=1, input=1, output=1, **settings)


def names(batch: dict[str, Any] | None) -> list[str]:
    assert batch is not None
    return [e["data"].get("event_name") or e["data"].get("screen_name") for e in batch["events"]]


def test_an_unconfigured_connection_forwards_everything() -> None:
    screened = screen(outbound(), connection())
    assert screened.batch == outbound() and screened.blocked_events == 0


@pytest.mark.parametrize(
    ("settings", "forwarded"),
    [
        ({"environments": ["development"]}, False),
        ({"min_app_version": "2.9"}, True),
        ({"min_app_version": "2.10.2"}, False),
        ({"rules": [{"on": "gdpr", "name": "marketing", "action": "only_forward"}]}, True),
        ({"rules": [{"on": "gdpr", "name": "analytics", "action": "only_forward"}]}, False),
        ({"rules": [{"on": "ccpa_data_sale_opt_out", "action": "do_not_forward"}]}, True),
        ({"rules": [{"on": "user_attribute", "name": "plan", "value": "gold", "action": "do_not_forward"}]}, False),
        ({"rules": [{"on": "user_attribute", "name": "plan", "value": "free", "action": "do_not_forward"}]}, True),
        ({"rules": [{"on": "identity", "name": "email", "action": "only_forward"}]}, True),
        ({"rules": [{"on": "identity", "name": "mobile_number", "action": "only_forward"}]}, False),
    ],
)
def test_batch_level_settings(settings: dict[str, Any], forwarded: bool) -> None:
    assert (screen(outbound(), connection(**settings)).batch is not None) is forwarded


GIANT = "9" * 4_301  # one digit past Python's limit for int("...")


@pytest.mark.parametrize(
    ("version", "floor", "forwarded"),
    [
        ("2.10.1", "2.9", True),
        ("2.010.1", "2.9", True),
        ("2.9", "2.10", False),
        ("1.0", "1", True),
        (f"1.{GIANT}", "1.2", True),
        ("1.2", f"1.{GIANT}", False),
        (f"2.{GIANT}", f"2.{GIANT}0", False),
        (f"{GIANT}", f"0{GIANT}", True),
        ("build 7", "6", True),
    ],
)
def test_min_app_version_compares_numbers_of_any_size(version: str, floor: str, forwarded: bool) -> None:
    batch = outbound(application_info={"application_version": version})
    assert (screen(batch, connection(min_app_version=floor)).batch is not None) is forwarded
    assert (version_key(version) >= version_key(floor)) is forwarded


def test_ccpa_opt_out_blocks_data_sale_outputs() -> None:
    opted_out = outbound(consent_state={"ccpa": {"data_sale_opt_out": {"consented": True}}})
    rule = {"rules": [{"on": "ccpa_data_sale_opt_out", "action": "do_not_forward"}]}
    assert screen(opted_out, connection(**rule)).batch is None


def test_event_attribute_rules_and_data_filters_drop_events_and_fields() -> None:
    only_paid = connection(rules=[{"on": "event_attribute", "name": "tier", "value": "paid", "action": "only_forward"}])
    screened = screen(outbound(), only_paid)
    assert names(screened.batch) == ["Played"] and screened.blocked_events == 2

    filtered = connection(
        filters={
            "event_types": {"screen_view": False},
            "event_names": {"Paused": False},
            "event_attributes": {"song": False},
            "user_attributes": {"$city": False},
            "user_identities": {"email": False},
        }
    )
    batch = screen(outbound(), filtered).batch
    assert names(batch) == ["Played"] and batch["events"][0]["data"]["custom_attributes"] == {"tier": "paid"}
    assert batch["user_attributes"] == {"plan": "gold"}
    assert batch["user_identities"] == [{"identity_type": "customer_id", "identity": "c1"}]


def test_new_data_points_blocked_by_default_unless_listed() -> None:
    allow_played = connection(
        filters={
            "event_names": {"Played": True},
            "event_types": {"custom_event": True},
            "event_attributes": {"song": True},
            "user_attributes": {"plan": True},
            "user_identities": {"customer_id": True},
        }
    )
    batch = screen(outbound(), allow_played, new_data_points_forward=False).batch
    assert names(batch) == ["Played"] and batch["events"][0]["data"]["custom_attributes"] == {"song": "x"}
    assert batch["user_attributes"] == {"plan": "gold"} and len(batch["user_identities"]) == 1


def test_sampling_is_deterministic_per_user_and_close_to_the_rate() -> None:
    picks = [sampled_in(mpid, 30) for mpid in range(1, 20_001)]
    assert picks == [sampled_in(mpid, 30) for mpid in range(1, 20_001)]
    assert 0.28 < sum(picks) / len(picks) < 0.32
    assert all(sampled_in(m, 100) for m in range(100)) and not any(sampled_in(m, 0) for m in range(100))


def test_purchase_expands_to_one_event_per_product_plus_a_total() -> None:
    data = {
        "product_action": {
            "action": "purchase",
            "transaction_id": "t-1",
            "total_amount": 104.0,
            "products": [PRODUCT, {**PRODUCT, "id": "sku-2"}],
        },
        "currency_code": "EUR",
        "custom_attributes": {"channel": "web"},
    }
    expanded = expand_commerce(data)
    assert [e.name for e in expanded] == ["eCommerce - purchase - Item"] * 2 + ["eCommerce - purchase - Total"]
    assert expanded[0].attributes == {
        "channel": "web",
        "Currency Code": "EUR",
        "Id": "sku-1",
        "Name": "Boots",
        "Price": 49.5,
        "Quantity": 2,
        "size": "42",
    }
    total = expanded[-1]
    assert total.revenue == 104.0 and total.attributes["Transaction Id"] == "t-1"
    assert total.attributes["Product Count"] == 2


def test_other_commerce_kinds_expand_per_product_or_promotion() -> None:
    assert len(expand_commerce({"product_action": {"action": "add_to_cart", "products": [PRODUCT, PRODUCT]}})) == 2
    promotions = expand_commerce({"promotion_action": {"action": "click", "promotions": [{"id": "p1"}, {"id": "p2"}]}})
    assert [(e.name, e.attributes["Id"]) for e in promotions] == [
        ("eCommerce - click - Item", "p1"),
        ("eCommerce - click - Item", "p2"),
    ]
    impressions = expand_commerce(
        {
            "product_impressions": [
                {"product_impression_list": "home", "products": [PRODUCT]},
                {"products": [PRODUCT, PRODUCT]},
            ]
        }
    )
    assert len(impressions) == 3 and impressions[0].attributes["Product Impression List"] == "home"


def test_report_counters_for_an_inbound_batch() -> None:
    received = 500 * HOUR_MS + 5
    purchase = {"product_action": {"action": "purchase", "total_amount": 12.5, "products": [{"id": "p"}]}}
    raw = batch(
        "r",
        [
            custom("Played", received),
            custom("Old", received - LATE_MS - 1),
            event("session_start", received),
            event("commerce_event", received, **purchase),
        ],
    )
    tallies: Counter[tuple] = Counter()
    inbound_counts(decode_batch(json.dumps(raw).encode()), 7, received, tallies)
    counts = formatted(tallies)
    flat = {parse_key(k)[1:]: n for k, n in counts.items()}
    assert flat[("events", "production", 7, "")] == 3  # the event stamped over 72 h before receipt is left out
    assert flat[("name", "production", 7, "Played")] == 1 and ("name", "production", 7, "Old") not in flat
    assert flat[("sessions", "production", 7, "")] == 1 and flat[("revenue", "production", 7, "")] == 1250
    assert {parse_key(k)[0] for k in counts} == {500}


def test_only_an_unconfigured_connection_passes_everything_unscreened() -> None:
    assert passes_everything(connection(), new_data_points_forward=True)
    assert not passes_everything(connection(), new_data_points_forward=False)
    assert not passes_everything(connection(sample_percent=50), new_data_points_forward=True)
    assert not passes_everything(connection(environments=["production"]), new_data_points_forward=True)
    assert not passes_everything(connection(filters={"event_types": {"x": True}}), new_data_points_forward=True)
