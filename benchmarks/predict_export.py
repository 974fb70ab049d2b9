"""`cdp export`'s per-shard writer alone (no Ray): rows/s of one shard's profiles and events files written as
Parquet, beside a same-run baseline that only decodes the same events into one Python list and one pandas
DataFrame (no file; the unbounded-memory way record batches avoid).

    python -m benchmarks.predict_export --users 20000 --events 5
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import msgspec
import pandas as pd
import yaml

from cdp_actors.config import parse_workspace
from cdp_actors.predict import export
from cdp_actors.profiles.shard import ShardCore
from cdp_actors.schema.records import ShardRecord

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_760_000_000_000
APPLY_CHUNK = 500  # records per shard transaction, as the dispatcher's chunks


def build_shard(path: Path, users: int, events: int) -> None:
    config = parse_workspace(yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text()))
    core = ShardCore(path, 0, config)
    records = []
    for seq, mpid in enumerate(range(1, users + 1), start=1):
        body = {
            "environment": "production",
            "user_identities": {"customer_id": f"c{mpid}"},
            "user_attributes": {"plan": "gold" if mpid % 3 else "free", "age": mpid % 80},
            "events": [
                {"event_type": "custom_event",
                 "data": {"event_name": "Played", "custom_event_type": "navigation",
                          "timestamp_unixtime_ms": T0 + n * 60_000, "custom_attributes": {"level": n}}}
                for n in range(events)
            ],
        }  # fmt: skip
        records.append(ShardRecord(seq, seq, mpid, 1, T0, msgspec.json.encode(body)))
        if len(records) == APPLY_CHUNK:
            core.apply(records, None)
            records = []
    if records:
        core.apply(records, None)
    core.store.close()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        shard = Path(scratch) / "shard-0"
        build_shard(shard, args.users, args.events)
        started = time.perf_counter()
        items = list(export.export_shard(shard, 0, Path(scratch) / "out", export.KINDS, export.Window()))
        took = time.perf_counter() - started
        result = items[-1]
        assert isinstance(result, export.ShardResult)
        rows = result.rows
        started = time.perf_counter()
        env = export.open_read_only(shard)
        with env.begin(buffers=False) as txn:
            history = env.open_db(b"history", txn=txn, create=False)
            frame = pd.DataFrame(list(export.event_rows(txn, history, export.Window())))
        env.close()
        baseline = time.perf_counter() - started
        report = {
            "users": args.users,
            "events": rows[export.EVENTS_DIR],
            "export_s": round(took, 2),
            "rows_per_s": round((rows[export.PROFILES_DIR] + rows[export.EVENTS_DIR]) / took),
            "baseline_events_one_list_s": round(baseline, 2),
            "peak_rss_mb": round(peak_mb(), 1),
            "baseline_rows": len(frame),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
