"""LMDB helpers: one environment per owning actor, named sub-databases, fixed-width keys.

Open an environment inside the process that uses it (an actor's `__init__`), never before a fork and
never twice in one process. Every write transaction commits with fsync (`sync=True`): a commit is the
point at which data is durable.

Everything under the data directory is the owner's alone (directories 0700, files 0600), whatever the
process umask: profiles, identities and event history are personal data.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

import lmdb

MAP_SIZE = 1 << 40  # address space only; the file grows as data is written
Db = Any  # py-lmdb does not export its database handle type
Txn: TypeAlias = "lmdb.Transaction[bytes]"
"""A transaction that returns keys and values as bytes (`buffers=False`), as every one here does; a string
because py-lmdb's Transaction is generic only in its type stubs, not at run time."""
_U64 = struct.Struct(">Q")
PRIVATE_DIR_MODE = 0o700  # rwx for the owner only: no other account may list or read the data directory
PRIVATE_FILE_MODE = 0o600  # rw for the owner only
LMDB_FILES = ("data.mdb", "lock.mdb")
DATA_FILE = "data.mdb"
COMPACTING_SUFFIX = ".compacting"
"""The sibling directory a compaction writes the new data file into before it replaces the old one."""


def make_private_dir(path: str | Path) -> Path:
    """Create `path` and any missing parent owner-only (`mkdir -p` would give parents the umask's mode), and
    tighten `path` itself if an earlier version created it readable by others."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask; chmod is not
    return path


def open_private(path: str | Path, flags: int) -> int:
    """os.open for a file of the data directory: created 0600, and an existing one tightened to 0600."""
    fd = os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd


class Store:
    """An LMDB environment with named sub-databases."""

    def __init__(self, path: str | Path, names: tuple[str, ...]) -> None:
        self.path, self.names = Path(path), names
        make_private_dir(path)
        shutil.rmtree(_scratch(self.path), ignore_errors=True)  # a compaction a crash interrupted
        self._open()

    def _open(self) -> None:
        # py-lmdb creates data.mdb and lock.mdb with `mode` minus the execute bits: 0600
        self.env = lmdb.open(
            str(self.path),
            map_size=MAP_SIZE,
            max_dbs=len(self.names) + 1,
            sync=True,
            metasync=True,
            max_readers=256,
            mode=PRIVATE_DIR_MODE,
        )
        for name in LMDB_FILES:  # files an earlier version created 0644
            os.chmod(self.path / name, PRIVATE_FILE_MODE)
        self.env.reader_check()  # clear reader slots left by a killed process
        self.dbs = {name: self.env.open_db(name.encode()) for name in self.names}

    def compact(self) -> None:
        """Rewrite the data file with its live records only, and reopen it. LMDB keeps the pages a commit freed,
        with the bytes of the records deleted, until it reuses them; erasure must leave none (a data subject's
        identifiers). Nor may a branch page: its separator keys are copies of the keys that began a leaf page
        when it split, and stay there after those records are deleted, so LMDB's own compacting copy (which
        copies the live branch pages as they are) can keep an erased key. Every record goes into a fresh
        environment instead (`_rewrite`), whose B-trees are built from live keys alone. Crash-safe: the new file
        is complete and synced before it atomically replaces the data file.

        The caller holds the environment's only writer and no transaction. No other process may have the
        environment open (it would keep the old file, and the lock file's last transaction id with it): if one
        has, the data file stays as it was and `SharedEnvironment` is raised."""
        scratch = _scratch(self.path)
        shutil.rmtree(scratch, ignore_errors=True)
        make_private_dir(scratch)
        _rewrite(self.env, scratch)
        copy = scratch / DATA_FILE
        fd = open_private(copy, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.env.close()
        with _alone(self.path / "lock.mdb") as alone:
            if alone:
                os.replace(copy, self.path / DATA_FILE)
                _fsync_dir(self.path)
        shutil.rmtree(scratch, ignore_errors=True)
        self._open()
        if not alone:
            raise SharedEnvironment(f"{self.path} is open in another process: not compacted")

    def write(self) -> Txn:
        return self.env.begin(write=True)

    def read(self) -> Txn:
        return self.env.begin(buffers=False)

    def db(self, name: str) -> Db:
        return self.dbs[name]

    def close(self) -> None:
        self.env.close()


class SharedEnvironment(RuntimeError):
    """A compaction found another process holding the environment open, and left it as it was."""


@contextlib.contextmanager
def _alone(lock_file: Path) -> Iterator[bool]:
    """Whether no process has the environment open, held so while inside: every process that opens an LMDB
    environment holds a shared lock on the lock file's first byte for as long as it keeps it open, so this
    process, having closed its own, gets the exclusive one only if nobody else has it open (and an opener
    arriving meanwhile waits, then opens the file in place afterwards)."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


_DB_FLAGS = ("reverse_key", "dupsort", "integerkey", "integerdup", "dupfixed")


def _rewrite(env: lmdb.Environment, target: Path) -> None:
    """Every record of every named database of `env` into a new environment at `target`, in key order, with the
    databases' flags. The main database lists the named ones (their names are its keys)."""
    out = lmdb.open(str(target), map_size=MAP_SIZE, max_dbs=256, sync=False, mode=PRIVATE_DIR_MODE)
    try:
        with env.begin(buffers=False) as source, out.begin(write=True) as sink:
            for name in [key for key, _ in source.cursor()]:
                db = env.open_db(name, txn=source, create=False)
                flags = db.flags()
                copied = out.open_db(name, txn=sink, **{flag: flags[flag] for flag in _DB_FLAGS})
                append = not flags["dupsort"]  # MDB_APPEND needs keys in order: a cursor gives them so
                for key, value in source.cursor(db):
                    sink.put(key, value, db=copied, append=append, dupdata=True)
        out.sync(force=True)
    finally:
        out.close()


def _scratch(path: Path) -> Path:
    return path.with_name(path.name + COMPACTING_SUFFIX)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def u64(n: int) -> bytes:
    return _U64.pack(n)


def from_u64(b: bytes) -> int:
    return _U64.unpack(b)[0]


def mpid_key(mpid: int) -> bytes:
    """MPIDs are signed; flip the sign bit so keys sort like the numbers."""
    return _U64.pack(mpid + (1 << 63))


def mpid_from_key(b: bytes) -> int:
    return _U64.unpack(b[:8])[0] - (1 << 63)


def iter_from(txn: Txn, db: Db, start: bytes, limit: int) -> Iterator[tuple[bytes, bytes]]:
    """Up to `limit` items with key >= start, in key order."""
    cursor = txn.cursor(db)
    if not cursor.set_range(start):
        return
    for n, item in enumerate(cursor.iternext()):
        if n >= limit:
            return
        yield item


def iter_prefix(txn: Txn, db: Db, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor.iternext():
        if not key.startswith(prefix):
            return
        yield key, value


def last_key(txn: Txn, db: Db) -> bytes | None:
    cursor = txn.cursor(db)
    return cursor.key() if cursor.last() else None


U64_MAX = 2**64 - 1


def add_counts(txn: Txn, db: Db, counts: dict[str, int]) -> None:
    """Add to u64 counters under text keys, in the caller's transaction. A counter saturates at U64_MAX rather
    than fail the transaction (revenue in hundredths could get there: 184,467 purchases of the largest amount)."""
    for name, n in counts.items():
        key = name.encode()
        old = txn.get(key, db=db)
        txn.put(key, u64(min((from_u64(old) if old else 0) + n, U64_MAX)), db=db)


def read_counts(txn: Txn, db: Db, first: str, last: str) -> list[tuple[str, int]]:
    """Counters with `first` <= key < `last` (text keys)."""
    found = []
    for key, value in iter_from(txn, db, first.encode(), 1 << 62):
        if key >= last.encode():
            break
        found.append((key.decode(), from_u64(value)))
    return found
