"""Mixpanel output: events to the Ingestion API's `/track` and `/import`, user attributes to `/engage`.

Followed: the product docs' Mixpanel page (events at most 5 days old go to `/track`, older ones to `/import`
with the API secret, dropped without it; `"true"`/`"false"` attribute values become booleans; people data as
`$set` with the email identity; `$transaction` revenue for purchases; consent changes as `Consent Given` /
`Consent Rejected` custom events), and Mixpanel's Ingestion API reference (JSON arrays of at most 2000 events;
`time` in milliseconds; `$insert_id` of at most 36 alphanumeric-or-dash characters for de-duplication;
`/import?strict=1` with the project secret as the HTTP Basic username and an empty password; `/engage`
updates carrying `$token`, `$distinct_id` and `$set` / `$append`).

Guessed, where neither says: screen views are named `Viewed <screen name>`; only custom, screen view and
commerce events (and consent changes) are forwarded, other types are skipped; when the chosen distinct id is
missing the MPID stands in; the mParticle reserved user attributes map as `$FirstName` → `$first_name`,
`$LastName` → `$last_name`, `$Mobile` → `$phone`, `$City` → `$city`, `$State` → `$region`, the others just
lose their `$`; the people update is one `/engage` request after the event requests; refunds record a
negative `$transactions` amount; events of one expanded commerce event get `<event id>-<n>` insert ids.

Data subject requests go to Mixpanel's GDPR and CCPA API (v3), authorised with the GDPR OAuth token as a bearer
token and the project token in the query: an erasure as `POST /api/app/data-deletions/v3.0/`, an access or
portability request as `POST /api/app/data-retrievals/v3.0/` (Mixpanel sends the export to the project's owner),
each with `distinct_ids` (at most 2000) and `compliance_type` `GDPR` or `CCPA` (CCPA retrievals with
`disclosure_type: Data`). The distinct ids are the subject's `distinct_id_type` identities and its MPIDs (which
stand in when a batch lacks the chosen identity). Without a `gdpr_api_token` setting nothing is sent.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal, NamedTuple
from urllib.parse import urlencode

from pydantic import Field

from cdp_actors.integrations.base import (
    PARTNER_STATUS_ALERTS,
    DsrSubject,
    HttpRequest,
    NonBlankSecret,
    PartnerUrl,
    Prepared,
    Rejection,
    Secret,
    SettingsModel,
    as_boolean,
    chunks,
    consent_events,
    events_of,
    identities,
    identity_or_device_id,
    insert_ids,
    json_body,
    missing_dsr_identity,
    present,
    subject_values,
)
from cdp_actors.integrations.commerce import TOTAL_ACTIONS, expand_commerce

DEFAULT_API_URL = "https://api.mixpanel.com"
DEFAULT_GDPR_API_URL = "https://mixpanel.com"
MAX_DISTINCT_IDS_PER_DSR = 2000
"""The GDPR API's limit of distinct ids in one deletion or retrieval request."""
DSR_PATHS = {
    "erasure": "/api/app/data-deletions/v3.0/",
    "access": "/api/app/data-retrievals/v3.0/",
    "portability": "/api/app/data-retrievals/v3.0/",
}
MAX_EVENTS_PER_REQUEST = 2000
TRACK_WINDOW_MS = 5 * 24 * 60 * 60 * 1000
SUPPORTED_EVENT_TYPES = frozenset({"custom_event", "screen_view", "commerce_event"})
DistinctIdType = Literal[
    "mpid",
    "customer_id",
    "email",
    "other",
    "other_id_2",
    "other_id_3",
    "other_id_4",
    "mobile_number",
    "ios_advertising_id",
    "ios_idfv",
    "android_uuid",
    "android_advertising_id",
]
RESERVED_ATTRIBUTES = {
    "$FirstName": "$first_name",
    "$LastName": "$last_name",
    "$Mobile": "$phone",
    "$City": "$city",
    "$State": "$region",
}
DEVICE_PROPERTIES = {
    "platform": "$os",
    "os_version": "$os_version",
    "device_manufacturer": "$manufacturer",
    "brand": "$brand",
    "device_model": "$model",
    "network_carrier": "$carrier",
}


class Settings(SettingsModel):
    project_token: NonBlankSecret
    api_secret: Secret | None = None
    """Needed for events older than 5 days (sent to `/import`); without it they are dropped as late."""
    api_url: PartnerUrl = DEFAULT_API_URL
    """`https://api-eu.mixpanel.com` for EU data residency, `https://api-in.mixpanel.com` for India."""
    distinct_id_type: DistinctIdType = "mpid"
    """Sent as `distinct_id`: the MPID (the docs' recommendation), a user identity or a device id; the MPID
    stands in when the batch lacks the chosen one."""
    send_people: bool = True
    """"Use Mixpanel People": user attributes as `$set`, purchases as `$transactions`, to `/engage`."""
    include_user_attributes: bool = False
    """Also put the user attributes and the email identity on every event."""
    max_events_per_request: int = Field(default=MAX_EVENTS_PER_REQUEST, ge=1, le=MAX_EVENTS_PER_REQUEST)
    gdpr_api_token: Secret | None = None
    """The GDPR OAuth token (Mixpanel's personal settings, Data & Privacy): with it, data subject requests are sent."""
    gdpr_api_url: PartnerUrl = DEFAULT_GDPR_API_URL
    """`https://eu.mixpanel.com` for EU data residency."""


class Plain(NamedTuple):
    """One Mixpanel event out of a source event; `amount` is the revenue a purchase or refund records."""

    name: str
    attributes: dict[str, Any]
    amount: float | None = None


@dataclass
class Routed:
    """A batch's Mixpanel events by endpoint: `/track` (recent) or `/import` (historical)."""

    recent: list[dict[str, Any]] = field(default_factory=list)
    historical: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    amounts: list[tuple[int, float]] = field(default_factory=list)
    """(time, amount) of each purchase and refund, for the profile's `$transactions`."""
    forwarded: int = 0
    without_products: int = 0


class Adapter:
    status_alerts: ClassVar[dict[int, str]] = PARTNER_STATUS_ALERTS
    dsr_domain: ClassVar[str] = "mixpanel.com"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.token = settings.project_token.get_secret_value()
        self.base_url = settings.api_url.rstrip("/")
        self.json_headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "cdp-actors/0.1",
        }
        self.import_headers = dict(self.json_headers)
        if settings.api_secret is not None:
            credentials = f"{settings.api_secret.get_secret_value()}:".encode()
            self.import_headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()

    def prepare_dsr(self, subject: DsrSubject, now_ms: int) -> Prepared | None:
        """A deletion (erasure) or retrieval (access, portability) request per 2000 distinct ids."""
        path = DSR_PATHS.get(subject.subject_request_type)
        if path is None:
            return None
        if self.settings.gdpr_api_token is None:
            message = "data subject requests need the gdpr_api_token setting (GDPR OAuth token)"
            return Prepared(rejections=[Rejection("Missing Required Setting", message)])
        kind = self.settings.distinct_id_type
        distinct_ids = list(dict.fromkeys([*subject_values(subject, kind), *subject_values(subject, "mpid")]))
        if not distinct_ids:
            return missing_dsr_identity("Mixpanel", f"distinct ids ({kind} or MPID)")
        ccpa = subject.regulation == "ccpa"
        extra = {"disclosure_type": "Data"} if ccpa and subject.subject_request_type != "erasure" else {}
        url = f"{self.settings.gdpr_api_url.rstrip('/')}{path}?{urlencode({'token': self.token})}"
        headers = {**self.json_headers, "Authorization": f"Bearer {self.settings.gdpr_api_token.get_secret_value()}"}
        fields = {"compliance_type": "CCPA" if ccpa else "GDPR", **extra}
        parts = chunks(distinct_ids, MAX_DISTINCT_IDS_PER_DSR)
        return Prepared([HttpRequest(url, json_body({"distinct_ids": part, **fields}), headers) for part in parts])

    def prepare(self, batch: dict[str, Any], now_ms: int) -> Prepared:
        """`forwarded_events` counts source events (consent changes included), not the events they expand to."""
        events, skipped = events_of(batch, SUPPORTED_EVENT_TYPES)
        distinct_id = self._distinct_id(batch)
        routed = self._route(batch, events + consent_events(batch), distinct_id, now_ms)
        if routed.without_products:
            skipped["commerce_event"] = skipped.get("commerce_event", 0) + routed.without_products
        requests = self._event_requests("track", routed.recent, self.json_headers)
        requests += self._event_requests("import?strict=1", routed.historical, self.import_headers)
        requests += self._people_requests(batch, distinct_id, routed.amounts)
        return Prepared(requests, routed.rejections, skipped, forwarded_events=routed.forwarded)

    def _route(self, batch: dict[str, Any], events: list[dict[str, Any]], distinct_id: str, now_ms: int) -> Routed:
        routed = Routed()
        context = self._context_properties(batch)
        envelope = self._envelope(batch, distinct_id)
        for position, event in enumerate(events):
            data = event.get("data") or {}
            time_ms = data.get("timestamp_unixtime_ms") or batch.get("timestamp_unixtime_ms") or now_ms
            plains = plain_events(event)
            if not plains and event.get("event_type") == "commerce_event":
                routed.without_products += 1
                continue
            rejection = self._rejection(event, plains, now_ms - time_ms)
            if rejection is not None:
                routed.rejections.append(rejection)
                continue
            target = routed.recent if now_ms - time_ms <= TRACK_WINDOW_MS else routed.historical
            for plain, insert_id in zip(plains, insert_ids(batch, position, data, len(plains)), strict=True):
                properties = {
                    **context,
                    **converted(plain.attributes),
                    **envelope,  # reserved names win
                    "time": time_ms,
                    "$insert_id": insert_id,
                }
                target.append({"event": plain.name, "properties": properties})
            routed.amounts += [(time_ms, plain.amount) for plain in plains if plain.amount is not None]
            routed.forwarded += 1
        return routed

    def _distinct_id(self, batch: dict[str, Any]) -> str:
        wanted = self.settings.distinct_id_type
        if wanted != "mpid":
            found = identity_or_device_id(batch, wanted)
            if found:
                return str(found)
        return str(batch.get("mpid", ""))

    def _envelope(self, batch: dict[str, Any], distinct_id: str) -> dict[str, Any]:
        envelope = {"token": self.token, "distinct_id": distinct_id}
        if batch.get("ip"):
            envelope["ip"] = batch["ip"]  # Mixpanel geolocates events by it
        return envelope

    def _context_properties(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The device, app and (when configured) user properties every event of the batch carries."""
        device = batch.get("device_info") or {}
        properties = {name: device[key] for key, name in DEVICE_PROPERTIES.items() if device.get(key)}
        version = (batch.get("application_info") or {}).get("application_version")
        if version:
            properties["$app_version_string"] = version
        if self.settings.include_user_attributes:
            properties |= self._people_properties(batch)
        return properties

    def _rejection(self, event: dict[str, Any], plains: list[Plain], age_ms: int) -> Rejection | None:
        if not plains:
            kind = event.get("event_type")
            return Rejection("Missing Event Name", f"a {kind} without a name cannot be sent to Mixpanel")
        if age_ms > TRACK_WINDOW_MS and self.settings.api_secret is None:
            days = age_ms / 86_400_000
            return Rejection(
                "Event Arrived Late",
                f"{plains[0].name!r} is {days:.1f} days old; events older than "
                "5 days go to Mixpanel's /import, which needs the api_secret setting",
            )
        return None

    def _event_requests(self, path: str, events: list[dict[str, Any]], headers: dict[str, str]) -> list[HttpRequest]:
        size = self.settings.max_events_per_request
        url = f"{self.base_url}/{path}"
        return [HttpRequest(url, json_body(chunk), headers) for chunk in chunks(events, size)]

    def _people_requests(
        self, batch: dict[str, Any], distinct_id: str, amounts: list[tuple[int, float]]
    ) -> list[HttpRequest]:
        if not self.settings.send_people:
            return []
        envelope = {"$token": self.token, "$distinct_id": distinct_id, "$ip": batch.get("ip") or "0"}
        updates = []
        people = self._people_properties(batch)
        if people:
            stamp = {"$time": batch["timestamp_unixtime_ms"]} if batch.get("timestamp_unixtime_ms") else {}
            updates.append({**envelope, **stamp, "$set": people})
        for time_ms, amount in amounts:
            transaction = {"$time": iso_seconds(time_ms), "$amount": amount}
            updates.append({**envelope, "$time": time_ms, "$append": {"$transactions": transaction}})
        if not updates:
            return []
        return [HttpRequest(f"{self.base_url}/engage", json_body(updates), self.json_headers)]

    @staticmethod
    def _people_properties(batch: dict[str, Any]) -> dict[str, Any]:
        attributes: dict[str, Any] = batch.get("user_attributes") or {}
        people = {RESERVED_ATTRIBUTES.get(name, name.removeprefix("$")): value for name, value in attributes.items()}
        email = identities(batch).get("email")
        if email:
            people["$email"] = email
        return converted(people)


def plain_events(event: dict[str, Any]) -> list[Plain]:
    """The Mixpanel events one source event becomes; empty when it has no name to send."""
    data = event.get("data") or {}
    kind = event.get("event_type")
    attributes = data.get("custom_attributes") or {}
    if kind == "commerce_event":
        return [
            Plain(item.name, item.attributes, transaction_amount(item.action, item.revenue))
            for item in expand_commerce(data)
        ]
    name = data.get("event_name") if kind == "custom_event" else data.get("screen_name")
    if not name:
        return []
    return [Plain(name if kind == "custom_event" else f"Viewed {name}", attributes)]


def transaction_amount(action: str, revenue: float | None) -> float | None:
    if revenue is None or action not in TOTAL_ACTIONS:
        return None
    return -abs(revenue) if action == "refund" else revenue


def converted(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes as Mixpanel takes them: `"true"` / `"false"` (any case) as booleans, unset values left out."""
    return {name: as_boolean(value) for name, value in present(attributes).items()}


def iso_seconds(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
