"""`cdp bench overload`: the maximum, latency at half of it, and three times it, on one platform.

1. Closed loop for `--probe-duration` s: the maximum acknowledged rate. Then a drain.
2. Open loop at half that rate for `--duration` s: acknowledgement latency (target p99 ≤ 100 ms).
3. Open loop at 3× the maximum for `--overload-duration` s (default 60): the answers must be only 202 and
   429 with `Retry-After`, private RSS must stay flat, and after a drain every acknowledged batch must
   have reached the sink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.ingest import statuses, write
from benchmarks.load import LoadResult, say
from benchmarks.platform import Platform, baseline_phase, running_platform, workload_for
from benchmarks.servers import percentiles
from cdp_actors.config import WorkspaceConfig


async def phase(
    platform: Platform, args: Any, label: str, duration: float, rate: float | None, acked_so_far: int
) -> tuple[LoadResult, dict[str, Any], list[float]]:
    """Load, then drain until the sink holds everything acknowledged so far; the private RSS samples taken."""
    first_sample = len(platform.samples["rss_mb"])
    load = await platform.load(label, workload_for(args), duration, rate)
    sink = await platform.drain(acked_so_far + load.acked_events, deadline_s=max(120.0, 4 * duration))
    rss = [private for private, _ in platform.samples["rss_mb"][first_sample:]]
    return load, sink, rss


def summary(load: LoadResult, rss: list[float]) -> dict[str, Any]:
    return {
        "acked_events_per_s": round(load.events_per_s),
        "ack_latency_ms": percentiles(load.ack_latencies_ms),
        "statuses": statuses(load),
        "rss_start_mb": round(rss[0]) if rss else None,
        "peak_rss_mb": round(max(rss)) if rss else None,
        "rss_end_mb": round(rss[-1]) if rss else None,
    }


async def run_overload_bench(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    baseline = await baseline_phase(config, args)
    acked_events = acked_batches = 0
    phases: dict[str, dict[str, Any]] = {}
    async with running_platform(config, args) as platform:
        probe, _, rss = await phase(platform, args, "maximum", args.probe_duration, None, acked_events)
        acked_events, acked_batches = probe.acked_events, probe.acked_batches
        phases["maximum"] = summary(probe, rss)
        maximum = probe.events_per_s
        say(f"[maximum] {maximum:,.0f} events/s acknowledged")
        plan = (("half", args.duration, maximum / 2), ("overload-3x", args.overload_duration, 3 * maximum))
        for label, duration, rate in plan:
            load, sink, rss = await phase(platform, args, label, duration, rate, acked_events)
            acked_events += load.acked_events
            acked_batches += load.acked_batches
            phases[label] = {
                **summary(load, rss),
                "rate_target_events_per_s": round(rate),
                "retry_after_headers": dict(load.retry_after),
            }
        overload = phases["overload-3x"]
        answers = set(overload["statuses"]) - {"not_sent"}  # the generator's own cap: never reached the server
        report = {
            "baseline_events_per_s": round(baseline.events_per_s),
            "maximum_events_per_s": round(maximum),
            "ratio_maximum_to_baseline": round(maximum / baseline.events_per_s, 3),
            "half_rate_ack_p99_ms": phases["half"]["ack_latency_ms"]["p99"],
            "half_rate_ack_p99_target_ms": 100,
            "overload_only_202_and_429": answers <= {"202", "429"},
            "overload_requests_not_sent": overload["statuses"].get("not_sent", 0),
            "overload_rss_growth": round(overload["peak_rss_mb"] / overload["rss_start_mb"] - 1, 3),
            "acked_batches": acked_batches,
            "delivered_unique_batches": sink["unique_batches"],
            "lost_batches": max(0, acked_batches - sink["unique_batches"]),
            "duplicate_deliveries": sink["batches"] - sink["unique_batches"],
            "phases": phases,
            "timeline": {
                "rss_mb": [round(p) for p, _ in platform.samples["rss_mb"]],
                "rss_at_s": platform.samples["rss_at"],
                "intake_lag": platform.samples["lag"],
                "intake_lag_at_s": platform.samples["lag_at"],
            },
        }
    return write(report, args, "overload", plot)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, memory) = plt.subplots(2, 1, figsize=(9, 8))
    labels = list(report["phases"])
    for n, quantile in enumerate(("p50", "p90", "p99")):
        values = [report["phases"][label]["ack_latency_ms"][quantile] for label in labels]
        latency.bar([i + n * 0.27 for i in range(len(labels))], values, width=0.27, label=quantile)
    latency.set(
        title="acknowledgement latency per phase (ms)", xticks=range(len(labels)), xticklabels=labels, yscale="log"
    )
    latency.legend()
    timeline = report["timeline"]
    memory.plot(timeline["rss_at_s"], timeline["rss_mb"], label="private RSS (MB)")
    lag_axis = memory.twinx()
    lag_axis.plot(timeline["intake_lag_at_s"], timeline["intake_lag"], color="tab:red", label="intake lag (batches)")
    memory.set(title="memory and intake lag", xlabel="seconds since start")
    memory.legend(loc="upper left")
    lag_axis.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
