"""A CA definition's validation: each refusal names the field at fault, with the message a client reads."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cdp_actors.calculated.definition import OPERATORS_BY_TYPE, Definition


def refusal(fields: dict[str, Any]) -> tuple[str, str]:
    """(path, message) of the first error, as the Platform API reports it: `conditions[0].operator`, pydantic's
    message without its "Value error, " prefix, a model validator's leading `.field: ` moved into the path."""
    with pytest.raises(ValidationError) as caught:
        Definition.model_validate(fields)
    first = caught.value.errors()[0]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    message = first["msg"].removeprefix("Value error, ")
    if message.startswith("."):
        below, _, message = message.partition(": ")
        path += below
    return path, message


def ca(**fields: Any) -> dict[str, Any]:
    fields.setdefault("data_point", {"type": "event", "event_type": "custom_event", "event_name": "Play"})
    fields.setdefault("calculation_type", "count")
    return fields


def condition(**fields: Any) -> dict[str, Any]:
    return ca(conditions=[{"attribute_name": "genre", **fields}])


def test_a_full_definition_and_both_spellings_of_the_data_point() -> None:
    point = {
        "type": "event_attribute",
        "event_name": "Purchase",
        "attribute_name": "Total Amount",
        "event_type": "commerce_event",
        "custom_event_type": "purchase",
        "attribute_category": "product_attribute",
        "use_product_quantity": True,
    }
    body = {
        "recipe_type": "event",
        "datapoint": point,
        "conditions": [
            {
                "type": "number",
                "operator": "equals",
                "attribute_name": "Checkout Step",
                "value": "22",
                "values": None,
                "min_value": None,
                "max_value": None,
            }
        ],  # fmt: skip
        "calculation_type": "sum",
        "time_period": {"type": "since", "date": "2019-10-01T00:00:00", "within": None, "within_unit": None},
        "seeding": {"cutoff_date": "2019-10-02T00:00:00"},
    }
    parsed = Definition.model_validate(body)
    assert parsed.data_point.attribute_category == "product_attribute"
    spelled = {key: value for key, value in body.items() if key != "datapoint"} | {"data_point": point}
    assert Definition.model_validate(spelled) == parsed
    assert "data_point" in parsed.model_dump()
    for kind, operators in OPERATORS_BY_TYPE.items():  # every listed operator is accepted with its operands
        for operator in operators:
            Definition.model_validate(condition(type=kind, operator=operator, **operands(kind, operator)))


def operands(kind: str, operator: str) -> dict[str, Any]:
    sample = {"string": "rock", "number": "3.5", "boolean": "true", "date": "2024-01-01T00:00:00Z"}[kind]
    if operator in ("exists", "not_exists", "empty"):
        return {}
    if operator == "in_list":
        return {"values": [sample, sample]}
    if operator in ("between", "between_dates"):
        return {"min_value": sample, "max_value": sample}
    return {"value": sample}


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        (
            condition(type="string", operator="greater_than", value="1"),
            "conditions[0].operator",
            "Operator 'greater_than' is not supported for type 'string' (supported: contains, empty, equals, exists, "
            "in_list, not_contains, not_equals, not_exists, pattern)",
        ),
        (
            condition(type="boolean", operator="in_list", values=["true"]),
            "conditions[0].operator",
            "Operator 'in_list' is not supported for type 'boolean' (supported: empty, equals, exists, not_exists)",
        ),
        (
            condition(type="string", operator="equals", value="a", values=["a"]),
            "conditions[0].values",
            "Condition values must be empty unless the operator is in_list",
        ),
        (
            condition(type="string", operator="in_list"),
            "conditions[0].values",
            "values is required for operator 'in_list'",
        ),
        (
            condition(type="string", operator="in_list", values=[]),
            "conditions[0].values",
            "values is required for operator 'in_list'",
        ),
        (
            condition(type="number", operator="between", value="3", min_value="1", max_value="5"),
            "conditions[0].value",
            "Condition value must be empty",
        ),
        (
            condition(type="number", operator="between", min_value="1"),
            "conditions[0].max_value",
            "max_value is required for operator 'between'",
        ),
        (
            condition(type="date", operator="between_dates", max_value="2024-01-01"),
            "conditions[0].min_value",
            "min_value is required for operator 'between_dates'",
        ),
        (
            condition(type="number", operator="equals", value="1", min_value="1"),
            "conditions[0].min_value",
            "min_value must be empty unless the operator is between or between_dates",
        ),
        (
            condition(type="string", operator="exists", value="x"),
            "conditions[0].value",
            "Condition value must be empty",
        ),
        (
            condition(type="string", operator="contains"),
            "conditions[0].value",
            "value is required for operator 'contains'",
        ),
        (
            condition(type="number", operator="greater_than", value="ten"),
            "conditions[0].value",
            "'ten' is not a number",
        ),
        (
            condition(type="number", operator="in_list", values=["1", "x"]),
            "conditions[0].values",
            "'x' is not a number",
        ),
        (
            condition(type="number", operator="between", min_value="1", max_value="NaN"),
            "conditions[0].max_value",
            "'NaN' is not a number",
        ),
        (
            condition(type="date", operator="before", value="next tuesday"),
            "conditions[0].value",
            "'next tuesday' is not a date (ISO 8601 or epoch milliseconds)",
        ),
        (
            condition(type="boolean", operator="equals", value="yes"),
            "conditions[0].value",
            "'yes' is not a boolean (true or false)",
        ),
        (
            condition(type="string", operator="pattern", value="(unclosed"),
            "conditions[0].value",
            "pattern is not a regular expression: missing ), unterminated subpattern at position 0",
        ),
        (
            condition(type="string", operator="pattern", value="a" * 257),
            "conditions[0].value",
            "pattern is longer than 256 characters",
        ),
        (
            ca(conditions=[{"type": "string", "operator": "exists"}]),
            "conditions[0].attribute_name",
            "attribute_name is required",
        ),
        (
            ca(data_point={"type": "event", "event_type": "custom_event"}),
            "data_point.event_name",
            "event_name is required for event_type custom_event",
        ),
        (
            ca(data_point={"type": "event_attribute", "event_type": "screen_view", "event_name": "Home"}),
            "data_point.attribute_name",
            "attribute_name is required for a data point of type event_attribute",
        ),
        (
            ca(data_point={"type": "user_attribute"}),
            "data_point.attribute_name",
            "attribute_name is required for a data point of type user_attribute",
        ),
        (
            ca(calculation_type="average"),
            "calculation_type",
            "calculation_type 'average' needs a numeric attribute: a data point of type event_attribute or "
            "user_attribute",
        ),
        (ca(time_period={"type": "all"}), "time_period.type", "Field 'time_period.type' = 'all' is not supported"),
        (ca(time_period={"type": "since"}), "time_period.date", "date is required for time_period.type 'since'"),
        (
            ca(time_period={"type": "within", "within_unit": "days"}),
            "time_period.within",
            "within is required for time_period.type 'within'",
        ),
        (
            ca(time_period={"type": "within", "within": 3}),
            "time_period.within_unit",
            "within_unit is required for time_period.type 'within'",
        ),
        (
            ca(time_period={"type": "within", "within": 58, "within_unit": "weeks"}),
            "time_period.within",
            "The window (406 days) can't exceed the retention period of 400 days",
        ),
        (
            ca(time_period={"type": "within", "within": 0, "within_unit": "days"}),
            "time_period.within",
            "Input should be greater than 0",
        ),
    ],
)
def test_refusals_name_the_field(fields: dict[str, Any], path: str, message: str) -> None:
    assert refusal(fields) == (path, message)


def test_limits_that_are_accepted() -> None:
    Definition.model_validate(ca(time_period={"type": "within", "within": 400, "within_unit": "days"}))
    Definition.model_validate(ca(time_period={"type": "within", "within": 57, "within_unit": "weeks"}))
    Definition.model_validate(condition(type="string", operator="pattern", value="a" * 256))
    Definition.model_validate(condition(type="date", operator="after", value="1700000000000"))
    Definition.model_validate(ca(data_point={"type": "event", "event_type": "screen_view"}))  # any screen view
    Definition.model_validate(
        ca(calculation_type="sum", data_point={"type": "user_attribute", "attribute_name": "ltv"})
    )
