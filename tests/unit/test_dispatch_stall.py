"""A stalled dispatcher says why in `/cdp/status`, from the first failure until a chunk goes through again,
and logs each reason once per stall. The exceptions are Ray's own, built as Ray builds them."""

from __future__ import annotations

import lmdb
import ray

from cdp_actors.intake.dispatcher import Failing, Stall
from tests.support import ray_task_error

FULL = "mdb_txn_commit: No space left on device"


def disk_full() -> ray.exceptions.RayTaskError:
    return ray_task_error("ProfileShard.apply", lmdb.DiskError(FULL))


def test_a_stall_names_its_cause_keeps_its_start_and_logs_each_reason_once() -> None:
    stall = Stall()
    assert stall.status() is None
    assert stall.failed(disk_full(), now_ms=1_000) is True
    assert stall.failed(disk_full(), now_ms=1_500) is False  # the same reason: no new log
    assert stall.failed(ray.exceptions.ActorDiedError(), now_ms=2_000) is True
    status = stall.status()
    assert status is not None and status.since_ms == 1_000 and status.error.startswith("ActorDiedError: ")
    assert stall.failed(disk_full(), now_ms=2_500) is False
    assert stall.status() == Failing(f"DiskError: {FULL}", since_ms=1_000)


def test_a_chunk_going_through_ends_the_stall() -> None:
    stall = Stall()
    stall.failed(disk_full(), now_ms=1_000)
    stall.clear()
    assert stall.status() is None
    assert stall.failed(disk_full(), now_ms=9_000) is True  # a new stall logs again
    assert stall.status() == Failing(f"DiskError: {FULL}", since_ms=9_000)
