"""Deterministic signed 64-bit ids derived from log positions, so a replay reproduces every id exactly.

`mix64` is the SplitMix64 finaliser: a bijection on 64-bit integers that spreads nearby inputs apart,
cheap enough to run per event. It hides nothing: anyone can compute it. So a new user's MPID, which must
not be guessable (a client that could predict the MPID of a future user could enumerate profiles), is a
keyed hash of the log position instead, under a secret created once per deployment (`load_mpid_secret`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from pathlib import Path

_MASK = (1 << 64) - 1
BATCH, EVENT, MESSAGE = 1, 3, 4  # salts: one id space per kind (2 was MPIDs, now keyed: `fresh_mpid`)


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


MPID_SECRET_FILE = "mpid-secret"  # in the data directory, mode 0600
MPID_SECRET_BYTES = 32  # 256 bits: blake2b's key may be up to 64 bytes; 32 is its full security level
_MPID_PERSON = b"cdp-batch-mpid"  # blake2b personalisation: this key derives nothing but batch MPIDs


def fresh_mpid(secret: bytes, origin: int, seq: int) -> int:
    """The MPID a batch at `seq` of log `origin` gets when it creates a profile: positive, never 0, the same
    on every replay, and unpredictable without the deployment's secret (blake2b keyed, 63 bits)."""
    position = struct.pack(">QQ", origin & _MASK, seq & _MASK)
    digest = hashlib.blake2b(position, key=secret, digest_size=8, person=_MPID_PERSON).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1


def load_mpid_secret(data_dir: str | Path) -> bytes:
    """The deployment's MPID secret, created on first start: written to a private temporary file, synced,
    then linked into place, so concurrent first starts agree on one secret and a crash never leaves a
    partial one. Never log it."""
    path = Path(data_dir) / MPID_SECRET_FILE
    if not path.exists():
        _create_secret(path)
    secret = path.read_bytes()
    if len(secret) != MPID_SECRET_BYTES:
        raise RuntimeError(f"{path} holds {len(secret)} bytes, not {MPID_SECRET_BYTES}: restore it or remove it")
    return secret


def _create_secret(path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")  # one per caller, never shared
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(MPID_SECRET_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # atomic, and refuses to replace: the first start's secret wins
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
