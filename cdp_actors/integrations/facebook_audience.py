"""Facebook Custom Audiences output: adds and removes audience members with the Marketing API.

Followed: mParticle "Facebook Audience" docs (identities: email and phone hashed as SHA-256, Apple IDFA,
Google GAID; bulk forwarding, default upload after 3 hours) and the Marketing API's custom audience
users edge: ``POST /{custom_audience_id}/users`` adds, ``DELETE`` on the same path removes, with
``{"payload": {"schema": [...], "data": [[...], ...]}}`` and at most 10,000 users per request. We send
one multi-key payload: columns ``EMAIL`` (SHA-256 of trimmed lower-case email), ``PHONE`` (SHA-256 of the
digits without leading zeros, country code expected in the value) and ``MADID`` (advertising id, raw
and lower-cased, as Facebook wants it unhashed; the IDFA if present, else the GAID), an empty string
where a user lacks a column.

Guessed / simplified: one Facebook audience per mParticle audience (no per-identity audiences, no
Facebook user IDs, no user-attribute match keys, no value-based audiences); the Facebook custom audience
id comes from the `audience_ids` setting (Facebook assigns it, so it cannot be derived); the access
token goes in an ``Authorization: Bearer`` header rather than the query string, to keep it out of URLs.
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

MatchIdentity = Literal["email", "mobile_number", "ios_advertising_id", "android_advertising_id"]
COLUMNS: dict[str, tuple[MatchIdentity, ...]] = {
    "EMAIL": ("email",),
    "PHONE": ("mobile_number",),
    "MADID": ("ios_advertising_id", "android_advertising_id"),
}
MATCH_IDENTITIES = [kind for kinds in COLUMNS.values() for kind in kinds]
METHODS = {"add": "POST", "delete": "DELETE"}


class Settings(SettingsModel):
    access_token: Secret
    audience_ids: dict[int, str] = {}
    """Our audience id → the Facebook custom audience id to keep in step with it."""
    identities: tuple[MatchIdentity, ...] = Field(tuple(MATCH_IDENTITIES), min_length=1)
    """The identities forwarded as match keys."""
    api_url: str = Field("https://graph.facebook.com/v21.0", pattern=r"^https?://")
    bulk_max_age_s: float = Field(3 * 3600, gt=0)


class Adapter:
    status_alerts: ClassVar[dict[int, str]] = PARTNER_STATUS_ALERTS
    max_batch: ClassVar[int] = 10_000

    def __init__(self, settings: Settings) -> None:
        self.api_url = settings.api_url.rstrip("/")
        self.audience_ids = settings.audience_ids
        self.max_age_s = settings.bulk_max_age_s
        self.columns = {column: [kind for kind in kinds if kind in settings.identities]
                        for column, kinds in COLUMNS.items() if set(kinds) & set(settings.identities)}  # fmt: skip
        self.headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {settings.access_token.get_secret_value()}",
        }

    def prepare_memberships(self, changes: list[MembershipChange], now_ms: int) -> Prepared:
        prepared = Prepared()
        for audience_id, members in members_by_audience(changes).items():
            facebook_id = self.audience_ids.get(audience_id)
            if facebook_id is None:
                message = f"audience {audience_id} is not in audience_ids; {len(members)} changes not sent"
                prepared.rejections.append(Rejection("Missing Required Setting", message))
                continue
            for action, rows in self._rows(members, prepared).items():
                for start in range(0, len(rows), self.max_batch):
                    chunk = rows[start : start + self.max_batch]
                    prepared.requests.append(self._request(facebook_id, action, chunk))
        return prepared

    def _rows(self, members: list[MembershipChange], prepared: Prepared) -> dict[str, list[list[str]]]:
        """Each member's match-key row, by action; members without any match key are rejected."""
        rows: dict[str, list[list[str]]] = {"add": [], "delete": []}
        for change in members:
            row = [_match_key(column, change.identities, kinds) for column, kinds in self.columns.items()]
            if change.action not in rows:
                prepared.rejections.append(Rejection("Invalid Required Attribute", f"unknown action {change.action!r}"))
            elif not any(row):
                wanted = ", ".join(kind for kinds in self.columns.values() for kind in kinds)
                prepared.rejections.append(Rejection("Missing Identity", f"mpid {change.mpid} has none of {wanted}"))
            else:
                rows[change.action].append(row)
                prepared.forwarded_events += 1
        return rows

    def _request(self, facebook_id: str, action: str, rows: list[list[str]]) -> HttpRequest:
        body = json_body({"payload": {"schema": list(self.columns), "data": rows}})
        return HttpRequest(f"{self.api_url}/{facebook_id}/users", body, self.headers, METHODS[action])


def _match_key(column: str, identities: dict[str, str], kinds: list[MatchIdentity]) -> str:
    value = next((identities[kind].strip() for kind in kinds if identities.get(kind, "").strip()), "")
    if column == "MADID":
        return value.lower()
    if column == "PHONE":
        value = phone_digits(value)
    return sha256_hex(value) if value else ""


def phone_digits(value: str) -> str:
    """Phone normalisation before hashing: digits only (country code included), no leading zeros."""
    return re.sub(r"\D", "", value).lstrip("0")


def members_by_audience(changes: list[MembershipChange]) -> dict[int, list[MembershipChange]]:
    """The changes by audience, keeping only the last one per user: membership is a state, not a log."""
    grouped: dict[int, dict[int, MembershipChange]] = {}
    for change in changes:
        grouped.setdefault(change.audience_id, {})[change.mpid] = change
    return {audience_id: list(members.values()) for audience_id, members in grouped.items()}
