"""Opt-out events and GPC signals end to end: real platform, recording partners. "Not delivered" is proven by order:
one user's deliveries to one connection leave in acceptance order, so once the user's later batch has arrived, an
earlier one that is missing was withheld."""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from cdp_actors.config import WorkspaceConfig
from tests.conftest import demo_config
from tests.integration.test_forwarding import with_outputs
from tests.samples import batch, custom, event
from tests.support import DEMO_AUTH, Api, Receiver, wait_for

NOT_SOLD = {"rules": [{"on": "ccpa_data_sale_opt_out", "action": "do_not_forward"}]}


def config_for(receiver: Receiver) -> WorkspaceConfig:
    """Two outputs: everything, and a connection whose consent rule withholds users who opted out of data sale."""
    return with_outputs(
        demo_config(receiver.url),
        {"settings": {"url": f"{receiver.base}/all"}},
        {"settings": {"url": f"{receiver.base}/not-sold"}, "connection": NOT_SOLD},
    )


def names_at(receiver: Receiver, path: str, customer_id: str) -> list[str]:
    """The custom event names delivered to `path` for one user, in arrival order."""
    return [
        e["data"]["event_name"]
        for r in list(receiver.received)
        if r.path == path and _customer(r.body) == customer_id
        for e in r.body["events"]
        if e["event_type"] == "custom_event"
    ]


def _customer(body: dict[str, Any]) -> str | None:
    return next((i["identity"] for i in body["user_identities"] if i["identity_type"] == "customer_id"), None)


def delivered(receiver: Receiver, path: str, customer_id: str, name: str) -> dict[str, Any] | None:
    return next(
        (
            r.body
            for r in list(receiver.received)
            if r.path == path and _customer(r.body) == customer_id and name in names_at_body(r.body)
        ),
        None,
    )


def names_at_body(body: dict[str, Any]) -> list[str]:
    return [e["data"].get("event_name") for e in body["events"] if e["event_type"] == "custom_event"]


def opt_out(flag: bool, ts: int) -> dict[str, Any]:
    return event("opt_out", ts, is_opted_out=flag)


def post_with_gpc(api: Api, path: str, body: Any) -> requests.Response:
    headers = {"Content-Type": "application/json", "Authorization": DEMO_AUTH, "Sec-GPC": "1"}
    return api.http.post(api.base + path, data=json.dumps(body).encode(), headers=headers, timeout=30)


def test_an_opted_out_user_reaches_no_output_until_opted_back_in(platform, receiver) -> None:
    api = platform(config_for(receiver))
    now = int(time.time() * 1000)
    assert api.post("/v2/events", batch("oo-a", [custom("First", now)])).status_code == 202
    first = wait_for(lambda: delivered(receiver, "/all", "oo-a", "First"), what="the user's first batch")
    mpid = first["mpid"]

    opting_out = [custom("Before", now + 1), opt_out(True, now + 2), custom("After", now + 3)]
    assert api.post("/v2/events", batch("oo-a", opting_out)).status_code == 202
    assert api.post("/v2/bulkevents", [batch("oo-a", [custom("While", now + 4)])]).status_code == 202
    assert api.post("/v2/events", batch("oo-b", [custom("Other", now + 4)])).status_code == 202
    wait_for(lambda: delivered(receiver, "/all", "oo-b", "Other"), what="another user's batch meanwhile")
    shown = api.get(f"/cdp/users/{mpid}").json()["opt_out"]
    assert shown == {"is_opted_out": True, "timestamp_unixtime_ms": now + 2}

    assert api.post("/v2/events", batch("oo-a", [opt_out(False, now + 5), custom("Back", now + 6)])).status_code == 202
    for path in ("/all", "/not-sold"):
        wait_for(lambda path=path: delivered(receiver, path, "oo-a", "Back"), what=f"the opt-in batch at {path}")
        assert names_at(receiver, path, "oo-a") == ["First", "Back"]  # nothing between, though accepted before it
    assert api.get(f"/cdp/users/{mpid}").json()["opt_out"]["is_opted_out"] is False
    assert api.get(f"/cdp/users/{mpid}").json()["events"] == 7  # stored all the same

    withheld = api.get("/cdp/reports/forwarding").json()["withheld_opted_out"]
    assert {w["output"]: w["events"] for w in withheld} == {"out-1": 4, "out-2": 4}  # 3 + 1 events, each output


def test_sec_gpc_records_the_ccpa_opt_out_that_a_consent_rule_acts_on(platform, receiver) -> None:
    api = platform(config_for(receiver))
    now = int(time.time() * 1000)
    assert api.post("/v2/events", batch("gpc-u", [custom("Pre", now)])).status_code == 202
    assert post_with_gpc(api, "/v2/bulkevents", [batch("gpc-u", [custom("Signalled", now + 1)])]).status_code == 202
    signalled = wait_for(lambda: delivered(receiver, "/all", "gpc-u", "Signalled"), what="the GPC batch at /all")
    ccpa = signalled["consent_state"]["ccpa"]["data_sale_opt_out"]
    assert (ccpa["consented"], ccpa["document"], ccpa["timestamp_unixtime_ms"]) == (True, "gpc", now + 1)
    assert "gpc" not in signalled  # the flag became the consent state; partners get that
    stored = api.get(f"/cdp/users/{signalled['mpid']}").json()["consent"]["ccpa"]["data_sale_opt_out"]
    assert stored["document"] == "gpc" and stored["consented"] is True

    assert post_with_gpc(api, "/v2/events", batch("gpc-u", [custom("Again", now + 2)])).status_code == 202
    sale_allowed = {"ccpa": {"data_sale_opt_out": {"consented": False, "timestamp_unixtime_ms": now + 3}}}
    later = batch("gpc-u", [custom("Allowed", now + 3)], consent_state=sale_allowed)
    assert api.post("/v2/events", later).status_code == 202
    wait_for(lambda: delivered(receiver, "/not-sold", "gpc-u", "Allowed"), what="the batch after the user allowed sale")
    assert names_at(receiver, "/not-sold", "gpc-u") == ["Pre", "Allowed"]  # the GPC batches were withheld
    wait_for(lambda: delivered(receiver, "/all", "gpc-u", "Allowed"), what="every batch at /all")
    assert names_at(receiver, "/all", "gpc-u") == ["Pre", "Signalled", "Again", "Allowed"]
