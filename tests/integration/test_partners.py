"""Every integration through the running platform to local fake partners: one batch in, each partner's
request out; output-side alerts; audience uploads driven through the forwarder's bulk queues.

Exact request bodies per partner are pinned by the unit tests (`tests/unit/test_integration_*.py`);
here the point is that the pipeline routes, screens, expands, retries and alerts for each of them.
"""

from __future__ import annotations

import time
from typing import Any

import ray

from cdp_actors import handles
from cdp_actors.integrations.base import MembershipChange
from tests.conftest import demo_config
from tests.integration.test_forwarding import with_outputs
from tests.samples import batch, custom, event
from tests.support import Receiver, wait_for

FAST_RETRY = {"max_attempts": 2, "base_delay_s": 0.05, "max_delay_s": 0.1, "request_timeout_s": 2}


def partners(base: str, refusing: str) -> list[dict[str, Any]]:
    return [
        {"kind": "mixpanel", "settings": {"project_token": "mp-token", "api_url": f"{base}/mixpanel"}},
        {"kind": "amplitude", "settings": {"api_key": "amp-key", "api_url": f"{base}/amplitude"}},
        {"kind": "braze", "settings": {"api_key": "braze-key", "api_url": f"{base}/braze"}},
        {
            "kind": "facebook_capi",
            "settings": {
                "pixel_id": "123",
                "access_token": "fb-token",
                "action_source": "app",
                "api_url": f"{base}/facebook",
            },
        },
        {
            "kind": "appsflyer",
            "settings": {
                "dev_key": "af-key",
                "android_app_id": "com.example",
                "appsflyer_id_identity": "other",
                "api_url": f"{base}/appsflyer",
            },
        },
        {"kind": "firehose", "settings": {"url": f"{base}/firehose", "api_key": "fh-key"}},
        {"kind": "webhook", "settings": {"url": f"{base}/webhook"}},
        {"kind": "amplitude", "settings": {"api_key": "wrong-key", "api_url": f"{refusing}/amplitude"}},
        {
            "kind": "facebook_audience",
            "settings": {
                "access_token": "fb-token",
                "audience_ids": {"7": "fb-aud-7"},
                "api_url": f"{base}/fb-audiences",
                "bulk_max_age_s": 0.2,
            },
        },
    ]


def test_one_batch_reaches_every_partner_with_alerts_for_what_cannot(platform, receiver) -> None:
    refusing = Receiver(always=401).start()
    try:
        config = with_outputs(demo_config(receiver.url, retry=FAST_RETRY), *partners(receiver.base, refusing.base))
        api = platform(config)  # a config of its own: a new platform, so the forwarder's counts are this test's
        now = int(time.time() * 1000)
        purchase = {
            "product_action": {
                "action": "purchase",
                "transaction_id": "t-9",
                "total_amount": 20.0,
                "products": [{"id": "a", "price": 5.0, "quantity": 2}, {"id": "b", "price": 10.0, "quantity": 1}],
            },
            "currency_code": "EUR",
        }
        body = batch(
            "partner-user",
            [custom("Played", now), event("commerce_event", now, **purchase)],
            user_identities={"customer_id": "partner-user", "email": "p@x.io", "other": "af-id-1"},
            device_info={
                "platform": "Android",
                "android_advertising_id": "gaid-1",
                "android_uuid": "android-1",
                "os_version": "14",
            },
            application_info={"package": "com.example", "application_version": "1.0"},
            consent_state={"gdpr": {"marketing": {"consented": True, "timestamp_unixtime_ms": now}}},
            ip="203.0.113.9",
        )
        assert api.post("/v2/events", body).status_code == 202
        unnamed = batch("partner-user", [{"event_type": "screen_view", "data": {"timestamp_unixtime_ms": now}}])
        assert api.post("/v2/events", unnamed).status_code == 202

        def paths() -> set[str]:
            return {r.path.split("/")[1] for r in receiver.received}

        wanted = {"mixpanel", "amplitude", "braze", "facebook", "appsflyer", "firehose", "webhook"}
        wait_for(lambda: paths() >= wanted and api.settled(), what=f"a request at every partner ({wanted})")
        requests = {name: [r for r in receiver.received if r.path.split("/")[1] == name] for name in wanted}
        mixpanel_events = [e for r in requests["mixpanel"] if r.path.endswith("/track") for e in r.body]
        assert {e["event"] for e in mixpanel_events} >= {
            "Played",
            "eCommerce - purchase - Item",
            "eCommerce - purchase - Total",
            "Consent Given",
        }
        amplitude = [e for r in requests["amplitude"] for e in r.body["events"]]
        assert {e["event_type"] for e in amplitude} >= {"Played", "Consent Given"}
        assert requests["braze"][0].headers["Authorization"] == "Bearer braze-key"
        assert len(requests["braze"][0].body["purchases"]) == 2  # one Braze purchase per product
        facebook = [e for r in requests["facebook"] for e in r.body["data"]]
        assert any(e["event_name"] == "Purchase" for e in facebook)
        assert all(len(e["user_data"]["em"][0]) == 64 for e in facebook)  # hashed email
        assert all(r.headers["authentication"] == "af-key" for r in requests["appsflyer"])
        assert requests["firehose"][0].body["type"] == "event_processing_request"
        webhook = requests["webhook"][0].body
        assert webhook["system_notifications"][0]["type"] == "gdpr_change"

        alerts = {(t["type"], t["severity"]) for c in api.get("/cdp/alerts").json()["connections"] for t in c["types"]}
        assert ("Invalid Credentials", "Fatal") in alerts  # the partner answering 401
        assert ("Missing Event Name", "Fatal") in alerts  # the unnamed screen view, refused before any HTTP
        # Event types an output does not take are counted by output, not sent: the five identity changes the
        # first batch makes (customer_id, email, other, two device IDs) everywhere but the webhook (7), which
        # takes every type, and Firehose (6), which takes user identities' changes but not devices'; the screen
        # view where Facebook CAPI (4) and AppsFlyer (5) take none (the others refuse it: no name).
        assert api.status()["forwarders"][0]["skipped_events"] == {
            **{f"{output}:user_identity_change": 5 for output in (1, 2, 3, 4, 5, 8)},
            "6:user_identity_change": 2,
            "4:screen_view": 1,
            "5:screen_view": 1,
        }

        forwarder = handles.forwarder(0)
        audience_output = len(partners("", ""))
        changes = [
            MembershipChange(7, "Buyers", 1000 + n, "add" if n % 3 else "delete", {"email": f"member-{n}@x.io"}, now)
            for n in range(30)
        ]
        assert ray.get(forwarder.deliver_memberships.remote(audience_output, changes)) == []
        wait_for(
            lambda: len([r for r in receiver.received if r.path.startswith("/fb-audiences")]) == 2,
            what="adds and deletes, uploaded once the queue's age limit passed",
        )
        uploads = [r for r in receiver.received if r.path.startswith("/fb-audiences")]
        assert {r.method for r in uploads} == {"POST", "DELETE"}
        assert sum(len(r.body["payload"]["data"]) for r in uploads) == 30
    finally:
        refusing.stop()
