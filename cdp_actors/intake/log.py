"""The intake log: accepted batches, durably appended before the Events API answers 202.

Concurrent `append` calls share one LMDB commit (group commit): while a commit is being synced, new
arrivals queue and go together in the next one. De-duplication by `source_request_id` happens in the
same transaction, so a re-sent batch is acknowledged but never logged twice. The dispatcher tails the
log from a persisted cursor in the same environment and trims what it has processed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import msgspec
import ray

from cdp_actors.constants import DEDUPE_PRUNE_INTERVAL_S
from cdp_actors.intake.deadletter import DEAD_LETTER_DB, decode_dead_letter
from cdp_actors.intake.erasure import batch_of_subject, names_subject
from cdp_actors.schema.records import LogRecord, decode_log_record, encode_log_record
from cdp_actors.storage.lmdb_env import Store, from_u64, last_key, u64
from cdp_actors.tasks import keep_running, spawn

INTAKE_DBS = ("log", "srid", "srid_age", "meta")
CURSOR = b"cursor"


def intake_path(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / name


SRID_INPUT_BYTES = 4
"""A deduplication key is the input id (4 bytes) then the source_request_id."""


def srid_key(input_id: int, source_request_id: str) -> bytes:
    return input_id.to_bytes(SRID_INPUT_BYTES, "big") + source_request_id.encode()


def read_cursor(txn, meta_db) -> int:
    value = txn.get(CURSOR, db=meta_db)
    return from_u64(value) if value else 1


class AppendResult(msgspec.Struct, frozen=True):
    accepted: int = 0
    duplicates: int = 0
    overloaded: bool = False
    lag: int = 0
    refused: str | None = None
    """Why this request's batches could not be stored (its own fault, e.g. a key LMDB cannot hold); the other
    requests of the group commit were stored."""


@dataclass
class _Pending:
    input_id: int
    received_ms: int
    batches: list[tuple[str | None, bytes]]
    done: asyncio.Future = field(repr=False)


class IntakeLogCore:
    """The log itself, without Ray: tests and the benchmark baseline use it directly."""

    def __init__(self, path: str | Path, max_lag: int) -> None:
        self.store = Store(path, INTAKE_DBS)
        self.max_lag = max_lag
        with self.store.read() as txn:
            last = last_key(txn, self.store.db("log"))
            self.cursor = read_cursor(txn, self.store.db("meta"))
        self.next_seq = max(from_u64(last) + 1 if last else 1, self.cursor)

    @property
    def lag(self) -> int:
        return self.next_seq - self.cursor

    def refresh_cursor(self) -> None:
        with self.store.read() as txn:
            self.cursor = read_cursor(txn, self.store.db("meta"))

    def write(self, group: list[_Pending]) -> list[AppendResult]:
        """One synced transaction for a whole group of requests, each request in a nested transaction of its
        own: a request LMDB refuses (a key over its 511 bytes) is refused alone and the others commit."""
        meta = self.store.db("meta")
        results = []
        with self.store.write() as txn:
            self.cursor = read_cursor(txn, meta)
            seq = self.next_seq
            for item in group:
                child = self.store.env.begin(write=True, parent=txn)
                try:
                    accepted, duplicates = self._put_request(child, item, seq)
                except lmdb.BadValsizeError as error:
                    child.abort()
                    results.append(
                        AppendResult(
                            refused=f"The intake cannot store this request ({error}); nothing was stored.",
                            lag=seq - self.cursor,
                        )
                    )
                    continue
                child.commit()
                seq += accepted
                results.append(AppendResult(accepted, duplicates, lag=seq - self.cursor))
        self.next_seq = seq
        return results

    def _put_request(self, txn: lmdb.Transaction, item: _Pending, seq: int) -> tuple[int, int]:
        """Log one request's batches from `seq` on, skipping re-sent ones; (accepted, duplicates)."""
        log, srid, srid_age = self.store.db("log"), self.store.db("srid"), self.store.db("srid_age")
        accepted = duplicates = 0
        for source_request_id, raw in item.batches:
            if source_request_id:
                key = srid_key(item.input_id, source_request_id)
                if not txn.put(key, u64(item.received_ms), db=srid, overwrite=False):
                    duplicates += 1
                    continue
                txn.put(u64(item.received_ms) + key, b"", db=srid_age)
            record = LogRecord(item.input_id, item.received_ms, raw)
            txn.put(u64(seq + accepted), encode_log_record(record), db=log, append=True)
            accepted += 1
        return accepted, duplicates

    def erase(self, identities: dict[str, list[str]], mpids: list[int]) -> int:
        """Remove the subject's batches the log still keeps (not dispatched yet) and their dead letters, then
        compact the environment so that no freed page keeps them (nor any batch trimmed before). The caller
        makes sure no other process has the environment open (the dispatcher is paused). Returns the batches
        removed."""
        dead_letters = self.store.env.open_db(DEAD_LETTER_DB)
        removed = 0
        with self.store.write() as txn:
            for key, value in list(txn.cursor(self.store.db("log")).iternext()):
                if batch_of_subject(decode_log_record(value).raw, identities, mpids):
                    removed += txn.delete(key, db=self.store.db("log"))
            for key, value in list(txn.cursor(dead_letters).iternext()):
                if batch_of_subject(decode_dead_letter(value).raw, identities, mpids):
                    removed += txn.delete(key, db=dead_letters)
            self._forget_request_ids(txn, identities)
        self.store.compact()
        return removed

    def _forget_request_ids(self, txn: lmdb.Transaction, identities: dict[str, list[str]]) -> None:
        """The deduplication entries whose source_request_id embeds one of the subject's identity values."""
        srid, srid_age = self.store.db("srid"), self.store.db("srid_age")
        for key in [bytes(k) for k in txn.cursor(srid_age).iternext(values=False)]:
            if names_subject(key[8 + SRID_INPUT_BYTES :], identities):
                txn.delete(key, db=srid_age)
                txn.delete(key[8:], db=srid)

    def prune_dedupe(self, older_than_ms: int) -> int:
        """Forget source_request_ids accepted before `older_than_ms`."""
        srid, srid_age = self.store.db("srid"), self.store.db("srid_age")
        removed = 0
        with self.store.write() as txn:
            cursor = txn.cursor(srid_age)
            while cursor.first() and cursor.key()[:8] < u64(older_than_ms):
                txn.delete(cursor.key()[8:], db=srid)
                cursor.delete()
                removed += 1
        return removed


@ray.remote(max_restarts=-1, max_task_retries=0)
class IntakeLog:
    def __init__(self, data_dir: str, name: str, max_lag: int, dedupe_retention_days: int) -> None:
        self.core = IntakeLogCore(intake_path(data_dir, name), max_lag)
        self.retention_ms = dedupe_retention_days * 86_400_000
        self.pending: list[_Pending] = []
        self.committing = False
        self.writing = asyncio.Lock()
        """Held by each group commit, the dedupe prune and an erasure: the last closes and reopens the store."""
        keep_running(self._prune_forever, "dedupe prune")

    async def append(self, input_id: int, received_ms: int, batches: list[tuple[str | None, bytes]]) -> AppendResult:
        if self.core.lag >= self.core.max_lag:
            self.core.refresh_cursor()  # the cursor read at the last commit may be stale: writes stopped since
        if self.core.lag >= self.core.max_lag:
            return AppendResult(overloaded=True, lag=self.core.lag)
        done = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(input_id, received_ms, batches, done))
        if not self.committing:
            self.committing = True
            spawn(self._commit_pending(), "intake commit")
        return await done

    async def _commit_pending(self) -> None:
        try:
            while self.pending:
                group, self.pending = self.pending, []
                try:
                    async with self.writing:
                        results = await asyncio.to_thread(self.core.write, group)
                except Exception as error:  # nothing in this group was committed: fail every request
                    for item in group:
                        if not item.done.done():  # done: the caller was cancelled
                            item.done.set_exception(error)
                else:
                    for item, result in zip(group, results, strict=True):
                        if not item.done.done():
                            item.done.set_result(result)
        finally:
            self.committing = False

    async def _prune_forever(self) -> None:
        while True:
            cutoff = int(time.time() * 1000) - self.retention_ms
            async with self.writing:
                await asyncio.to_thread(self.core.prune_dedupe, cutoff)
            await asyncio.sleep(DEDUPE_PRUNE_INTERVAL_S)

    async def erase(self, identities: dict[str, list[str]], mpids: list[int]) -> int:
        """`IntakeLogCore.erase`, between two group commits; appends wait meanwhile (they queue and go together
        in the next commit). Runs on the event loop, so that no other call reads the store while it is reopened."""
        async with self.writing:
            return self.core.erase(identities, mpids)

    def status(self) -> IntakeStatus:
        self.core.refresh_cursor()
        return IntakeStatus(self.core.next_seq, self.core.cursor, self.core.lag)


class IntakeStatus(msgspec.Struct):
    next_seq: int
    """The seq the next accepted batch gets."""
    cursor: int
    """The dispatcher's cursor: the first seq not dispatched yet."""
    lag: int
    """Batches accepted and not dispatched yet."""
