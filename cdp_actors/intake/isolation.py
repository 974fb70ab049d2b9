"""Poison-batch isolation: which failures to wait out, and how to find the batch that fails on its own.

A transient failure (the storage refusing writes, an actor restarting) is waited out: the same part is tried
again, nothing is skipped. Any other failure may be deterministic, caused by the data of one batch: the chunk
is tried `MAX_ATTEMPTS` times, then split in halves applied separately (bisection), down to single batches;
a batch that still fails alone after `MAX_ATTEMPTS` tries is set aside (dead-lettered) and the rest goes on.

Every part starts at the dispatcher's cursor, and parts are tried in log order, so the cursor only ever moves
past batches that are applied or dead-lettered.
"""

from __future__ import annotations

import errno
import re
from enum import Enum
from typing import TypeVar

import lmdb
import ray.exceptions

from cdp_actors.profiles.shard import SequenceGap

MAX_ATTEMPTS = 3
"""Tries of a whole chunk, and of one batch alone, before its failure counts as deterministic: a flaky failure
(a bug that depends on timing) gets three chances; a deterministic one costs 3 x RETRY_DELAY_S before the split."""

TRANSIENT_LMDB_ERRORS: tuple[type[Exception], ...] = (
    lmdb.DiskError,
    lmdb.MapFullError,
    lmdb.MapResizedError,
    lmdb.ReadersFullError,
    lmdb.TlsFullError,
    lmdb.MemoryError,
    lmdb.PanicError,
    lmdb.LockError,
    lmdb.ReadonlyError,
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.BadChecksumError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
)
"""The storage refusing or failing writes, whatever the data: skipping batches would not help. The other
LMDB errors (BadValsizeError: a key over 511 bytes; TxnFullError, ...) depend on what is written."""

TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS, errno.ENOMEM})

Item = TypeVar("Item")


def cause_of(error: BaseException) -> BaseException:
    """The exception raised inside the actor call, through any number of Ray task wrappers."""
    while isinstance(error, ray.exceptions.RayTaskError) and error.cause is not None and error.cause is not error:
        error = error.cause
    return error


def is_transient(error: BaseException) -> bool:
    """True when waiting and retrying is the answer: a failure of the runtime or the storage, not of the data."""
    cause = cause_of(error)
    if isinstance(cause, ray.exceptions.RayError) and not isinstance(cause, ray.exceptions.RayTaskError):
        return True  # an actor died, is restarting or unreachable; an object was lost; a node went away
    if isinstance(cause, TRANSIENT_LMDB_ERRORS):
        return True
    if isinstance(cause, OSError) and cause.errno in TRANSIENT_ERRNOS:
        return True
    if isinstance(cause, MemoryError):
        return True  # memory pressure passes; a batch is not set aside for it
    return isinstance(cause, SequenceGap)  # a shard restarted behind the dispatcher's back: resend


QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def describe(error: BaseException) -> str:
    """`Type: first line` of the underlying error, at most 200 characters, quoted values masked: errors quote what
    they choke on (msgspec: "Invalid value 'x' - at `$.path`"), and a batch's contents stay out of alerts."""
    cause = cause_of(error)
    first_line = QUOTED.sub("'…'", (str(cause).strip().splitlines() or [""])[0])
    return f"{type(cause).__name__}: {first_line}"[:200]


class Action(Enum):
    WAIT = "wait"  # transient: try the same part again after a pause
    RETRY = "retry"  # possibly deterministic, attempts left: the same part again after a pause
    SPLIT = "split"  # the part failed as a whole: try its first half now
    DEAD_LETTER = "dead_letter"  # one batch failed alone MAX_ATTEMPTS times: set it aside


class Isolation:
    """The state machine: which part of the chunk at the cursor to apply next, and after a failure what to do.

    Outside isolation the part is the whole chunk. Once a chunk is split, `ends` holds the last seq of each part
    still to apply, the nearest on top; every part starts at the cursor (the first seq of the chunk read)."""

    def __init__(self, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.max_attempts = max_attempts
        self.ends: list[int] = []
        self.attempts = 0  # possibly deterministic failures of the current part

    @property
    def isolating(self) -> bool:
        return bool(self.ends)

    def part(self, chunk: list[tuple[int, Item]]) -> list[tuple[int, Item]]:
        """What to apply next out of `chunk`, the log read from the cursor in seq order."""
        while self.ends and self.ends[-1] < chunk[0][0]:
            self.ends.pop()
        if not self.ends:
            return chunk
        return [item for item in chunk if item[0] <= self.ends[-1]]

    def done(self, part: list[tuple[int, Item]]) -> None:
        """The part was applied (or its one batch dead-lettered): the cursor moved past it."""
        self.attempts = 0
        while self.ends and self.ends[-1] <= part[-1][0]:
            self.ends.pop()

    def failed(self, part: list[tuple[int, Item]], transient: bool) -> Action:
        if transient:
            return Action.WAIT
        self.attempts += 1
        if len(part) > 1 and (self.isolating or self.attempts >= self.max_attempts):
            if not self.ends:
                self.ends.append(part[-1][0])
            self.ends.append(part[len(part) // 2 - 1][0])
            self.attempts = 0
            return Action.SPLIT
        if self.attempts >= self.max_attempts:
            return Action.DEAD_LETTER
        return Action.RETRY
