"""Synthetic data → snapshot frames → the training job: the model comes near the oracle; the registry, the report,
the refusal of too few examples, and the percentile math."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdp_actors.errors import BadRequest, NotFound
from cdp_actors.predict import jobs, registry
from cdp_actors.predict.evaluate import calibration, lift_by_decile
from cdp_actors.predict.report import CHARTS
from cdp_actors.predict.score import percentiles, score
from cdp_actors.predict.synth import SYNTH_ID_ATTRIBUTE, snapshot_frames, synthesize
from cdp_actors.predict.train import MIN_CLASS_EXAMPLES, NotEnoughExamples, fit
from cdp_actors.schema.events import check_batch, decode_batch

USERS = 3000
SEED = 3


def write_snapshot(folder: Path, profiles: pd.DataFrame, events: pd.DataFrame) -> Path:
    for name, frame in (("profiles", profiles), ("events", events)):
        (folder / name).mkdir(parents=True)
        frame.to_parquet(folder / name / "shard-000.parquet")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[jobs.Trained, Path]:
    synthetic = synthesize(USERS, seed=SEED)
    root = tmp_path_factory.mktemp("predict")
    snapshot = write_snapshot(root / "snapshot", *snapshot_frames(synthetic.batches))
    result = jobs.train(
        snapshot,
        "buyers",
        "purchase",
        window_days=synthetic.window_days,
        lookback_days=90,
        data_dir=root / "data",
        out=root / "report",
        true_probability=synthetic.true_probability,
        as_of_ms=synthetic.as_of_ms,
    )
    return result, root


def test_model_auc_is_near_the_oracle(trained: tuple[jobs.Trained, Path]) -> None:
    metrics = trained[0].metrics
    assert metrics["oracle_auc"] > 0.7
    assert metrics["auc"] > metrics["oracle_auc"] - 0.05
    assert metrics["auc"] < metrics["oracle_auc"] + 0.05  # above the oracle: the label leaked into the features
    assert metrics["lift_by_decile"][0]["lift"] > 2
    behaviour = {"recency_days", "revenue_90d", "purchases_90d", "revenue_30d", "purchases_30d", "mean_order_value"}
    assert {row["feature"] for row in metrics["importance"][:3]} & behaviour  # what the truth drives, not noise


def test_report_and_registry(trained: tuple[jobs.Trained, Path]) -> None:
    result, root = trained
    assert {f"{chart}.png" for chart in CHARTS} | {"index.html", "metrics.json"} <= {
        path.name for path in (root / "report").iterdir()
    }
    assert json.loads((root / "report" / "metrics.json").read_text())["auc"] == result.metrics["auc"]
    assert sum(result.metrics["score_histogram"]["users"]) == result.metrics["holdout_users"]
    assert result.registered.version == 1
    assert registry.list_models(root / "data") == [
        {"name": "buyers", "versions": [1], "latest": 1, "auc": result.metrics["auc"]}
    ]
    shown = registry.show(root / "data", "buyers")
    assert shown["description"]["goal"]["kind"] == "purchase"
    assert shown["description"]["window_days"] == 14
    assert SYNTH_ID_ATTRIBUTE not in json.dumps(shown["description"]["features"])


def test_a_registered_model_scores_its_features_and_versions_count_up(trained: tuple[jobs.Trained, Path]) -> None:
    result, root = trained
    model = registry.latest(root / "data", "buyers")
    profiles, events = snapshot_frames(synthesize(50, seed=9).batches)
    from cdp_actors.predict.features import features

    frame = features(profiles, events, model.vocabulary, int(events["timestamp_ms"].max()), 90)
    scored = score(model, frame)
    assert scored["score"].between(0, 1).all() and len(scored) == 50
    assert scored["percentile"].max() >= 90 and scored["percentile"].min() == 0
    again = registry.register(root / "data", "buyers", model.model, model.description, model.metrics)
    assert again.version == 2 and registry.latest(root / "data", "buyers").version == 2


@pytest.mark.parametrize("name", ["", "Buyers", "9lives", "a-b", "x" * 49, "../up"])
def test_model_names_are_refused_precisely(name: str, tmp_path: Path) -> None:
    with pytest.raises(BadRequest) as refused:
        registry.latest(tmp_path, name)
    assert refused.value.path == "name"


def test_an_unknown_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        registry.latest(tmp_path, "nobody")


def test_training_refuses_fewer_than_100_positives() -> None:
    rows = 1000
    features = pd.DataFrame({"x": np.arange(rows, dtype=float)})
    labels = pd.Series([1] * (MIN_CLASS_EXAMPLES - 1) + [0] * (rows - MIN_CLASS_EXAMPLES + 1))
    with pytest.raises(NotEnoughExamples, match="99 users who reached the goal"):
        fit(features, labels)
    enough = pd.Series([1] * MIN_CLASS_EXAMPLES + [0] * (rows - MIN_CLASS_EXAMPLES))
    assert fit(features, enough, "lightgbm").kind == "lightgbm"


def test_unknown_model_kind_is_refused() -> None:
    with pytest.raises(BadRequest) as refused:
        fit(pd.DataFrame({"x": [1.0]}), pd.Series([1]), "xgboost")
    assert refused.value.path == "model"


def test_synthetic_batches_are_valid_events_api_batches_and_deterministic() -> None:
    first, second = synthesize(20, seed=5), synthesize(20, seed=5)
    assert first == second
    assert first.true_probability != synthesize(20, seed=6).true_probability
    for batch in first.batches:
        check_batch(decode_batch(json.dumps(batch).encode()))
    purchases = [
        event for batch in first.batches for event in batch["events"] if event["event_type"] == "commerce_event"
    ]
    assert purchases and all(event["data"]["product_action"]["total_amount"] > 0 for event in purchases)


def test_lift_by_decile_and_calibration() -> None:
    scores = np.linspace(0.0, 0.99, 100)
    labels = (scores >= 0.895).astype(np.int8)
    lift = lift_by_decile(labels, scores)
    assert [row["lift"] for row in lift] == [10.0] + [0.0] * 9
    curve = calibration(labels, scores)
    assert [row["users"] for row in curve] == [10] * 10
    assert curve[9]["observed"] == 1.0 and curve[8]["observed"] == 0.0
    assert curve[0]["predicted"] == pytest.approx(0.045)


def test_percentile_examples() -> None:
    scores = pd.Series([0.1, 0.9, 0.5, 0.5, 0.2], index=[10, 11, 12, 13, 14])
    assert percentiles(scores).to_dict() == {10: 0, 11: 80, 12: 40, 13: 40, 14: 20}
    assert percentiles(pd.Series([0.3])).tolist() == [0]
    assert percentiles(pd.Series([], dtype=float)).tolist() == []


@given(st.lists(st.floats(0, 1), min_size=1, max_size=200))
def test_percentile_is_the_share_of_users_scored_lower(values: list[float]) -> None:
    got = percentiles(pd.Series(values)).tolist()
    expected = [int(100 * sum(other < value for other in values) / len(values)) for value in values]
    assert got == expected
