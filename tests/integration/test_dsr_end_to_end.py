"""One data subject request of each type, end to end over HTTP: a user's data goes in through the Events API, a
v3 request with `skip_waiting_period` is submitted, and the request completes (its steps are `fulfil.resolve`,
`forward`, `erase` and `export`): an erasure leaves no profile behind, an access request's results URL serves the
profile as JSON, a portability request's as a zip.

These need the fulfilment steps of the erasure and export branches: on the DSR branch alone those raise
NotImplementedError, the requests stay in progress and these tests fail by timing out."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
import ray
import requests

from cdp_actors import handles
from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import DEMO_AUTH, Api, Receiver, wait_for

COMPLETION_S = 120.0


@pytest.fixture
def api(platform: Callable[..., Api], receiver: Receiver) -> Api:
    return platform(demo_config(receiver.url, dsr={"waiting_period_s": 0}))


def known_user(api: Api, customer: str) -> int:
    body = batch(customer, [custom("Bought", 1_700_000_000_000)], user_attributes={"tier": "gold"})
    assert api.post("/v2/events", body).status_code == 202
    return int(wait_for(lambda: _search(api, customer), what=f"{customer}'s profile"))


def _search(api: Api, customer: str) -> str | None:
    answer = api.post("/v1/search", {"environment": "production", "known_identities": {"customerid": customer}})
    return answer.json()["mpid"] if answer.status_code == 200 else None


def submit(api: Api, kind: str, customer: str) -> str:
    rid = str(uuid.uuid4())
    body: dict[str, Any] = {
        "regulation": "gdpr", "subject_request_id": rid, "subject_request_type": kind,
        "submitted_time": "2026-01-01T00:00:00Z", "api_version": "3.0",
        "subject_identities": {"controller_customer_id": {"value": customer, "encoding": "raw"}},
        "extensions": {"opendsr.mparticle.com": {"skip_waiting_period": True}},
    }  # fmt: skip
    assert api.post("/v3/requests", body).status_code == 201
    return rid


def completed(api: Api, rid: str) -> dict[str, Any]:
    def status() -> dict[str, Any] | None:
        ray.get(handles.dsr().tick.remote(int(time.time() * 1000)))
        body = requests.get(f"{api.base}/v3/requests/{rid}", headers={"Authorization": DEMO_AUTH}, timeout=30).json()
        return body if body["request_status"] == "completed" else None

    return wait_for(status, timeout=COMPLETION_S, interval=0.5, what=f"request {rid} completed")


def results(url: str) -> requests.Response:
    return requests.get(url, headers={"Authorization": DEMO_AUTH}, timeout=30)


def test_erasure_removes_the_profile(api: Api):
    customer = f"dsr-e2e-erase-{uuid.uuid4().hex[:8]}"
    mpid = known_user(api, customer)
    done = completed(api, submit(api, "erasure", customer))
    assert done.get("results_url") is None
    assert _search(api, customer) is None
    assert api.get(f"/cdp/users/{mpid}").status_code == 404


def test_access_serves_the_profile_as_json(api: Api):
    customer = f"dsr-e2e-access-{uuid.uuid4().hex[:8]}"
    known_user(api, customer)
    done = completed(api, submit(api, "access", customer))
    assert done["results_count"] >= 1
    answer = results(done["results_url"])
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert customer in json.dumps(answer.json())


def test_portability_serves_a_zip(api: Api):
    customer = f"dsr-e2e-port-{uuid.uuid4().hex[:8]}"
    known_user(api, customer)
    done = completed(api, submit(api, "portability", customer))
    answer = results(done["results_url"])
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert any(customer.encode() in archive.read(name) for name in archive.namelist())
