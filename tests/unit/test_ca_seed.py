"""The CA Seeding API's checks without Ray: a request becomes the eventless batch the intake stores (the user by mpid
or identities, device keys in device_info, user attributes, seeds with the cutoff in epoch ms); every seed rule and
its documented message; the Events API refuses a client batch carrying seeds."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from cdp_actors.calculated.definition import Definition
from cdp_actors.calculated.seeding import (
    DEVICE_KEYS,
    MAX_SEED_VALUES,
    NO_DEFINITION,
    NOT_NUMERIC,
    active_definitions,
    parse_seed_request,
)
from cdp_actors.config import CalculatedAttribute
from cdp_actors.errors import BadRequest
from cdp_actors.schema.events import decode_valid_batch
from serve_apps.events import SEEDS_REFUSED, validate_batches

CUTOFF = "2024-01-31"
CUTOFF_MS = 1_706_659_200_000
"""2024-01-31T00:00:00Z."""


def definition(calculation: str, data_point: str = "event_attribute") -> Definition:
    point = {"type": data_point, "event_type": "custom_event", "event_name": "Purchase"}
    if data_point != "event":
        point["attribute_name"] = "amount"
    return Definition.model_validate({"data_point": point, "calculation_type": calculation})


ACTIVE = {
    "Purchases": definition("count", "event"),
    "LTV": definition("sum"),
    "Smallest": definition("min"),
    "Largest": definition("max"),
    "Basket": definition("average"),
    "First item": definition("first_occurrence"),
    "Last item": definition("last_occurrence"),
    "First seen": definition("first_occurrence_timestamp", "event"),
    "Last seen": definition("last_occurrence_timestamp", "event"),
    "Brands": definition("unique_list"),
    "Brand count": definition("unique_values_count"),
    "Favourite": definition("most_frequent"),
}


def request(*seeds: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"environment": "production", "mpid": 42, "calculated_attributes": {"workspace": list(seeds)}}
    return {**body, **fields}


def seed(name: str, calculation: str, form: dict[str, Any], cutoff: Any = CUTOFF) -> dict[str, Any]:
    return {"attribute_name": name, "calculation_type": calculation, "cutoff_date": cutoff, "seed": form}


def message_of(body: Any) -> str:
    with pytest.raises(BadRequest) as refused:
        parse_seed_request(body, ACTIVE)
    return refused.value.message


# ---- what a valid request becomes ----------------------------------------------------------------------------


def test_a_request_becomes_an_eventless_batch_with_its_seeds() -> None:
    body = request(seed("LTV", "sum", {"value": 120.5}), seed("Purchases", "count", {"value": "3"}),
                   user_attributes={"workspace": [{"attribute_name": "plan", "attribute_value": "gold"}]})  # fmt: skip
    batch = parse_seed_request(body, ACTIVE)
    assert batch.events == [] and batch.mpid == 42 and batch.environment == "production"
    assert batch.user_attributes == {"plan": "gold"}
    seeds = batch.calculated_attribute_seeds or []
    assert [(s.attribute_name, s.calculation_type, s.cutoff_ms, s.value) for s in seeds] == [
        ("LTV", "sum", CUTOFF_MS, "120.5"), ("Purchases", "count", CUTOFF_MS, "3")]  # fmt: skip
    assert decode_valid_batch(msgspec.json.encode(batch)) == batch  # what the intake stores reads back the same


def test_without_an_mpid_the_identities_find_the_user_device_keys_in_device_info() -> None:
    identities = {"customer_id": "ada", "email": "ada@example.com", **{key: f"d-{key}" for key in DEVICE_KEYS}}
    body = request(seed("LTV", "sum", {"value": 1}), mpid=None, identities=identities)
    batch = parse_seed_request(body, ACTIVE)
    assert batch.mpid is None and batch.user_identities is not None
    assert (batch.user_identities.customer_id, batch.user_identities.email) == ("ada", "ada@example.com")
    assert batch.device_info is not None
    assert batch.device_info.ios_idfv == "d-ios_vendor_id" and batch.device_info.android_uuid == "d-android_id"
    assert batch.device_info.android_advertising_id == "d-google_advertising_id"
    assert all(getattr(batch.device_info, field) == f"d-{key}" for key, field in DEVICE_KEYS.items())


def test_with_an_mpid_the_identities_are_ignored() -> None:
    batch = parse_seed_request(request(seed("LTV", "sum", {"value": 1}), identities={"bogus": 1}), ACTIVE)
    assert batch.mpid == 42 and batch.user_identities is None


@pytest.mark.parametrize(
    ("name", "calculation", "form", "kept"),
    [
        ("Purchases", "count", {"value": 7}, {"value": "7"}),
        ("LTV", "sum", {"value": "12.25"}, {"value": "12.25"}),
        ("Smallest", "min", {"value": -3.0}, {"value": "-3"}),
        ("Smallest", "minimum", {"value": 2}, {"value": "2"}),
        ("Largest", "maximum", {"value": 9}, {"value": "9"}),
        ("First item", "first_occurrence", {"value": "shoes"}, {"value": "shoes"}),
        ("Last item", "last_occurrence", {"value": 5}, {"value": "5"}),
        ("First seen", "first_occurrence_timestamp", {"value": 1_700_000_000_000}, {"value": "1700000000000"}),
        ("Last seen", "last_occurrence_timestamp", {"value": "1700000000000"}, {"value": "1700000000000"}),
        ("Basket", "average", {"key_value_pairs": {"sum": 300, "count": 4}},
         {"key_value_pairs": {"sum": 300.0, "count": 4.0}}),
        ("Favourite", "most_frequent", {"key_value_pairs": {"acme": 3, "globex": 1}},
         {"key_value_pairs": {"acme": 3.0, "globex": 1.0}}),
        ("Brands", "unique_list", {"list": ["acme", "globex", "acme", 7]}, {"values": ["acme", "globex", "7"]}),
        ("Brand count", "unique_values_count", {"list": ["a", "b"]}, {"values": ["a", "b"]}),
    ],
)  # fmt: skip
def test_each_calculation_type_takes_its_seed_form(name: str, calculation: str, form: Any, kept: Any) -> None:
    batch = parse_seed_request(request(seed(name, calculation, form)), ACTIVE)
    (only,) = batch.calculated_attribute_seeds or []
    expected = {"value": None, "key_value_pairs": None, "values": None, **kept}
    assert {"value": only.value, "key_value_pairs": only.key_value_pairs, "values": only.values} == expected
    assert only.calculation_type == ACTIVE[name].calculation_type and only.cutoff_ms == CUTOFF_MS


def test_only_active_definitions_are_seeded() -> None:
    draft_only = CalculatedAttribute(id=1, name="Draft", draft_definition=ACTIVE["LTV"])
    active = CalculatedAttribute(id=2, name="LTV", active_definition=ACTIVE["LTV"])
    assert active_definitions([draft_only, active]) == {"LTV": ACTIVE["LTV"]}
    with pytest.raises(BadRequest) as refused:
        parse_seed_request(request(seed("Draft", "sum", {"value": 1})), active_definitions([draft_only, active]))
    assert refused.value.message == f"Draft: {NO_DEFINITION}"


# ---- seed rules and their messages -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (seed("test sum", "sum", {"value": 1}), f"test sum: {NO_DEFINITION}"),
        (seed("LTV", "count", {"value": 1}), f"LTV: {NO_DEFINITION} with calculation type count (the active one is "
                                              "sum)"),
        (seed("LTV", "sum", {"value": "lots"}), f"LTV: {NOT_NUMERIC}"),
        (seed("LTV", "sum", {"value": True}), f"LTV: {NOT_NUMERIC}"),
        (seed("LTV", "sum", {"value": "NaN"}), f"LTV: {NOT_NUMERIC}"),
        (seed("Smallest", "min", {"value": "x"}), f"Smallest: {NOT_NUMERIC}"),
        (seed("Purchases", "count", {"value": 2.5}), "Purchases: Seed value of a count must be a non-negative integer"),
        (seed("Purchases", "count", {"value": -1}), "Purchases: Seed value of a count must be a non-negative integer"),
        (seed("First seen", "first_occurrence_timestamp", {"value": "yesterday"}),
         "First seen: Seed value of a timestamp must be epoch milliseconds"),
        (seed("Brands", "unique_list", {"list": ["x" * 4097]}), "Brands: Seed values are at most 4096 characters"),
        (seed("Favourite", "most_frequent", {"key_value_pairs": {"x" * 4097: 1}}),
         "Favourite: Seed values are at most 4096 characters"),
        (seed("LTV", "sum", {"value": None}), "LTV: Seed value is required: a single value"),
        (seed("LTV", "sum", {"value": [1]}), "LTV: Seed value is required: a single value"),
        (seed("LTV", "sum", {"list": [1]}), "LTV: Seed of a sum calculated attribute holds value only"),
        (seed("LTV", "sum", {"value": 1, "list": [1]}), "LTV: Seed of a sum calculated attribute holds value only"),
        (seed("Basket", "average", {"value": 3}),
         "Basket: Seed of a average calculated attribute holds key_value_pairs only"),
        (seed("Brands", "unique_list", {"value": "a"}),
         "Brands: Seed of a unique_list calculated attribute holds list only"),
        (seed("LTV", "sum", "12"), "LTV: Seed is required: an object holding value, key_value_pairs or list"),
        (seed("Basket", "average", {"key_value_pairs": {"sum": 3}}),
         "Basket: Seed key_value_pairs of an average hold sum and count"),
        (seed("Basket", "average", {"key_value_pairs": {"sum": "x", "count": 2}}), f"Basket: {NOT_NUMERIC}"),
        (seed("Basket", "average", {"key_value_pairs": {"sum": 3, "count": 0}}),
         "Basket: Seed count must be a positive integer"),
        (seed("Basket", "average", {"key_value_pairs": {"sum": 3, "count": 1.5}}),
         "Basket: Seed count must be a positive integer"),
        (seed("Favourite", "most_frequent", {"key_value_pairs": {}}),
         "Favourite: Seed key_value_pairs must be a non-empty object"),
        (seed("Favourite", "most_frequent", {"key_value_pairs": {"acme": "many"}}),
         "Favourite: Seed count of 'acme' must be a positive integer"),
        (seed("Favourite", "most_frequent", {"key_value_pairs": {str(n): 1 for n in range(MAX_SEED_VALUES + 1)}}),
         f"Favourite: Seed key_value_pairs hold at most {MAX_SEED_VALUES} values"),
        (seed("Brands", "unique_list", {"list": "acme"}), "Brands: Seed list must be an array of values"),
        (seed("Brands", "unique_list", {"list": [None]}), "Brands: Seed list values must be strings or numbers"),
        (seed("Brands", "unique_list", {"list": [str(n) for n in range(MAX_SEED_VALUES + 1)]}),
         f"Brands: Seed list holds at most {MAX_SEED_VALUES} values"),
        (seed("LTV", "sum", {"value": 1}, cutoff="2024-1-31"), "LTV: Cutoff date must be a date as yyyy-MM-dd"),
        (seed("LTV", "sum", {"value": 1}, cutoff="2024-02-30"), "LTV: Cutoff date must be a date as yyyy-MM-dd"),
        (seed("LTV", "sum", {"value": 1}, cutoff=20240131), "LTV: Cutoff date must be a date as yyyy-MM-dd"),
        (seed("LTV", "sum", {"value": 1}, cutoff=None), "LTV: Cutoff date must be a date as yyyy-MM-dd"),
        ({**seed("LTV", "sum", {"value": 1}), "colour": "red"},
         "LTV: Unknown field colour; a seed has attribute_name, calculation_type, cutoff_date, seed"),
    ],
)  # fmt: skip
def test_a_bad_seed_is_refused_with_the_seeding_apis_message(item: dict[str, Any], message: str) -> None:
    assert message_of(request(item)) == message


def test_the_first_bad_seed_of_a_request_refuses_it_all() -> None:
    good = seed("LTV", "sum", {"value": 1})
    assert message_of(request(good, seed("Smallest", "min", {"value": "x"}))) == f"Smallest: {NOT_NUMERIC}"
    assert message_of(request(good, good)) == "LTV: Seeded more than once in one request"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ([], "$"),
        ({**request(seed("LTV", "sum", {"value": 1})), "environment": None}, "$.environment"),
        ({**request(seed("LTV", "sum", {"value": 1})), "environment": "staging"}, "$.environment"),
        ({**request(seed("LTV", "sum", {"value": 1})), "mpid": "ada"}, "$.mpid"),
        ({**request(seed("LTV", "sum", {"value": 1})), "mpid": 2**63}, "$.mpid"),
        ({**request(seed("LTV", "sum", {"value": 1})), "mpid": None}, "$.identities"),
        (request(seed("LTV", "sum", {"value": 1}), mpid=None, identities={"shoe_size": "9"}), "$.identities.shoe_size"),
        (request(seed("LTV", "sum", {"value": 1}), mpid=None, identities={"email": 3}), "$.identities.email"),
        (request(seed("LTV", "sum", {"value": 1}), mpid=None, identities={"email": "x" * 481}), "$.identities.email"),
        (request(seed("LTV", "sum", {"value": 1}), mpid=None, identities=["ada"]), "$.identities"),
        ({"environment": "production", "mpid": 1}, "$.calculated_attributes"),
        (request(), "$.calculated_attributes.workspace"),
        ({**request(), "calculated_attributes": [seed("LTV", "sum", {"value": 1})]}, "$.calculated_attributes"),
        (request({"calculation_type": "sum"}), "$.calculated_attributes.workspace[0].attribute_name"),
        (request("LTV"), "$.calculated_attributes.workspace[0]"),
        (request(seed("LTV", "sum", {"value": 1}), user_attributes={"workspace": [{"attribute_value": 1}]}),
         "$.user_attributes.workspace[0].attribute_name"),
        (request(seed("LTV", "sum", {"value": 1}), user_attributes={"plan": "gold"}), "$.user_attributes"),
        ({**request(seed("LTV", "sum", {"value": 1})), "events": []}, "$.events"),
    ],
)  # fmt: skip
def test_a_bad_request_is_refused_naming_the_field(body: Any, path: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_seed_request(body, ACTIVE)
    assert refused.value.path == path, refused.value.message


def test_user_attribute_values_are_checked_as_the_events_api_checks_them() -> None:
    attributes = {"workspace": [{"attribute_name": "plan", "attribute_value": {"a": 1}}]}
    body = request(seed("LTV", "sum", {"value": 1}), user_attributes=attributes)
    assert "user_attributes" in message_of(body)


# ---- the Events API refuses seeds -----------------------------------------------------------------------------------


def test_the_events_api_refuses_a_batch_carrying_seeds() -> None:
    seeded = {"environment": "production", "mpid": 1, "calculated_attribute_seeds": [
        {"attribute_name": "LTV", "calculation_type": "sum", "cutoff_ms": CUTOFF_MS, "value": "1"}]}  # fmt: skip
    plain = {"environment": "production", "mpid": 1}
    checked = validate_batches([msgspec.json.encode(seeded), msgspec.json.encode(plain)], 128 * 1024)
    assert len(checked.accepted) == 1 and checked.rejected == [{"index": 0, "code": "BAD_REQUEST",
                                                                "message": SEEDS_REFUSED}]  # fmt: skip
    assert "calculated_attribute_seeds" in SEEDS_REFUSED
