"""Dispatcher: tails the intake log, resolves each batch to an MPID and hands chunks to profile shards.

The cursor advances, and the processed log is trimmed, only after every shard has committed its part
of a chunk; after any crash the chunk is sent again and shards skip what they already applied.

The dispatcher follows the configuration's versions (`cdp_actors/control/follow.py`) and stamps every shard call
with the version of the chunk: a chunk is resolved, applied and turned into outbox rows under one version. A shard
gets the configuration along with the version whenever the dispatcher does not know it holds it (a new version,
a restart of either; a shard that restarted says so by refusing the stamp, `ConfigVersionGap`). A chunk that
keeps failing for a reason other than the runtime or the storage is split to find the batch that fails on
its own, which goes to the dead-letter store with a Fatal alert (`isolation.py`, `deadletter.py`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import ray

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.constants import ALERT_TIMEOUT_S, IDLE_POLL_S, RETRY_DELAY_S
from cdp_actors.control.follow import current_version, follow
from cdp_actors.control.watcher import ConfigSnapshot, ConfigWatcher
from cdp_actors.identity.index import BatchRequest, encode_requests
from cdp_actors.identity.strategy import Outcome
from cdp_actors.ids import batch_id, fresh_mpid, load_mpid_secret, origin_key
from cdp_actors.intake.deadletter import MAX_PAGE, DeadLetter, DeadLetterPage, DeadLetters, DeadLetterSummary
from cdp_actors.intake.isolation import Action, Isolation, describe, is_transient
from cdp_actors.intake.log import CURSOR, INTAKE_DBS, intake_path, read_cursor
from cdp_actors.partition import partition_of
from cdp_actors.schema.events import batch_identities, decode_head
from cdp_actors.schema.records import Alert, LogRecord, ShardRecord, decode_log_record
from cdp_actors.storage.lmdb_env import Store, from_u64, iter_from, u64
from cdp_actors.tasks import keep_running
from cdp_actors.telemetry import count, now_ms, span

log = logging.getLogger(__name__)
RAY_ADDRESS_FILE = "ray-address"  # in the data dir: the Ray running the platform, for `cdp deadletter` to attach
DEAD_LETTERED = "Batch Dead-Lettered"  # alert type; mParticle's System Alerts table has no processing failure


class DispatcherCore:
    def __init__(self, data_dir: str | Path, intake_name: str, shards: int, max_chunk: int) -> None:
        self.origin = origin_key(intake_name)
        self.mpid_secret = load_mpid_secret(data_dir)
        self.intake_path = intake_path(data_dir, intake_name)
        self.intake = Store(self.intake_path, INTAKE_DBS)
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
            requests.append(BatchRequest(head.mpid, batch_identities(head), record.received_ms, new_mpid))
        return requests

    def route(self, chunk: list[tuple[int, LogRecord]], outcomes: list[Outcome]) -> dict[int, list[ShardRecord]]:
        """Group the chunk's batches, now resolved to MPIDs, by owning shard."""
        routed: dict[int, list[ShardRecord]] = defaultdict(list)
        for (seq, record), outcome in zip(chunk, outcomes, strict=True):
            routed[partition_of(outcome.mpid, self.shards)].append(
                ShardRecord(
                    seq,
                    batch_id(self.origin, seq),
                    outcome.mpid,
                    record.input_id,
                    record.received_ms,
                    record.raw,
                    outcome.changes,
                )
            )
        return routed

    def advance(self, next_seq: int) -> None:
        """Persist the cursor and trim the log below it, in one transaction."""
        with self.intake.write() as txn:
            self._advance(txn, next_seq)

    def _advance(self, txn: Any, next_seq: int) -> None:
        txn.put(CURSOR, u64(next_seq), db=self.intake.db("meta"))
        cursor = txn.cursor(self.intake.db("log"))
        while cursor.first() and from_u64(cursor.key()) < next_seq:
            cursor.delete()

    def close(self) -> None:
        """Let go of the intake's environment (while an erasure compacts it); `reopen` takes it again."""
        self.intake.close()
        self.__dict__.pop("dead_letters", None)  # its database handle belongs to the closed environment

    def reopen(self) -> None:
        self.intake = Store(self.intake_path, INTAKE_DBS)

    @functools.cached_property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.intake)

    def dead_letter(self, seq: int, record: LogRecord, error: str, attempts: int, now: int) -> DeadLetter:
        """Set the batch at the cursor aside and move the cursor past it, in one transaction."""
        entry = DeadLetter(seq, record.input_id, record.received_ms, record.raw, error, attempts, now)
        dead_letters = self.dead_letters  # opened outside the transaction: opening one takes LMDB's write lock
        with self.intake.write() as txn:
            dead_letters.put(txn, entry)
            self._advance(txn, seq + 1)
        return entry


class Stall:
    """Why dispatching has stopped (a shard restarting, a full disk), from the first failure until a chunk goes
    through again: for `/cdp/status`, and so that each reason is logged once per stall."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.since_ms = 0
        self.logged: set[str] = set()

    def failed(self, error: Exception, now_ms: int) -> bool:
        """Note a failure; True when its reason is new in this stall (worth a log line)."""
        if self.reason is None:
            self.since_ms = now_ms
        self.reason = describe(error)  # quoted values masked: a poison batch's contents stay out of the status
        if self.reason in self.logged:
            return False
        self.logged.add(self.reason)
        return True

    def clear(self) -> None:
        if self.reason is not None:
            self.reason, self.logged = None, set()

    def status(self) -> Failing | None:
        return None if self.reason is None else Failing(self.reason, self.since_ms)


class Failing(msgspec.Struct):
    """Why dispatching has stopped, and since when (epoch ms)."""

    error: str
    since_ms: int


class DispatcherStatus(msgspec.Struct):
    dispatched: int
    """Batches dispatched since this actor started."""
    failing: Failing | None
    isolating: bool
    """A failing chunk is being split to find the batch that fails on its own."""
    transient_failures: int


def _nothing(config: WorkspaceConfig) -> None:
    """The dispatcher derives nothing from a configuration: it passes versions on to the shards."""


class _Environment(msgspec.Struct):
    environment: str = "production"


def environment_of(raw: bytes) -> str:
    """The batch's environment for its alert; production when the batch cannot even say (it is the poison)."""
    try:
        environment = msgspec.json.decode(raw, type=_Environment).environment
    except (msgspec.DecodeError, UnicodeDecodeError):
        return "production"
    return environment if environment in ("production", "development") else "production"


def dead_letter_alert(entry: DeadLetter, now: int) -> Alert:
    """Named for the batch by its seq and input, and the error's type and first line, never its contents: no
    connection is involved, so connection and output are 0 (`/cdp/alerts` names it "(processing: no connection)")."""
    message = (
        f"batch {entry.seq} from input {entry.input_id} failed alone {entry.attempts} times and was "
        f"set aside (GET /cdp/deadletter, cdp deadletter replay): {entry.error}"
    )
    return Alert(now, 0, entry.input_id, 0, environment_of(entry.raw), DEAD_LETTERED, "Fatal", message)


def note_ray_address(data_dir: str) -> None:
    """Write this Ray's GCS address next to the data: `cdp deadletter --data-dir` attaches to it, where `auto`
    would find whichever Ray started last on the machine."""
    path = Path(data_dir) / RAY_ADDRESS_FILE
    try:
        path.write_text(ray.get_runtime_context().gcs_address)
        path.chmod(0o600)
    except OSError:  # a full or read-only disk must not keep the dispatcher from starting
        log.warning("could not note the Ray address in %s", path, exc_info=True)


@ray.remote(max_restarts=-1, max_task_retries=0)
class Dispatcher:
    def __init__(self, data_dir: str, intake_name: str, shards: int, max_chunk: int, config: WorkspaceConfig) -> None:
        from cdp_actors.telemetry import setup_process

        setup_process(config, data_dir, "dispatcher")
        self.core = DispatcherCore(data_dir, intake_name, shards, max_chunk)
        self.shard_handles = handles.shards(shards)
        self.identity = handles.identity()
        self.alerts = handles.alerts()
        self.sent_upto: dict[int, int] = {}
        self.watcher: ConfigWatcher[None] | None = None  # loaded when dispatching starts
        self.shard_versions: dict[int, int] = {}  # shard -> the configuration version it was last sent
        self.dispatched = 0
        self.transient_failures = 0  # parts tried again after a failure of the runtime or the storage
        self.stall = Stall()
        self.isolation = Isolation()
        self.dispatching = asyncio.Lock()
        """Held while a part of the log is dispatched, and by `pause` while the intake's store is closed."""
        self.paused: asyncio.Task | None = None
        self.store_open = asyncio.Event()
        """Clear while `pause` holds the intake's store closed: readers of dead letters wait."""
        self.store_open.set()
        note_ray_address(data_dir)
        keep_running(self._run, "dispatch")

    async def _run(self) -> None:
        if self.watcher is None:  # the current version, not the one this actor was first created with
            self.watcher = ConfigWatcher(await current_version(), _nothing)
            keep_running(lambda: follow(self._watcher()), "configuration poll")
        while True:
            try:
                async with self.dispatching:
                    moved = await self._dispatch_once()
            except Exception as error:  # reading the log, or writing a dead letter, failed: the same again later
                if self.stall.failed(error, now_ms()):
                    log.exception("dispatch failed; retrying from the cursor")
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            if not moved:
                await asyncio.sleep(IDLE_POLL_S)

    async def _dispatch_once(self) -> int:
        """Apply the next part of the log at the cursor; returns how many batches the cursor moved past."""
        chunk = self.core.read_chunk()
        if not chunk:
            self.stall.clear()
            return 0
        part = self.isolation.part(chunk)
        try:
            await self._apply(part)
        except Exception as error:
            self.sent_upto.clear()  # the part goes again from the cursor
            self.shard_versions.clear()  # with the configuration: a shard that failed may have restarted
            return await self._failed(part, error)
        self.isolation.done(part)
        self.stall.clear()
        self.dispatched += len(part)
        count("cdp_batches_dispatched", len(part))
        return len(part)

    def _watcher(self) -> ConfigWatcher[None]:
        assert self.watcher is not None
        return self.watcher

    def _shard_call(self, shard: int, records: list[ShardRecord], held: ConfigSnapshot[None]) -> Any:
        config = None if self.shard_versions.get(shard) == held.version else held.config
        return self.shard_handles[shard].apply.remote(records, self.sent_upto.get(shard), held.version, config)

    async def _apply(self, part: list[tuple[int, LogRecord]]) -> None:
        held = self._watcher().snapshot()  # the chunk's version, from resolving it to its outbox rows
        with span("dispatch.chunk", batches=len(part)):
            outcomes = await self.identity.resolve_batches.remote(encode_requests(self.core.identity_requests(part)))
            routed = self.core.route(part, outcomes)
            calls = [self._shard_call(shard, records, held) for shard, records in routed.items()]
            results = await asyncio.gather(*calls, return_exceptions=True)
            failures = [r for r in results if isinstance(r, Exception)]
            if failures:  # one shard restarting makes it a wait, whatever the others raised
                raise next((f for f in failures if is_transient(f)), failures[0])
            for shard, records in routed.items():
                self.sent_upto[shard] = records[-1].seq
                self.shard_versions[shard] = held.version
            self.core.advance(part[-1][0] + 1)

    async def _failed(self, part: list[tuple[int, LogRecord]], error: Exception) -> int:
        transient = is_transient(error)
        self.transient_failures += transient
        if self.stall.failed(error, now_ms()):
            kind = "transient" if transient else "possibly deterministic"
            log.warning("dispatching seqs %d-%d failed (%s): %s", part[0][0], part[-1][0], kind, describe(error))
        action = self.isolation.failed(part, transient)
        if action is Action.DEAD_LETTER:
            await self._dead_letter(*part[0], describe(error))
            self.isolation.done(part)
            self.stall.clear()
            return 1
        if action is not Action.SPLIT:
            await asyncio.sleep(RETRY_DELAY_S)
        return 0

    async def _dead_letter(self, seq: int, record: LogRecord, error: str) -> None:
        entry = self.core.dead_letter(seq, record, error, self.isolation.max_attempts, now_ms())
        count("cdp_batches_dead_lettered", 1)
        log.error("batch %d from input %d dead-lettered: %s", seq, record.input_id, error)
        try:
            await asyncio.wait_for(self.alerts.record.remote([dead_letter_alert(entry, now_ms())]), ALERT_TIMEOUT_S)
        except Exception:  # the entry is stored: /cdp/status and /cdp/deadletter show it even without the alert
            log.exception("the alert for dead-lettered batch %d was not recorded", seq)

    async def pause(self, lease_s: float) -> None:
        """Stop dispatching once the part in flight is applied, and close the intake's store, so that an erasure
        can compact it and no batch of its subject is resolved or applied meanwhile. Until `resume`, or for
        `lease_s` at most (the eraser's process may die)."""
        if self.paused is not None:
            self.paused.cancel()
        held = asyncio.get_running_loop().create_future()
        self.paused = asyncio.create_task(self._hold(lease_s, held))
        await held

    async def _hold(self, lease_s: float, held: asyncio.Future) -> None:
        async with self.dispatching:
            self.store_open.clear()
            self.core.close()
            held.set_result(None)
            try:
                await asyncio.sleep(lease_s)
            except asyncio.CancelledError:
                pass
            finally:
                self.core.reopen()
                self.store_open.set()

    async def resume(self) -> None:
        """Dispatch again, from the reopened store."""
        if self.paused is not None:
            self.paused.cancel()
            await asyncio.gather(self.paused, return_exceptions=True)
            self.paused = None

    def config_version(self) -> int:
        """The configuration version the next chunk is dispatched under (0 before dispatching starts)."""
        return 0 if self.watcher is None else self.watcher.version

    def status(self) -> DispatcherStatus:
        return DispatcherStatus(self.dispatched, self.stall.status(), self.isolation.isolating, self.transient_failures)

    async def dead_letter_summary(self) -> DeadLetterSummary:
        """How many batches are set aside, and the latest ones' reasons (for `/cdp/status`)."""
        await self.store_open.wait()  # not while an erasure holds it closed
        return self.core.dead_letters.summary()

    async def dead_letters(self, after: int = 0, limit: int = 100, include_body: bool = False) -> DeadLetterPage:
        """A page of entries with seq > `after`, oldest first; `next_after` continues, None at the end."""
        limit = min(limit, MAX_PAGE)
        await self.store_open.wait()
        entries = self.core.dead_letters.page(after, limit)
        total = self.core.dead_letters.count()
        return DeadLetterPage(
            total,
            [e.view(include_body) for e in entries],
            entries[-1].seq if entries and len(entries) == limit else None,
        )

    async def forget_dead_letters(self, seqs: list[int]) -> list[int]:
        """Remove entries once they were accepted again (`cdp deadletter replay`); returns those removed."""
        await self.store_open.wait()
        return self.core.dead_letters.remove(seqs)
