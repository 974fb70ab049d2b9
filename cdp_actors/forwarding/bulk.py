"""Bulk forwarding for audience outputs: a pure queue of membership changes per (output, audience).

The product docs ("Upload frequency" of the Facebook, Snapchat and Pinterest audience integrations)
describe bulk forwarding: updates wait in a queue that is uploaded once enough are waiting or enough
time has passed. `BulkQueue` is that queue, with no I/O and no clock of its own (`now` is passed in,
in seconds, from a monotonic clock):

- it flushes full groups of the adapter's `max_batch` as soon as they exist, and everything once its
  oldest change has waited `max_age_s` (age counts from when the change was queued, not from the
  change's own timestamp, so a backfill of old changes still gets batched);
- it keeps one pending change per (audience, user): a newer change replaces the pending one in place
  (keeping its place and age), a change older than the pending one (by `timestamp_ms`) is ignored.
  Membership is a state, so only the latest matters, and each group then holds a user at most once,
  which lets adapters send a group's adds and deletes in separate requests in any order;
- each pending change carries the references (`RowRef`: shard, outbox key) of the rows it stands for: its own and
  those of the changes it replaced or outlived, so the upload that carries it acknowledges them all (the queue
  is not the only copy: a row stays in its shard's outbox until then);
- it holds at most `max_buffered` changes. Past that, `add` refuses (returns False) and the caller
  must keep the change where it came from (not acknowledge it) and offer it again after sending what
  `due` returns: the backpressure reaches the producer instead of growing memory.

The mParticle docs' queue sizes (75,000 for Facebook, 500,000 for Snapchat, 100,000 for Pinterest) are
not used as flush sizes: we flush at the partner's per-request limit, which only uploads sooner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

from cdp_actors.integrations.base import AudienceAdapter, MembershipChange


class BulkAdapter(AudienceAdapter, Protocol):
    max_age_s: float
    """How long a membership change may wait in the bulk queue (the output's `bulk_max_age_s` setting)."""


RowRef = tuple[int, bytes]
"""An outbox row a queued change stands for: (shard, key), what its shard is acknowledged with."""


@dataclass
class _Pending:
    change: MembershipChange
    queued_at: float
    rows: list[RowRef]


@dataclass
class Upload:
    """One group of changes to upload together, and the outbox rows to acknowledge once it is done."""

    changes: list[MembershipChange]
    rows: list[RowRef] = field(default_factory=list)


class BulkQueue:
    def __init__(self, max_batch: int, max_age_s: float, max_buffered: int) -> None:
        self.max_buffered = max_buffered
        self.retune(max_batch, max_age_s)
        self._pending: dict[tuple[int, int], _Pending] = {}  # insertion order is queue order
        self.held_rows = 0
        """Outbox rows the pending changes stand for (replaced ones included): what they hold of the lane window."""

    def retune(self, max_batch: int, max_age_s: float) -> None:
        """The group size and age limit from now on (its output's settings changed); what waits stays queued."""
        if max_batch < 1 or max_age_s <= 0:
            raise ValueError("max_batch must be at least 1 and max_age_s positive")
        if self.max_buffered < max_batch:
            raise ValueError(f"max_buffered ({self.max_buffered}) must hold at least one batch ({max_batch})")
        self.max_batch = max_batch
        self.max_age_s = max_age_s

    @classmethod
    def for_adapter(cls, adapter: BulkAdapter, max_buffered: int) -> BulkQueue:
        return cls(adapter.max_batch, adapter.max_age_s, max_buffered)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.max_buffered

    def add(self, change: MembershipChange, now: float, row: RowRef | None = None) -> bool:
        """Queue `change` (from outbox row `row`, if any); False when the queue is full and the change was
        refused (keep it, retry later). A change that replaces or loses to the pending one of its user hands it
        its row: acknowledged with the upload that carries the pending one."""
        key = (change.audience_id, change.mpid)
        rows = [] if row is None else [row]
        pending = self._pending.get(key)
        if pending is not None:
            if change.timestamp_ms >= pending.change.timestamp_ms:
                pending.change = change
            pending.rows += rows
            self.held_rows += len(rows)
            return True
        if self.full:
            return False
        self._pending[key] = _Pending(change, now, rows)
        self.held_rows += len(rows)
        return True

    def due(self, now: float) -> list[Upload]:
        """Take the groups to upload now: everything if the oldest change is too old, else full groups only."""
        if not self._pending:
            return []
        if now - self._oldest().queued_at >= self.max_age_s:
            return self._take(len(self._pending))
        return self._take(len(self._pending) // self.max_batch * self.max_batch)

    def drain(self) -> list[Upload]:
        """Take everything, due or not (shutdown, or an audience connection being removed)."""
        return self._take(len(self._pending))

    def next_deadline(self) -> float | None:
        """When `due` will next return something if nothing is added: None if empty; a time already past
        (the oldest change's queue time) if a full group is waiting."""
        if not self._pending:
            return None
        oldest = self._oldest().queued_at
        return oldest if len(self._pending) >= self.max_batch else oldest + self.max_age_s

    def _oldest(self) -> _Pending:
        return next(iter(self._pending.values()))

    def _take(self, count: int) -> list[Upload]:
        keys = list(islice(self._pending, count))
        taken = [self._pending.pop(key) for key in keys]
        self.held_rows -= sum(len(p.rows) for p in taken)
        groups = [taken[i : i + self.max_batch] for i in range(0, len(taken), self.max_batch)]
        return [Upload([p.change for p in group], [row for p in group for row in p.rows]) for group in groups]
