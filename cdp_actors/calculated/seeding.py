"""The CA Seeding API's requests (https://docs.mparticle.com/developers/apis/ca-seeding-api/) as eventless batches
(`seed.py` turns each seed into the engine's state; this module checks the requests that carry them).

A request seeds one user's calculated attributes with what happened before a cutoff date (the platform computes the
rest from the data after it):

```json
{"environment": "production", "mpid": 7346244611012968789,
 "identities": {"customer_id": "ada", "ios_vendor_id": "..."},
 "calculated_attributes": {"workspace": [
     {"attribute_name": "LTV", "calculation_type": "sum", "cutoff_date": "2024-01-31", "seed": {"value": 120.5}},
     {"attribute_name": "Avg basket", "calculation_type": "average", "cutoff_date": "2024-01-31",
      "seed": {"key_value_pairs": {"sum": 300, "count": 4}}},
     {"attribute_name": "Brands", "calculation_type": "unique_list", "cutoff_date": "2024-01-31",
      "seed": {"list": ["acme", "globex"]}}]},
 "user_attributes": {"workspace": [{"attribute_name": "plan", "attribute_value": "gold"}]}}
```

`parse_seed_request(body, active)` checks it against the workspace's ACTIVE definitions by name and returns the
`Batch` the intake log stores: the user (`mpid`, else the identities: the Events API's user identity keys, and the
device keys below in `device_info`), the user attributes, and `calculated_attribute_seeds` (cutoff as epoch ms at
00:00 UTC). The shard applies the seeds; the Events API refuses a batch that carries them.

A seed is refused with mParticle's body, `{"errors": [{"code": "BAD_REQUEST", "message": "<CA name>: <error>"}]}`:
a `BadRequest` without a path, whose message is exactly that. A fault outside the seeds names its field
(`... - at `$.environment``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import msgspec

from cdp_actors.calculated.definition import MAX_NAME_CHARS, Definition
from cdp_actors.calculated.seed import seed_problem
from cdp_actors.errors import BadRequest
from cdp_actors.schema.events import (
    INT64_MAX,
    MAX_IDENTITY_BYTES,
    MAX_VALUE_CHARS,
    Batch,
    BatchError,
    CalculatedAttributeSeed,
    UserIdentities,
    decode_batch,
)

NO_DEFINITION = "No matching calculated attribute definition found"
NOT_NUMERIC = "Seed value must be numeric"
VALUE_SEEDED = frozenset({"count", "sum", "min", "max", "first_occurrence", "last_occurrence",
                          "first_occurrence_timestamp", "last_occurrence_timestamp"})  # fmt: skip
PAIRS_SEEDED = frozenset({"average", "most_frequent"})
LIST_SEEDED = frozenset({"unique_list", "unique_values_count"})
SEED_FORM = {**dict.fromkeys(VALUE_SEEDED, "value"), **dict.fromkeys(PAIRS_SEEDED, "key_value_pairs"),
             **dict.fromkeys(LIST_SEEDED, "list")}  # fmt: skip
"""Per calculation type, the one key its `seed` object holds."""
NUMERIC = frozenset({"count", "sum", "min", "max"})
TIMESTAMPS = frozenset({"first_occurrence_timestamp", "last_occurrence_timestamp"})
CALCULATION_SYNONYMS = {"minimum": "min", "maximum": "max"}
"""The seeding docs' table says `minimum`/`maximum`, their example `min`/`max`: both are read."""
MAX_SEED_VALUES = 100
"""Values a list or most-frequent seed holds: a unique list and a most-frequent CA keep the first 100 distinct
values (reference: "Calculated Attributes Reference"), so more could never count."""
MAX_SEEDS_PER_REQUEST = 100
DEVICE_KEYS = {
    "android_id": "android_uuid",
    "google_advertising_id": "android_advertising_id",
    "ios_advertising_id": "ios_advertising_id",
    "ios_vendor_id": "ios_idfv",
    "roku_advertising_id": "roku_advertising_id",
    "roku_publisher_id": "roku_publisher_id",
    "fire_advertising_id": "fire_advertising_id",
    "microsoft_advertising_id": "microsoft_advertising_id",
    "microsoft_publisher_id": "microsoft_publisher_id",
}
"""The seeding API's device identity keys → the Events API's `device_info` fields."""
USER_KEYS = frozenset(UserIdentities.__struct_fields__)
ENVIRONMENTS = ("production", "development")
REQUEST_FIELDS = frozenset({"environment", "mpid", "identities", "calculated_attributes", "user_attributes"})
SEED_FIELDS = frozenset({"attribute_name", "calculation_type", "cutoff_date", "seed"})
DAY_FORMAT = "%Y-%m-%d"


def parse_seed_request(body: Any, active: Mapping[str, Definition]) -> Batch:
    """The eventless batch a seeding request stands for; a `BadRequest` (nothing to store) when any part is wrong."""
    request = _object(body, "$")
    unknown = sorted(set(request) - REQUEST_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field; allowed: {', '.join(sorted(REQUEST_FIELDS))}", f"$.{unknown[0]}")
    document: dict[str, Any] = {"environment": _environment(request.get("environment"))}
    document.update(_user(request.get("mpid"), request.get("identities")))
    seeds = _seeds(request.get("calculated_attributes"), active)
    document["calculated_attribute_seeds"] = [msgspec.to_builtins(seed) for seed in seeds]
    attributes = _user_attributes(request.get("user_attributes"))
    if attributes:
        document["user_attributes"] = attributes
    try:
        return decode_batch(msgspec.json.encode(document))  # what the intake and the shards will read back
    except BatchError as error:
        raise BadRequest(error.message) from None


def active_definitions(calculated_attributes: Any) -> dict[str, Definition]:
    """Name → active definition, of a workspace's `calculated_attributes`."""
    return {ca.name: ca.active_definition for ca in calculated_attributes if ca.active_definition is not None}


# ---- the user --------------------------------------------------------------------------------------------------


def _environment(value: Any) -> str:
    if value is None:
        raise BadRequest("environment is required", "$.environment")
    if value not in ENVIRONMENTS:
        raise BadRequest(f"environment must be one of {', '.join(ENVIRONMENTS)}", "$.environment")
    return str(value)


def _user(mpid: Any, identities: Any) -> dict[str, Any]:
    """`mpid` when given (the identities are then ignored, as documented), else the identities."""
    if mpid is not None:
        if isinstance(mpid, str) and mpid.lstrip("-").isdigit():
            mpid = int(mpid)
        if not isinstance(mpid, int) or isinstance(mpid, bool) or not -INT64_MAX - 1 <= mpid <= INT64_MAX:
            raise BadRequest("mpid must be a 64-bit integer", "$.mpid")
        return {"mpid": mpid}
    if identities is None or identities == {}:
        raise BadRequest("either mpid or identities is required to find the user", "$.identities")
    user: dict[str, str] = {}
    device: dict[str, str] = {}
    for key, value in _object(identities, "$.identities").items():
        path = f"$.identities.{key}"
        if key not in USER_KEYS and key not in DEVICE_KEYS:
            raise BadRequest("unknown identity type; use the Events API's user identity keys or "
                             + ", ".join(DEVICE_KEYS), path)  # fmt: skip
        if not isinstance(value, str) or not value:
            raise BadRequest("an identity is a non-empty string", path)
        if len(value.encode()) > MAX_IDENTITY_BYTES:
            raise BadRequest(f"Identifier Too Long: identity values are at most {MAX_IDENTITY_BYTES} bytes", path)
        if key in DEVICE_KEYS:
            device[DEVICE_KEYS[key]] = value
        else:
            user[key] = value
    return {**({"user_identities": user} if user else {}), **({"device_info": device} if device else {})}


def _user_attributes(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    items = _workspace_list(value, "$.user_attributes")
    attributes: dict[str, Any] = {}
    for n, raw in enumerate(items):
        path = f"$.user_attributes.workspace[{n}]"
        item = _object(raw, path)
        unknown = sorted(set(item) - {"attribute_name", "attribute_value"})
        if unknown:
            raise BadRequest("unknown field; allowed: attribute_name, attribute_value", f"{path}.{unknown[0]}")
        name = item.get("attribute_name")
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise BadRequest(f"attribute_name is a string of 1 to {MAX_NAME_CHARS} characters",
                             f"{path}.attribute_name")  # fmt: skip
        attributes[name] = item.get("attribute_value")
    return attributes


# ---- the seeds ---------------------------------------------------------------------------------------------------


def _seeds(value: Any, active: Mapping[str, Definition]) -> list[CalculatedAttributeSeed]:
    if value is None:
        raise BadRequest("calculated_attributes is required", "$.calculated_attributes")
    items = _workspace_list(value, "$.calculated_attributes")
    if not items:
        raise BadRequest("calculated_attributes.workspace holds no seed", "$.calculated_attributes.workspace")
    if len(items) > MAX_SEEDS_PER_REQUEST:
        raise BadRequest(f"a request seeds at most {MAX_SEEDS_PER_REQUEST} calculated attributes",
                         "$.calculated_attributes.workspace")  # fmt: skip
    seeds: list[CalculatedAttributeSeed] = []
    for n, raw in enumerate(items):
        item = _object(raw, f"$.calculated_attributes.workspace[{n}]")
        name = item.get("attribute_name")
        if not isinstance(name, str) or not name:
            raise BadRequest("attribute_name is required", f"$.calculated_attributes.workspace[{n}].attribute_name")
        try:
            seed = seed_of(item, active.get(name))
        except ValueError as error:
            raise BadRequest(f"{name}: {error}") from None
        if any(s.attribute_name == name for s in seeds):
            raise BadRequest(f"{name}: Seeded more than once in one request")
        seeds.append(seed)
    return seeds


def seed_of(item: Mapping[str, Any], definition: Definition | None) -> CalculatedAttributeSeed:
    """One `calculated_attributes.workspace[]` item as a seed of `definition` (the active one of its name); a
    ValueError saying what is wrong, in the seeding API's words, otherwise."""
    unknown = sorted(set(item) - SEED_FIELDS)
    if unknown:
        raise ValueError(f"Unknown field {unknown[0]}; a seed has {', '.join(sorted(SEED_FIELDS))}")
    given = str(item.get("calculation_type"))
    calculation = CALCULATION_SYNONYMS.get(given, given)
    if definition is None:
        raise ValueError(NO_DEFINITION)
    if calculation != definition.calculation_type:
        raise ValueError(f"{NO_DEFINITION} with calculation type {given} (the active one is "
                         f"{definition.calculation_type})")  # fmt: skip
    cutoff_ms = _cutoff_ms(item.get("cutoff_date"))
    seed = item.get("seed")
    if not isinstance(seed, dict):
        raise ValueError("Seed is required: an object holding value, key_value_pairs or list")
    form = SEED_FORM[calculation]
    if set(seed) != {form}:
        raise ValueError(f"Seed of a {calculation} calculated attribute holds {form} only")
    base = {"attribute_name": item["attribute_name"], "calculation_type": calculation, "cutoff_ms": cutoff_ms}
    if form == "value":
        checked = CalculatedAttributeSeed(**base, value=_seed_value(calculation, seed["value"]))
    elif form == "list":
        checked = CalculatedAttributeSeed(**base, values=_seed_list(seed["list"]))
    else:
        checked = CalculatedAttributeSeed(**base, key_value_pairs=_seed_pairs(calculation, seed["key_value_pairs"]))
    problem = seed_problem(calculation, checked)  # the engine's own rules: what is accepted here, it can apply
    if problem is not None:
        raise ValueError(problem)
    return checked


def _cutoff_ms(value: Any) -> int:
    try:
        day = datetime.strptime(value, DAY_FORMAT) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise ValueError("Cutoff date must be a date as yyyy-MM-dd")
    return int(day.replace(tzinfo=timezone.utc).timestamp() * 1000)


def _number(value: Any) -> float | None:
    """A JSON number, or a string holding one (CA values are strings); None when it is neither."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value) if isinstance(value, (int, float, str)) else None
    except (ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


def as_text(value: Any) -> str:
    """How a seed's value is kept: CA values are strings; an integral number without `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bounded(text: str) -> str:
    """A seed's text becomes a CA value, kept and forwarded like a user attribute value: bounded the same way."""
    if len(text) > MAX_VALUE_CHARS:
        raise ValueError(f"Seed values are at most {MAX_VALUE_CHARS} characters")
    return text


def _seed_value(calculation: str, value: Any) -> str:
    if value is None or isinstance(value, (dict, list)) or value == "":
        raise ValueError("Seed value is required: a single value")
    if isinstance(value, bool):
        raise ValueError(NOT_NUMERIC if calculation in NUMERIC | TIMESTAMPS else "Seed value must be text or a number")
    number = _number(value)
    if calculation in NUMERIC and number is None:
        raise ValueError(NOT_NUMERIC)
    if calculation == "count" and (number is None or number < 0 or not number.is_integer()):
        raise ValueError("Seed value of a count must be a non-negative integer")
    if calculation in TIMESTAMPS:
        if number is None or not number.is_integer() or not 0 <= number <= INT64_MAX:
            raise ValueError("Seed value of a timestamp must be epoch milliseconds")
        return str(int(number))
    return _bounded(as_text(number) if calculation in NUMERIC and number is not None else as_text(value))


def _seed_list(values: Any) -> list[str]:
    if not isinstance(values, list):
        raise ValueError("Seed list must be an array of values")
    if len(values) > MAX_SEED_VALUES:
        raise ValueError(f"Seed list holds at most {MAX_SEED_VALUES} values")
    if any(isinstance(v, (bool, dict, list)) or v is None for v in values):
        raise ValueError("Seed list values must be strings or numbers")
    return list(dict.fromkeys(_bounded(as_text(v)) for v in values))


def _seed_pairs(calculation: str, pairs: Any) -> dict[str, float]:
    if not isinstance(pairs, dict) or not pairs:
        raise ValueError("Seed key_value_pairs must be a non-empty object")
    if calculation == "average":
        if set(pairs) != {"sum", "count"}:
            raise ValueError("Seed key_value_pairs of an average hold sum and count")
        total, count = _number(pairs["sum"]), _number(pairs["count"])
        if total is None:
            raise ValueError(NOT_NUMERIC)
        if count is None or count <= 0 or not count.is_integer():
            raise ValueError("Seed count must be a positive integer")
        return {"sum": total, "count": count}
    if len(pairs) > MAX_SEED_VALUES:
        raise ValueError(f"Seed key_value_pairs hold at most {MAX_SEED_VALUES} values")
    counts: dict[str, float] = {}
    for key, raw in pairs.items():
        count = _number(raw)
        if count is None or count <= 0 or not count.is_integer():
            raise ValueError(f"Seed count of {key!r} must be a positive integer")
        counts[_bounded(key)] = count
    return counts


# ---- shapes ------------------------------------------------------------------------------------------------------


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("must be a JSON object", path)
    return value


def _workspace_list(value: Any, path: str) -> list[Any]:
    """`{"workspace": [...]}`: the documented wrapper of seeds and user attributes."""
    wrapper = _object(value, path)
    if set(wrapper) != {"workspace"} or not isinstance(wrapper["workspace"], list):
        raise BadRequest('must be {"workspace": [...]}', path)
    return wrapper["workspace"]
