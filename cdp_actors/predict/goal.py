"""The business goal a propensity model predicts: "performs EVENT within N days" (mParticle's Predictive Attributes:
define a goal, the platform predicts who is likely to reach it; https://docs.mparticle.com/guides/predictive-attributes/).

A goal names an event (its type and name) and optionally a condition on the event's custom attributes, written as
a calculated attribute's condition (`cdp_actors/calculated/conditions.py`), so "a purchase over 100" reads the same
here as in a CA. Two presets: `purchase` (a commerce event whose product action is purchase) and `churn` (no event
at all in the window: the goal is reached by staying away)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

import pandas as pd
from pydantic import ValidationError

from cdp_actors.calculated.conditions import attribute_matches
from cdp_actors.calculated.definition import Condition
from cdp_actors.errors import BadRequest

DAY_MS: Final = 86_400_000
MAX_WINDOW_DAYS: Final = 365
"""A year: a goal further out than that leaves too little history before the cutoff to learn from."""

PRESETS: Final = ("purchase", "churn")
EVENT_TYPES: Final = (
    "custom_event",
    "commerce_event",
    "screen_view",
    "session_start",
    "session_end",
    "crash_report",
    "opt_out",
    "first_run",
    "push_registration",
    "push_message",
    "application_state_transition",
    "network_performance",
    "breadcrumb",
    "profile",
    "uninstall",
)
"""The Events API's event types a goal may name (see `cdp_actors/schema/events.py`)."""

GoalKind = Literal["event", "purchase", "churn"]


@dataclass(frozen=True)
class Goal:
    """What a user must do (or, for churn, not do) within `window_days` after the cutoff."""

    kind: GoalKind
    window_days: int
    event_type: str | None = None
    event_name: str | None = None
    condition: Condition | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "window_days": self.window_days,
            "event_type": self.event_type,
            "event_name": self.event_name,
            "condition": self.condition.model_dump(exclude_none=True) if self.condition else None,
        }


def goal(
    goal_event: str,
    goal_event_type: str = "custom_event",
    window_days: int = 30,
    condition: dict[str, Any] | Condition | None = None,
) -> Goal:
    """A validated goal. `goal_event` is an event name, or a preset (`purchase`, `churn`) that fixes the type."""
    _check_window(window_days)
    parsed = _condition(condition)
    if goal_event in PRESETS:
        if goal_event == "churn" and parsed is not None:
            raise BadRequest("churn takes no condition: it is reached by no event at all", "condition")
        kind: GoalKind = "purchase" if goal_event == "purchase" else "churn"
        event_type = "commerce_event" if kind == "purchase" else None
        return Goal(kind=kind, window_days=window_days, event_type=event_type, condition=parsed)
    if not isinstance(goal_event, str) or not goal_event.strip():
        raise BadRequest("goal_event must name an event, or a preset: purchase, churn", "goal_event")
    if goal_event_type not in EVENT_TYPES:
        raise BadRequest(f"goal_event_type must be one of {', '.join(EVENT_TYPES)}", "goal_event_type")
    return Goal("event", window_days, goal_event_type, goal_event, parsed)


def from_description(described: dict[str, Any]) -> Goal:
    """The goal `Goal.describe` wrote (a registered model's)."""
    condition = described.get("condition")
    return Goal(
        kind=described["kind"],
        window_days=int(described["window_days"]),
        event_type=described.get("event_type"),
        event_name=described.get("event_name"),
        condition=Condition.model_validate(condition) if condition else None,
    )


def _check_window(window_days: int) -> None:
    if isinstance(window_days, bool) or not isinstance(window_days, int) or not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise BadRequest(f"window_days must be a whole number of days from 1 to {MAX_WINDOW_DAYS}", "window_days")


def _condition(condition: dict[str, Any] | Condition | None) -> Condition | None:
    if condition is None or isinstance(condition, Condition):
        return condition
    try:
        return Condition.model_validate(condition)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own refusal
        raise BadRequest(message, f"condition.{where}" if where else "condition") from None


def goal_events(goal: Goal, events: pd.DataFrame) -> pd.Series:
    """Which rows of `events` (snapshot columns) are the goal's event. For churn: every event (any one breaks it)."""
    if goal.kind == "churn":
        return pd.Series(True, index=events.index)
    if goal.kind == "purchase":
        chosen = (events["event_type"] == "commerce_event") & (events["product_action"] == "purchase")
    else:
        chosen = (events["event_type"] == goal.event_type) & (events["event_name"] == goal.event_name)
    if goal.condition is not None and chosen.any():
        condition = goal.condition
        met = events.loc[chosen, "attributes"].map(lambda text: attribute_matches(condition, _object(text)))
        chosen = chosen & met.reindex(events.index, fill_value=False).astype(bool)
    return chosen.astype(bool)


def reached(goal: Goal, events: pd.DataFrame, after_ms: int, until_ms: int) -> pd.Series:
    """Per mpid present in `events`: whether the goal was reached in the window (after_ms, until_ms]."""
    inside = (events["timestamp_ms"] > after_ms) & (events["timestamp_ms"] <= until_ms)
    hits = events.loc[inside & goal_events(goal, events), "mpid"].unique()
    users = pd.Index(events["mpid"].unique(), name="mpid")
    did = users.isin(hits)
    return pd.Series(~did if goal.kind == "churn" else did, index=users, name="label")


def _object(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
