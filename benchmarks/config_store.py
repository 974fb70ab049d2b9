"""What the live configuration costs on the hot path: `python -m benchmarks.config_store [--items N]`.

Measures, in one process, with the store on the data directory's disk (synced commits):
- `ConfigStore.version()` and `current()` while the version stands (what the owner pays per call);
- `ConfigWatcher.snapshot()` between polls (what a batch pays) and at a poll that finds the same version;
- a reload: reading a version's snapshot (decode, unseal, validate) plus a `derive` that builds the adapters;
- `apply()` of one change (validate, diff, encode, one synced commit).
The workspace has `--items` inputs, webhook outputs and connections (plus the demo's own).
"""

from __future__ import annotations

import argparse
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdp_actors.config import WorkspaceConfig, load_workspace
from cdp_actors.control.changes import AddConnection, AddInput, AddOutput, UpdateConnection
from cdp_actors.control.store import ClearSecrets, ConfigStore
from cdp_actors.control.watcher import ConfigWatcher
from cdp_actors.integrations.registry import build_adapter

DEMO = Path(__file__).resolve().parents[1] / "configs" / "workspace.yaml"


def per_call_us(call: Callable[[], Any], number: int) -> float:
    """The best of five runs of `number` calls, in microseconds per call."""
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def grown(store: ConfigStore, items: int) -> None:
    for n in range(items):
        store.apply(AddInput(fields={"name": f"in-{n}", "key": f"key-{n}", "secret": f"secret-{n}"}), None, "bench")
        settings = {"url": f"https://example.com/{n}", "auth_header": f"Bearer {n}"}
        store.apply(AddOutput(fields={"name": f"out-{n}", "kind": "webhook", "settings": settings}), None, "bench")
        store.apply(AddConnection(fields={"input": n + 2, "output": n + 2}), None, "bench")


def adapters(config: WorkspaceConfig) -> dict[int, Any]:
    return {o.id: build_adapter(o.kind, o.settings) for o in config.outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description="What the live configuration costs on the hot path.")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--dir", default=".", help="where the temporary store goes (its disk is measured)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        store = ConfigStore(Path(directory) / "control", ClearSecrets())
        store.seed_from(load_workspace(DEMO))
        grown(store, args.items)
        version, config = store.current()
        print(f"workspace: {len(config.inputs)} inputs, {len(config.outputs)} outputs, version {version}")
        print(f"version():                      {per_call_us(store.version, 100_000):8.2f} µs")
        print(f"current(), same version:        {per_call_us(store.current, 100_000):8.2f} µs")
        watcher = ConfigWatcher(store.current(), adapters, store.version, store.current)
        print(f"snapshot(), between polls:      {per_call_us(watcher.snapshot, 100_000):8.2f} µs")
        polling = ConfigWatcher(store.current(), adapters, store.version, store.current, poll_interval_s=0.0)
        print(f"snapshot(), a poll, same:       {per_call_us(polling.snapshot, 100_000):8.2f} µs")
        flips = iter(range(10**9))

        def change() -> None:
            store.apply(UpdateConnection(id=1, fields={"active": next(flips) % 2 == 0}), None, "bench")

        print(f"apply(), one synced change:     {per_call_us(change, 50):8.2f} µs")

        def reload() -> None:  # what a new version costs: decode, unseal, validate, derive
            adapters(store.snapshot(store.version()))

        print(f"reload: snapshot + adapters:    {per_call_us(reload, 50):8.2f} µs")
        store.close()


if __name__ == "__main__":
    main()
