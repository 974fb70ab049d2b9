"""`cdp export`'s per-shard writer without Ray: a shard's LMDB (written by ShardCore, as the platform does) read
read-only into the snapshot's Parquet files, which pandas and polars load as they are; rows checked against the
shard's own per-user view (`ShardCore.profile`), the window and the record batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import yaml

from cdp_actors.config import parse_workspace
from cdp_actors.predict import export
from cdp_actors.predict.snapshot import EVENT_COLUMNS, EVENTS_DIR, PROFILE_COLUMNS, PROFILES_DIR, shard_file
from cdp_actors.profiles.shard import ShardCore
from cdp_actors.schema.records import ShardRecord
from tests.samples import batch, custom, event

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_760_000_000_000
HOUR = 3_600_000
USERS = (11, 12, 13)


def record(seq: int, mpid: int, events: list[dict], **fields: Any) -> ShardRecord:
    raw = json.dumps(batch(f"user-{mpid}", events, **fields)).encode()
    return ShardRecord(seq, seq, mpid, 1, T0 + seq, raw)


def stored_shard(path: Path) -> dict[int, dict[str, Any]]:
    """A shard with three users (custom and commerce events, attributes, consent), closed; returns each user's
    view as the shard answers it (`ShardCore.profile`), read before closing."""
    config = parse_workspace(yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text()))
    core = ShardCore(path, 0, config)
    seq = 0
    for mpid in USERS:
        for hour in range(mpid - 10):  # user 11 one batch, 12 two, 13 three
            seq += 1
            events = [custom("Played", T0 + hour * HOUR, level=hour), event("commerce_event", T0 + hour * HOUR + 1)]
            consent = {"gdpr": {"marketing": {"consented": hour % 2 == 0, "timestamp_unixtime_ms": T0}}}
            core.apply([record(seq, mpid, events, user_attributes={"plan": f"p{hour}"}, consent_state=consent)], None)
    views = {mpid: core.profile(mpid, recent=100) for mpid in USERS}
    core.store.close()
    return {mpid: view for mpid, view in views.items() if view is not None}


def run(path: Path, out: Path, window: export.Window | None = None) -> dict[str, int]:
    items = list(export.export_shard(path, 0, out, export.KINDS, window or export.Window()))
    result = items[-1]
    assert isinstance(result, export.ShardResult)
    assert all(isinstance(item, export.Progress) for item in items[:-1])
    return result.rows


def test_files_hold_the_shards_rows_and_load_in_pandas_and_polars(tmp_path: Path) -> None:
    views = stored_shard(tmp_path / "shard-0")
    assert run(tmp_path / "shard-0", tmp_path / "out") == {PROFILES_DIR: 3, EVENTS_DIR: 12}

    profiles = pd.read_parquet(tmp_path / "out" / PROFILES_DIR / shard_file(0))
    assert list(profiles.columns) == list(PROFILE_COLUMNS)
    for row in profiles.to_dict("records"):
        view = views[row["mpid"]]
        assert json.loads(row["user_attributes"]) == {n: v[0] for n, v in view["attributes"].items()}
        assert (row["first_seen_ms"], row["last_seen_ms"]) == (view["first_seen_ms"], view["last_seen_ms"])
        assert list(row["identity_types"]) == ["customer_id"]
        marketing = view["consent"]["gdpr"]["marketing"]["consented"]
        assert json.loads(row["gdpr_consent"]) == {"marketing": marketing}

    events = pl.read_parquet(tmp_path / "out" / EVENTS_DIR / shard_file(0))
    assert events.columns == list(EVENT_COLUMNS)
    for mpid, view in views.items():
        mine = events.filter(pl.col("mpid") == mpid)
        stored = view["recent_events"]
        assert mine["timestamp_ms"].to_list() == sorted(e["data"]["timestamp_unixtime_ms"] for e in stored)
        assert mine["event_type"].to_list() == [e["event_type"] for e in stored]
        purchases = mine.filter(pl.col("event_type") == "commerce_event")
        assert purchases["product_action"].to_list() == ["purchase"] * (mpid - 10)
        assert purchases["revenue"].to_list() == [99.0] * (mpid - 10)
        played = mine.filter(pl.col("event_type") == "custom_event")
        assert played["event_name"].to_list() == ["Played"] * (mpid - 10)
        assert [json.loads(a)["level"] for a in played["attributes"].to_list()] == list(range(mpid - 10))


def test_window_keeps_events_since_inclusive_until_exclusive(tmp_path: Path) -> None:
    stored_shard(tmp_path / "shard-0")
    window = export.Window(since_ms=T0 + HOUR, until_ms=T0 + 2 * HOUR + 1)  # hour 1's two events, hour 2's first
    rows = run(tmp_path / "shard-0", tmp_path / "out", window)
    events = pd.read_parquet(tmp_path / "out" / EVENTS_DIR / shard_file(0))
    assert sorted(events["timestamp_ms"]) == [T0 + HOUR, T0 + HOUR, T0 + HOUR + 1, T0 + HOUR + 1, T0 + 2 * HOUR]
    assert rows[EVENTS_DIR] == 5


def test_rows_leave_in_bounded_record_batches(tmp_path: Path) -> None:
    schema = export.PROFILE_SCHEMA
    rows = ({**dict.fromkeys(schema.names), "mpid": n, "identity_types": [], "audience_ids": []} for n in range(10))
    written = list(export.write_parquet(tmp_path / "p.parquet", schema, rows))
    assert written == [10]  # one batch below BATCH_ROWS
    sizes = [b.num_rows for b in export.batches(({"mpid": n} for n in range(7)), schema, size=3)]
    assert sizes == [3, 3, 1]
    assert pq.read_table(tmp_path / "p.parquet").column("mpid").to_pylist() == list(range(10))


def test_an_empty_shard_still_gets_its_files(tmp_path: Path) -> None:
    config = parse_workspace(yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text()))
    ShardCore(tmp_path / "shard-0", 0, config).store.close()
    assert run(tmp_path / "shard-0", tmp_path / "out") == {PROFILES_DIR: 0, EVENTS_DIR: 0}
    assert pd.read_parquet(tmp_path / "out" / EVENTS_DIR / shard_file(0)).empty
