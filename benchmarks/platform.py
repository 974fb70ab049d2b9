"""The platform under load: a counting sink, an embedded (or `--address`) Ray with the runtime and apps,
and the baseline phase every scenario runs first in the same process."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from benchmarks.load import Load, LoadResult, admin_bearer, basic_auth, get_json, rss_mb, say, wait_http
from benchmarks.servers import run_baseline, run_sink, start_process
from benchmarks.workload import Workload
from cdp_actors.cli import free_port
from cdp_actors.config import WorkspaceConfig

Outputs = Callable[[WorkspaceConfig, str], tuple[WorkspaceConfig, list[str]]]


def workload_for(args: Any, zipf: float | None = None) -> Workload:
    return Workload(args.users, zipf=args.zipf if zipf is None else zipf)


async def baseline_phase(config: WorkspaceConfig, args: Any) -> LoadResult:
    """The no-Ray server (aiohttp + msgspec + LMDB group commit) under the same closed loop."""
    port = free_port()
    source = config.inputs[0]
    url = f"http://127.0.0.1:{port}/v2/bulkevents"
    seconds = min(args.duration, args.baseline_duration)
    say(f"baseline: {seconds:.0f}s closed loop, {args.concurrency} clients, {args.users:,} users")
    with tempfile.TemporaryDirectory(prefix="cdp-baseline-") as data_dir:
        server = start_process(
            run_baseline, port, data_dir, source.key, source.clear_secret(), config.limits.max_request_bytes
        )
        try:
            await wait_http(url)
            result = await Load(
                url, basic_auth(config), workload_for(args), seconds, "baseline", args.concurrency
            ).run()
        finally:
            server.kill()
            server.join()
    say(f"baseline: {result.events_per_s:,.0f} events/s acknowledged")
    return result


def single_output(config: WorkspaceConfig, sink: str) -> tuple[WorkspaceConfig, list[str]]:
    """The workspace's first output pointed at the sink; the sink paths that must receive everything."""
    return config.with_output_url(config.outputs[0].id, f"{sink}/webhook"), ["/webhook"]


def with_delivery_batching(config: WorkspaceConfig, batches: int) -> WorkspaceConfig:
    """Every webhook output posts up to `batches` batches per request (`--delivery-batching`)."""
    for output in config.outputs:
        if output.kind == "webhook":
            config = config.with_output_settings(output.id, max_batches_per_request=batches)
    return config


@dataclass
class Platform:
    """A running platform and its sink; `load` and `drain` run phases against it."""

    url: str
    auth: str
    status_url: str
    sink_stats: str
    paths: list[str]
    args: Any
    exclude: set[int]
    status_headers: dict[str, str] = field(default_factory=dict)
    """The admin client's bearer token, for `status_url`."""
    samples: dict[str, list] = field(default_factory=lambda: {"rss_mb": [], "rss_at": [], "lag": [], "lag_at": []})
    started: float = field(default_factory=time.time)

    def sample_rss(self) -> None:
        self.samples["rss_mb"].append(rss_mb(self.exclude))
        self.samples["rss_at"].append(round(time.time() - self.started, 1))

    async def probe(self) -> str:
        lag = (await get_json(self.status_url, self.status_headers))["intake"]["lag"]
        delivered = (await get_json(self.sink_stats))["events"]
        self.samples["lag"].append(lag)
        self.samples["lag_at"].append(round(time.time() - self.started, 1))
        self.sample_rss()
        return f"delivered {delivered:>10,} total  intake lag {lag:>6,} batches"

    async def load(self, label: str, workload: Workload, duration: float, rate: float | None = None) -> LoadResult:
        mode = f"open loop at {rate:,.0f} events/s" if rate else f"closed loop, {self.args.concurrency} clients"
        say(f"[{label}] {duration:.0f}s {mode}, {workload.users:,} users")
        return await Load(self.url, self.auth, workload, duration, label, self.args.concurrency, rate, self.probe).run()

    async def drain(self, acked_events: int, deadline_s: float) -> dict[str, Any]:
        """Wait until every sink path has `acked_events` (or the deadline passes); the sink's stats."""
        deadline = time.monotonic() + deadline_s
        while True:
            stats = await get_json(self.sink_stats)
            done = all(stats["paths"].get(path, {}).get("events", 0) >= acked_events for path in self.paths)
            if done or time.monotonic() > deadline:
                return stats
            say(f"[drain] {await self.probe()}")
            await asyncio.sleep(1)

    async def status(self) -> dict[str, Any]:
        return await get_json(self.status_url, self.status_headers)


def sink_host(args: Any) -> tuple[str, str]:
    """Where the sink listens and the address forwarders reach it at: this machine's IP on a cluster."""
    if not args.address:
        return "127.0.0.1", "127.0.0.1"
    return "0.0.0.0", socket.gethostbyname(socket.gethostname())


def deploy_static_events_api(config: WorkspaceConfig, data_dir: str) -> None:
    """The Events API replaced by one that checks the clear-text secrets of `config` (the workspace file) and
    follows no configuration versions: the Events API as it was before the configuration store, for a same-run
    comparison with the hashed keys and the live configuration."""
    from ray import serve

    from serve_apps.app import APPS, events_app

    serve.run(events_app(config, data_dir, static_keys=True), name="events", route_prefix=APPS["events"][0])


@asynccontextmanager
async def running_platform(
    config: WorkspaceConfig, args: Any, outputs: Outputs = single_output, static_keys: bool = False
) -> AsyncIterator[Platform]:
    """The platform on Ray (embedded, or the cluster at `--address`), forwarding to a sink process. With
    `static_keys`, its Events API checks the file's clear-text secrets and follows no configuration versions."""
    from cdp_actors.cli import start_platform, start_ray, stop_platform

    listen, reach = sink_host(args)
    sink_port, port = free_port(), free_port()
    sink = start_process(run_sink, sink_port, listen)
    assert sink.pid is not None  # started
    sink_stats = f"http://127.0.0.1:{sink_port}/stats"
    config, paths = outputs(config, f"http://{reach}:{sink_port}")
    config = with_delivery_batching(config, args.delivery_batching)
    # a phase writes gigabytes; its figures are in the report, its data goes with it
    with tempfile.TemporaryDirectory(prefix="cdp-bench-", ignore_cleanup_errors=True) as data_dir:
        try:
            await wait_http(sink_stats)
            start_ray(args.address, ingress=args.ingress)
            start_platform(config, data_dir, "127.0.0.1", port, announce_passwords=False)
            if static_keys:
                deploy_static_events_api(config, data_dir)
            url = f"http://127.0.0.1:{port}"
            platform = Platform(
                f"{url}/v2/bulkevents",
                basic_auth(config),
                f"{url}/cdp/status",
                sink_stats,
                paths,
                args,
                {sink.pid},
                await admin_bearer(url, config),
            )
            platform.sample_rss()
            yield platform
        finally:
            with_suppressed(lambda: stop_platform(config))
            sink.kill()


def with_suppressed(action: Any) -> None:
    try:
        action()
    except Exception as error:  # cleanup must not hide the benchmark's own outcome
        say(f"cleanup: {error}")


async def system_phase(
    config: WorkspaceConfig,
    args: Any,
    label: str = "system",
    outputs: Outputs = single_output,
    workload: Workload | None = None,
    static_keys: bool = False,
) -> dict[str, Any]:
    """One load phase on a fresh platform, then a drain until everything acknowledged is delivered."""
    async with running_platform(config, args, outputs, static_keys) as platform:
        started = time.time()
        load = await platform.load(label, workload or workload_for(args), args.duration, args.rate)
        drained = await platform.drain(load.acked_events, deadline_s=max(120.0, 4 * args.duration))
        platform.sample_rss()
        shards = (await platform.status())["shards"]
        return {"load": load, "sink": drained, "started": started, "samples": platform.samples, "shards": shards}
