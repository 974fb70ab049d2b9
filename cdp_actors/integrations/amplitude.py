"""Amplitude output: events to the HTTP V2 API, `POST {api_url}/2/httpapi` with `{"api_key", "events"}`.

Followed: the product docs' Amplitude page (user id from the chosen identity; device id from the IDFA, falling
back to the IDFV, on iOS and from the Android ID, falling back to the advertising id, on Android; the device
ids also in Amplitude's own fields; no user or device id: nothing forwarded; screen views as
`Viewed <screen name>`; `session_start` / `session_end`; commerce events expanded, with one revenue event per
purchase or refund and none for events without products; custom events need a name; user attributes sent even
without events; consent changes as `Consent Given` / `Consent Rejected` custom events), and Amplitude's HTTP V2
API reference (at most 2000 events per request; `time` and `session_id`, the session's start, in
milliseconds; `insert_id` for de-duplication; `price`, `quantity`, `revenue`, `productId`, `revenueType` for
revenue; user and device ids of at least 5 characters unless `options.min_id_length` says otherwise; all-zero
IDFAs rejected).

Guessed, where neither says: the device id order is a setting, by default the documented one, with the MPID
as an opt-in last resort; the revenue event is Amplitude's `revenue_amount` (which its UI names
`[Amplitude] Revenue`) carrying the event's total amount (negative for refunds), with `productId` only when
a single product was bought; the purchase or refund `... - Total` event stands for the documented transaction
event and lists the products; a batch without events sends its user attributes as an `$identify` event;
only custom, screen view, commerce, session start and end events (and consent changes) are forwarded.

Data subject requests: an erasure goes to Amplitude's User Privacy API (`POST {privacy_api_url}/api/2/deletions/users`,
HTTP Basic with the project's API key and secret key, at most 100 `user_ids` per request), naming the subject by
its `user_id_type` identity; without a `secret_key` setting, or a user id, nothing is sent (the request's status
says why). Amplitude takes no access or portability request through that API: those are skipped.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field

from cdp_actors.integrations.base import (
    PARTNER_STATUS_ALERTS,
    ZERO_AD_ID,
    DsrSubject,
    HttpRequest,
    NonBlankSecret,
    PartnerUrl,
    Prepared,
    Rejection,
    Secret,
    SettingsModel,
    chunks,
    consent_events,
    events_of,
    identity_or_device_id,
    insert_ids,
    json_body,
    missing_dsr_identity,
    mpid_text,
    present,
    subject_values,
)
from cdp_actors.integrations.commerce import Expanded, expand_commerce

DEFAULT_API_URL = "https://api2.amplitude.com"
DEFAULT_PRIVACY_API_URL = "https://amplitude.com"
MAX_DELETIONS_PER_REQUEST = 100
"""The User Privacy API's limit of ids in one deletion request."""
MAX_EVENTS_PER_REQUEST = 2000
AMPLITUDE_MIN_ID_LENGTH = 5
REVENUE_EVENT_TYPE = "revenue_amount"
IDENTIFY_EVENT_TYPE = "$identify"
SUPPORTED_EVENT_TYPES = frozenset({"custom_event", "screen_view", "commerce_event", "session_start", "session_end"})
UserIdType = Literal["customer_id", "email", "mpid", "other", "other_id_2", "other_id_3", "other_id_4", "none"]
DeviceIdType = Literal[
    "ios_advertising_id",
    "ios_idfv",
    "android_uuid",
    "android_advertising_id",
    "roku_advertising_id",
    "roku_publisher_id",
    "fire_advertising_id",
    "mpid",
]
DOCUMENTED_DEVICE_ID_ORDER: tuple[DeviceIdType, ...] = (
    "ios_advertising_id",
    "ios_idfv",
    "android_uuid",
    "android_advertising_id",
    "roku_advertising_id",
    "roku_publisher_id",
    "fire_advertising_id",
)
DEVICE_FIELDS = {
    "platform": "platform",
    "os_version": "os_version",
    "brand": "device_brand",
    "device_manufacturer": "device_manufacturer",
    "device_model": "device_model",
    "network_carrier": "carrier",
    "locale_language": "language",
    "ios_advertising_id": "idfa",
    "ios_idfv": "idfv",
    "android_advertising_id": "adid",
    "android_uuid": "android_id",
}


class Settings(SettingsModel):
    api_key: NonBlankSecret
    api_url: PartnerUrl = DEFAULT_API_URL
    """`https://api.eu.amplitude.com` for an EU organisation."""
    user_id_type: UserIdType = "customer_id"
    device_id_types: tuple[DeviceIdType, ...] = DOCUMENTED_DEVICE_ID_ORDER
    """Device ids to try, in order, for Amplitude's `device_id`; add "mpid" to fall back to the MPID."""
    min_id_length: int | None = Field(default=None, ge=1)
    """Sent as `options.min_id_length` when set; shorter user and device ids are treated as missing."""
    max_events_per_request: int = Field(default=MAX_EVENTS_PER_REQUEST, ge=1, le=MAX_EVENTS_PER_REQUEST)
    secret_key: Secret | None = None
    """The project's secret key: with it, erasures are sent to the User Privacy API."""
    privacy_api_url: PartnerUrl = DEFAULT_PRIVACY_API_URL
    """`https://analytics.eu.amplitude.com` for an EU organisation."""


@dataclass
class Translated:
    events: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    forwarded: int = 0
    without_products: int = 0


@dataclass(frozen=True)
class BatchContext:
    """What every Amplitude event made from one batch shares."""

    batch: dict[str, Any]
    who: dict[str, str]
    device: dict[str, Any]
    user_properties: dict[str, Any]
    now_ms: int

    def events(self, position: int, event: dict[str, Any], partials: list[dict[str, Any]]) -> list[dict[str, Any]]:
        data = event.get("data") or {}
        time_ms = data.get("timestamp_unixtime_ms") or self.batch.get("timestamp_unixtime_ms") or self.now_ms
        head = {**self.who, "time": time_ms, **session_of(event, time_ms)}
        ids = insert_ids(self.batch, position, data, len(partials))
        return [
            {"event_type": partial["event_type"], **head, "insert_id": insert_id, **partial, **self._tail()}
            for partial, insert_id in zip(partials, ids, strict=True)
        ]

    def identify(self) -> dict[str, Any]:
        """User attributes of a batch without events, which the docs say are forwarded all the same."""
        time_ms = self.batch.get("timestamp_unixtime_ms") or self.now_ms
        return {
            "event_type": IDENTIFY_EVENT_TYPE,
            **self.who,
            "time": time_ms,
            "insert_id": f"{self.batch.get('batch_id', 0)}-identify",
            **self._tail(),
        }

    def _tail(self) -> dict[str, Any]:
        return {"user_properties": self.user_properties, **self.device} if self.user_properties else dict(self.device)


class Adapter:
    status_alerts: ClassVar[dict[int, str]] = PARTNER_STATUS_ALERTS
    dsr_domain: ClassVar[str] = "amplitude.com"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.api_key = settings.api_key.get_secret_value()
        self.url = settings.api_url.rstrip("/") + "/2/httpapi"
        self.headers = {"Content-Type": "application/json", "Accept": "*/*", "User-Agent": "cdp-actors/0.1"}
        self.min_id_length = settings.min_id_length or AMPLITUDE_MIN_ID_LENGTH

    def prepare(self, batch: dict[str, Any], now_ms: int) -> Prepared:
        """`forwarded_events` counts source events (consent changes included), not the events they expand to."""
        events, skipped = events_of(batch, SUPPORTED_EVENT_TYPES)
        events += consent_events(batch)
        who = self._identifiers(batch)
        if not who:
            return Prepared(rejections=self._unidentified(batch, events), skipped=skipped)
        translated = self._translate(batch, events, who, now_ms)
        if translated.without_products:
            skipped["commerce_event"] = skipped.get("commerce_event", 0) + translated.without_products
        return Prepared(self._requests(translated.events), translated.rejections, skipped, translated.forwarded)

    def prepare_dsr(self, subject: DsrSubject, now_ms: int) -> Prepared | None:
        """An erasure as User Privacy API deletions of the subject's user ids; other request types: None."""
        if subject.subject_request_type != "erasure":
            return None
        if self.settings.secret_key is None:
            message = "erasures need the project's secret_key setting (User Privacy API)"
            return Prepared(rejections=[Rejection("Missing Required Setting", message)])
        kind = self.settings.user_id_type
        user_ids = [] if kind == "none" else subject_values(subject, kind)
        if not user_ids:
            return missing_dsr_identity("Amplitude", f"user ids ({kind})")
        credentials = f"{self.api_key}:{self.settings.secret_key.get_secret_value()}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode()
        headers = {"Content-Type": "application/json", "Authorization": authorization}
        url = self.settings.privacy_api_url.rstrip("/") + "/api/2/deletions/users"
        parts = chunks(user_ids, MAX_DELETIONS_PER_REQUEST)
        return Prepared([HttpRequest(url, json_body({"user_ids": part}), headers) for part in parts])

    def _identifiers(self, batch: dict[str, Any]) -> dict[str, str]:
        """Amplitude's `user_id` and `device_id`, those found."""
        found = {}
        user_id = self._usable_id(batch, self.settings.user_id_type)
        if user_id:
            found["user_id"] = user_id
        device_id = next(filter(None, (self._usable_id(batch, kind) for kind in self.settings.device_id_types)), None)
        if device_id:
            found["device_id"] = device_id
        return found

    def _usable_id(self, batch: dict[str, Any], kind: str) -> str | None:
        if kind == "none":
            return None
        value = mpid_text(batch) if kind == "mpid" else identity_or_device_id(batch, kind)
        text = str(value) if value is not None else ""
        return text if len(text) >= self.min_id_length and text != ZERO_AD_ID else None  # Amplitude rejects it

    def _unidentified(self, batch: dict[str, Any], events: list[dict[str, Any]]) -> list[Rejection]:
        if not events and not batch.get("user_attributes"):
            return []
        kinds = [self.settings.user_id_type, *self.settings.device_id_types]
        wanted = ", ".join(kind for kind in dict.fromkeys(kinds) if kind != "none")
        return [
            Rejection(
                "Missing Identity and Device ID",
                f"none of {wanted} (of at least {self.min_id_length} "
                f"characters) is in the batch; {len(events)} events not forwarded to Amplitude",
            )
        ]

    def _translate(
        self, batch: dict[str, Any], events: list[dict[str, Any]], who: dict[str, str], now_ms: int
    ) -> Translated:
        context = BatchContext(batch, who, device_fields(batch), present(batch.get("user_attributes") or {}), now_ms)
        translated = Translated()
        for position, event in enumerate(events):
            partials = amplitude_partials(event)
            if partials:
                translated.events += context.events(position, event, partials)
                translated.forwarded += 1
            elif event.get("event_type") == "commerce_event":
                translated.without_products += 1
            else:
                translated.rejections.append(
                    Rejection(
                        "Missing Event Name", f"a {event.get('event_type')} without a name cannot be sent to Amplitude"
                    )
                )
        if not events and context.user_properties:
            translated.events.append(context.identify())
        return translated

    def _requests(self, events: list[dict[str, Any]]) -> list[HttpRequest]:
        options = {"options": {"min_id_length": self.settings.min_id_length}} if self.settings.min_id_length else {}
        size = self.settings.max_events_per_request
        bodies = [{"api_key": self.api_key, "events": chunk, **options} for chunk in chunks(events, size)]
        return [HttpRequest(self.url, json_body(body), self.headers) for body in bodies]


def amplitude_partials(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The event-specific part of each Amplitude event one source event becomes; empty when there is nothing to
    send (a custom event or screen view without a name, a commerce event without products)."""
    data = event.get("data") or {}
    kind = event.get("event_type")
    if kind == "commerce_event":
        return commerce_partials(data)
    if kind in ("session_start", "session_end"):
        name = kind
    elif kind == "screen_view":
        name = f"Viewed {data['screen_name']}" if data.get("screen_name") else ""
    else:
        name = data.get("event_name") or ""
    if not name:
        return []
    return [with_properties({"event_type": name}, data.get("custom_attributes") or {})]


def commerce_partials(data: dict[str, Any]) -> list[dict[str, Any]]:
    expanded = expand_commerce(data)
    if all(item.kind == "total" for item in expanded):  # the docs: no products, nothing forwarded
        return []
    products = [item.product for item in expanded if item.kind == "product" and item.product is not None]
    partials = []
    for item in expanded:
        if item.kind != "total":
            partials.append(with_properties({"event_type": item.name}, item.attributes))
            continue
        partials.append(with_properties({"event_type": item.name}, {**item.attributes, "products": products}))
        if item.revenue is not None:
            partials.append(revenue_partial(item, item.revenue, products))
    return partials


def revenue_partial(total: Expanded, revenue: float, products: list[dict[str, Any]]) -> dict[str, Any]:
    amount = -abs(revenue) if total.action == "refund" else revenue
    partial = with_properties({"event_type": REVENUE_EVENT_TYPE}, total.attributes)
    partial |= {"price": amount, "quantity": 1, "revenue": amount, "revenueType": total.action}
    if len(products) == 1 and products[0].get("id"):
        partial["productId"] = str(products[0]["id"])
    return partial


def with_properties(partial: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
    properties = present(attributes)
    if properties:
        partial["event_properties"] = properties
    return partial


def session_of(event: dict[str, Any], time_ms: int) -> dict[str, int]:
    """Amplitude's `session_id` is the session's start time; left out (no session) when unknown."""
    data = event.get("data") or {}
    start = data.get("session_start_unixtime_ms") or (time_ms if event.get("event_type") == "session_start" else None)
    return {"session_id": start} if start else {}


def device_fields(batch: dict[str, Any]) -> dict[str, Any]:
    device = batch.get("device_info") or {}
    fields = {name: device[key] for key, name in DEVICE_FIELDS.items() if device.get(key) not in (None, "")}
    if fields.get("idfa") == ZERO_AD_ID:
        del fields["idfa"]
    version = (batch.get("application_info") or {}).get("application_version")
    if version:
        fields["app_version"] = version
    if batch.get("ip"):
        fields["ip"] = batch["ip"]
    return fields
