"""Data subject requests against a running platform: data ingested through `/v2/bulkevents`, then `fulfil.export`
and `fulfil.forward` called from the test process (the Ray driver) with a `DsrRequest` built here, as the DSR actor
calls them; the partners are one local server recording what each was sent."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from typing import Any

from cdp_actors.config import WorkspaceConfig
from cdp_actors.dsr import fulfil
from cdp_actors.dsr.export import DOCUMENT_NAME, EVENTS_NAME
from cdp_actors.dsr.model import DsrRequest
from tests import samples
from tests.samples import batch, custom
from tests.support import Api, Receiver, wait_for
from tests.unit.test_dsr_forward_partners import FAST_RETRY, SECRETS, partner_outputs, workspace

REQUEST_ID = "b7551968-d5d6-44b2-9831-815ac9017798"
CONSENT = {"gdpr": {"marketing": {"consented": True, "timestamp_unixtime_ms": 1_700_000_000_000}}}


def partners_config(receiver: Receiver) -> WorkspaceConfig:
    """Firehose, Braze, Amplitude and Mixpanel outputs on input 1, events and deletions alike at `receiver`."""
    outputs = partner_outputs(receiver.base)
    outputs[2]["settings"]["api_url"] = f"{receiver.base}/amplitude-events"
    outputs[3]["settings"]["api_url"] = f"{receiver.base}/mixpanel-events"
    return workspace(*outputs, retry=FAST_RETRY)


def dsr_request(kind: str, customer: str) -> DsrRequest:
    return samples.dsr_request(REQUEST_ID, kind, customer, int(time.time() * 1000))


def ingested_mpid(api: Api, customer: str) -> int:
    def found() -> Any:
        users = api.get("/cdp/users/search", identity_type="customer_id", value=customer).json()["users"]
        return users[0]["mpid"] if users and api.settled() else None

    return wait_for(found, what=f"{customer}'s profile")


def ingest(api: Api) -> tuple[int, int]:
    now = int(time.time() * 1000)
    jane = batch(
        "dsr-jane",
        [custom("Played", now - 2000, song="x"), custom("Paused", now - 1000)],
        user_attributes={"plan": "gold"},
        consent_state=CONSENT,
        device_info={"ios_idfv": "11111111-2222-4333-8444-555555555555"},
    )
    jane["user_identities"]["email"] = "jane@example.com"
    john = batch("dsr-john", [custom("Skipped", now - 500)])
    assert api.post("/v2/bulkevents", [jane, john]).status_code == 202
    return ingested_mpid(api, "dsr-jane"), ingested_mpid(api, "dsr-john")


def dsr_requests(receiver: Receiver) -> dict[str, list[Any]]:
    """What each partner's deletion or retrieval endpoint (and Firehose's DSR messages) received, by partner."""
    by_partner: dict[str, list[Any]] = {}
    for r in list(receiver.received):
        is_firehose_dsr = r.path == "/firehose" and r.body.get("type") == "dsr_processing_request"
        if is_firehose_dsr or "delet" in r.path or "retriev" in r.path:
            by_partner.setdefault(r.path.split("/")[1], []).append(r)
    return by_partner


def test_export_and_forward_of_an_ingested_user(platform, receiver) -> None:
    config = partners_config(receiver)
    api = platform(config)
    jane, john = ingest(api)

    access = fulfil.export(dsr_request("access", "dsr-jane"), [jane], config)
    assert access is not None
    (profile,) = json.loads(access)["profiles"]
    assert profile["mpid"] == jane
    assert profile["user_identities"] == {"customer_id": "dsr-jane", "email": "jane@example.com"}
    assert profile["device_identities"]["ios_idfv"] == "11111111-2222-4333-8444-555555555555"
    assert profile["user_attributes"] == {"plan": "gold"} and profile["consent_state"] == CONSENT
    assert [e["data"]["event_name"] for e in profile["events"] if e["event_type"] == "custom_event"] == [
        "Played",
        "Paused",
    ]  # john's "Skipped" is not hers

    portability = fulfil.export(dsr_request("portability", "dsr-jane"), [jane, john], config)
    assert portability is not None
    with zipfile.ZipFile(io.BytesIO(portability)) as archive:
        document = json.loads(archive.read(DOCUMENT_NAME))
        events = [json.loads(line) for line in archive.read(EVENTS_NAME).decode().splitlines()]
    assert [p["mpid"] for p in document["profiles"]] == [jane, john]
    assert {e["mpid"] for e in events} == {jane, john} and len(events) == sum(
        len(p["events"]) for p in document["profiles"]
    )
    assert fulfil.export(dsr_request("access", "nobody"), [123456789], config) is None

    statuses = fulfil.forward(dsr_request("erasure", "dsr-jane"), [jane], config)
    assert [(s.name, s.status, s.status_message) for s in statuses] == [
        ("fh", "sent", ""),
        ("bz", "sent", ""),
        ("amp", "sent", ""),
        ("mp", "sent", ""),
    ]
    sent = dsr_requests(receiver)
    (firehose,) = sent["firehose"]
    assert firehose.headers["Authorization"] == "Token fh-key"
    assert firehose.body["subject_request_id"] == REQUEST_ID and firehose.body["subject_identities"] == {
        "controller_customer_id": {"encoding": "raw", "value": "dsr-jane"},
        "email": {"encoding": "raw", "value": "jane@example.com"},
        "ios_vendor_id": {"encoding": "raw", "value": "11111111-2222-4333-8444-555555555555"},
    }
    assert [r.body for r in sent["braze"]] == [
        {"external_ids": ["dsr-jane"]},
        {"user_aliases": [{"alias_label": "mparticle_id", "alias_name": str(jane)}]},
    ]
    assert all(r.headers["Authorization"] == "Bearer rest-key" for r in sent["braze"])
    (amplitude,) = sent["amplitude"]
    assert amplitude.body == {"user_ids": ["dsr-jane"]}
    assert amplitude.headers["Authorization"] == "Basic " + base64.b64encode(b"amp-key:amp-secret").decode()
    (mixpanel,) = sent["mixpanel"]
    assert (mixpanel.path, mixpanel.query) == ("/mixpanel/api/app/data-deletions/v3.0/", "token=mp-project-token")
    assert mixpanel.body == {"distinct_ids": [str(jane)], "compliance_type": "GDPR"}  # distinct ids are MPIDs
    assert mixpanel.headers["Authorization"] == "Bearer mp-gdpr-token"

    receiver.reset()
    access_statuses = fulfil.forward(dsr_request("access", "dsr-jane"), [jane], config)
    assert [s.status for s in access_statuses] == ["skipped", "skipped", "skipped", "sent"]
    assert list(dsr_requests(receiver)) == ["mixpanel"]

    receiver.always = 503  # every partner down: failed after the retry policy's attempts, no secret named
    failed = fulfil.forward(dsr_request("erasure", "dsr-jane"), [jane], config)
    assert [s.status for s in failed] == ["failed"] * 4
    attempts = FAST_RETRY["max_attempts"]
    assert {s.status_message for s in failed} == {f"503-Service Unavailable after {attempts} attempts"}
    assert not any(secret in s.status_message for s in failed for secret in SECRETS)
