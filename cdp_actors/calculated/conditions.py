"""Condition operators over one attribute value: what CA conditions and audience criteria test.

A condition names an attribute; a missing attribute meets only `not_exists` (the reference: "if it is missing
the condition is not met"). Values are compared as the condition's type says: strings as written (case
sensitive), numbers as floats (a value that is not a number meets no numeric operator), booleans from
`true`/`false` in any case, dates as instants (ISO 8601, or epoch milliseconds). `pattern` is a regular
expression searched in the value; its length is bounded when the definition is validated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from functools import lru_cache
from operator import eq, ge, gt, le, lt, ne
from typing import Any

from cdp_actors.calculated.definition import Condition

MISSING = object()
"""The value of an attribute that is not there (None is a value: an attribute set to null)."""


def matches(condition: Condition, value: Any) -> bool:
    """Whether `value` (the named attribute's value, or `MISSING`) meets `condition`."""
    operator = condition.operator
    if operator == "exists":
        return value is not MISSING and value is not None
    if operator == "not_exists":
        return value is MISSING or value is None
    if value is MISSING or value is None:
        return False
    if operator == "empty":
        return value == "" or value == []
    test = _TESTS.get(condition.type)
    return bool(test and test(condition, value))


def attribute_matches(condition: Condition, attributes: dict[str, Any]) -> bool:
    """Whether the attribute `condition` names, looked up in `attributes`, meets it."""
    return matches(condition, attributes.get(condition.attribute_name or "", MISSING))


def as_text(value: Any) -> str:
    """An attribute value as text: booleans as `true`/`false`, whole floats without `.0`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


TEXT_NUMBERS_KEPT = 4096
"""Texts whose number `as_number` remembers: a condition's operand and the values that recur (product ids, pages)
parse once, not per event (a failed parse raises, which costs more than the look-up); at most 4,096 texts of at
most 4,096 characters (values are bounded at that), so 16 MB at the very worst."""


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):  # a tuple: `int | float` would build a union on each call
        return float(value) if math.isfinite(value) else None
    return _text_number(value if isinstance(value, str) else str(value))


@lru_cache(maxsize=TEXT_NUMBERS_KEPT)
def _text_number(text: str) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def as_boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return {"true": True, "false": False}.get(text)


def as_instant_ms(value: Any) -> int | None:
    """A date as epoch milliseconds: a number is taken as milliseconds, text as ISO 8601 (UTC when unzoned)."""
    number = as_number(value)
    if number is not None:
        return int(number)
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


@lru_cache(maxsize=1024)
def compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _string(condition: Condition, value: Any) -> bool:
    text = as_text(value)
    match condition.operator:
        case "equals":
            return text == condition.value
        case "not_equals":
            return text != condition.value
        case "in_list":
            return text in (condition.values or ())
        case "contains":
            return (condition.value or "") in text
        case "not_contains":
            return (condition.value or "") not in text
        case "pattern":
            return compiled(condition.value or "").search(text) is not None
    return False


def _number(condition: Condition, value: Any) -> bool:
    number = as_number(value)
    if number is None:
        return False
    match condition.operator:
        case "in_list":
            return number in {as_number(v) for v in condition.values or ()}
        case "between":
            low, high = as_number(condition.min_value), as_number(condition.max_value)
            return low is not None and high is not None and low <= number <= high
    given = as_number(condition.value)
    if given is None:
        return False
    match condition.operator:
        case "equals":
            return number == given
        case "not_equals":
            return number != given
        case "greater_than":
            return number > given
        case "greater_or_equal":
            return number >= given
        case "less_than":
            return number < given
        case "less_than_or_equal":
            return number <= given
    return False


def _boolean(condition: Condition, value: Any) -> bool:
    given = as_boolean(value)
    return condition.operator == "equals" and given is not None and given == as_boolean(condition.value)


def _date(condition: Condition, value: Any) -> bool:
    instant = as_instant_ms(value)
    if instant is None:
        return False
    if condition.operator == "between_dates":
        low, high = as_instant_ms(condition.min_value), as_instant_ms(condition.max_value)
        return low is not None and high is not None and low <= instant <= high
    given = as_instant_ms(condition.value)
    if given is None:
        return False
    match condition.operator:
        case "equals":
            return instant == given
        case "before":
            return instant < given
        case "after":
            return instant > given
    return False


_TESTS = {"string": _string, "number": _number, "boolean": _boolean, "date": _date}


# ---- compiled once per definition: `matches` as a function of the value alone -----------------------------------

ValueTest = Callable[[Any], bool]


def compiled_condition(condition: Condition) -> ValueTest:
    """`lambda value: matches(condition, value)`, with the operator chosen and the operands parsed once: what the
    shard evaluates on every batch of a user (audience leaves, CA conditions)."""
    operator = condition.operator
    if operator == "exists":
        return lambda value: value is not MISSING and value is not None
    if operator == "not_exists":
        return lambda value: value is MISSING or value is None
    if operator == "empty":
        return lambda value: value is not MISSING and value is not None and (value == "" or value == [])
    build = _COMPILERS.get(condition.type)
    test = build(condition) if build is not None else None
    if test is None:
        return _never
    return lambda value: value is not MISSING and value is not None and test(value)


def compiled_attribute_test(condition: Condition) -> Callable[[dict[str, Any]], bool]:
    """`lambda attributes: attribute_matches(condition, attributes)`, compiled."""
    name, test = condition.attribute_name or "", compiled_condition(condition)
    return lambda attributes: test(attributes.get(name, MISSING))


def _never(_value: Any) -> bool:
    return False


def _compiled_string(condition: Condition) -> ValueTest | None:
    given = condition.value
    match condition.operator:
        case "equals":
            return lambda value: as_text(value) == given
        case "not_equals":
            return lambda value: as_text(value) != given
        case "in_list":
            listed = frozenset(condition.values or ())
            return lambda value: as_text(value) in listed
        case "contains":
            part = given or ""
            return lambda value: part in as_text(value)
        case "not_contains":
            part = given or ""
            return lambda value: part not in as_text(value)
        case "pattern":
            try:
                search = compiled(given or "").search
            except re.error:  # refused when the definition is validated; as `matches`, fail when evaluated
                return lambda value: compiled(given or "").search(as_text(value)) is not None
            return lambda value: search(as_text(value)) is not None
    return None


_ORDERED: dict[str, Callable[[float, float], bool]] = {
    "equals": eq,
    "not_equals": ne,
    "greater_than": gt,
    "greater_or_equal": ge,
    "less_than": lt,
    "less_than_or_equal": le,
}


def _compiled_number(condition: Condition) -> ValueTest | None:
    kind = condition.operator
    if kind == "in_list":
        listed = {as_number(v) for v in condition.values or ()}
        return lambda value: (number := as_number(value)) is not None and number in listed
    if kind == "between":
        low, high = as_number(condition.min_value), as_number(condition.max_value)
        if low is None or high is None:
            return None
        return lambda value: (number := as_number(value)) is not None and low <= number <= high
    given, compare = as_number(condition.value), _ORDERED.get(kind)
    if given is None or compare is None:
        return None
    if kind == "greater_than":  # the common ones without the extra call
        return lambda value: (number := as_number(value)) is not None and number > given
    if kind == "less_than":
        return lambda value: (number := as_number(value)) is not None and number < given
    return lambda value: (number := as_number(value)) is not None and compare(number, given)


def _compiled_boolean(condition: Condition) -> ValueTest | None:
    given = as_boolean(condition.value)
    if condition.operator != "equals" or given is None:
        return None
    return lambda value: as_boolean(value) == given


def _compiled_date(condition: Condition) -> ValueTest | None:
    if condition.operator == "between_dates":
        low, high = as_instant_ms(condition.min_value), as_instant_ms(condition.max_value)
        if low is None or high is None:
            return None
        return lambda value: (instant := as_instant_ms(value)) is not None and low <= instant <= high
    given = as_instant_ms(condition.value)
    compare = {"equals": eq, "before": lt, "after": gt}.get(condition.operator)
    if given is None or compare is None:
        return None
    return lambda value: (instant := as_instant_ms(value)) is not None and compare(instant, given)


_COMPILERS: dict[str, Callable[[Condition], ValueTest | None]] = {
    "string": _compiled_string,
    "number": _compiled_number,
    "boolean": _compiled_boolean,
    "date": _compiled_date,
}
