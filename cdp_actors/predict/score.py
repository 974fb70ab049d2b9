"""Scores: a registered model's probability per user, and its percentile among everyone scored (Segment's cohort
idea: percentile 80 means the user scores above 80% of users, so "≥ 80" is the top 20%).

Probabilities may be computed per shard (`probability`); percentiles need every user's score at once
(`percentiles` over the concatenation), or a shard's users would be ranked among their shard only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cdp_actors.predict.registry import Registered
from cdp_actors.predict.train import probabilities


def probability(model: Registered, features: pd.DataFrame) -> pd.Series:
    """The goal's probability per mpid of `features` (a features frame built with the model's vocabulary)."""
    aligned = features.reindex(columns=model.feature_names)
    return pd.Series(probabilities(model.model, aligned), index=features.index, name="score")


def percentiles(scores: pd.Series) -> pd.Series:
    """0–100 per user: the share of all users with a strictly lower score, in whole percent, floored.

    Equal scores get the same percentile, so the order users were read in never matters; the lowest score gets 0
    (and a lone user 0). Floored, so "percentile ≥ 80" never holds more than 20% of users plus those tied at the
    boundary score."""
    values = scores.to_numpy(dtype=np.float64)
    ordered = np.sort(values)
    below = np.searchsorted(ordered, values, side="left")
    percent = (below * 100) // max(len(values), 1)
    return pd.Series(percent.astype("int64"), index=scores.index, name="percentile")


def score(model: Registered, features: pd.DataFrame) -> pd.DataFrame:
    """`score` and `percentile` per mpid, for a features frame holding every user scored."""
    scores = probability(model, features)
    return pd.DataFrame({"score": scores, "percentile": percentiles(scores)})
