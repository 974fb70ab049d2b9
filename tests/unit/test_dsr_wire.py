"""The DSR API's request forms (v1 OpenGDPR, v2, v3): every documented refusal names its field, and each form maps
to the same stored request (mParticle's identity types, MPIDs apart)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cdp_actors.dsr.model import SubjectIdentity
from cdp_actors.dsr.wire import DAY_MS, MAX_IDENTITIES, Received, parse_request, rfc3339
from cdp_actors.errors import BadRequest

RID = "a7551968-d5d6-44b2-9831-815ac9017798"
RECEIVED = Received(input_id=7, received_ms=1_700_000_000_000, waiting_period_ms=7 * DAY_MS)


def v3(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "regulation": "gdpr",
        "subject_request_id": RID,
        "subject_request_type": "erasure",
        "submitted_time": "2021-11-01T15:00:00Z",
        "subject_identities": {
            "email": {"value": "jane@example.com", "encoding": "raw"},
            "ios_vendor_id": {"value": "V-1", "encoding": "raw"},
        },
        "api_version": "3.0",
        "status_callback_urls": ["https://example.com/callbacks"],
        "group_id": "g1",
        "extensions": {"opendsr.mparticle.com": {"subject_identities": {"other6": {"value": "o6", "encoding": "raw"}}}},
    }
    body.update(changes)
    return body


def v2(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "regulation": "ccpa",
        "subject_request_id": RID,
        "subject_request_type": "access",
        "submitted_time": "2021-11-01T15:00:00.123+02:00",
        "subject_identities": [
            {"identity_type": "controller_customer_id", "identity_value": "c-1", "identity_format": "raw"},
            {"identity_type": "android_id", "identity_value": "A-1", "identity_format": "raw"},
        ],
        "extensions": {"opendsr.mparticle.com": {"identities": [{"identity_type": "other2", "identity_value": "o2"}]}},
    }
    body.update(changes)
    return body


def refused(body: Any, version: str = "3.0") -> BadRequest:
    with pytest.raises(BadRequest) as raised:
        parse_request(body, version, RECEIVED)
    return raised.value


def test_v3_maps_identities_to_mparticle_types_and_sets_the_waiting_period():
    request = parse_request(v3(), "3.0", RECEIVED)
    assert request.identities == [
        SubjectIdentity("email", "jane@example.com"),
        SubjectIdentity("ios_idfv", "V-1"),
        SubjectIdentity("other_id_6", "o6"),
    ]
    assert (request.status, request.regulation, request.group_id, request.input_id) == ("pending", "gdpr", "g1", 7)
    assert request.due_ms == RECEIVED.received_ms + 7 * DAY_MS
    assert request.expected_completion_ms == RECEIVED.received_ms + 21 * DAY_MS


def test_skip_waiting_period_makes_the_request_due_at_once():
    body = v3(extensions={"opendsr.mparticle.com": {"skip_waiting_period": True}})
    request = parse_request(body, "3.0", RECEIVED)
    assert request.skip_waiting_period and request.due_ms == RECEIVED.received_ms
    assert request.expected_completion_ms == RECEIVED.received_ms + 14 * DAY_MS


def test_v2_and_v1_take_identity_arrays_and_extension_identities():
    request = parse_request(v2(), "2.0", RECEIVED)
    assert request.identities == [
        SubjectIdentity("customer_id", "c-1"),
        SubjectIdentity("android_uuid", "A-1"),
        SubjectIdentity("other_id_2", "o2"),
    ]
    body = v2()
    del body["regulation"]
    v1 = parse_request(body, "1.0", RECEIVED)
    assert v1.regulation is None and v1.api_version == "1.0"


def test_mpids_alone_are_a_subject():
    body = v2(subject_identities=[], extensions={"opendsr.mparticle.com": {"mpids": [123, "-45"]}})
    assert refused(body, "2.0").path == "$.extensions.opendsr.mparticle.com"  # two MPIDs: only one subject
    body = v2(subject_identities=[], extensions={"opendsr.mparticle.com": {"mpids": [123]}})
    assert parse_request(body, "2.0", RECEIVED).mpids == [123]
    body = v3(subject_identities={}, extensions={"opendsr.mparticle.com": {"subject_identities": {
        "mpid": {"value": "99", "encoding": "raw"}}}})  # fmt: skip
    assert parse_request(body, "3.0", RECEIVED).mpids == [99]


def test_mpid_with_another_identity_is_refused():
    ext = {"opendsr.mparticle.com": {"subject_identities": {"mpid": {"value": "99", "encoding": "raw"}}}}
    assert "only identity" in refused(v3(extensions=ext)).message


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"subject_request_id": None}, "$.subject_request_id"),
        ({"subject_request_id": RID.upper()}, "$.subject_request_id"),
        ({"subject_request_id": "a7551968-d5d6-14b2-9831-815ac9017798"}, "$.subject_request_id"),  # v1 UUID
        ({"subject_request_type": "deletion"}, "$.subject_request_type"),
        ({"submitted_time": "2021-11-01 15:00"}, "$.submitted_time"),
        ({"submitted_time": "2021-13-01T15:00:00Z"}, "$.submitted_time"),
        ({"submitted_time": 1635778800}, "$.submitted_time"),
        ({"regulation": "hipaa"}, "$.regulation"),
        ({"regulation": None}, "$.regulation"),
        ({"api_version": "2.0"}, "$.api_version"),
        ({"subject_identities": {"fax": {"value": "1", "encoding": "raw"}}}, "$.subject_identities.fax"),
        (
            {"subject_identities": {"email": {"value": "x", "encoding": "sha256"}}},
            "$.subject_identities.email.encoding",
        ),
        ({"subject_identities": {"email": {"value": "", "encoding": "raw"}}}, "$.subject_identities.email.value"),
        ({"subject_identities": [{"identity_type": "email"}]}, "$.subject_identities"),
        ({"subject_identities": {}, "extensions": {}}, "$.subject_identities"),
        ({"status_callback_urls": "https://x"}, "$.status_callback_urls"),
        ({"status_callback_urls": ["ftp://x"]}, "$.status_callback_urls"),
        (
            {"extensions": {"opendsr.mparticle.com": {"skip_waiting_period": "yes"}}},
            "$.extensions.opendsr.mparticle.com.skip_waiting_period",
        ),
        ({"group_id": 5}, "$.group_id"),
    ],
)
def test_v3_refusals_name_the_field(change: dict[str, Any], path: str):
    error = refused(v3(**change))
    assert error.path == path, error.message


def test_unknown_identity_type_is_named():
    assert "Unsupported identity type: fax" in refused(v3(subject_identities={"fax": {"value": "1"}})).message
    body = v2(subject_identities=[{"identity_type": "fax", "identity_value": "1", "identity_format": "raw"}])
    error = refused(body, "2.0")
    assert "fax" in error.message and error.path == "$.subject_identities[0].identity_type"


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (
            {"subject_identities": [{"identity_type": "email", "identity_value": "x", "identity_format": "md5"}]},
            "$.subject_identities[0].identity_format",
        ),
        ({"subject_identities": {"email": "x"}}, "$.subject_identities"),
        (
            {"extensions": {"opendsr.mparticle.com": {"mpids": ["not-a-number"]}}},
            "$.extensions.opendsr.mparticle.com.mpids[0]",
        ),
        (
            {
                "extensions": {
                    "opendsr.mparticle.com": {"identities": [{"identity_type": "email", "identity_value": "x"}]}
                }
            },
            "$.extensions.opendsr.mparticle.com.identities[0].identity_type",
        ),
    ],
)
def test_v2_refusals_name_the_field(change: dict[str, Any], path: str):
    assert refused(v2(**change), "2.0").path == path


def test_at_most_fifty_identities():
    many = [{"identity_type": "email", "identity_value": f"u{n}@x", "identity_format": "raw"} for n in range(51)]
    assert str(MAX_IDENTITIES) in refused(v2(subject_identities=many), "2.0").message
    assert parse_request(v2(subject_identities=many[:48]), "2.0", RECEIVED)  # 48 + the extension's one


def test_a_body_that_is_not_an_object_is_refused():
    assert refused([v3()]).path == "$"


def test_the_request_is_not_changed_by_parsing():
    body = v3()
    kept = copy.deepcopy(body)
    parse_request(body, "3.0", RECEIVED)
    assert body == kept


def test_times_are_rfc3339_utc():
    assert rfc3339(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
