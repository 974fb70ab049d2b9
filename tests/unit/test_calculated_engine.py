"""The calculated-attribute engine against a plain recomputation (`calculated_oracle.py`), and its rules one by one."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, assume, event, given, settings, target
from hypothesis import strategies as st
from pydantic import ValidationError

from cdp_actors.calculated import engine
from cdp_actors.calculated.definition import CALCULATION_TYPES, Definition
from cdp_actors.calculated.engine import (
    DAY_MS,
    Calculation,
    CAState,
    Observed,
    decode_state,
    encode_state,
)
from cdp_actors.calculated.seed import seed_problem
from cdp_actors.schema.events import CalculatedAttributeSeed
from tests.unit.calculated_oracle import oracle_value

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
NUMERIC = {"count", "sum", "min", "max", "average", "unique_values_count"}

# ---- strategies ---------------------------------------------------------------------------------------------------

names = st.sampled_from(["A", "B"])
small_values = st.one_of(
    st.integers(-5, 20),
    st.integers(-500, 2000).map(lambda cents: cents / 100),
    st.integers(0, 9).map(str),
    st.sampled_from(["u", "v", "w", "2.5", "x1", "", "true"]),
    st.booleans(),
    st.none(),
)
wide_values = st.integers(0, 400).map(lambda n: f"v{n}")
conditions = st.sampled_from(
    [
        {"type": "string", "operator": "equals", "attribute_name": "y", "value": "u"},
        {"type": "string", "operator": "not_equals", "attribute_name": "y", "value": "u"},
        {"type": "string", "operator": "in_list", "attribute_name": "y", "values": ["u", "v", "1"]},
        {"type": "number", "operator": "greater_than", "attribute_name": "x", "value": "2"},
        {"type": "number", "operator": "between", "attribute_name": "price", "min_value": "0", "max_value": "10"},
        {"type": "string", "operator": "exists", "attribute_name": "y"},
        {"type": "string", "operator": "not_exists", "attribute_name": "x"},
        {"type": "string", "operator": "pattern", "attribute_name": "name", "value": "^[AB]"},
    ]
)


@st.composite
def definitions(draw: st.DrawFn) -> Definition:
    calculation = draw(st.sampled_from(CALCULATION_TYPES))
    kinds = ["event_attribute", "user_attribute"] if calculation in {"sum", "min", "max", "average"} else None
    point_type = draw(st.sampled_from(kinds or ["event", "event_attribute", "user_attribute"]))
    point: dict[str, Any] = {"type": point_type}
    if point_type != "user_attribute":
        event_type = draw(st.sampled_from(["custom_event", "screen_view", "commerce_event", None]))
        point["event_type"] = event_type
        if event_type == "custom_event" or draw(st.booleans()):
            point["event_name"] = draw(names)
        if event_type in ("custom_event", "commerce_event", None) and draw(st.booleans()):
            if event_type == "custom_event":
                point["custom_event_type"] = draw(st.sampled_from(["navigation", "other"]))
            else:
                point["custom_event_type"] = draw(st.sampled_from(["purchase", "Add_To_Cart", "click"]))
        if point_type == "event_attribute":
            category = "event_attribute"
            if event_type == "commerce_event":
                category = draw(st.sampled_from(["event_attribute", "product_attribute", "promotion_attribute"]))
            point["attribute_category"] = category
            pool = {"event_attribute": ["x", "y"], "product_attribute": ["price", "id", "quantity", "x"]}
            point["attribute_name"] = draw(st.sampled_from(pool.get(category, ["id", "name", "position"])))
            point["use_product_quantity"] = draw(st.booleans())
    else:
        point["attribute_name"] = draw(st.sampled_from(["x", "y"]))
    definition: dict[str, Any] = {
        "data_point": point,
        "calculation_type": calculation,
        "conditions": draw(st.one_of(st.just([]), st.lists(conditions, min_size=1, max_size=2))),
    }
    period = draw(st.sampled_from(["none", "since", "within_days", "within_days", "within_weeks"]))
    if period == "since":
        definition["time_period"] = {"type": "since", "date": _iso(T0 + draw(st.integers(-3, 3)) * DAY_MS // 2)}
    elif period.startswith("within"):
        unit = period.removeprefix("within_")
        definition["time_period"] = {"type": "within", "within": draw(st.integers(1, 3)), "within_unit": unit}
    if draw(st.booleans()):
        definition["seeding"] = {"cutoff_date": _iso(T0 + draw(st.integers(-4, 2)) * DAY_MS // 2)}
    try:
        return Definition.model_validate(definition)
    except ValidationError:
        assume(False)
        raise


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None).isoformat()


class Pools:
    """The strategies a batch is drawn from, built once (building strategies per draw dominates the run time)."""

    def __init__(self, values: st.SearchStrategy[Any], *, only_custom: bool = False) -> None:
        self.values = values
        self.names = st.just("A") if only_custom else names
        self.steps = st.integers(4, 14) if only_custom else st.integers(1, 12)
        self.batch_size = st.integers(1, 4) if only_custom else st.integers(0, 6)
        kinds = ["custom_event"] if only_custom else ["custom_event", "custom_event", "screen_view", "commerce_event"]
        self.kind = st.sampled_from(kinds)
        self.stamp = st.one_of(st.none(), st.integers(-2 * DAY_MS, DAY_MS // 4))  # mostly before the batch
        self.attributes = st.dictionaries(st.sampled_from(["x", "y", "price"]), values, min_size=int(only_custom))
        self.custom_type = st.sampled_from(["navigation", "other"])
        self.products = st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": values,
                    "name": names,
                    "price": st.one_of(st.integers(0, 30), st.integers(0, 3000).map(lambda c: c / 100)),
                    "quantity": st.integers(0, 4),
                    "custom_attributes": st.dictionaries(st.sampled_from(["x", "y"]), values, max_size=2),
                },
            ),
            max_size=3,
        )
        self.product_action = st.sampled_from(["purchase", "add_to_cart"])
        self.promotions = st.lists(
            st.fixed_dictionaries({}, optional={"id": values, "name": names, "position": st.sampled_from("12")}),
            max_size=2,
        )
        self.promotion_action = st.sampled_from(["view", "click"])
        self.user_attributes = st.dictionaries(
            st.sampled_from(["x", "y"]), st.one_of(values, st.lists(values, max_size=3)), max_size=2
        )


@st.composite
def events(draw: st.DrawFn, batch_ms: int, pools: Pools) -> dict[str, Any]:
    kind = draw(pools.kind)
    data: dict[str, Any] = {}
    offset = draw(pools.stamp)
    if offset is not None:  # a timestamp, mostly before the batch, sometimes after (clock skew)
        data["timestamp_unixtime_ms"] = batch_ms + offset
    attributes = draw(pools.attributes)
    if attributes:
        data["custom_attributes"] = attributes
    if kind == "custom_event":
        data["event_name"] = draw(pools.names)
        data["custom_event_type"] = draw(pools.custom_type)
    elif kind == "screen_view":
        data["screen_name"] = draw(names)
    else:
        if draw(st.booleans()):
            data["event_name"] = draw(names)
        if draw(st.integers(0, 3)) > 0:
            data["product_action"] = {"action": draw(pools.product_action), "products": draw(pools.products)}
        if draw(st.booleans()):
            data["promotion_action"] = {"action": draw(pools.promotion_action), "promotions": draw(pools.promotions)}
    return {"event_type": kind, "data": data}


steps = st.sampled_from(["batch", "batch", "batch", "batch", "seed", "age", "roundtrip"])
ticks = st.sampled_from([0, 1, 1000, DAY_MS // 3, DAY_MS // 2, DAY_MS, DAY_MS, 2 * DAY_MS, 3 * DAY_MS, -DAY_MS // 2])


@st.composite
def operations(draw: st.DrawFn, pools: Pools) -> list[tuple[str, Any]]:
    """Batches (their times mostly rising, sometimes not), seeds, `aged` calls and encode/decode round trips."""
    clock = T0 + draw(st.integers(0, DAY_MS))
    latest = clock
    ops: list[tuple[str, Any]] = []
    for _ in range(draw(pools.steps)):
        what = draw(steps)
        if what == "batch":
            clock += draw(ticks)
            latest = max(latest, clock)
            batch_events = [draw(events(clock, pools)) for _ in range(draw(pools.batch_size))]
            ops.append(("batch", Observed(batch_events, draw(pools.user_attributes), clock)))
        elif what == "seed":
            ops.append(("seed", draw(seeds())))
        elif what == "age":
            ops.append(("age", latest + draw(st.integers(0, 2 * DAY_MS))))
        else:
            ops.append(("roundtrip", None))
    return ops


@st.composite
def seeds(draw: st.DrawFn) -> dict[str, Any]:
    """A seed's parts for every calculation type; the test picks what its type takes."""
    return {
        "cutoff_ms": T0 + draw(st.integers(-4, 2)) * DAY_MS // 2,
        "value": draw(st.one_of(st.integers(-3, 50).map(str), st.sampled_from(["u", "B", "2.5"]))),
        "stamp": str(T0 - draw(st.integers(0, 10 * DAY_MS))),
        "average": {"sum": float(draw(st.integers(-50, 200))), "count": float(draw(st.integers(1, 9)))},
        "frequent": draw(st.dictionaries(st.sampled_from(["u", "v", "A", "7"]), st.integers(1, 5).map(float))),
        "values": draw(st.lists(st.sampled_from(["u", "v", "A", "7", "w"]), max_size=4)),
    }


def seed_for(definition: Definition, parts: dict[str, Any]) -> CalculatedAttributeSeed:
    kind = definition.calculation_type
    seed = CalculatedAttributeSeed(attribute_name="ca", calculation_type=kind, cutoff_ms=parts["cutoff_ms"])
    if kind in ("first_occurrence_timestamp", "last_occurrence_timestamp"):
        seed.value = parts["stamp"]
    elif kind in ("count", "sum", "min", "max", "first_occurrence", "last_occurrence"):
        seed.value = parts["value"] if kind in ("first_occurrence", "last_occurrence") else _numeric(parts["value"])
    elif kind == "average":
        seed.key_value_pairs = parts["average"]
    elif kind == "most_frequent":
        seed.key_value_pairs = parts["frequent"]
    else:
        seed.values = parts["values"]
    assert seed_problem(kind, seed) is None
    return seed


def _numeric(value: str) -> str:
    try:
        return str(int(float(value)))
    except ValueError:
        return "3"


# ---- the property -------------------------------------------------------------------------------------------------


def same_value(kind: str, got: str | None, expected: str | None) -> bool:
    if got is None or expected is None:
        return got == expected
    if kind in NUMERIC:  # sums folded per day and added up in order may differ in the last bits
        return math.isclose(float(got), float(expected), rel_tol=1e-9, abs_tol=1e-9)
    return got == expected


def run(definition: Definition, ops: list[tuple[str, Any]], nows: list[int]) -> None:
    calculation = Calculation(definition)
    state: CAState | None = None
    batches: list[Observed] = []
    seed: CalculatedAttributeSeed | None = None
    latest = 0
    for what, item in ops:
        if what == "batch":
            before = encode_state(state) if state is not None else None
            after = calculation.observe(state, item)
            if after is not state:  # a new object only when something changed (the shard writes it)
                assert (encode_state(after) if after is not None else None) != before
            state = after
            batches.append(item)
            latest = max(latest, item.batch_ms)
        elif what == "seed":
            seed = seed_for(definition, item)
            state = calculation.seeded(state, seed)
        elif what == "age" and state is not None:
            latest = max(latest, item)
            aged = calculation.aged(state, item)
            assert calculation.value(aged, item) == calculation.value(state, item)
            state = aged
        elif what == "roundtrip" and state is not None:
            state = decode_state(encode_state(state))
        if batches or seed is not None:  # the value now, as the shard reads it after each step
            expected = oracle_value(definition, batches, seed, latest, cap=engine.MAX_DISTINCT_VALUES)
            assert same_value(definition.calculation_type, calculation.value(state, latest), expected), (what, item)
    for offset in nows:
        now = latest + offset
        expected = oracle_value(definition, batches, seed, now, cap=engine.MAX_DISTINCT_VALUES)
        got = calculation.value(state, now)
        if state is not None and calculation.window_days is not None:
            event(f"window: {min(len(state.buckets), 3)} buckets")
        event(f"{definition.calculation_type}: {'no value' if got in (None, '0') else 'a value'}")
        assert same_value(definition.calculation_type, got, expected), (now, got, expected)
    if state is not None and calculation.window_days is not None:
        target(float(len(state.buckets)), label="buckets in a window")  # steer towards several days
        assert len(state.buckets) <= calculation.window_days
        change = calculation.next_change_ms(state)
        assert change is not None and change > 0
        if change > latest:  # nothing changes before it
            assert calculation.value(state, latest) == calculation.value(state, change - 1)
            if change > latest + 1:
                assert calculation.value(state, change - 1) == calculation.value(state, latest)
    elif state is not None:
        assert calculation.next_change_ms(state) is None


SMALL = Pools(small_values)
WIDE = Pools(st.one_of(wide_values, small_values))
CUSTOM = Pools(small_values, only_custom=True)
later = st.lists(st.integers(0, 30 * DAY_MS), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(definitions(), operations(SMALL), later)
def test_value_equals_the_recomputation(definition: Definition, ops: list[tuple[str, Any]], nows: list[int]) -> None:
    run(definition, ops, nows)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(definitions(), operations(WIDE), later, st.sampled_from([1, 2, 3, 100]))
def test_capped_values_equal_the_recomputation(
    definition: Definition, ops: list[tuple[str, Any]], nows: list[int], cap: int
) -> None:
    """Unique lists and most frequent past their cap (a small cap makes it reachable with few events)."""
    with patch.object(engine, "MAX_DISTINCT_VALUES", cap):
        run(definition, ops, nows)


@st.composite
def windowed_definitions(draw: st.DrawFn) -> Definition:
    """Every calculation type over custom events named A (or user attribute x), in a window of a few days: what
    the random definitions above reach less often (several days' buckets in one state)."""
    calculation = draw(st.sampled_from(CALCULATION_TYPES))
    if draw(st.booleans()):
        point = {"type": "user_attribute", "attribute_name": "x"}
    else:
        numeric = calculation in {"sum", "min", "max", "average"}
        point = {"type": "event_attribute" if numeric or draw(st.booleans()) else "event", "event_name": "A"}
        point |= {"event_type": "custom_event", "attribute_name": draw(st.sampled_from(["x", "y"]))}
    unit = draw(st.sampled_from(["days", "days", "weeks"]))
    within = draw(st.integers(2, 4) if unit == "days" else st.just(1))
    return Definition.model_validate(
        {"data_point": point, "calculation_type": calculation, "time_period": {"type": "within", "within": within,
         "within_unit": unit}}
    )  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(windowed_definitions(), operations(CUSTOM), later)
def test_windows_equal_the_recomputation(definition: Definition, ops: list[tuple[str, Any]], nows: list[int]) -> None:
    run(definition, ops, nows)


@st.composite
def siblings(draw: st.DrawFn) -> list[Definition]:
    """A definition and others of the same data point, conditions and time period but other calculation types:
    calculations that share what a batch contributes (`engine.BatchView`)."""
    first = draw(definitions())
    numeric_ok = first.data_point.type in ("event_attribute", "user_attribute")
    kinds = [k for k in CALCULATION_TYPES if numeric_ok or k not in ("sum", "min", "max", "average")]
    fields = first.model_dump(exclude_none=True)
    others = [
        Definition.model_validate({**fields, "calculation_type": kind})
        for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=4))
    ]
    return [first, *others]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(siblings(), definitions(), operations(SMALL), later)
def test_calculations_folding_the_same_batches_each_equal_the_recomputation(
    related: list[Definition], other: Definition, ops: list[tuple[str, Any]], nows: list[int]
) -> None:
    """The shard folds each batch into every concerned calculation in turn; those reading the same data point share
    the batch's contributions. Each value still equals its own recomputation."""
    definitions_ = [*related, other]
    calculations = [Calculation(definition) for definition in definitions_]
    states: list[CAState | None] = [None] * len(calculations)
    batches = [item for what, item in ops if what == "batch"]
    for batch in batches:
        for n, calculation in enumerate(calculations):
            states[n] = calculation.observe(states[n], batch)
    latest = max((batch.batch_ms for batch in batches), default=T0)
    for definition, calculation, state in zip(definitions_, calculations, states, strict=True):
        for now in (latest, *(latest + offset for offset in nows)):
            expected = oracle_value(definition, batches, None, now, cap=engine.MAX_DISTINCT_VALUES)
            got = calculation.value(state, now)
            assert same_value(definition.calculation_type, got, expected), (definition.calculation_type, now)


# ---- the rules, one example each ----------------------------------------------------------------------------------


def definition(**fields: Any) -> Definition:
    fields.setdefault("data_point", {"type": "event", "event_type": "custom_event", "event_name": "Play"})
    return Definition.model_validate(fields)


def custom(name: str = "Play", at: int | None = None, kind: str = "navigation", **attributes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"event_name": name, "custom_event_type": kind, "custom_attributes": attributes}
    if at is not None:
        data["timestamp_unixtime_ms"] = at
    return {"event_type": "custom_event", "data": data}


def purchase(*products: dict[str, Any], action: str = "purchase") -> dict[str, Any]:
    return {"event_type": "commerce_event", "data": {"product_action": {"action": action, "products": list(products)}}}


def fold(calculation: Calculation, *batches: Observed) -> CAState | None:
    state = None
    for batch in batches:
        state = calculation.observe(state, batch)
    return state


def test_a_batch_that_concerns_no_ca_returns_the_same_state() -> None:
    calculation = Calculation(definition(calculation_type="count"))
    assert calculation.observe(None, Observed([custom("Other")], {}, T0)) is None
    state = calculation.observe(None, Observed([custom()], {}, T0))
    assert state is not None
    assert calculation.observe(state, Observed([custom("Other")], {"x": 1}, T0 + 1)) is state
    maximum = Calculation(
        definition(
            calculation_type="max",
            data_point={
                "type": "event_attribute",
                "event_type": "custom_event",
                "event_name": "Play",
                "attribute_name": "x",
            },
        )
    )
    high = maximum.observe(None, Observed([custom(x=9)], {}, T0))
    assert maximum.observe(high, Observed([custom(x=3)], {}, T0)) is high  # matched, but changed nothing


def test_count_and_windows_by_utc_day() -> None:
    calculation = Calculation(
        definition(calculation_type="count", time_period={"type": "within", "within": 2, "within_unit": "days"})
    )
    day = T0 // DAY_MS * DAY_MS
    state = fold(calculation, Observed([custom(at=day - 1), custom(at=day + 5)], {}, day + 10))
    assert state is not None
    assert calculation.value(state, day + 10) == "2"
    assert calculation.next_change_ms(state) == day + DAY_MS  # the bucket of the day before leaves at midnight
    assert calculation.value(state, day + DAY_MS - 1) == "2"
    assert calculation.value(state, day + DAY_MS) == "1"
    assert calculation.value(state, day + 2 * DAY_MS) == "0"
    aged = calculation.aged(state, day + DAY_MS)
    assert aged is not None and len(aged.buckets) == 1
    assert calculation.aged(state, day + 2 * DAY_MS) is None


def test_commerce_sum_average_and_quantity() -> None:
    point = {
        "type": "event_attribute",
        "event_type": "commerce_event",
        "custom_event_type": "purchase",
        "attribute_name": "price",
        "attribute_category": "product_attribute",
        "use_product_quantity": True,
    }
    batch = Observed([purchase({"price": 10, "quantity": 3}, {"price": "2", "quantity": 1}, {"price": "n/a"})], {}, T0)
    average = Calculation(definition(calculation_type="average", data_point=point))
    assert average.value(fold(average, batch), T0) == "8"  # (30 + 2) / 4
    total = Calculation(definition(calculation_type="sum", data_point=point))
    assert total.value(fold(total, batch), T0) == "12"  # sum does not multiply by quantity
    add_to_cart = Observed([purchase({"price": 10}, action="add_to_cart")], {}, T0)
    assert total.observe(None, add_to_cart) is None


def test_most_frequent_counts_quantity_for_text_and_ties_go_alphabetically() -> None:
    point = {
        "type": "event_attribute",
        "event_type": "commerce_event",
        "attribute_name": "name",
        "attribute_category": "product_attribute",
        "use_product_quantity": True,
    }
    calculation = Calculation(definition(calculation_type="most_frequent", data_point=point))
    batch = Observed(
        [purchase({"name": "shoe", "quantity": 3}, {"name": "hat"}, {"name": "hat"}, {"name": "cap", "quantity": 3})],
        {},
        T0,
    )
    assert calculation.value(fold(calculation, batch), T0) == "cap"  # cap 3, shoe 3, hat 2


def test_first_and_last_value_are_the_first_and_last_product() -> None:
    point = {
        "type": "event_attribute",
        "event_type": "commerce_event",
        "attribute_name": "id",
        "attribute_category": "product_attribute",
    }
    batch = Observed([purchase({"id": "p1"}, {"id": "p2"}, {"id": "p3"})], {}, T0)
    first = Calculation(definition(calculation_type="first_occurrence", data_point=point))
    last = Calculation(definition(calculation_type="last_occurrence", data_point=point))
    assert first.value(fold(first, batch), T0) == "p1"
    assert last.value(fold(last, batch), T0) == "p3"
    stamp = Calculation(definition(calculation_type="last_occurrence_timestamp", data_point=point))
    assert stamp.value(fold(stamp, batch), T0 + DAY_MS) == "2023-11-14T22:13:20.000Z"  # the batch's time


def test_unique_list_is_sorted_quoted_and_capped_at_100() -> None:
    point = {"type": "event_attribute", "event_type": "custom_event", "event_name": "Play", "attribute_name": "x"}
    calculation = Calculation(definition(calculation_type="unique_list", data_point=point))
    state = fold(calculation, Observed([custom(x="b"), custom(x='say "hi"'), custom(x=2.0), custom(x="b")], {}, T0))
    assert calculation.value(state, T0) == '"2","b","say \\"hi\\""'
    many = Observed([custom(x=f"v{n:03d}") for n in range(150)], {}, T0)
    state = fold(calculation, many)
    assert state is not None
    value = calculation.value(state, T0)
    assert value is not None and value.count(",") == 99 and '"v099"' in value and '"v100"' not in value
    counter = Calculation(definition(calculation_type="unique_values_count", data_point=point))
    assert counter.value(fold(counter, many), T0) == "100"


def test_seeds_combine_with_live_values() -> None:
    point = {"type": "event_attribute", "event_type": "custom_event", "event_name": "Play", "attribute_name": "x"}
    cutoff = {"cutoff_date": "2023-11-14T00:00:00"}
    cutoff_ms = T0 // DAY_MS * DAY_MS
    total = Calculation(definition(calculation_type="sum", data_point=point, seeding=cutoff))
    state = fold(total, Observed([custom(x=5, at=cutoff_ms - 1), custom(x=2)], {}, T0))  # the first is the seed's
    seed = CalculatedAttributeSeed(attribute_name="ca", calculation_type="sum", cutoff_ms=cutoff_ms, value="100")
    assert total.value(total.seeded(state, seed), T0) == "102"
    replaced = total.seeded(total.seeded(state, seed), CalculatedAttributeSeed(
        attribute_name="ca", calculation_type="sum", cutoff_ms=cutoff_ms, value="1"
    ))  # fmt: skip
    assert total.value(replaced, T0) == "3"
    average = Calculation(definition(calculation_type="average", data_point=point, seeding=cutoff))
    seed = CalculatedAttributeSeed(
        attribute_name="ca", calculation_type="average", cutoff_ms=cutoff_ms, key_value_pairs={"sum": 10, "count": 2}
    )
    assert average.value(average.seeded(fold(average, Observed([custom(x=8)], {}, T0)), seed), T0) == "6"
    first = Calculation(definition(calculation_type="first_occurrence", data_point=point, seeding=cutoff))
    seed = CalculatedAttributeSeed(
        attribute_name="ca", calculation_type="first_occurrence", cutoff_ms=cutoff_ms, value="old"
    )
    assert first.value(first.seeded(fold(first, Observed([custom(x="new")], {}, T0)), seed), T0) == "old"


def test_since_ignores_earlier_events_and_user_attributes_count_per_batch() -> None:
    calculation = Calculation(
        definition(calculation_type="count", time_period={"type": "since", "date": "2023-11-14T22:00:00Z"})
    )
    state = fold(calculation, Observed([custom(at=T0 - DAY_MS), custom(at=T0 - 1)], {}, T0))
    assert calculation.value(state, T0) == "1"
    plan = Calculation(
        definition(calculation_type="last_occurrence", data_point={"type": "user_attribute", "attribute_name": "plan"})
    )
    state = fold(plan, Observed([], {"plan": "gold"}, T0), Observed([], {"other": 1}, T0 + 1))
    assert plan.value(state, T0 + 2) == "gold"


def test_values_are_strings_as_mparticle_writes_them() -> None:
    assert engine.number_text(3.0) == "3"
    assert engine.number_text(0.1 + 0.2) == "0.3"
    assert engine.number_text(-0.0) == "0"
    assert engine.timestamp_text(T0 + 5) == "2023-11-14T22:13:20.005Z"
    assert Calculation(definition(calculation_type="count")).value(None, T0) == "0"
    assert Calculation(definition(calculation_type="first_occurrence_timestamp")).value(None, T0) is None


@pytest.mark.parametrize("kind", CALCULATION_TYPES)
def test_state_round_trips_through_msgpack(kind: str) -> None:
    point = {"type": "event_attribute", "event_type": "custom_event", "event_name": "Play", "attribute_name": "x"}
    calculation = Calculation(definition(calculation_type=kind, data_point=point))
    state = fold(calculation, Observed([custom(x=n % 3) for n in range(5)], {}, T0))
    assert state is not None
    assert decode_state(encode_state(state)) == state
    assert len(encode_state(state)) < 200
