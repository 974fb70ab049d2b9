"""The benchmark's own processes: a counting webhook sink, and the no-Ray baseline ingest server."""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import time
from collections import Counter
from multiprocessing.process import BaseProcess
from typing import Any

import msgspec
from aiohttp import web

from benchmarks.workload import sent_ms_of
from cdp_actors.tasks import spawn


class _EventHead(msgspec.Struct):
    event_type: str


class _Head(msgspec.Struct):
    source_request_id: str = ""
    events: list[_EventHead] = []


def inbound_events(head: _Head) -> int:
    """Events the workload sent: the platform adds `user_identity_change` events, the workload never does."""
    return sum(event.event_type != "user_identity_change" for event in head.events)


_heads = msgspec.json.Decoder(_Head | list[_Head])  # one batch per POST, or a JSON array of them


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50": round(pick(0.50), 2),
        "p90": round(pick(0.90), 2),
        "p99": round(pick(0.99), 2),
        "max": round(ordered[-1], 2),
    }


def run_sink(port: int, host: str = "127.0.0.1") -> None:
    """Answers 200 to every POST; GET /stats reports, overall and per request path (one path per output in
    the fan-out benchmark): unique batches, events, e2e latency and events per second."""
    batches = Counter()
    events: Counter[str] = Counter()
    per_second: Counter[int] = Counter()
    path_seconds: dict[str, Counter[int]] = {}
    latencies: list[float] = []
    seen: set[str] = set()  # "path source_request_id": unlike tuples, strings are not walked by the garbage collector

    async def receive(request: web.Request) -> web.Response:
        heads = _heads.decode(await request.read())
        now = time.time()
        for head in heads if isinstance(heads, list) else [heads]:
            batches["all"] += 1
            key = f"{request.path} {head.source_request_id}"
            if key in seen:
                continue
            seen.add(key)
            count = inbound_events(head)
            batches[request.path] += 1
            events[request.path] += count
            per_second[int(now)] += count
            path_seconds.setdefault(request.path, Counter())[int(now)] += count
            latencies.append(now * 1000 - sent_ms_of(head.source_request_id))
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        body = {
            "batches": batches["all"],
            "unique_batches": len(seen),
            "events": sum(events.values()),
            "latency_ms": percentiles(latencies),
            "per_second": sorted(per_second.items()),
            "paths": {
                path: {"events": events[path], "batches": batches[path], "last_second": max(seconds)}
                for path, seconds in path_seconds.items()
            },
        }
        return web.json_response(body)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", receive)
    app.router.add_get("/stats", stats)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


def run_baseline(port: int, data_dir: str, key: str, secret: str, max_request_bytes: int) -> None:
    """What the Events API does without Ray: auth, msgspec validation, synced LMDB group commit, 202."""
    from cdp_actors.intake.log import IntakeLogCore, _Pending
    from cdp_actors.schema.events import BatchError, decode_batch, decode_raw_list

    log = IntakeLogCore(data_dir, max_lag=1 << 62)
    expected = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
    pending: list[_Pending] = []
    committing = False

    async def commit() -> None:
        nonlocal pending, committing
        while pending:
            group, pending = pending, []
            for item, result in zip(group, await asyncio.to_thread(log.write, group), strict=True):
                item.done.set_result(result)
        committing = False

    async def ingest(request: web.Request) -> web.Response:
        nonlocal committing
        if request.headers.get("Authorization") != expected:
            return web.Response(status=403)
        body = await request.read()
        if len(body) > max_request_bytes:
            return web.Response(status=413)
        try:
            items = [bytes(raw) for raw in decode_raw_list(body)]
            accepted = [(decode_batch(raw).source_request_id, raw) for raw in items]
        except BatchError:
            return web.Response(status=400)
        done = asyncio.get_running_loop().create_future()
        pending.append(_Pending(1, int(time.time() * 1000), accepted, done))
        if not committing:
            committing = True
            spawn(commit(), "baseline commit")
        await done
        return web.Response(status=202)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v2/bulkevents", ingest)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def start_process(target: Any, *args: Any) -> BaseProcess:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    return process
