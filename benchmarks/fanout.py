"""`cdp bench fanout`: one input to five outputs, against one output, and with one of the five hard down.

Phases (each `--duration` of closed-loop load, then a drain): the same-run no-Ray baseline; one webhook
output; five webhook outputs (one sink path each); five outputs of which one points at a closed port.
The figure per phase is the end-to-end rate each healthy output receives (events/s from the first send
to its last delivery). Targets: five outputs keep ≥ 60% of the one-output rate; the dead output costs
the other four < 10%.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.ingest import write
from benchmarks.load import say
from benchmarks.platform import baseline_phase, system_phase
from cdp_actors.cli import free_port
from cdp_actors.config import WorkspaceConfig

OUTPUTS = 5


def fanned_out(dead: int) -> Any:
    """An `outputs` hook for `system_phase`: five webhook outputs, the last `dead` of them unreachable."""

    def configure(config: WorkspaceConfig, sink: str) -> tuple[WorkspaceConfig, list[str]]:
        template, connection = config.outputs[0], config.connections[0]
        closed = f"http://127.0.0.1:{free_port()}/down"
        urls = [f"{sink}/o{n}" if n <= OUTPUTS - dead else closed for n in range(1, OUTPUTS + 1)]
        outputs = [
            template.model_copy(
                update={"id": n, "name": f"out-{n}", "settings": template.settings.model_copy(update={"url": url})}
            )
            for n, url in enumerate(urls, start=1)
        ]
        connections = [
            connection.model_copy(update={"id": n, "name": f"conn-{n}", "output": n}) for n in range(1, OUTPUTS + 1)
        ]
        healthy = [f"/o{n}" for n in range(1, OUTPUTS - dead + 1)]
        return config.model_copy(update={"outputs": outputs, "connections": connections}), healthy

    return configure


def per_output_rate(system: dict[str, Any], path: str) -> float:
    stats = system["sink"]["paths"].get(path)
    if not stats:
        return 0.0
    return stats["events"] / max(1.0, stats["last_second"] + 1 - system["started"])


async def run_fanout_bench(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    baseline = await baseline_phase(config, args)
    phases = {}
    for label, outputs, paths in (
        ("one-output", None, ["/webhook"]),
        ("five-outputs", fanned_out(0), [f"/o{n}" for n in range(1, OUTPUTS + 1)]),
        ("one-of-five-down", fanned_out(1), [f"/o{n}" for n in range(1, OUTPUTS)]),
    ):
        hook = {"outputs": outputs} if outputs else {}
        system = await system_phase(config, args, label, **hook)
        rates = [per_output_rate(system, path) for path in paths]
        phases[label] = {
            "acked_events_per_s": round(system["load"].events_per_s),
            "per_output_e2e_events_per_s": [round(r) for r in rates],
            "min_output_e2e_events_per_s": round(min(rates)),
            "delivered_events": {path: system["sink"]["paths"].get(path, {}).get("events", 0) for path in paths},
            "acked_events": system["load"].acked_events,
            "statuses": {str(k): v for k, v in system["load"].statuses.items()},
        }
        say(f"[{label}] per output e2e {phases[label]['per_output_e2e_events_per_s']} events/s")
    single = phases["one-output"]["min_output_e2e_events_per_s"]
    five = phases["five-outputs"]["min_output_e2e_events_per_s"]
    degraded = phases["one-of-five-down"]["min_output_e2e_events_per_s"]
    report = {
        "baseline_events_per_s": round(baseline.events_per_s),
        "phases": phases,
        "fanout_ratio": round(five / max(1, single), 3),
        "fanout_ratio_target": 0.6,
        "dead_output_cost": round(1 - degraded / max(1, five), 3),
        "dead_output_cost_target": 0.1,
        "ratio_one_output_e2e_to_baseline": round(single / baseline.events_per_s, 3),
    }
    return write(report, args, "fanout", plot)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(9, 4))
    for n, (label, phase) in enumerate(report["phases"].items()):
        rates = phase["per_output_e2e_events_per_s"]
        axis.bar(
            [n + i / (len(rates) + 1) for i in range(len(rates))], rates, width=0.8 / (len(rates) + 1), label=label
        )
    axis.set(title="end-to-end events/s received per healthy output", xticks=[])
    axis.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
