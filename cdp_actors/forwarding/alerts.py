"""Alerts: every failed delivery attempt, counted per minute and kept durably.

Counts live in per-minute buckets keyed by (minute, connection, input, output, environment, severity,
type), so a 12-hour summary reads at most 720 buckets per alert kind whatever the alert volume. The
latest message per (connection, type) is kept for debugging, with every URL in it redacted (a last gate: their
producers redact already, but a message names what an adapter or an HTTP client wrote, and `/cdp/alerts` serves
it).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import ray

from cdp_actors.redaction import redact
from cdp_actors.reports import HOUR_MS, day_of
from cdp_actors.schema.records import Alert
from cdp_actors.storage.lmdb_env import Store, add_counts, from_u64, iter_from, read_counts, u64

MINUTE_MS = 60_000


class BucketKey(msgspec.Struct, array_like=True, frozen=True):
    connection_id: int
    input_id: int
    output_id: int
    environment: str
    severity: str
    type: str


_key_encoder = msgspec.msgpack.Encoder()
_key_decoder = msgspec.msgpack.Decoder(BucketKey)


def bucket_of(alert: Alert) -> tuple[int, BucketKey]:
    key = BucketKey(alert.connection_id, alert.input_id, alert.output_id, alert.environment, alert.severity, alert.type)
    return alert.ts_ms // MINUTE_MS, key


def summarize(counts: list[tuple[BucketKey, int]], latest: dict[tuple[int, str], str]) -> list[dict[str, Any]]:
    """Connections by alert volume, high to low, each with its counts per alert type and input."""
    per_connection: dict[int, dict[str, Any]] = {}
    for key, n in counts:
        entry = per_connection.setdefault(
            key.connection_id, {"connection_id": key.connection_id, "output_id": key.output_id, "total": 0, "types": {}}
        )
        entry["total"] += n
        kind = entry["types"].setdefault(
            (key.type, key.severity),
            {"type": key.type, "severity": key.severity, "count": 0, "inputs": defaultdict(int)},
        )
        kind["count"] += n
        kind["inputs"][key.input_id] += n
    result = []
    for entry in sorted(per_connection.values(), key=lambda e: -e["total"]):
        types = sorted(entry["types"].values(), key=lambda t: -t["count"])
        for kind in types:
            kind["inputs"] = [{"input_id": i, "count": c} for i, c in sorted(kind["inputs"].items())]
            kind["latest_message"] = latest.get((entry["connection_id"], kind["type"]), "")
        result.append({**entry, "types": types})
    return result


class AlertLedger:
    def __init__(self, path: str | Path) -> None:
        self.store = Store(path, ("buckets", "latest", "counters"))

    def record_forwarded(self, counts: dict[str, int]) -> None:
        """Events forwarded per hour and output (report counters, `cdp_actors/reports.py`)."""
        with self.store.write() as txn:
            add_counts(txn, self.store.db("counters"), counts)

    def counts(self, first: str, last: str) -> list[tuple[str, int]]:
        with self.store.read() as txn:
            return read_counts(txn, self.store.db("counters"), first, last)

    def fatal_by_day(
        self, since_ms: int, until_ms: int, environment: str | None, input_id: int | None
    ) -> dict[str, int]:
        days: dict[str, int] = defaultdict(int)
        with self.store.read() as txn:
            for raw, value in iter_from(txn, self.store.db("buckets"), u64(since_ms // MINUTE_MS), 1 << 62):
                minute = from_u64(raw[:8])
                if minute > until_ms // MINUTE_MS:
                    break
                key = _key_decoder.decode(raw[8:])
                wanted = environment in (None, key.environment) and input_id in (None, key.input_id)
                if key.severity == "Fatal" and wanted:
                    days[day_of(minute * MINUTE_MS // HOUR_MS)] += from_u64(value)
        return dict(days)

    def record(self, alerts: list[Alert]) -> None:
        added: dict[bytes, int] = defaultdict(int)
        latest: dict[bytes, bytes] = {}
        for alert in alerts:
            minute, key = bucket_of(alert)
            added[u64(minute) + _key_encoder.encode(key)] += 1
            latest[_key_encoder.encode((alert.connection_id, alert.type))] = redact(alert.message).encode()
        buckets = self.store.db("buckets")
        with self.store.write() as txn:
            for key, n in added.items():
                old = txn.get(key, db=buckets)
                txn.put(key, u64((from_u64(old) if old else 0) + n), db=buckets)
            for key, message in latest.items():
                txn.put(key, message, db=self.store.db("latest"))

    def summary(self, since_ms: int, until_ms: int, environment: str | None) -> list[dict[str, Any]]:
        first, last = since_ms // MINUTE_MS, until_ms // MINUTE_MS
        totals: dict[BucketKey, int] = defaultdict(int)
        with self.store.read() as txn:
            for raw, value in iter_from(txn, self.store.db("buckets"), u64(first), 1 << 62):
                if from_u64(raw[:8]) > last:
                    break
                key = _key_decoder.decode(raw[8:])
                if environment is None or key.environment == environment:
                    totals[key] += from_u64(value)
            latest = {
                tuple(msgspec.msgpack.decode(k)): v.decode() for k, v in txn.cursor(self.store.db("latest")).iternext()
            }
        return summarize(list(totals.items()), latest)


@ray.remote(max_restarts=-1, max_task_retries=0)
class AlertStore:
    def __init__(self, data_dir: str) -> None:
        self.ledger = AlertLedger(Path(data_dir) / "alerts")

    def record(self, alerts: list[Alert]) -> None:
        self.ledger.record(alerts)

    def record_forwarded(self, counts: dict[str, int]) -> None:
        self.ledger.record_forwarded(counts)

    def counts(self, first: str, last: str) -> list[tuple[str, int]]:
        return self.ledger.counts(first, last)

    def fatal_by_day(
        self, since_ms: int, until_ms: int, environment: str | None = None, input_id: int | None = None
    ) -> dict[str, int]:
        return self.ledger.fatal_by_day(since_ms, until_ms, environment, input_id)

    def summary(self, since_ms: int, until_ms: int, environment: str | None = None) -> list[dict[str, Any]]:
        return self.ledger.summary(since_ms, until_ms, environment)
