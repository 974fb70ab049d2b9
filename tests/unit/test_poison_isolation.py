"""Poison-batch isolation without Ray: the state machine (`Isolation`) stepped through by the dispatcher's loop,
over a real intake log and dead-letter store (LMDB), with fake shards that keep a high-water mark like real
ones and commit nothing of a part that holds a poison batch."""

from __future__ import annotations

import errno
import itertools
import struct
from pathlib import Path

import lmdb
import msgspec
import pytest
import ray

from cdp_actors.intake.dispatcher import DispatcherCore, Failing, Stall, dead_letter_alert
from cdp_actors.intake.isolation import MAX_ATTEMPTS, Action, Isolation, describe, is_transient
from cdp_actors.intake.log import IntakeLogCore, _Pending, intake_path
from cdp_actors.profiles.shard import SequenceGap
from cdp_actors.schema.records import LogRecord
from tests.support import ray_task_error

SHARDS = 2


class FakeShards:
    """Batch seq s belongs to shard s % SHARDS. A shard skips seqs at or below its high-water mark and applies
    the rest in one transaction, which fails as a whole if it holds a poison seq. `transient` failures are
    raised (once each) before anything is applied, as a restarting actor would."""

    def __init__(self, poison: set[int], transient: int = 0) -> None:
        self.poison = poison
        self.transient = transient
        self.last_seq = [0] * SHARDS
        self.applied: list[list[int]] = [[] for _ in range(SHARDS)]

    def apply(self, part: list[tuple[int, LogRecord]]) -> None:
        if self.transient:
            self.transient -= 1
            raise ray.exceptions.ActorUnavailableError("shard restarting", None)
        failures = []
        for shard in range(SHARDS):
            fresh = [seq for seq, _ in part if seq % SHARDS == shard and seq > self.last_seq[shard]]
            if not fresh:
                continue
            if self.poison & set(fresh):
                failures.append(ray_task_error("ProfileShard.apply", KeyError("plan")))
                continue
            self.applied[shard] += fresh
            self.last_seq[shard] = fresh[-1]
        if failures:
            raise failures[0]


def intake_with(tmp_path: Path, batches: int, max_chunk: int = 100) -> DispatcherCore:
    log = IntakeLogCore(intake_path(tmp_path, "intake"), max_lag=10_000)
    raws = [(None, msgspec.json.encode({"environment": "development", "n": n})) for n in range(1, batches + 1)]
    log.write([_Pending(7, 1_000, raws, done=None)])  # type: ignore[arg-type]
    log.store.close()
    return DispatcherCore(tmp_path, "intake", SHARDS, max_chunk)


def run_dispatcher(core: DispatcherCore, shards: FakeShards, isolation: Isolation) -> list[Action]:
    """The Dispatcher actor's loop (`_dispatch_once`, `_failed`) without its pauses, until the log is empty."""
    actions = []
    for _ in range(10_000):
        chunk = core.read_chunk()
        if not chunk:
            return actions
        part = isolation.part(chunk)
        assert part and part[0][0] == chunk[0][0], "a part starts at the cursor"
        try:
            shards.apply(part)
        except Exception as error:
            action = isolation.failed(part, is_transient(error))
            actions.append(action)
            if action is Action.DEAD_LETTER:
                core.dead_letter(*part[0], describe(error), isolation.max_attempts, 5_000)
                isolation.done(part)
            continue
        core.advance(part[-1][0] + 1)
        isolation.done(part)
    raise AssertionError("the dispatcher never got through the log")


def cursor_of(core: DispatcherCore) -> int:
    with core.intake.read() as txn:
        return struct.unpack(">Q", txn.get(b"cursor", db=core.intake.db("meta")))[0]


def assert_applied_in_order_except(shards: FakeShards, batches: int, dead: set[int]) -> None:
    for shard, seqs in enumerate(shards.applied):
        expected = [s for s in range(1, batches + 1) if s % SHARDS == shard and s not in dead]
        assert seqs == expected, f"shard {shard} applied {seqs}"


@pytest.mark.parametrize("poison", range(1, 10))
def test_one_poison_batch_anywhere_in_a_chunk_is_the_only_one_dead_lettered(tmp_path: Path, poison: int) -> None:
    core, shards = intake_with(tmp_path, 9), FakeShards({poison})
    actions = run_dispatcher(core, shards, Isolation())
    assert [e.seq for e in core.dead_letters.page(0, 100)] == [poison]
    assert_applied_in_order_except(shards, 9, {poison})
    assert cursor_of(core) == 10
    assert actions[:MAX_ATTEMPTS] == [Action.RETRY] * (MAX_ATTEMPTS - 1) + [Action.SPLIT]
    assert actions[-1] is Action.DEAD_LETTER and actions.count(Action.DEAD_LETTER) == 1
    with core.intake.read() as txn:
        assert txn.stat(core.intake.db("log"))["entries"] == 0, "the log is trimmed past the dead letter"


@pytest.mark.parametrize("first,second", list(itertools.combinations(range(1, 8), 2)))
def test_two_poison_batches_are_both_dead_lettered_and_nothing_else(tmp_path: Path, first: int, second: int) -> None:
    core, shards = intake_with(tmp_path, 7), FakeShards({first, second})
    run_dispatcher(core, shards, Isolation())
    assert [e.seq for e in core.dead_letters.page(0, 100)] == [first, second]
    assert_applied_in_order_except(shards, 7, {first, second})
    assert cursor_of(core) == 8


def test_later_chunks_go_on_after_the_dead_letter(tmp_path: Path) -> None:
    core, shards = intake_with(tmp_path, 25, max_chunk=4), FakeShards({6, 19})
    run_dispatcher(core, shards, Isolation())
    assert [e.seq for e in core.dead_letters.page(0, 100)] == [6, 19]
    assert_applied_in_order_except(shards, 25, {6, 19})


def test_a_poison_batch_alone_is_retried_then_dead_lettered_with_its_record(tmp_path: Path) -> None:
    core, shards = intake_with(tmp_path, 1), FakeShards({1})
    assert run_dispatcher(core, shards, Isolation()) == [Action.RETRY] * (MAX_ATTEMPTS - 1) + [Action.DEAD_LETTER]
    [entry] = core.dead_letters.page(0, 10)
    assert (entry.seq, entry.input_id, entry.received_ms, entry.attempts) == (1, 7, 1_000, MAX_ATTEMPTS)
    assert entry.error == "KeyError: '…'", "the error's quoted values (batch contents) are masked"
    assert msgspec.json.decode(entry.raw) == {"environment": "development", "n": 1}
    alert = dead_letter_alert(entry, 6_000)
    assert (alert.severity, alert.type, alert.input_id, alert.environment) == (
        "Fatal",
        "Batch Dead-Lettered",
        7,
        "development",
    )
    assert "batch 1 from input 7" in alert.message and "KeyError" in alert.message and '"n"' not in alert.message
    assert core.dead_letters.summary().count == 1
    assert core.dead_letters.remove([1, 99]) == [1] and core.dead_letters.count() == 0


def test_transient_failures_never_dead_letter_nor_split(tmp_path: Path) -> None:
    core, shards = intake_with(tmp_path, 6), FakeShards(set(), transient=10 * MAX_ATTEMPTS)
    actions = run_dispatcher(core, shards, Isolation())
    assert actions == [Action.WAIT] * 10 * MAX_ATTEMPTS
    assert core.dead_letters.count() == 0
    assert_applied_in_order_except(shards, 6, set())


def test_a_failure_that_passes_within_the_retries_splits_nothing() -> None:
    isolation, chunk = Isolation(), [(seq, None) for seq in range(1, 5)]
    for _ in range(MAX_ATTEMPTS - 1):
        assert isolation.failed(isolation.part(chunk), transient=False) is Action.RETRY
    isolation.done(isolation.part(chunk))
    assert not isolation.isolating and isolation.attempts == 0
    assert isolation.failed(chunk, transient=False) is Action.RETRY, "the count starts again"


@pytest.mark.parametrize(
    "error",
    [
        lmdb.DiskError("mdb_txn_commit: No space left on device"),
        lmdb.MapFullError("full"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EIO, "I/O error"),
        SequenceGap("shard 0 applied up to 3, dispatcher sent 9"),
    ],
)
def test_storage_and_sequence_failures_are_transient(error: Exception) -> None:
    assert is_transient(error)
    assert is_transient(ray_task_error("ProfileShard.apply", error))


def test_actor_failures_are_transient() -> None:
    assert is_transient(ray.exceptions.ActorDiedError())
    assert is_transient(ray.exceptions.ActorUnavailableError("restarting", None))


@pytest.mark.parametrize(
    "error",
    [
        KeyError("plan"),
        ValueError("bad"),
        OverflowError("int too big"),
        TypeError("x"),
        RecursionError(),
        struct.error("'Q' format requires 0 <= number <= 18446744073709551615"),
        lmdb.BadValsizeError("mdb_put: MDB_BAD_VALSIZE"),
        msgspec.ValidationError("Expected `str` - at `$.x`"),
        OSError(errno.ENOENT, "No such file"),
    ],
)
def test_data_failures_are_possibly_deterministic(error: Exception) -> None:
    assert not is_transient(ray_task_error("ProfileShard.apply", error))
    assert not is_transient(ray_task_error("IdentityIndex.resolve_batches", error))
    assert describe(ray_task_error("ProfileShard.apply", error)).startswith(type(error).__name__)


def test_the_stall_reason_masks_what_the_error_quotes_from_the_batch() -> None:
    stall = Stall()
    stall.failed(ray_task_error("ProfileShard.apply", msgspec.ValidationError("Invalid value 'x@y.io' - at `$.a`")), 1)
    assert stall.status() == Failing("ValidationError: Invalid value '…' - at `$.a`", since_ms=1)
