"""Firehose output: mParticle's partner protocol over HTTP, so partner endpoints built for mParticle work as is.

Follows the mParticle Firehose docs and Java SDK 3.2.0 JSON (https://docs.mparticle.com/developers/partners/firehose/,
the "Outbound Integrations" / "HTTP Integrations" guide, and the SDK's `examples/json` samples):

- one `event_processing_request` per outbound batch: `account`, `source_id`, `mpid` (a string),
  `user_identities` and the device identities in `runtime_environment.identities` (where the SDK puts them;
  it has no top-level `device_identities` on event requests), `user_attributes` / `user_attribute_lists`,
  `consent_state` (`gdpr_consent_state` / `ccpa_consent_state`), `system_notifications`
  (`{type: gdpr_consent_state, purpose, old_gdpr_consent_state, new_gdpr_consent_state}`) and `events`
  in Firehose shape (commerce events become `product_action` / `promotion_action` / `impression`);
- `audience_membership_change_request` with `user_profiles[].audiences[]` carrying an `action` (the
  current shape, as in the SDK's `audience_membership_change_request.json`; SDKs before 2.x used
  `added_audiences` / `removed_audiences`).

Every id is derived, never random: the message id from the batch id (membership requests: from their
changes), event ids from the outbound `event_id`, timestamps from the data, so a replay produces
byte-identical requests and the partner can dedupe.

Guesses, where the docs are silent:
- credentials: `api_key` goes out as ``Authorization: Token <api_key>`` (the header mParticle's HTTP
  Firehose sends); `api_secret`, which mParticle has no counterpart for, as ``X-Firehose-Api-Secret``;
- every attribute value is a string in Firehose: numbers and booleans are written as JSON would
  (``true``, ``1.5``), list values of maps that only take strings (event attributes, custom flags,
  `user_attribute_change`) as JSON array text; null values (tags) stay null;
- Events API → Firehose event types: `crash_report` → `error` (`is_crash` unless `exception_handled`),
  `opt_out` → `privacy_setting_change` (`app_data_collection`), `push_registration` → `push_subscription`,
  `push_message` → `push_message_open` when its type is `action`, else `push_message_receipt`;
  `application_initialized` → `install` / `upgrade` on first run / upgrade, else `initialize`;
  the `attribution` custom event type, which Firehose's enum lacks, is sent as `other`;
- `push_token` is an Apple or Google token by platform; with no platform (membership changes) it is left out;
- a batch with nothing to forward (no Firehose events and no consent change) is not sent unless
  `allow_eventless_batches`, after the registration permission of that name;
- membership changes wait in the bulk queue up to `bulk_max_age_s` (default 5 minutes) or until 1,000 are
  waiting; the partner's registration declares its own bulk settings, which we do not read;
- a data subject request goes out as a `dsr_processing_request` (the SDK's `DsrProcessingRequest`: `account`,
  `subject_request_id`, `subject_request_type`, `submitted_time` as epoch seconds with a fraction, as the SDK writes
  an `Instant`, `subject_identities` keyed by OpenDSR identity type, `api_version`, `regulation`); its type enum
  has only `erasure`, so access and portability requests are skipped; identity types OpenDSR has no name for
  (`other`, phone numbers, ...) are left out, and a subject with none of the others is not sent;
- `integration_attributes` and `platform_fields` are not sent (the outbound batch has no integration id and
  no workspace names); audiences carry no `audience_subscription_settings` (membership changes have none).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import msgspec
from pydantic import Field

from cdp_actors.integrations.base import (
    PARTNER_STATUS_ALERTS,
    BulkMaxAge,
    DsrSubject,
    HttpRequest,
    MembershipChange,
    Prepared,
    Secret,
    SettingsModel,
    chunks,
    json_body,
    missing_dsr_identity,
)

FIREHOSE_VERSION = "3.2.0"
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "cdp-actors:firehose")

Json = dict[str, Any]
Converted = tuple[str, Json]
"""A Firehose event type and its type-specific fields."""


class Settings(SettingsModel):
    url: str = Field(pattern=r"^https?://[^/\s]+")
    api_key: Secret | None = None
    """Sent as ``Authorization: Token <api_key>`` when set."""
    api_secret: Secret | None = None
    """Sent as ``X-Firehose-Api-Secret: <api_secret>`` when set."""
    firehose_version: str = Field(FIREHOSE_VERSION, pattern=r"^\d+\.\d+\.\d+$")
    account_id: int = Field(0, ge=0)
    """The `account.account_id` of every message (the partner's id for this customer)."""
    account_settings: dict[str, Secret] = {}
    """The partner-defined `account.account_settings` (e.g. ``apiKey``); values may be ``${ENV_VAR}``."""
    allow_eventless_batches: bool = False
    """Also send batches that carry no Firehose event and no consent change."""
    bulk_max_age_s: BulkMaxAge = 300
    """How long a membership change may wait in the bulk queue (Firehose's `bulk_forward_wait_in_minutes`)."""


# ---- ids, identities and values ------------------------------------------------------------------------


def derived_uuid(kind: str, key: object) -> str:
    """A UUID fixed by `kind` and `key`, so the same input always yields the same message or event id."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{kind}:{key}"))


def message_base(kind: str, message_id: str, timestamp_ms: int, version: str) -> Json:
    return {"type": kind, "id": message_id, "timestamp_ms": timestamp_ms, "firehose_version": version}


USER_IDENTITY_TYPES = {
    "customer_id": "customer",
    "email": "email",
    "facebook": "facebook",
    "twitter": "twitter",
    "google": "google",
    "microsoft": "microsoft",
    "yahoo": "yahoo",
    "other": "other",
    **{f"other_id_{n}": f"other{n}" for n in range(2, 11)},
    "mobile_number": "mobile_number",
    "phone_number_2": "phone_number_2",
    "phone_number_3": "phone_number_3",
}
"""Our (Events API) user identity names → Firehose `UserIdentity.Type`; `alias` etc. have none."""
DEVICE_IDENTITY_TYPES = {
    "android_uuid": "android_id",
    "android_advertising_id": "google_advertising_id",
    "ios_advertising_id": "ios_advertising_id",
    "ios_idfv": "ios_vendor_id",
    "roku_advertising_id": "roku_advertising_id",
    "roku_publisher_id": "roku_publisher_id",
    "microsoft_advertising_id": "microsoft_advertising_id",
    "microsoft_publisher_id": "microsoft_publisher_id",
    "fire_advertising_id": "fire_advertising_id",
}
PUSH_TOKEN_TYPES = {
    "ios": "apple_push_notification_token",
    "tvos": "apple_push_notification_token",
    "android": "google_cloud_messaging_token",
    "firetv": "google_cloud_messaging_token",
}


def identity(firehose_type: str, value: str) -> Json:
    return {"type": firehose_type, "encoding": "raw", "value": value}


def user_identity(name: str | None, value: str | None) -> Json | None:
    firehose_type = USER_IDENTITY_TYPES.get(name or "")
    return identity(firehose_type, value) if firehose_type and value else None


def device_identities(values: dict[str, Any], runtime_type: str | None) -> list[Json]:
    names = {**DEVICE_IDENTITY_TYPES, "push_token": PUSH_TOKEN_TYPES.get(runtime_type or "")}
    return [identity(names[name], value) for name, value in values.items() if names.get(name) and value]


def text(value: Any) -> str | None:
    """A Firehose attribute value: always a string (or null, for tags)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return msgspec.json.encode(value).decode()


def string_map(values: dict[str, Any] | None) -> dict[str, str | None]:
    return {name: text(value) for name, value in (values or {}).items()}


def compact(fields: Json) -> Json:
    """Without absent values, as the Java SDK serialises (`NON_EMPTY`)."""
    return {name: value for name, value in fields.items() if value is not None and value != {} and value != []}


def renamed(source: dict[str, Any], names: dict[str, str]) -> Json:
    return {firehose: source[ours] for ours, firehose in names.items() if source.get(ours) is not None}


# ---- events --------------------------------------------------------------------------------------------

CUSTOM_EVENT_TYPES = frozenset(
    {
        "unknown",
        "navigation",
        "location",
        "search",
        "transaction",
        "user_content",
        "user_preference",
        "social",
        "other",
        "media",
    }
)
APPLICATION_STATES = {
    "application_exit": "exit",
    "application_background": "background",
    "application_foreground": "foreground",
}
PRODUCT_ACTIONS = {
    "add_to_cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "checkout": "checkout",
    "checkout_option": "checkout_option",
    "click": "click",
    "view_detail": "view_detail",
    "purchase": "purchase",
    "refund": "refund",
    "add_to_wishlist": "add_to_wishlist",
    "remove_from_wishlist": "remove_from_wish_list",
    "remove_from_wish_list": "remove_from_wish_list",
}
PRODUCT_FIELDS = {
    "id": "id",
    "name": "name",
    "brand": "brand",
    "category": "category",
    "variant": "variant",
    "position": "position",
    "price": "price",
    "quantity": "quantity",
    "coupon_code": "coupon_code",
    "total_product_amount": "total_amount",
}
TOTAL_FIELDS = {
    "transaction_id": "transaction_id",
    "affiliation": "affiliation",
    "total_amount": "total_amount",
    "tax_amount": "tax_amount",
    "shipping_amount": "shipping_amount",
}
PROMOTION_FIELDS = {"id": "id", "name": "name", "creative": "creative", "position": "position"}
LOCATION_FIELDS = {"latitude": "latitude", "longitude": "longitude", "accuracy": "accuracy"}


def attributes_and_flags(data: Json) -> Json:
    return {
        "attributes": string_map(data.get("custom_attributes")),
        "custom_flags": string_map(data.get("custom_flags")),
    }


def custom_event(data: Json) -> Converted:
    kind = data.get("custom_event_type")
    return "custom_event", {
        "name": data.get("event_name"),
        "custom_event_type": kind if kind in CUSTOM_EVENT_TYPES else "other",
        **attributes_and_flags(data),
    }


def screen_view(data: Json) -> Converted:
    return "screen_view", {"screen_name": data.get("screen_name"), **attributes_and_flags(data)}


def session_start(data: Json) -> Converted:
    return "session_start", {}


def session_end(data: Json) -> Converted:
    return "session_end", {"session_length_ms": data.get("session_duration_ms")}


def crash_report(data: Json) -> Converted:
    breadcrumbs = [item if isinstance(item, str) else text(item) for item in data.get("breadcrumbs") or []]
    return "error", {
        "message": data.get("message"),
        "is_crash": data.get("exception_handled") is not True,
        "stack_trace": data.get("stack_trace"),
        "breadcrumbs": breadcrumbs,
        "attributes": string_map(data.get("custom_attributes")),
    }


def opt_out(data: Json) -> Converted:
    return "privacy_setting_change", {"setting": "app_data_collection", "is_enabled": not data.get("is_opted_out")}


def user_attribute_change(data: Json) -> Converted:
    name = data.get("user_attribute_name") or ""
    if data.get("deleted"):
        return "user_attribute_change", {"removed": {name: text(data.get("old"))}}
    return "user_attribute_change", {"added": {name: text(data.get("new"))}}


def user_identity_change(data: Json) -> Converted | None:
    def entry(side: str) -> list[Json]:
        found = data.get(side) or {}
        made = user_identity(found.get("identity_type"), found.get("identity"))
        return [made] if made else []

    added, removed = entry("new"), entry("old")
    if not added and not removed:
        return None  # a device identity, or a type Firehose cannot name
    return "user_identity_change", {"added": added, "removed": removed}


def push_registration(data: Json) -> Converted | None:
    token = data.get("registration_token")
    if not token:
        return None
    action = "unsubscribe" if data.get("register") is False else "subscribe"
    return "push_subscription", {"action": action, "token": token}


def push_message(data: Json) -> Converted:
    kind = "push_message_open" if data.get("push_message_type") == "action" else "push_message_receipt"
    return kind, {"payload": data.get("push_notification_payload")}


def application_state_transition(data: Json) -> Converted:
    transition = data.get("application_transition_type", "")
    if transition == "application_initialized":
        state = "install" if data.get("is_first_run") else "upgrade" if data.get("is_upgrade") else "initialize"
    else:
        state = APPLICATION_STATES.get(transition, "initialize")
    return "application_state_transition", {"application_state": state, "launch_referral": data.get("launch_referral")}


def product(item: Json) -> Json:
    return {**renamed(item, PRODUCT_FIELDS), **compact({"attributes": string_map(item.get("custom_attributes"))})}


def product_action(data: Json, action: Json) -> Converted | None:
    name = PRODUCT_ACTIONS.get(action.get("action", ""))
    if name is None:
        return None
    return "product_action", {
        "action": name,
        **renamed(action, TOTAL_FIELDS),
        "currency_code": data.get("currency_code"),
        "coupon_code": action.get("coupon_code"),
        "products": [product(item) for item in action.get("products") or []],
        **attributes_and_flags(data),
    }


def promotion_action(data: Json, action: Json) -> Converted:
    promotions = [renamed(item, PROMOTION_FIELDS) for item in action.get("promotions") or []]
    return "promotion_action", {
        "action": action.get("action", "unknown"),
        "promotions": promotions,
        **attributes_and_flags(data),
    }


def impression(data: Json, impressions: list[Json]) -> Converted:
    listed = [
        compact(
            {
                "impression_list_name": item.get("product_impression_list"),
                "products": [product(p) for p in item.get("products") or []],
            }
        )
        for item in impressions
    ]
    return "impression", {"impressions": listed, **attributes_and_flags(data)}


def commerce_event(data: Json) -> Converted | None:
    if data.get("product_action"):
        return product_action(data, data["product_action"])
    if data.get("promotion_action"):
        return promotion_action(data, data["promotion_action"])
    if data.get("product_impressions"):
        return impression(data, data["product_impressions"])
    return None


CONVERTERS: dict[str, Callable[[Json], Converted | None]] = {
    "session_start": session_start,
    "session_end": session_end,
    "custom_event": custom_event,
    "screen_view": screen_view,
    "crash_report": crash_report,
    "opt_out": opt_out,
    "user_attribute_change": user_attribute_change,
    "user_identity_change": user_identity_change,
    "push_registration": push_registration,
    "push_message": push_message,
    "application_state_transition": application_state_transition,
    "commerce_event": commerce_event,
}
"""Events API event type → its Firehose conversion; None from a converter: this event cannot be sent."""


def event_location(data: Json) -> Json | None:
    location = data.get("location")
    return renamed(location, LOCATION_FIELDS) if location else None


def firehose_event(event: Json, fallback_id: str) -> Json | None:
    converter = CONVERTERS.get(event.get("event_type", ""))
    data = event.get("data") or {}
    converted = converter(data) if converter else None
    if converted is None:
        return None
    kind, fields = converted
    event_id = data.get("event_id")
    return compact(
        {
            "type": kind,
            "id": derived_uuid("event", event_id) if event_id is not None else fallback_id,
            "timestamp_ms": data.get("timestamp_unixtime_ms"),
            "source_id": data.get("source_message_id"),
            "session_id": data.get("session_id"),
            "location": event_location(data),
            **compact(fields),
        }
    )


def firehose_events(batch: Json, message_id: str) -> tuple[list[Json], dict[str, int]]:
    """The batch's events in Firehose shape, and counts of the ones that cannot be sent, by Events API type."""
    converted: list[Json] = []
    skipped: dict[str, int] = {}
    for n, event in enumerate(batch.get("events") or []):
        made = firehose_event(event, derived_uuid(message_id, n))
        if made is None:
            kind = event.get("event_type", "")
            skipped[kind] = skipped.get(kind, 0) + 1
        else:
            converted.append(made)
    return converted, skipped


# ---- the rest of the event processing request ------------------------------------------------------------

RUNTIME_TYPES = {
    "iOS": "ios",
    "Android": "android",
    "web": "mobileweb",
    "tvOS": "tvos",
    "roku": "roku",
    "xbox": "xbox",
    "fire_tv": "firetv",
    "alexa": "alexa",
    "smart_tv": "smarttv",
}
OS_RUNTIME_TYPES = {
    "IOS": "ios",
    "UnityIOS": "ios",
    "Android": "android",
    "UnityAndroid": "android",
    "MobileWeb": "mobileweb",
    "TVOS": "tvos",
    "Roku": "roku",
    "Xbox": "xbox",
    "FireTV": "firetv",
    "Alexa": "alexa",
    "SmartTV": "smarttv",
}
_SHARED_DEVICE_FIELDS = {
    "build_identifier": "build_id",
    "brand": "brand",
    "product": "product",
    "device": "name",
    "os_version": "os_version",
    "screen_height": "screen_height",
    "screen_width": "screen_width",
    "screen_dpi": "screen_dpi",
    "locale_language": "locale_language",
    "locale_country": "locale_country",
    "network_country": "network_country",
    "network_carrier": "network_carrier",
    "network_code": "network_code",
    "network_mobile_country_code": "network_mobile_country_code",
    "timezone_offset": "timezone_offset",
    "is_tablet": "is_tablet",
    "radio_access_technology": "radio_access_technology",
}
DEVICE_FIELDS = {
    **_SHARED_DEVICE_FIELDS,
    "device_manufacturer": "manufacturer",
    "device_model": "model",
    "device_country": "country",
    "cpu_architecture": "cpu_architecture",
    "supports_telephony": "supports_telephony",
    "has_nfc": "has_nfc",
    "bluetooth_enabled": "bluetooth_enabled",
    "bluetooth_version": "bluetooth_version",
    "att_authorization_status": "att_authorization_status",
    "att_timestamp_unixtime_ms": "att_timestamp_unixtime_ms",
}
WEB_DEVICE_FIELDS = {
    **_SHARED_DEVICE_FIELDS,
    "device_manufacturer": "device_manufacturer",
    "device_model": "device_model",
    "device_country": "device_country",
    "push_token": "push_token",
}
APPLICATION_FIELDS = {
    "application_name": "application_name",
    "application_version": "application_version",
    "package": "application_package",
    "install_referrer": "install_referrer",
    "apple_search_ads_attributes": "apple_search_ads_attribution",
}
SOURCE_CHANNELS = frozenset({"unknown", "native", "javascript", "pixel", "partner", "server_to_server"})


def runtime_type(batch: Json) -> str:
    device, application = batch.get("device_info") or {}, batch.get("application_info") or {}
    return RUNTIME_TYPES.get(device.get("platform", "")) or OS_RUNTIME_TYPES.get(application.get("os", ""), "unknown")


def runtime_environment(batch: Json) -> Json:
    device, application = batch.get("device_info") or {}, batch.get("application_info") or {}
    kind = runtime_type(batch)
    if kind == "mobileweb":  # the Java SDK's web environment names these differently and has no app fields
        specific = {
            **renamed(device, WEB_DEVICE_FIELDS),
            "limit_ad_tracking": text(device.get("limit_ad_tracking")),
            "is_dst": text(device.get("is_dst")),
        }
    else:
        specific = {**renamed(device, DEVICE_FIELDS), **renamed(application, APPLICATION_FIELDS)}
    return compact(
        {
            "type": kind,
            "is_debug": batch.get("environment") == "development" or None,  # the SDK omits false
            "client_ip_address": batch.get("ip"),
            "sdk_version": batch.get("sdk_version"),
            "http_header_user_agent": device.get("http_header_user_agent"),
            "identities": device_identities(device, kind),
            **specific,
        }
    )


def user_attribute_fields(batch: Json) -> Json:
    attributes = batch.get("user_attributes") or {}
    lists = {name: [str(v) for v in value] for name, value in attributes.items() if isinstance(value, list)}
    singles = {name: text(value) for name, value in attributes.items() if not isinstance(value, list)}
    return {"user_attributes": singles, "user_attribute_lists": lists}


CONSENT_FIELDS = {
    "consented": "consented",
    "document": "document",
    "timestamp_unixtime_ms": "timestamp_unixtime_ms",
    "location": "location",
    "hardware_id": "hardware_id",
}


def consent(state: Json | None) -> Json | None:
    return renamed(state, CONSENT_FIELDS) if state else None


def consent_state(batch: Json) -> Json:
    state = batch.get("consent_state") or {}
    return {
        f"{regulation}_consent_state": {purpose: consent(value) for purpose, value in purposes.items()}
        for regulation, purposes in state.items()
        if regulation in ("gdpr", "ccpa") and purposes
    }


def system_notification(note: Json) -> Json | None:
    regulation = {"gdpr_change": "gdpr", "ccpa_change": "ccpa"}.get(note.get("type", ""))
    if regulation is None:
        return None
    data = note.get("data") or {}
    purpose = data.get("purpose") or ("data_sale_opt_out" if regulation == "ccpa" else None)
    return compact(
        {
            "type": f"{regulation}_consent_state",
            "purpose": purpose,
            f"old_{regulation}_consent_state": consent(data.get("old")),
            f"new_{regulation}_consent_state": consent(data.get("current")),
        }
    )


def system_notifications(batch: Json) -> list[Json]:
    made = (system_notification(note) for note in batch.get("system_notifications") or [])
    return [note for note in made if note]


def source_channel(batch: Json) -> str | None:
    channel = (batch.get("source_info") or {}).get("channel")
    if channel is None:
        return None
    return channel if channel in SOURCE_CHANNELS else "unknown"


def batch_key(batch: Json) -> object:
    """What the message id derives from: the batch id, else (never in practice) the batch's own bytes."""
    found = batch.get("batch_id")
    return found if found is not None else hashlib.sha256(json_body(batch)).hexdigest()


def batch_user_identities(batch: Json) -> list[Json]:
    made = (user_identity(i.get("identity_type"), i.get("identity")) for i in batch.get("user_identities") or [])
    return [found for found in made if found]


def event_processing_request(
    batch: Json, events: list[Json], message_id: str, timestamp_ms: int, account: Json, version: str
) -> Json:
    mpid = batch.get("mpid")
    return compact(
        {
            **message_base("event_processing_request", message_id, timestamp_ms, version),
            "source_id": batch.get("source_request_id"),
            "account": account,
            "mpid": str(mpid) if mpid is not None else None,
            "device_application_stamp": batch.get("mp_deviceid"),
            "source_channel": source_channel(batch),
            "user_identities": batch_user_identities(batch),
            **user_attribute_fields(batch),
            "runtime_environment": runtime_environment(batch),
            "consent_state": consent_state(batch),
            "system_notifications": system_notifications(batch),
            "events": events,
        }
    )


# ---- membership messages -----------------------------------------------------------------------------------------


def audience_entry(change: MembershipChange, with_change_id: bool) -> Json:
    entry = {"audience_id": change.audience_id, "audience_name": change.audience_name, "action": change.action}
    if with_change_id:
        entry["change_id"] = change.change_id or default_change_id(change)
    return entry


def default_change_id(change: MembershipChange) -> str:
    """The id of a change sent once, not from an outbox (no outbox key to take it from): derived from its content."""
    return derived_uuid("membership_change", (change.audience_id, change.mpid, change.action, change.timestamp_ms))


def user_profile(mpid: int, changes: list[MembershipChange], with_change_ids: bool = False) -> Json:
    identities: dict[str, str] = {}
    for change in changes:
        identities.update(change.identities)
    users = [made for name, value in identities.items() if (made := user_identity(name, value))]
    audiences = [audience_entry(change, with_change_ids) for change in changes]
    return compact(
        {
            "user_identities": users,
            "device_identities": device_identities(identities, None),
            "mpid": str(mpid),
            "audiences": audiences,
        }
    )


def changes_key(changes: list[MembershipChange]) -> str:
    return hashlib.sha256(json_body([(c.audience_id, c.mpid, c.action, c.timestamp_ms) for c in changes])).hexdigest()


def audience_membership_change_request(
    changes: list[MembershipChange], account: Json, version: str = FIREHOSE_VERSION, with_change_ids: bool = False
) -> Json:
    """One user profile per MPID (in order of first change), each with its audience additions and removals.
    Id and time derive from the changes, so the same changes always make the same request. `with_change_ids`:
    each `audiences[]` entry also carries `change_id` (ours, not Firehose's: the webhook's document)."""
    by_mpid: dict[int, list[MembershipChange]] = {}
    for change in changes:
        by_mpid.setdefault(change.mpid, []).append(change)
    message_id = derived_uuid("audience_membership_change_request", changes_key(changes))
    timestamp_ms = max((c.timestamp_ms for c in changes), default=0)
    return {
        **message_base("audience_membership_change_request", message_id, timestamp_ms, version),
        "account": account,
        "user_profiles": [user_profile(mpid, grouped, with_change_ids) for mpid, grouped in by_mpid.items()],
    }


# ---- data subject requests -------------------------------------------------------------------------------------


OPENDSR_IDENTITY_TYPES = {
    "customer_id": "controller_customer_id",
    "email": "email",
    "android_advertising_id": "android_advertising_id",
    "android_uuid": "android_id",
    "fire_advertising_id": "fire_advertising_id",
    "ios_advertising_id": "ios_advertising_id",
    "ios_idfv": "ios_vendor_id",
    "microsoft_advertising_id": "microsoft_advertising_id",
    "microsoft_publisher_id": "microsoft_publisher_id",
    "roku_advertising_id": "roku_advertising_id",
    "roku_publisher_id": "roku_publisher_id",
}
"""Our (canonical) identity types → Firehose `OpenDsrIdentity.Type`; the others have no OpenDSR name."""
DSR_TYPES = frozenset({"erasure"})
"""`DsrProcessingRequest.Type`: the SDK's enum has `erasure` only."""


_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


def epoch_seconds(rfc3339: str) -> float:
    """An RFC 3339 time as seconds since the epoch, its fraction kept to the nanosecond (Python 3.10's
    `fromisoformat` takes neither `Z` nor more than six digits); no offset: UTC. ValueError when it is not one."""
    found = _RFC3339.fullmatch(rfc3339.strip())
    if found is None:
        raise ValueError(f"not an RFC 3339 time: {rfc3339!r}")
    day, clock, fraction, offset = found.groups()
    zone = "+00:00" if offset in (None, "Z", "z") else offset
    whole = datetime.fromisoformat(f"{day}T{clock}{zone}")
    return whole.timestamp() + float(fraction or 0)


def opendsr_identities(identities: dict[str, list[str]]) -> Json:
    """The first value of each identity type OpenDSR names, keyed by its OpenDSR type."""
    return {
        OPENDSR_IDENTITY_TYPES[kind]: {"encoding": "raw", "value": values[0]}
        for kind, values in identities.items()
        if kind in OPENDSR_IDENTITY_TYPES and values
    }


def dsr_processing_request(subject: DsrSubject, account: Json, timestamp_ms: int, version: str) -> Json:
    """Its id derives from the subject request id, so a resent request is the same message."""
    return {
        **message_base("dsr_processing_request", derived_uuid("dsr_processing_request", subject.subject_request_id),
                       timestamp_ms, version),
        "account": account,
        "subject_request_id": subject.subject_request_id,
        "subject_request_type": subject.subject_request_type,
        "submitted_time": epoch_seconds(subject.submitted_time),
        "subject_identities": opendsr_identities(subject.identities),
        "api_version": subject.api_version,
        "regulation": subject.regulation or "unknown",
    }  # fmt: skip


# ---- adapters --------------------------------------------------------------------------------------------


class FirehoseClient:
    """What both adapters share: the endpoint, its headers and the `account` every message carries."""

    status_alerts: ClassVar[dict[int, str]] = PARTNER_STATUS_ALERTS

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.headers = {"Content-Type": "application/json", "User-Agent": "cdp-actors/0.1"}
        if settings.api_key is not None:
            self.headers["Authorization"] = f"Token {settings.api_key.get_secret_value()}"
        if settings.api_secret is not None:
            self.headers["X-Firehose-Api-Secret"] = settings.api_secret.get_secret_value()
        account_settings = {name: value.get_secret_value() for name, value in settings.account_settings.items()}
        self.account = compact({"account_id": settings.account_id, "account_settings": account_settings})

    def request(self, message: Json) -> HttpRequest:
        return HttpRequest(self.settings.url, json_body(message), self.headers)

    @property
    def dsr_domain(self) -> str:
        """The partner endpoint's host: a Firehose partner has no domain of its own in its settings."""
        return self.settings.url.split("://", 1)[1].split("/", 1)[0]

    def prepare_dsr(self, subject: DsrSubject, now_ms: int) -> Prepared | None:
        if subject.subject_request_type not in DSR_TYPES:
            return None
        if not opendsr_identities(subject.identities):
            return missing_dsr_identity("Firehose", "OpenDSR identity types (customer id, email, device ids)")
        message = dsr_processing_request(subject, self.account, now_ms, self.settings.firehose_version)
        return Prepared([self.request(message)])


class Adapter(FirehoseClient):
    def prepare(self, batch: dict[str, Any], now_ms: int) -> Prepared:
        message_id = derived_uuid("event_processing_request", batch_key(batch))
        events, skipped = firehose_events(batch, message_id)
        if not events and not batch.get("system_notifications") and not self.settings.allow_eventless_batches:
            return Prepared(skipped=skipped)
        timestamp_ms = batch.get("timestamp_unixtime_ms") or now_ms  # receipt time, not the clock: replays match
        version = self.settings.firehose_version
        message = event_processing_request(batch, events, message_id, timestamp_ms, self.account, version)
        return Prepared([self.request(message)], skipped=skipped, forwarded_events=len(events))


class AudienceAdapter(FirehoseClient):
    max_batch: ClassVar[int] = 1000

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.max_age_s = settings.bulk_max_age_s

    def prepare_memberships(self, changes: list[MembershipChange], now_ms: int) -> Prepared:
        version = self.settings.firehose_version
        return Prepared(
            [
                self.request(audience_membership_change_request(chunk, self.account, version))
                for chunk in chunks(changes, self.max_batch)
            ]
        )
