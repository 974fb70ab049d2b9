"""An audience's criteria: a boolean tree of tests on one user, validated here and evaluated by `evaluate.py`.

NODE is `{"all": [NODE...]}`, `{"any": [NODE...]}`, `{"not": NODE}` or a leaf:
- `{"user_attribute": NAME, "type", "operator", "value" | "values" | "min_value"/"max_value"}`: the types and
  operators of calculated-attribute conditions (https://docs.mparticle.com/guides/platform-guide/calculated-attributes/)
- `{"calculated_attribute": NAME, ...the same}`
- `{"identity": TYPE}` (the user has one; user and device identity types)
- `{"gdpr_consented": PURPOSE}` (the latest GDPR record of the purpose says consented),
  `{"ccpa_data_sale_opt_out": true | false}` (the user opted out of data sale / has not: no record is not opted out)
- `{"audience": ID}` (a member of that audience)
- `{"event": {"event_type", "event_name", "custom_event_type", "conditions": [...]}, "count": {"operator",
  "value"}, "within_days": D}` (performed the event, with attribute conditions, at least / at most / exactly N
  times within the last D days). The shard counts each such leaf as a `count` calculated attribute over a
  `within` window (`leaf_definition`), so the count is kept incrementally like any CA.

A refusal names the node by its path in the request (`criteria.all[0].any[2].operator: ...`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal, NamedTuple, Protocol, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError

from cdp_actors.calculated.conditions import as_boolean, as_instant_ms, as_number
from cdp_actors.calculated.definition import (
    MAX_CONDITIONS,
    MAX_NAME_CHARS,
    OPERATORS_BY_TYPE,
    Condition,
    ConditionType,
    DataPoint,
    Definition,
    Operator,
    TimePeriod,
)
from cdp_actors.errors import BadRequest
from cdp_actors.schema.events import Event
from cdp_actors.schema.identity_types import ALL_TYPES

MAX_DEPTH = 10
"""Levels of nesting (the root is level 1): deeper trees are machine-made, and evaluation recurses."""
MAX_NODES = 100
"""Nodes in one tree: every batch of a member evaluates the tree, so its size bounds the shard's work."""
MAX_WITHIN_DAYS = 400
"""The longest event window, in days: what the history keeps (the audit log's 400 days of retention)."""
MAX_PATTERN_CHARS = 256
"""The longest `pattern` regular expression: it runs on every evaluation of the leaf."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class All(_Strict):
    all: list[Node] = Field(min_length=1)


class Any_(_Strict):
    any: list[Node] = Field(min_length=1)


class Not(_Strict):
    not_: Node = Field(alias="not")


class _ValueTest(_Strict):
    type: ConditionType
    operator: Operator
    value: str | None = None
    values: list[str] | None = None
    min_value: str | None = None
    max_value: str | None = None

    def condition(self, attribute_name: str) -> Condition:
        return Condition(
            type=self.type,
            operator=self.operator,
            attribute_name=attribute_name,
            value=self.value,
            values=self.values,
            min_value=self.min_value,
            max_value=self.max_value,
        )


class UserAttribute(_ValueTest):
    user_attribute: str = Field(min_length=1, max_length=MAX_NAME_CHARS)


class CalculatedAttribute(_ValueTest):
    calculated_attribute: str = Field(min_length=1, max_length=MAX_NAME_CHARS)


class HasIdentity(_Strict):
    identity: str


class GdprConsented(_Strict):
    gdpr_consented: str = Field(min_length=1, max_length=MAX_NAME_CHARS)


class CcpaOptOut(_Strict):
    ccpa_data_sale_opt_out: bool


class MemberOf(_Strict):
    audience: int = Field(gt=0)


class EventMatch(_Strict):
    event_type: str = "custom_event"
    event_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    custom_event_type: str | None = None
    conditions: list[Condition] = []


class CountTest(_Strict):
    operator: Literal["at_least", "at_most", "equals"] = "at_least"
    value: int = Field(default=1, ge=0)


class PerformedEvent(_Strict):
    event: EventMatch
    count: CountTest = CountTest()
    within_days: int = Field(gt=0, le=MAX_WITHIN_DAYS)


NODE_KEYS: dict[str, str] = {
    "all": "all",
    "any": "any",
    "not": "not",
    "user_attribute": "user_attribute",
    "calculated_attribute": "calculated_attribute",
    "identity": "identity",
    "gdpr_consented": "gdpr_consented",
    "ccpa_data_sale_opt_out": "ccpa_data_sale_opt_out",
    "audience": "audience",
    "event": "event",
}
"""The key that tells a node's kind, and the tag of that kind."""


def node_kind(value: Any) -> str | None:
    """The tag of the node `value` is (the first of its keys that names a kind), None when it names none."""
    if isinstance(value, BaseModel):
        return next((tag for tag, model in _MODELS.items() if isinstance(value, model)), None)
    if isinstance(value, dict):  # `not_`: a Not node dumped without aliases (the configuration store's documents)
        return next((NODE_KEYS[key.rstrip("_")] for key in value if key.rstrip("_") in NODE_KEYS), None)
    return None


Node = Annotated[
    Annotated[All, Tag("all")]
    | Annotated[Any_, Tag("any")]
    | Annotated[Not, Tag("not")]
    | Annotated[UserAttribute, Tag("user_attribute")]
    | Annotated[CalculatedAttribute, Tag("calculated_attribute")]
    | Annotated[HasIdentity, Tag("identity")]
    | Annotated[GdprConsented, Tag("gdpr_consented")]
    | Annotated[CcpaOptOut, Tag("ccpa_data_sale_opt_out")]
    | Annotated[MemberOf, Tag("audience")]
    | Annotated[PerformedEvent, Tag("event")],
    Discriminator(
        node_kind,
        custom_error_type="node",
        custom_error_message="a criteria node needs one of the keys " + ", ".join(NODE_KEYS),
    ),  # fmt: skip
]
_MODELS: dict[str, type[BaseModel]] = {
    "all": All,
    "any": Any_,
    "not": Not,
    "user_attribute": UserAttribute,
    "calculated_attribute": CalculatedAttribute,
    "identity": HasIdentity,
    "gdpr_consented": GdprConsented,
    "ccpa_data_sale_opt_out": CcpaOptOut,
    "audience": MemberOf,
    "event": PerformedEvent,
}
All.model_rebuild()
Any_.model_rebuild()
Not.model_rebuild()

_ADAPTER: TypeAdapter[Node] = TypeAdapter(Node)
EVENT_TYPES: frozenset[str] = frozenset(kind.__struct_config__.tag for kind in get_args(Event))  # type: ignore[attr-defined]
"""The Events API's event types: what an event leaf's `event_type` may name."""
_RANGE_OPERATORS = frozenset({"between", "between_dates"})
_NO_VALUE_OPERATORS = frozenset({"exists", "not_exists", "empty"})


# ---- validation ----------------------------------------------------------------------------------------------


def parse_criteria(data: Any, path: str = "criteria") -> Node:
    """The criteria tree of `data` (its JSON form), or BadRequest naming the first node or field at fault."""
    _check_size(data, path)
    try:
        node = _ADAPTER.validate_python(data)
    except ValidationError as error:
        first = error.errors()[0]
        raise refusal(readable_path(data, first["loc"], path), first["msg"].removeprefix("Value error, ")) from None
    check_node(node, path)
    return node


def refusal(path: str, problem: str) -> BadRequest:
    """A BadRequest whose message starts with the field's path, as the Platform API's validation errors do."""
    error = BadRequest(f"{path}: {problem}")
    error.path = path
    return error


def readable_path(data: Any, loc: Sequence[int | str], path: str) -> str:
    """pydantic's location of an error below `data` without the union's tag segments: `all.all.0.user_attribute
    .operator` is `criteria.all[0].operator`."""
    parts = list(loc)
    while len(parts) >= 2 and node_kind(data) == parts[0]:
        _, field, *parts = parts
        path += f".{field}"
        index = parts[0] if parts else None
        if field in ("all", "any") and isinstance(index, int) and isinstance(data, dict):
            parts.pop(0)
            path += f"[{index}]"
            children = data.get(field)
            data = children[index] if isinstance(children, list) and index < len(children) else None
        elif field == "not" and isinstance(data, dict):
            data = data.get("not")
        else:
            break
    return path + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def _check_size(data: Any, path: str) -> None:
    """At most MAX_DEPTH levels and MAX_NODES nodes, checked on the JSON form before anything recurses into it."""
    nodes = 0
    pending: list[tuple[Any, str, int]] = [(data, path, 1)]
    while pending:
        value, where, depth = pending.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise refusal(where, f"criteria nest at most {MAX_DEPTH} levels deep")
        if nodes > MAX_NODES:
            raise refusal(path, f"criteria have at most {MAX_NODES} nodes")
        if not isinstance(value, dict):
            continue
        for key in ("all", "any"):
            if isinstance(children := value.get(key), list):
                pending.extend((child, f"{where}.{key}[{n}]", depth + 1) for n, child in enumerate(children))
        if "not" in value:
            pending.append((value["not"], f"{where}.not", depth + 1))


def check_node(node: Node, path: str = "criteria") -> None:
    """What the models alone do not say: operators for the type, the values each operator takes, identity and
    event types, the tree's size (a tree built in code, not parsed, is checked here too)."""
    for count, (where, depth, item) in enumerate(_walk(node, path), start=1):
        if depth > MAX_DEPTH:
            raise refusal(where, f"criteria nest at most {MAX_DEPTH} levels deep")
        if count > MAX_NODES:
            raise refusal(path, f"criteria have at most {MAX_NODES} nodes")
        if isinstance(item, UserAttribute | CalculatedAttribute):
            _check_condition(item, where)
        elif isinstance(item, HasIdentity) and item.identity not in ALL_TYPES:
            raise refusal(f"{where}.identity", f"unknown identity type {item.identity!r}")
        elif isinstance(item, PerformedEvent):
            _check_event(item, where)


def _check_event(leaf: PerformedEvent, path: str) -> None:
    event = leaf.event
    if event.event_type not in EVENT_TYPES:
        raise refusal(f"{path}.event.event_type", f"unknown event type; known: {', '.join(sorted(EVENT_TYPES))}")
    if len(event.conditions) > MAX_CONDITIONS:
        raise refusal(f"{path}.event.conditions", f"at most {MAX_CONDITIONS} conditions")
    for n, condition in enumerate(event.conditions):
        where = f"{path}.event.conditions[{n}]"
        if not condition.attribute_name:
            raise refusal(f"{where}.attribute_name", "attribute_name is required")
        _check_condition(condition, where)
    try:
        leaf_definition(leaf)
    except ValidationError as error:  # whatever else the count's definition refuses, named in the leaf's words
        first = error.errors()[0]
        below, message = _below(first["msg"].removeprefix("Value error, "))
        if first["loc"][:1] == ("time_period",):
            raise refusal(f"{path}.within_days", message) from None
        loc = "".join(f".{part}" for part in first["loc"] if part != "data_point")
        raise refusal(f"{path}.event{loc}{below}", message) from None


def _below(message: str) -> tuple[str, str]:
    """A model validator names a field below its own as `.field: message` (as config.py's validators do)."""
    if message.startswith("."):
        below, _, rest = message.partition(": ")
        return below, rest
    return "", message


def _check_condition(test: _ValueTest | Condition, path: str) -> None:
    """The operator applies to the type, and the condition carries exactly the values its operator reads. The
    messages are the CA definition's (`cdp_actors/calculated/definition.py`), which also refuses a bad event
    condition while the tree is parsed; a user or calculated attribute leaf is checked here."""
    allowed = OPERATORS_BY_TYPE[test.type]
    if test.operator not in allowed:
        supported = ", ".join(sorted(allowed))
        message = f"Operator '{test.operator}' is not supported for type '{test.type}' (supported: {supported})"
        raise refusal(f"{path}.operator", message)
    needed = _needed_fields(test.operator)
    for field in ("value", "values", "min_value", "max_value"):
        given = getattr(test, field)
        if field not in needed:
            if given is not None:
                raise refusal(f"{path}.{field}", _EMPTY_UNLESS[field])
            continue
        if given is None or given == []:  # an empty string is a value (`equals ""`)
            raise refusal(f"{path}.{field}", f"{field} is required for operator '{test.operator}'")
        for value in given if isinstance(given, list) else [given]:
            if problem := _operand_problem(test.type, test.operator, value):
                raise refusal(f"{path}.{field}", problem)


_EMPTY_UNLESS = {
    "value": "Condition value must be empty",
    "values": "Condition values must be empty unless the operator is in_list",
    "min_value": "min_value must be empty unless the operator is between or between_dates",
    "max_value": "max_value must be empty unless the operator is between or between_dates",
}


def _needed_fields(operator: str) -> tuple[str, ...]:
    if operator in _NO_VALUE_OPERATORS:
        return ()
    if operator == "in_list":
        return ("values",)
    if operator in _RANGE_OPERATORS:
        return ("min_value", "max_value")
    return ("value",)


def _operand_problem(kind: str, operator: str, operand: str) -> str | None:
    if kind == "number" and as_number(operand) is None:
        return f"'{operand}' is not a number"
    if kind == "date" and as_instant_ms(operand) is None:
        return f"'{operand}' is not a date (ISO 8601 or epoch milliseconds)"
    if kind == "boolean" and as_boolean(operand) is None:
        return f"'{operand}' is not a boolean (true or false)"
    if operator == "pattern":
        if len(operand) > MAX_PATTERN_CHARS:
            return f"pattern is longer than {MAX_PATTERN_CHARS} characters"
        try:
            re.compile(operand)
        except re.error as error:
            return f"pattern is not a regular expression: {error}"
    return None


# ---- reading a tree ------------------------------------------------------------------------------------------


def _walk(node: Node, path: str = "criteria", depth: int = 1) -> Iterator[tuple[str, int, Node]]:
    """Every node with its path and level, in tree order (a node before its children, children left to right)."""
    yield path, depth, node
    if isinstance(node, All | Any_):
        key = "all" if isinstance(node, All) else "any"
        for n, child in enumerate(node.all if isinstance(node, All) else node.any):
            yield from _walk(child, f"{path}.{key}[{n}]", depth + 1)
    elif isinstance(node, Not):
        yield from _walk(node.not_, f"{path}.not", depth + 1)


def referenced_audiences(node: Node) -> set[int]:
    return {item.audience for _, _, item in _walk(node) if isinstance(item, MemberOf)}


def referenced_calculated_attributes(node: Node) -> set[str]:
    return {item.calculated_attribute for _, _, item in _walk(node) if isinstance(item, CalculatedAttribute)}


class Reads(NamedTuple):
    """The facts a criteria tree tests: an audience needs evaluating again only when one of them changed."""

    attributes: frozenset[str]
    calculated: frozenset[str]
    audiences: frozenset[int]
    identities: bool
    consent: bool


def reads(node: Node) -> Reads:
    leaves = [item for _, _, item in _walk(node)]
    return Reads(
        attributes=frozenset(item.user_attribute for item in leaves if isinstance(item, UserAttribute)),
        calculated=frozenset(referenced_calculated_attributes(node)),
        audiences=frozenset(referenced_audiences(node)),
        identities=any(isinstance(item, HasIdentity) for item in leaves),
        consent=any(isinstance(item, GdprConsented | CcpaOptOut) for item in leaves),
    )


def event_leaves(node: Node) -> list[PerformedEvent]:
    """The event leaves in tree order: `Facts.event_counts` has one count per leaf, in this order."""
    return [item for _, _, item in _walk(node) if isinstance(item, PerformedEvent)]


def leaf_definition(leaf: PerformedEvent) -> Definition:
    """The `count` calculated attribute an event leaf tests: matching events within its last `within_days` days."""
    event = leaf.event
    return Definition(
        data_point=DataPoint(
            type="event",
            event_name=event.event_name,
            event_type=event.event_type,
            custom_event_type=event.custom_event_type,
        ),
        conditions=event.conditions,
        calculation_type="count",
        time_period=TimePeriod(type="within", within=leaf.within_days, within_unit="days"),
    )


# ---- a workspace's audiences ---------------------------------------------------------------------------------


class Audience(Protocol):
    """What these checks read of an audience (`cdp_actors.config.Audience`, which imports this module)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def criteria(self) -> Node: ...


AudienceT = TypeVar("AudienceT", bound=Audience)


def check_audiences(audiences: Sequence[Audience], calculated_names: set[str]) -> None:
    """The audiences of one workspace hold together: each tree valid, every referenced audience and calculated
    attribute defined, real-time audiences depending only on real-time ones, and no cycle of references."""
    by_id: dict[int, Audience] = {}
    for n, audience in enumerate(audiences):
        if audience.id in by_id:
            raise refusal(f"audiences[{n}].id", f"audience id {audience.id} is used twice")
        by_id[audience.id] = audience
    for n, audience in enumerate(audiences):
        path = f"audiences[{n}].criteria"
        check_node(audience.criteria, path)
        for where, _, item in _walk(audience.criteria, path):
            if isinstance(item, MemberOf):
                _check_member_of(audience, by_id.get(item.audience), item.audience, f"{where}.audience")
            elif isinstance(item, CalculatedAttribute) and item.calculated_attribute not in calculated_names:
                raise refusal(
                    f"{where}.calculated_attribute", f"no calculated attribute named {item.calculated_attribute!r}"
                )
    if cycle := _cycle(audiences, by_id):
        names = " → ".join(f"{by_id[i].id} ({by_id[i].name})" for i in cycle)
        first = next(n for n, audience in enumerate(audiences) if audience.id == cycle[0])
        raise refusal(f"audiences[{first}].criteria", f"audiences refer to each other in a cycle: {names}")


def _check_member_of(audience: Audience, referenced: Audience | None, audience_id: int, path: str) -> None:
    if referenced is None:
        raise refusal(path, f"no audience with id {audience_id}")
    if audience.kind == "real_time" and referenced.kind != "real_time":
        raise refusal(
            path,
            f"the real-time audience {audience.id} cannot test membership of the standard audience {audience_id}"
            " (it is computed only on demand)",
        )


def _cycle(audiences: Sequence[Audience], by_id: dict[int, Audience]) -> list[int] | None:
    """Audience ids a → b → ... → a if their references form a cycle (the first found, in the given order)."""
    references = {a.id: sorted(referenced_audiences(a.criteria) & by_id.keys()) for a in audiences}
    done: set[int] = set()
    for audience in audiences:
        if audience.id in done:
            continue
        path, pending = [audience.id], [iter(references[audience.id])]
        while pending:
            child = next(pending[-1], None)
            if child is None:
                done.add(path.pop())
                pending.pop()
            elif child in path:
                return [*path[path.index(child) :], child]
            elif child not in done:
                path.append(child)
                pending.append(iter(references[child]))
    return None


def evaluation_order(audiences: Sequence[AudienceT]) -> list[AudienceT]:
    """The audiences with every referenced one before those that test its membership (otherwise in the given
    order), so one pass evaluates each on the memberships just computed. Assumes no cycle (`check_audiences`)."""
    by_id = {audience.id: audience for audience in audiences}
    ordered: list[AudienceT] = []
    placed: set[int] = set()

    def place(audience: AudienceT) -> None:
        if audience.id in placed:
            return
        placed.add(audience.id)
        for referenced in sorted(referenced_audiences(audience.criteria) & by_id.keys()):
            place(by_id[referenced])
        ordered.append(audience)

    for audience in audiences:
        place(audience)
    return ordered
