"""`cdp bench ingest`: acknowledged and end-to-end throughput against a same-run, no-Ray baseline.

Phase 1 drives the baseline server (aiohttp + msgspec + LMDB synced group commit, no Ray) with the
same closed-loop load; phase 2 drives the platform on an embedded Ray, delivering to a local sink, then
waits for the sink to receive everything that was acknowledged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks.servers import percentiles, run_baseline, run_sink, start_process
from benchmarks.workload import Workload
from cdp_actors.config import WorkspaceConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class LoadResult:
    seconds: float
    acked_events: int = 0
    statuses: Counter = field(default_factory=Counter)
    ack_latencies_ms: list[float] = field(default_factory=list)
    acked_per_second: Counter = field(default_factory=Counter)

    @property
    def events_per_s(self) -> float:
        return self.acked_events / self.seconds


def rss_mb(exclude: set[int]) -> tuple[float, float]:
    """Private and total RSS of this process and everything it started (Ray included), minus the sink.

    Private RSS leaves out file-backed and shared pages (LMDB's memory map, Ray's shared-memory object
    store), which the total counts once per process that maps them.
    """
    me = psutil.Process()
    private = total = 0
    for process in [me, *me.children(recursive=True)]:
        if process.pid in exclude:
            continue
        with contextlib.suppress(psutil.Error):
            info = process.memory_info()
            private += info.rss - info.shared
            total += info.rss
    return private / 2**20, total / 2**20


async def closed_loop(url: str, auth: str, workload: Workload, duration: float, concurrency: int,
                      label: str, probe: Any = None) -> LoadResult:  # fmt: skip
    """`concurrency` clients, each sending its next request as soon as the last one is answered."""
    start = time.monotonic()
    result = LoadResult(seconds=duration)
    headers = {"Authorization": auth, "Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() - start < duration:
            body, events = workload.request()
            sent = time.monotonic()
            async with session.post(url, data=body, headers=headers) as reply:
                await reply.read()
            result.statuses[reply.status] += 1
            if reply.status == 429:  # back off as the server asks, as the mParticle SDKs do
                await asyncio.sleep(float(reply.headers.get("Retry-After", "1")))
            elif reply.status == 202:
                result.acked_events += events
                result.acked_per_second[int(time.monotonic() - start)] += events
                result.ack_latencies_ms.append((time.monotonic() - sent) * 1000)

    async def progress() -> None:
        while time.monotonic() - start < duration:
            await asyncio.sleep(1)
            second = int(time.monotonic() - start)
            extra = await probe() if probe else ""
            say(f"[{label} {second:>3}s] acked {result.acked_per_second[second - 1]:>8,} ev/s {extra}")

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        reporter = asyncio.create_task(progress())
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        reporter.cancel()
    result.seconds = time.monotonic() - start
    return result


async def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as reply:
                    if reply.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not come up")
            await asyncio.sleep(0.2)


async def get_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return await reply.json()


def basic_auth(config: WorkspaceConfig) -> str:
    source = config.inputs[0]
    pair = f"{source.key}:{source.secret.get_secret_value()}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


async def baseline_phase(config: WorkspaceConfig, args: Any) -> LoadResult:
    port = free_port()
    source = config.inputs[0]
    server = start_process(run_baseline, port, source.key, source.secret.get_secret_value(),
                           config.limits.max_request_bytes)  # fmt: skip
    try:
        await wait_http(f"http://127.0.0.1:{port}/v2/bulkevents")
        url = f"http://127.0.0.1:{port}/v2/bulkevents"
        return await closed_loop(url, basic_auth(config), Workload(args.users), args.duration, args.concurrency,
                                 "baseline")  # fmt: skip
    finally:
        server.kill()


def single_output(config: WorkspaceConfig, sink: str) -> tuple[WorkspaceConfig, list[str]]:
    """The workspace's first output pointed at the sink; the sink paths that must receive everything."""
    return config.with_output_url(config.outputs[0].id, f"{sink}/webhook"), ["/webhook"]


async def system_phase(config: WorkspaceConfig, args: Any, samples: dict[str, list], label: str = "system",
                       outputs: Any = single_output) -> dict[str, Any]:  # fmt: skip
    """Load the platform; `outputs(config, sink_url)` says where it forwards and which sink paths to wait for."""
    from cdp_actors.cli import start_platform, start_ray, stop_platform

    sink_port, port = free_port(), free_port()
    sink = start_process(run_sink, sink_port)
    sink_stats = f"http://127.0.0.1:{sink_port}/stats"
    config, paths = outputs(config, f"http://127.0.0.1:{sink_port}")
    try:
        await wait_http(sink_stats)
        start_ray(None, fast_ingress=args.fast_ingress)
        start_platform(config, tempfile.mkdtemp(prefix="cdp-bench-"), "127.0.0.1", port)
        status_url = f"http://127.0.0.1:{port}/cdp/status"
        exclude = {sink.pid}
        samples["rss_mb"].append(rss_mb(exclude))

        async def probe() -> str:
            lag = (await get_json(status_url))["intake"]["lag"]
            delivered = (await get_json(sink_stats))["events"]
            samples["lag"].append(lag)
            samples["rss_mb"].append(rss_mb(exclude))
            return f"delivered {delivered:>10,} total  intake lag {lag:>6,} batches"

        url = f"http://127.0.0.1:{port}/v2/bulkevents"
        started = time.time()
        load = await closed_loop(url, basic_auth(config), Workload(args.users), args.duration, args.concurrency,
                                 label, probe)  # fmt: skip
        drained = await drain(sink_stats, load.acked_events, paths, deadline_s=max(120.0, 4 * args.duration),
                              probe=probe)  # fmt: skip
        samples["rss_mb"].append(rss_mb(exclude))
        return {"load": load, "sink": drained, "started": started}
    finally:
        with_suppressed(lambda: stop_platform(config))
        sink.kill()


def with_suppressed(action: Any) -> None:
    try:
        action()
    except Exception as error:  # cleanup must not hide the benchmark's own outcome
        say(f"cleanup: {error}")


async def drain(sink_stats: str, acked_events: int, paths: list[str], deadline_s: float, probe: Any
                ) -> dict[str, Any]:  # fmt: skip
    """Wait until every sink path has every acknowledged event (or the deadline passes)."""
    deadline = time.monotonic() + deadline_s
    while True:
        stats = await get_json(sink_stats)
        done = all(stats["paths"].get(path, {}).get("events", 0) >= acked_events for path in paths)
        if done or time.monotonic() > deadline:
            return stats
        say(f"[drain] {await probe()}")
        await asyncio.sleep(1)


def e2e_rate(sink: dict[str, Any], started: float) -> tuple[float, float]:
    """Delivered events per second, from load start to the last delivery, and that span."""
    seconds = [second for second, _ in sink["per_second"]]
    if not seconds:
        return 0.0, 0.0
    span = max(1.0, seconds[-1] + 1 - started)
    return sink["events"] / span, span


def build_report(baseline: LoadResult, system: dict[str, Any], samples: dict[str, list]) -> dict[str, Any]:
    load: LoadResult = system["load"]
    sink = system["sink"]
    e2e, span = e2e_rate(sink, system["started"])
    rss = [private for private, _ in samples["rss_mb"]]
    rss_total = [total for _, total in samples["rss_mb"]]
    return {
        "acked_events_per_s": round(load.events_per_s),
        "e2e_events_per_s": round(e2e),
        "baseline_events_per_s": round(baseline.events_per_s),
        "ratio_acked_to_baseline": round(load.events_per_s / baseline.events_per_s, 3),
        "ratio_e2e_to_baseline": round(e2e / baseline.events_per_s, 3),
        "ack_latency_ms": percentiles(load.ack_latencies_ms),
        "e2e_latency_ms": sink["latency_ms"],
        "baseline_ack_latency_ms": percentiles(baseline.ack_latencies_ms),
        "peak_rss_mb": round(max(rss)),
        "rss_start_mb": round(rss[1] if len(rss) > 1 else rss[0]),
        "rss_end_mb": round(rss[-1]),
        "peak_rss_total_mb": round(max(rss_total)),
        "max_intake_lag_batches": max(samples["lag"], default=0),
        "acked_events": load.acked_events,
        "delivered_events": sink["events"],
        "duplicate_deliveries": sink["batches"] - sink["unique_batches"],
        "load_seconds": round(load.seconds, 1),
        "e2e_seconds": round(span, 1),
        "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
        "baseline_statuses": {str(k): v for k, v in sorted(baseline.statuses.items())},
        "timeline": {
            "acked_per_second": [load.acked_per_second[s] for s in range(int(load.seconds))],
            "baseline_per_second": [baseline.acked_per_second[s] for s in range(int(baseline.seconds))],
            "delivered_per_second": [n for _, n in sink["per_second"]],
            "intake_lag": samples["lag"],
            "rss_mb": [round(r) for r in rss],
        },
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["timeline"]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 10))
    top.plot(timeline["acked_per_second"], label="acknowledged")
    top.plot(timeline["delivered_per_second"], label="delivered to sink")
    top.plot(timeline["baseline_per_second"], label="baseline (no Ray)", linestyle=":")
    top.set(title="events per second", xlabel="second")
    top.legend()
    middle.bar(["ack p50", "ack p99", "e2e p50", "e2e p99"],
               [report["ack_latency_ms"]["p50"], report["ack_latency_ms"]["p99"],
                report["e2e_latency_ms"]["p50"], report["e2e_latency_ms"]["p99"]])  # fmt: skip
    middle.set(title="latency (ms)")
    bottom.plot(timeline["rss_mb"], label="private RSS (MB)")
    lag_axis = bottom.twinx()
    lag_axis.plot(timeline["intake_lag"], color="tab:red", label="intake lag (batches)")
    bottom.set(title="memory and intake lag", xlabel="sample (≈1 s)")
    bottom.legend(loc="upper left")
    lag_axis.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)


async def run_ingest_bench(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    say(f"baseline: {args.duration:.0f}s closed loop, {args.concurrency} clients, {args.users:,} users")
    baseline = await baseline_phase(config, args)
    say(f"baseline: {baseline.events_per_s:,.0f} events/s acknowledged")
    samples: dict[str, list] = {"rss_mb": [], "lag": []}
    system = await system_phase(config, args, samples)
    report = build_report(baseline, system, samples)
    (out / "ingest.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "ingest.png")
    say(f"wrote {out / 'ingest.json'} and {out / 'ingest.png'}")
    return {k: v for k, v in report.items() if k != "timeline"}


