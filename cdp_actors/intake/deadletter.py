"""The dead-letter store: accepted batches that failed alone, set aside so the rest of the log goes on.

It is a sub-database of the intake's LMDB environment, keyed by the batch's log seq: the dispatcher writes an
entry in the same transaction that moves its cursor past the batch, so a batch is never both trimmed from the
log and missing here. `cdp deadletter replay` submits entries to the intake again and then removes them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cdp_actors.storage.lmdb_env import Store, iter_from, u64

DEAD_LETTER_DB = b"deadletter"
LATEST_IN_STATUS = 5  # entries `/cdp/status` shows: enough to see whether one cause or several
MAX_PAGE = 1000  # entries per `/cdp/deadletter` page


class DeadLetter(msgspec.Struct, array_like=True, frozen=True):
    """One batch set aside: as accepted (input, time, raw JSON), and why (the error's type and first line)."""

    seq: int
    input_id: int
    received_ms: int
    raw: bytes
    error: str
    attempts: int
    dead_lettered_ms: int

    def view(self, include_body: bool) -> DeadLetterView:
        body = self.raw.decode("utf-8", errors="replace") if include_body else None
        return DeadLetterView(
            self.seq, self.input_id, self.received_ms, self.error, self.attempts, self.dead_lettered_ms, body
        )


class DeadLetterView(msgspec.Struct, omit_defaults=True):
    """An entry as `/cdp/deadletter` and `cdp deadletter` show it; the raw batch only when asked for."""

    seq: int
    input_id: int
    received_ms: int
    error: str
    attempts: int
    dead_lettered_ms: int
    body: str | None = None


class DeadLetterPage(msgspec.Struct):
    count: int
    """Entries in the store, all pages together."""
    entries: list[DeadLetterView]
    next_after: int | None
    """The `after` of the next page; None at the end."""


class DeadLetterNote(msgspec.Struct):
    """A recent entry as `/cdp/status` names it."""

    seq: int
    input_id: int
    error: str
    dead_lettered_ms: int


class DeadLetterSummary(msgspec.Struct):
    count: int
    latest: list[DeadLetterNote]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DeadLetter)


def decode_dead_letter(data: bytes) -> DeadLetter:
    return _decoder.decode(data)


class DeadLetters:
    """The store's operations, on an environment another part opened (the intake's)."""

    def __init__(self, store: Store) -> None:
        # The intake's environment allows one named database more than INTAKE_DBS (Store's max_dbs): this one.
        self.store = store
        self.db = store.env.open_db(DEAD_LETTER_DB)

    def put(self, txn: Any, entry: DeadLetter) -> None:
        """In the caller's transaction: the one that moves the cursor past `entry.seq`."""
        txn.put(u64(entry.seq), _encoder.encode(entry), db=self.db)

    def page(self, after: int, limit: int) -> list[DeadLetter]:
        """Up to `limit` entries with seq > `after`, oldest first."""
        with self.store.read() as txn:
            return [_decoder.decode(value) for _, value in iter_from(txn, self.db, u64(after + 1), limit)]

    def latest(self, n: int) -> list[DeadLetter]:
        with self.store.read() as txn:
            cursor = txn.cursor(self.db)
            found = []
            if cursor.last():
                for _, value in cursor.iterprev():
                    found.append(_decoder.decode(value))
                    if len(found) >= n:
                        break
            return found

    def count(self) -> int:
        with self.store.read() as txn:
            return txn.stat(self.db)["entries"]

    def remove(self, seqs: list[int]) -> list[int]:
        """Remove entries (after a replay was accepted); returns the seqs that were there."""
        with self.store.write() as txn:
            return [seq for seq in seqs if txn.delete(u64(seq), db=self.db)]

    def summary(self) -> DeadLetterSummary:
        latest = [DeadLetterNote(e.seq, e.input_id, e.error, e.dead_lettered_ms) for e in self.latest(LATEST_IN_STATUS)]
        return DeadLetterSummary(self.count(), latest)
