"""The MPIDs a forwarder was told are erased: their event rows are discarded, not delivered, wherever delivery
holds them (a lane, a coalescing group, a retry's pause, a breaker's wait, a row handed over later).

MPIDs are never reused (new data for an erased user's identities makes a new profile), so remembering one longer
than needed never discards another user's row. The set is bounded: past `MAX_ERASED_SUBJECTS` the oldest are
forgotten; by then their rows are long gone from every shard's outbox (the erasure removed them) and from this
process (the erasure waited until none was held here). A restarted forwarder starts with an empty set and takes
its rows again from the shards, which hold none of an erased MPID.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

MAX_ERASED_SUBJECTS = 100_000
"""About 10 MB at most; far more MPIDs than a workspace erases between two restarts of a forwarder."""


class ErasedSubjects:
    def __init__(self, capacity: int = MAX_ERASED_SUBJECTS) -> None:
        self.capacity = capacity
        self._mpids: OrderedDict[int, None] = OrderedDict()

    def add(self, mpids: Iterable[int]) -> None:
        for mpid in mpids:
            self._mpids[mpid] = None
            self._mpids.move_to_end(mpid)
        while len(self._mpids) > self.capacity:
            self._mpids.popitem(last=False)

    def __contains__(self, mpid: object) -> bool:
        return mpid in self._mpids

    def __len__(self) -> int:
        return len(self._mpids)
