"""The Python API of predictive attributes: `cdp export` and `cdp predict` as functions taking the same arguments
(`goal_event_type` for `--goal-event-type`, `goal_condition` for `--goal-condition`, ...), for a notebook or a
script. Each attaches to the running platform's Ray as the commands do (`address`, else the address its dispatcher
noted in `data_dir`, else auto), unless this process already is in a Ray.

    from cdp_actors.predict.api import score, train

    trained = train("buyers", "purchase", window_days=14, data_dir="/srv/cdp-data", out="report/")
    run = score("buyers", data_dir="/srv/cdp-data")

`train` and `score` take a fresh snapshot first, under `snapshot_dir` (default: the data directory's
`predict/snapshots`), and delete it when done. On a cluster every node must see that directory: each shard's files
are written on the shard's node and read by feature and scoring tasks on any node, so give a shared path (NFS, or
any path every node mounts). For a snapshot already on disk, `jobs.train(snapshot_dir, ...)` trains without the
platform. Refusals raise `cdp_actors.errors` classes naming the argument at fault; nothing is registered or written
back after one."""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import ipaddress
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from cdp_actors.predict.jobs import Progress, Trained
    from cdp_actors.predict.snapshot import Manifest
    from cdp_actors.predict.writeback import ScoringRun

DEFAULT_DATA_DIR: Final = ".cdp-data"
SNAPSHOTS_DIR: Final = "predict/snapshots"
"""Where `train` and `score` put their snapshot in the data directory when no `snapshot_dir` is given."""
DEFAULT_EVENTS_URL: Final = "http://127.0.0.1:8000"
DEMO_KEY: Final = ("demo-key", "demo-secret")
"""The demo workspace's input (configs/workspace.yaml): what `synth` sends as unless told otherwise."""
SYNTH_BULK: Final = 100
"""Batches per `/v2/bulkevents` request: the platform's default `limits.max_bulk_batches`."""
SYNTH_BULK_BYTES: Final = 200_000
"""Bytes of JSON per request: under the Events API's 256 KB a request, with room for the array's own syntax."""
SYNTH_CONCURRENCY: Final = 4
"""Requests in flight at once: enough to keep two cores' ingest busy without piling into its backpressure."""
SYNTH_RETRIES: Final = 20
TRUTH_FILE: Final = "truth.parquet"
"""`synth`'s true probability per customer_id, which `train(truth=)` reads for the oracle's AUC."""
RETRY_WAIT_S: Final = 1.0  # after a 429/503: the platform's Retry-After is about this


def _silent(phase: str, done: int, total: int) -> None:
    return None


# ---- attaching to the running platform -------------------------------------------------------------------------


def attach(data_dir: str | Path = DEFAULT_DATA_DIR, address: str | None = None) -> str:
    """Join the running platform's Ray (unless this process already is in one); its data directory, checked to be
    the one `data_dir` names unless `address` chose the Ray."""
    import ray

    from cdp_actors import handles
    from cdp_actors.errors import BadRequest, NotFound

    wanted = str(Path(data_dir).resolve())
    if not ray.is_initialized():
        from cdp_actors.ray_attach import join_platform_ray  # finds the address as every `cdp` command does

        join_platform_ray(argparse.Namespace(data_dir=str(data_dir), address=address))
    try:
        running = str(ray.get(handles.control().data_directory.remote()))
    except ValueError:
        raise NotFound("No platform runs in this Ray: start `cdp serve`, or give data_dir / address") from None
    if running != wanted and not address:
        raise BadRequest(f"The platform in this Ray keeps its data in {running}, not {wanted}", "data_dir")
    return running


def epoch_ms(moment: str | int | None) -> int | None:
    """Epoch milliseconds, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if moment is None or isinstance(moment, int):
        return moment
    if moment.lstrip("-").isdigit():
        return int(moment)
    try:
        parsed = dt.datetime.fromisoformat(moment)
    except ValueError:
        from cdp_actors.errors import BadRequest

        raise BadRequest(f"{moment!r} is neither epoch milliseconds nor an ISO 8601 date/time", "since/until") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp() * 1000)


def now_ms() -> int:
    return int(time.time() * 1000)


# ---- export --------------------------------------------------------------------------------------------------


def export(
    what: str,
    out: str | Path,
    since: str | int | None = None,
    until: str | int | None = None,
    *,
    data_dir: str | Path = DEFAULT_DATA_DIR,
    address: str | None = None,
) -> Manifest:
    """`cdp export`: the running platform's `profiles`, `events` or `all` as Parquet in `out`, one file per shard,
    written by a Ray task on the node holding the shard (`out` must be shared by every node on a cluster)."""
    from cdp_actors.errors import BadRequest
    from cdp_actors.predict.export import KINDS, Window, export_snapshot

    if what not in (*KINDS, "all"):
        raise BadRequest(f"what must be one of {', '.join(KINDS)}, all", "what")
    window = Window(epoch_ms(since), epoch_ms(until))
    attach(data_dir, address)
    return export_snapshot(out, KINDS if what == "all" else (what,), window)


def snapshot_now(data_dir: str | Path, purpose: str, snapshot_dir: str | Path | None = None) -> Path:
    """A fresh snapshot of profiles and events for a job: a new directory under `snapshot_dir`, by default the
    data directory's `predict/snapshots` (on a cluster, a directory every node sees)."""
    from cdp_actors.predict.export import KINDS, Window, export_snapshot

    root = Path(snapshot_dir) if snapshot_dir is not None else Path(data_dir) / SNAPSHOTS_DIR
    out = root.resolve() / f"{purpose}-{now_ms()}"
    export_snapshot(out, KINDS, Window())
    return out


def ray_map_shards(function: Callable[[Any], Any], shards: list[Any]) -> Iterator[Any]:
    """A `jobs` shard mapper: `function` over each shard's file pair as a Ray Data `map_batches` (one shard a
    batch, one CPU a task, on any node), results yielded as the shards finish. Results travel pickled: they are
    DataFrames and dataclasses, not Arrow rows."""
    import logging
    import pickle

    import ray
    import ray.data

    # its per-dataset lines (and the notice that its own bars are off) would break the bars; errors still show
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False

    def run(batch: Any) -> Any:  # a numpy batch: column -> array
        return {"result": [pickle.dumps(function(shards[int(index)])) for index in batch["shard"]]}

    dataset = ray.data.from_items([{"shard": index} for index in range(len(shards))], override_num_blocks=len(shards))
    mapped = dataset.map_batches(run, batch_size=1, batch_format="numpy", num_cpus=1)
    for row in mapped.iter_rows():
        yield pickle.loads(row["result"])


# ---- train -----------------------------------------------------------------------------------------------------


def check_train(
    name: str,
    goal_event: str,
    goal_event_type: str,
    window_days: int,
    lookback_days: int,
    goal_condition: Mapping[str, Any] | None,
    model: str,
) -> None:
    """Every refusal `train` can make before it exports anything (the same checks `jobs.train` makes)."""
    from cdp_actors.predict import registry
    from cdp_actors.predict.goal import goal
    from cdp_actors.predict.labels import split
    from cdp_actors.predict.train import check_kind

    registry.check_name(name)
    goal(goal_event, goal_event_type, window_days, dict(goal_condition) if goal_condition is not None else None)
    split(0, window_days, lookback_days)
    check_kind(model)


def train(
    name: str,
    goal_event: str,
    goal_event_type: str = "custom_event",
    window_days: int = 30,
    lookback_days: int = 90,
    *,
    goal_condition: Mapping[str, Any] | None = None,
    exclude_attributes: Iterable[str] = (),
    out: str | Path | None = None,
    model: str = "sklearn",
    truth: str | Path | None = None,
    data_dir: str | Path = DEFAULT_DATA_DIR,
    address: str | None = None,
    snapshot_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> Trained:
    """`cdp predict train`: a fresh snapshot, then `jobs.train` with its per-shard passes as Ray Data tasks over the
    cluster's nodes. `goal_condition` is a calculated attribute's condition on the goal event's custom attributes;
    `truth` is `synth`'s `out` (adds the oracle's AUC); `progress(phase, done, total)` as each phase advances."""
    from cdp_actors.predict import jobs

    check_train(name, goal_event, goal_event_type, window_days, lookback_days, goal_condition, model)
    true_probability = read_truth(truth) if truth is not None else None
    tell = progress or _silent
    running = attach(data_dir, address)
    tell("export", 0, 1)
    snapshot = snapshot_now(running, f"train-{name}", snapshot_dir)
    tell("export", 1, 1)
    try:
        return jobs.train(
            snapshot,
            name,
            goal_event,
            goal_event_type=goal_event_type,
            window_days=window_days,
            lookback_days=lookback_days,
            data_dir=running,
            out=out,
            model=model,
            condition=dict(goal_condition) if goal_condition is not None else None,
            exclude_attributes=exclude_attributes,
            true_probability=true_probability,
            progress=tell,
            map_shards=ray_map_shards,
        )
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)  # the model keeps what it needs, not a copy of every profile


def read_truth(path: str | Path) -> dict[str, float]:
    """`synth`'s true probabilities file (the file, or the `out` directory holding it)."""
    import pandas as pd

    from cdp_actors.errors import NotFound

    file = Path(path) / TRUTH_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise NotFound(f"No true probabilities file at {file} (`cdp predict synth --out` writes {TRUTH_FILE})")
    truth = pd.read_parquet(file)
    return dict(zip(truth["customer_id"].astype(str), truth["true_probability"].astype(float), strict=True))


# ---- score -----------------------------------------------------------------------------------------------------


def score(
    name: str,
    *,
    run_id: str | None = None,
    data_dir: str | Path = DEFAULT_DATA_DIR,
    address: str | None = None,
    snapshot_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> ScoringRun:
    """`cdp predict score`: every profile scored with the latest model `name` as of now and written back as
    `predicted_<name>_score` and `predicted_<name>_percentile`; resumes `run_id`, else the name's unfinished run
    (one ended by a kill), if any. `progress(phase, done, total)`: export, score, then write back per chunk."""
    from cdp_actors import handles
    from cdp_actors.predict import registry, writeback

    registry.check_name(name)
    tell = progress or _silent
    running = attach(data_dir, address)
    run = writeback.load_run(running, run_id) if run_id else writeback.unfinished_run(running, name)
    if run is None:
        model = registry.latest(running, name)  # before the export: a name with no model fails fast
        tell("export", 0, 1)
        snapshot = snapshot_now(running, f"score-{name}", snapshot_dir)
        tell("export", 1, 1)
        try:
            started = now_ms()
            scores = writeback.score_snapshot(model, snapshot, started, ray_map_shards)
            run = writeback.start_run(running, name, scores, started)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)  # the run keeps its scores, not a copy of every profile
        tell("score", 1, 1)
    input_id = writeback.ensure_internal_input(handles.control())
    tell("write back", len(run.done), run.chunks)

    def sent(chunked: ScoringRun) -> None:
        tell("write back", len(chunked.done), chunked.chunks)

    writeback.send_run(running, run, writeback.intake_append(input_id), sent)
    return run


# ---- the registry ----------------------------------------------------------------------------------------------


def list_models(data_dir: str | Path = DEFAULT_DATA_DIR) -> list[dict[str, Any]]:
    """`cdp predict list`: every model name, its versions and its latest version's AUC."""
    from cdp_actors.predict import registry

    return registry.list_models(data_dir)


def show(name: str, version: int | None = None, *, data_dir: str | Path = DEFAULT_DATA_DIR) -> dict[str, Any]:
    """`cdp predict show`: a model's description (goal, windows, features, snapshot) and metrics."""
    from cdp_actors.predict import registry

    return registry.show(data_dir, name, version)


# ---- synthetic users -------------------------------------------------------------------------------------------


def synth(
    users: int,
    out: str | Path,
    seed: int = 0,
    *,
    history_days: int = 90,
    window_days: int = 14,
    as_of: str | int | None = None,
    url: str = DEFAULT_EVENTS_URL,
    key: str = DEMO_KEY[0],
    secret: str = DEMO_KEY[1],
    progress: Progress | None = None,
) -> int:
    """`cdp predict synth`: `users` synthetic users whose history ends at `as_of` (default: a fixed day, so the
    same seed gives the same batches) sent through the Events API at `url` (this machine only), their true
    probability of a purchase in the last `window_days` written to `out`/truth.parquet; the batches accepted."""
    import pandas as pd

    from cdp_actors.predict import synth as synthetic

    base = loopback_url(url)
    ending = epoch_ms(as_of)
    extra = {"as_of_ms": ending} if ending is not None else {}
    generated = synthetic.synthesize(users, seed=seed, history_days=history_days, window_days=window_days, **extra)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ids = list(generated.true_probability)
    truth = pd.DataFrame(
        {
            "customer_id": ids,
            "true_probability": [generated.true_probability[i] for i in ids],
            "purchased": [generated.purchased[i] for i in ids],
        }
    )
    truth.to_parquet(folder / TRUTH_FILE, index=False)
    return send_bulk(base, (key, secret), generated.batches, progress or _silent, len(generated.batches))


def loopback_url(url: str) -> str:
    """`synth` sends personal-looking data; it only ever sends it to a platform on this machine."""
    from cdp_actors.errors import BadRequest

    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise BadRequest(f"synth sends to a platform on this machine only (127.0.0.1), not {host!r}", "url")
    return url.rstrip("/")


def chunked(items: Iterable[dict[str, Any]], size: int, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    """Requests of at most `size` batches and about `max_bytes` of JSON (a lone larger batch goes alone)."""
    chunk: list[dict[str, Any]] = []
    used = 0
    for item in items:
        length = len(json.dumps(item)) + 2  # and its ", "
        if chunk and (len(chunk) == size or used + length > max_bytes):
            yield chunk
            chunk, used = [], 0
        chunk.append(item)
        used += length
    if chunk:
        yield chunk


def send_bulk(
    base: str,
    auth: tuple[str, str],
    batches: Iterable[dict[str, Any]],
    progress: Progress = _silent,
    total: int = 0,
) -> int:
    """POST the batches to `/v2/bulkevents` in requests of SYNTH_BULK, SYNTH_CONCURRENCY at a time (a bounded
    window: the generator is read only as fast as the platform accepts); returns the batches accepted."""
    import requests

    session = requests.Session()

    def post(chunk: list[dict[str, Any]]) -> int:
        for _ in range(SYNTH_RETRIES):
            answer = session.post(f"{base}/v2/bulkevents", json=chunk, auth=auth, timeout=60)
            if answer.status_code not in (429, 503):
                answer.raise_for_status()
                return len(chunk)
            time.sleep(RETRY_WAIT_S)
        raise RuntimeError(f"the platform kept refusing with {answer.status_code}: it is overloaded")

    sent = 0
    with concurrent.futures.ThreadPoolExecutor(SYNTH_CONCURRENCY) as pool:
        pending: set[concurrent.futures.Future[int]] = set()
        for chunk in chunked(batches, SYNTH_BULK, SYNTH_BULK_BYTES):
            if len(pending) >= SYNTH_CONCURRENCY:
                done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                sent += sum(future.result() for future in done)
                progress("send", sent, total)
            pending.add(pool.submit(post, chunk))
        sent += sum(future.result() for future in concurrent.futures.as_completed(pending))
    progress("send", sent, total)
    return sent
