"""Whether one user meets an audience's criteria, from the facts the shard holds about them.

`Criteria(node)` compiles a tree once per configuration version into nested closures; `holds(facts)` then costs a
few dictionary look-ups per leaf, so the shard can evaluate every real-time audience on every batch of the user.
Event leaves are not evaluated over the history here: the shard keeps a `count` calculated attribute per leaf
(`criteria.leaf_definition`) and passes the counts, one per leaf in tree order, as `Facts.event_counts`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any

from cdp_actors.audiences.criteria import (
    All,
    Any_,
    CalculatedAttribute,
    CcpaOptOut,
    CountTest,
    GdprConsented,
    HasIdentity,
    MemberOf,
    Node,
    Not,
    PerformedEvent,
    UserAttribute,
    event_leaves,
)
from cdp_actors.calculated.conditions import MISSING, compiled_condition
from cdp_actors.profiles.model import Profile

CCPA_PURPOSE = "data_sale_opt_out"
"""CCPA's one consent purpose: consented means the user opted out of the sale of their data."""


@dataclass(frozen=True)
class Facts:
    """What the criteria of one audience can test about one user, as of one evaluation."""

    attributes: dict[str, Any]
    """The user attributes with a value (calculated attributes are in `calculated`)."""
    identities: Set[str]
    """The identity types the user has, user and device ones (canonical names)."""
    gdpr: dict[str, bool]
    """GDPR purpose -> consented, from the latest record of each purpose."""
    ccpa_opt_out: bool | None
    """Whether the user opted out of data sale (CCPA); None when no CCPA record."""
    calculated: dict[str, str]
    """Calculated attribute name -> its value."""
    memberships: Set[int]
    """The audiences the user is a member of (for `audience` leaves)."""
    event_counts: Sequence[int]
    """Matching events within each event leaf's window, one per event leaf of the criteria, in tree order."""

    def with_event_counts(self, event_counts: Sequence[int]) -> Facts:
        """The same user's facts for another audience's event leaves (a direct call: `dataclasses.replace` costs
        ten times as much, and the shard makes one per audience per batch)."""
        return Facts(
            self.attributes, self.identities, self.gdpr, self.ccpa_opt_out, self.calculated, self.memberships,
            event_counts,
        )  # fmt: skip


def facts_of(profile: Profile, memberships: Set[int], event_counts: Sequence[int]) -> Facts:
    return Facts(
        attributes={name: item.value for name, item in profile.attributes.items() if item.value is not None},
        identities=frozenset(
            name
            for identities in (profile.user_identities, profile.device_identities)
            for name, item in identities.items()
            if item.value is not None
        ),
        gdpr={purpose: record.consented for purpose, record in profile.consent.get("gdpr", {}).items()},
        ccpa_opt_out=(record.consented if (record := profile.consent.get("ccpa", {}).get(CCPA_PURPOSE)) else None),
        calculated=dict(profile.calculated),
        memberships=memberships,
        event_counts=event_counts,
    )


Test = Callable[[Facts], bool]


class Criteria:
    """One audience's criteria, compiled."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.event_leaves: list[PerformedEvent] = event_leaves(node)
        self._leaf_index = 0
        self._test = self._compiled(node)

    def holds(self, facts: Facts) -> bool:
        if len(facts.event_counts) != len(self.event_leaves):
            raise ValueError(f"{len(self.event_leaves)} event counts expected, got {len(facts.event_counts)}")
        return self._test(facts)

    def _compiled(self, node: Node) -> Test:
        if isinstance(node, All):
            tests = [self._compiled(child) for child in node.all]
            return lambda facts: all(test(facts) for test in tests)
        if isinstance(node, Any_):
            tests = [self._compiled(child) for child in node.any]
            return lambda facts: any(test(facts) for test in tests)
        if isinstance(node, Not):
            test = self._compiled(node.not_)
            return lambda facts: not test(facts)
        if isinstance(node, PerformedEvent):
            index, self._leaf_index = self._leaf_index, self._leaf_index + 1
            return _count_test(node.count, index)
        return _leaf_test(node)


def _leaf_test(node: Node) -> Test:
    if isinstance(node, UserAttribute):
        name, test = node.user_attribute, compiled_condition(node.condition(node.user_attribute))
        return lambda facts: test(facts.attributes.get(name, MISSING))
    if isinstance(node, CalculatedAttribute):
        name, test = node.calculated_attribute, compiled_condition(node.condition(node.calculated_attribute))
        return lambda facts: test(facts.calculated.get(name, MISSING))
    if isinstance(node, HasIdentity):
        identity = node.identity
        return lambda facts: identity in facts.identities
    if isinstance(node, GdprConsented):
        purpose = node.gdpr_consented
        return lambda facts: facts.gdpr.get(purpose) is True
    if isinstance(node, CcpaOptOut):
        opted_out = node.ccpa_data_sale_opt_out
        return lambda facts: (facts.ccpa_opt_out is True) == opted_out
    if isinstance(node, MemberOf):
        audience = node.audience
        return lambda facts: audience in facts.memberships
    raise TypeError(f"not a criteria node: {node!r}")


def _count_test(count: CountTest, index: int) -> Test:
    wanted = count.value
    if count.operator == "at_least":
        return lambda facts: facts.event_counts[index] >= wanted
    if count.operator == "at_most":
        return lambda facts: facts.event_counts[index] <= wanted
    return lambda facts: facts.event_counts[index] == wanted
