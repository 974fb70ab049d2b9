"""A calculated attribute's definition, in the Platform API v2 shape (https://docs.mparticle.com/developers/apis/
platform/ , "Calculated attributes"; guide: https://docs.mparticle.com/guides/platform-guide/calculated-attributes/).

```json
{"recipe_type": "event",
 "data_point": {"type": "event_attribute", "event_name": "Purchase", "attribute_name": "Total Amount",
                "event_type": "commerce_event", "custom_event_type": "purchase",
                "attribute_category": "product_attribute", "use_product_quantity": true},
 "conditions": [{"type": "number", "operator": "equals", "attribute_name": "Checkout Step", "value": "22"}],
 "calculation_type": "sum",
 "time_period": {"type": "within", "within": 7, "within_unit": "days"},
 "seeding": {"cutoff_date": "2019-10-02T00:00:00"}}
```

The docs spell the data point `datapoint` in their examples and `data_point` in their tables: both are read,
`data_point` is written.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

CalculationType = Literal[
    "count",
    "sum",
    "min",
    "max",
    "average",
    "first_occurrence",
    "last_occurrence",
    "first_occurrence_timestamp",
    "last_occurrence_timestamp",
    "unique_list",
    "unique_values_count",
    "most_frequent",
]
CALCULATION_TYPES: tuple[str, ...] = CalculationType.__args__  # type: ignore[attr-defined]
ConditionType = Literal["string", "number", "boolean", "date"]
Operator = Literal[
    "exists",
    "not_exists",
    "empty",
    "equals",
    "not_equals",
    "in_list",
    "contains",
    "not_contains",
    "pattern",
    "greater_than",
    "greater_or_equal",
    "less_than",
    "less_than_or_equal",
    "between",
    "before",
    "after",
    "between_dates",
]
OPERATORS_BY_TYPE: dict[str, frozenset[str]] = {
    "string": frozenset(
        {"exists", "not_exists", "empty", "equals", "not_equals", "in_list", "contains", "not_contains", "pattern"}
    ),
    "number": frozenset(
        {
            "exists",
            "not_exists",
            "empty",
            "equals",
            "not_equals",
            "in_list",
            "greater_than",
            "greater_or_equal",
            "less_than",
            "less_than_or_equal",
            "between",
        }  # fmt: skip
    ),
    "boolean": frozenset({"exists", "not_exists", "empty", "equals"}),
    "date": frozenset({"exists", "not_exists", "empty", "equals", "before", "after", "between_dates"}),
}
"""Which operators each condition type takes (reference: the definition API's operator table)."""
MAX_CONDITIONS = 20
MAX_LIST_VALUES = 1000
MAX_NAME_CHARS = 256
MAX_PATTERN_CHARS = 256
"""A `pattern` is searched in every matching event's attribute: a bound on its length bounds its compile time."""
RETENTION_DAYS = 400
"""How far back a `within` window may reach: the event history the platform keeps (the reference: "The window
can't exceed the retention period")."""
RANGE_OPERATORS = frozenset({"between", "between_dates"})
LIST_OPERATORS = frozenset({"in_list"})
PRESENCE_OPERATORS = frozenset({"exists", "not_exists", "empty"})
NUMERIC_CALCULATIONS = frozenset({"sum", "min", "max", "average"})
ATTRIBUTE_DATA_POINTS = frozenset({"event_attribute", "user_attribute"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataPoint(_Strict):
    type: Literal["event", "event_attribute", "user_attribute"]
    event_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    attribute_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS, validate_default=True)
    event_type: str | None = None
    """The Events API `event_type` (`custom_event`, `commerce_event`, `screen_view`, ...)."""
    custom_event_type: str | None = None
    """For custom events their type (`navigation`, ...); for commerce events the product action (`purchase`)."""
    attribute_category: Literal["event_attribute", "product_attribute", "promotion_attribute"] = "event_attribute"
    use_product_quantity: bool = False

    @field_validator("attribute_name", mode="after")
    @classmethod
    def _attribute_named(cls, name: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("type") in ATTRIBUTE_DATA_POINTS and not name:
            raise ValueError(f"attribute_name is required for a data point of type {info.data['type']}")
        return name

    @model_validator(mode="after")
    def _event_named(self) -> DataPoint:
        if self.type != "user_attribute" and self.event_type == "custom_event" and not self.event_name:
            raise ValueError(".event_name: event_name is required for event_type custom_event")
        return self


class Condition(_Strict):
    """A test on one attribute of the event (or, in audience criteria, of the user)."""

    type: ConditionType
    operator: Operator
    attribute_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS, validate_default=True)
    value: str | None = Field(default=None, max_length=4096, validate_default=True)
    values: list[str] | None = Field(default=None, max_length=MAX_LIST_VALUES, validate_default=True)
    min_value: str | None = Field(default=None, validate_default=True)
    max_value: str | None = Field(default=None, validate_default=True)

    @field_validator("operator", mode="after")
    @classmethod
    def _operator_of_type(cls, operator: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")
        if kind is not None and operator not in OPERATORS_BY_TYPE[kind]:
            allowed = ", ".join(sorted(OPERATORS_BY_TYPE[kind]))
            raise ValueError(f"Operator '{operator}' is not supported for type '{kind}' (supported: {allowed})")
        return operator

    @field_validator("attribute_name", mode="after")
    @classmethod
    def _attribute_named(cls, name: str | None) -> str | None:
        if not name:
            raise ValueError("attribute_name is required")
        return name

    @field_validator("value", mode="after")
    @classmethod
    def _single_value(cls, value: str | None, info: ValidationInfo) -> str | None:
        operator = info.data.get("operator")
        if operator is None:  # refused already
            return value
        if operator in RANGE_OPERATORS or operator in LIST_OPERATORS or operator in PRESENCE_OPERATORS:
            if value is not None:
                raise ValueError("Condition value must be empty")
            return value
        if value is None:
            raise ValueError(f"value is required for operator '{operator}'")
        _check_operand(info.data["type"], operator, value)
        return value

    @field_validator("values", mode="after")
    @classmethod
    def _list_values(cls, values: list[str] | None, info: ValidationInfo) -> list[str] | None:
        operator = info.data.get("operator")
        if operator is None:
            return values
        if operator not in LIST_OPERATORS:
            if values is not None:
                raise ValueError("Condition values must be empty unless the operator is in_list")
            return values
        if not values:
            raise ValueError("values is required for operator 'in_list'")
        for item in values:
            _check_operand(info.data["type"], operator, item)
        return values

    @field_validator("min_value", "max_value", mode="after")
    @classmethod
    def _range_bound(cls, bound: str | None, info: ValidationInfo) -> str | None:
        operator = info.data.get("operator")
        if operator is None:
            return bound
        if operator not in RANGE_OPERATORS:
            if bound is not None:
                raise ValueError(f"{info.field_name} must be empty unless the operator is between or between_dates")
            return bound
        if bound is None:
            raise ValueError(f"{info.field_name} is required for operator '{operator}'")
        _check_operand(info.data["type"], operator, bound)
        return bound


class TimePeriod(_Strict):
    type: Literal["since", "within"]
    date: datetime | None = Field(default=None, validate_default=True)
    within: int | None = Field(default=None, gt=0, validate_default=True)
    within_unit: Literal["days", "weeks"] | None = Field(default=None, validate_default=True)

    @field_validator("type", mode="before")
    @classmethod
    def _not_all(cls, kind: Any) -> Any:
        if kind == "all":
            raise ValueError("Field 'time_period.type' = 'all' is not supported")
        return kind

    @field_validator("date", mode="after")
    @classmethod
    def _since_dated(cls, date: datetime | None, info: ValidationInfo) -> datetime | None:
        if info.data.get("type") == "since" and date is None:
            raise ValueError("date is required for time_period.type 'since'")
        return date

    @field_validator("within", mode="after")
    @classmethod
    def _within_given(cls, within: int | None, info: ValidationInfo) -> int | None:
        if info.data.get("type") == "within" and within is None:
            raise ValueError("within is required for time_period.type 'within'")
        return within

    @field_validator("within_unit", mode="after")
    @classmethod
    def _within_unit_given(cls, unit: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("type") == "within" and unit is None:
            raise ValueError("within_unit is required for time_period.type 'within'")
        return unit

    @model_validator(mode="after")
    def _within_retention(self) -> TimePeriod:
        if self.type == "within" and self.within is not None and self.within_unit is not None:
            days = self.window_days()
            if days is not None and days > RETENTION_DAYS:
                raise ValueError(
                    f".within: The window ({days} days) can't exceed the retention period of {RETENTION_DAYS} days"
                )
        return self

    def window_days(self) -> int | None:
        """The `within` window in days (weeks are 7 days), None for `since`."""
        if self.type != "within" or self.within is None:
            return None
        return self.within * (7 if self.within_unit == "weeks" else 1)


class Seeding(_Strict):
    cutoff_date: datetime | None = None


class Definition(_Strict):
    recipe_type: Literal["event"] = "event"
    data_point: DataPoint = Field(validation_alias=AliasChoices("data_point", "datapoint"))
    conditions: list[Condition] = Field(default=[], max_length=MAX_CONDITIONS)
    calculation_type: CalculationType
    time_period: TimePeriod | None = None
    """None: over all the data kept (since the CA's activation, and its backfill of the stored history)."""
    seeding: Seeding | None = None

    @field_validator("calculation_type", mode="after")
    @classmethod
    def _numeric_needs_attribute(cls, calculation: str, info: ValidationInfo) -> str:
        data_point = info.data.get("data_point")
        if calculation in NUMERIC_CALCULATIONS and data_point is not None and data_point.type == "event":
            raise ValueError(
                f"calculation_type '{calculation}' needs a numeric attribute: a data point of type "
                "event_attribute or user_attribute"
            )
        return calculation


def instant_ms(moment: datetime) -> int:
    """A definition's date as epoch milliseconds (unzoned dates are UTC, as the docs' examples are)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _check_operand(kind: str, operator: str, operand: str) -> None:
    """That a condition's operand reads as its type says (the same reading `conditions.py` applies to values)."""
    if kind == "number" and not _is_number(operand):
        raise ValueError(f"'{operand}' is not a number")
    if kind == "date" and not _is_date(operand):
        raise ValueError(f"'{operand}' is not a date (ISO 8601 or epoch milliseconds)")
    if kind == "boolean" and operand.strip().lower() not in ("true", "false"):
        raise ValueError(f"'{operand}' is not a boolean (true or false)")
    if operator == "pattern":
        if len(operand) > MAX_PATTERN_CHARS:
            raise ValueError(f"pattern is longer than {MAX_PATTERN_CHARS} characters")
        try:
            re.compile(operand)
        except re.error as error:
            raise ValueError(f"pattern is not a regular expression: {error}") from None


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text.strip()))
    except ValueError:
        return False


def _is_date(text: str) -> bool:
    if _is_number(text):
        return True
    try:
        datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
