"""`cdp bench skew`: the same load with uniform users, then with Zipf popularity (`--zipf`, default 1.1:
the most popular of 1M users sends about 12% of all batches), on fresh platforms.

Reports each phase's acknowledged and end-to-end rates, how the batches spread over the profile shards,
and the skewed end-to-end rate as a ratio to the uniform one. Hot users concentrate on one shard and on
one forwarder lane, where per-user order is kept, so skew is where a hash-partitioned design pays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.ingest import build_report, write
from benchmarks.platform import baseline_phase, system_phase, workload_for
from cdp_actors.config import WorkspaceConfig


def shard_shares(shards: list[dict[str, Any]]) -> list[float]:
    applied = [shard["applied_since_start"] for shard in shards]
    return [round(n / max(1, sum(applied)), 3) for n in applied]


async def run_skew_bench(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    zipf = args.zipf or 1.1
    baseline = await baseline_phase(config, args)
    phases = {}
    for label, exponent in (("uniform", 0.0), (f"zipf-{zipf}", zipf)):
        system = await system_phase(config, args, label, workload=workload_for(args, exponent))
        report = build_report(baseline, system)
        phases[label] = {**report, "shard_shares": shard_shares(system["shards"])}
    uniform, skewed = phases["uniform"], phases[f"zipf-{zipf}"]
    summary = {
        "zipf_exponent": zipf,
        "baseline_events_per_s": uniform["baseline_events_per_s"],
        "ratio_skewed_to_uniform_e2e": round(skewed["e2e_events_per_s"] / max(1, uniform["e2e_events_per_s"]), 3),
        "ratio_skewed_to_uniform_acked": round(skewed["acked_events_per_s"] / max(1, uniform["acked_events_per_s"]), 3),
    }
    report = {**summary, "phases": phases, "timeline": skewed["timeline"]}
    write(report, args, "skew", plot)
    return {**summary, "phases": {k: {f: v for f, v in p.items() if f != "timeline"} for k, p in phases.items()}}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rates, shares) = plt.subplots(2, 1, figsize=(9, 8))
    for label, phase in report["phases"].items():
        rates.plot(phase["timeline"]["delivered_per_second"], label=f"{label}: delivered")
        rates.plot(phase["timeline"]["acked_per_second"], label=f"{label}: acknowledged", linestyle=":")
    rates.set(title="events per second", xlabel="second")
    rates.legend()
    width = 0.8 / len(report["phases"])
    for n, (label, phase) in enumerate(report["phases"].items()):
        positions = [shard + n * width for shard in range(len(phase["shard_shares"]))]
        shares.bar(positions, phase["shard_shares"], width=width, label=label)
    shares.set(title="share of batches per profile shard", xlabel="shard")
    shares.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
