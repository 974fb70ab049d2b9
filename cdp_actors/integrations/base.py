"""The interface every output integration implements.

An integration module defines `Settings` (a pydantic model, validated when the workspace loads) and
`Adapter`, whose `prepare` turns one screened outbound batch (the enriched JSON of
`profiles/outbound.py`, after the connection's filters and rules) into the partner's HTTP requests.
`prepare` is pure: no I/O, no clock but `now_ms`; the forwarder sends the requests in order, with the
retry policy, and records every `Rejection` as an alert before any HTTP (System Alerts table names:
`Missing Event Name`, `Missing Identity and Device ID`, `Event Arrived Late`, ...).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, ClassVar, Protocol

import msgspec
from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr

from cdp_actors.envvars import expand_env

Secret = Annotated[SecretStr, BeforeValidator(expand_env)]
"""A credential in settings: may be written as `${ENV_VAR}`, never shown in reprs or logs."""

PARTNER_STATUS_ALERTS = {401: "Invalid Credentials", 403: "Invalid Credentials", 413: "Request Too Long"}


class SettingsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpRequest(msgspec.Struct):
    url: str
    body: bytes
    headers: dict[str, str] = {}
    method: str = "POST"


class Rejection(msgspec.Struct):
    """Data the output cannot take, found before any HTTP; recorded as an alert of `alert_type`."""

    alert_type: str
    message: str


class Prepared(msgspec.Struct):
    requests: list[HttpRequest] = []
    rejections: list[Rejection] = []
    skipped: dict[str, int] = {}
    """Events of types the output does not support, by type: skipped and counted, not alerted."""
    forwarded_events: int = 0


class Adapter(Protocol):
    status_alerts: ClassVar[dict[int, str]]
    """Alert names for HTTP statuses the partner uses in a documented way (e.g. 401 → Invalid Credentials)."""

    def prepare(self, batch: dict[str, Any], now_ms: int) -> Prepared: ...


def json_body(value: Any) -> bytes:
    return msgspec.json.encode(value)


def sha256_hex(value: str) -> str:
    """Partners' hashing of personal data: trimmed, lower-cased, SHA-256, hex."""
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


def identities(batch: dict[str, Any]) -> dict[str, str]:
    """The outbound batch's user identities as type → value."""
    return {i["identity_type"]: i["identity"] for i in batch.get("user_identities") or []}


def events_of(batch: dict[str, Any], supported: frozenset[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The batch's events of supported types, and counts of the skipped ones by type."""
    kept, skipped = [], {}
    for event in batch.get("events") or []:
        kind = event.get("event_type", "")
        if kind in supported:
            kept.append(event)
        else:
            skipped[kind] = skipped.get(kind, 0) + 1
    return kept, skipped


def consent_events(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """`Consent Given` / `Consent Rejected` custom events for the batch's consent changes, for outputs that
    take events rather than raw batches (raw-batch outputs get `system_notifications` as they are)."""
    made = []
    for note in batch.get("system_notifications") or []:
        data, ccpa = note.get("data") or {}, note.get("type") == "ccpa_change"
        current = data.get("current") or {}
        purpose = data.get("purpose") or ("data_sale_opt_out" if ccpa else "")
        given = (current.get("consented") is True) != ccpa  # opting out of data sale rejects consent
        attributes = {"regulation": "ccpa" if ccpa else "gdpr", "purpose": purpose,
                      **{k: v for k, v in current.items() if k in ("document", "location", "hardware_id")}}  # fmt: skip
        made.append({"event_type": "custom_event",
                     "data": {"event_name": "Consent Given" if given else "Consent Rejected",
                              "custom_event_type": "other", "custom_attributes": attributes,
                              "timestamp_unixtime_ms": current.get("timestamp_unixtime_ms",
                                                                   batch.get("timestamp_unixtime_ms"))}})  # fmt: skip
    return made


class MembershipChange(msgspec.Struct):
    """A user entering or leaving an audience, as audience outputs receive it."""

    audience_id: int
    audience_name: str
    mpid: int
    action: str  # "add" or "delete"
    identities: dict[str, str]
    """Canonical identity type → value, user and device identities (`cdp_actors/identity/types.py`)."""
    timestamp_ms: int


class AudienceAdapter(Protocol):
    status_alerts: ClassVar[dict[int, str]]
    max_batch: ClassVar[int]
    """How many membership changes one request may carry; bulk queues flush at this size (or by age)."""

    def prepare_memberships(self, changes: list[MembershipChange], now_ms: int) -> Prepared: ...
