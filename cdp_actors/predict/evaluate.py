"""Evaluation on the holdout: AUC, log loss, calibration (reliability curve, 10 bins of predicted probability),
lift by decile, permutation importance, and the oracle's AUC when the true probabilities are known (synthetic data).

Importance is permutation importance (the AUC lost when one feature's column is shuffled, on a holdout sample),
the same measure for both models: LightGBM's gain and scikit-learn's (absent) impurity importances would not
compare, and gain favours features with many split points."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score, roc_curve

from cdp_actors.predict.train import probabilities

BINS: Final = 10
HISTOGRAM_BINS: Final = 40
"""Bins of the score distribution kept in the metrics (not every score: the metrics stay small at any size)."""
IMPORTANCE_SAMPLE: Final = 5_000
"""Holdout rows the permutation importance scores: enough for a stable AUC, bounded so it stays seconds."""
IMPORTANCE_TOP: Final = 20
"""Features kept in the metrics and the chart, the most important first."""


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, None when the labels hold a single class (no AUC is defined)."""
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None


def calibration(labels: np.ndarray, scores: np.ndarray, bins: int = BINS) -> list[dict[str, float]]:
    """Per bin of predicted probability ([0, 0.1), ..., [0.9, 1]) with users in it: mean predicted, observed rate."""
    which = np.minimum((scores * bins).astype(int), bins - 1)
    curve = []
    for index in range(bins):
        inside = which == index
        if inside.any():
            curve.append(
                {
                    "bin": index,
                    "predicted": float(scores[inside].mean()),
                    "observed": float(labels[inside].mean()),
                    "users": int(inside.sum()),
                }
            )
    return curve


def lift_by_decile(labels: np.ndarray, scores: np.ndarray) -> list[dict[str, float]]:
    """Deciles by score, highest first (decile 1 = the top 10%): the goal rate in each over the overall rate."""
    order = np.lexsort((np.arange(len(scores)), -scores))  # ties: first come first, so deterministic
    base = float(labels.mean()) if len(labels) else 0.0
    rows = []
    for decile, part in enumerate(np.array_split(order, 10), start=1):
        rate = float(labels[part].mean()) if len(part) else 0.0
        rows.append({"decile": decile, "users": len(part), "rate": rate, "lift": rate / base if base else 0.0})
    return rows


def score_histogram(scores: np.ndarray) -> dict[str, list[float]]:
    """Holdout users per bin of predicted probability (`HISTOGRAM_BINS` bins over [0, 1])."""
    counts, edges = np.histogram(scores, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {"edges": [float(edge) for edge in edges], "users": [float(count) for count in counts]}


def permutation_importance(
    model: Any, features: pd.DataFrame, labels: np.ndarray, seed: int = 0
) -> list[dict[str, float | str]]:
    """AUC lost when each feature is shuffled (sample of the holdout), the largest first."""
    rng = np.random.default_rng(seed)
    if len(features) > IMPORTANCE_SAMPLE:
        chosen = np.sort(rng.choice(len(features), IMPORTANCE_SAMPLE, replace=False))
        features, labels = features.iloc[chosen], labels[chosen]
    baseline = auc(labels, probabilities(model, features))
    if baseline is None:
        return []
    losses = []
    for column in features.columns:
        if features[column].nunique(dropna=False) <= 1:
            losses.append((column, 0.0))
            continue
        shuffled = features.copy()
        shuffled[column] = rng.permutation(shuffled[column].to_numpy())
        losses.append((column, baseline - (auc(labels, probabilities(model, shuffled)) or baseline)))
    losses.sort(key=lambda item: (-item[1], item[0]))
    return [{"feature": name, "auc_loss": float(loss)} for name, loss in losses[:IMPORTANCE_TOP]]


def evaluate(
    model: Any, features: pd.DataFrame, labels: pd.Series, true_probability: pd.Series | None = None
) -> dict[str, Any]:
    """The metrics of `model` on a holdout (`features` rows aligned with `labels`)."""
    truth = labels.to_numpy(dtype=np.int8)
    scores = probabilities(model, features)
    false_positive, true_positive, _ = roc_curve(truth, scores) if auc(truth, scores) is not None else ([], [], [])
    metrics: dict[str, Any] = {
        "holdout_users": len(truth),
        "holdout_positives": int(truth.sum()),
        "auc": auc(truth, scores),
        "log_loss": float(log_loss(truth, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "base_rate": float(truth.mean()) if len(truth) else 0.0,
        "calibration": calibration(truth, scores),
        "lift_by_decile": lift_by_decile(truth, scores),
        "importance_kind": "permutation (holdout AUC lost when the feature is shuffled)",
        "importance": permutation_importance(model, features, truth),
        "roc": {"fpr": [float(x) for x in false_positive], "tpr": [float(y) for y in true_positive]},
        "score_histogram": score_histogram(scores),
        "oracle_auc": None,
    }
    if true_probability is not None:
        known = true_probability.reindex(labels.index)
        present = known.notna().to_numpy()
        metrics["oracle_auc"] = auc(truth[present], known.to_numpy()[present])
    return metrics
