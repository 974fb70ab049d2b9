"""Braze output: custom events, purchases and user attributes through Braze's REST `POST /users/track`.

Followed: Braze "Track users" (`Authorization: Bearer <REST API key>`; `attributes`, `events` and
`purchases` arrays of at most 75 objects each per request; every object names its user by `external_id`
or `user_alias`, and alias-only users need `_update_existing_only: false`; event `time` in ISO 8601;
purchase `product_id`, `currency`, `price`, `quantity`; `time` and `event_name` are reserved property
keys), Braze's user attributes object (standard `first_name`, `last_name`, `email`, `phone`, `gender`
as M/F/O/N/P, `home_city`, `country`), and mParticle's Braze event integration page (the External
Identity Type requirement and the push token exception; S2S event types; screen views named by their
screen name; `Session Start` / `Session End` only with Forward Session Events; a purchase expands to one
Braze purchase per product, other commerce events to custom events, refunds plus a total; `$` removed
from attribute names; `session_id` on session, screen and custom events) and System Alerts table.

Guessed: users without the external identity but with a push token, or with Disable External ID
Constraint, go under the user alias `{"alias_label": "mparticle_id", "alias_name": "<mpid>"}`; every
batch sends the user's full attribute set (the outbound batch carries no attribute deltas); gender
values Braze cannot take are dropped, as are the reserved `time` / `event_name` properties; a product
without a price is sold at 0; currency defaults to USD; push message / registration events, Bundle
Commerce Event Data, subscription groups and consent mapping to `$google_ad_*` are not implemented.

Data subject requests: an erasure goes to Braze's "Delete users" endpoint (`POST /users/delete`, API key with
the `users.delete` permission, at most 50 identifiers of one kind per request): the subject's external ids, and
(guessed) its MPID aliases too, since users without the external identity were sent under them. Braze takes no
access or portability request through its API: those are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from pydantic import Field

from cdp_actors.integrations.base import (
    PARTNER_STATUS_ALERTS,
    DsrSubject,
    HttpRequest,
    PartnerUrl,
    Prepared,
    Rejection,
    Secret,
    SettingsModel,
    UserIdentityOrMpid,
    bearer_json_headers,
    chunks,
    consent_events,
    events_of,
    identities,
    json_body,
    missing_dsr_identity,
    mpid_text,
    subject_values,
    user_identity,
)
from cdp_actors.integrations.commerce import expand_commerce

MAX_ITEMS_PER_ARRAY = 75
MAX_DELETIONS_PER_REQUEST = 50
"""Braze's limit of identifiers in one `/users/delete` request."""
MPID_ALIAS_LABEL = "mparticle_id"
DEFAULT_CURRENCY = "USD"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ALWAYS_SUPPORTED = frozenset({"custom_event", "screen_view", "commerce_event"})
_SESSION_EVENT_NAMES = {"session_start": "Session Start", "session_end": "Session End"}
_RESERVED_PROPERTIES = frozenset({"time", "event_name"})
_STANDARD_ATTRIBUTES = {
    "$firstname": "first_name",
    "$lastname": "last_name",
    "$gender": "gender",
    "$city": "home_city",
    "$country": "country",
    "$mobile": "phone",
}
_GENDERS = {
    "m": "M",
    "male": "M",
    "f": "F",
    "female": "F",
    "o": "O",
    "other": "O",
    "n": "N",
    "not applicable": "N",
    "p": "P",
    "prefer not to say": "P",
}


class Settings(SettingsModel):
    api_url: PartnerUrl
    """The Braze instance's REST endpoint, e.g. ``https://rest.iad-01.braze.com``."""
    api_key: Secret = Field(min_length=1)
    """App Group REST API key with the ``users.track`` permission."""
    app_id: str | None = None
    """Braze app identifier, sent on every object when set."""
    external_identity_type: UserIdentityOrMpid = "customer_id"
    """The user identity sent as `external_id`: a user identity type, or ``mpid``."""
    disable_external_id_constraint: bool = False
    """Forward users without the external identity too, under an alias of their MPID."""
    forward_session_events: bool = False


def braze_time(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 in UTC, exact to the millisecond."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def braze_properties(attributes: dict[str, Any]) -> dict[str, Any]:
    """Event attributes as Braze properties: no leading `$`, no reserved keys."""
    renamed = {name.lstrip("$"): value for name, value in attributes.items()}
    return {name: value for name, value in renamed.items() if name and name not in _RESERVED_PROPERTIES}


def braze_attributes(user_attributes: dict[str, Any], user_identities: dict[str, str]) -> dict[str, Any]:
    """mParticle user attributes and identities as Braze standard and custom attributes."""
    mapped: dict[str, Any] = {}
    for name, value in user_attributes.items():
        standard = _STANDARD_ATTRIBUTES.get(name.lower())
        if standard == "gender":
            value = _GENDERS.get(str(value).strip().lower())
            if value is None:
                continue
        mapped[standard or name.lstrip("$")] = value
    if user_identities.get("email"):
        mapped["email"] = user_identities["email"]
    if user_identities.get("mobile_number"):
        mapped.setdefault("phone", user_identities["mobile_number"])
    return mapped


@dataclass
class _Collected:
    """What one batch turns into, accumulated event by event."""

    events: list[dict[str, Any]] = field(default_factory=list)
    purchases: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    forwarded: int = 0


class Adapter:
    status_alerts: ClassVar[dict[int, str]] = PARTNER_STATUS_ALERTS
    dsr_domain: ClassVar[str] = "braze.com"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.api_url.rstrip("/") + "/users/track"
        self.headers = bearer_json_headers(settings.api_key)
        self.supported = _ALWAYS_SUPPORTED | (
            frozenset(_SESSION_EVENT_NAMES) if settings.forward_session_events else frozenset()
        )

    def prepare_dsr(self, subject: DsrSubject, now_ms: int) -> Prepared | None:
        """An erasure as `/users/delete` requests: the external ids, then the MPID aliases; other types: None."""
        if subject.subject_request_type != "erasure":
            return None
        wanted = self.settings.external_identity_type
        external_ids = subject_values(subject, wanted)
        alias_mpids = [] if wanted == "mpid" else subject.mpids  # the MPID is the external id then
        aliases = [{"alias_label": MPID_ALIAS_LABEL, "alias_name": str(mpid)} for mpid in alias_mpids]
        bodies = [{"external_ids": part} for part in chunks(external_ids, MAX_DELETIONS_PER_REQUEST)]
        bodies += [{"user_aliases": part} for part in chunks(aliases, MAX_DELETIONS_PER_REQUEST)]
        if not bodies:
            return missing_dsr_identity("Braze", f"{wanted} or an MPID alias")
        url = self.settings.api_url.rstrip("/") + "/users/delete"
        return Prepared([HttpRequest(url, json_body(body), self.headers) for body in bodies])

    def prepare(self, batch: dict[str, Any], now_ms: int) -> Prepared:
        kept, skipped = events_of(batch, self.supported)
        events = kept + consent_events(batch)
        user = self._user_key(batch)
        attributes = braze_attributes(batch.get("user_attributes") or {}, identities(batch))
        if user is None:
            missing = [self._missing_identity()] if events or attributes else []
            return Prepared(rejections=missing, skipped=skipped)
        collected = _Collected()
        for event in events:
            self._collect(event, user, batch, collected)
        attribute_objects = [{**user, **self._app(), **attributes}] if attributes else []
        requests = self._requests(attribute_objects, collected.events, collected.purchases)
        return Prepared(requests, collected.rejections, skipped, collected.forwarded)

    # ---- the user ---------------------------------------------------------------------------------------

    def _user_key(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        """How Braze objects name this user: `external_id`, else (push token or setting) an MPID alias."""
        external_id = user_identity(batch, self.settings.external_identity_type)
        if external_id:
            return {"external_id": external_id}
        mpid = mpid_text(batch)
        has_push_token = bool((batch.get("device_info") or {}).get("push_token"))
        if mpid is not None and (has_push_token or self.settings.disable_external_id_constraint):
            return {"user_alias": {"alias_label": MPID_ALIAS_LABEL, "alias_name": mpid}, "_update_existing_only": False}
        return None

    def _missing_identity(self) -> Rejection:
        wanted = self.settings.external_identity_type
        return Rejection("Missing Identity and Device ID", f"Braze needs {wanted} or a push token: the batch has none")

    def _app(self) -> dict[str, str]:
        return {"app_id": self.settings.app_id} if self.settings.app_id else {}

    # ---- events -----------------------------------------------------------------------------------------

    def _collect(self, event: dict[str, Any], user: dict[str, Any], batch: dict[str, Any], into: _Collected) -> None:
        kind, data = event.get("event_type", ""), event.get("data") or {}
        time = braze_time(data.get("timestamp_unixtime_ms") or batch.get("timestamp_unixtime_ms") or 0)
        if kind == "commerce_event":
            before = len(into.events) + len(into.purchases)
            self._collect_commerce(data, user, time, into)
            into.forwarded += before < len(into.events) + len(into.purchases)
            return
        name = self._event_name(kind, data)
        if not name:
            alert = "Missing Screen Name" if kind == "screen_view" else "Missing Event Name"
            into.rejections.append(Rejection(alert, f"a {kind} without a name cannot be forwarded to Braze"))
            return
        properties = braze_properties(data.get("custom_attributes") or {})
        if data.get("session_id") is not None:
            properties["session_id"] = data["session_id"]
        into.events.append(self._event_object(user, name, time, properties))
        into.forwarded += 1

    @staticmethod
    def _event_name(kind: str, data: dict[str, Any]) -> str | None:
        if kind == "screen_view":
            return data.get("screen_name")
        return _SESSION_EVENT_NAMES.get(kind) or data.get("event_name")

    def _event_object(self, user: dict[str, Any], name: str, time: str, properties: dict[str, Any]) -> dict[str, Any]:
        body = {**user, **self._app(), "name": name, "time": time}
        if properties:
            body["properties"] = properties
        return body

    def _collect_commerce(self, data: dict[str, Any], user: dict[str, Any], time: str, into: _Collected) -> None:
        currency = data.get("currency_code") or DEFAULT_CURRENCY
        for item in expand_commerce(data):
            if item.action == "purchase" and item.kind == "total":
                continue  # Braze computes revenue from the purchases themselves
            if item.action == "purchase" and item.product is not None:
                purchase = self._purchase_object(user, item.product, currency, time, item.attributes)
                if isinstance(purchase, Rejection):
                    into.rejections.append(purchase)
                else:
                    into.purchases.append(purchase)
            else:
                into.events.append(self._event_object(user, item.name, time, braze_properties(item.attributes)))

    def _purchase_object(
        self, user: dict[str, Any], product: dict[str, Any], currency: str, time: str, attributes: dict[str, Any]
    ) -> dict[str, Any] | Rejection:
        product_id = product.get("id") or product.get("name")
        if not product_id:
            return Rejection("Missing Required Attribute", "a purchased product without id or name (Braze product_id)")
        body = {
            **user,
            **self._app(),
            "product_id": str(product_id),
            "currency": currency,
            "price": float(product.get("price") or 0),
            "quantity": max(1, round(product.get("quantity") or 1)),
            "time": time,
        }
        properties = braze_properties(attributes)
        if properties:
            body["properties"] = properties
        return body

    # ---- requests ---------------------------------------------------------------------------------------

    def _requests(
        self, attributes: list[dict[str, Any]], events: list[dict[str, Any]], purchases: list[dict[str, Any]]
    ) -> list[HttpRequest]:
        """As many requests as the longest array needs, each array at most 75 objects per request."""
        arrays = {"attributes": attributes, "events": events, "purchases": purchases}
        count = max(-(-len(items) // MAX_ITEMS_PER_ARRAY) for items in arrays.values())
        requests = []
        for n in range(count):
            window = slice(n * MAX_ITEMS_PER_ARRAY, (n + 1) * MAX_ITEMS_PER_ARRAY)
            body = {name: items[window] for name, items in arrays.items() if items[window]}
            requests.append(HttpRequest(self.url, json_body(body), self.headers))
        return requests
