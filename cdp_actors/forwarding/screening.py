"""What of an outbound batch a connection lets through: environment, minimum app version, sampling,
forwarding rules (attributes, consent, identities) and data filters. Pure functions over the outbound
batch JSON; the forwarder screens each row for its connection before the output's adapter sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cdp_actors.config import Connection, DataFilters, ForwardingRule
from cdp_actors.ids import mix64


@dataclass(frozen=True)
class Screened:
    batch: dict[str, Any] | None
    """What to forward; None when the connection forwards nothing of this batch."""
    blocked_events: int = 0
    reason: str = ""


_VERSION_NUMBER = re.compile(r"[0-9]+")


def version_key(version: str) -> tuple[tuple[int, str], ...]:
    """A version's numbers, in order, each as (digit count, digits) without leading zeros: numbers of any size
    compare as numbers, and none is converted to an int (Python refuses strings of over 4,300 digits)."""
    numbers = (number.lstrip("0") for number in _VERSION_NUMBER.findall(version))
    return tuple((len(number), number) for number in numbers)


def sampled_in(mpid: int, percent: float) -> bool:
    """Deterministic per user: the same MPID is always in or always out at a given percentage."""
    return percent >= 100 or (mix64(mpid & 0xFFFFFFFFFFFFFFFF) % 10_000) < percent * 100


def _consented(batch: dict[str, Any], regulation: str, purpose: str) -> bool:
    state = ((batch.get("consent_state") or {}).get(regulation) or {}).get(purpose) or {}
    return state.get("consented") is True


def _matches_value(found: Any, wanted: str | None, present: bool) -> bool:
    if not present:
        return False
    return wanted is None or str(found) == wanted or (isinstance(found, list) and wanted in map(str, found))


def batch_rule_holds(rule: ForwardingRule, batch: dict[str, Any]) -> bool:
    if rule.on == "user_attribute":
        attributes = batch.get("user_attributes") or {}
        return _matches_value(attributes.get(rule.name), rule.value, rule.name in attributes)
    if rule.on == "gdpr":
        return _consented(batch, "gdpr", rule.name)
    if rule.on == "ccpa_data_sale_opt_out":
        return _consented(batch, "ccpa", "data_sale_opt_out")
    held = [i for i in batch.get("user_identities") or [] if i.get("identity_type") == rule.name]
    return any(rule.value is None or i.get("identity") == rule.value for i in held)


def event_rule_holds(rule: ForwardingRule, event: dict[str, Any]) -> bool:
    attributes = (event.get("data") or {}).get("custom_attributes") or {}
    return _matches_value(attributes.get(rule.name), rule.value, rule.name in attributes)


def _allowed(table: dict[str, bool], name: str, default: bool) -> bool:
    return table.get(name, default)


def _filter_event(event: dict[str, Any], filters: DataFilters, default: bool) -> dict[str, Any] | None:
    if not _allowed(filters.event_types, event.get("event_type", ""), default):
        return None
    data = event.get("data") or {}
    name = data.get("event_name") or data.get("screen_name")
    if name is not None and not _allowed(filters.event_names, name, default):
        return None
    attributes = data.get("custom_attributes")
    if attributes and filters.event_attributes:
        kept = {k: v for k, v in attributes.items() if _allowed(filters.event_attributes, k, default)}
        event = {**event, "data": {**data, "custom_attributes": kept}}
    return event


def passes_everything(connection: Connection, new_data_points_forward: bool) -> bool:
    """True for a connection with no filters, rules, sampling or version floor: the common case, which the
    forwarder passes through without screening (or copying) each batch."""
    return (
        new_data_points_forward
        and not connection.rules
        and connection.filters == DataFilters()
        and connection.sample_percent >= 100
        and not connection.min_app_version
        and len(connection.environments) == 2
    )


def screen(batch: dict[str, Any], connection: Connection, new_data_points_forward: bool = True) -> Screened:
    if batch.get("environment", "production") not in connection.environments:
        return Screened(None, reason="environment")
    version = (batch.get("application_info") or {}).get("application_version")
    if connection.min_app_version and version and version_key(version) < version_key(connection.min_app_version):
        return Screened(None, reason="min_app_version")
    if not sampled_in(int(batch.get("mpid") or 0), connection.sample_percent):
        return Screened(None, reason="sampling")
    for rule in connection.rules:
        if rule.on != "event_attribute" and batch_rule_holds(rule, batch) != (rule.action == "only_forward"):
            return Screened(None, reason=f"rule:{rule.on}")

    events, filters, default = batch.get("events") or [], connection.filters, new_data_points_forward
    kept = []
    for event in events:
        event_rules = (r for r in connection.rules if r.on == "event_attribute")
        if any(event_rule_holds(r, event) != (r.action == "only_forward") for r in event_rules):
            continue
        filtered = _filter_event(event, filters, default)
        if filtered is not None:
            kept.append(filtered)
    out = {**batch, "events": kept}
    if filters.user_attributes or not default:
        out["user_attributes"] = {
            k: v
            for k, v in (batch.get("user_attributes") or {}).items()
            if _allowed(filters.user_attributes, k, default)
        }
    if filters.user_identities or not default:
        allowed = filters.user_identities
        identities = batch.get("user_identities") or []
        out["user_identities"] = [i for i in identities if _allowed(allowed, i.get("identity_type", ""), default)]
    return Screened(out, blocked_events=len(events) - len(kept))
