"""The training job over a snapshot directory: goal → vocabulary pass → features and labels per shard → holdout
split → fit → evaluate → register → report. Ray-free: the per-shard passes go through `map_shards`, a plain `map`
by default, which the CLI replaces with Ray tasks or Ray Data to spread shards over the cluster's nodes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import pandas as pd
import pyarrow.parquet as pq

from cdp_actors.errors import BadRequest
from cdp_actors.predict import features as feature_set
from cdp_actors.predict import registry
from cdp_actors.predict.goal import Goal, goal
from cdp_actors.predict.labels import Split, labels, split
from cdp_actors.predict.report import write_report
from cdp_actors.predict.snapshot import EVENTS_DIR, MANIFEST, PROFILES_DIR
from cdp_actors.predict.synth import SYNTH_ID_ATTRIBUTE
from cdp_actors.predict.train import DEFAULT_MODEL, check_kind, fit, in_holdout

PHASES: Final = ("read", "vocabulary", "features", "train", "evaluate", "register")
Progress = Callable[[str, int, int], None]
"""progress(phase, done, total): called as each phase advances (the CLI draws a bar per phase)."""
Result = TypeVar("Result")
ShardPaths = tuple[Path, Path]
"""One shard's (profiles file, events file)."""
MapShards = Callable[[Callable[[ShardPaths], Any], list[ShardPaths]], Iterable[Any]]


@dataclass(frozen=True)
class Trained:
    registered: registry.Registered
    metrics: dict[str, Any]
    report: Path | None


@dataclass(frozen=True)
class ShardExamples:
    """One shard's features (every profile), labels (the population only) and mpid per synthetic customer_id."""

    features: pd.DataFrame
    labels: pd.Series
    customer_ids: pd.Series


def shards(snapshot_dir: str | Path) -> list[ShardPaths]:
    root = Path(snapshot_dir)
    found = sorted((root / PROFILES_DIR).glob("shard-*.parquet"))
    if not found:
        raise BadRequest(f"No snapshot in {root}: no {PROFILES_DIR}/shard-*.parquet", "snapshot_dir")
    return [(profiles, root / EVENTS_DIR / profiles.name) for profiles in found]


def read_shard(paths: ShardPaths) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(paths[0]), pd.read_parquet(paths[1])


def manifest(snapshot_dir: str | Path) -> dict[str, Any]:
    path = Path(snapshot_dir) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def snapshot_end_ms(paths: list[ShardPaths], described: Mapping[str, Any]) -> int:
    """The snapshot's `as of`: its `--until` when it had one, else its latest event."""
    if described.get("until_ms"):
        return int(described["until_ms"])
    ends = [pq.read_table(events, columns=["timestamp_ms"]).column(0) for _, events in paths]
    latest = max((int(column.to_numpy().max()) for column in ends if len(column)), default=None)
    if latest is None:
        raise BadRequest("The snapshot holds no events to train on", "snapshot_dir")
    return latest


def shard_examples(paths: ShardPaths, vocab: feature_set.Vocabulary, at: Split, target: Goal) -> ShardExamples:
    """The per-shard pass: a shard's two files in, its features and labels out."""
    profiles, events = read_shard(paths)
    frame = feature_set.features(profiles, events, vocab, at.cutoff_ms, at.lookback_days)
    return ShardExamples(frame, labels(target, events, at), _customer_ids(profiles))


def _customer_ids(profiles: pd.DataFrame) -> pd.Series:
    ids = profiles["user_attributes"].map(lambda text: json.loads(text or "{}").get(SYNTH_ID_ATTRIBUTE))
    return pd.Series(profiles["mpid"].to_numpy(), index=ids.to_numpy()).loc[ids.notna().to_numpy()]


def train(
    snapshot_dir: str | Path,
    name: str,
    goal_event: str,
    goal_event_type: str = "custom_event",
    window_days: int = 30,
    lookback_days: int = 90,
    data_dir: str | Path = ".",
    out: str | Path | None = None,
    model: str = DEFAULT_MODEL,
    condition: dict[str, Any] | None = None,
    exclude_attributes: Iterable[str] = (),
    true_probability: Mapping[str, float] | None = None,
    as_of_ms: int | None = None,
    progress: Progress | None = None,
    map_shards: MapShards | None = None,
) -> Trained:
    """Train, evaluate and register a new version of model `name`; write the report to `out` when given.

    `true_probability` (customer_id -> probability, from `synth`) adds the oracle's AUC to the metrics."""
    registry.check_name(name)
    kind = check_kind(model)
    target = goal(goal_event, goal_event_type, window_days, condition)
    tell = progress or (lambda phase, done, total: None)
    mapper: MapShards = map_shards or (lambda function, items: map(function, items))
    paths = shards(snapshot_dir)
    described = manifest(snapshot_dir)
    at = split(as_of_ms if as_of_ms is not None else snapshot_end_ms(paths, described), window_days, lookback_days)
    tell("read", 1, 1)
    excluded = (*exclude_attributes, SYNTH_ID_ATTRIBUTE)
    counts = _each(mapper, lambda shard: feature_set.shard_counts(*read_shard(shard), at.cutoff_ms, excluded), paths)
    total = feature_set.VocabularyCounts()
    for done, part in enumerate(counts, start=1):
        total = total.merged(part)
        tell("vocabulary", done, len(paths))
    vocab = feature_set.vocabulary_from_counts(total)
    parts = []
    for done, part in enumerate(_each(mapper, lambda shard: shard_examples(shard, vocab, at, target), paths), 1):
        parts.append(part)
        tell("features", done, len(paths))
    return _fit_and_register(parts, vocab, at, target, kind, name, data_dir, out, described, true_probability, tell)


def _each(mapper: MapShards, function: Callable[[ShardPaths], Result], paths: list[ShardPaths]) -> Iterable[Result]:
    return mapper(function, paths)


def _fit_and_register(
    parts: list[ShardExamples],
    vocab: feature_set.Vocabulary,
    at: Split,
    target: Goal,
    kind: str,
    name: str,
    data_dir: str | Path,
    out: str | Path | None,
    described: dict[str, Any],
    true_probability: Mapping[str, float] | None,
    tell: Progress,
) -> Trained:
    every = pd.concat([part.features for part in parts]).sort_index()
    outcome = cast(pd.Series, pd.concat([part.labels for part in parts]).sort_index())
    outcome = cast(pd.Series, outcome[outcome.index.isin(every.index)])  # events of a profile gone since: no row
    examples = every.loc[outcome.index]
    holdout = in_holdout(outcome.index)
    trained = fit(examples[~holdout], cast(pd.Series, outcome[~holdout]), kind)
    tell("train", 1, 1)
    from cdp_actors.predict.evaluate import evaluate

    truth = _truth_by_mpid(parts, true_probability)
    metrics = evaluate(trained.model, examples[holdout], cast(pd.Series, outcome[holdout]), truth)
    metrics["model"] = {
        "kind": trained.kind,
        "fit_seconds": round(trained.fit_seconds, 3),
        "train_users": int((~holdout).sum()),
        "train_positives": trained.positives,
        "features": len(every.columns),
    }
    tell("evaluate", 1, 1)
    description = {
        "kind": trained.kind,
        "goal": target.describe(),
        "as_of_ms": at.as_of_ms,
        "cutoff_ms": at.cutoff_ms,
        "window_days": at.window_days,
        "lookback_days": at.lookback_days,
        "features": list(every.columns),
        "vocabulary": vocab.to_json(),
        "snapshot": described,
    }
    registered = registry.register(data_dir, name, trained.model, description, metrics)
    tell("register", 1, 1)
    title = f"{name} v{registered.version}: {_goal_words(target)}"
    page = write_report(out, metrics, title) if out is not None else None
    return Trained(registered, metrics, page)


def _truth_by_mpid(parts: list[ShardExamples], truth: Mapping[str, float] | None) -> pd.Series | None:
    if truth is None:
        return None
    ids = cast(pd.Series, pd.concat([part.customer_ids for part in parts]))
    known = cast(pd.Series, ids[ids.index.isin(list(truth))])
    return pd.Series([truth[str(key)] for key in known.index], index=pd.Index(known.to_numpy(), name="mpid"))


def _goal_words(target: Goal) -> str:
    what = {"purchase": "a purchase", "churn": "no event"}.get(target.kind, f"{target.event_type} {target.event_name}")
    return f"{what} within {target.window_days} days"
