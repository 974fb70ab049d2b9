"""`cdp bench identity`: identity resolution over a large index, against the ingest end-to-end rate.

1. Preload `--users` profiles (customer ID + device ID each) into an identity index.
2. Resolve Events API batches (80% known users, 20% new) in chunks, as the dispatcher does: in-process
   (the baseline: the strategy and LMDB work alone) and through the IdentityIndex actor.
3. IDSync `identify` over HTTP, closed loop: a no-Ray aiohttp server on the same index (baseline), then
   the platform.
The identity step's share of the pipeline is the ingest end-to-end batch rate (from `ingest.json` in
`--out`, measured first when absent) over the actor's resolution rate: the target is under 25%.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.load import say, wait_http
from benchmarks.servers import percentiles, start_process
from benchmarks.workload import EVENTS_PER_BATCH
from cdp_actors.cli import free_port
from cdp_actors.config import WorkspaceConfig
from cdp_actors.identity import strategy
from cdp_actors.identity.index import BatchRequest, IdentityCore, encode_requests
from cdp_actors.tasks import spawn

CHUNK = 2000
KNOWN_SHARE = 0.8


def known_request(n: int) -> dict[str, str]:
    return {"customer_id": f"user-{n}", "ios_idfv": f"device-{n}"}


def preload(core: IdentityCore, users: int) -> float:
    started = time.perf_counter()
    for first in range(0, users, 10_000):
        ops = [
            lambda s, n=n: strategy.resolve_batch(s, core.policy, None, known_request(n), 0, n + 1)
            for n in range(first, min(users, first + 10_000))
        ]
        core.run([lambda s, ops=ops: [op(s) for op in ops]])
        if first % 100_000 == 0:
            say(f"[preload] {first:>9,} / {users:,} profiles")
    return time.perf_counter() - started


class Requests:
    """Batch identities: `KNOWN_SHARE` of them preloaded users, the rest new ones."""

    def __init__(self, users: int, seed: int = 11) -> None:
        self.users, self.rng, self.fresh = users, random.Random(seed), users

    def next(self) -> dict[str, str]:
        if self.rng.random() < KNOWN_SHARE:
            return {"customer_id": f"user-{self.rng.randrange(self.users)}"}
        self.fresh += 1
        return known_request(self.fresh)

    def chunk(self) -> list[BatchRequest]:
        return [BatchRequest(None, self.next(), 0, self.rng.getrandbits(62) + 1) for _ in range(CHUNK)]


def resolve_one(state: Any, policy: strategy.Policy, request: BatchRequest) -> strategy.Outcome:
    """What `IdentityIndex.resolve_batches` does per batch."""
    return strategy.resolve_batch(
        state, policy, request.batch_mpid, request.identities, request.received_ms, request.new_mpid
    )


def core_rate(core: IdentityCore, requests: Requests, seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batches = requests.chunk()
        core.run([lambda s, b=batches: [resolve_one(s, core.policy, one) for one in b]])
        done += len(batches)
    return done / (time.perf_counter() - started)


def actor_rate(requests: Requests, seconds: float) -> float:
    import ray

    from cdp_actors import handles

    index = handles.identity()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batches = requests.chunk()
        ray.get(index.resolve_batches.remote(encode_requests(batches)))
        done += len(batches)
    return done / (time.perf_counter() - started)


def run_identify_baseline(port: int, path: str, key: str, secret: str) -> None:
    """IDSync identify without Ray: aiohttp, one strategy call per request, commits grouped per tick."""
    from aiohttp import web

    from cdp_actors.identity.strategy import Policy
    from cdp_actors.schema.identity import IdentityRequest, decode_request, known_identities

    core = IdentityCore(path, Policy())
    expected = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
    pending: list[tuple[Any, asyncio.Future]] = []

    async def commit() -> None:
        await asyncio.sleep(0)
        group = pending[:]
        pending.clear()
        for (_, future), result in zip(group, core.run([op for op, _ in group]), strict=True):
            future.set_result(result)

    async def identify(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        identities = known_identities(decode_request(await request.read(), IdentityRequest))
        future = asyncio.get_running_loop().create_future()
        pending.append((lambda s: strategy.identify(s, core.policy, identities, 0), future))
        if len(pending) == 1:
            spawn(commit(), "baseline commit")
        outcome = await future
        return web.json_response({"mpid": str(outcome.mpid)})

    app = web.Application()
    app.router.add_post("/v1/identify", identify)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def identify_load(url: str, auth: str, users: int, seconds: float, clients: int = 32) -> dict[str, Any]:
    requests = Requests(users, seed=23)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            idsync = {k.replace("customer_id", "customerid"): v for k, v in requests.next().items()}
            body = {"environment": "production", "known_identities": idsync}
            sent = time.perf_counter()
            async with session.post(url, json=body, headers={"Authorization": auth}) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            latencies.append((time.perf_counter() - sent) * 1000)

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "calls_per_s": round(statuses.get(200, 0) / elapsed),
        "latency_ms": percentiles(latencies),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


async def ingest_e2e_events_per_s(config: WorkspaceConfig, args: Any) -> float:
    report = Path(args.out) / "ingest.json"
    if not report.exists():
        from benchmarks.ingest import run_ingest_bench

        say("no ingest.json in --out: measuring the ingest end-to-end rate first")
        await run_ingest_bench(config, args)
    return float(json.loads(report.read_text())["e2e_events_per_s"])


async def run_identity_bench(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    from cdp_actors.cli import start_platform, start_ray, stop_platform

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    e2e_events = await ingest_e2e_events_per_s(config, args)
    data_dir = Path(tempfile.mkdtemp(prefix="cdp-bench-identity-"))
    core = IdentityCore(data_dir / "identity", config.identity.policy())
    preload_s = preload(core, args.users)
    say(f"[preload] {args.users:,} profiles in {preload_s:.0f}s")
    requests = Requests(args.users)
    in_process = core_rate(core, requests, args.duration)
    say(f"[resolve] in process: {in_process:,.0f} batches/s")
    core.store.close()

    source = config.inputs[0]
    key, secret = source.key, source.clear_secret()
    auth = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
    port = free_port()
    server = start_process(run_identify_baseline, port, str(data_dir / "identity"), key, secret)
    try:
        await wait_http(f"http://127.0.0.1:{port}/v1/identify")
        http_baseline = await identify_load(f"http://127.0.0.1:{port}/v1/identify", auth, args.users, args.duration)
    finally:
        server.kill()
        server.join()
    say(f"[identify] baseline: {http_baseline['calls_per_s']:,} calls/s")

    start_ray(None, ingress=args.ingress)
    try:
        start_platform(config, str(data_dir), "127.0.0.1", port, announce_passwords=False)
        through_actor = actor_rate(requests, args.duration)
        say(f"[resolve] through the IdentityIndex actor: {through_actor:,.0f} batches/s")
        http = await identify_load(f"http://127.0.0.1:{port}/v1/identify", auth, args.users, args.duration)
        say(f"[identify] platform: {http['calls_per_s']:,} calls/s")
    finally:
        stop_platform(config)
        shutil.rmtree(data_dir, ignore_errors=True)

    e2e_batches = e2e_events / EVENTS_PER_BATCH
    report = {
        "profiles": args.users,
        "preload_seconds": round(preload_s, 1),
        "known_share": KNOWN_SHARE,
        "resolve_batches_per_s_in_process": round(in_process),
        "resolve_batches_per_s_actor": round(through_actor),
        "ratio_actor_to_in_process": round(through_actor / in_process, 3),
        "ingest_e2e_batches_per_s": round(e2e_batches),
        "identity_share_of_e2e": round(e2e_batches / through_actor, 3),
        "identity_share_target": 0.25,
        "identify_http": http,
        "identify_http_baseline": http_baseline,
        "ratio_identify_to_baseline": round(http["calls_per_s"] / max(1, http_baseline["calls_per_s"]), 3),
    }
    (out / "identity.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "identity.png")
    say(f"wrote {out / 'identity.json'} and {out / 'identity.png'}")
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(
        ["in process", "actor", "ingest e2e"],
        [
            report["resolve_batches_per_s_in_process"],
            report["resolve_batches_per_s_actor"],
            report["ingest_e2e_batches_per_s"],
        ],
    )
    left.set(title=f"batch resolution, {report['profiles']:,} profiles (batches/s)")
    right.bar(
        ["baseline", "platform"],
        [report["identify_http_baseline"]["calls_per_s"], report["identify_http"]["calls_per_s"]],
    )
    right.set(title="IDSync identify over HTTP (calls/s)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
