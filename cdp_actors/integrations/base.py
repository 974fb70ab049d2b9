"""The interface every output integration implements, and what the integrations share.

An integration module defines `Settings` (a pydantic model, validated when the workspace loads) and
`Adapter`, whose `prepare` turns one screened outbound batch (the enriched JSON of
`profiles/outbound.py`, after the connection's filters and rules) into the partner's HTTP requests.
`prepare` is pure: no I/O, no clock but `now_ms`; the forwarder sends the requests in order, with the
retry policy, and records every `Rejection` as an alert before any HTTP (System Alerts table names:
`Missing Event Name`, `Missing Identity and Device ID`, `Event Arrived Late`, ...). Audience outputs'
`prepare_memberships` takes membership changes instead; those that map our audiences to the partner's
by a setting extend `MappedAudienceAdapter`.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Container
from typing import Annotated, Any, ClassVar, Generic, Protocol, TypeGuard, TypeVar

import msgspec
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from cdp_actors.envvars import expand_env
from cdp_actors.schema.identity_types import USER_TYPES

T = TypeVar("T")
PartnerAudienceT = TypeVar("PartnerAudienceT")

PARTNER_STATUS_ALERTS = {401: "Invalid Credentials", 403: "Invalid Credentials", 413: "Request Too Long"}
ZERO_AD_ID = "00000000-0000-0000-0000-000000000000"
"""The advertising id of a device that limits ad tracking: partners take it as no id at all."""
BULK_UPLOAD_INTERVAL_S = 3 * 3600
"""How long audience changes wait for a bulk upload by default (the product docs' 3 hours)."""


# ---- settings ------------------------------------------------------------------------------------------


def _not_blank(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("must not be empty")
    return value


def _user_identity_or_mpid(value: str) -> str:
    if value != "mpid" and value not in USER_TYPES:
        raise ValueError(f"unknown identity type {value!r}; use mpid or one of {', '.join(USER_TYPES)}")
    return value


Secret = Annotated[SecretStr, BeforeValidator(expand_env)]
"""A credential in settings: may be written as `${ENV_VAR}`, never shown in reprs or logs."""
NonBlankSecret = Annotated[Secret, AfterValidator(_not_blank)]
"""A credential that must not be empty or only white space."""
PartnerUrl = Annotated[str, Field(pattern=r"^https?://")]
"""A partner endpoint in settings: an http:// or https:// URL."""
UserIdentityOrMpid = Annotated[str, AfterValidator(_user_identity_or_mpid)]
"""A setting naming a user identity type, or ``mpid``."""
BulkMaxAge = Annotated[float, Field(gt=0)]
"""How long, in seconds, membership changes may wait in the bulk queue."""


class SettingsModel(BaseModel):
    """An integration's settings: unknown fields refused, immutable once loaded."""

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


class RawAdapter(Adapter, Protocol):
    """An output that sends the outbound batch as is (webhook): the forwarder skips decoding and re-encoding
    the batch when the connection screens nothing out."""

    def prepare_raw(self, payload: bytes, event_count: int) -> Prepared: ...


class CombiningAdapter(Adapter, Protocol):
    """An output that can send batches ready together as one request (webhook)."""

    max_batches_per_request: int
    """At most this many batches in one request; 1: the output does not combine."""

    def combine(self, requests: list[HttpRequest]) -> HttpRequest: ...


class DsrSubject(msgspec.Struct, frozen=True):
    """A data subject request as outputs are told of it: the request's own fields and every identity known of the
    subject (the request's and its profiles'), by canonical type (`cdp_actors/schema/identity_types.py`)."""

    subject_request_id: str
    subject_request_type: str
    """`erasure`, `access` or `portability`."""
    regulation: str | None
    submitted_time: str
    """RFC 3339, as the controller sent it."""
    api_version: str
    mpids: list[int] = []
    identities: dict[str, list[str]] = {}


class DsrAdapter(Protocol):
    """An output that takes data subject requests: Firehose's `DsrProcessingRequest`, or a partner's own deletion
    API. `prepare_dsr` returns None for a request type the partner does not take; a `Prepared` without requests
    (its rejections saying why) when the subject has no identity the partner knows users by."""

    @property
    def dsr_domain(self) -> str:
        """The partner's domain, as the request status names it (`extensions[].domain`)."""
        ...

    def prepare_dsr(self, subject: DsrSubject, now_ms: int) -> Prepared | None: ...


def takes_dsr(adapter: Any) -> TypeGuard[DsrAdapter]:
    return hasattr(adapter, "prepare_dsr")


def subject_values(subject: DsrSubject, kind: str) -> list[str]:
    """The subject's MPIDs (as text) when `kind` is ``mpid``, else its identities of type `kind`."""
    return [str(mpid) for mpid in subject.mpids] if kind == "mpid" else list(subject.identities.get(kind, []))


def missing_dsr_identity(partner: str, wanted: str) -> Prepared:
    """Nothing to send: the subject has no identity of the type the partner knows its users by."""
    message = f"{partner} knows users by {wanted}: the subject has none"
    return Prepared(rejections=[Rejection("Missing Identity", message)])


def sends_raw(adapter: Adapter) -> TypeGuard[RawAdapter]:
    # hasattr, not isinstance: this runs per row, and a runtime Protocol check costs tens of microseconds
    return hasattr(adapter, "prepare_raw")


def combines(adapter: Adapter) -> TypeGuard[CombiningAdapter]:
    return hasattr(adapter, "combine")


def json_body(value: Any) -> bytes:
    """Compact JSON, as partners are sent it."""
    return msgspec.json.encode(value)


def sha256_hex(value: str) -> str:
    """Partners' hashing of personal data: trimmed, lower-cased, SHA-256, hex."""
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


def phone_digits(value: str) -> str:
    """Phone normalisation before hashing: digits only (country code included), no leading zeros."""
    return re.sub(r"\D", "", value).lstrip("0")


def bearer_json_headers(token: SecretStr) -> dict[str, str]:
    """The headers of a JSON request authorised with `token` as a bearer token."""
    return {"Content-Type": "application/json", "Authorization": f"Bearer {token.get_secret_value()}"}


def chunks(items: list[T], size: int) -> list[list[T]]:
    """`items` in order, in slices of at most `size` (one request's worth each)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


# ---- the outbound batch's user ---------------------------------------------------------------------------


def identities(batch: dict[str, Any]) -> dict[str, str]:
    """The outbound batch's user identities as type → value."""
    return {i["identity_type"]: i["identity"] for i in batch.get("user_identities") or []}


def mpid_text(batch: dict[str, Any]) -> str | None:
    """The batch's MPID as text, or None when it has none."""
    return str(batch["mpid"]) if batch.get("mpid") is not None else None


def user_identity(batch: dict[str, Any], kind: str) -> str | None:
    """The batch's MPID (as text) when `kind` is ``mpid``, else its user identity of type `kind`."""
    return mpid_text(batch) if kind == "mpid" else identities(batch).get(kind)


def identity_or_device_id(batch: dict[str, Any], kind: str) -> Any:
    """The batch's user identity of type `kind`, else its `device_info` field of that name (a device id)."""
    return identities(batch).get(kind) or (batch.get("device_info") or {}).get(kind)


# ---- events --------------------------------------------------------------------------------------------


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
        attributes = {
            "regulation": "ccpa" if ccpa else "gdpr",
            "purpose": purpose,
            **{k: v for k, v in current.items() if k in ("document", "location", "hardware_id")},
        }
        made.append(
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "Consent Given" if given else "Consent Rejected",
                    "custom_event_type": "other",
                    "custom_attributes": attributes,
                    "timestamp_unixtime_ms": current.get("timestamp_unixtime_ms", batch.get("timestamp_unixtime_ms")),
                },
            }
        )
    return made


def insert_ids(batch: dict[str, Any], position: int, data: dict[str, Any], count: int) -> list[str]:
    """De-duplication ids stable across replays: the event id, else `<batch id>-<position>`; `-<n>` per part."""
    event_id = data.get("event_id")
    base = str(event_id) if event_id is not None else f"{batch.get('batch_id', 0)}-{position}"
    return [base] if count == 1 else [f"{base}-{n}" for n in range(count)]


def present(attributes: dict[str, Any]) -> dict[str, Any]:
    """The attributes that have a value (None ones left out)."""
    return {name: value for name, value in attributes.items() if value is not None}


def as_boolean(value: Any) -> Any:
    """`"true"` / `"false"` (any case) as a boolean, any other value as it is."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


# ---- audiences -----------------------------------------------------------------------------------------


class MembershipChange(msgspec.Struct):
    """A user entering or leaving an audience, as audience outputs receive it."""

    audience_id: int
    audience_name: str
    mpid: int
    action: str  # "add" or "delete"
    identities: dict[str, str]
    """Canonical identity type → value, user and device identities (`cdp_actors/schema/identity_types.py`)."""
    timestamp_ms: int
    change_id: str = ""
    """Stable across resends, for partners to dedupe on: `<shard>-<change number>` for a change from a shard's
    outbox (set by the forwarder from the row's key); empty for a one-off send (outputs then derive one)."""


class AudienceAdapter(Protocol):
    status_alerts: ClassVar[dict[int, str]]
    max_batch: ClassVar[int]
    """How many membership changes one request may carry; bulk queues flush at this size (or by age)."""

    def prepare_memberships(self, changes: list[MembershipChange], now_ms: int) -> Prepared: ...


def members_by_audience(changes: list[MembershipChange]) -> dict[int, list[MembershipChange]]:
    """The changes by audience, keeping only the last one per user: membership is a state, not a log."""
    grouped: dict[int, dict[int, MembershipChange]] = {}
    for change in changes:
        grouped.setdefault(change.audience_id, {})[change.mpid] = change
    return {audience_id: list(members.values()) for audience_id, members in grouped.items()}


def unknown_action(change: MembershipChange) -> Rejection:
    """The rejection of a change whose action the partner does not take (neither add nor delete)."""
    return Rejection("Invalid Required Attribute", f"unknown action {change.action!r}")


def sendable(
    change: MembershipChange, actions: Container[str], has_match_key: bool, missing_description: str, prepared: Prepared
) -> bool:
    """True, counted as forwarded, for a known action with a match key; else False, recorded as a rejection."""
    if change.action not in actions:
        prepared.rejections.append(unknown_action(change))
        return False
    if not has_match_key:
        prepared.rejections.append(Rejection("Missing Identity", f"mpid {change.mpid} has {missing_description}"))
        return False
    prepared.forwarded_events += 1
    return True


class MappedAudienceAdapter(ABC, Generic[PartnerAudienceT]):
    """An audience output whose audiences map, by a setting, to the partner's; subclasses make their requests."""

    status_alerts: ClassVar[dict[int, str]] = PARTNER_STATUS_ALERTS
    max_batch: ClassVar[int]
    mapping_setting: ClassVar[str]
    """The setting that maps our audience ids to the partner's, named when an audience is missing from it."""

    def __init__(self, partner_audiences: dict[int, PartnerAudienceT], max_age_s: float) -> None:
        self.partner_audiences = partner_audiences
        self.max_age_s = max_age_s

    def prepare_memberships(self, changes: list[MembershipChange], now_ms: int) -> Prepared:
        """Each user's last change, by audience; audiences the mapping setting lacks are rejected, not sent."""
        prepared = Prepared()
        for audience_id, members in members_by_audience(changes).items():
            partner_audience = self.partner_audiences.get(audience_id)
            if partner_audience is None:
                message = f"audience {audience_id} is not in {self.mapping_setting}; {len(members)} changes not sent"
                prepared.rejections.append(Rejection("Missing Required Setting", message))
            else:
                prepared.requests += self.audience_requests(partner_audience, members, prepared, now_ms)
        return prepared

    @abstractmethod
    def audience_requests(
        self, partner_audience: PartnerAudienceT, members: list[MembershipChange], prepared: Prepared, now_ms: int
    ) -> list[HttpRequest]:
        """The requests for one audience's members; members that cannot be sent are rejected into `prepared`."""
