"""The DSR API's wire forms (https://docs.mparticle.com/developers/apis/dsr-api/v3/ and v2, v1 OpenGDPR): a request
body of any version checked and mapped to a `DsrRequest`, and the bodies the API answers with.

v3 names identities in a dict keyed by OpenDSR type (`{"email": {"value", "encoding"}}`) and more in the
`opendsr.mparticle.com` extension (`mpid`, `other`, `other2`..`other10`, `mobile_number`, `phone_number_2|3`);
v1 and v2 in an array of `{identity_type, identity_value, identity_format}`, with `mpids` and `identities` in the
extension. v1 has no `regulation`. Everything is mapped to mParticle's canonical identity types here, once.
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from cdp_actors.dsr.model import REQUEST_TYPES, DsrRequest, PartnerStatus, SubjectIdentity
from cdp_actors.errors import BadRequest

PROCESSOR_DOMAIN = "opendsr.mparticle.com"
"""The extension key and the `X-OpenDSR-Processor-Domain` the API answers with (mParticle's)."""
VERSIONS = ("1.0", "2.0", "3.0")
REGULATIONS = ("gdpr", "ccpa")
MAX_IDENTITIES = 50
"""Identities per request (v3 docs: "You can specify up to 50 identities in a single request")."""
OPENDSR_TYPES = {
    "controller_customer_id": "customer_id",
    "email": "email",
    "android_advertising_id": "android_advertising_id",
    "android_id": "android_uuid",
    "fire_advertising_id": "fire_advertising_id",
    "ios_advertising_id": "ios_advertising_id",
    "ios_vendor_id": "ios_idfv",
    "microsoft_advertising_id": "microsoft_advertising_id",
    "microsoft_publisher_id": "microsoft_publisher_id",
    "roku_advertising_id": "roku_advertising_id",
    "roku_publisher_id": "roku_publisher_id",
    "roku_publishing_id": "roku_publisher_id",  # the docs' table spells it so
}
"""OpenDSR identity type → mParticle's canonical type (the v3 docs' "Supported Identity Types" table)."""
EXTENSION_TYPES = {
    "other": "other",
    **{f"other{n}": f"other_id_{n}" for n in range(2, 11)},
    "mobile_number": "mobile_number",
    "phone_number_2": "phone_number_2",
    "phone_number_3": "phone_number_3",
}
"""Identity types the `opendsr.mparticle.com` extension takes (besides `mpid`) → canonical type."""
DISCOVERY_TYPES = tuple(t for t in OPENDSR_TYPES if t != "roku_publishing_id")
_UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
DAY_MS = 86_400_000
PROCESSING_MS = 14 * DAY_MS
"""The expected completion is this long after the waiting period: mParticle says 7-21 days with the default 7-day
waiting period, 1-14 days when it is skipped."""


class Received:
    """What the API knows of a request besides its body: who sent it, when, and the waiting period that applies."""

    def __init__(self, input_id: int, received_ms: int, waiting_period_ms: int) -> None:
        self.input_id, self.received_ms, self.waiting_period_ms = input_id, received_ms, waiting_period_ms


def parse_request(body: Any, version: str, received: Received) -> DsrRequest:
    """The request a body of API `version` ("1.0", "2.0", "3.0") asks for; BadRequest naming the field otherwise."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", "$")
    request_id = _required_str(body, "subject_request_id")
    if not _UUID_V4.match(request_id):
        raise BadRequest("subject_request_id must be a lowercase UUID v4.", "$.subject_request_id")
    request_type = _required_str(body, "subject_request_type")
    if request_type not in REQUEST_TYPES:
        raise BadRequest(f"subject_request_type must be one of {', '.join(REQUEST_TYPES)}.", "$.subject_request_type")
    submitted = _required_str(body, "submitted_time")
    if not _is_rfc3339(submitted):
        raise BadRequest("submitted_time must be an RFC 3339 date-time.", "$.submitted_time")
    regulation = None
    if version != "1.0":
        regulation = _required_str(body, "regulation")
        if regulation not in REGULATIONS:
            raise BadRequest(f"regulation must be one of {', '.join(REGULATIONS)}.", "$.regulation")
    if "api_version" in body and body["api_version"] not in (None, version):
        raise BadRequest(f"api_version must be {version} on this endpoint.", "$.api_version")
    extension = _extension(body)
    if version == "3.0":
        identities, mpids = _v3_identities(body, extension)
    else:
        identities, mpids = _array_identities(body, extension)
    _check_identities(identities, mpids)
    skip = extension.get("skip_waiting_period", False)
    if not isinstance(skip, bool):
        raise BadRequest(
            "skip_waiting_period must be a boolean.", f"$.extensions.{PROCESSOR_DOMAIN}.skip_waiting_period"
        )
    waiting_ms = 0 if skip else received.waiting_period_ms
    return DsrRequest(
        subject_request_id=request_id,
        subject_request_type=request_type,
        api_version=version,
        regulation=regulation,
        submitted_time=submitted,
        received_ms=received.received_ms,
        input_id=received.input_id,
        identities=identities,
        mpids=mpids,
        group_id=_optional_str(body, "group_id"),
        status_callback_urls=_callback_urls(body),
        skip_waiting_period=skip,
        due_ms=received.received_ms + waiting_ms,
        expected_completion_ms=received.received_ms + waiting_ms + PROCESSING_MS,
    )


def _required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise BadRequest(f"{name} is required.", f"$.{name}")
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string.", f"$.{name}")
    return value


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{name} must be a string.", f"$.{name}")
    return value


def _is_rfc3339(text: str) -> bool:
    if not _RFC3339.match(text):
        return False
    try:
        datetime.fromisoformat(re.sub(r"[Zz]$", "+00:00", text.replace("t", "T")))
    except ValueError:
        return False
    return True


def _callback_urls(body: dict[str, Any]) -> list[str]:
    urls = body.get("status_callback_urls") or []
    if not isinstance(urls, list) or not all(
        isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls
    ):
        raise BadRequest("status_callback_urls must be an array of http(s) URLs.", "$.status_callback_urls")
    return urls


def _extension(body: dict[str, Any]) -> dict[str, Any]:
    extensions = body.get("extensions") or {}
    if not isinstance(extensions, dict):
        raise BadRequest("extensions must be an object keyed by processor domain.", "$.extensions")
    ours = extensions.get(PROCESSOR_DOMAIN) or {}
    if not isinstance(ours, dict):
        raise BadRequest("The extension must be an object.", f"$.extensions.{PROCESSOR_DOMAIN}")
    return ours


def _identity_type(opendsr_type: Any, path: str, table: dict[str, str]) -> str:
    if not isinstance(opendsr_type, str) or opendsr_type not in table:
        raise BadRequest(f"Unsupported identity type: {opendsr_type}.", path)
    return table[opendsr_type]


def _value(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise BadRequest("An identity's value must be a non-empty string.", path)
    return raw


def _check_raw(encoding: Any, path: str) -> None:
    if encoding not in (None, "raw"):
        raise BadRequest(f"Unsupported identity encoding: {encoding}; only raw is supported.", path)


def _v3_entries(identities: Any, path: str) -> list[tuple[str, Any, str]]:
    """(type, value, the identity's path) of a v3 identities dict, encodings checked."""
    if identities is None:
        return []
    if not isinstance(identities, dict):
        raise BadRequest("subject_identities must be an object keyed by identity type.", path)
    entries = []
    for name, entry in identities.items():
        where = f"{path}.{name}"
        if not isinstance(entry, dict):
            raise BadRequest("An identity must be an object with value and encoding.", where)
        _check_raw(entry.get("encoding"), f"{where}.encoding")
        entries.append((name, entry.get("value"), where))
    return entries


def _v3_identities(body: dict[str, Any], extension: dict[str, Any]) -> tuple[list[SubjectIdentity], list[int]]:
    identities: list[SubjectIdentity] = []
    mpids: list[int] = []
    for name, value, where in _v3_entries(body.get("subject_identities"), "$.subject_identities"):
        kind = _identity_type(name, where, OPENDSR_TYPES)
        identities.append(SubjectIdentity(kind, _value(value, f"{where}.value")))
    ext_path = f"$.extensions.{PROCESSOR_DOMAIN}.subject_identities"
    for name, value, where in _v3_entries(extension.get("subject_identities"), ext_path):
        if name == "mpid":
            mpids.append(_mpid(value, f"{where}.value"))
        else:
            kind = _identity_type(name, where, EXTENSION_TYPES)
            identities.append(SubjectIdentity(kind, _value(value, f"{where}.value")))
    return identities, mpids


def _array_identities(body: dict[str, Any], extension: dict[str, Any]) -> tuple[list[SubjectIdentity], list[int]]:
    identities = _identity_array(body.get("subject_identities"), "$.subject_identities", OPENDSR_TYPES)
    ext_path = f"$.extensions.{PROCESSOR_DOMAIN}"
    identities += _identity_array(extension.get("identities"), f"{ext_path}.identities", EXTENSION_TYPES)
    raw_mpids = extension.get("mpids") or []
    if not isinstance(raw_mpids, list):
        raise BadRequest("mpids must be an array of MPIDs.", f"{ext_path}.mpids")
    return identities, [_mpid(m, f"{ext_path}.mpids[{n}]") for n, m in enumerate(raw_mpids)]


def _identity_array(items: Any, path: str, table: dict[str, str]) -> list[SubjectIdentity]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadRequest("Identities must be an array of {identity_type, identity_value, identity_format}.", path)
    identities = []
    for n, item in enumerate(items):
        where = f"{path}[{n}]"
        if not isinstance(item, dict):
            raise BadRequest("An identity must be an object.", where)
        _check_raw(item.get("identity_format"), f"{where}.identity_format")
        kind = _identity_type(item.get("identity_type"), f"{where}.identity_type", table)
        identities.append(SubjectIdentity(kind, _value(item.get("identity_value"), f"{where}.identity_value")))
    return identities


def _mpid(raw: Any, path: str) -> int:
    try:
        mpid = int(raw)
    except (TypeError, ValueError):
        raise BadRequest("An MPID must be a 64-bit integer.", path) from None
    if isinstance(raw, bool) or not -(1 << 63) <= mpid < (1 << 63):
        raise BadRequest("An MPID must be a 64-bit integer.", path)
    return mpid


def _check_identities(identities: list[SubjectIdentity], mpids: list[int]) -> None:
    if not identities and not mpids:
        raise BadRequest("A request needs at least one identity.", "$.subject_identities")
    if mpids and (identities or len(mpids) > 1):
        raise BadRequest("mpid must be the only identity of a request.", f"$.extensions.{PROCESSOR_DOMAIN}")
    if len(identities) > MAX_IDENTITIES:
        raise BadRequest(f"A request holds at most {MAX_IDENTITIES} identities.", "$.subject_identities")


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def encoded_request(body: bytes) -> str:
    return base64.b64encode(body).decode()


def created_body(request: DsrRequest, controller_id: int, raw_body: bytes) -> dict[str, Any]:
    return {
        "controller_id": str(controller_id),
        "expected_completion_time": rfc3339(request.expected_completion_ms),
        "received_time": rfc3339(request.received_ms),
        "encoded_request": encoded_request(raw_body),
        "subject_request_id": request.subject_request_id,
    }


def status_body(request: DsrRequest, controller_id: int, results_url: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "controller_id": str(controller_id),
        "expected_completion_time": rfc3339(request.expected_completion_ms),
        "subject_request_id": request.subject_request_id,
        "group_id": request.group_id,
        "request_status": request.status,
        "api_version": request.api_version,
        "results_url": results_url,
        "extensions": [_partner(p) for p in request.partners],
    }
    if request.results_count is not None:
        body["results_count"] = request.results_count
    return body


def _partner(partner: PartnerStatus) -> dict[str, str]:
    return {"domain": partner.domain, "name": partner.name, "status": partner.status,
            "status_message": partner.status_message}  # fmt: skip


def callback_body(request: DsrRequest, controller_id: int, url: str, results_url: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "controller_id": str(controller_id),
        "expected_completion_time": rfc3339(request.expected_completion_ms),
        "status_callback_url": url,
        "subject_request_id": request.subject_request_id,
        "request_status": request.status,
        "api_version": request.api_version,
    }
    if results_url is not None:
        body["results_url"] = results_url
    if request.results_count is not None:
        body["results_count"] = request.results_count
    return body


def cancelled_body(request: DsrRequest, controller_id: int, now_ms: int) -> dict[str, Any]:
    return {
        "controller_id": str(controller_id),
        "received_time": rfc3339(now_ms),
        "subject_request_id": request.subject_request_id,
        "api_version": request.api_version,
    }


def discovery_body(version: str, certificate_url: str) -> dict[str, Any]:
    return {
        "api_version": version,
        "supported_identities": [{"identity_type": t, "identity_format": "raw"} for t in DISCOVERY_TYPES],
        "supported_subject_request_types": list(REQUEST_TYPES),
        "processor_certificate": certificate_url,
    }


def same_subject(a: DsrRequest, b: DsrRequest) -> bool:
    """An identical request for the 409: the same type, identities and MPIDs (in any order)."""
    return (
        a.subject_request_type == b.subject_request_type
        and sorted((i.identity_type, i.value) for i in a.identities)
        == sorted((i.identity_type, i.value) for i in b.identities)
        and sorted(a.mpids) == sorted(b.mpids)
    )


def console_request(mpid: int, request_type: str, regulation: str, skip: bool, received: Received) -> DsrRequest:
    """A request submitted from the console's User Activity detail for one profile: its MPID is the only identity
    (as the v3 `mpid` extension identity), under a new id; the workspace's waiting period applies unless skipped."""
    waiting_ms = 0 if skip else received.waiting_period_ms
    return DsrRequest(
        subject_request_id=str(uuid.uuid4()),
        subject_request_type=request_type,
        api_version="3.0",
        regulation=regulation,
        submitted_time=rfc3339(received.received_ms),
        received_ms=received.received_ms,
        input_id=received.input_id,
        mpids=[mpid],
        skip_waiting_period=skip,
        due_ms=received.received_ms + waiting_ms,
        expected_completion_ms=received.received_ms + waiting_ms + PROCESSING_MS,
    )


def console_row(request: DsrRequest, steps_done: list[str], attempts: int, last_error: str) -> dict[str, Any]:
    """One request in `/cdp/dsr`: its state, and where its processing stands."""
    return {
        "subject_request_id": request.subject_request_id,
        "subject_request_type": request.subject_request_type,
        "request_status": request.status,
        "regulation": request.regulation,
        "api_version": request.api_version,
        "group_id": request.group_id,
        "identities": [{"identity_type": i.identity_type, "value": i.value} for i in request.identities],
        "mpids": [str(m) for m in request.mpids],
        "received_time": rfc3339(request.received_ms),
        "due_time": rfc3339(request.due_ms),
        "expected_completion_time": rfc3339(request.expected_completion_ms),
        "completed_time": None if request.completed_ms is None else rfc3339(request.completed_ms),
        "results_count": request.results_count,
        "steps_done": steps_done,
        "attempts": attempts,
        "last_error": last_error,
        "partners": [_partner(p) for p in request.partners],
    }
