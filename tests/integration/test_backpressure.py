"""Backpressure: past the intake lag bound and past Serve's queue bound the Events API answers 429 with
Retry-After, writes nothing for the refused requests, and delivers everything it acknowledged."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import ray

from cdp_actors import handles
from cdp_actors.runtime import ensure_runtime
from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import wait_for


def batches(tag: str, n: int) -> list[dict]:
    return [batch(f"{tag}-{i}", [custom("e", 1_700_000_000_000 + i)]) for i in range(n)]


def delivered_ids(receiver) -> set[str]:
    return {body["source_request_id"] for body in receiver.bodies()}


def ids(bodies: list[dict]) -> set[str]:
    return {body["source_request_id"] for body in bodies}


def test_past_the_intake_lag_bound_requests_get_429_and_nothing_is_written(platforms, receiver) -> None:
    config = demo_config(receiver.url, limits={"max_intake_lag_batches": 50})
    api = platforms(config)
    ray.kill(handles.dispatcher(), no_restart=True)  # processing stops: lag grows
    accepted = batches("first", 40) + batches("second", 40)
    assert api.post("/v2/bulkevents", accepted[:40]).status_code == 202
    assert api.post("/v2/bulkevents", accepted[40:]).status_code == 202  # lag 40 < 50: still accepted
    refused = batches("refused", 10)
    reply = api.post("/v2/bulkevents", refused)
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "1"
    assert reply.json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"

    ensure_runtime(config, platforms.data_dir)  # the dispatcher comes back and works the backlog off
    wait_for(lambda: len(receiver.received) >= len(accepted), what="the accepted backlog delivered")
    # Once the backlog is processed the intake accepts again, without anyone reading its status first.
    later = batches("later", 5)
    assert api.post("/v2/bulkevents", later).status_code == 202
    wait_for(lambda: delivered_ids(receiver) >= ids(later), what="the later batches delivered")
    assert delivered_ids(receiver) == ids(accepted) | ids(later)  # the refused batches were never written


def test_past_the_serve_queue_bound_requests_get_429_and_every_acknowledged_batch_is_delivered(
    platform, receiver
) -> None:
    config = demo_config(receiver.url, limits={"max_queued_requests": 1}, runtime={"ingest_max_ongoing_requests": 1})
    api = platform(config)
    requests_ = [batches(f"flood-{r}", 50) for r in range(24)]
    with ThreadPoolExecutor(len(requests_)) as pool:
        replies = list(pool.map(lambda bodies: api.post("/v2/bulkevents", bodies), requests_))
    statuses = [reply.status_code for reply in replies]
    assert set(statuses) == {202, 429}, statuses
    refused = [reply for reply in replies if reply.status_code == 429]
    assert all(reply.headers.get("Retry-After") == "1" for reply in refused)
    # Serve's own refusal (plain text from its ingress) reaches the client in the API's shape
    assert all(reply.headers["Content-Type"] == "application/json" for reply in refused)
    assert {reply.json()["errors"][0]["code"] for reply in refused} == {"TOO_MANY_REQUESTS"}
    assert all("backpressure" in reply.json()["errors"][0]["message"] for reply in refused)  # Serve's, not ours
    acknowledged = set().union(
        *(ids(bodies) for bodies, reply in zip(requests_, replies, strict=True) if reply.status_code == 202)
    )
    wait_for(lambda: delivered_ids(receiver) >= acknowledged and api.settled(), what="every acknowledged batch")
    assert delivered_ids(receiver) == acknowledged
