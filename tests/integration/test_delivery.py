"""Retries and alerts against a real local receiver that fails on demand."""

from __future__ import annotations

from collections import Counter

from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import Api, free_port, wait_for

FAST_RETRY = {"max_attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.2, "request_timeout_s": 2}


def alert_counts(api: Api, **params) -> Counter:
    connections = api.get("/cdp/alerts", **params).json()["connections"]
    return Counter({(t["type"], t["severity"]): t["count"] for c in connections for t in c["types"]})


def new_alerts(api: Api, before: Counter) -> dict:
    """Alerts raised since `before` was read (the alert store outlives a single test)."""
    return dict(alert_counts(api) - before)


def test_503_twice_then_200_is_delivered_once_with_warning_alerts(platform, receiver) -> None:
    receiver.script = [503, 503]
    api = platform(demo_config(receiver.url, retry=FAST_RETRY))
    before = alert_counts(api)
    assert api.post("/v2/events", batch("retry", [custom("x", 1)])).status_code == 202
    wait_for(lambda: receiver.received and api.settled(), what="delivery after retries")
    assert receiver.attempts == 3 and len(receiver.received) == 1
    wait_for(lambda: new_alerts(api, before) == {("503-Service Unavailable", "Warning"): 2}, what="two warnings")
    connection = api.get("/cdp/alerts").json()["connections"][0]
    assert connection["connection"] == "demo-server → demo-webhook" and connection["output"] == "demo-webhook"
    kind = next(t for t in connection["types"] if t["type"] == "503-Service Unavailable")
    assert [(i["input_id"], i["input"]) for i in kind["inputs"]] == [(1, "demo-server")]
    assert "HTTP 503" in kind["latest_message"]
    assert alert_counts(api, environment="development") == Counter()
    assert alert_counts(api, since="2100-01-01T00:00:00Z", until="2100-01-02T00:00:00Z") == Counter()
    assert api.get("/cdp/alerts", since="yesterday").status_code == 400


def test_400_is_not_retried_and_is_fatal(platform, receiver) -> None:
    receiver.always = 400
    api = platform(demo_config(receiver.url, retry=FAST_RETRY))
    before = alert_counts(api)
    assert api.post("/v2/events", batch("bad", [custom("x", 1)])).status_code == 202
    wait_for(lambda: receiver.attempts and api.settled(), what="the batch dropped")
    assert receiver.attempts == 1
    wait_for(lambda: new_alerts(api, before) == {("400-Bad Request", "Fatal"): 1}, what="a fatal alert")


def test_429_retry_after_is_honoured_and_a_failing_output_does_not_block_ingest(platform, receiver) -> None:
    receiver.script = [429]
    receiver.retry_after = "1"
    api = platform(demo_config(receiver.url, retry={**FAST_RETRY, "max_delay_s": 2}))  # Retry-After is capped by it
    before = alert_counts(api)
    assert api.post("/v2/events", batch("slow", [custom("x", 1)])).status_code == 202
    for n in range(5):
        assert api.post("/v2/events", batch(f"other-{n}", [custom("y", 1)])).status_code == 202
    wait_for(lambda: len(receiver.received) == 6 and api.settled(), what="all six delivered")
    assert new_alerts(api, before) == {("429-Too Many Requests", "Warning"): 1}
    first, last = receiver.attempt_times[0], max(receiver.attempt_times)
    assert last - first >= 0.9  # Retry-After: 1 beats the 0.05 s backoff


def test_an_output_down_past_the_limit_raises_retry_count_exceeded(platform) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/webhook"
    api = platform(demo_config(nowhere, retry=FAST_RETRY))
    before = alert_counts(api)
    assert api.post("/v2/bulkevents", [batch(f"down-{n}", [custom("x", 1)]) for n in range(2)]).status_code == 202
    wait_for(api.settled, what="both batches dropped")
    expected = {("306-Unknown", "Warning"): 4, ("Retry Count Exceeded", "Fatal"): 2}
    wait_for(lambda: new_alerts(api, before) == expected, what="retry alerts")


def test_batches_held_past_the_max_age_by_a_dead_output_are_dropped_with_a_fatal_alert(platform) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/webhook"
    api = platform(demo_config(nowhere, retry={**FAST_RETRY, "max_attempts": 10_000, "max_age_s": 2}))
    before = alert_counts(api)
    assert api.post("/v2/bulkevents", [batch(f"aged-{n}", [custom("x", 1)]) for n in range(30)]).status_code == 202
    wait_for(api.settled, timeout=60, what="every batch dropped once past its max age")  # the outbox stays bounded
    assert new_alerts(api, before).get(("Retry Count Exceeded", "Fatal")) == 30


def test_a_dead_output_does_not_hold_up_a_healthy_one(platform, receiver) -> None:
    config = demo_config(receiver.url, retry={**FAST_RETRY, "max_attempts": 1000}, runtime={"forwarder_window": 4})
    dead = config.outputs[0].model_copy(
        update={
            "id": 2,
            "name": "dead-webhook",
            "settings": config.outputs[0].settings.model_copy(update={"url": f"http://127.0.0.1:{free_port()}/x"}),
        }
    )
    second = config.connections[0].model_copy(update={"id": 2, "name": "to the dead one", "output": 2})
    api = platform(
        config.model_copy(update={"outputs": [*config.outputs, dead], "connections": [*config.connections, second]})
    )
    before = alert_counts(api)
    for start in range(0, 40, 20):
        bodies = [batch(f"iso-{n}", [custom("x", n)]) for n in range(start, start + 20)]
        assert api.post("/v2/bulkevents", bodies).status_code == 202
    wait_for(lambda: len(receiver.received) == 40, what="every batch at the healthy output")
    # The dead output's attempts are Warnings (their number depends on timing: retries, then the breaker's
    # probes) and nothing else: no retries are spent (no Fatal), the healthy output raises nothing.
    wait_for(lambda: set(new_alerts(api, before)) == {("306-Unknown", "Warning")}, what="the dead output's warnings")
    wait_for(
        lambda: sum(shard["outbox"] for shard in api.status()["shards"]) == 40,
        what="only the dead output's rows left in the outbox (acks are batched)",
    )
