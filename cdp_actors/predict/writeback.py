"""`cdp predict score`: every profile's score written back as two user attributes, through the platform's own
durable path.

A scoring run scores every profile once (a snapshot exported as of now, the model from the registry), keeps the
scores beside its run record in the data directory (`predict/runs/<run id>/`), and sends them in chunks of
`CHUNK_USERS` eventless batches (`mpid` and `user_attributes` only) to the intake under the platform's internal
input: the same append path as the Events API (fsynced before the call returns), so the shards apply them as any
attribute change, outputs connected to that input receive them, and audiences can use them.

Idempotent and resumable: each batch's `source_request_id` is `predict-<run id>-<mpid>`, and the intake keeps
one batch per (input, source_request_id) (`limits.dedupe_retention_days`), so a chunk sent again writes nothing
new; the run record notes each chunk the intake acknowledged (written atomically), so a run ended by `kill -9`
resumes at its first chunk not noted, with the same scores.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import msgspec
import pandas as pd

from cdp_actors.access.keys import Secret, hash_secret
from cdp_actors.config import Input, WorkspaceConfig
from cdp_actors.control.changes import AddInput
from cdp_actors.errors import BadRequest, NotFound
from cdp_actors.predict import features as feature_set
from cdp_actors.predict import registry
from cdp_actors.predict import score as scoring
from cdp_actors.predict.jobs import MapShards, ShardPaths, read_shard, shards
from cdp_actors.predict.registry import Registered
from cdp_actors.schema.events import MAX_SOURCE_REQUEST_ID_CHARS, decode_batch

INTERNAL_INPUT_NAME: Final = "cdp predictive attributes (internal)"
"""The feed input scores arrive through: the platform's own (its key is random and its secret was never kept, so
no client can send as it); created on the first scoring run through the configuration store."""
CONTROL_ACTOR: Final = "cdp predict"
"""Who the configuration history and audit log name for the internal input's creation."""
CHUNK_USERS: Final = 500
"""Batches per intake append: one group commit of ~100 KB, and the unit a resumed run restarts at."""
OVERLOADED_WAIT_S: Final = 0.5
"""Seconds to wait when the intake is over its lag limit before appending again (it drains in seconds)."""
OVERLOADED_GIVE_UP_S: Final = 600.0
"""A run stops (resumable) when the intake stays overloaded this long: the platform is not draining."""
RUNS_DIR: Final = "predict/runs"
RUN_FILE: Final = "run.json"
SCORES_FILE: Final = "scores.parquet"
RUN_ID: Final = re.compile(r"[a-z][a-z0-9_]{0,47}-[0-9]{1,16}-[0-9a-f]{6}")
"""`<name>-<created ms>-<6 hex digits>` (`start_run`): a run id names a directory, so nothing else is taken."""


def score_attribute(name: str) -> str:
    return f"predicted_{name}_score"


def percentile_attribute(name: str) -> str:
    return f"predicted_{name}_percentile"


# ---- the internal input ----------------------------------------------------------------------------------------


def internal_input(config: WorkspaceConfig) -> Input | None:
    found = [i for i in config.inputs if i.name == INTERNAL_INPUT_NAME and i.kind == "feed"]
    return min(found, key=lambda i: i.id) if found else None


def new_internal_input() -> AddInput:
    """A feed input (not an app of the Platform API) whose secret nobody holds: only its hash is kept."""
    secret_hash = hash_secret(Secret(secrets.token_urlsafe(32)))
    key = "cdp-internal-" + secrets.token_hex(16)
    return AddInput(fields={"name": INTERNAL_INPUT_NAME, "kind": "feed", "key": key, "secret_hash": secret_hash})


def ensure_internal_input(control: Any) -> int:
    """The internal input's id, created through the control actor on first use."""
    import ray

    _, config = ray.get(control.current.remote())
    found = internal_input(config)
    if found is None:
        _, config = ray.get(control.apply.remote(new_internal_input(), None, CONTROL_ACTOR))
        found = internal_input(config)
        assert found is not None
    return found.id


# ---- the run record --------------------------------------------------------------------------------------------


class ScoringRun(msgspec.Struct):
    run_id: str
    name: str
    created_ms: int
    users: int
    chunks: int
    chunk_users: int = CHUNK_USERS
    done: list[int] = []
    """The chunks the intake acknowledged."""
    accepted: int = 0
    duplicates: int = 0

    @property
    def finished(self) -> bool:
        return len(self.done) == self.chunks


def runs_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / RUNS_DIR


def run_dir(data_dir: str | Path, run_id: str) -> Path:
    return runs_dir(data_dir) / run_id


def save_run(data_dir: str | Path, run: ScoringRun) -> None:
    """Atomically: a temporary file, fsynced, renamed over the record (a kill leaves the old or the new one)."""
    path = run_dir(data_dir, run.run_id) / RUN_FILE
    partial = path.with_name(RUN_FILE + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(msgspec.json.encode(run))
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def load_run(data_dir: str | Path, run_id: str) -> ScoringRun:
    if not RUN_ID.fullmatch(run_id):
        raise BadRequest("run_id must be a scoring run's id, as `cdp predict score` printed it", "run_id")
    path = run_dir(data_dir, run_id) / RUN_FILE
    if not path.exists():
        raise NotFound(f"no scoring run {run_id!r}")
    return msgspec.json.decode(path.read_bytes(), type=ScoringRun)


def unfinished_run(data_dir: str | Path, name: str) -> ScoringRun | None:
    """The newest run of `name` that has not sent every chunk (a run ended by a kill), if any."""
    root = runs_dir(data_dir)
    found = [d.name for d in root.iterdir() if RUN_ID.fullmatch(d.name)] if root.exists() else []
    runs = [load_run(data_dir, run_id) for run_id in found if (root / run_id / RUN_FILE).exists()]
    pending = [r for r in runs if r.name == name and not r.finished]
    return max(pending, key=lambda r: r.created_ms) if pending else None


def start_run(
    data_dir: str | Path, name: str, scores: pd.DataFrame, now_ms: int, chunk_users: int = CHUNK_USERS
) -> ScoringRun:
    """Record a new run with its scores (columns mpid, score, percentile), before anything is sent."""
    run_id = f"{registry.check_name(name)}-{now_ms}-{secrets.token_hex(3)}"
    directory = run_dir(data_dir, run_id)
    directory.mkdir(parents=True, mode=0o700)
    scores[["mpid", "score", "percentile"]].to_parquet(directory / SCORES_FILE, index=False)
    run = ScoringRun(run_id, name, now_ms, len(scores), -(-len(scores) // chunk_users), chunk_users)
    save_run(data_dir, run)
    return run


# ---- the batches -----------------------------------------------------------------------------------------------


def score_batch(run_id: str, name: str, mpid: int, score: float, percentile: int) -> dict[str, Any]:
    return {
        "mpid": mpid,
        "environment": "production",
        "source_request_id": f"predict-{run_id}-{mpid}",
        "events": [],
        "user_attributes": {score_attribute(name): round(float(score), 6), percentile_attribute(name): percentile},
    }


def chunk_batches(run: ScoringRun, scores: pd.DataFrame, chunk: int) -> list[tuple[str | None, bytes]]:
    """Chunk `chunk`'s batches as the intake takes them, each validated as the Events API validates one."""
    rows = scores.iloc[chunk * run.chunk_users : (chunk + 1) * run.chunk_users]
    encoded = []
    for mpid, score, percentile in zip(rows["mpid"], rows["score"], rows["percentile"], strict=True):
        batch = score_batch(run.run_id, run.name, int(mpid), float(score), int(percentile))
        raw = msgspec.json.encode(batch)
        decode_batch(raw)  # raises BatchError: a batch the door would refuse is never appended
        encoded.append((batch["source_request_id"], raw))
    assert all(len(srid) <= MAX_SOURCE_REQUEST_ID_CHARS for srid, _ in encoded)
    return encoded


@dataclass
class Sent:
    accepted: int
    duplicates: int


Append = Callable[[list[tuple[str | None, bytes]]], Any]
"""Appends batches to the intake under the internal input; returns its `AppendResult`."""


def send_run(data_dir: str | Path, run: ScoringRun, append: Append, progress: Callable[[ScoringRun], None]) -> None:
    """Send every chunk not noted done, noting each once the intake acknowledged it."""
    scores = pd.read_parquet(run_dir(data_dir, run.run_id) / SCORES_FILE)
    for chunk in pending_chunks(run):
        sent = append_until_taken(append, chunk_batches(run, scores, chunk))
        run.done = sorted({*run.done, chunk})
        run.accepted += sent.accepted
        run.duplicates += sent.duplicates
        save_run(data_dir, run)
        progress(run)


def pending_chunks(run: ScoringRun) -> Iterator[int]:
    done = set(run.done)
    return (chunk for chunk in range(run.chunks) if chunk not in done)


def append_until_taken(append: Append, batches: list[tuple[str | None, bytes]]) -> Sent:
    deadline = time.monotonic() + OVERLOADED_GIVE_UP_S
    while True:
        result = append(batches)
        if result.refused:
            raise RuntimeError(f"the intake refused a scoring chunk: {result.refused}")
        if not result.overloaded:
            return Sent(result.accepted, result.duplicates)
        if time.monotonic() > deadline:
            raise TimeoutError("the intake stayed overloaded; run `cdp predict score` again to resume")
        time.sleep(OVERLOADED_WAIT_S)


def intake_append(input_id: int) -> Append:
    """Appends through the running platform's intake actor (this process is attached to its Ray)."""
    import ray

    from cdp_actors import handles

    intake = handles.intake()

    def append(batches: list[tuple[str | None, bytes]]) -> Any:
        return ray.get(intake.append.remote(input_id, int(time.time() * 1000), batches))

    return append


# ---- scoring as of now -----------------------------------------------------------------------------------------


def score_now(
    name: str, snapshot_dir: Path, data_dir: str | Path, now_ms: int, map_shards: MapShards | None = None
) -> pd.DataFrame:
    """The registry's latest model `name` applied to a snapshot as of `now_ms`: columns mpid, score, percentile."""
    return score_snapshot(registry.latest(data_dir, name), snapshot_dir, now_ms, map_shards)


def score_snapshot(
    model: Registered, snapshot_dir: str | Path, now_ms: int, map_shards: MapShards | None = None
) -> pd.DataFrame:
    """Every profile of the snapshot scored: features per shard with the model's vocabulary and lookback, as of
    `now_ms` (a profile with no event in the lookback still gets a row: zero counts); probabilities per shard;
    percentiles once over every user, so a user is ranked among all users, not among its shard's."""
    mapper: MapShards = map_shards or (lambda function, items: map(function, items))
    lookback_days = int(model.description["lookback_days"])

    def shard_scores(paths: ShardPaths) -> pd.Series:
        profiles, events = read_shard(paths)
        frame = feature_set.features(profiles, events, model.vocabulary, now_ms, lookback_days)
        return scoring.probability(model, frame) if len(frame) else pd.Series(dtype="float64", name="score")

    parts = [part for part in mapper(shard_scores, shards(snapshot_dir)) if len(part)]
    scores = cast(pd.Series, pd.concat(parts).sort_index()) if parts else pd.Series(dtype="float64", name="score")
    return pd.DataFrame(
        {
            "mpid": scores.index.to_numpy(dtype="int64"),
            "score": scores.to_numpy(dtype="float64"),
            "percentile": scoring.percentiles(scores).to_numpy(dtype="int64"),
        }
    )
