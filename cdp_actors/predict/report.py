"""A training run's report: `metrics.json` and an HTML page with its charts as PNGs (ROC, lift by decile,
calibration, score distribution, feature importance), written to one directory."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the headless backend)

CHARTS: Final = ("roc", "lift", "calibration", "scores", "importance")
SUMMARY: Final = ("auc", "oracle_auc", "log_loss", "base_rate", "holdout_users", "holdout_positives")


def write_report(out: str | Path, metrics: dict[str, Any], title: str) -> Path:
    """Write `metrics.json`, the PNGs and `index.html` to `out`; return the page's path."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    for chart in CHARTS:
        figure = plt.figure(figsize=(5.5, 4))
        _DRAW[chart](figure.gca(), metrics)
        figure.tight_layout()
        figure.savefig(folder / f"{chart}.png", dpi=90)
        plt.close(figure)
    page = folder / "index.html"
    page.write_text(_page(metrics, title))
    return page


def _roc(axes: Any, metrics: dict[str, Any]) -> None:
    axes.plot(metrics["roc"]["fpr"], metrics["roc"]["tpr"], label=f"model (AUC {_number(metrics['auc'])})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the holdout")
    axes.legend(loc="lower right")


def _lift(axes: Any, metrics: dict[str, Any]) -> None:
    rows = metrics["lift_by_decile"]
    axes.bar([row["decile"] for row in rows], [row["lift"] for row in rows])
    axes.axhline(1.0, color="grey", linestyle="--")
    axes.set(xlabel="decile by score (1 = top 10%)", ylabel="lift over the base rate", title="Lift by decile")


def _calibration(axes: Any, metrics: dict[str, Any]) -> None:
    rows = metrics["calibration"]
    axes.plot([row["predicted"] for row in rows], [row["observed"] for row in rows], marker="o", label="model")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    axes.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration (10 bins)")
    axes.legend(loc="upper left")


def _scores(axes: Any, metrics: dict[str, Any]) -> None:
    histogram = metrics["score_histogram"]
    edges = histogram["edges"]
    axes.stairs(histogram["users"], edges, fill=True)
    axes.set(xlabel="predicted probability", ylabel="users", title="Score distribution (holdout)")


def _importance(axes: Any, metrics: dict[str, Any]) -> None:
    rows = list(reversed(metrics["importance"]))
    axes.barh([str(row["feature"]) for row in rows], [row["auc_loss"] for row in rows])
    axes.tick_params(axis="y", labelsize=6)
    axes.set(xlabel="AUC lost when shuffled", title="Feature importance (permutation)")


_DRAW: Final = {"roc": _roc, "lift": _lift, "calibration": _calibration, "scores": _scores, "importance": _importance}


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _page(metrics: dict[str, Any], title: str) -> str:
    rows = "".join(f"<tr><th>{key}</th><td>{_number(metrics.get(key))}</td></tr>" for key in SUMMARY)
    model = metrics.get("model", {})
    facts = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_number(v)}</td></tr>" for k, v in model.items())
    images = "".join(f'<img src="{chart}.png" alt="{chart}">' for chart in CHARTS)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:48%;margin:.5em}"
        "th{text-align:left;padding-right:1em}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><table>{rows}{facts}</table>{images}"
        "<p>Full metrics: <a href='metrics.json'>metrics.json</a></p></body></html>"
    )
