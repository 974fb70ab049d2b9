"""`cdp bench ingest`: acknowledged and end-to-end throughput against a same-run, no-Ray baseline.

Phase 1 drives the baseline server (aiohttp + msgspec + LMDB synced group commit, no Ray) with the
same closed-loop load; phase 2 drives a platform whose Events API checks the workspace file's clear-text
secrets and follows no configuration versions (the static configuration, as before the configuration store);
phase 3 drives the platform as it runs (keys verified through their stored hashes, the live configuration),
each delivering to a local sink, then waiting for the sink to receive everything that was acknowledged.
`--rate` makes phases 2 and 3 open-loop at that many events/s. The report's figures are phase 3's, with its
ratios to the baseline and to phase 2 (issue 15: end to end ≥ 0.95 of the static configuration's rate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.input_keys import verification_costs
from benchmarks.load import LoadResult, say
from benchmarks.platform import baseline_phase, system_phase
from benchmarks.servers import percentiles
from cdp_actors.config import WorkspaceConfig


def e2e_rate(sink: dict[str, Any], started: float) -> tuple[float, float]:
    """Delivered events per second, from load start to the last delivery, and that span."""
    seconds = [second for second, _ in sink["per_second"]]
    if not seconds:
        return 0.0, 0.0
    span = max(1.0, seconds[-1] + 1 - started)
    return sink["events"] / span, span


def delivered_timeline(sink: dict[str, Any], started: float) -> list[int]:
    """Events delivered in each second since the load started."""
    per_second = dict(sink["per_second"])
    first = int(started)
    last = max(per_second, default=first)
    return [per_second.get(second, 0) for second in range(first, last + 1)]


def rss_figures(samples: dict[str, list]) -> dict[str, Any]:
    private = [p for p, _ in samples["rss_mb"]]
    return {
        "peak_rss_mb": round(max(private)),
        "rss_start_mb": round(private[0]),
        "rss_end_mb": round(private[-1]),
        "rss_growth": round(private[-1] / private[0] - 1, 3),
        "peak_rss_total_mb": round(max(total for _, total in samples["rss_mb"])),
    }


def statuses(load: LoadResult) -> dict[str, int]:
    return {str(k): v for k, v in sorted(load.statuses.items(), key=str)}


def static_comparison(static: dict[str, Any], load: LoadResult, e2e: float) -> dict[str, Any]:
    """The static configuration's figures and the live platform's ratios to them."""
    static_load: LoadResult = static["load"]
    static_e2e, _ = e2e_rate(static["sink"], static["started"])
    return {
        "static_acked_events_per_s": round(static_load.events_per_s),
        "static_e2e_events_per_s": round(static_e2e),
        "ratio_acked_to_static": round(load.events_per_s / static_load.events_per_s, 3),
        "ratio_e2e_to_static": round(e2e / static_e2e, 3) if static_e2e else None,
        "static_lost_batches": max(0, static_load.acked_batches - static["sink"]["unique_batches"]),
        "static_statuses": statuses(static_load),
    }


def build_report(baseline: LoadResult, system: dict[str, Any], static: dict[str, Any] | None = None) -> dict[str, Any]:
    load: LoadResult = system["load"]
    sink, samples = system["sink"], system["samples"]
    e2e, span = e2e_rate(sink, system["started"])
    return {
        "acked_events_per_s": round(load.events_per_s),
        "e2e_events_per_s": round(e2e),
        "baseline_events_per_s": round(baseline.events_per_s),
        "ratio_acked_to_baseline": round(load.events_per_s / baseline.events_per_s, 3),
        "ratio_e2e_to_baseline": round(e2e / baseline.events_per_s, 3),
        **(static_comparison(static, load, e2e) if static else {}),
        "ack_latency_ms": percentiles(load.ack_latencies_ms),
        "e2e_latency_ms": sink["latency_ms"],
        "baseline_ack_latency_ms": percentiles(baseline.ack_latencies_ms),
        **rss_figures(samples),
        "max_intake_lag_batches": max(samples["lag"], default=0),
        "acked_events": load.acked_events,
        "acked_batches": load.acked_batches,
        "delivered_events": sink["events"],
        "lost_batches": max(0, load.acked_batches - sink["unique_batches"]),
        "duplicate_deliveries": sink["batches"] - sink["unique_batches"],
        "load_seconds": round(load.seconds, 1),
        "e2e_seconds": round(span, 1),
        "statuses": statuses(load),
        "baseline_statuses": statuses(baseline),
        "timeline": {
            "acked_per_second": [load.acked_per_second[s] for s in range(int(load.seconds))],
            "static_acked_per_second": (
                [static["load"].acked_per_second[s] for s in range(int(static["load"].seconds))] if static else []
            ),
            "baseline_per_second": [baseline.acked_per_second[s] for s in range(int(baseline.seconds))],
            "delivered_per_second": delivered_timeline(sink, system["started"]),
            "intake_lag": samples["lag"],
            "rss_mb": [round(p) for p, _ in samples["rss_mb"]],
        },
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """Throughput over time, latency percentiles, memory and intake lag."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["timeline"]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 10))
    top.plot(timeline["acked_per_second"], label="acknowledged")
    if timeline.get("static_acked_per_second"):
        top.plot(timeline["static_acked_per_second"], label="acknowledged, static configuration", linestyle="--")
    top.plot(timeline["delivered_per_second"], label="delivered to sink")
    top.plot(timeline["baseline_per_second"], label="baseline (no Ray)", linestyle=":")
    top.set(title="events per second", xlabel="second")
    top.legend()
    labels = [f"{kind} {q}" for kind in ("ack", "e2e") for q in ("p50", "p90", "p99")]
    values = [report[f"{kind}_latency_ms"].get(q, 0) for kind in ("ack", "e2e") for q in ("p50", "p90", "p99")]
    middle.bar(labels, values)
    middle.set(title="latency (ms)", yscale="log")
    bottom.plot(timeline["rss_mb"], label="private RSS (MB)")
    lag_axis = bottom.twinx()
    lag_axis.plot(timeline["intake_lag"], color="tab:red", label="intake lag (batches)")
    bottom.set(title="memory and intake lag", xlabel="sample (≈1 s)")
    bottom.legend(loc="upper left")
    lag_axis.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


SETTINGS = (
    "duration",
    "baseline_duration",
    "users",
    "rate",
    "zipf",
    "concurrency",
    "delivery_batching",
    "shards",
    "forwarders",
    "ingress",
    "address",
)


def write(report: dict[str, Any], args: Any, name: str, draw: Any = plot) -> dict[str, Any]:
    """`<out>/<name>.json` and `.png` with the run's settings; the report without timelines, for the terminal."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {**report, "settings": {key: getattr(args, key, None) for key in SETTINGS}}
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    draw(report, out / f"{name}.png")
    say(f"wrote {out / f'{name}.json'} and {out / f'{name}.png'}")
    return {k: v for k, v in report.items() if k != "timeline"}


async def run_ingest_bench(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    baseline = await baseline_phase(config, args)
    static = await system_phase(config, args, "static", static_keys=True)
    system = await system_phase(config, args)
    report = {**build_report(baseline, system, static), "verification": verification_costs(config)}
    return write(report, args, "ingest")
