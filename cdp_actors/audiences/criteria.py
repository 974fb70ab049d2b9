"""An audience's criteria: a boolean tree of tests on one user.

SKELETON: the node models are the contract (the configuration stores them, the Platform API reads them); the
criteria's author completes validation (field-naming errors), the helpers below and this docstring.

NODE is `{"all": [NODE...]}`, `{"any": [NODE...]}`, `{"not": NODE}` or a leaf:
- `{"user_attribute": NAME, "type", "operator", "value" | "values" | "min_value"/"max_value"}`
- `{"calculated_attribute": NAME, ...the same}`
- `{"identity": TYPE}` (the user has one)
- `{"gdpr_consented": PURPOSE}`, `{"ccpa_data_sale_opt_out": true | false}`
- `{"audience": ID}` (a member of that audience)
- `{"event": {"event_type", "event_name", "custom_event_type", "conditions": [...]}, "count": {"operator",
  "value"}, "within_days": D}` (performed the event, with attribute conditions, at least / at most N times
  within the last D days)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from cdp_actors.calculated.definition import MAX_NAME_CHARS, Condition, ConditionType, Operator

MAX_DEPTH = 10
MAX_NODES = 100
MAX_WITHIN_DAYS = 400


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
    if isinstance(value, dict):
        return next((NODE_KEYS[key] for key in value if key in NODE_KEYS), None)
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
