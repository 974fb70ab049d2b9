"""Erasure end to end on a running platform (real Ray, real Serve): users ingested through `/v2/bulkevents`, then
`fulfil.resolve` and `fulfil.erase` called from this process for one subject. Afterwards the subject is absent
from the Profile API, IDSync, `/cdp/users/search` and the raw bytes of every file of the data directory, the
other users are untouched, and new data for the same identity makes a new profile. A `kill -9` of the subject's
shard during an erasure, then the erasure again, ends the same way."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import ray
import requests

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.dsr import fulfil
from cdp_actors.dsr.model import DsrRequest, SubjectIdentity
from cdp_actors.partition import partition_of, shard_name
from tests.conftest import demo_config
from tests.faults.kill import kill_9_actor
from tests.integration.test_forwarding import with_outputs
from tests.integration.test_identity_api import idsync
from tests.integration.test_profiles_api import FIELDS, token
from tests.samples import batch, custom
from tests.support import Api, wait_for

USERS = 50
T0 = 1_760_000_000_000
EVENTS_EACH = 3


def customer(n: int) -> str:
    return f"dsr-cust-{n:03d}-7c1e"


def email(n: int) -> str:
    return f"zoë.dsr-{n:03d}@example.com"  # non-ASCII: stored as UTF-8, or as the client's JSON escape


def user_batch(n: int, first_event: int = 0) -> dict[str, Any]:
    events = [custom("viewed", T0 + first_event + e, item=f"item-{n}-{e}") for e in range(EVENTS_EACH)]
    return batch(customer(n), events, user_attributes={"tier": "gold"}) | {
        "user_identities": {"customer_id": customer(n), "email": email(n)}
    }


def ingest(api: Api, numbers: list[int], first_event: int = 0) -> None:
    for start in range(0, len(numbers), 25):
        response = api.post("/v2/bulkevents", [user_batch(n, first_event) for n in numbers[start : start + 25]])
        assert response.status_code == 202, response.text


def holders(api: Api, identity_type: str, value: str) -> list[dict[str, Any]]:
    answer = api.get("/cdp/users/search", identity_type=identity_type, value=value)
    assert answer.status_code == 200, answer.text
    return answer.json()["users"]


def mpid_of(api: Api, n: int) -> int:
    [user] = wait_for(lambda: holders(api, "customer_id", customer(n)), what=f"user {n} applied")
    return int(user["mpid"])


def erasure_request(n: int) -> DsrRequest:
    now = int(time.time() * 1000)
    return DsrRequest(
        subject_request_id=str(uuid.uuid4()),
        subject_request_type="erasure",
        api_version="3.0",
        regulation="gdpr",
        submitted_time="2026-01-01T00:00:00Z",
        received_ms=now,
        input_id=1,
        identities=[SubjectIdentity("email", email(n))],
        due_ms=now,
        expected_completion_ms=now,
    )


def stored_forms(value: str) -> list[bytes]:
    """The value as UTF-8 (msgpack strings, index keys, JSON written without escapes) and as a JSON encoder that
    escapes non-ASCII writes it (the test client's `json.dumps`, kept raw in the intake log)."""
    return [value.encode(), json.dumps(value)[1:-1].encode()]


def files_holding(data_dir: Path, values: list[str]) -> list[str]:
    """Every file under the data directory whose raw bytes hold one of the values, in any stored form."""
    needles = [form for value in values for form in stored_forms(value)]
    found = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(data_dir)}: {needle!r}" for needle in needles if needle in data]
    return found


def profile_api(api: Api, mpid: int) -> requests.Response:
    auth = {"Authorization": "Bearer " + token(api).json()["access_token"]}
    url = f"{api.base}/userprofile/v1/1/1/1/{mpid}"
    return requests.get(url, params={"fields": FIELDS}, headers=auth, timeout=30)


def assert_gone(api: Api, data_dir: Path, n: int, mpid: int) -> None:
    assert profile_api(api, mpid).status_code == 404
    idsync(api, "search", status=404, customerid=customer(n))
    idsync(api, "search", status=404, email=email(n))
    assert holders(api, "email", email(n)) == [] and holders(api, "customer_id", customer(n)) == []
    assert api.get(f"/cdp/users/{mpid}").status_code == 404
    assert files_holding(data_dir, [email(n), customer(n)]) == []


def assert_untouched(api: Api, mpids: dict[int, int]) -> None:
    for n, mpid in mpids.items():
        assert mpid_of(api, n) == mpid
        detail = api.get(f"/cdp/users/{mpid}").json()
        assert len(detail["recent_events"]) >= EVENTS_EACH, detail
        assert profile_api(api, mpid).json()["user_identities"][0]["value"] in (customer(n), email(n))


def platform_for(platforms: Any, receiver: Any) -> tuple[Api, WorkspaceConfig, Path]:
    config = demo_config(receiver.url)
    api = platforms(config)
    return api, config, Path(platforms.data_dir)


def test_erasure_leaves_no_trace_and_the_others_untouched(platforms, receiver) -> None:
    api, config, data_dir = platform_for(platforms, receiver)
    ingest(api, list(range(USERS)))
    mpids = {n: mpid_of(api, n) for n in range(USERS)}
    wait_for(api.settled, timeout=120, what="settled")
    subject = 7
    assert files_holding(data_dir, [email(subject), customer(subject)])  # the scan sees what is there

    ingest(api, [subject], first_event=500)  # in flight: accepted, not waited for; it must not bring them back
    found = fulfil.resolve(erasure_request(subject), config)
    assert found == [mpids[subject]]
    fulfil.erase(found, config)
    wait_for(api.settled, timeout=120, what="settled after the erasure")

    assert_gone(api, data_dir, subject, mpids[subject])
    others = {n: mpid for n, mpid in mpids.items() if n != subject}
    assert_untouched(api, others)
    assert fulfil.resolve(erasure_request(subject), config) == []
    fulfil.erase([mpids[subject]], config)  # idempotent

    ingest(api, [subject], first_event=1000)  # new data for the same identities: a new profile
    [again] = wait_for(lambda: holders(api, "email", email(subject)), what="the new profile")
    assert int(again["mpid"]) != mpids[subject]
    assert profile_api(api, mpids[subject]).status_code == 404


def test_a_kill_9_of_the_shard_during_erasure_then_erasing_again_leaves_no_trace(platforms, receiver) -> None:
    api, config, data_dir = platform_for(platforms, receiver)
    numbers = list(range(100, 100 + USERS))
    ingest(api, numbers)
    mpids = {n: mpid_of(api, n) for n in numbers}
    subject = numbers[3]
    shard = shard_name(partition_of(mpids[subject], config.runtime.shards))
    wait_for(api.settled, timeout=120, what="settled")

    load = threading.Event()

    def keep_ingesting() -> None:  # other users' batches keep coming while the shard erases and restarts
        round_ = 0
        while not load.is_set():
            round_ += 1
            ingest(api, [n for n in numbers if n != subject][:10], first_event=10_000 + round_ * 10)

    loader = threading.Thread(target=keep_ingesting, daemon=True)
    loader.start()
    outcome: list[BaseException | None] = []

    def erase() -> None:
        try:
            fulfil.erase(fulfil.resolve(erasure_request(subject), config), config)
            outcome.append(None)
        except Exception as error:  # the shard died under it: the DSR actor would run the step again
            outcome.append(error)

    eraser = threading.Thread(target=erase)
    eraser.start()
    kill_9_actor(shard)
    eraser.join(300)
    assert outcome, "the erasure neither finished nor failed"
    print("first erasure:", outcome[0] or "finished before the kill")
    fulfil.erase([mpids[subject]], config)  # again, idempotent: whatever the first one did
    load.set()
    loader.join(120)

    wait_for(api.settled, timeout=180, what="settled after the restart")
    assert_gone(api, data_dir, subject, mpids[subject])
    assert_untouched(api, {n: mpid for n, mpid in mpids.items() if n != subject})
    status = ray.get(handles.dispatcher().status.remote())
    assert status.failing is None  # dispatching goes on: the pause was lifted


VIEWERS = {  # viewed anything within 30 days: every user ingested here
    "id": 1,
    "name": "viewers",
    "criteria": {"event": {"event_type": "custom_event", "event_name": "viewed"}, "count": {"value": 1},
                 "within_days": 30},
    "connected_outputs": [2],
}  # fmt: skip


def audience_bodies(receiver: Any, mpid: int, action: str) -> list[Any]:
    """The membership documents the audience output received that hold `action` for `mpid`."""
    return [
        body
        for body in receiver.bodies()
        if isinstance(body, dict) and body.get("type") == "audience_membership_change_request"
        for profile in body["user_profiles"]
        if profile["mpid"] == str(mpid) and any(a.get("action") == action for a in profile["audiences"])
    ]


def test_an_erased_audience_member_is_dropped_at_the_partner_and_then_leaves_no_bytes(platforms, receiver) -> None:
    audience_output = {"settings": {"url": f"{receiver.base}/audience", "audience_max_age_s": 0.2}}
    outputs = with_outputs(demo_config(receiver.url), {"settings": {"url": receiver.url}}, audience_output)
    config = outputs.model_validate({**outputs.model_dump(mode="python"), "audiences": [VIEWERS]})
    api = platforms(config)
    data_dir = Path(platforms.data_dir)
    now = int(time.time() * 1000)
    numbers = list(range(200, 220))
    ingest(api, numbers, first_event=now - T0)
    mpids = {n: mpid_of(api, n) for n in numbers}
    subject = numbers[5]
    wait_for(lambda: audience_bodies(receiver, mpids[subject], "add"), timeout=120, what="the subject's add")
    wait_for(api.settled, timeout=120, what="settled")

    fulfil.erase(fulfil.resolve(erasure_request(subject), config), config)
    wait_for(lambda: audience_bodies(receiver, mpids[subject], "delete"), timeout=120, what="the subject's drop")
    wait_for(api.settled, timeout=120, what="the drop acknowledged")
    wait_for(lambda: files_holding(data_dir, [email(subject), customer(subject)]) == [], timeout=30,
             what="the compaction after the drop was acknowledged")  # fmt: skip
    assert_gone(api, data_dir, subject, mpids[subject])
    assert_untouched(api, {n: mpid for n, mpid in mpids.items() if n != subject})
    assert not any(audience_bodies(receiver, mpids[n], "delete") for n in numbers if n != subject)
