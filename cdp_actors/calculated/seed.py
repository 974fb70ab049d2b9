"""The CA Seeding API's seeds (https://docs.mparticle.com/developers/apis/calculated-attributes-seeding/) as the
engine's buckets: what a user did before the seed's cutoff, to combine with what the platform computes after it.

A seed carries, by calculation type: `value` (count, sum, min, max, first/last occurrence, first/last occurrence
timestamp as epoch milliseconds), `key_value_pairs` (average: `sum` and `count`; most frequent: value -> count),
`values` (unique list, unique values count). `seed_problem` says what is wrong with one, in the documented words
("Seed value must be numeric"); `seed_fields` turns a good one into the fields of the engine's bucket (a bad part
contributes nothing).
"""

from __future__ import annotations

from typing import Any

from cdp_actors.calculated.conditions import as_number
from cdp_actors.schema.events import CalculatedAttributeSeed

VALUE_SEEDS = frozenset(
    {
        "count",
        "sum",
        "min",
        "max",
        "first_occurrence",
        "last_occurrence",
        "first_occurrence_timestamp",
        "last_occurrence_timestamp",
    }
)
NUMERIC_VALUE_SEEDS = frozenset(
    {"count", "sum", "min", "max", "first_occurrence_timestamp", "last_occurrence_timestamp"}
)
PAIR_SEEDS = frozenset({"average", "most_frequent"})
LIST_SEEDS = frozenset({"unique_list", "unique_values_count"})


def seed_problem(calculation_type: str, seed: CalculatedAttributeSeed) -> str | None:
    """Why `seed` cannot seed a CA of `calculation_type`, or None."""
    if calculation_type in VALUE_SEEDS:
        if seed.value is None:
            return "Seed value is required"
        if calculation_type in NUMERIC_VALUE_SEEDS and as_number(seed.value) is None:
            return "Seed value must be numeric"
        if calculation_type == "count" and not float(seed.value).is_integer():
            return "Seed value must be an integer"
        return None
    if calculation_type in PAIR_SEEDS:
        pairs = seed.key_value_pairs
        if pairs is None:
            return "Seed key_value_pairs are required"
        if calculation_type == "average":
            count = pairs.get("count")
            if set(pairs) != {"sum", "count"}:
                return "Seed key_value_pairs must be sum and count"
            if count is None or count <= 0 or not float(count).is_integer():
                return "Seed count must be a positive integer"
        elif any(count < 0 for count in pairs.values()):
            return "Seed counts must not be negative"
        return None
    if calculation_type in LIST_SEEDS:
        return None if seed.values is not None else "Seed list is required"
    return f"Unknown calculation type {calculation_type}"


def seed_fields(calculation_type: str, seed: CalculatedAttributeSeed, cap: int) -> dict[str, Any]:
    """The seed as the fields of a bucket (`engine.Bucket`). It precedes every live contribution: first/last values
    stand at `cutoff_ms - 1`, listed values arrive before any live one (negative arrival numbers); at most `cap`
    distinct values are kept."""
    number = as_number(seed.value) if seed.value is not None else None
    kind = calculation_type
    if kind == "count" and number is not None:
        return {"count": number}
    if kind == "sum" and number is not None:
        return {"total": number}
    if kind in ("min", "max") and number is not None:
        return {"extreme": number}
    if kind in ("first_occurrence", "last_occurrence") and seed.value is not None:
        return {"at_ms": seed.cutoff_ms - 1, "text": seed.value}
    if kind in ("first_occurrence_timestamp", "last_occurrence_timestamp") and number is not None:
        return {"at_ms": int(number)}
    if kind == "average" and seed.key_value_pairs:
        total, count = seed.key_value_pairs.get("sum"), seed.key_value_pairs.get("count")
        if total is not None and count is not None and count > 0:
            return {"total": float(total), "count": float(count)}
    if kind in ("unique_list", "unique_values_count") and seed.values:
        distinct = list(dict.fromkeys(seed.values))[:cap]
        return {"values": {text: (n - len(distinct), 1.0) for n, text in enumerate(distinct)}}
    if kind == "most_frequent" and seed.key_value_pairs:
        pairs = [(text, count) for text, count in seed.key_value_pairs.items() if count > 0][:cap]
        return {"values": {text: (n - len(pairs), float(count)) for n, (text, count) in enumerate(pairs)}}
    return {}
