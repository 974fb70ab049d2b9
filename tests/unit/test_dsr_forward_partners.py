"""Forwarding data subject requests: each partner's request (Firehose `DsrProcessingRequest`, Braze, Amplitude and
Mixpanel deletion APIs), which outputs get one, and the per-partner statuses over real local HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from cdp_actors.config import WorkspaceConfig
from cdp_actors.dsr.forward import dsr_outputs, dsr_subject, forward_to_outputs
from cdp_actors.dsr.model import DsrRequest, PartnerStatus, SubjectIdentity
from cdp_actors.integrations.base import DsrSubject, HttpRequest, Prepared
from cdp_actors.integrations.firehose import epoch_seconds
from cdp_actors.integrations.registry import build_adapter, settings_model
from cdp_actors.profiles.model import Profile, Stamped, SubjectRecord
from tests.conftest import demo_config
from tests.support import Receiver, free_port

REQUEST_ID = "a7551968-d5d6-44b2-9831-815ac9017798"
MPID = 8_000_000_000_000_001
NOW_MS = 1_700_000_000_000
SECRETS = ("rest-key", "amp-key", "amp-secret", "mp-project-token", "mp-gdpr-token", "fh-key")


def subject(kind: str = "erasure", regulation: str | None = "gdpr", **identities: list[str]) -> DsrSubject:
    return DsrSubject(REQUEST_ID, kind, regulation, "2021-11-01T15:00:00Z", "3.0", [MPID], identities)


def adapter(kind: str, **settings: Any) -> Any:
    return build_adapter(kind, settings_model(kind).model_validate(settings))


def bodies(prepared: Prepared | None) -> list[Any]:
    assert prepared is not None
    return [json.loads(request.body) for request in prepared.requests]


def only(prepared: Prepared | None) -> HttpRequest:
    assert prepared is not None and len(prepared.requests) == 1, prepared
    return prepared.requests[0]


# ---- each partner's request ------------------------------------------------------------------------------------


def test_firehose_sends_a_dsr_processing_request_with_opendsr_identities() -> None:
    firehose = adapter("firehose", url="https://partner.example/fh", api_key="fh-key", account_id=7)
    erasure = subject(customer_id=["cust-1"], email=["a@example.com", "b@example.com"], ios_idfv=["V"], other=["o"])
    request = only(firehose.prepare_dsr(erasure, NOW_MS))
    message = json.loads(request.body)
    assert request.url == "https://partner.example/fh" and request.headers["Authorization"] == "Token fh-key"
    assert message["type"] == "dsr_processing_request" and message["timestamp_ms"] == NOW_MS
    assert message["account"] == {"account_id": 7}
    assert (message["subject_request_id"], message["subject_request_type"]) == (REQUEST_ID, "erasure")
    assert message["submitted_time"] == 1635778800.0  # 2021-11-01T15:00:00Z in epoch seconds, as the SDK writes
    assert message["subject_identities"] == {
        "controller_customer_id": {"encoding": "raw", "value": "cust-1"},
        "email": {"encoding": "raw", "value": "a@example.com"},  # one per type: the first
        "ios_vendor_id": {"encoding": "raw", "value": "V"},
    }  # `other` has no OpenDSR name
    assert (message["api_version"], message["regulation"]) == ("3.0", "gdpr")
    again = json.loads(only(firehose.prepare_dsr(erasure, NOW_MS + 1)).body)
    assert again["id"] == message["id"]  # derived from the request: a resend is the same message
    v1 = subject(regulation=None, email=["x"])  # v1 requests have no regulation
    assert json.loads(only(firehose.prepare_dsr(v1, NOW_MS)).body)["regulation"] == "unknown"


def test_submitted_times_are_read_as_rfc_3339_to_the_nanosecond() -> None:
    assert epoch_seconds("2021-11-01T15:00:00Z") == 1635778800.0
    assert epoch_seconds("2021-11-01t16:00:00.123456789+01:00") == pytest.approx(1635778800.123456789)
    assert epoch_seconds("2021-11-01T15:00:00") == 1635778800.0  # no offset: UTC
    with pytest.raises(ValueError, match="RFC 3339"):
        epoch_seconds("yesterday")


def test_firehose_skips_what_its_type_enum_lacks_and_subjects_without_opendsr_identities() -> None:
    firehose = adapter("firehose", url="https://partner.example/fh")
    assert firehose.prepare_dsr(subject("access", email=["a@example.com"]), NOW_MS) is None
    nothing = firehose.prepare_dsr(subject(other=["o"]), NOW_MS)
    assert nothing is not None and nothing.requests == [] and "OpenDSR" in nothing.rejections[0].message
    assert firehose.dsr_domain == "partner.example"


def test_braze_deletes_external_ids_and_mpid_aliases_in_requests_of_at_most_50() -> None:
    braze = adapter("braze", api_url="https://rest.iad-01.braze.com/", api_key="rest-key")
    ids = [f"c{n}" for n in range(51)]
    prepared = braze.prepare_dsr(subject(customer_id=ids), NOW_MS)
    assert prepared is not None
    assert [r.url for r in prepared.requests] == ["https://rest.iad-01.braze.com/users/delete"] * 3
    assert prepared.requests[0].headers["Authorization"] == "Bearer rest-key"
    assert bodies(prepared) == [
        {"external_ids": ids[:50]},
        {"external_ids": ids[50:]},
        {"user_aliases": [{"alias_label": "mparticle_id", "alias_name": str(MPID)}]},
    ]  # one kind of identifier per request, as Braze requires
    by_mpid = adapter("braze", api_url="https://b", api_key="k", external_identity_type="mpid")
    assert bodies(by_mpid.prepare_dsr(subject(customer_id=["c"]), NOW_MS)) == [{"external_ids": [str(MPID)]}]
    assert braze.prepare_dsr(subject("access", customer_id=["c"]), NOW_MS) is None


def test_amplitude_deletes_user_ids_through_the_user_privacy_api_with_basic_auth() -> None:
    settings = {
        "api_key": "amp-key",
        "secret_key": "amp-secret",
        "privacy_api_url": "https://analytics.eu.amplitude.com",
    }
    amplitude = adapter("amplitude", **settings)
    ids = [f"user-{n}" for n in range(101)]
    prepared = amplitude.prepare_dsr(subject(customer_id=ids), NOW_MS)
    assert bodies(prepared) == [{"user_ids": ids[:100]}, {"user_ids": ids[100:]}]
    assert prepared is not None
    request = prepared.requests[0]
    assert request.url == "https://analytics.eu.amplitude.com/api/2/deletions/users"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"amp-key:amp-secret").decode()
    assert amplitude.prepare_dsr(subject("portability", customer_id=ids), NOW_MS) is None
    no_user = amplitude.prepare_dsr(subject(email=["a@example.com"]), NOW_MS)
    assert no_user is not None and no_user.requests == [] and "customer_id" in no_user.rejections[0].message
    no_secret = adapter("amplitude", api_key="amp-key").prepare_dsr(subject(customer_id=ids), NOW_MS)
    assert no_secret is not None and no_secret.requests == [] and "secret_key" in no_secret.rejections[0].message


def test_mixpanel_deletes_or_retrieves_distinct_ids_through_the_gdpr_api() -> None:
    mixpanel = adapter(
        "mixpanel", project_token="mp-project-token", gdpr_api_token="mp-gdpr-token", distinct_id_type="customer_id"
    )
    erasure = only(mixpanel.prepare_dsr(subject(customer_id=["cust-1"]), NOW_MS))
    assert erasure.url == "https://mixpanel.com/api/app/data-deletions/v3.0/?token=mp-project-token"
    assert erasure.headers["Authorization"] == "Bearer mp-gdpr-token"
    assert json.loads(erasure.body) == {"distinct_ids": ["cust-1", str(MPID)], "compliance_type": "GDPR"}
    access = only(mixpanel.prepare_dsr(subject("access", "ccpa", customer_id=["cust-1"]), NOW_MS))
    assert access.url == "https://mixpanel.com/api/app/data-retrievals/v3.0/?token=mp-project-token"
    assert json.loads(access.body) == {
        "distinct_ids": ["cust-1", str(MPID)],
        "compliance_type": "CCPA",
        "disclosure_type": "Data",
    }
    untokened = adapter("mixpanel", project_token="mp-project-token").prepare_dsr(subject(), NOW_MS)
    assert untokened is not None and untokened.requests == [] and "gdpr_api_token" in untokened.rejections[0].message


# ---- the subject and the outputs -------------------------------------------------------------------------------


def dsr_request(kind: str = "erasure", **fields: Any) -> DsrRequest:
    values: dict[str, Any] = {
        "subject_request_id": REQUEST_ID,
        "subject_request_type": kind,
        "api_version": "3.0",
        "regulation": "gdpr",
        "submitted_time": "2021-11-01T15:00:00Z",
        "received_ms": NOW_MS,
        "input_id": 1,
        "due_ms": NOW_MS,
        "expected_completion_ms": NOW_MS,
        "identities": [SubjectIdentity("email", "a@example.com")],
    }
    return DsrRequest(**{**values, **fields})


def record(mpid: int, **identities: str | None) -> SubjectRecord:
    devices = {k: Stamped(v, 1) for k, v in identities.items() if k.startswith("ios")}
    users = {k: Stamped(v, 1) for k, v in identities.items() if not k.startswith("ios")}
    return SubjectRecord(Profile(mpid, user_identities=users, device_identities=devices), [])


def test_the_subject_joins_the_requests_identities_with_its_profiles() -> None:
    records = [record(MPID, customer_id="c1", email="a@example.com", ios_idfv="V"), record(7, email="b@example.com")]
    made = dsr_subject(dsr_request(mpids=[5]), records)
    assert made.identities == {"email": ["a@example.com", "b@example.com"], "customer_id": ["c1"], "ios_idfv": ["V"]}
    assert made.mpids == [5, MPID, 7]
    assert (made.subject_request_id, made.subject_request_type, made.regulation) == (REQUEST_ID, "erasure", "gdpr")
    deleted = record(9, customer_id=None)  # a deleted identity (tombstone) is not the subject's any more
    assert dsr_subject(dsr_request(identities=[]), [deleted]).identities == {}


def workspace(*outputs: dict[str, Any], retry: dict[str, Any] | None = None, input_id: int = 1) -> WorkspaceConfig:
    """The demo workspace with these outputs (`kind`, `settings`, optional `name`), each connected to `input_id`."""
    data = demo_config("http://127.0.0.1:9/webhook").model_dump(mode="python")
    data["inputs"][0]["secret"] = "demo-secret"
    data["inputs"].append({"id": 2, "name": "other", "key": "other-key", "secret": "other-secret"})
    data["outputs"] = [
        {"id": n, "name": o.get("name", f"out-{n}"), "kind": o["kind"], "settings": o["settings"]}
        for n, o in enumerate(outputs, start=1)
    ]
    data["connections"] = [
        {"id": n, "input": input_id, "output": n, "active": o.get("active", True)}
        for n, o in enumerate(outputs, start=1)
    ]
    if retry:
        data["retry"].update(retry)
    return WorkspaceConfig.model_validate(data)


def test_outputs_connected_to_the_input_that_take_requests_active_or_paused() -> None:
    config = workspace(
        {"kind": "webhook", "settings": {"url": "http://127.0.0.1:9/w"}},
        {"kind": "braze", "settings": {"api_url": "https://b", "api_key": "k"}, "active": False},
        {"kind": "firehose", "settings": {"url": "https://f"}},
    )
    assert [o.id for o, _ in dsr_outputs(dsr_request(), config)] == [2, 3]  # webhook takes none; paused counts
    assert dsr_outputs(dsr_request(input_id=2), config) == []  # nothing connected to input 2


# ---- statuses over real HTTP -----------------------------------------------------------------------------------

FAST_RETRY = {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05, "request_timeout_s": 2}


def partner_outputs(base: str) -> list[dict[str, Any]]:
    """Firehose, Braze, Amplitude and Mixpanel outputs whose endpoints are paths of the local partner at `base`."""
    amplitude = {"api_key": "amp-key", "secret_key": "amp-secret", "privacy_api_url": f"{base}/amplitude"}
    mixpanel = {"project_token": "mp-project-token", "gdpr_api_token": "mp-gdpr-token"}
    mixpanel["gdpr_api_url"] = f"{base}/mixpanel"
    return [
        {"kind": "firehose", "name": "fh", "settings": {"url": f"{base}/firehose", "api_key": "fh-key"}},
        {"kind": "braze", "name": "bz", "settings": {"api_url": f"{base}/braze", "api_key": "rest-key"}},
        {"kind": "amplitude", "name": "amp", "settings": amplitude},
        {"kind": "mixpanel", "name": "mp", "settings": mixpanel},
    ]


def statuses(request: DsrRequest, config: WorkspaceConfig, records: list[SubjectRecord]) -> list[PartnerStatus]:
    return asyncio.run(forward_to_outputs(request, records, config, NOW_MS))


def test_each_partner_is_sent_its_request_and_reported_sent_or_skipped(partner: Receiver) -> None:
    config = workspace(*partner_outputs(partner.base), retry=FAST_RETRY)
    records = [record(MPID, customer_id="cust-1", email="a@example.com")]
    erasure = statuses(dsr_request(), config, records)
    assert [(s.domain, s.name, s.status) for s in erasure] == [
        ("127.0.0.1:" + str(partner.port), "fh", "sent"),
        ("braze.com", "bz", "sent"),
        ("amplitude.com", "amp", "sent"),
        ("mixpanel.com", "mp", "sent"),
    ]
    paths = sorted(r.path for r in partner.received)
    assert paths == [
        "/amplitude/api/2/deletions/users",
        "/braze/users/delete",
        "/braze/users/delete",
        "/firehose",
        "/mixpanel/api/app/data-deletions/v3.0/",
    ]
    partner.reset()
    access = statuses(dsr_request("access"), config, records)
    assert [(s.name, s.status) for s in access] == [("fh", "skipped"), ("bz", "skipped"), ("amp", "skipped"),
                                                    ("mp", "sent")]  # fmt: skip
    assert access[0].status_message == "firehose takes no access requests"
    assert [r.path for r in partner.received] == ["/mixpanel/api/app/data-retrievals/v3.0/"]


def test_a_failing_partner_is_failed_after_the_retries_and_names_no_secret(partner: Receiver) -> None:
    partner.always = 503
    config = workspace(*partner_outputs(partner.base)[:2], retry=FAST_RETRY)
    (firehose, braze) = statuses(dsr_request(), config, [record(MPID, customer_id="cust-1")])
    assert (firehose.status, braze.status) == ("failed", "failed")
    assert firehose.status_message == "503-Service Unavailable after 3 attempts"
    assert partner.attempts == 3 + 3  # Braze's second request (the alias) is not sent once the first failed
    assert not any(secret in s.status_message for s in (firehose, braze) for secret in SECRETS)
    partner.reset()
    partner.script = [503, 401]  # retried, then refused: not retried again
    (refused,) = statuses(dsr_request(), workspace(*partner_outputs(partner.base)[:1], retry=FAST_RETRY), [])
    assert (refused.status, refused.status_message, partner.attempts) == (
        "failed",
        "401-Unauthorized after 2 attempts",
        2,
    )


def test_a_request_a_partner_cannot_build_is_failed_not_raised() -> None:
    config = workspace(partner_outputs("http://127.0.0.1:9")[0])
    (unbuilt,) = statuses(dsr_request(submitted_time="last tuesday"), config, [])
    assert unbuilt.status == "failed"
    assert unbuilt.status_message == "request not built: not an RFC 3339 time: 'last tuesday'"


def test_an_unreachable_partner_is_failed() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # a port nothing listens on
    (down,) = statuses(dsr_request(), workspace(partner_outputs(nobody)[0], retry=FAST_RETRY), [])
    assert down.status == "failed" and down.status_message == "306-Unknown after 3 attempts"
