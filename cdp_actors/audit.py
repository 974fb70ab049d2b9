"""The audit log: every change made through the Platform API or the admin endpoints, durable and readable.

Each entry says who (`actor`, e.g. `api_client:demo-admin` or `user:admin`), when (`at_ms`, the owner's clock),
what (`action`, e.g. `update`, and `target`, e.g. `output:7`), the documents before and after, and the changes
between them as JSON paths. Secrets never reach the log: both documents go through `secrets.mask` (settings'
`SecretStr` fields, encrypted envelopes and fields named like credentials all become `MASK`); a changed secret
still shows as a change, with both sides masked. Changes to personal data (User Activity edits of a profile) are
recorded with `personal=True`: the changed paths only, no values, so an erasure never has to visit this log.

Storage: one LMDB sub-database (`AUDIT_DB`) of an owner's `Store`, key = entry id (u64, ascending from 1), value =
the entry as msgspec JSON. Entries are append-only: nothing updates or deletes one, except retention, which drops
the oldest entries past `AUDIT_RETENTION_DAYS` (at most `PRUNE_BATCH` per write, in the writing transaction, so the
log needs no background loop). Ids order the entries even if the clock steps back; `at_ms` is what the clock said.

What it offers: `AuditLog(store).record(actor, action, target, before, after)` (its own synced transaction) or
`record_in(txn, ...)` (inside the caller's), `page(after_id, limit, filters)` (oldest first, to follow the log),
`latest(before_id, limit, filters)` (newest first, for a reader), both bounded by `MAX_PAGE` entries returned and
`MAX_SCANNED` entries read, and returning the cursor to continue from.

How it is wired: the control actor (`control/owner.py`, the one owner of the versioned configuration store on
the head node) opens its Store with `AUDIT_DB` among its sub-databases and writes each configuration change and its
audit entry in one transaction (`record_in`): a change without its entry, or an entry for a change that did not
happen, cannot be stored. Callers pass who is calling (the token's client id or the session's user name) with the
change. Profile edits on `/cdp/users` go to the intake, not the control actor: their handler calls the control
actor's `audit` method afterwards with `personal=True` (one extra actor call on an admin edit, never on the event
path); console logins and logouts are recorded the same way.
`GET /cdp/audit?after_id=&before_id=&limit=&actor=&action=&target=&since_ms=&until_ms=&order=` answers `latest`
(or `page` with `order=asc`) as `{"data": [...entries], "next": <cursor or null>}`; only the admin role reads it.
Cost: a synced commit (~0.5-1 ms) per change; admin changes come at human speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from cdp_actors.secrets import MASK, is_envelope, mask, plain
from cdp_actors.storage.lmdb_env import Db, Store, Txn, from_u64, last_key, u64

AUDIT_DB = "audit"
"""The owner's LMDB sub-database for the log; list it among the names the owner opens its Store with."""
AUDIT_RETENTION_DAYS = 400
"""How long an entry is kept, in days: over a year, so a yearly access review (SOC 2, ISO 27001) still finds every
change of the twelve months it covers."""
DAY_MS = 86_400_000
PRUNE_BATCH = 1_000
"""Expired entries dropped per write at most: bounds the write's cost; a backlog drains over later writes."""
DEFAULT_PAGE = 100
MAX_PAGE = 1_000
"""Entries one page returns at most: a page of large configuration documents stays a few megabytes."""
MAX_SCANNED = 20_000
"""Entries one page reads at most while filtering: a filter that matches nothing answers in bounded time, with the
cursor to continue from."""


class Change(msgspec.Struct, frozen=True):
    """One JSON path whose value differs; values are masked (and absent for personal data)."""

    path: str
    before: Any = None
    after: Any = None


class AuditEntry(msgspec.Struct, frozen=True):
    id: int
    at_ms: int
    actor: str
    action: str
    target: str
    before: Any = None
    after: Any = None
    changes: list[Change] = []


class AuditFilter(msgspec.Struct, frozen=True):
    """Entries matching every given field: actor and action exactly, target exactly or, ending in `*`, by prefix
    (`output:*`), and `since_ms <= at_ms < until_ms`."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, entry: AuditEntry) -> bool:
        return (
            self.actor in (None, entry.actor)
            and self.action in (None, entry.action)
            and _target_matches(self.target, entry.target)
            and (self.since_ms is None or entry.at_ms >= self.since_ms)
            and (self.until_ms is None or entry.at_ms < self.until_ms)
        )


class AuditPage(msgspec.Struct, frozen=True):
    entries: list[AuditEntry]
    next_cursor: int | None
    """The id to pass as `after_id` (page) or `before_id` (latest) for the next page; None: nothing further."""


NO_FILTER = AuditFilter()
_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(AuditEntry).decode


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class AuditLog:
    """The log in `store`'s `AUDIT_DB`; the store's owner is the only writer."""

    def __init__(self, store: Store, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.store = store
        self.db: Db = store.db(AUDIT_DB)
        self.clock_ms = clock_ms

    def record(self, actor: str, action: str, target: str, before: Any, after: Any, personal: bool = False
               ) -> AuditEntry:  # fmt: skip
        """Append an entry in its own synced transaction."""
        with self.store.write() as txn:
            return self.record_in(txn, actor, action, target, before, after, personal)

    def record_in(self, txn: Txn, actor: str, action: str, target: str, before: Any, after: Any,
                  personal: bool = False) -> AuditEntry:  # fmt: skip
        """Append an entry inside the caller's write transaction (with the change it records)."""
        now_ms = self.clock_ms()
        last = last_key(txn, self.db)
        changes = diff(before, after, personal)
        shown_before, shown_after = (None, None) if personal else (mask(before), mask(after))
        entry = AuditEntry(from_u64(last) + 1 if last else 1, now_ms, actor, action, target, shown_before, shown_after,
                           changes)  # fmt: skip
        txn.put(u64(entry.id), _encode(entry), db=self.db, append=True)
        self._prune(txn, now_ms)
        return entry

    def _prune(self, txn: Txn, now_ms: int) -> None:
        oldest_kept_ms = now_ms - AUDIT_RETENTION_DAYS * DAY_MS
        cursor = txn.cursor(self.db)
        if not cursor.first():
            return
        for _ in range(PRUNE_BATCH):
            if _decode(cursor.value()).at_ms >= oldest_kept_ms or not cursor.delete():
                return
            if not cursor.key():  # delete moved the cursor past the last entry
                return

    def page(self, after_id: int = 0, limit: int = DEFAULT_PAGE, filters: AuditFilter = NO_FILTER) -> AuditPage:
        """Entries with id > `after_id`, oldest first."""
        with self.store.read() as txn:
            cursor = txn.cursor(self.db)
            found = cursor.set_range(u64(after_id + 1))
            return _collect(cursor.iternext() if found else iter(()), limit, filters)

    def latest(self, before_id: int | None = None, limit: int = DEFAULT_PAGE, filters: AuditFilter = NO_FILTER
               ) -> AuditPage:  # fmt: skip
        """Entries with id < `before_id` (all when None), newest first."""
        with self.store.read() as txn:
            cursor = txn.cursor(self.db)
            if before_id is None:
                found = cursor.last()
            elif cursor.set_range(u64(before_id)):  # the first entry at or after before_id: step back one
                found = cursor.prev()
            else:  # every entry is older than before_id
                found = cursor.last()
            return _collect(cursor.iterprev() if found else iter(()), limit, filters)

    def count(self) -> int:
        with self.store.read() as txn:
            return txn.stat(self.db)["entries"]


def _collect(items: Iterator[tuple[bytes, bytes]], limit: int, filters: AuditFilter) -> AuditPage:
    limit = max(1, min(limit, MAX_PAGE))
    entries: list[AuditEntry] = []
    last_read: int | None = None
    for scanned, (key, value) in enumerate(items, start=1):
        last_read = from_u64(key)
        entry = _decode(value)
        if filters.matches(entry):
            entries.append(entry)
        if len(entries) == limit or scanned == MAX_SCANNED:
            return AuditPage(entries, last_read)
    return AuditPage(entries, None)


def _target_matches(wanted: str | None, target: str) -> bool:
    if wanted is None:
        return True
    if wanted.endswith("*"):
        return target.startswith(wanted[:-1])
    return target == wanted


# ---- diffs -----------------------------------------------------------------------------------------------------

_ABSENT = object()


def diff(before: Any, after: Any, personal: bool = False) -> list[Change]:
    """The paths whose values differ between two documents (models are dumped first), in path order. Objects are
    compared field by field, arrays as whole values. Secrets are compared in clear here and shown masked."""
    old, new = _flat(plain(before)), _flat(plain(after))
    shown_old, shown_new = _flat(mask(before)), _flat(mask(after))
    changes = []
    for path in sorted(old.keys() | new.keys()):
        if old.get(path, _ABSENT) == new.get(path, _ABSENT):
            continue
        if personal:
            changes.append(Change(path))
        else:
            changes.append(Change(path, _shown(shown_old.get(path, None)), _shown(shown_new.get(path, None))))
    return changes


def _shown(value: Any) -> Any:
    return MASK if value == MASK else value


def _flat(value: Any, path: str = "$") -> dict[str, Any]:
    """Leaf values by JSON path; an empty object or array is a leaf, so its appearance is a change. No document
    (None: before a creation, after a deletion) has no paths."""
    if value is None and path == "$":
        return {}
    if isinstance(value, dict) and value and not is_envelope(value):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{path}.{key}"))
        return flat
    if isinstance(value, tuple):
        value = list(value)
    return {path: value}
