"""A data subject erasure under the fault load (a flapping partner), with a `kill -9` of the subject's profile
shard while the request is in progress (issue #10's end-to-end test).

The load writes its users; at a seeded point one of them (the subject) is sent nothing more, the ledger is told it
will vanish, and a v3 erasure naming its MPID (`skip_waiting_period`) goes to the DSR API; once the DSR actor has
started it, the subject's shard is killed. The request must still complete (its steps resume). Afterwards the
subject is absent from the Profile API, IDSync search, `/cdp/users/search` and the raw bytes of every file of the
data directory; the Braze output (on a calm local partner) got its `/users/delete`; and the ledger balances for
every other user (nothing acknowledged lost, applied twice or out of order; derived state right).

The request names the MPID, not the customer id: the request book keeps what a request names (as mParticle keeps
its requests), so the scan for the customer id covers the DSR book's files too."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cdp_actors.config import WorkspaceConfig, parse_workspace
from cdp_actors.partition import partition_of, shard_name
from tests.faults.conftest import fault_workspace, run_under_load
from tests.faults.kill import kill_9_actor
from tests.faults.ledger import Ledger
from tests.faults.load import Load
from tests.faults.partner import FlappingPartner
from tests.integration.test_dsr_erasure import files_holding, holders, profile_api
from tests.integration.test_identity_api import idsync
from tests.support import DEMO_AUTH, Api, Receiver, wait_for

BRAZE_OUTPUT, BRAZE_CONNECTION = 4, 3
COMPLETION_S = 120.0


def dsr_fault_config(partner_base: str, braze_base: str) -> WorkspaceConfig:
    """The fault workspace plus a Braze output on input 1 (a DSR-capable partner), at a calm local server: its
    events and the subject's deletion go there."""
    data = fault_workspace(partner_base)
    settings = {"api_url": braze_base + "/braze", "api_key": "braze-rest-key"}
    data["outputs"].append({"id": BRAZE_OUTPUT, "name": "braze", "kind": "braze", "settings": settings})
    data["connections"].append(
        {"id": BRAZE_CONNECTION, "name": "demo-server → braze", "input": 1, "output": BRAZE_OUTPUT, "active": True}
    )
    return parse_workspace(data)


@pytest.fixture
def braze() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def dsr(api: Api, method: str, path: str, body: Any = None) -> requests.Response:
    headers = {"Authorization": DEMO_AUTH}
    return requests.request(method, api.base + path, json=body, headers=headers, timeout=30)


def submit_erasure(api: Api, mpid: int) -> str:
    rid = str(uuid.uuid4())
    extension = {"skip_waiting_period": True, "subject_identities": {"mpid": {"value": str(mpid), "encoding": "raw"}}}
    body = {
        "regulation": "gdpr", "subject_request_id": rid, "subject_request_type": "erasure",
        "submitted_time": "2026-12-01T00:00:00Z", "api_version": "3.0",
        "extensions": {"opendsr.mparticle.com": extension},
    }  # fmt: skip
    answer = dsr(api, "POST", "/v3/requests", body)
    assert answer.status_code == 201, answer.text
    return rid


def request_status(api: Api, rid: str) -> dict[str, Any]:
    answer = dsr(api, "GET", f"/v3/requests/{rid}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_erasure_under_load_with_a_kill_9_of_the_subjects_shard(
    platform, partner: FlappingPartner, braze: Receiver, seed: int
) -> None:
    config = dsr_fault_config(partner.base, braze.base)
    api = platform(config)
    started: dict[str, Any] = {}
    erased: dict[str, Any] = {}

    def on_start(ledger: Ledger, load: Load) -> None:
        started.update(ledger=ledger, load=load)

    def inject(rng: random.Random) -> str:
        ledger, load = started["ledger"], started["load"]
        subject = f"{ledger.tag}-w{rng.randrange(len(load.threads))}-g0-u{rng.randrange(load.users_per_worker)}"
        load.retire(subject)
        wait_for(lambda: holders(api, "customer_id", subject), timeout=60, what=f"{subject}'s profile")
        mpid = int(holders(api, "customer_id", subject)[0]["mpid"])
        ledger.exclude(subject, mpid)
        rid = submit_erasure(api, mpid)
        state = wait_for(lambda: _started(api, rid), timeout=30, interval=0.02, what="the erasure started")
        shard = shard_name(partition_of(mpid, config.runtime.shards))
        pid = kill_9_actor(shard)
        erased.update(subject=subject, mpid=mpid, rid=rid)
        return f"erasure {rid} of {subject} (mpid {mpid}), {state}; then {shard} (pid {pid}) killed"

    began = time.monotonic()
    run_under_load(api, partner, seed, "dsrkill", inject, inject_between=(0.2, 0.5), on_start=on_start)
    subject, mpid, rid = erased["subject"], erased["mpid"], erased["rid"]
    done = wait_for(lambda: _completed(api, rid), timeout=COMPLETION_S, interval=0.5, what="the erasure completed")
    print(f"erasure completed {time.monotonic() - began:.1f} s after the load began: {done['extensions']}")

    assert profile_api(api, mpid).status_code == 404
    idsync(api, "search", status=404, customerid=subject)
    assert holders(api, "customer_id", subject) == []
    assert api.get(f"/cdp/users/{mpid}").status_code == 404
    assert files_holding(Path(platform.data_dir), [subject]) == []
    deletions = [r.body for r in list(braze.received) if r.path == "/braze/users/delete"]
    assert {"external_ids": [subject]} in deletions, deletions
    [braze_status] = [e for e in done["extensions"] if e["name"] == "braze"]
    assert braze_status["status"] == "sent", braze_status


def _started(api: Api, rid: str) -> str | None:
    status = request_status(api, rid)["request_status"]
    return None if status == "pending" else f"{status} at the kill"


def _completed(api: Api, rid: str) -> dict[str, Any] | None:
    status = request_status(api, rid)
    return status if status["request_status"] == "completed" else None
