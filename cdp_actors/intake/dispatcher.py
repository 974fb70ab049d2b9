"""Dispatcher: tails the intake log, resolves each batch to an MPID and hands chunks to profile shards.

The cursor advances, and the processed log is trimmed, only after every shard has committed its part
of a chunk; after any crash the chunk is sent again and shards skip what they already applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import ray

from cdp_actors.identity.index import BatchRequest
from cdp_actors.identity.resolve import batch_identities, decode_head
from cdp_actors.identity.strategy import Outcome
from cdp_actors.ids import batch_id, fresh_mpid, load_mpid_secret, origin_key
from cdp_actors.intake.log import CURSOR, INTAKE_DBS, intake_path, read_cursor
from cdp_actors.partition import IDENTITY_NAME, NAMESPACE, partition_of, shard_name
from cdp_actors.schema.records import LogRecord, ShardRecord, decode_log_record
from cdp_actors.storage.lmdb_env import Store, from_u64, iter_from, u64
from cdp_actors.telemetry import count, now_ms, span

log = logging.getLogger(__name__)
IDLE_POLL_S = 0.005


class DispatcherCore:
    def __init__(self, data_dir: str | Path, intake_name: str, shards: int, max_chunk: int) -> None:
        self.origin = origin_key(intake_name)
        self.mpid_secret = load_mpid_secret(data_dir)
        self.intake = Store(intake_path(data_dir, intake_name), INTAKE_DBS)
        self.shards = shards
        self.max_chunk = max_chunk

    def read_chunk(self) -> list[tuple[int, LogRecord]]:
        with self.intake.read() as txn:
            cursor = read_cursor(txn, self.intake.db("meta"))
            items = iter_from(txn, self.intake.db("log"), u64(cursor), self.max_chunk)
            return [(from_u64(key), decode_log_record(value)) for key, value in items]

    def identity_requests(self, chunk: list[tuple[int, LogRecord]]) -> list[BatchRequest]:
        """What the IdentityIndex needs per batch; a new user's MPID derives from the log position under the
        deployment's secret, so a replay of the chunk gets the same MPIDs and no client can predict them."""
        requests = []
        for seq, record in chunk:
            head = decode_head(record.raw)
            new_mpid = fresh_mpid(self.mpid_secret, self.origin, seq)
            requests.append((head.mpid, batch_identities(head), record.received_ms, new_mpid))
        return requests

    def route(self, chunk: list[tuple[int, LogRecord]], outcomes: list[Outcome]) -> dict[int, list[ShardRecord]]:
        """Group the chunk's batches, now resolved to MPIDs, by owning shard."""
        routed: dict[int, list[ShardRecord]] = defaultdict(list)
        for (seq, record), outcome in zip(chunk, outcomes, strict=True):
            routed[partition_of(outcome.mpid, self.shards)].append(
                ShardRecord(seq, batch_id(self.origin, seq), outcome.mpid, record.input_id, record.received_ms,
                            record.raw, outcome.changes)
            )  # fmt: skip
        return routed

    def advance(self, next_seq: int) -> None:
        """Persist the cursor and trim the log below it, in one transaction."""
        log_db = self.intake.db("log")
        with self.intake.write() as txn:
            txn.put(CURSOR, u64(next_seq), db=self.intake.db("meta"))
            cursor = txn.cursor(log_db)
            while cursor.first() and from_u64(cursor.key()) < next_seq:
                cursor.delete()


class Stall:
    """Why dispatching has stopped (a shard restarting, a full disk), from the first failure until a chunk goes
    through again: for `/cdp/status`, and so that each reason is logged once per stall."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.since_ms = 0
        self.logged: set[str] = set()

    def failed(self, error: Exception, now_ms: int) -> bool:
        """Note a failure; True when its reason is new in this stall (worth a log line)."""
        cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else error
        first_line = (str(cause).strip().splitlines() or [""])[0][:300]
        if self.reason is None:
            self.since_ms = now_ms
        self.reason = f"{type(cause).__name__}: {first_line}"
        if self.reason in self.logged:
            return False
        self.logged.add(self.reason)
        return True

    def clear(self) -> None:
        if self.reason is not None:
            self.reason, self.logged = None, set()

    def status(self) -> dict[str, Any] | None:
        return None if self.reason is None else {"error": self.reason, "since_ms": self.since_ms}


@ray.remote(max_restarts=-1, max_task_retries=0)
class Dispatcher:
    def __init__(self, data_dir: str, intake_name: str, shards: int, max_chunk: int, config: object) -> None:
        from cdp_actors.telemetry import setup_process

        setup_process(config, data_dir, "dispatcher")
        self.core = DispatcherCore(data_dir, intake_name, shards, max_chunk)
        self.shard_handles = [ray.get_actor(shard_name(i), namespace=NAMESPACE) for i in range(shards)]
        self.identity = ray.get_actor(IDENTITY_NAME, namespace=NAMESPACE)
        self.sent_upto: dict[int, int] = {}
        self.dispatched = 0
        self.stall = Stall()
        asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                moved = await self._dispatch_once()
            except Exception as error:
                self.sent_upto.clear()  # the chunk goes again from the cursor
                if self.stall.failed(error, now_ms()):
                    log.exception("dispatch failed; retrying the chunk from the cursor")
                await asyncio.sleep(0.5)
                continue
            self.stall.clear()
            if not moved:
                await asyncio.sleep(IDLE_POLL_S)

    async def _dispatch_once(self) -> int:
        chunk = self.core.read_chunk()
        if not chunk:
            return 0
        with span("dispatch.chunk", batches=len(chunk)):
            outcomes = await self.identity.resolve_batches.remote(self.core.identity_requests(chunk))
            routed = self.core.route(chunk, outcomes)
            calls = [
                self.shard_handles[shard].apply.remote(records, self.sent_upto.get(shard))
                for shard, records in routed.items()
            ]
            await asyncio.gather(*calls)
            for shard, records in routed.items():
                self.sent_upto[shard] = records[-1].seq
            self.core.advance(chunk[-1][0] + 1)
        self.dispatched += len(chunk)
        count("cdp_batches_dispatched", len(chunk))
        return len(chunk)

    def status(self) -> dict[str, Any]:
        return {"dispatched": self.dispatched, "failing": self.stall.status()}
