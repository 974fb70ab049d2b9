"""A condition compiled once (`compiled_condition`: operator chosen, operands parsed) answers as `matches` does for
every type, operator, operand and value, the odd ones included (operands that do not parse, missing values)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_actors.calculated.conditions import MISSING, compiled_attribute_test, compiled_condition, matches
from cdp_actors.calculated.definition import OPERATORS_BY_TYPE, Condition

OPERANDS = st.one_of(
    st.none(),
    st.sampled_from(["", "0", "2", "2.5", "-1", "1e3", "abc", "/p/1", "true", "FALSE", "nan", "inf", "a.c", "^/p"]),
    st.sampled_from(["2020-01-01T00:00:00", "2026-12-01T10:00:00Z", "1764000000000", "2026-13-01"]),
    st.integers(-10, 10).map(str),
)
VALUES = st.one_of(
    st.just(MISSING),
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.floats(allow_nan=True, allow_infinity=True),
    OPERANDS,
    st.lists(st.sampled_from(["", "a"]), max_size=2),
)


@st.composite
def conditions(draw: Any) -> Condition:
    kind = draw(st.sampled_from(sorted(OPERATORS_BY_TYPE)))
    operator = draw(st.sampled_from(sorted(OPERATORS_BY_TYPE[kind])))
    values = draw(st.one_of(st.none(), st.lists(OPERANDS.filter(lambda v: v is not None), max_size=3)))
    # built without validation: the compiled form must agree even on what validation would refuse
    return Condition.model_construct(
        type=kind,
        operator=operator,
        attribute_name="a",
        value=draw(OPERANDS),
        values=values,
        min_value=draw(OPERANDS),
        max_value=draw(OPERANDS),
    )


@settings(max_examples=400, deadline=None)
@given(condition=conditions(), data=st.data())
def test_a_compiled_condition_answers_as_matches(condition: Condition, data: st.DataObject) -> None:
    operands = [condition.value, condition.min_value, condition.max_value, *(condition.values or [])]
    at_the_edges = [*operands, *(float(operand) for operand in operands if _number(operand))]  # equal to an operand
    values = [*at_the_edges, *data.draw(st.lists(VALUES, min_size=1, max_size=4))]
    test = compiled_condition(condition)
    attribute_test = compiled_attribute_test(condition)
    for value in values:
        assert test(value) == matches(condition, value), (condition, value)
        attributes = {} if value is MISSING else {"a": value}
        assert attribute_test(attributes) == matches(condition, attributes.get("a", MISSING))


def _number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
