"""The DSR API's operations on a running platform (real Ray, Serve, local partners): its rate limits over HTTP
(small limits from the workspace's `dsr:` settings), the processor domain and the limits changed through the live
configuration, and an erasure while the webhook partner is down and holds the users' rows: once it recovers, the
erased user's rows never arrive and another user's do."""

from __future__ import annotations

import json
from typing import Any

import ray

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.control.changes import UpdateDsrSettings
from cdp_actors.dsr import fulfil
from cdp_actors.dsr.signing import verify
from tests.conftest import demo_config
from tests.integration.test_dsr_api import call, certificate, new_id, v3_body
from tests.integration.test_dsr_erasure import customer, erasure_request, ingest, mpid_of
from tests.support import Api, Receiver, wait_for

PER_MINUTE, PER_DAY = 6, 3
HOLDING_RETRY = {"max_attempts": 1_000, "base_delay_s": 0.05, "max_delay_s": 0.5, "breaker_max_open_s": 2.0}
"""The partner is held down for a while: retries that never give up (a dropped row would pass the test)."""


def workspace(receiver: Receiver) -> WorkspaceConfig:
    limits = {"waiting_period_s": 3600, "requests_per_minute": PER_MINUTE, "requests_per_day": PER_DAY}
    return demo_config(receiver.url, dsr=limits, retry=HOLDING_RETRY)


def platform_for(platforms: Any, receiver: Receiver) -> Api:
    return platforms(workspace(receiver))


def refused(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 429, answer.text
    assert 1 <= int(answer.headers["Retry-After"]) <= 86_400
    assert answer.headers["X-mp-rate-limit-exceeded"] == "workspace"
    body = answer.json()
    assert body["code"] == 429 and body["errors"][0]["message"] == body["message"]
    return body


def test_rate_limits_and_the_processor_domain_follow_the_live_configuration(platforms, receiver) -> None:
    api = platform_for(platforms, receiver)
    first = new_id()
    for n, rid in enumerate([first, new_id(), new_id()]):  # calls 1-3 of the minute, 1-3 of the day
        answer = call(api, "POST", "/v3/requests", v3_body(rid, f"limit-{n}@example.com", receiver.url))
        assert answer.status_code == 201, answer.text
    daily = refused(call(api, "POST", "/v3/requests", v3_body(new_id(), "limit-3@example.com")))  # call 4
    assert "per day" in daily["message"]
    assert call(api, "GET", "/v3/discovery").status_code == 200  # calls 5, 6: GETs count too
    assert call(api, "GET", f"/v3/requests/{first}").status_code == 200
    minute = refused(call(api, "GET", "/v3/discovery"))
    assert "per 60 s" in minute["message"]

    change = UpdateDsrSettings(fields={"processor_domain": "dsr.example.com", "requests_per_minute": 1_000,
                                       "requests_per_day": PER_DAY + 2})  # fmt: skip
    ray.get(handles.control().apply.remote(change, None, "test_dsr_operations"))
    status = wait_for(lambda: _with_domain(call(api, "GET", f"/v3/requests/{first}"), "dsr.example.com"),
                      timeout=30, what="the new domain and limit in the API's answers")  # fmt: skip
    assert verify(certificate(api), status.content, status.headers["X-OpenDSR-Signature"])
    assert call(api, "DELETE", f"/v3/requests/{first}").status_code == 202
    cancelled = wait_for(lambda: _callback(receiver, first, "cancelled"), timeout=30, what="the cancelled callback")
    assert cancelled.headers["X-OpenDSR-Processor-Domain"] == "dsr.example.com"
    assert call(api, "POST", "/v3/requests", v3_body(new_id(), "limit-4@example.com")).status_code == 201


def _with_domain(answer: Any, domain: str) -> Any:
    return answer if answer.status_code == 200 and answer.headers["X-OpenDSR-Processor-Domain"] == domain else None


def _callback(receiver: Receiver, request_id: str, status: str) -> Any:
    found = [r for r in list(receiver.received)
             if isinstance(r.body, dict) and r.body.get("subject_request_id") == request_id
             and r.body.get("request_status") == status]  # fmt: skip
    return found[0] if found else None


def test_rows_a_forwarder_holds_at_erasure_never_reach_the_partner(platforms, receiver) -> None:
    api = platform_for(platforms, receiver)
    config = workspace(receiver)
    subject, other = 300, 301
    ingest(api, [subject, other])
    mpids = {n: mpid_of(api, n) for n in (subject, other)}
    wait_for(api.settled, timeout=120, what="settled")
    receiver.received.clear()  # from here on: only the rows the forwarder held through the outage
    receiver.always = 503  # the partner is down: what comes next is held by the forwarder, retried
    attempts = receiver.attempts
    ingest(api, [subject, other], first_event=100)
    wait_for(lambda: receiver.attempts >= attempts + 4, timeout=60, what="the partner refusing the users' rows")

    fulfil.erase(fulfil.resolve(erasure_request(subject), config), config)
    discarded = sum(s.discarded_batches for s in ray.get([f.status.remote() for f in handles.forwarders(1)]))
    assert discarded >= 1
    receiver.always = None
    wait_for(lambda: _holding(receiver, customer(other)), timeout=60, what="the other user's held rows delivered")
    wait_for(api.settled, timeout=120, what="settled after the recovery")
    assert not _holding(receiver, customer(subject)) and not _holding(receiver, str(mpids[subject]))


def _holding(receiver: Receiver, value: str) -> bool:
    """Whether a batch the partner accepted holds `value`."""
    return any(value in json.dumps(body) for body in receiver.bodies())
