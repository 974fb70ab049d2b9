"""Scoring a snapshot of several shards with a registered model (what `cdp predict score` writes back), and the
`cdp predict list` / `show` commands against a registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdp_actors.errors import NotFound
from cdp_actors.predict import api, cli, jobs, writeback
from cdp_actors.predict.features import features
from cdp_actors.predict.score import probability
from cdp_actors.predict.synth import snapshot_frames, synthesize

USERS = 2000
SEED = 4
SILENT_MPID = 12345
"""A profile with no event at all: it is still scored."""


def silent_profile(profiles: pd.DataFrame) -> pd.DataFrame:
    row = profiles.iloc[:1].copy()
    row["mpid"] = SILENT_MPID
    row["user_attributes"] = "{}"
    return row


def write_shards(folder: Path, profiles: pd.DataFrame, events: pd.DataFrame) -> list[set[int]]:
    """Two shards, split by mpid parity (as the platform splits by a hash): each shard's users and their events."""
    users = []
    for shard in (0, 1):
        mine = profiles[profiles["mpid"] % 2 == shard]
        for name, frame in (("profiles", mine), ("events", events[events["mpid"].isin(mine["mpid"])])):
            (folder / name).mkdir(parents=True, exist_ok=True)
            frame.to_parquet(folder / name / f"shard-{shard:03d}.parquet")
        users.append(set(mine["mpid"].tolist()))
    return users


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    synthetic = synthesize(USERS, seed=SEED)
    profiles, events = snapshot_frames(synthetic.batches)
    profiles = pd.concat([profiles, silent_profile(profiles)], ignore_index=True)
    root = tmp_path_factory.mktemp("scoring")
    shard_users = write_shards(root / "snapshot", profiles, events)
    mapped: list[object] = []

    def map_shards(function, items):  # type: ignore[no-untyped-def]
        mapped.extend(items)
        return map(function, items)

    trained = jobs.train(
        root / "snapshot",
        "buyers",
        "purchase",
        window_days=synthetic.window_days,
        lookback_days=90,
        data_dir=root / "data",
        as_of_ms=synthetic.as_of_ms,
        map_shards=map_shards,
    )
    scores = writeback.score_snapshot(trained.registered, root / "snapshot", synthetic.as_of_ms, map_shards)
    return {
        "root": root,
        "trained": trained,
        "scores": scores,
        "profiles": profiles,
        "events": events,
        "shard_users": shard_users,
        "mapped": mapped,
        "as_of_ms": synthetic.as_of_ms,
    }


def plain_percentile(value: float, everyone: list[float]) -> int:
    return 100 * sum(1 for other in everyone if other < value) // len(everyone)


def test_every_profile_of_every_shard_is_scored_once(scored: dict) -> None:
    scores = scored["scores"]
    assert sorted(scores["mpid"]) == sorted(scored["profiles"]["mpid"])
    assert scores["score"].between(0.0, 1.0).all() and scores["percentile"].between(0, 100).all()
    assert len(scored["mapped"]) == 2 * 2 + 2  # vocabulary and features passes in training, then scoring


def test_percentiles_rank_each_user_among_all_shards(scored: dict) -> None:
    scores = scored["scores"]
    everyone = scores["score"].tolist()
    expected = [plain_percentile(value, everyone) for value in everyone]
    assert scores["percentile"].tolist() == expected
    first_shard = scores[scores["mpid"].isin(scored["shard_users"][0])]
    among_shard = [plain_percentile(value, first_shard["score"].tolist()) for value in first_shard["score"]]
    assert among_shard != first_shard["percentile"].tolist()  # a per-shard ranking would not pass the test above


def test_scores_do_not_depend_on_the_sharding(scored: dict) -> None:
    model = scored["trained"].registered
    frame = features(scored["profiles"], scored["events"], model.vocabulary, scored["as_of_ms"], 90)
    whole = probability(model, frame)
    by_mpid = scored["scores"].set_index("mpid")["score"]
    np.testing.assert_allclose(by_mpid.loc[whole.index].to_numpy(), whole.to_numpy())


def test_a_profile_without_events_gets_a_score(scored: dict) -> None:
    silent = scored["scores"].set_index("mpid").loc[SILENT_MPID]
    assert 0.0 <= silent["score"] <= 1.0


def test_list_prints_each_model_as_a_json_line(scored: dict, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = str(scored["root"] / "data")
    assert cli.cmd_list(argparse.Namespace(data_dir=data_dir)) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        {"name": "buyers", "versions": [1], "latest": 1, "auc": scored["trained"].metrics["auc"]},
    ]


def test_show_prints_the_models_goal_windows_and_metrics(scored: dict, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = str(scored["root"] / "data")
    assert cli.cmd_show(argparse.Namespace(data_dir=data_dir, name="buyers", version=None)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["description"]["goal"] == scored["trained"].registered.description["goal"]
    assert shown["description"]["lookback_days"] == 90 and shown["description"]["version"] == 1
    assert shown["metrics"]["auc"] == scored["trained"].metrics["auc"]
    assert "vocabulary" not in shown["description"]
    with pytest.raises(NotFound):
        cli.cmd_show(argparse.Namespace(data_dir=data_dir, name="buyers", version=2))


def test_synth_requests_stay_under_the_events_apis_size_and_count_limits() -> None:
    batches = synthesize(300, seed=1).batches
    requests = list(api.chunked(batches, api.SYNTH_BULK, api.SYNTH_BULK_BYTES))
    assert [batch for request in requests for batch in request] == batches
    assert all(len(request) <= api.SYNTH_BULK for request in requests)
    assert all(len(json.dumps(request)) <= api.SYNTH_BULK_BYTES for request in requests)
