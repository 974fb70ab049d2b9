"""A runtime actor that cannot store a request's data gets the client a 503 that says why, and when to retry.

The exceptions are Ray's own, built as Ray builds them for a failed actor call (a real full disk is what
`tests/faults/disk_full.py` fills)."""

from __future__ import annotations

import json

import lmdb
import ray

from serve_apps.errors import answer_of, unavailable
from tests.support import ray_task_error


def answer(error: ray.exceptions.RayError) -> tuple[int, str | None, dict]:
    response = answer_of(unavailable(error, "Intake"))
    return response.status_code, response.headers.get("retry-after"), json.loads(response.body)["errors"][0]


def test_a_full_disk_is_named_and_the_client_told_to_retry() -> None:
    full = lmdb.DiskError("mdb_txn_commit: No space left on device")
    status, retry_after, error = answer(ray_task_error("IntakeLog.append", full))
    assert (status, retry_after, error["code"]) == (503, "1", "SERVICE_UNAVAILABLE")
    assert error["message"] == (
        "Intake cannot write to its storage (mdb_txn_commit: No space left on device); "
        "nothing was stored. Retry shortly."
    )


def test_a_restarting_actor_and_a_failing_one_are_told_apart() -> None:
    _, _, restarting = answer(ray.exceptions.ActorDiedError())
    assert restarting["message"].startswith("Intake is restarting;")
    status, _, failed = answer(ray_task_error("IntakeLog.append", KeyError("x")))
    assert status == 503 and failed["message"].startswith("Intake failed (KeyError);")


def test_a_value_lmdb_cannot_hold_is_the_requests_fault_not_the_storages() -> None:
    """An over-long identity key must never be a 503: the client would retry the same request for ever."""
    from serve_apps.identity import index_refusal

    too_long = index_refusal(ray_task_error("IdentityIndex.identify", lmdb.BadValsizeError("mdb_get: MDB_BAD_VALSIZE")))
    assert too_long is not None and answer_of(too_long).status_code == 400
    full = index_refusal(ray_task_error("IdentityIndex.identify", lmdb.DiskError("No space left on device")))
    assert full is not None and answer_of(full).status_code == 503
    assert index_refusal(ray_task_error("IdentityIndex.identify", KeyError("x"))) is None
