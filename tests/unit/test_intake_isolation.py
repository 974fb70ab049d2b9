"""The intake's group commit: a request LMDB refuses fails alone; the other requests of the commit are stored."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdp_actors.intake.log import IntakeLogCore, _Pending
from cdp_actors.schema.records import decode_log_record
from cdp_actors.storage.lmdb_env import from_u64


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def request(loop: asyncio.AbstractEventLoop, input_id: int, *batches: tuple[str | None, bytes]) -> _Pending:
    return _Pending(input_id, 1_700_000_000_000, list(batches), loop.create_future())


def logged(core: IntakeLogCore) -> list[tuple[int, int, bytes]]:
    with core.store.read() as txn:
        return [
            (from_u64(key), (record := decode_log_record(value)).input_id, record.raw)
            for key, value in txn.cursor(db=core.store.db("log"))
        ]


def test_an_over_long_key_fails_its_request_alone(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    core = IntakeLogCore(tmp_path, max_lag=1000)
    too_long = "x" * 600  # srid key 4 + 600 bytes: over LMDB's 511
    results = core.write(
        [
            request(loop, 1, ("a", b"A"), (None, b"B")),
            request(loop, 1, ("b", b"C"), (too_long, b"D")),
            request(loop, 2, ("c", b"E")),
        ]
    )
    assert [(r.accepted, r.refused is None) for r in results] == [(2, True), (0, False), (1, True)]
    assert "cannot store this request" in results[1].refused
    assert logged(core) == [(1, 1, b"A"), (2, 1, b"B"), (3, 2, b"E")]
    assert core.next_seq == 4
    again = core.write([request(loop, 1, ("b", b"C"), ("a", b"A"))])  # "b" was rolled back with its request
    assert (again[0].accepted, again[0].duplicates) == (1, 1)
    assert logged(core)[-1] == (4, 1, b"C")
