"""Audience criteria: validation naming the node at fault, the workspace's reference checks, and evaluation
against an oracle written here from the issue's definition of the tree (not from the compiled closures)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cdp_actors.audiences.criteria import (
    MAX_DEPTH,
    MAX_NODES,
    PerformedEvent,
    check_audiences,
    evaluation_order,
    event_leaves,
    leaf_definition,
    parse_criteria,
    referenced_audiences,
    referenced_calculated_attributes,
)
from cdp_actors.audiences.evaluate import Criteria, Facts, facts_of
from cdp_actors.config import Audience, ConfigError, parse_workspace
from cdp_actors.errors import BadRequest
from cdp_actors.profiles.model import ConsentRecord, Profile, Stamped

DEMO = Path(__file__).resolve().parents[2] / "configs" / "workspace.yaml"


def string_test(name: str, operator: str, **values: Any) -> dict[str, Any]:
    return {"user_attribute": name, "type": "string", "operator": operator, **values}


BOOLEAN_YES = {"user_attribute": "vip", "type": "boolean", "operator": "equals", "value": "yes"}
EXISTS_A = {"type": "string", "operator": "exists", "attribute_name": "a"}


def nested_not(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"identity": "email"}
    for _ in range(levels - 1):
        node = {"not": node}
    return node


# ---- validation ----------------------------------------------------------------------------------------------

REFUSED = [
    (5, "criteria", "a criteria node needs one of the keys"),
    ({"foo": 1}, "criteria", "a criteria node needs one of the keys"),
    ({"all": []}, "criteria.all", "at least 1 item"),
    ({"not": {"any": [{"foo": 1}]}}, "criteria.not.any[0]", "a criteria node needs one of the keys"),
    ({"all": [{"any": [{"identity": "email"}, {"identity": "nope"}]}]}, "criteria.all[0].any[1].identity", "nope"),
    ({"identity": "email", "extra": 1}, "criteria.extra", "Extra inputs"),
    ({"all": [string_test("plan", "bogus", value="x")]}, "criteria.all[0].operator", "Input should be"),
    (
        {"not": string_test("plan", "greater_than", value="1")},
        "criteria.not.operator",
        "is not supported for type 'string'",
    ),
    ({"all": [{"user_attribute": "plan", "type": "text", "operator": "equals"}]}, "criteria.all[0].type", ""),
    (string_test("plan", "exists", value="x"), "criteria.value", "Condition value must be empty"),
    (string_test("plan", "equals"), "criteria.value", "value is required for operator 'equals'"),
    (
        string_test("plan", "equals", value="a", values=["a"]),
        "criteria.values",
        "Condition values must be empty unless",
    ),
    (string_test("plan", "in_list"), "criteria.values", "values is required for operator 'in_list'"),
    (string_test("plan", "in_list", values=[]), "criteria.values", "values is required for operator 'in_list'"),
    (string_test("plan", "in_list", values=["a"], value="a"), "criteria.value", "Condition value must be empty"),
    (string_test("plan", "pattern", value="(unclosed"), "criteria.value", "not a regular expression"),
    (string_test("plan", "pattern", value="a" * 257), "criteria.value", "pattern is longer than 256 characters"),
    (
        {"calculated_attribute": "ltv", "type": "number", "operator": "between", "min_value": "1"},
        "criteria.max_value",
        "max_value is required for operator 'between'",
    ),
    (
        {"calculated_attribute": "ltv", "type": "number", "operator": "between", "min_value": "1", "max_value": "x"},
        "criteria.max_value",
        "'x' is not a number",
    ),
    (
        {"user_attribute": "n", "type": "number", "operator": "in_list", "values": ["1", "two"]},
        "criteria.values",
        "'two' is not a number",
    ),
    (
        {"user_attribute": "vip", "type": "boolean", "operator": "equals", "value": "yes"},
        "criteria.value",
        "'yes' is not a boolean (true or false)",
    ),
    ({"user_attribute": "vip", "type": "boolean", "operator": "contains", "value": "t"}, "criteria.operator", ""),
    (
        {"user_attribute": "d", "type": "date", "operator": "before", "value": "soon"},
        "criteria.value",
        "'soon' is not a date",
    ),
    ({"user_attribute": "d", "type": "date", "operator": "greater_than", "value": "1"}, "criteria.operator", ""),
    ({"user_attribute": "", "type": "string", "operator": "exists"}, "criteria.user_attribute", "at least 1"),
    ({"audience": 0}, "criteria.audience", "greater than 0"),
    ({"gdpr_consented": ""}, "criteria.gdpr_consented", "at least 1"),
    ({"ccpa_data_sale_opt_out": "maybe"}, "criteria.ccpa_data_sale_opt_out", "valid boolean"),
    ({"event": {"event_name": "Buy"}}, "criteria.within_days", "Field required"),
    ({"event": {"event_name": "Buy"}, "within_days": 0}, "criteria.within_days", "greater than 0"),
    ({"event": {"event_name": "Buy"}, "within_days": 401}, "criteria.within_days", "less than or equal to 400"),
    ({"event": {"event_type": "bogus"}, "within_days": 1}, "criteria.event.event_type", "unknown event type"),
    (
        {"event": {"event_name": "Buy"}, "count": {"operator": "more", "value": 1}, "within_days": 1},
        "criteria.count.operator",
        "at_least",
    ),
    ({"event": {"event_name": "Buy"}, "count": {"value": -1}, "within_days": 1}, "criteria.count.value", "0"),
    (
        {"event": {"event_name": "B", "conditions": [{"type": "string", "operator": "exists"}]}, "within_days": 1},
        "criteria.event.conditions[0].attribute_name",
        "attribute_name is required",
    ),
    (
        {
            "all": [
                {"identity": "email"},
                {
                    "event": {
                        "event_name": "Buy",
                        "conditions": [{"type": "number", "operator": "pattern", "attribute_name": "a", "value": "1"}],
                    },
                    "within_days": 7,
                },
            ]
        },
        "criteria.all[1].event.conditions[0].operator",
        "Operator 'pattern' is not supported for type 'number'",
    ),
    (
        {
            "event": {
                "event_name": "B",
                "conditions": [{"type": "string", "operator": "exists", "attribute_name": "a"}] * 21,
            },
            "within_days": 1,
        },  # fmt: skip
        "criteria.event.conditions",
        "at most 20 conditions",
    ),
    (nested_not(MAX_DEPTH + 1), "criteria" + ".not" * MAX_DEPTH, f"at most {MAX_DEPTH} levels"),
    ({"any": [{"identity": "email"}] * MAX_NODES}, "criteria", f"at most {MAX_NODES} nodes"),
]


@pytest.mark.parametrize(("data", "path", "message"), REFUSED)
def test_a_refusal_names_the_node_and_field(data: Any, path: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_criteria(data)
    assert info.value.path == path
    assert info.value.message.startswith(f"{path}: ")
    assert message in info.value.message


def test_the_path_starts_where_the_caller_says() -> None:
    with pytest.raises(BadRequest) as info:
        parse_criteria({"all": [{"identity": "nope"}]}, "$.criteria")
    assert info.value.path == "$.criteria.all[0].identity"


def test_the_limits_themselves_are_accepted() -> None:
    parse_criteria(nested_not(MAX_DEPTH))
    parse_criteria({"any": [{"identity": "email"}] * (MAX_NODES - 1)})


def test_a_deep_json_bomb_is_refused_before_anything_recurses() -> None:
    with pytest.raises(BadRequest, match="levels"):
        parse_criteria(nested_not(100_000))


EXAMPLE = {
    "all": [
        {"user_attribute": "plan", "type": "string", "operator": "in_list", "values": ["gold", "platinum"]},
        {"not": {"audience": 7}},
        {"any": [{"calculated_attribute": "ltv", "type": "number", "operator": "greater_than", "value": "100"},
                 {"event": {"event_name": "Buy", "custom_event_type": "transaction",
                            "conditions": [{"type": "number", "operator": "between", "attribute_name": "amount",
                                            "min_value": "10", "max_value": "50"}]},
                  "count": {"operator": "at_least", "value": 2}, "within_days": 30}]},
        {"identity": "ios_idfv"},
        {"gdpr_consented": "marketing"},
        {"ccpa_data_sale_opt_out": False},
        {"event": {"event_type": "screen_view", "event_name": "Home"}, "count": {"operator": "at_most", "value": 0},
         "within_days": 1},
        {"audience": 8},
        {"calculated_attribute": "last_seen_city", "type": "string", "operator": "exists"},
    ]
}  # fmt: skip


def test_a_valid_tree_round_trips_through_its_json_form() -> None:
    node = parse_criteria(EXAMPLE)
    assert parse_criteria(node.model_dump(by_alias=True, exclude_defaults=True)) == node
    assert parse_criteria(node.model_dump(mode="json", by_alias=True)) == node


def test_the_readers_walk_the_tree_in_order() -> None:
    node = parse_criteria(EXAMPLE)
    assert referenced_audiences(node) == {7, 8}
    assert referenced_calculated_attributes(node) == {"ltv", "last_seen_city"}
    leaves = event_leaves(node)
    assert [leaf.event.event_name for leaf in leaves] == ["Buy", "Home"]
    assert all(isinstance(leaf, PerformedEvent) for leaf in leaves)


def test_an_event_leaf_is_a_count_within_its_days() -> None:
    buy, home = event_leaves(parse_criteria(EXAMPLE))
    definition = leaf_definition(buy)
    assert definition.calculation_type == "count"
    assert definition.data_point.type == "event"
    assert (definition.data_point.event_type, definition.data_point.event_name) == ("custom_event", "Buy")
    assert definition.data_point.custom_event_type == "transaction"
    assert definition.conditions == buy.event.conditions
    assert definition.time_period is not None
    assert (definition.time_period.type, definition.time_period.within) == ("within", 30)
    assert definition.time_period.within_unit == "days"
    assert leaf_definition(home).data_point.event_type == "screen_view"


# ---- a workspace's audiences ---------------------------------------------------------------------------------


def audience(id: int, criteria: dict[str, Any], kind: str = "real_time", name: str = "") -> Audience:
    return Audience.model_validate({"id": id, "name": name or f"A{id}", "kind": kind, "criteria": criteria})


def refusal_of(audiences: list[Audience], calculated: set[str] | None = None) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        check_audiences(audiences, calculated or set())
    return info.value


def test_references_resolve() -> None:
    check_audiences(
        [audience(1, {"audience": 2}), audience(2, {"calculated_attribute": "ltv", "type": "number",
                                                     "operator": "exists"})],
        {"ltv"},
    )  # fmt: skip
    error = refusal_of([audience(1, {"identity": "email"}), audience(2, {"any": [{"audience": 1}, {"audience": 9}]})])
    assert error.message == "audiences[1].criteria.any[1].audience: no audience with id 9"
    error = refusal_of([audience(1, {"not": {"calculated_attribute": "ltv", "type": "number", "operator": "exists"}})])
    assert error.message == "audiences[0].criteria.not.calculated_attribute: no calculated attribute named 'ltv'"


def test_a_real_time_audience_cannot_test_a_standard_one() -> None:
    standard = audience(1, {"identity": "email"}, kind="standard")
    error = refusal_of([standard, audience(2, {"all": [{"audience": 1}]})])
    assert error.path == "audiences[1].criteria.all[0].audience"
    assert "standard audience 1" in error.message
    check_audiences([standard, audience(2, {"audience": 1}, kind="standard")], set())


def test_a_cycle_is_named() -> None:
    error = refusal_of(
        [
            audience(1, {"identity": "email"}, name="Base"),
            audience(2, {"all": [{"audience": 1}, {"audience": 3}]}, name="VIP"),
            audience(3, {"not": {"audience": 4}}, name="Churn"),
            audience(4, {"audience": 2}, name="Lapsed"),
        ]
    )
    assert error.message == (
        "audiences[1].criteria: audiences refer to each other in a cycle: 2 (VIP) → 3 (Churn) → 4 (Lapsed) → 2 (VIP)"
    )
    assert "1 (Self) → 1 (Self)" in refusal_of([audience(1, {"audience": 1}, name="Self")]).message


def test_each_tree_is_checked_and_ids_are_unique() -> None:
    bad = Audience.model_validate({"id": 1, "name": "x", "criteria": {"identity": "nope"}})  # the model alone takes it
    assert refusal_of([bad]).path == "audiences[0].criteria.identity"
    assert (
        refusal_of([audience(1, {"identity": "email"}), audience(1, {"identity": "email"})]).path == "audiences[1].id"
    )


def test_the_evaluation_order_puts_referenced_audiences_first() -> None:
    audiences = [
        audience(1, {"all": [{"audience": 3}, {"audience": 2}]}),
        audience(2, {"audience": 4}),
        audience(3, {"identity": "email"}),
        audience(4, {"identity": "email"}),
        audience(5, {"audience": 99}),  # a reference outside the list (another kind) does not order anything
    ]
    assert [a.id for a in evaluation_order(audiences)] == [4, 2, 3, 1, 5]
    independent = [audience(n, {"identity": "email"}) for n in (5, 3, 9)]
    assert [a.id for a in evaluation_order(independent)] == [5, 3, 9]


def workspace(audiences: list[dict[str, Any]], calculated: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    data = yaml.safe_load(DEMO.read_text())
    data["outputs"].append({"id": 50, "name": "members", "kind": "webhook", "settings": {"url": "http://x/y"}})
    data["outputs"].append({"id": 51, "name": "mp", "kind": "mixpanel", "settings": {"project_token": "t"}})
    return {**data, "audiences": audiences, "calculated_attributes": calculated or []}


def test_the_workspace_checks_its_audiences() -> None:
    ltv = {"id": 1, "name": "ltv"}
    ok = {"id": 1, "name": "Big", "criteria": {"calculated_attribute": "ltv", "type": "number", "operator": "exists"},
          "connected_outputs": [50]}  # fmt: skip
    config = parse_workspace(workspace([ok], [ltv]))
    assert config.real_time_audiences()[0].connected_outputs == [50]
    cases = [
        (workspace([ok]), "audiences[0].criteria.calculated_attribute: no calculated attribute named 'ltv'"),
        (workspace([{**ok, "connected_outputs": [77]}], [ltv]), "audiences[0].connected_outputs[0]: no output"),
        (workspace([{**ok, "connected_outputs": [50, 51]}], [ltv]), "connected_outputs[1]: mixpanel does not take"),
        (workspace([{**ok, "criteria": {"audience": 1}}]), "cycle: 1 (Big) → 1 (Big)"),
        (workspace([{**ok, "criteria": {"all": [{"identity": "x"}]}}]), "audiences[0].criteria.all[0].identity"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError) as info:
            parse_workspace(data)
        assert message in str(info.value)


# ---- evaluation ----------------------------------------------------------------------------------------------


def test_facts_of_a_profile() -> None:
    profile = Profile(
        mpid=1,
        user_identities={"email": Stamped("a@b.c", 1), "customer_id": Stamped(None, 2)},
        device_identities={"ios_idfv": Stamped("d", 1)},
        attributes={"plan": Stamped("gold", 1), "gone": Stamped(None, 2)},
        consent={
            "gdpr": {"marketing": ConsentRecord(True, 1), "analytics": ConsentRecord(False, 1)},
            "ccpa": {"data_sale_opt_out": ConsentRecord(True, 1)},
        },
        calculated={"ltv": "120"},
    )
    facts = facts_of(profile, {4}, [3])
    assert facts.attributes == {"plan": "gold"}
    assert set(facts.identities) == {"email", "ios_idfv"}
    assert facts.gdpr == {"marketing": True, "analytics": False}
    assert facts.ccpa_opt_out is True
    assert facts.calculated == {"ltv": "120"}
    assert set(facts.memberships) == {4} and list(facts.event_counts) == [3]
    assert facts_of(Profile(mpid=2), set(), []).ccpa_opt_out is None


def test_the_example_holds_for_a_member() -> None:
    criteria = Criteria(parse_criteria(EXAMPLE))
    member = Facts(
        attributes={"plan": "gold"},
        identities={"ios_idfv"},
        gdpr={"marketing": True},
        ccpa_opt_out=None,
        calculated={"ltv": "50", "last_seen_city": "Paris"},
        memberships={8},
        event_counts=[2, 0],
    )
    assert criteria.holds(member)
    assert not criteria.holds(Facts(**{**vars(member), "event_counts": [1, 0]}))  # neither ltv > 100 nor 2 buys
    assert criteria.holds(
        Facts(**{**vars(member), "event_counts": [1, 0], "calculated": {"ltv": "101", "last_seen_city": "x"}})
    )
    assert not criteria.holds(Facts(**{**vars(member), "event_counts": [2, 1]}))  # at most 0 home screens
    assert not criteria.holds(Facts(**{**vars(member), "memberships": {7, 8}}))
    assert not criteria.holds(Facts(**{**vars(member), "ccpa_opt_out": True}))
    assert criteria.holds(Facts(**{**vars(member), "ccpa_opt_out": False}))
    with pytest.raises(ValueError, match="2 event counts expected"):
        criteria.holds(Facts(**{**vars(member), "event_counts": [2]}))


def test_each_event_leaf_takes_its_own_count() -> None:
    def bought(operator: str, value: int) -> dict[str, Any]:
        return {"event": {"event_name": "Buy"}, "count": {"operator": operator, "value": value}, "within_days": 7}

    criteria = Criteria(parse_criteria({"any": [{"all": [bought("at_least", 2), bought("at_most", 0)]},
                                                {"not": bought("equals", 1)}]}))  # fmt: skip
    nobody = Facts(attributes={}, identities=set(), gdpr={}, ccpa_opt_out=None, calculated={}, memberships=set(),
                   event_counts=[])  # fmt: skip
    assert criteria.holds(replace(nobody, event_counts=[2, 0, 1]))
    assert not criteria.holds(replace(nobody, event_counts=[0, 2, 1]))
    assert criteria.holds(replace(nobody, event_counts=[0, 2, 3]))


# ---- property: the compiled criteria equal a plain recursive reading of the JSON tree --------------------------

NAMES = ("plan", "age", "vip", "since")
VALUES = st.one_of(
    st.sampled_from(["gold", "silver", "", "golden", "42", "7.5", "true", "FALSE", "2024-03-01", "2024-07-15"]),
    st.integers(-5, 120),
    st.booleans(),
)
TEXTS = st.sampled_from(["gold", "old", "silver", "", "42", "true", "2024-03-01"])
NUMBERS = st.sampled_from(["0", "7.5", "42", "100", "-1"])
DATES = st.sampled_from(["2024-01-01", "2024-03-01", "2024-06-30", "2024-12-31"])


def value_tests() -> st.SearchStrategy[dict[str, Any]]:
    none = st.sampled_from(["exists", "not_exists", "empty"]).map(lambda op: {"operator": op})
    string = st.one_of(
        none,
        st.tuples(st.sampled_from(["equals", "not_equals", "contains", "not_contains"]), TEXTS).map(
            lambda t: {"operator": t[0], "value": t[1]}
        ),
        st.lists(TEXTS, min_size=1, max_size=3).map(lambda vs: {"operator": "in_list", "values": vs}),
        st.sampled_from(["^g", "ld$", "[0-9]+", "^$"]).map(lambda p: {"operator": "pattern", "value": p}),
    ).map(lambda t: {"type": "string", **t})
    number = st.one_of(
        none,
        st.tuples(
            st.sampled_from(
                ["equals", "not_equals", "greater_than", "greater_or_equal", "less_than", "less_than_or_equal"]
            ),
            NUMBERS,
        ).map(lambda t: {"operator": t[0], "value": t[1]}),
        st.lists(NUMBERS, min_size=1, max_size=3).map(lambda vs: {"operator": "in_list", "values": vs}),
        st.tuples(NUMBERS, NUMBERS).map(lambda t: {"operator": "between", "min_value": t[0], "max_value": t[1]}),
    ).map(lambda t: {"type": "number", **t})
    boolean = st.one_of(none, st.sampled_from(["true", "false", "True"]).map(lambda v: {"operator": "equals",
                                                                                         "value": v}))  # fmt: skip
    date = st.one_of(
        st.tuples(st.sampled_from(["before", "after", "equals"]), DATES).map(
            lambda t: {"operator": t[0], "value": t[1]}
        ),
        st.tuples(DATES, DATES).map(lambda t: {"operator": "between_dates", "min_value": t[0], "max_value": t[1]}),
    )
    return st.one_of(
        string, number, boolean.map(lambda t: {"type": "boolean", **t}), date.map(lambda t: {"type": "date", **t})
    )


EVENT_LEAVES = st.tuples(st.sampled_from(["at_least", "at_most", "equals"]), st.integers(0, 3), st.integers(1, 30)).map(
    lambda t: {"event": {"event_name": "Buy"}, "count": {"operator": t[0], "value": t[1]}, "within_days": t[2]}
)
LEAVES = st.one_of(
    st.tuples(st.sampled_from(NAMES), value_tests()).map(lambda t: {"user_attribute": t[0], **t[1]}),
    st.tuples(st.sampled_from(NAMES), value_tests()).map(lambda t: {"calculated_attribute": t[0], **t[1]}),
    st.sampled_from(["email", "customer_id", "ios_idfv"]).map(lambda t: {"identity": t}),
    st.sampled_from(["marketing", "analytics"]).map(lambda p: {"gdpr_consented": p}),
    st.booleans().map(lambda b: {"ccpa_data_sale_opt_out": b}),
    st.integers(1, 3).map(lambda n: {"audience": n}),
    EVENT_LEAVES,
    EVENT_LEAVES,  # twice as likely as the others: trees with several event leaves test that each gets its count
)
TREES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=4).map(lambda cs: {"all": cs}),
        st.lists(children, min_size=1, max_size=4).map(lambda cs: {"any": cs}),
        children.map(lambda c: {"not": c}),
    ),
    max_leaves=25,
)


def size(tree: dict[str, Any], depth: int = 1) -> tuple[int, int]:
    """(nodes, depth) of a JSON tree."""
    children = tree.get("all") or tree.get("any") or ([tree["not"]] if "not" in tree else [])
    sizes = [size(child, depth + 1) for child in children]
    return 1 + sum(n for n, _ in sizes), max([depth, *(d for _, d in sizes)])


def oracle_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def oracle_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def oracle_test(test: dict[str, Any], value: Any) -> bool:
    """A condition read from the reference: a missing attribute meets only `not_exists`; values compare as the
    condition's type says, and a value that is not of that type meets nothing."""
    operator = test["operator"]
    if operator in ("exists", "not_exists"):
        return (value is not None) == (operator == "exists")
    if value is None:
        return False
    if operator == "empty":
        return value == ""
    kind = test["type"]
    if kind == "string":
        text, given = oracle_text(value), test.get("value", "")
        return {
            "equals": lambda: text == given,
            "not_equals": lambda: text != given,
            "contains": lambda: given in text,
            "not_contains": lambda: given not in text,
            "in_list": lambda: text in test["values"],
            "pattern": lambda: re.search(given, text) is not None,
        }[operator]()
    if kind == "number":
        number = oracle_number(value)
        if number is None:
            return False
        if operator == "in_list":
            return any(number == float(v) for v in test["values"])
        if operator == "between":
            return float(test["min_value"]) <= number <= float(test["max_value"])
        given = float(test["value"])
        return {
            "equals": number == given,
            "not_equals": number != given,
            "greater_than": number > given,
            "greater_or_equal": number >= given,
            "less_than": number < given,
            "less_than_or_equal": number <= given,
        }[operator]
    if kind == "boolean":
        truth = {"true": True, "false": False}.get(oracle_text(value).lower())
        return truth is not None and truth == (test["value"].lower() == "true")
    # dates: ISO 8601 (the generated ones are all YYYY-MM-DD, whose text order is their time order) or epoch
    # milliseconds (the generated numbers are all within 1970, before every generated date)
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        if operator == "between_dates":
            return test["min_value"] <= value <= test["max_value"]
        given = test["value"]
        return {"before": value < given, "after": value > given, "equals": value == given}[operator]
    return oracle_number(value) is not None and operator == "before"


def oracle(tree: dict[str, Any], user: dict[str, Any], counts: list[int]) -> bool:
    """Whether `user` meets `tree`, read straight from the issue's definition of each node; `counts` are consumed
    by the event leaves in the order they are met, depth first, left to right."""
    if "all" in tree:
        return all([oracle(child, user, counts) for child in tree["all"]])  # a list: every leaf takes its count
    if "any" in tree:
        return any([oracle(child, user, counts) for child in tree["any"]])
    if "not" in tree:
        return not oracle(tree["not"], user, counts)
    if "event" in tree:
        performed, wanted = counts.pop(0), tree["count"]["value"]
        return {"at_least": performed >= wanted, "at_most": performed <= wanted, "equals": performed == wanted}[
            tree["count"]["operator"]
        ]
    if "user_attribute" in tree:
        return oracle_test(tree, user["attributes"].get(tree["user_attribute"]))
    if "calculated_attribute" in tree:
        return oracle_test(tree, user["calculated"].get(tree["calculated_attribute"]))
    if "identity" in tree:
        return tree["identity"] in user["identities"]
    if "gdpr_consented" in tree:
        return user["gdpr"].get(tree["gdpr_consented"]) is True
    if "ccpa_data_sale_opt_out" in tree:
        return bool(user["ccpa"]) == tree["ccpa_data_sale_opt_out"]
    return tree["audience"] in user["memberships"]


USERS = st.fixed_dictionaries(
    {
        "attributes": st.dictionaries(st.sampled_from(NAMES), VALUES),
        "calculated": st.dictionaries(st.sampled_from(NAMES), VALUES.map(oracle_text)),
        "identities": st.sets(st.sampled_from(["email", "customer_id", "ios_idfv", "push_token"])),
        "gdpr": st.dictionaries(st.sampled_from(["marketing", "analytics"]), st.booleans()),
        "ccpa": st.sampled_from([None, True, False]),
        "memberships": st.sets(st.integers(1, 3)),
    }
)


@settings(max_examples=300, deadline=None)
@given(tree=TREES, user=USERS, data=st.data())
def test_compiled_criteria_equal_the_oracle(tree: dict[str, Any], user: dict[str, Any], data: st.DataObject) -> None:
    nodes, depth = size(tree)
    assume(nodes <= MAX_NODES and depth <= MAX_DEPTH)
    criteria = Criteria(parse_criteria(tree))
    counts = data.draw(st.lists(st.integers(0, 4), min_size=len(criteria.event_leaves),
                                max_size=len(criteria.event_leaves)))  # fmt: skip
    facts = Facts(
        attributes=user["attributes"],
        identities=user["identities"],
        gdpr=user["gdpr"],
        ccpa_opt_out=user["ccpa"],
        calculated=user["calculated"],
        memberships=user["memberships"],
        event_counts=counts,
    )
    assert criteria.holds(facts) == oracle(tree, user, list(counts))
