"""Facebook (Meta) Conversions API output: server events to `POST {api}/v{version}/{pixel_id}/events`.

Followed: Meta's Conversions API pages: server event parameters (`event_name`, `event_time` in seconds
and at most 7 days old or the whole request fails, `event_id` for deduplication with the Pixel / SDK,
`action_source`, `event_source_url`, `data_processing_options` with `LDU`), customer information
parameters (`em`, `ph`, `fn`, `ln`, `ge`, `ct`, `st`, `zp`, `country`, `external_id` SHA-256 hashed after
Meta's normalisation; `client_ip_address`, `client_user_agent`, `madid` not hashed), website events
needing `client_user_agent` and `event_source_url`, app events needing `app_data` with
`advertiser_tracking_enabled` and the 16-entry `extinfo` (`i2` / `a2` first), `custom_data` (`value`,
`currency`, `contents`, `content_ids`, `order_id`), up to 1,000 events per request; and mParticle's
Facebook event integration page (`source_message_id` as the event id; product events as `AddToCart`,
`AddToWishlist`, `ViewContent`, purchases as `Purchase`, custom events by name, web screen views as
`PageView`, app screen views only through custom mappings; `os_version` required for iOS/tvOS).

Guessed: `action_source` when not set follows the batch's platform (web → website, iOS/tvOS/Android →
app, others → other); the page URL comes from the event's custom flag `Facebook.EventSourceUrl`;
`checkout` → `InitiateCheckout`; other commerce events go as their
expanded mParticle events (`eCommerce - refund - Item`, ...) with event ids suffixed `-1`, `-2`, ...;
advertiser tracking follows `att_authorization_status`, else `limit_ad_tracking`, else is off on iOS
and on elsewhere, and `application_tracking_enabled` repeats it; an iOS/tvOS batch without
`os_version` is rejected as `Missing OS Version` (an alert name of the System Alerts table); a batch
with nothing Meta can match a user on is rejected as `Missing Required Attribute`; a CCPA data sale
opt-out sends Limited Data Use with Meta's geolocation (country and state 0); currency defaults to USD.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import Field

from cdp_actors.integrations.base import (
    PARTNER_STATUS_ALERTS,
    ZERO_AD_ID,
    HttpRequest,
    PartnerUrl,
    Prepared,
    Rejection,
    Secret,
    SettingsModel,
    UserIdentityOrMpid,
    chunks,
    events_of,
    identities,
    json_body,
    phone_digits,
    sha256_hex,
    user_identity,
)
from cdp_actors.integrations.commerce import Expanded, expand_commerce

ActionSource = Literal[
    "website",
    "app",
    "email",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
]
MAX_EVENTS_PER_REQUEST = 1000
MAX_EVENT_AGE_MS = 7 * 24 * 3600 * 1000
DEFAULT_CURRENCY = "USD"
APP_PLATFORMS = {"iOS": "i2", "tvOS": "i2", "Android": "a2"}
STANDARD_COMMERCE_EVENTS = {
    "add_to_cart": "AddToCart",
    "add_to_wishlist": "AddToWishlist",
    "view_detail": "ViewContent",
    "checkout": "InitiateCheckout",
    "purchase": "Purchase",
}
MATCH_KEYS = ("em", "ph", "external_id", "madid")
"""Customer information Meta can match a user on by itself; an IP address needs a user agent with it."""
SOURCE_URL_FLAG = "Facebook.EventSourceUrl"


class Settings(SettingsModel):
    pixel_id: str = Field(pattern=r"^\d+$")
    """The Pixel (dataset) id the events are sent to."""
    access_token: Secret = Field(min_length=1)
    """A Conversions API access token (a system user's, which does not expire)."""
    api_url: PartnerUrl = "https://graph.facebook.com"
    api_version: str = Field("22.0", pattern=r"^\d+\.\d+$")
    action_source: ActionSource | None = None
    """Where the conversions happened; unset: by the batch's platform (web → website, mobile → app)."""
    external_id_type: UserIdentityOrMpid = "customer_id"
    """The user identity hashed into `external_id`: a user identity type, or ``mpid``."""
    test_event_code: str | None = None
    """Sends to Events Manager's Test Events instead of live data when set."""


# ---- customer information (Meta's normalisation, then SHA-256) -------------------------------------------


def _letters_only(value: str) -> str:
    return re.sub(r"[^a-z]", "", value.strip().lower())


def _zip(value: str) -> str:
    """Lower case without spaces; US ZIP+4 keeps its first five digits."""
    return re.sub(r"\s", "", value.lower()).split("-")[0]


def _gender(value: str) -> str:
    first = value.strip().lower()[:1]
    return first if first in ("f", "m") else ""


def _country(value: str) -> str:
    code = _letters_only(value)
    return code if len(code) == 2 else ""


_ATTRIBUTE_KEYS = {
    "$firstname": ("fn", str.strip),
    "$lastname": ("ln", str.strip),
    "$gender": ("ge", _gender),
    "$city": ("ct", _letters_only),
    "$state": ("st", _letters_only),
    "$zip": ("zp", _zip),
    "$country": ("country", _country),
}


def hashed_user_attributes(user_attributes: dict[str, Any]) -> dict[str, list[str]]:
    hashed = {}
    for name, value in user_attributes.items():
        key_and_normalizer = _ATTRIBUTE_KEYS.get(name.lower())
        if key_and_normalizer and isinstance(value, str):
            key, normalize = key_and_normalizer
            if normalized := normalize(value).strip():
                hashed[key] = [sha256_hex(normalized)]
    return hashed


def _attribute(user_attributes: dict[str, Any], reserved: str) -> Any:
    return next((v for k, v in user_attributes.items() if k.lower() == reserved), None)


def user_data(batch: dict[str, Any], external_id_type: str, app: bool) -> dict[str, Any]:
    """Meta's customer information parameters for the batch's user: contact data hashed, the rest as is."""
    ids, device = identities(batch), batch.get("device_info") or {}
    attributes = batch.get("user_attributes") or {}
    phone = ids.get("mobile_number") or _attribute(attributes, "$mobile")
    data: dict[str, Any] = hashed_user_attributes(attributes)
    for key, value in (
        ("em", ids.get("email")),
        ("ph", phone_digits(phone) if isinstance(phone, str) else None),
        ("external_id", user_identity(batch, external_id_type)),
    ):
        if value and value.strip():
            data[key] = [sha256_hex(value)]
    ad_id = device.get("ios_advertising_id") or device.get("android_advertising_id")
    unhashed = {
        "client_ip_address": batch.get("ip"),
        "client_user_agent": device.get("http_header_user_agent"),
        "madid": ad_id if app and ad_id != ZERO_AD_ID else None,
    }
    data.update({key: value for key, value in unhashed.items() if value})
    return data


def matchable(data: dict[str, Any]) -> bool:
    return any(data.get(key) for key in MATCH_KEYS) or bool(
        data.get("client_ip_address") and data.get("client_user_agent")
    )


# ---- app data --------------------------------------------------------------------------------------------


def advertiser_tracking_enabled(device: dict[str, Any]) -> bool:
    if device.get("att_authorization_status"):
        return device["att_authorization_status"] == "authorized"
    if device.get("limit_ad_tracking") is not None:
        return not device["limit_ad_tracking"]
    return APP_PLATFORMS.get(device.get("platform", "")) != "i2"  # iOS 14.5+ tracks only with ATT consent


def extinfo(batch: dict[str, Any]) -> list[str]:
    """Meta's 16 extended device fields, in order; unknown ones as empty strings."""
    device, application = batch.get("device_info") or {}, batch.get("application_info") or {}
    locale = "_".join(p for p in (device.get("locale_language"), device.get("locale_country")) if p)
    fields = [
        APP_PLATFORMS[device["platform"]],
        application.get("package"),
        application.get("application_version"),
        application.get("application_build_number"),
        device.get("os_version"),
        device.get("device_model"),
        locale,
        None,
        device.get("network_carrier"),
        device.get("screen_width"),
        device.get("screen_height"),
        device.get("screen_dpi"),
        None,
        None,
        None,
        None,
    ]
    return ["" if value is None else str(value) for value in fields]


def app_data(batch: dict[str, Any]) -> dict[str, Any] | Rejection:
    device = batch.get("device_info") or {}
    platform = device.get("platform")
    if platform not in APP_PLATFORMS:
        message = f"app events need an iOS or Android device_info.platform for app_data, not {platform!r}"
        return Rejection("Missing Required Attribute", message)
    if APP_PLATFORMS[platform] == "i2" and not device.get("os_version"):
        return Rejection("Missing OS Version", "Facebook requires device_info.os_version for iOS and tvOS events")
    tracking = advertiser_tracking_enabled(device)
    return {
        "advertiser_tracking_enabled": tracking,
        "application_tracking_enabled": tracking,
        "extinfo": extinfo(batch),
    }


# ---- custom data for commerce ----------------------------------------------------------------------------


def _product_value(product: dict[str, Any]) -> float:
    return float(product.get("price") or 0) * float(product.get("quantity") or 1)


def commerce_custom_data(data: dict[str, Any], expanded: list[Expanded]) -> dict[str, Any]:
    products = [item.product for item in expanded if item.kind == "product" and item.product is not None]
    total = next((item for item in expanded if item.kind == "total"), None)
    value = total.revenue if total and total.revenue is not None else sum(map(_product_value, products))
    contents = [
        {
            k: v
            for k, v in (("id", p.get("id")), ("quantity", p.get("quantity")), ("item_price", p.get("price")))
            if v is not None
        }
        for p in products
    ]
    custom: dict[str, Any] = {
        **(data.get("custom_attributes") or {}),
        "currency": data.get("currency_code") or DEFAULT_CURRENCY,
        "value": value,
        "content_type": "product",
        "contents": contents,
        "num_items": len(products),
        "content_ids": [p["id"] for p in products if p.get("id")],
    }
    transaction_id = (data.get("product_action") or {}).get("transaction_id")
    if transaction_id:
        custom["order_id"] = transaction_id
    return custom


# ---- the adapter -----------------------------------------------------------------------------------------


def _platform_action_source(batch: dict[str, Any]) -> str:
    platform = (batch.get("device_info") or {}).get("platform")
    if platform == "web":
        return "website"
    return "app" if platform in APP_PLATFORMS else "other"


def _data_processing_options(batch: dict[str, Any]) -> dict[str, Any]:
    opt_out = ((batch.get("consent_state") or {}).get("ccpa") or {}).get("data_sale_opt_out") or {}
    if opt_out.get("consented") is True:
        return {
            "data_processing_options": ["LDU"],
            "data_processing_options_country": 0,
            "data_processing_options_state": 0,
        }
    return {}


class Adapter:
    status_alerts: ClassVar[dict[int, str]] = PARTNER_STATUS_ALERTS

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        token = quote(settings.access_token.get_secret_value(), safe="")
        base = settings.api_url.rstrip("/")
        self.url = f"{base}/v{settings.api_version}/{settings.pixel_id}/events?access_token={token}"
        self.headers = {"Content-Type": "application/json"}

    def prepare(self, batch: dict[str, Any], now_ms: int) -> Prepared:
        source = self.settings.action_source or _platform_action_source(batch)
        supported = frozenset({"custom_event", "commerce_event"} | ({"screen_view"} if source == "website" else set()))
        kept, skipped = events_of(batch, supported)
        if not kept:
            return Prepared(skipped=skipped)
        shared = self._shared_fields(batch, source)
        if isinstance(shared, Rejection):
            return Prepared(rejections=[shared], skipped=skipped)
        server_events: list[dict[str, Any]] = []
        rejections: list[Rejection] = []
        forwarded = 0
        for event in kept:
            made = self._server_events(event, shared, now_ms)
            if isinstance(made, Rejection):
                rejections.append(made)
            else:
                server_events += made
                forwarded += bool(made)
        return Prepared(self._requests(server_events), rejections, skipped, forwarded)

    def _shared_fields(self, batch: dict[str, Any], source: str) -> dict[str, Any] | Rejection:
        """The fields every server event of the batch carries: action source, user data, app data."""
        user = user_data(batch, self.settings.external_id_type, app=source == "app")
        if not matchable(user):
            return Rejection(
                "Missing Required Attribute",
                "no customer information Facebook can match a user on "
                "(email, phone, external id, advertising id, or IP address with user agent)",
            )
        if source == "website" and not user.get("client_user_agent"):
            return Rejection("Missing Required Attribute", "website events need device_info.http_header_user_agent")
        shared = {"action_source": source, "user_data": user, **_data_processing_options(batch)}
        if source == "app":
            app = app_data(batch)
            if isinstance(app, Rejection):
                return app
            shared["app_data"] = app
        return shared

    def _server_events(self, event: dict[str, Any], shared: dict[str, Any], now_ms: int) -> list[dict] | Rejection:
        kind, data = event["event_type"], event.get("data") or {}
        base = self._base_fields(kind, data, shared, now_ms)
        if isinstance(base, Rejection):
            return base
        named = self._named_custom_data(kind, data)
        if isinstance(named, Rejection):
            return named
        event_id = str(data.get("source_message_id") or data.get("event_id") or data.get("message_id"))
        ids = [event_id] if len(named) == 1 else [f"{event_id}-{n}" for n in range(1, len(named) + 1)]
        return [self._server_event(name, custom, id_, base) for (name, custom), id_ in zip(named, ids, strict=True)]

    @staticmethod
    def _base_fields(kind: str, data: dict[str, Any], shared: dict[str, Any], now_ms: int) -> dict | Rejection:
        """The event's time and page with the batch's shared fields, or why Facebook would refuse the event."""
        timestamp_ms = data.get("timestamp_unixtime_ms") or now_ms
        if now_ms - timestamp_ms > MAX_EVENT_AGE_MS:
            hours = (now_ms - timestamp_ms) // 3_600_000
            return Rejection("Event Arrived Late", f"a {kind} from {hours} hours ago; Facebook takes up to 7 days")
        base = {"event_time": timestamp_ms // 1000, **shared}
        source_url = (data.get("custom_flags") or {}).get(SOURCE_URL_FLAG)
        if source_url:
            base["event_source_url"] = source_url
        elif shared["action_source"] == "website":
            return Rejection("Missing Required Attribute", f"website events need the {SOURCE_URL_FLAG} custom flag")
        return base

    @staticmethod
    def _server_event(name: str, custom: dict[str, Any], event_id: str, base: dict[str, Any]) -> dict[str, Any]:
        server_event = {"event_name": name, "event_id": event_id, **base}
        if custom:
            server_event["custom_data"] = custom
        return server_event

    @staticmethod
    def _named_custom_data(kind: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]] | Rejection:
        """(event name, custom data) of each server event the mParticle event becomes."""
        attributes = data.get("custom_attributes") or {}
        if kind == "screen_view":
            return [("PageView", attributes)]
        if kind == "custom_event":
            name = data.get("event_name")
            return [(name, attributes)] if name else Rejection("Missing Event Name", "a custom event without a name")
        expanded = expand_commerce(data)
        standard = STANDARD_COMMERCE_EVENTS.get((data.get("product_action") or {}).get("action", ""))
        if standard:
            return [(standard, commerce_custom_data(data, expanded))]
        return [(item.name, item.attributes) for item in expanded]

    def _requests(self, server_events: list[dict[str, Any]]) -> list[HttpRequest]:
        extra = {"test_event_code": self.settings.test_event_code} if self.settings.test_event_code else {}
        return [
            HttpRequest(self.url, json_body({"data": chunk, **extra}), self.headers)
            for chunk in chunks(server_events, MAX_EVENTS_PER_REQUEST)
        ]
