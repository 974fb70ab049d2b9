"""What calculated attributes and real-time audiences cost a profile shard, in process: `python -m
benchmarks.derived_apply`.

Two `ShardCore`s (no Ray), each in its own temporary directory: one with the demo workspace
(`configs/workspace.yaml`) as it is, one with `benchmarks.audiences.derived_workspace`'s 20 active calculated
attributes and 20 real-time audiences added. Each applies the same 6,000 batches of `Workload(2000, seed=3)` (10
mixed events each, over 2,000 users; the user's MPID from its customer id) in chunks of 200, as the dispatcher
sends them. Prints batches per second for both and their ratio (derived / plain), each the best of 3 runs on a
fresh shard (on a shared machine the best run is the closest to the code's own cost), the same per second of the
process's CPU time (what other processes on a shared machine change least), and the membership rows the derived
shard wrote to its outbox with the changes they carry.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import msgspec

from benchmarks.audiences import derived_workspace
from benchmarks.workload import Workload
from cdp_actors.config import WorkspaceConfig, load_workspace
from cdp_actors.profiles.handoff import membership_changes
from cdp_actors.profiles.shard import ShardCore
from cdp_actors.schema.records import OutboxRow, ShardRecord

BATCHES = 6_000
USERS = 2_000
CHUNK = 200
"""Records per `apply` call: one LMDB transaction each, as a dispatcher chunk."""
RUNS = 3
WORKSPACE = Path(__file__).resolve().parent.parent / "configs" / "workspace.yaml"
MEMBERSHIP_URL = "http://127.0.0.1:9/m"
"""Never contacted: the shard only writes membership changes to its outbox."""
NOW_MS = 1_764_000_000_000
"""The batches' receipt time (fixed, so every run folds the same days)."""


def records() -> list[ShardRecord]:
    workload = Workload(USERS, seed=3)
    made = []
    for seq in range(1, BATCHES + 1):
        body = workload.batch(NOW_MS)
        mpid = int(body["user_identities"]["customer_id"].removeprefix("user-")) + 1
        made.append(ShardRecord(seq, seq, mpid, 1, NOW_MS, msgspec.json.encode(body)))
    return made


class Rates(NamedTuple):
    wall: float
    """Batches per second of elapsed time, the best run's."""
    cpu: float
    """Batches per second of the process's CPU time, the best run's."""
    rows: int
    changes: int


def batches_per_s(config: WorkspaceConfig, batch_records: list[ShardRecord]) -> Rates:
    """The best of `RUNS` runs, each applying every record to a fresh shard; and the membership rows and changes
    in the last run's outbox."""
    best = best_cpu = 0.0
    rows = changes = 0
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as directory:
            core = ShardCore(directory, 0, config)
            started, started_cpu = time.perf_counter(), time.process_time()
            for first in range(0, len(batch_records), CHUNK):
                core.apply(batch_records[first : first + CHUNK], None)
            best = max(best, len(batch_records) / (time.perf_counter() - started))
            best_cpu = max(best_cpu, len(batch_records) / (time.process_time() - started_cpu))
            rows, changes = membership_rows(core)
            core.store.close()
    return Rates(best, best_cpu, rows, changes)


def membership_rows(core: ShardCore) -> tuple[int, int]:
    """The membership rows in the shard's outbox, and the changes they carry."""
    with core.store.read() as txn:
        stored = [msgspec.msgpack.decode(value, type=OutboxRow) for _, value in txn.cursor(core.store.db("outbox"))]
    found = [row for row in stored if row.audience_id]
    return len(found), sum(len(membership_changes(row)) for row in found)


def main() -> None:
    plain_config = load_workspace(WORKSPACE)
    derived_config = derived_workspace(plain_config, MEMBERSHIP_URL)
    batch_records = records()
    plain = batches_per_s(plain_config, batch_records)
    derived = batches_per_s(derived_config, batch_records)
    print(f"plain: {plain.wall:,.0f} batches/s ({plain.cpu:,.0f} per CPU second)")
    print(f"derived (20 CAs, 20 audiences): {derived.wall:,.0f} batches/s ({derived.cpu:,.0f} per CPU second)")
    print(f"membership outbox rows: {derived.rows:,}, carrying {derived.changes:,} changes")
    print(f"ratio derived/plain: {derived.wall / plain.wall:.2f} (CPU: {derived.cpu / plain.cpu:.2f})")


if __name__ == "__main__":
    main()
