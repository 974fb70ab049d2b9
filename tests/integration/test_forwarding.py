"""Connection settings, isolation between outputs, and the forwarding and activity reports, over HTTP."""

from __future__ import annotations

import time
from typing import Any

from cdp_actors.config import WorkspaceConfig
from tests.conftest import demo_config
from tests.samples import batch, custom, event
from tests.support import Receiver, wait_for

FAST_RETRY = {"max_attempts": 1000, "base_delay_s": 0.05, "max_delay_s": 0.2, "request_timeout_s": 1}
CONSENTED = {"gdpr": {"marketing": {"consented": True, "timestamp_unixtime_ms": 1}}}


def with_outputs(config: WorkspaceConfig, *outputs: dict[str, Any]) -> WorkspaceConfig:
    """The demo config with these outputs instead of its own, each but audience outputs connected to input 1."""
    data = config.model_dump(mode="python")
    data["inputs"][0]["secret"] = "demo-secret"
    data["outputs"] = [
        {
            "id": n,
            "name": f"out-{n}",
            "kind": o.get("kind", "webhook"),
            "settings": o["settings"],
            "new_data_points": o.get("new_data_points", "forward"),
        }
        for n, o in enumerate(outputs, start=1)
    ]
    data["connections"] = [
        {"id": n, "name": f"conn-{n}", "input": 1, "output": n, **o.get("connection", {})}
        for n, o in enumerate(outputs, start=1)
        if not o.get("kind", "").endswith("_audience")
    ]
    data["api_clients"] = [
        {"client_id": "demo-admin", "client_secret": "demo-admin-secret", "api": "platform", "role": "admin"},
        {"client_id": "demo-client", "client_secret": "demo-client-secret"},
    ]
    return WorkspaceConfig.model_validate(data)


def test_connection_filters_rules_and_sampling_and_the_reports(platform, receiver) -> None:
    rules = {
        "filters": {"event_types": {"screen_view": False}},
        "rules": [{"on": "gdpr", "name": "marketing", "action": "only_forward"}],
    }
    config = with_outputs(
        demo_config(receiver.url),
        {"settings": {"url": f"{receiver.base}/consented"}, "connection": rules},
        {"settings": {"url": f"{receiver.base}/sampled-out"}, "connection": {"sample_percent": 0}},
        {"settings": {"url": f"{receiver.base}/all"}},
    )
    api = platform(config)  # a config of its own: a new platform, so the counts and reports below are this test's
    now = int(time.time() * 1000)
    purchase = {
        "product_action": {"action": "purchase", "total_amount": 12.5, "products": [{"id": "p", "price": 12.5}]}
    }
    consented = batch(
        "fwd-1",
        [
            custom("Played", now),
            event("screen_view", now, screen_name="Home"),
            event("session_start", now),
            event("commerce_event", now, **purchase),
        ],
        consent_state=CONSENTED,
    )
    unconsented = batch("fwd-2", [custom("Played", now)])
    assert api.post("/v2/bulkevents", [consented, unconsented]).status_code == 202
    wait_for(
        lambda: api.settled() and len([r for r in receiver.received if r.path == "/all"]) == 2,
        what="both batches at the unfiltered output",
    )

    by_path = {path: [r.body for r in receiver.received if r.path == path] for path in ("/consented", "/sampled-out")}
    assert by_path["/sampled-out"] == []
    (only,) = by_path["/consented"]
    assert [e["event_type"] for e in only["events"]] == [
        "custom_event",
        "session_start",
        "commerce_event",
        "user_identity_change",
    ]
    screened = api.status()["forwarders"][0]["screened_out_batches"]
    assert screened == 3  # fwd-2 at /consented, both at /sampled-out (a config of its own: counted from zero)

    def forwarding() -> dict[str, Any]:
        return api.get("/cdp/reports/forwarding").json()

    report = wait_for(lambda: forwarding() if forwarding()["outbound"] else None, what="outbound counts")
    inbound = report["inbound"]
    assert inbound["events"] == 5 and inbound["message_types"] == {
        "custom_event": 2,
        "screen_view": 1,
        "session_start": 1,
        "commerce_event": 1,
    }
    assert inbound["event_names"] == {"Played": 2, "Home": 1}
    outbound = {o["output"]: o["events"] for o in report["outbound"]}
    assert outbound.get("out-1") == 4 and "out-2" not in outbound and outbound.get("out-3") == 7
    assert api.get("/cdp/reports/forwarding", hour=25).status_code == 400

    today = api.get("/cdp/reports/activity").json()["days"][-1]
    assert (today["events_received"], today["sessions"], today["revenue"]) == (5, 1, 12.5)
    assert today["events_forwarded"] == 11 and today["active_users"] == 2 and today["fatal_alerts"] == 0
    assert api.get("/cdp/reports/activity", environment="development").json()["days"][-1]["events_received"] == 0


def test_a_hanging_partner_does_not_hold_up_the_others(platform, receiver) -> None:
    hanging = Receiver(delay_s=3).start()  # answers only after the 1 s request timeout
    try:
        config = with_outputs(
            demo_config(receiver.url, retry=FAST_RETRY),
            {"settings": {"url": receiver.url}},
            {"settings": {"url": hanging.url}},
        )
        api = platform(config)
        for start in range(0, 60, 20):
            bodies = [batch(f"hang-{n}", [custom("x", n)]) for n in range(start, start + 20)]
            assert api.post("/v2/bulkevents", bodies).status_code == 202
        wait_for(lambda: len(receiver.received) == 60, timeout=60, what="every batch at the healthy output")
        assert hanging.received == []
        breakers = wait_for(
            lambda: (
                api.status()["forwarders"][0]["breakers"]["2"] != "closed" and api.status()["forwarders"][0]["breakers"]
            ),
            what="the hanging output's breaker to open",
        )
        assert breakers["1"] == "closed"
    finally:
        hanging.stop()


def customer_of(body: Any) -> str | None:
    """The customer ID of a delivered batch (None for anything else, e.g. a combined array)."""
    if not isinstance(body, dict):
        return None
    return next((i["identity"] for i in body.get("user_identities", []) if i["identity_type"] == "customer_id"), None)


def names_of(body: dict[str, Any]) -> list[str]:
    return [e["data"]["event_name"] for e in body["events"] if e["event_type"] == "custom_event"]


def test_a_user_whose_batches_a_partner_refuses_does_not_hold_up_other_users(platform, receiver) -> None:
    """README, "Per-user order": other users are not held up by a failing one. The partner answers 503 to one
    user's data only; the other users' batches arrive while that user's first batch is retried, and its second
    waits behind it (per-user order) until the partner takes them both."""
    api = platform(demo_config(receiver.url, retry=FAST_RETRY))  # retries never run out within the test
    receiver.refuse_when = lambda body: customer_of(body) == "stuck"
    others = [f"free-{n}" for n in range(10)]
    bodies = [batch(user, [custom(f"{user}/{k}", k)]) for k in (1, 2) for user in ["stuck", *others]]
    assert api.post("/v2/bulkevents", bodies).status_code == 202

    def delivered(user: str) -> list[list[str]]:
        return [names_of(r.body) for r in list(receiver.received) if customer_of(r.body) == user]

    wait_for(lambda: all(len(delivered(user)) == 2 for user in others), what="every other user's two batches")
    wait_for(lambda: len(receiver.refused) >= 3, what="the refused user's batch retried")
    assert all(delivered(user) == [[f"{user}/1"], [f"{user}/2"]] for user in others)
    assert delivered("stuck") == []
    assert {tuple(names_of(body)) for body in list(receiver.refused)} == {("stuck/1",)}  # its second waits

    receiver.refuse_when = None  # the partner takes the user's data again: both batches arrive, in order
    wait_for(lambda: len(delivered("stuck")) == 2, what="the refused user's batches once the partner takes them")
    assert delivered("stuck") == [["stuck/1"], ["stuck/2"]]
