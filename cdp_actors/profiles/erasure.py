"""What of a shard's storage belongs to one profile (MPID): the keys an erasure removes, db by db.

A profile's records are keyed by its MPID in most dbs (`profiles`, `history` by prefix, `derived`); the others
name it inside the key (`activity`: day, input, MPID; `expiry`: time, MPID) or only in the value (`outbox`
rows). Reports' `counters` are aggregates with no identifier; `meta` holds the shard's own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from cdp_actors.schema.records import OutboxRow
from cdp_actors.storage.lmdb_env import Db, Txn, iter_prefix, mpid_key, u64

ACTIVITY_MPID_AT = slice(8, 16)
"""Where an `activity` key holds the MPID: after the day (4 bytes) and the input id (4 bytes)."""
_row_decoder = msgspec.msgpack.Decoder(OutboxRow)


class SubjectKeys(msgspec.Struct):
    """Per db, the keys of one profile's records."""

    profiles: list[bytes] = []
    history: list[bytes] = []
    activity: list[bytes] = []
    derived: list[bytes] = []
    expiry: list[bytes] = []
    outbox: list[bytes] = []

    def items(self) -> Iterator[tuple[str, bytes]]:
        for name in self.__struct_fields__:
            for key in getattr(self, name):
                yield name, key

    def __len__(self) -> int:
        return sum(1 for _ in self.items())


def subject_keys(txn: Txn, db: dict[str, Db], mpid: int, next_change_ms: int | None) -> SubjectKeys:
    """The keys of `mpid`'s records in the shard's dbs (`db`: name -> handle), read in `txn`. `next_change_ms`
    is the profile's derived record's expiry time (its `expiry` key), None without one. The `activity` and
    `outbox` dbs are read whole: neither is keyed by MPID first (activity is kept ~400 days of one row per
    active profile and day; the outbox holds only what partners have not acknowledged)."""
    own = mpid_key(mpid)
    present = [own] if txn.get(own, db=db["profiles"]) is not None else []
    derived = [own] if txn.get(own, db=db["derived"]) is not None else []
    expiry = [u64(next_change_ms) + own] if next_change_ms is not None else []
    return SubjectKeys(
        profiles=present,
        history=[key for key, _ in iter_prefix(txn, db["history"], own)],
        activity=[key for key in txn.cursor(db["activity"]).iternext(values=False) if key[ACTIVITY_MPID_AT] == own],
        derived=derived,
        expiry=[key for key in expiry if txn.get(key, db=db["expiry"]) is not None],
        outbox=[key for key, value in txn.cursor(db["outbox"]).iternext() if _row_decoder.decode(value).mpid == mpid],
    )
