"""Deterministic signed 64-bit ids derived from log positions, so a replay reproduces every id exactly.

`mix64` is the SplitMix64 finaliser: a bijection on 64-bit integers that spreads nearby inputs apart,
cheap enough to run per event.
"""

from __future__ import annotations

import hashlib

_MASK = (1 << 64) - 1
BATCH, MPID, EVENT, MESSAGE = 1, 2, 3, 4  # salts: one id space per kind


def mix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _signed(x: int) -> int:
    return x - (1 << 64) if x >> 63 else x


def origin_key(name: str) -> int:
    """A 64-bit key for a log's name (hashed once, not per record)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def derived_id(kind: int, base: int, n: int) -> int:
    """The id of the `n`-th thing of `kind` under `base` (a log origin key or a batch id)."""
    return _signed(mix64((base & _MASK) ^ mix64((kind << 48) ^ n)))


def id_run(kind: int, base: int, count: int) -> list[int]:
    """`count` consecutive ids of `kind` under `base`: one mix for the run, so cheap per event."""
    start = mix64((base & _MASK) ^ mix64(kind << 48))
    return [_signed((start + n) & _MASK) for n in range(count)]


def batch_id(origin: int, seq: int) -> int:
    return derived_id(BATCH, origin, seq)


def fresh_mpid(origin: int, seq: int) -> int:
    """The MPID a batch at `seq` gets when nothing identifies its user; never 0."""
    return derived_id(MPID, origin, seq) or 1
