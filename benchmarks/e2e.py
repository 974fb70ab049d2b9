"""`cdp bench e2e`: sustained end to end. Open loop at `--rate` events/s (default 15,000) over `--users`
(default 1,000,000) for `--duration`; what the sink receives while the load runs is the sustained rate.

Targets (2 cores): sustained ≥ 15,000 events/s for 10 minutes over 1M users, private RSS growth < 10%
after warm-up, nothing lost. Sustained = events delivered per second while the load runs, after a warm-up
of a tenth of the run (at most a minute). Without `--rate` the load is closed-loop (the maximum).
"""

from __future__ import annotations

from typing import Any

from benchmarks.ingest import build_report, write
from benchmarks.platform import baseline_phase, system_phase
from cdp_actors.config import WorkspaceConfig

WARM_UP_S = 60.0


def warm_up_s(duration: float) -> int:
    """A tenth of the run, at most a minute: excluded from the sustained rate and the RSS growth."""
    return int(min(WARM_UP_S, duration / 10))


def after_warm_up(samples: dict[str, list], duration: float) -> float:
    """Private RSS at the first sample past the warm-up."""
    warm_up = warm_up_s(duration)
    for at, (private, _) in zip(samples["rss_at"], samples["rss_mb"], strict=True):
        if at >= warm_up:
            return private
    return samples["rss_mb"][0][0]


def min_window_rate(per_second: list[int], window: int) -> int:
    """The slowest `window`-second stretch: a stall shows here even when the average looks fine."""
    sums = [sum(per_second[i : i + window]) for i in range(0, max(1, len(per_second) - window + 1))]
    return round(min(sums, default=0) / window)


def sustained(report: dict[str, Any], system: dict[str, Any], args: Any) -> dict[str, Any]:
    seconds, skip = int(report["load_seconds"]), warm_up_s(args.duration)
    delivered = report["timeline"]["delivered_per_second"]
    in_window = sum(delivered[:seconds])
    warm = after_warm_up(system["samples"], args.duration)
    return {
        "rate_target_events_per_s": args.rate,
        "sustained_e2e_events_per_s": round(sum(delivered[skip:seconds]) / max(1, seconds - skip)),
        "min_e2e_events_per_10s": min_window_rate(delivered[skip:seconds], 10),
        "sustained_e2e_target": 15_000,
        "backlog_at_load_end_events": report["acked_events"] - in_window,
        "drain_seconds": round(report["e2e_seconds"] - report["load_seconds"], 1),
        "rss_after_warm_up_mb": round(warm),
        "rss_growth_after_warm_up": round(report["rss_end_mb"] / warm - 1, 3),
        "rss_growth_target": 0.10,
        "users": args.users,
        "profiles": sum(shard["profiles"] for shard in system["shards"]),
    }


async def run_e2e_bench(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    baseline = await baseline_phase(config, args)
    system = await system_phase(config, args, "e2e")
    report = build_report(baseline, system)
    return write({**sustained(report, system, args), **report}, args, "e2e")
