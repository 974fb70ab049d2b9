"""`cdp export`: the snapshot `snapshot.py` describes, written from the running platform's shards.

One Ray task per shard, placed on the node that holds the shard (`NodeAffinitySchedulingStrategy` with the shard
actor's node id), opens the shard's LMDB environment read-only beside the running shard (LMDB allows concurrent
readers across processes) and writes that shard's files from ONE read transaction, so each shard's profiles and
events are one consistent state. Rows go out in record batches of `BATCH_ROWS`: memory stays bounded whatever
the shard holds. The task is a streaming generator: it yields its progress, which the driver shows per shard.

The files are written where the task runs: on a cluster, `--out` must be a directory every node sees (a shared
file system). An erasure of a shard's users while that shard is being exported completes after the export: its
compaction finds the environment open in another process and refuses (`Store.compact`), and the DSR actor's next
tick runs the (idempotent) erasure again. A snapshot is a copy of personal data that erasure does not reach.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import lmdb
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from cdp_actors.predict.snapshot import EVENTS_DIR, MANIFEST, PROFILES_DIR, Manifest, shard_file
from cdp_actors.profiles.model import Profile, decode_profile
from cdp_actors.storage.lmdb_env import MAP_SIZE, mpid_from_key

BATCH_ROWS: Final = 8_192
"""Rows per Parquet record batch: ~1 MB of columns for profiles; bounded memory per task, whatever the shard."""
SHARD_DB_COUNT: Final = 32
"""Named databases the read-only environment may open (a shard has fewer; LMDB needs an upper bound)."""
KINDS: Final = (PROFILES_DIR, EVENTS_DIR)
HISTORY_COUNT_BYTES: Final = 2
"""A history record starts with its event count (`ShardCore._append_history`), then the events as JSON."""

PROFILE_SCHEMA: Final = pa.schema(
    [
        ("mpid", pa.int64()),
        ("first_seen_ms", pa.int64()),
        ("last_seen_ms", pa.int64()),
        ("user_attributes", pa.string()),
        ("identity_types", pa.list_(pa.string())),
        ("gdpr_consent", pa.string()),
        ("ccpa_data_sale_opt_out", pa.bool_()),
        ("calculated_attributes", pa.string()),
        ("audience_ids", pa.list_(pa.int64())),
    ]
)
EVENT_SCHEMA: Final = pa.schema(
    [
        ("mpid", pa.int64()),
        ("timestamp_ms", pa.int64()),
        ("event_type", pa.string()),
        ("event_name", pa.string()),
        ("custom_event_type", pa.string()),
        ("product_action", pa.string()),
        ("revenue", pa.float64()),
        ("session_id", pa.int64()),
        ("attributes", pa.string()),
    ]
)
SCHEMAS: Final = {PROFILES_DIR: PROFILE_SCHEMA, EVENTS_DIR: EVENT_SCHEMA}
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class Window:
    """`--since`/`--until` (epoch ms, `until` exclusive): events stamped inside; profiles seen inside."""

    since_ms: int | None = None
    until_ms: int | None = None

    def holds(self, ms: int) -> bool:
        return (self.since_ms is None or ms >= self.since_ms) and (self.until_ms is None or ms < self.until_ms)

    def overlaps(self, first_ms: int, last_ms: int) -> bool:
        return (self.since_ms is None or last_ms >= self.since_ms) and (
            self.until_ms is None or first_ms < self.until_ms
        )


# ---- rows: one stored record -> one row, in the snapshot's columns ----------------------------------------------


def profile_row(profile: Profile) -> dict[str, Any]:
    gdpr = profile.consent.get("gdpr", {})
    ccpa = profile.consent.get("ccpa", {})
    data_sale = ccpa.get("data_sale_opt_out")
    attributes = {n: s.value for n, s in profile.attributes.items() if s.value is not None}
    return {
        "mpid": profile.mpid,
        "first_seen_ms": profile.first_seen_ms,
        "last_seen_ms": profile.last_seen_ms,
        "user_attributes": _json.encode(attributes).decode(),
        "identity_types": sorted({*profile.user_identities, *profile.device_identities}),
        "gdpr_consent": _json.encode({purpose: r.consented for purpose, r in gdpr.items()}).decode(),
        "ccpa_data_sale_opt_out": None if data_sale is None else data_sale.consented,
        "calculated_attributes": _json.encode(profile.calculated).decode(),
        "audience_ids": sorted(profile.audiences),
    }


def event_row(mpid: int, event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    event_type = event.get("event_type", "")
    action = data.get("product_action") if event_type == "commerce_event" else None
    action = action if isinstance(action, dict) else None
    revenue = action.get("total_amount") if action else None
    return {
        "mpid": mpid,
        "timestamp_ms": int(data.get("timestamp_unixtime_ms") or 0),
        "event_type": event_type,
        "event_name": data.get("event_name") or data.get("screen_name"),
        "custom_event_type": data.get("custom_event_type") if event_type == "custom_event" else None,
        "product_action": action.get("action") if action else None,
        "revenue": float(revenue) if revenue is not None else None,
        "session_id": data.get("session_id"),
        "attributes": _json.encode(data.get("custom_attributes") or {}).decode(),
    }


def user_event_rows(mpid: int, records: Iterable[bytes], window: Window) -> list[dict[str, Any]]:
    """One user's stored history records (key order) -> their event rows inside the window, in time order."""
    rows = [
        event_row(mpid, event)
        for value in records
        for event in msgspec.json.decode(value[HISTORY_COUNT_BYTES:])
        if isinstance(event, dict)
    ]
    rows = [row for row in rows if window.holds(row["timestamp_ms"])]
    rows.sort(key=lambda row: row["timestamp_ms"])  # stable: same-time events keep their stored order
    return rows


# ---- reading one shard in one transaction ----------------------------------------------------------------------


def profile_rows(txn: Any, db: Any, window: Window) -> Iterator[dict[str, Any]]:
    for _, value in txn.cursor(db):
        profile = decode_profile(value)
        if window.overlaps(profile.first_seen_ms, profile.last_seen_ms):
            yield profile_row(profile)


def event_rows(txn: Any, db: Any, window: Window) -> Iterator[dict[str, Any]]:
    """Every event of the shard, user by user (history keys start with the user's MPID key)."""
    user: bytes | None = None
    records: list[bytes] = []
    for key, value in txn.cursor(db):
        if key[:8] != user:
            if user is not None:
                yield from user_event_rows(mpid_from_key(user), records, window)
            user, records = key[:8], []
        records.append(value)
    if user is not None:
        yield from user_event_rows(mpid_from_key(user), records, window)


def batches(rows: Iterable[dict[str, Any]], schema: pa.Schema, size: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield pa.RecordBatch.from_pylist(chunk, schema=schema)
            chunk = []
    if chunk:
        yield pa.RecordBatch.from_pylist(chunk, schema=schema)


def open_read_only(path: str | Path) -> lmdb.Environment:
    """The shard's environment for reading beside the running shard: no writer, a reader slot in its lock file."""
    return lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=SHARD_DB_COUNT, readonly=True, lock=True, create=False)


@dataclass
class Progress:
    """What one shard's export has written so far (yielded by the task after every record batch)."""

    shard: int
    kind: str
    rows: int
    total: int
    """The profiles the shard holds: the bar's 100% for profiles (an events file shows its row count only)."""
    done: bool = False


@dataclass
class ShardResult:
    shard: int
    rows: dict[str, int] = field(default_factory=dict)
    node_id: str = ""
    """The Ray node the shard's files were written on (set by the Ray task)."""


def export_shard(
    store_path: str | Path, shard: int, out_dir: str | Path, kinds: Sequence[str], window: Window
) -> Iterator[Progress | ShardResult]:
    """Write the shard's files for `kinds` from one read transaction; yields progress, then the row counts."""
    out = Path(out_dir)
    result = ShardResult(shard)
    env = open_read_only(store_path)
    try:
        with env.begin(buffers=False) as txn:
            profiles_db = env.open_db(b"profiles", txn=txn, create=False)
            total = txn.stat(profiles_db)["entries"]
            for kind in kinds:
                db = profiles_db if kind == PROFILES_DIR else env.open_db(b"history", txn=txn, create=False)
                rows = profile_rows(txn, db, window) if kind == PROFILES_DIR else event_rows(txn, db, window)
                written = 0
                for written in write_parquet(out / kind / shard_file(shard), SCHEMAS[kind], rows):
                    yield Progress(shard, kind, written, total)
                result.rows[kind] = written
                yield Progress(shard, kind, written, total, done=True)
    finally:
        env.close()
    yield result


def write_parquet(path: Path, schema: pa.Schema, rows: Iterable[dict[str, Any]]) -> Iterator[int]:
    """Write `rows` to `path` (whole or not at all: a temporary file renamed at the end); yields the rows written
    after each record batch. An empty shard still gets its file (with the schema, no rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    written = 0
    with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
        for batch in batches(rows, schema):
            writer.write_batch(batch)
            written += batch.num_rows
            yield written
    os.replace(partial, path)


def write_manifest(
    out_dir: str | Path,
    window: Window,
    shards: int,
    counts: dict[str, int],
    now_ms: int,
    nodes: dict[str, str] | None = None,
) -> Manifest:
    """`manifest.json`; a kind not exported now keeps the count an earlier export into the same directory wrote."""
    path = Path(out_dir) / MANIFEST
    earlier = msgspec.json.decode(path.read_bytes(), type=Manifest) if path.exists() else None
    manifest = Manifest(
        created_ms=now_ms,
        since_ms=window.since_ms,
        until_ms=window.until_ms,
        shards=shards,
        profiles=counts.get(PROFILES_DIR, earlier.profiles if earlier else 0),
        events=counts.get(EVENTS_DIR, earlier.events if earlier else 0),
        nodes=nodes or {},
    )
    path.write_text(json.dumps(msgspec.to_builtins(manifest), indent=2) + "\n")
    return manifest


# ---- progress on stderr ----------------------------------------------------------------------------------------

BAR_WIDTH: Final = 20
REDRAW_S: Final = 0.2  # at most five redraws a second: a bar, not a log


class Bars:
    """One plain text bar per shard on stderr: redrawn in place on a terminal, a line per finished file else."""

    def __init__(self, shards: int, stream: TextIO = sys.stderr) -> None:
        self.stream, self.live = stream, stream.isatty()
        self.state: dict[int, Progress | None] = {i: None for i in range(shards)}
        self.drawn_at = 0.0

    def update(self, progress: Progress) -> None:
        self.state[progress.shard] = progress
        if progress.done and not self.live:
            print(f"shard {progress.shard} {progress.kind}: {progress.rows} rows", file=self.stream, flush=True)
        if self.live and (progress.done or time.monotonic() - self.drawn_at >= REDRAW_S):
            self.drawn_at = time.monotonic()
            self.stream.write("\r" + " | ".join(self._bar(i, p) for i, p in self.state.items()))
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")

    @staticmethod
    def _bar(shard: int, progress: Progress | None) -> str:
        if progress is None:
            return f"shard {shard} waiting"
        if progress.kind == PROFILES_DIR and progress.total:
            filled = min(BAR_WIDTH, BAR_WIDTH * progress.rows // progress.total)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            return f"shard {shard} profiles [{bar}] {progress.rows}/{progress.total}"
        return f"shard {shard} {progress.kind} {progress.rows} rows{' done' if progress.done else ''}"


# ---- on Ray: one task per shard, on the shard's node -----------------------------------------------------------


def export_snapshot(out_dir: str | Path, kinds: Sequence[str], window: Window, stream: TextIO = sys.stderr) -> Manifest:
    """Export the running platform's shards (this process is attached to its Ray) into `out_dir`."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from cdp_actors import handles

    _, config = ray.get(handles.control().current.remote())
    shards = config.runtime.shards
    out = Path(out_dir).resolve()
    task = ray.remote(num_cpus=1, max_retries=0)(_export_task)
    generators = []
    for index, (node_id, store_path) in enumerate(ray.get([s.location.remote() for s in handles.shards(shards)])):
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
        options = task.options(scheduling_strategy=strategy, num_returns="streaming")
        generators.append(options.remote(store_path, index, str(out), list(kinds), window))
    counts = dict.fromkeys(kinds, 0)
    nodes: dict[str, str] = {}
    bars = Bars(shards, stream)
    try:
        for item in _merged(generators):
            if isinstance(item, Progress):
                bars.update(item)
            else:
                for kind, rows in item.rows.items():
                    counts[kind] += rows
                nodes[str(item.shard)] = item.node_id
    finally:
        bars.close()
    return write_manifest(out, window, shards, counts, int(time.time() * 1000), nodes)


def _merged(generators: list[Any]) -> Iterator[Progress | ShardResult]:
    """The items of every shard's streaming task as they come (one reader thread each), so every bar moves."""
    import ray

    items: queue.Queue[Any] = queue.Queue()

    def read(generator: Any) -> None:
        try:
            for ref in generator:
                items.put(ray.get(ref))
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
            items.put(error)
        items.put(_END)

    for generator in generators:
        threading.Thread(target=read, args=(generator,), daemon=True).start()
    ended = 0
    while ended < len(generators):
        item = items.get()
        if item is _END:
            ended += 1
        elif isinstance(item, BaseException):
            raise item
        else:
            yield item


_END: Final = object()


def _export_task(
    store_path: str, shard: int, out_dir: str, kinds: list[str], window: Window
) -> Iterator[Progress | ShardResult]:
    import ray

    for item in export_shard(store_path, shard, out_dir, kinds, window):
        if isinstance(item, ShardResult):
            item.node_id = ray.get_runtime_context().get_node_id()
        yield item
