"""Labels by a time-based split. The snapshot ends at T (its `as of`); the goal's window is the last N days, so the
cutoff is C = T − N days. Features see only what happened at or before C; the label says whether the goal was
reached in (C, T]. A model trained this way answers, at scoring time (cutoff = now), "will the user reach the goal
in the next N days?".

The population is the users with at least one event in the lookback (C − lookback days, C]: a user with no
history before the cutoff gives the model nothing to learn from, and for churn "no event in the window" only means
something for a user who was active before it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pandas as pd

from cdp_actors.errors import BadRequest
from cdp_actors.predict.goal import DAY_MS, Goal, reached

MAX_LOOKBACK_DAYS: Final = 3 * 365
"""Three years of history before the cutoff: more seldom says more about the next weeks, and costs a full pass."""


@dataclass(frozen=True)
class Split:
    """The time split: features from (cutoff − lookback, cutoff], labels from (cutoff, as_of]."""

    as_of_ms: int
    window_days: int
    lookback_days: int

    @property
    def cutoff_ms(self) -> int:
        return self.as_of_ms - self.window_days * DAY_MS

    @property
    def history_from_ms(self) -> int:
        """Events strictly after this (and at or before the cutoff) are the features' history."""
        return self.cutoff_ms - self.lookback_days * DAY_MS


def split(as_of_ms: int, window_days: int, lookback_days: int) -> Split:
    if isinstance(lookback_days, bool) or not isinstance(lookback_days, int):
        raise BadRequest("lookback_days must be a whole number of days", "lookback_days")
    if not 1 <= lookback_days <= MAX_LOOKBACK_DAYS:
        raise BadRequest(f"lookback_days must be from 1 to {MAX_LOOKBACK_DAYS}", "lookback_days")
    return Split(as_of_ms, window_days, lookback_days)


def labels(goal: Goal, events: pd.DataFrame, at: Split) -> pd.Series:
    """0/1 per mpid of the population (one shard's users with history before the cutoff), sorted by mpid."""
    timestamps = events["timestamp_ms"]
    history = (timestamps > at.history_from_ms) & (timestamps <= at.cutoff_ms)
    population = pd.Index(pd.unique(events.loc[history, "mpid"]), name="mpid").sort_values()
    outcome = reached(goal, events, at.cutoff_ms, at.as_of_ms)
    return outcome.reindex(population, fill_value=False).astype("int8").rename("label")
