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

from datetime import datetime
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataPoint(_Strict):
    type: Literal["event", "event_attribute", "user_attribute"]
    event_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    attribute_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    event_type: str | None = None
    """The Events API `event_type` (`custom_event`, `commerce_event`, `screen_view`, ...)."""
    custom_event_type: str | None = None
    """For custom events their type (`navigation`, ...); for commerce events the product action (`purchase`)."""
    attribute_category: Literal["event_attribute", "product_attribute", "promotion_attribute"] = "event_attribute"
    use_product_quantity: bool = False


class Condition(_Strict):
    """A test on one attribute of the event (or, in audience criteria, of the user)."""

    type: ConditionType
    operator: Operator
    attribute_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    value: str | None = Field(default=None, max_length=4096)
    values: list[str] | None = Field(default=None, max_length=MAX_LIST_VALUES)
    min_value: str | None = None
    max_value: str | None = None


class TimePeriod(_Strict):
    type: Literal["since", "within"]
    date: datetime | None = None
    within: int | None = Field(default=None, gt=0)
    within_unit: Literal["days", "weeks"] | None = None


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
