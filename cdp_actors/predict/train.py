"""Training: a holdout by user, then a gradient-boosted classifier on the rest.

The default model is scikit-learn's `HistGradientBoostingClassifier`; LightGBM stays selectable. Both were measured
on the synthetic set (README, "Predictive attributes"): shallow, regularised trees (8 leaves, at least 80 users a
leaf) came nearest the oracle for both; scikit-learn's was a little nearer on each seed measured, and its early
stopping (on a validation split of its own) picks the number of trees, so it is the default. LightGBM fits faster."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from cdp_actors.errors import BadRequest

ModelKind = Literal["sklearn", "lightgbm"]
MODELS: Final = ("sklearn", "lightgbm")
DEFAULT_MODEL: Final[ModelKind] = "sklearn"
HOLDOUT_PERCENT: Final = 20
"""Users kept out of training to evaluate on: a fifth, the usual trade between training data and a stable AUC."""
MIN_CLASS_EXAMPLES: Final = 100
"""Fewer positives (or negatives) than this in the training set and the model learns noise: refused."""
THREADS: Final = 2
"""The machine's cores are shared with the platform: training never takes more than two."""
SEED: Final = 0


class NotEnoughExamples(BadRequest):
    """Too few users reached (or did not reach) the goal to train on."""

    def __init__(self, positives: int, negatives: int) -> None:
        super().__init__(
            f"Cannot train: the training set has {positives} users who reached the goal and {negatives} who did "
            f"not; each needs at least {MIN_CLASS_EXAMPLES}. Widen window_days or lookback_days, or pick a more "
            "frequent goal event.",
            "goal_event",
        )
        self.positives, self.negatives = positives, negatives


def in_holdout(mpids: pd.Index | pd.Series | np.ndarray) -> np.ndarray:
    """Whether each user is in the holdout: a hash of the mpid, so the same user is always on the same side."""
    return np.array([_bucket(int(mpid)) < HOLDOUT_PERCENT for mpid in mpids], dtype=bool)


def _bucket(mpid: int) -> int:
    digest = hashlib.blake2b(mpid.to_bytes(8, "little", signed=True), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 100


@dataclass
class Trained:
    model: Any
    kind: ModelKind
    fit_seconds: float
    positives: int
    negatives: int


def check_kind(kind: str) -> ModelKind:
    if kind not in MODELS:
        raise BadRequest(f"model must be one of {', '.join(MODELS)}", "model")
    return kind  # type: ignore[return-value]


def fit(features: pd.DataFrame, labels: pd.Series, kind: str = DEFAULT_MODEL) -> Trained:
    """A fitted classifier on `features` (rows aligned with `labels`); refuses too few examples of either class."""
    chosen = check_kind(kind)
    positives = int(labels.sum())
    negatives = int(len(labels) - positives)
    if positives < MIN_CLASS_EXAMPLES or negatives < MIN_CLASS_EXAMPLES:
        raise NotEnoughExamples(positives, negatives)
    model = _new_model(chosen)
    started = perf_counter()
    matrix = as_matrix(features)
    matrix[:, np.isnan(matrix).all(axis=0)] = 0.0  # scikit-learn cannot bin a column with no value at all
    model.fit(matrix, labels.to_numpy(dtype=np.int8))
    return Trained(model, chosen, perf_counter() - started, positives, negatives)


def as_matrix(features: pd.DataFrame) -> np.ndarray:
    """Models are fitted on plain arrays: feature names stay ours (LightGBM refuses some characters in names)."""
    return features.to_numpy(dtype=np.float64, copy=True)


def _new_model(kind: ModelKind) -> Any:
    if kind == "lightgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            n_estimators=200,
            learning_rate=0.03,
            num_leaves=8,
            max_depth=4,
            min_child_samples=80,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            reg_lambda=2.0,
            n_jobs=THREADS,
            random_state=SEED,
            verbose=-1,
        )
    from sklearn.ensemble import HistGradientBoostingClassifier

    return _ThreadLimited(
        HistGradientBoostingClassifier(
            learning_rate=0.03,
            max_iter=500,
            early_stopping=True,  # type: ignore[arg-type]  # the stubs say str: True is documented
            l2_regularization=2.0,
            max_leaf_nodes=8,
            max_depth=4,
            min_samples_leaf=80,
            random_state=SEED,
        )
    )


class _ThreadLimited:
    """scikit-learn's OpenMP loops take every core unless told: this wrapper limits them on fit and predict."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def fit(self, x: np.ndarray, y: np.ndarray) -> _ThreadLimited:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=THREADS, user_api="openmp"):
            self.model.fit(x, y)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=THREADS, user_api="openmp"):
            return self.model.predict_proba(x)


def probabilities(model: Any, features: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(as_matrix(features))[:, 1], dtype=np.float64)
