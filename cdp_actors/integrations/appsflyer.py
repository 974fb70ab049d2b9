"""AppsFlyer output: in-app events through AppsFlyer's server-to-server events API for mobile.

Followed: AppsFlyer's "Server-to-server events API for mobile" (`POST {api}/inappevent/{app_id}`, one
event per request, header `authentication: <dev key>`, the iOS app id prefixed with `id`, the Android
app id being the package name; body `appsflyer_id` (required), `eventName`, `eventValue` as a JSON
string (`" "` when empty), `eventTime` as `yyyy-MM-dd HH:mm:ss.SSS` UTC, `eventCurrency`,
`customer_user_id`, `ip`, `app_version_name`, Android `advertising_id`, iOS `idfa`, `idfv`,
`bundleIdentifier`, `os` and `att` 0-3; `af_events_api: "true"` for rich events), mParticle's AppsFlyer
event integration page (the AppsFlyer ID comes from the AppsFlyer kit, which the server integration needs;
the dev key, and for iOS the Apple App ID without its `id`) and the AppsFlyer kit's commerce mapping
(`af_add_to_cart` / `af_add_to_wishlist` per product with `af_price`, `af_quantity`, `af_content_id`,
`af_content_type`; `af_initiated_checkout` and `af_purchase` once per event with the summed
`af_quantity`, comma-separated SKUs, `af_revenue` / `af_order_id` for purchases, `af_currency`; other
commerce events expanded; custom events by name with their attributes; no screen views).

Guessed: the AppsFlyer ID is read from the batch's integration attributes of kit 92
(`appsflyer_id_integration_setting`, where the kit puts it), else from the identity named by
`appsflyer_id_identity`; a batch without one is rejected as `Missing Identity and Device ID`, an iOS
batch with no Apple App ID setting as `Missing Required Setting`, an Android batch with no package as
`Missing PackageName`, and a batch from neither platform as `No Route Available`; all-zero advertising
ids are left out; purchase currency defaults to USD; consent (`ad_user_data` / `ad_personalization`) is
not forwarded.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import Field, field_validator

from cdp_actors.integrations.base import (
    PARTNER_STATUS_ALERTS,
    ZERO_AD_ID,
    HttpRequest,
    PartnerUrl,
    Prepared,
    Rejection,
    Secret,
    SettingsModel,
    events_of,
    identities,
    identity_or_device_id,
    json_body,
)
from cdp_actors.integrations.commerce import Expanded, expand_commerce
from cdp_actors.schema.identity_types import ALL_TYPES

SUPPORTED = frozenset({"custom_event", "commerce_event"})
APPSFLYER_KIT = "92"
APPSFLYER_ID_KEY = "appsflyer_id_integration_setting"
DEFAULT_CURRENCY = "USD"
PLATFORMS = {"iOS": "ios", "tvOS": "ios", "Android": "android", "IOS": "ios", "TVOS": "ios"}
ATT_STATUS = {"not_determined": 0, "restricted": 1, "denied": 2, "authorized": 3}
PER_PRODUCT_EVENTS = {"add_to_cart": "af_add_to_cart", "add_to_wishlist": "af_add_to_wishlist"}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Settings(SettingsModel):
    dev_key: Secret = Field(min_length=1)
    api_url: PartnerUrl = "https://api2.appsflyer.com"
    ios_app_id: str | None = Field(None, pattern=r"^(id)?\d+$")
    """The Apple App ID (``12345`` or ``id12345``); required for iOS data."""
    android_app_id: str | None = None
    """The app id for Android data; unset: the batch's application_info.package."""
    appsflyer_id_identity: str | None = None
    """An identity type holding the AppsFlyer ID, for batches without the kit's integration attribute."""

    @field_validator("appsflyer_id_identity")
    @classmethod
    def _known_identity(cls, value: str | None) -> str | None:
        if value is not None and value not in ALL_TYPES:
            raise ValueError(f"unknown identity type {value!r}; one of {', '.join(ALL_TYPES)}")
        return value


def appsflyer_time(ms: int) -> str:
    """``yyyy-MM-dd HH:mm:ss.SSS`` in UTC."""
    return (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def platform_of(batch: dict[str, Any]) -> str | None:
    """``ios``, ``android``, or None for batches from other platforms."""
    device, application = batch.get("device_info") or {}, batch.get("application_info") or {}
    return PLATFORMS.get(device.get("platform") or "") or PLATFORMS.get(application.get("os") or "")


def _ad_id(value: str | None) -> str | None:
    return value if value and value != ZERO_AD_ID else None


def device_fields(batch: dict[str, Any], platform: str) -> dict[str, Any]:
    """The body fields describing the user and device, the same for every event of the batch."""
    device, application = batch.get("device_info") or {}, batch.get("application_info") or {}
    if platform == "ios":
        fields = {
            "idfa": _ad_id(device.get("ios_advertising_id")),
            "idfv": device.get("ios_idfv"),
            "bundleIdentifier": application.get("package"),
            "os": device.get("os_version"),
            "att": ATT_STATUS.get(device.get("att_authorization_status") or ""),
        }
    else:
        fields = {"advertising_id": _ad_id(device.get("android_advertising_id"))}
    fields.update(
        customer_user_id=identities(batch).get("customer_id"),
        ip=batch.get("ip"),
        app_version_name=application.get("application_version"),
    )
    return {name: value for name, value in fields.items() if value is not None}


# ---- mParticle events → (eventName, event values) --------------------------------------------------------


def _skus(products: list[dict[str, Any]]) -> str:
    """Comma-separated SKUs, commas inside a SKU escaped as the AppsFlyer kit does."""
    return ",".join(str(p["id"]).replace(",", "%2C") for p in products if p.get("id"))


def _quantity(products: list[dict[str, Any]]) -> int:
    return sum(int(p.get("quantity") or 0) or 1 for p in products) or 1


def _per_product(name: str, shared: dict[str, Any], products: list[dict[str, Any]]) -> list[tuple[str, dict]]:
    made = []
    for product in products:
        values = dict(shared)
        for key, field in (
            ("af_price", "price"),
            ("af_quantity", "quantity"),
            ("af_content_id", "id"),
            ("af_content_type", "category"),
        ):
            if product.get(field) is not None:
                values[key] = product[field]
        made.append((name, values))
    return made


def _summed(
    action: dict[str, Any], shared: dict[str, Any], products: list[dict[str, Any]], total: Expanded | None
) -> tuple[str, dict]:
    """One `af_purchase` or `af_initiated_checkout` for the whole event, as the AppsFlyer kit sends."""
    values = {**shared, "af_quantity": _quantity(products)}
    if _skus(products):
        values["af_content_id"] = _skus(products)
    amount = total.revenue if total else action.get("total_amount")
    if action["action"] == "purchase":
        values.update({k: v for k, v in (("af_revenue", amount), ("af_order_id", action.get("transaction_id"))) if v})
        return "af_purchase", values
    if amount is not None:
        values["af_price"] = amount
    return "af_initiated_checkout", values


def commerce_events(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    expanded = expand_commerce(data)
    action = data.get("product_action") or {}
    kind = action.get("action")
    shared = {**(data.get("custom_attributes") or {}), "af_currency": data.get("currency_code") or DEFAULT_CURRENCY}
    products = [item.product for item in expanded if item.kind == "product" and item.product is not None]
    if kind in PER_PRODUCT_EVENTS:
        return _per_product(PER_PRODUCT_EVENTS[kind], shared, products)
    if kind in ("purchase", "checkout"):
        total = next((item for item in expanded if item.kind == "total"), None)
        return [_summed(action, shared, products, total)]
    return [(item.name, item.attributes) for item in expanded]


def appsflyer_events(event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]] | Rejection:
    data = event.get("data") or {}
    if event.get("event_type") == "commerce_event":
        return commerce_events(data)
    if not data.get("event_name"):
        return Rejection("Missing Event Name", "a custom event without a name cannot be forwarded to AppsFlyer")
    return [(data["event_name"], dict(data.get("custom_attributes") or {}))]


# ---- the adapter -----------------------------------------------------------------------------------------


class Adapter:
    status_alerts: ClassVar[dict[int, str]] = PARTNER_STATUS_ALERTS

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = settings.api_url.rstrip("/") + "/inappevent/"
        self.headers = {"Content-Type": "application/json", "authentication": settings.dev_key.get_secret_value()}

    def prepare(self, batch: dict[str, Any], now_ms: int) -> Prepared:
        kept, skipped = events_of(batch, SUPPORTED)
        if not kept:
            return Prepared(skipped=skipped)
        target = self._target(batch)
        if isinstance(target, Rejection):
            return Prepared(rejections=[target], skipped=skipped)
        url, shared = target
        requests: list[HttpRequest] = []
        rejections: list[Rejection] = []
        forwarded = 0
        for event in kept:
            made = appsflyer_events(event)
            if isinstance(made, Rejection):
                rejections.append(made)
                continue
            time = appsflyer_time((event.get("data") or {}).get("timestamp_unixtime_ms") or now_ms)
            requests += [
                HttpRequest(url, json_body(self._body(shared, name, values, time)), self.headers)
                for name, values in made
            ]
            forwarded += bool(made)
        return Prepared(requests, rejections, skipped, forwarded)

    def _target(self, batch: dict[str, Any]) -> tuple[str, dict[str, Any]] | Rejection:
        """The batch's request URL and the body fields its events share, or why it cannot be sent."""
        platform = platform_of(batch)
        if platform is None:
            return Rejection("No Route Available", "AppsFlyer takes iOS and Android data only")
        app_id = self._app_id(batch, platform)
        if isinstance(app_id, Rejection):
            return app_id
        appsflyer_id = self._appsflyer_id(batch)
        if not appsflyer_id:
            wanted = f"kit {APPSFLYER_KIT} integration attribute or {self.settings.appsflyer_id_identity or 'identity'}"
            return Rejection("Missing Identity and Device ID", f"no AppsFlyer ID ({wanted})")
        shared = {"appsflyer_id": appsflyer_id, **device_fields(batch, platform)}
        return self.base_url + quote(app_id, safe=""), shared

    def _app_id(self, batch: dict[str, Any], platform: str) -> str | Rejection:
        if platform == "ios":
            if not self.settings.ios_app_id:
                return Rejection("Missing Required Setting", "ios_app_id (the Apple App ID) is needed for iOS data")
            return "id" + self.settings.ios_app_id.removeprefix("id")
        package = self.settings.android_app_id or (batch.get("application_info") or {}).get("package")
        return package or Rejection("Missing PackageName", "Android data needs application_info.package")

    def _appsflyer_id(self, batch: dict[str, Any]) -> str | None:
        from_kit = ((batch.get("integration_attributes") or {}).get(APPSFLYER_KIT) or {}).get(APPSFLYER_ID_KEY)
        if from_kit or self.settings.appsflyer_id_identity is None:
            return from_kit
        return identity_or_device_id(batch, self.settings.appsflyer_id_identity)

    @staticmethod
    def _body(shared: dict[str, Any], name: str, values: dict[str, Any], time: str) -> dict[str, Any]:
        body = {
            **shared,
            "eventName": name,
            "eventValue": json_body(values).decode() if values else " ",
            "eventTime": time,
            "af_events_api": "true",
        }
        if "af_currency" in values:
            body["eventCurrency"] = values["af_currency"]
        return body
