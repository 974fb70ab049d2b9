"""`cdp bench predict`: the predictive-attributes job on synthetic users with a known ground truth, in two phases.

Quality (`--quality-users`, 200,000): the model's holdout AUC beside the oracle's (the AUC of the true
probabilities on the same holdout). The users' full history (90 days, about 216 events a user, `synthesize`'s
default) is what lets a model approach the oracle; 43 million events are too many to send through the Events API
of a two-core machine, and AUC does not depend on the path the rows took, so this phase writes the synthetic
snapshot's Parquet directly (`synth.synthesize_frame_blocks`, the frames an export of those users gives: a unit
test holds them equal) and runs the same training job (`jobs.train`) on it.

Speed (`--users`, 1,000,000): the whole job on a running platform, each phase timed.
1. Synthetic users with a light history (`--history-days` 30, `--session-rate` 0.15: about 10 events a user) are
   sent through the Events API (`/v2/bulkevents`, several requests in flight, 429 retried) and applied by the
   shards. Not part of the job's time: it is the data arriving.
2. The job: export (Ray tasks, one per shard) → vocabulary and features (Ray Data, one task per shard) → train →
   evaluate → score (Ray Data) → write back (the internal input, eventless batches, until the intake
   acknowledged every chunk). Scoring is "as of" the synthetic history's end: the synthetic users live in the past.
3. The same-run baseline: one process, pandas + scikit-learn, over the same exported Parquet: every shard read
   into one frame, the same pure feature, label, fit, evaluate and percentile functions, scores written to one
   Parquet file (a script has no platform to write back to: the comparison covers the phases both have, and the
   platform's export and write back are reported beside).

    cdp bench predict                                  # both phases: 200,000 users, then 1,000,000
    cdp bench predict --predict-phases quality         # the quality figure only
    cdp bench predict --predict-phases speed --users 300000
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import aiohttp
import msgspec
import numpy as np
import pandas as pd

from benchmarks.load import say
from benchmarks.platform import Platform, running_platform
from cdp_actors.config import WorkspaceConfig
from cdp_actors.predict import features as feature_set
from cdp_actors.predict import jobs, synth
from cdp_actors.predict.evaluate import evaluate
from cdp_actors.predict.goal import goal
from cdp_actors.predict.labels import labels, split
from cdp_actors.predict.score import percentiles
from cdp_actors.predict.snapshot import EVENTS_DIR, PROFILES_DIR
from cdp_actors.predict.train import DEFAULT_MODEL, fit, in_holdout, probabilities

NAME: Final = "bench_buyers"
WINDOW_DAYS: Final = 14
"""The goal's window: the synthetic `purchase` happens in the history's last 14 days (`synthesize`'s default)."""
BATCHES_PER_REQUEST: Final = 100
"""The platform's default `limits.max_bulk_batches`."""
REQUEST_BYTES: Final = 200_000
"""Under the Events API's 256 KB a request."""
SEND_CONCURRENCY: Final = 8
"""Requests in flight: enough to keep the ingest path busy on two cores (benchmarks/README, "ingest")."""
APPLY_TIMEOUT_S: Final = 1800.0
"""How long the shards may take to apply everything acknowledged before the bench gives up."""


def no_outputs(config: WorkspaceConfig, sink: str) -> tuple[WorkspaceConfig, list[str]]:
    """No connection to any output: the bench measures the prediction job, not delivery."""
    return config.model_copy(update={"connections": []}), []


@dataclass
class PhaseClock:
    """Seconds per phase, in order; `jobs.train`'s progress callback marks its phases' ends."""

    seconds: dict[str, float] = field(default_factory=dict)
    last: float = field(default_factory=time.perf_counter)

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self.last, 2)
        self.last = now

    def progress(self, name: str, done: int, total: int) -> None:
        if done == total:
            self.mark(name)

    def restart(self) -> None:
        self.last = time.perf_counter()


# ---- the synthetic users, sent -----------------------------------------------------------------------------------


def request_bodies(batches: list[dict[str, Any]]) -> Iterator[tuple[bytes, int, int]]:
    """(body, batches, events) per `/v2/bulkevents` request: at most BATCHES_PER_REQUEST batches, ~REQUEST_BYTES."""
    encoder = msgspec.json.Encoder()
    chunk: list[bytes] = []
    used = events = 0
    for batch in batches:
        raw = encoder.encode(batch)
        if chunk and (len(chunk) == BATCHES_PER_REQUEST or used + len(raw) + 1 > REQUEST_BYTES):
            yield b"[" + b",".join(chunk) + b"]", len(chunk), events
            chunk, used, events = [], 0, 0
        chunk.append(raw)
        used += len(raw) + 1
        events += len(batch["events"])
    if chunk:
        yield b"[" + b",".join(chunk) + b"]", len(chunk), events


@dataclass
class Sent:
    batches: int = 0
    events: int = 0
    retries: int = 0


async def send_all(platform: Platform, bodies: list[tuple[bytes, int, int]], concurrency: int) -> Sent:
    """Every body posted with `concurrency` requests in flight; a 429/503 or no answer: the same body again."""
    pending = iter(bodies)
    headers = {"Authorization": platform.auth, "Content-Type": "application/json"}
    sent = Sent()

    async def client(session: aiohttp.ClientSession) -> None:
        for body, batches, events in pending:
            while True:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.post(platform.url, data=body, headers=headers) as reply:
                        if reply.status == 202:
                            sent.batches, sent.events = sent.batches + batches, sent.events + events
                            break
                        if reply.status not in (429, 503):
                            raise RuntimeError(f"the Events API refused a request: {reply.status} {await reply.text()}")
                sent.retries += 1
                await asyncio.sleep(0.5)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return sent


async def wait_applied(platform: Platform, batches: int) -> None:
    """Until the shards applied every batch acknowledged (the sum of their applied records)."""
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    while True:
        applied = sum(shard["applied_since_start"] for shard in (await platform.status())["shards"])
        if applied >= batches:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the shards applied {applied:,} of {batches:,} batches")
        say(f"[apply] {applied:,} of {batches:,} batches applied")
        await asyncio.sleep(2)


@dataclass
class Population:
    truth: dict[str, float]
    as_of_ms: int
    history_days: int
    batches: int
    events: int
    generate_s: float
    send_s: float
    apply_s: float


async def send_population(platform: Platform, args: Any) -> Population:
    """Generate the users block by block, each block's requests sent before the next is generated."""
    truth: dict[str, float] = {}
    generate_s = send_s = 0.0
    batches = events = 0
    as_of_ms = 0
    blocks = synth.synthesize_blocks(
        args.users, seed=args.seed, history_days=args.history_days, session_rate=args.session_rate
    )
    while True:
        started = time.perf_counter()
        block = next(blocks, None)
        if block is None:
            break
        bodies = list(request_bodies(block.batches))
        generate_s += time.perf_counter() - started
        truth.update(block.true_probability)
        as_of_ms = block.as_of_ms
        started = time.perf_counter()
        sent = await send_all(platform, bodies, SEND_CONCURRENCY)
        send_s += time.perf_counter() - started
        batches, events = batches + sent.batches, events + sent.events
        say(f"[send] {len(truth):,} users, {events:,} events acknowledged ({events / send_s:,.0f} events/s)")
    started = time.perf_counter()
    await wait_applied(platform, batches)
    apply_s = time.perf_counter() - started
    return Population(truth, as_of_ms, args.history_days, batches, events, generate_s, send_s, apply_s)


# ---- the job on the platform -------------------------------------------------------------------------------------


def platform_job(snapshot: Path, work: Path, population: Population) -> dict[str, Any]:
    """export → vocabulary → features → train → evaluate → register → score → write back, each timed."""
    from cdp_actors import handles
    from cdp_actors.predict import writeback
    from cdp_actors.predict.api import ray_map_shards
    from cdp_actors.predict.export import KINDS, Window, export_snapshot

    clock = PhaseClock()
    export_snapshot(snapshot, KINDS, Window())
    clock.mark("export")
    trained = jobs.train(
        snapshot,
        NAME,
        "purchase",
        window_days=WINDOW_DAYS,
        lookback_days=population.history_days,
        data_dir=work,
        true_probability=population.truth,
        as_of_ms=population.as_of_ms,
        progress=clock.progress,
        map_shards=ray_map_shards,
    )
    clock.restart()
    scores = writeback.score_snapshot(trained.registered, snapshot, population.as_of_ms, ray_map_shards)
    clock.mark("score")
    run = writeback.start_run(work, NAME, scores, population.as_of_ms)
    input_id = writeback.ensure_internal_input(handles.control())
    writeback.send_run(work, run, writeback.intake_append(input_id), lambda _: None)
    clock.mark("write_back")
    return {"seconds": clock.seconds, "metrics": trained.metrics, "scored": len(scores), "accepted": run.accepted}


# ---- the baseline: one process, pandas + scikit-learn --------------------------------------------------------------


def baseline_job(snapshot: Path, out: Path, population: Population) -> dict[str, Any]:
    """The same steps over the same Parquet in this one process: no Ray, every shard read into one frame."""
    clock = PhaseClock()
    paths = jobs.shards(snapshot)
    profiles = pd.concat([pd.read_parquet(profile) for profile, _ in paths], ignore_index=True)
    events = pd.concat([pd.read_parquet(event) for _, event in paths], ignore_index=True)
    clock.mark("read")
    at = split(population.as_of_ms, WINDOW_DAYS, population.history_days)
    excluded = (synth.SYNTH_ID_ATTRIBUTE,)
    vocab = feature_set.vocabulary_from_counts(feature_set.shard_counts(profiles, events, at.cutoff_ms, excluded))
    clock.mark("vocabulary")
    frame = feature_set.features(profiles, events, vocab, at.cutoff_ms, at.lookback_days)
    outcome = labels(goal("purchase", "custom_event", WINDOW_DAYS), events, at)
    clock.mark("features")
    outcome = cast(pd.Series, outcome[outcome.index.isin(frame.index)])
    examples = frame.loc[outcome.index]
    holdout = in_holdout(outcome.index)
    trained = fit(examples[~holdout], cast(pd.Series, outcome[~holdout]), DEFAULT_MODEL)
    clock.mark("train")
    truth = truth_by_mpid(profiles, population.truth)
    metrics = evaluate(trained.model, examples[holdout], cast(pd.Series, outcome[holdout]), truth)
    clock.mark("evaluate")
    now = feature_set.features(profiles, events, vocab, population.as_of_ms, at.lookback_days)
    scores = pd.Series(probabilities(trained.model, now), index=now.index)
    written = pd.DataFrame({"mpid": now.index, "score": scores.to_numpy(), "percentile": percentiles(scores)})
    written.to_parquet(out, index=False)
    clock.mark("score")
    return {"seconds": clock.seconds, "auc": metrics["auc"], "oracle_auc": metrics["oracle_auc"]}


def truth_by_mpid(profiles: pd.DataFrame, truth: dict[str, float]) -> pd.Series:
    ids = profiles["user_attributes"].map(lambda text: json.loads(text or "{}").get(synth.SYNTH_ID_ATTRIBUTE))
    known = ids.notna().to_numpy()
    values = [truth.get(str(key), np.nan) for key in ids[known]]
    return pd.Series(values, index=pd.Index(profiles["mpid"].to_numpy()[known], name="mpid"), dtype="float64")


# ---- the report ----------------------------------------------------------------------------------------------------

COMPARED: Final = ("vocabulary", "features", "train", "evaluate", "score")
"""Phases both runs have. The platform's `read` is inside its per-shard tasks (counted in vocabulary and features);
the baseline's one read is added to its total below."""


def compare(platform: dict[str, float], baseline: dict[str, float]) -> dict[str, Any]:
    ours = sum(platform.get(name, 0.0) for name in COMPARED)
    theirs = sum(baseline.get(name, 0.0) for name in (*COMPARED, "read"))
    return {
        "platform_s": round(ours, 2),
        "baseline_s": round(theirs, 2),
        "platform_over_baseline": round(ours / theirs, 3) if theirs else None,
        "platform_whole_job_s": round(sum(platform.values()), 2),
    }


def quality_phase(args: Any, scratch: Path) -> dict[str, Any]:
    """Synthetic snapshot written block by block (a shard each), then the training job on it."""
    snapshot = scratch / "quality"
    truth: dict[str, float] = {}
    events = as_of_ms = 0
    clock = PhaseClock()
    blocks = synth.synthesize_frame_blocks(
        args.quality_users, args.seed, args.quality_history_days, WINDOW_DAYS, session_rate=args.quality_session_rate
    )
    for index, block in enumerate(blocks):
        for kind, frame in ((PROFILES_DIR, block.profiles), (EVENTS_DIR, block.events)):
            (snapshot / kind).mkdir(parents=True, exist_ok=True)
            frame.to_parquet(snapshot / kind / f"shard-{index:03d}.parquet", index=False)
        truth.update(block.true_probability)
        events, as_of_ms = events + len(block.events), block.as_of_ms
    clock.mark("generate")
    trained = jobs.train(
        snapshot,
        NAME,
        "purchase",
        window_days=WINDOW_DAYS,
        lookback_days=args.quality_history_days,
        data_dir=scratch / "quality-work",
        true_probability=truth,
        as_of_ms=as_of_ms,
        progress=clock.progress,
    )
    metrics = trained.metrics
    say(f"[quality] auc {metrics['auc']:.4f} oracle {metrics['oracle_auc']:.4f} in {clock.seconds}")
    return {
        "users": args.quality_users,
        "history_days": args.quality_history_days,
        "session_rate": args.quality_session_rate,
        "events": events,
        "events_per_user": round(events / max(args.quality_users, 1), 1),
        "auc": metrics["auc"],
        "oracle_auc": metrics["oracle_auc"],
        "gap": round(metrics["oracle_auc"] - metrics["auc"], 4),
        "holdout_users": metrics["holdout_users"],
        "base_rate": round(metrics["base_rate"], 4),
        "model": metrics["model"],
        "seconds": clock.seconds,
    }


async def speed_phase(config: WorkspaceConfig, args: Any, scratch: Path) -> dict[str, Any]:
    async with running_platform(config, args, no_outputs) as platform:
        population = await send_population(platform, args)
        snapshot, work = scratch / "snapshot", scratch / "work"
        ours = await asyncio.to_thread(platform_job, snapshot, work, population)
        say(f"[platform] {ours['seconds']}")
        # while the platform still runs, idle: both jobs share the machine with the same processes
        theirs = await asyncio.to_thread(baseline_job, snapshot, scratch / "scores.parquet", population)
        say(f"[baseline] {theirs['seconds']}")
    metrics = ours["metrics"]
    return {
        "users": args.users,
        "history_days": args.history_days,
        "session_rate": args.session_rate,
        "events": population.events,
        "events_per_user": round(population.events / max(args.users, 1), 1),
        "ingest": {
            "generate_s": round(population.generate_s, 1),
            "send_s": round(population.send_s, 1),
            "events_per_s": round(population.events / population.send_s) if population.send_s else None,
            "apply_wait_s": round(population.apply_s, 1),
        },
        "platform_seconds": ours["seconds"],
        "baseline_seconds": theirs["seconds"],
        "comparison": compare(ours["seconds"], theirs["seconds"]),
        "auc": {"platform": metrics["auc"], "baseline": theirs["auc"], "oracle": metrics["oracle_auc"]},
        "scored": ours["scored"],
        "written_back": ours["accepted"],
    }


async def run_predict_bench(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    phases = set(args.predict_phases.split(","))
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cdp-bench-predict-") as scratch:
        if "quality" in phases:
            report["quality"] = await asyncio.to_thread(quality_phase, args, Path(scratch))
            (out / "predict.json").write_text(json.dumps(report, indent=2))
        if "speed" in phases:
            report["speed"] = await speed_phase(config, args, Path(scratch))
    (out / "predict.json").write_text(json.dumps(report, indent=2))
    return report
