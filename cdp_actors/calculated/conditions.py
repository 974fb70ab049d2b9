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
from datetime import datetime, timezone
from functools import lru_cache
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
