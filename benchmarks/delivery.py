"""`cdp bench delivery`: one forwarder's delivery path alone, to size forwarders for a number of outputs.

`Delivery` (what a forwarder actor runs) in this process, without Ray, fed outbox rows the way a shard feeds
a forwarder (windows of rows, acknowledged as soon as they are delivered), against the counting sink in
another process. Phases of `--duration` each: the same-run baseline, a bare aiohttp client POSTing the same
rows in requests of `--delivery-batching` with the output's concurrency (what the HTTP alone costs); then
one webhook output; then five. Reported per phase: rows delivered per second and this process's CPU per row.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from benchmarks.fanout import OUTPUTS, fanned_out
from benchmarks.ingest import write
from benchmarks.load import get_json, say, wait_http
from benchmarks.platform import single_output, with_delivery_batching
from benchmarks.servers import run_sink, start_process
from benchmarks.workload import Workload
from cdp_actors.cli import free_port
from cdp_actors.config import WorkspaceConfig
from cdp_actors.schema.records import OutboxRow

WINDOW_ROWS = 500  # rows a shard hands over at once
HELD_ROWS = 20_000  # rows out at once, as a forwarder's windows allow
DRAIN_S = 60.0


def payloads(users: int, n: int = 2_000) -> list[tuple[int, bytes, int]]:
    """(user, outbound batch JSON, events) for `n` workload batches, reused round-robin."""
    workload = Workload(users)
    made = []
    for _ in range(n):
        batch = workload.batch(int(time.time() * 1000))
        made.append((workload.user(), msgspec.json.encode(batch), len(batch["events"])))
    return made


def rows_for(config: WorkspaceConfig, users: int) -> Iterator[OutboxRow]:
    """Outbox rows, one per active connection for each batch, as a shard writes them."""
    made, connections = payloads(users), config.active_connections(config.inputs[0].id)
    for n in itertools.count():
        user, payload, events = made[n % len(made)]
        for connection in connections:
            yield OutboxRow(
                key=n.to_bytes(8, "big") + connection.id.to_bytes(4, "big"),
                shard=0,
                connection_id=connection.id,
                input_id=connection.input,
                output_id=connection.output,
                environment="production",
                mpid=user,
                event_count=events,
                payload=payload,
                received_ms=int(time.time() * 1000),
            )


async def delivery_phase(config: WorkspaceConfig, users: int, seconds: float) -> dict[str, Any]:
    from cdp_actors.forwarding.delivery import Delivery

    delivery = Delivery(config)
    rows = rows_for(config, users)
    cpu, started = time.process_time(), time.monotonic()
    while time.monotonic() - started < seconds:
        if len(delivery.known) < HELD_ROWS:
            delivery.queue([next(rows) for _ in range(WINDOW_ROWS)])
        await asyncio.sleep(0.001)
        for shard, keys in delivery.take_pending().acks.items():  # the shard deletes them at once
            delivery.acknowledged(shard, keys)
    drained_by = time.monotonic() + DRAIN_S
    while delivery.lanes:  # the rows out when the phase ends
        if time.monotonic() > drained_by:
            raise RuntimeError(f"{len(delivery.known):,} rows still undelivered {DRAIN_S:.0f} s after the phase")
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    await delivery.close()
    return measured(delivery.delivered, elapsed, time.process_time() - cpu)


async def bare_http_phase(
    url: str, config: WorkspaceConfig, users: int, batching: int, seconds: float
) -> dict[str, Any]:
    """The baseline: the same rows POSTed as JSON arrays of `batching` by a bare aiohttp client, the HTTP's
    own cost."""
    made = payloads(users)
    groups = [made[n : n + batching] for n in range(0, len(made), batching)]
    bodies = [(b"[" + b",".join(payload for _, payload, _ in group) + b"]", len(group)) for group in groups]
    delivered = 0
    cpu, started = time.process_time(), time.monotonic()

    async def client(session: aiohttp.ClientSession, first: int) -> None:
        nonlocal delivered
        n = first
        while time.monotonic() - started < seconds:
            body, rows = bodies[n % len(bodies)]
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                response.raise_for_status()
            delivered += rows
            n += 1

    concurrency = config.runtime.output_concurrency
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(client(session, n) for n in range(concurrency)))
    return measured(delivered, time.monotonic() - started, time.process_time() - cpu)


def measured(rows: int, elapsed: float, cpu: float) -> dict[str, Any]:
    return {
        "rows": rows,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "cpu_us_per_row": round(cpu / max(1, rows) * 1e6, 2),
    }


async def run_delivery_bench(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    port = free_port()
    sink_base = f"http://127.0.0.1:{port}"
    sink = start_process(run_sink, port)
    try:
        await wait_http(f"{sink_base}/stats")
        config = with_delivery_batching(config, args.delivery_batching)
        phases = {
            "baseline": await bare_http_phase(
                f"{sink_base}/baseline", config, args.users, args.delivery_batching, args.baseline_duration
            )
        }
        say(f"[baseline] {phases['baseline']}")
        for label, outputs in (("one-output", single_output), (f"{OUTPUTS}-outputs", fanned_out(0))):
            phase_config, _ = outputs(config, sink_base)
            phases[label] = await delivery_phase(phase_config, args.users, args.duration)
            say(f"[{label}] {phases[label]}")
        received = (await get_json(f"{sink_base}/stats"))["batches"]
    finally:
        sink.kill()
        sink.join()
    one, five = phases["one-output"], phases[f"{OUTPUTS}-outputs"]
    report = {
        "phases": phases,
        "ratio_one_output_to_baseline": round(one["rows_per_s"] / phases["baseline"]["rows_per_s"], 3),
        "five_outputs_cpu_per_row_to_one": round(five["cpu_us_per_row"] / one["cpu_us_per_row"], 3),
        "sink_received_batches": received,
        "delivered_rows": sum(phase["rows"] for phase in phases.values()),
    }
    return write(report, args, "delivery", plot)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["phases"])
    fig, (rate, cpu) = plt.subplots(1, 2, figsize=(10, 4))
    rate.bar(labels, [report["phases"][label]["rows_per_s"] for label in labels])
    rate.set(title="rows delivered per second")
    cpu.bar(labels, [report["phases"][label]["cpu_us_per_row"] for label in labels])
    cpu.set(title="CPU µs per row (this process)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
