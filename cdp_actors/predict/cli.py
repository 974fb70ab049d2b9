"""`cdp export` and `cdp predict`: attach to the running platform (its Ray, found as `cdp deadletter` finds it:
`--address`, else the address its dispatcher noted in `--data-dir`, else auto) and run the jobs. The platform keeps
running; nothing here needs it stopped. The prediction core (train, registry, synthetic data, scoring) is imported
inside each command."""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import ipaddress
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from cdp_actors.predict.snapshot import EVENTS_DIR, PROFILES_DIR

DEFAULT_DATA_DIR: Final = ".cdp-data"
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
"""`synth`'s true probability per customer_id, which `train --truth` reads for the oracle's AUC."""
RETRY_WAIT_S: Final = 1.0  # after a 429/503: the platform's Retry-After is about this


Join = Callable[[argparse.Namespace], None]
"""Joins the Ray of the platform that `--data-dir` / `--address` name (`cdp_actors.cli.join_platform_ray`)."""


def add_commands(commands: Any, join: Join) -> None:
    """Register `export` and `predict` on the `cdp` parser's subcommands; `join` attaches to the platform."""
    export = commands.add_parser("export", help="write profiles or events as Parquet, one file per shard")
    export.add_argument("what", choices=(PROFILES_DIR, EVENTS_DIR, "all"))
    export.add_argument("--out", required=True, help="the snapshot directory (shared by every node on a cluster)")
    export.add_argument("--since", default=None, help="events at or after: ISO date/time (UTC) or epoch ms")
    export.add_argument("--until", default=None, help="events before: ISO date/time (UTC) or epoch ms")
    attach_arguments(export, join)
    export.set_defaults(run=cmd_export)

    predict = commands.add_parser("predict", help="predictive attributes: train, score, list, show, synth")
    actions = predict.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train a propensity model on a fresh snapshot")
    train.add_argument("--name", required=True)
    train.add_argument("--goal-event", required=True, help="an event name, or the preset purchase or churn")
    train.add_argument("--goal-event-type", default="custom_event")
    train.add_argument("--window-days", type=int, default=30)
    train.add_argument("--lookback-days", type=int, default=90)
    train.add_argument("--out", default=None, help="the run's report directory")
    train.add_argument("--model", default="sklearn", choices=("sklearn", "lightgbm"))
    train.add_argument("--truth", default=None, help="synth's --out: adds the oracle's AUC to the metrics")
    attach_arguments(train, join)
    train.set_defaults(run=cmd_train)

    score = actions.add_parser("score", help="score every profile now and write the scores back as attributes")
    score.add_argument("--name", required=True)
    score.add_argument("--run-id", default=None, help="resume this run (default: the name's unfinished run, if any)")
    attach_arguments(score, join)
    score.set_defaults(run=cmd_score)

    listing = actions.add_parser("list", help="the models in the registry")
    listing.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    listing.set_defaults(run=cmd_list)
    show = actions.add_parser("show", help="one model: its goal, windows, metrics, features")
    show.add_argument("name")
    show.add_argument("--version", type=int, default=None, help="default: the latest")
    show.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    show.set_defaults(run=cmd_show)

    synth = actions.add_parser("synth", help="send synthetic users with known true probabilities to the Events API")
    synth.add_argument("--users", type=int, required=True)
    synth.add_argument("--out", required=True, help="where the true probabilities file goes")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--url", default=DEFAULT_EVENTS_URL, help="the platform's Events API (loopback only)")
    synth.add_argument("--key", default=os.environ.get("CDP_SYNTH_KEY", DEMO_KEY[0]))
    synth.add_argument("--secret", default=os.environ.get("CDP_SYNTH_SECRET", DEMO_KEY[1]))
    synth.set_defaults(run=cmd_synth)


def attach_arguments(parser: argparse.ArgumentParser, join: Join) -> None:
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the running platform's data dir")
    parser.add_argument("--address", default=None, help="the platform's Ray (default: the one noted in --data-dir)")
    parser.set_defaults(join=join)


def attach(args: argparse.Namespace) -> str:
    """Join the running platform's Ray (unless this process already is in it); its data directory, checked to be
    the one `--data-dir` names."""
    import ray

    from cdp_actors import handles

    data_dir = str(Path(args.data_dir).resolve())
    args.join(args)
    try:
        running = str(ray.get(handles.control().data_directory.remote()))
    except ValueError:
        raise SystemExit("no platform runs in this Ray; start `cdp serve`, or give --data-dir / --address") from None
    if running != data_dir and not args.address:
        raise SystemExit(f"the platform in this Ray keeps its data in {running}, not {data_dir}: give --data-dir")
    return running


def epoch_ms(text: str | None) -> int | None:
    """Epoch milliseconds, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000)


def cmd_export(args: argparse.Namespace) -> int:
    from cdp_actors.predict.export import KINDS, Window, export_snapshot

    attach(args)
    kinds = KINDS if args.what == "all" else (args.what,)
    manifest = export_snapshot(args.out, kinds, Window(epoch_ms(args.since), epoch_ms(args.until)))
    print(f"cdp export: {manifest.profiles} profiles, {manifest.events} events in {args.out}", file=sys.stderr)
    return 0


def snapshot_now(data_dir: str, purpose: str) -> Path:
    """A fresh snapshot of profiles and events for a job, in the data directory."""
    from cdp_actors.predict.export import KINDS, Window, export_snapshot

    out = Path(data_dir) / "predict" / "snapshots" / f"{purpose}-{int(time.time() * 1000)}"
    phase(f"export ({purpose})")
    export_snapshot(out, KINDS, Window())
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from cdp_actors.predict import jobs

    data_dir = attach(args)
    snapshot = snapshot_now(data_dir, f"train-{args.name}")
    progress = PhaseBars()
    try:
        result = jobs.train(
            snapshot,
            args.name,
            args.goal_event,
            goal_event_type=args.goal_event_type,
            window_days=args.window_days,
            lookback_days=args.lookback_days,
            data_dir=data_dir,
            out=args.out,
            model=args.model,
            true_probability=read_truth(args.truth) if args.truth else None,
            progress=progress,
            map_shards=ray_map_shards,
        )
    finally:
        progress.end()
        shutil.rmtree(snapshot)  # the model keeps what it needs; a copy of every profile need not outlive the job
    print(json.dumps(train_summary(result, progress.seconds)), flush=True)
    return 0


def train_summary(result: Any, seconds: dict[str, float]) -> dict[str, Any]:
    """What `train` prints: the version registered and its headline metrics (`show` has the rest)."""
    metrics = result.metrics
    return {
        "name": result.registered.name,
        "version": result.registered.version,
        "auc": metrics.get("auc"),
        "oracle_auc": metrics.get("oracle_auc"),
        "log_loss": metrics.get("log_loss"),
        "base_rate": metrics.get("base_rate"),
        "holdout_users": metrics.get("holdout_users"),
        "model": metrics.get("model"),
        "report": str(result.report) if result.report else None,
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
    }


class PhaseBars:
    """`jobs.train`'s progress callback: a heading and a bar per phase on stderr, and each phase's seconds. A phase
    is told of as its steps finish, so its time runs from the previous phase's last step to its own last."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.last_step = time.monotonic()
        self.began = self.last_step
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if name != self.current:
            self.end()
            self.current, self.began = name, self.last_step
            phase(name)
        bar(done, total)
        self.seconds[name] = now - self.began
        self.last_step = now

    def end(self) -> None:
        if self.current is not None:
            print(file=sys.stderr)
        self.current = None


def read_truth(path: str) -> dict[str, float]:
    """`synth`'s true probabilities file (the file, or the `--out` directory holding it)."""
    import pandas as pd

    file = Path(path) / TRUTH_FILE if Path(path).is_dir() else Path(path)
    truth = pd.read_parquet(file)
    return dict(zip(truth["customer_id"].astype(str), truth["true_probability"].astype(float), strict=True))


def ray_map_shards(function: Callable[[Any], Any], shards: list[Any]) -> Iterator[Any]:
    """A `jobs` shard mapper: `function` over each shard's file pair as a Ray Data `map_batches` (one shard a
    batch, one CPU a task), results yielded as the shards finish. Results travel pickled: they are DataFrames and
    dataclasses, not Arrow rows."""
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


def cmd_score(args: argparse.Namespace) -> int:
    from cdp_actors.predict import writeback

    name = writeback.check_name(args.name)
    data_dir = attach(args)
    run = writeback.load_run(data_dir, args.run_id) if args.run_id else writeback.unfinished_run(data_dir, name)
    if run is None:
        snapshot = snapshot_now(data_dir, f"score-{name}")
        phase("score")
        started = now_ms()
        scores = writeback.score_now(name, snapshot, data_dir, started, ray_map_shards)
        run = writeback.start_run(data_dir, name, scores, started)
        shutil.rmtree(snapshot)  # the run keeps its scores; a copy of every profile need not outlive it
    else:
        phase(f"resume {run.run_id}: {len(run.done)}/{run.chunks} chunks sent")
    run = write_back(data_dir, run)
    print(json.dumps({"run_id": run.run_id, "users": run.users, "accepted": run.accepted,
                      "duplicates": run.duplicates}), flush=True)  # fmt: skip
    return 0


def write_back(data_dir: str, run: Any) -> Any:
    """Send a run's remaining chunks through the platform's internal input, with a bar."""
    from cdp_actors import handles
    from cdp_actors.predict import writeback

    phase("write back")
    input_id = writeback.ensure_internal_input(handles.control())
    writeback.send_run(data_dir, run, writeback.intake_append(input_id), lambda r: bar(len(r.done), r.chunks))
    print(file=sys.stderr)
    return run


def cmd_list(args: argparse.Namespace) -> int:
    from cdp_actors.predict import registry

    for model in registry.list_models(args.data_dir):
        print(json.dumps(model), flush=True)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from cdp_actors.predict import registry

    shown = registry.show(args.data_dir, args.name, args.version)
    shown["description"].pop("vocabulary", None)  # long, and the feature list says the same
    for bulky in ("roc", "score_histogram", "calibration"):  # the report's charts; metrics.json keeps them
        shown["metrics"].pop(bulky, None)
    print(json.dumps(shown, indent=2), flush=True)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    import pandas as pd

    from cdp_actors.predict import synth

    base = loopback_url(args.url)
    generated = synth.synthesize(args.users, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ids = list(generated.true_probability)
    truth = pd.DataFrame(
        {
            "customer_id": ids,
            "true_probability": [generated.true_probability[i] for i in ids],
            "purchased": [generated.purchased[i] for i in ids],
        }
    )
    truth.to_parquet(out / TRUTH_FILE, index=False)
    phase(f"send {args.users} users ({len(generated.batches)} batches) to {base}/v2/bulkevents")
    sent = send_bulk(base, (args.key, args.secret), generated.batches)
    print(f"\ncdp predict synth: {sent} batches accepted; true probabilities in {out / TRUTH_FILE}",
          file=sys.stderr)  # fmt: skip
    return 0


def loopback_url(url: str) -> str:
    """`synth` sends personal-looking data; it only ever sends it to a platform on this machine."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"cdp predict synth sends to a platform on this machine only (127.0.0.1), not {host!r}")
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


def send_bulk(base: str, auth: tuple[str, str], batches: Iterable[dict[str, Any]]) -> int:
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
        raise SystemExit(f"the platform kept refusing with {answer.status_code}: it is overloaded")

    sent = 0
    with concurrent.futures.ThreadPoolExecutor(SYNTH_CONCURRENCY) as pool:
        pending: set[concurrent.futures.Future[int]] = set()
        for chunk in chunked(batches, SYNTH_BULK, SYNTH_BULK_BYTES):
            if len(pending) >= SYNTH_CONCURRENCY:
                done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                sent += sum(future.result() for future in done)
                print(f"\r{sent} batches sent", end="", file=sys.stderr, flush=True)
            pending.add(pool.submit(post, chunk))
        sent += sum(future.result() for future in concurrent.futures.as_completed(pending))
    return sent


def now_ms() -> int:
    return int(time.time() * 1000)


def phase(name: str) -> None:
    print(f"== {name}", file=sys.stderr, flush=True)


BAR_WIDTH: Final = 30


def bar(done: int, total: int) -> None:
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    print(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)
