"""`ConfigStore`: the workspace configuration in LMDB, versioned, changed only through typed changes.

Layout (one LMDB environment, `<data dir>/control`):
- `meta`: `version` (u64, 0 while empty) and `next_ids` (msgpack: per section, the next id never used);
- `snapshots`: u64 version → msgpack of the whole configuration document, its secrets passed through the
  store's `SecretSealer` first; the last KEPT_SNAPSHOTS versions are kept;
- `history`: u64 version → msgpack `HistoryEntry` (who, when, which change, which paths), kept for good (a
  few hundred bytes each; the audit log keeps the before/after values, masked);
- `audit.AUDIT_DB`: the audit log (cdp_actors/audit.py), which the owner writes in the change's own transaction
  through `apply`'s `record` hook, so a change is never stored without its audit entry nor an entry without it.

A change is applied in one write transaction: the current version is read, compared with the caller's
`expected_version` (a stale one is a `Conflict`), the change validated against the configuration of that
version, and the new snapshot, counters and history entry written and synced together. A refused change
aborts the transaction: nothing of it is stored and the version stays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec
import yaml

from cdp_actors.audit import AUDIT_DB
from cdp_actors.config import WorkspaceConfig, load_workspace, parse_workspace
from cdp_actors.control.changes import (
    MAX_CHANGED_PATHS,
    Change,
    apply_change,
    change_name,
    changed_paths,
    config_document,
    first_next_ids,
)
from cdp_actors.errors import Conflict, NotFound
from cdp_actors.storage.lmdb_env import Store, Txn, from_u64, iter_from, u64

KEPT_SNAPSHOTS = 100
"""Whole configurations kept, newest first: enough to diff or roll back a day of busy editing; each is a few KB."""
SEED_ACTOR = "seed"
"""Who made version 1: the file the store was seeded from."""

_VERSION = b"version"
_NEXT_IDS = b"next_ids"
_encode = msgspec.msgpack.encode
_decode_document = msgspec.msgpack.Decoder(dict[Any, Any]).decode


class HistoryEntry(msgspec.Struct, frozen=True):
    version: int
    actor: str
    """The API client id or console user name that made the change (`seed` for version 1)."""
    at_ms: int
    change: str
    """The change's tag (`update_output`), or `seed`."""
    target: str
    """What it touched: `outputs/3`, or the seed file."""
    paths: list[str]
    """Where the configuration changed (`outputs[id=3].settings.url`); paths, never values."""
    more_paths: int = 0
    """Changed paths beyond MAX_CHANGED_PATHS, counted only."""


_decode_entry = msgspec.msgpack.Decoder(HistoryEntry).decode


class NotSeeded(LookupError):
    """The store holds no configuration yet: the runtime seeds it (`seed_from`) before anything reads it."""


class SecretSealer(Protocol):
    """Turns a configuration into the document that may be stored (its secrets as ciphertext) and a stored document
    back into one `parse_workspace` reads (secrets as `SecretStr`). The configuration is given as its model, so the
    sealer finds secrets by type; `unseal` returns a new document and leaves its argument as it was.
    `control/sealer.py` provides the real one (every secret encrypted with the operator's key)."""

    def seal(self, config: WorkspaceConfig) -> dict[str, Any]: ...

    def unseal(self, document: dict[str, Any]) -> dict[str, Any]: ...


ChangeRecorder = Callable[[Txn, HistoryEntry, "WorkspaceConfig | None", WorkspaceConfig], None]
"""Called inside the transaction that stores a new version, with its history entry, the configuration before (None
for the seed) and after: what the owner records in the audit log, atomically with the change."""


class ClearSecrets:
    """A sealer that seals nothing: only for tests and for tools that read a store without its key."""

    def seal(self, config: WorkspaceConfig) -> dict[str, Any]:
        return config_document(config)

    def unseal(self, document: dict[str, Any]) -> dict[str, Any]:
        return document


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ConfigStore:
    """The workspace configuration, durable and versioned. One process writes (the control actor); a process
    may open the store only once (LMDB), and `current()` is cheap while the version has not changed."""

    def __init__(self, path: str | Path, sealer: SecretSealer, clock_ms: Callable[[], int] = wall_ms) -> None:
        self.store = Store(path, ("meta", "snapshots", "history", AUDIT_DB))
        self.meta, self.snapshots, self.history_db = (self.store.db(n) for n in ("meta", "snapshots", "history"))
        self.sealer = sealer
        self.clock_ms = clock_ms
        self._held: tuple[int, WorkspaceConfig] | None = None

    def close(self) -> None:
        self.store.close()

    # ---- reading ----

    def version(self) -> int:
        """The current version, 0 while empty: one LMDB read (~1 µs), for watchers in the owning process."""
        with self.store.read() as txn:
            return self._version_in(txn)

    def is_empty(self) -> bool:
        return self.version() == 0

    def current(self) -> tuple[int, WorkspaceConfig]:
        """The current version and its configuration. Decodes and validates only when the version changed since
        the last call (a few ms); otherwise it costs one LMDB read."""
        with self.store.read() as txn:
            version = self._version_in(txn)
            if self._held is not None and self._held[0] == version:
                return self._held
            config = self._config_in(txn, version)
        self._held = (version, config)
        return self._held

    def changed_since(self, version: int) -> tuple[int, WorkspaceConfig] | None:
        """The current version and configuration if it is not `version`, else None: what a watcher in another
        process asks the owner for, once per poll."""
        if self.version() == version:
            return None
        return self.current()

    def snapshot(self, version: int) -> WorkspaceConfig:
        """The configuration as it was at `version`, if it is one of the last KEPT_SNAPSHOTS."""
        with self.store.read() as txn:
            return self._config_in(txn, version)

    def history(self, after_version: int = 0, limit: int = 100) -> list[HistoryEntry]:
        """History entries of versions after `after_version`, oldest first, up to `limit`."""
        with self.store.read() as txn:
            rows = iter_from(txn, self.history_db, u64(after_version + 1), limit)
            return [_decode_entry(value) for _, value in rows]

    def export_document(self) -> tuple[int, dict[str, Any]]:
        """The current configuration as plain data, secrets in clear, fields at their defaults left out."""
        version, config = self.current()
        return version, config_document(config, exclude_defaults=True)

    def export_yaml(self, mask: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> str:
        """The current configuration as a workspace file that `load_workspace` reads back to an equal one. Its
        secrets are in clear, as in the seed file, unless `mask` replaces them (then it will not load back equal).
        A secret holding `${NAME}` would be expanded on load: the file format has no escape for it."""
        version, document = self.export_document()
        if mask is not None:
            document = mask(document)
        header = f"# The workspace configuration, version {version}, exported from the configuration store.\n"
        return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)

    # ---- writing ----

    def seed_from(self, source: str | Path | WorkspaceConfig, record: ChangeRecorder | None = None) -> bool:
        """Make `source` (a workspace file or a configuration) version 1, if the store is empty; True if it did.
        A seeded store ignores its seed file from then on: the store is the configuration."""
        if not self.is_empty():
            return False
        config = source if isinstance(source, WorkspaceConfig) else load_workspace(source)
        target = "workspace" if isinstance(source, WorkspaceConfig) else str(source)
        with self.store.write() as txn:
            if self._version_in(txn) != 0:  # another process seeded it meanwhile
                return False
            entry = HistoryEntry(1, SEED_ACTOR, self.clock_ms(), "seed", target, ["$"])
            self._write(txn, entry, config, first_next_ids(config))
            if record is not None:
                record(txn, entry, None, config)
        self._held = (1, config)
        return True

    def apply(
        self, change: Change, expected_version: int | None, actor: str, record: ChangeRecorder | None = None
    ) -> tuple[int, WorkspaceConfig]:
        """Make `change` to the configuration of `expected_version` and return the new version and configuration.
        A version that is no longer the current one is a `Conflict`; an invalid change is a `BadRequest` naming
        the field, an unknown id a `NotFound`; either way nothing is stored. `expected_version=None` applies the
        change to whatever is current (it is still validated against that, atomically)."""
        with self.store.write() as txn:
            version = self._version_in(txn)
            if version == 0:
                raise NotSeeded("the configuration store is empty")
            if expected_version is not None and expected_version != version:
                raise Conflict(f"Version {expected_version} is not the current one ({version}).")
            before = self._held[1] if self._held and self._held[0] == version else self._config_in(txn, version)
            applied = apply_change(before, change, self._next_ids_in(txn))
            paths = changed_paths(config_document(before), config_document(applied.config))
            entry = HistoryEntry(
                version + 1, actor, self.clock_ms(), change_name(change), applied.target,
                paths[:MAX_CHANGED_PATHS], max(0, len(paths) - MAX_CHANGED_PATHS),
            )  # fmt: skip
            self._write(txn, entry, applied.config, applied.next_ids)
            if record is not None:
                record(txn, entry, before, applied.config)
        self._held = (version + 1, applied.config)
        return self._held

    def stored_document(self, version: int | None = None) -> dict[str, Any] | None:
        """The document stored for `version` (default: the current one) as it is on disk, secrets sealed; None
        while empty or when that version is not kept."""
        with self.store.read() as txn:
            version = self._version_in(txn) if version is None else version
            raw = txn.get(u64(version), db=self.snapshots) if version else None
            return None if raw is None else _decode_document(raw)

    def rewrite_snapshots(self, rewrite: Callable[[dict[str, Any]], dict[str, Any] | None]) -> int:
        """Replace each kept snapshot's stored document by `rewrite(document)` where that is not None (a key
        rotation re-encrypts them), in one synced transaction; the number rewritten. The configuration they hold
        is the same: no version changes."""
        rewritten = 0
        with self.store.write() as txn:
            for key, raw in list(txn.cursor(db=self.snapshots)):
                document = rewrite(_decode_document(raw))
                if document is not None:
                    txn.put(key, _encode(document), db=self.snapshots)
                    rewritten += 1
        return rewritten

    # ---- inside a transaction ----

    def _version_in(self, txn: Txn) -> int:
        raw = txn.get(_VERSION, db=self.meta)
        return from_u64(raw) if raw else 0

    def _next_ids_in(self, txn: Txn) -> dict[str, int]:
        raw = txn.get(_NEXT_IDS, db=self.meta)
        if raw is None:
            raise NotSeeded("the configuration store is empty")
        return msgspec.msgpack.decode(raw, type=dict[str, int])

    def _config_in(self, txn: Txn, version: int) -> WorkspaceConfig:
        if version == 0:
            raise NotSeeded("the configuration store is empty")
        raw = txn.get(u64(version), db=self.snapshots)
        if raw is None:
            raise NotFound(f"Version {version} is not kept (the last {KEPT_SNAPSHOTS} are).")
        return parse_workspace(self.sealer.unseal(_decode_document(raw)), f"configuration version {version}")

    def _write(self, txn: Txn, entry: HistoryEntry, config: WorkspaceConfig, next_ids: dict[str, int]) -> None:
        txn.put(u64(entry.version), _encode(self.sealer.seal(config)), db=self.snapshots)
        txn.put(u64(entry.version), _encode(entry), db=self.history_db)
        txn.put(_NEXT_IDS, _encode(next_ids), db=self.meta)
        txn.put(_VERSION, u64(entry.version), db=self.meta)
        if entry.version > KEPT_SNAPSHOTS:
            txn.delete(u64(entry.version - KEPT_SNAPSHOTS), db=self.snapshots)
