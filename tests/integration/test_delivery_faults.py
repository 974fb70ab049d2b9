"""Delivery faults over HTTP, through the running platform to real local partners (issue 13, points 3 and 4): a
giant application version does not stall its user's lane, `Retry-After: inf` waits only `retry.max_delay_s`, a
partner's redirect is not followed, and a partner credential in a URL never reaches `/cdp/alerts` or a log."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.conftest import demo_config
from tests.integration.test_delivery import alert_counts, new_alerts
from tests.integration.test_forwarding import with_outputs
from tests.samples import batch, custom
from tests.support import Api, Receiver, free_port, wait_for

FAST_RETRY = {"max_attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.5, "request_timeout_s": 2}
GIANT_DIGITS = "9" * 4_301  # one past Python's limit for int("...")
TOKEN = "SECRET-TOKEN-123"


def summed_alerts(api: Api) -> Counter:
    """Alert counts by (type, severity), summed over connections."""
    counts: Counter = Counter()
    for connection in api.get("/cdp/alerts").json()["connections"]:
        counts.update({(kind["type"], kind["severity"]): kind["count"] for kind in connection["types"]})
    return counts


def delivered_batches(api: Api) -> int:
    return sum(forwarder["delivered_batches"] for forwarder in api.status()["forwarders"])


def test_a_giant_application_version_does_not_stall_its_users_lane(platform, receiver) -> None:
    config = demo_config(receiver.url, retry=FAST_RETRY)
    connection = config.connections[0].model_copy(update={"min_app_version": "1.2"})
    api = platform(config.model_copy(update={"connections": [connection]}))
    before = alert_counts(api)
    now = int(time.time() * 1000)
    versions = [f"1.{GIANT_DIGITS}", f"0.{GIANT_DIGITS}", "1.5"]  # above the floor, below it, a plain one
    bodies = [
        batch("giant-version", [custom(f"v{n}", now)], application_info={"application_version": version})
        for n, version in enumerate(versions)
    ]
    for body in bodies:  # one at a time: the user's lane holds them in this order
        assert api.post("/v2/events", body).status_code == 202
    wait_for(lambda: len(receiver.received) == 2 and api.settled(), timeout=30, what="the user's lane drained")
    assert [r.body["events"][0]["data"]["event_name"] for r in receiver.received] == ["v0", "v2"]
    assert [r.body["application_info"]["application_version"] for r in receiver.received] == [versions[0], "1.5"]
    assert new_alerts(api, before) == {}


def test_retry_after_inf_waits_only_max_delay_s(platform, receiver) -> None:
    receiver.script, receiver.retry_after = [429], "inf"
    api = platform(demo_config(receiver.url, retry=FAST_RETRY))
    before = alert_counts(api)
    assert api.post("/v2/events", batch("retry-after-inf", [custom("x", int(time.time() * 1000))])).status_code == 202
    wait_for(lambda: receiver.received and api.settled(), timeout=10, what="delivery after Retry-After: inf")
    first, second = receiver.attempt_times
    assert 0.4 <= second - first < 3  # max_delay_s (0.5 s), neither for ever nor the 0.05 s backoff
    assert new_alerts(api, before) == {("429-Too Many Requests", "Warning"): 1}


def test_a_partners_redirect_is_not_followed(platform, receiver) -> None:
    target = Receiver().start()
    try:
        receiver.always, receiver.redirect_to = 302, f"{target.base}/internal?from=redirect"
        api = platform(demo_config(receiver.url, retry=FAST_RETRY))
        before, delivered = alert_counts(api), delivered_batches(api)
        assert api.post("/v2/events", batch("redirected", [custom("x", int(time.time() * 1000))])).status_code == 202
        wait_for(lambda: receiver.attempts and api.settled(), what="the batch dropped")
        wait_for(lambda: new_alerts(api, before) == {("302-Found", "Fatal"): 1}, what="a Fatal 302 alert")
        assert (receiver.attempts, target.attempts, delivered_batches(api) - delivered) == (1, 0, 0)
        (connection,) = api.get("/cdp/alerts").json()["connections"]
        (kind,) = [t for t in connection["types"] if t["type"] == "302-Found"]
        assert "HTTP 302 (redirects are not followed)" in kind["latest_message"]
    finally:
        target.stop()


def ray_log_text() -> str:
    """Everything the Ray processes of this session (the platform's actors among them) have logged so far."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    return "".join(path.read_text(errors="replace") for path in logs.rglob("*") if path.is_file())


def logged_delivery_failures() -> str:
    """The Ray processes' logs once the forwarder's lines about failed deliveries are in them, else ""."""
    text = ray_log_text()
    return text if "delivery failed" in text else ""


def test_a_partner_credential_in_a_url_is_in_no_alert_and_no_log(platform, receiver) -> None:
    refused = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    invalid = "http://127.0.0.1:99999"  # an invalid URL: aiohttp's error text is the whole URL, token included
    outputs = [
        {"kind": "facebook_capi", "settings": {"pixel_id": "123", "access_token": TOKEN, "api_url": url}}
        for url in (refused, invalid)
    ]
    api = platform(with_outputs(demo_config(receiver.url, retry={**FAST_RETRY, "max_attempts": 2}), *outputs))
    assert summed_alerts(api) == Counter()  # a new platform, its own alert store
    body = batch("leaky", [custom("Played", int(time.time() * 1000))], user_identities={"email": "leak@x.io"})
    assert api.post("/v2/events", body).status_code == 202
    expected = {("306-Unknown", "Warning"): 2, ("Retry Count Exceeded", "Fatal"): 2}
    wait_for(lambda: summed_alerts(api) == expected and api.settled(), what="both outputs' alerts")
    alerts = api.get("/cdp/alerts").text
    assert "InvalidUrlClientError" in alerts and "access_token=***" in alerts  # the URL-bearing error, redacted
    assert TOKEN not in alerts
    logs = wait_for(logged_delivery_failures, what="the forwarder's log lines about the failures")
    assert TOKEN not in logs
