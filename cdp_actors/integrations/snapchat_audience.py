"""Snapchat Customer List (Snap Audience Match) output: adds and removes segment members with the Marketing API.

Followed: mParticle "Snapchat Audience" docs (SHA-256 of emails, device IDs (IDFA or Google Advertising
ID) and phone numbers (mobile number, phone number 2 and 3); bulk forwarding, default upload after
3 hours) and Snap's Marketing API customer lists: ``POST /segments/{segment_id}/users`` adds,
``DELETE`` on the same path removes, body ``{"users": [{"schema": ["EMAIL_SHA256"], "data": [[hash],
...]}]}``, one identifier type per request, at most 100,000 identifiers per request, bearer token.
Normalisation before hashing: emails trimmed and lower-cased, phones reduced to digits without leading
zeros (country code expected in the value), advertising ids trimmed and lower-cased with their dashes.

Guessed / simplified: the Snap segment id comes from the `segment_ids` setting (Snap assigns it when
the segment is created); one segment takes every configured identifier type, in separate requests
(some integrators describe Snap segments as single-key: if so, configure `identities` with one kind);
no value-based audiences.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field

from cdp_actors.integrations.base import (
    PARTNER_STATUS_ALERTS,
    HttpRequest,
    MembershipChange,
    Prepared,
    Rejection,
    Secret,
    SettingsModel,
    json_body,
    sha256_hex,
)

MatchIdentity = Literal[
    "email", "mobile_number", "phone_number_2", "phone_number_3", "ios_advertising_id", "android_advertising_id"
]
SCHEMAS: dict[MatchIdentity, str] = {
    "email": "EMAIL_SHA256",
    "mobile_number": "PHONE_SHA256",
    "phone_number_2": "PHONE_SHA256",
    "phone_number_3": "PHONE_SHA256",
    "ios_advertising_id": "MOBILE_AD_ID_SHA256",
    "android_advertising_id": "MOBILE_AD_ID_SHA256",
}
METHODS = {"add": "POST", "delete": "DELETE"}


class Settings(SettingsModel):
    access_token: Secret
    segment_ids: dict[int, str] = {}
    """Our audience id → the Snap customer-list segment id to keep in step with it."""
    identities: tuple[MatchIdentity, ...] = Field(tuple(SCHEMAS), min_length=1)
    """The identities forwarded, hashed."""
    api_url: str = Field("https://adsapi.snapchat.com/v1", pattern=r"^https?://")
    bulk_max_age_s: float = Field(3 * 3600, gt=0)


class Adapter:
    status_alerts: ClassVar[dict[int, str]] = PARTNER_STATUS_ALERTS
    max_batch: ClassVar[int] = 100_000

    def __init__(self, settings: Settings) -> None:
        self.api_url = settings.api_url.rstrip("/")
        self.segment_ids = settings.segment_ids
        self.identities = [kind for kind in SCHEMAS if kind in settings.identities]
        self.max_age_s = settings.bulk_max_age_s
        self.headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {settings.access_token.get_secret_value()}",
        }

    def prepare_memberships(self, changes: list[MembershipChange], now_ms: int) -> Prepared:
        prepared = Prepared()
        for audience_id, members in members_by_audience(changes).items():
            segment_id = self.segment_ids.get(audience_id)
            if segment_id is None:
                message = f"audience {audience_id} is not in segment_ids; {len(members)} changes not sent"
                prepared.rejections.append(Rejection("Missing Required Setting", message))
                continue
            for (action, schema), values in self._hashes(members, prepared).items():
                for start in range(0, len(values), self.max_batch):
                    chunk = values[start : start + self.max_batch]
                    prepared.requests.append(self._request(segment_id, action, schema, chunk))
        return prepared

    def _hashes(self, members: list[MembershipChange], prepared: Prepared) -> dict[tuple[str, str], list[str]]:
        """The members' hashed identifiers by (action, schema), deduplicated; members without any are rejected."""
        hashes: dict[tuple[str, str], dict[str, None]] = {
            (action, schema): {} for action in METHODS for schema in dict.fromkeys(SCHEMAS.values())
        }  # in request order: adds, then deletes; emails, phones, advertising ids
        for change in members:
            found = [(SCHEMAS[kind], _hashed(kind, change.identities.get(kind, ""))) for kind in self.identities]
            found = [(schema, value) for schema, value in found if value]
            if change.action not in METHODS:
                prepared.rejections.append(Rejection("Invalid Required Attribute", f"unknown action {change.action!r}"))
            elif not found:
                wanted = ", ".join(self.identities)
                prepared.rejections.append(Rejection("Missing Identity", f"mpid {change.mpid} has none of {wanted}"))
            else:
                prepared.forwarded_events += 1
                for schema, value in found:
                    hashes[(change.action, schema)][value] = None
        return {key: list(values) for key, values in hashes.items() if values}

    def _request(self, segment_id: str, action: str, schema: str, values: list[str]) -> HttpRequest:
        body = json_body({"users": [{"schema": [schema], "data": [[value] for value in values]}]})
        return HttpRequest(f"{self.api_url}/segments/{segment_id}/users", body, self.headers, METHODS[action])


def _hashed(kind: MatchIdentity, value: str) -> str:
    if SCHEMAS[kind] == "PHONE_SHA256":
        value = re.sub(r"\D", "", value).lstrip("0")
    return sha256_hex(value) if value.strip() else ""


def members_by_audience(changes: list[MembershipChange]) -> dict[int, list[MembershipChange]]:
    """The changes by audience, keeping only the last one per user: membership is a state, not a log."""
    grouped: dict[int, dict[int, MembershipChange]] = {}
    for change in changes:
        grouped.setdefault(change.audience_id, {})[change.mpid] = change
    return {audience_id: list(members.values()) for audience_id, members in grouped.items()}
