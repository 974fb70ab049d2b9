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

from typing import ClassVar, Literal

from pydantic import Field

from cdp_actors.integrations.base import (
    BULK_UPLOAD_INTERVAL_S,
    BulkMaxAge,
    HttpRequest,
    MappedAudienceAdapter,
    MembershipChange,
    PartnerUrl,
    Prepared,
    Secret,
    SettingsModel,
    bearer_json_headers,
    chunks,
    json_body,
    phone_digits,
    sendable,
    sha256_hex,
)

MatchIdentity = Literal["email", "mobile_number", "ios_advertising_id", "android_advertising_id"]
COLUMNS: dict[str, tuple[MatchIdentity, ...]] = {
    "EMAIL": ("email",),
    "PHONE": ("mobile_number",),
    "MADID": ("ios_advertising_id", "android_advertising_id"),
}
MATCH_IDENTITIES: list[MatchIdentity] = [kind for kinds in COLUMNS.values() for kind in kinds]
METHODS = {"add": "POST", "delete": "DELETE"}


class Settings(SettingsModel):
    access_token: Secret
    audience_ids: dict[int, str] = {}
    """Our audience id → the Facebook custom audience id to keep in step with it."""
    identities: tuple[MatchIdentity, ...] = Field(tuple(MATCH_IDENTITIES), min_length=1)
    """The identities forwarded as match keys."""
    api_url: PartnerUrl = "https://graph.facebook.com/v21.0"
    bulk_max_age_s: BulkMaxAge = BULK_UPLOAD_INTERVAL_S


class Adapter(MappedAudienceAdapter[str]):
    max_batch: ClassVar[int] = 10_000
    mapping_setting: ClassVar[str] = "audience_ids"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.audience_ids, settings.bulk_max_age_s)
        self.api_url = settings.api_url.rstrip("/")
        self.columns: dict[str, list[MatchIdentity]] = {
            column: [kind for kind in kinds if kind in settings.identities]
            for column, kinds in COLUMNS.items()
            if set(kinds) & set(settings.identities)
        }
        self.missing_description = "none of " + ", ".join(kind for kinds in self.columns.values() for kind in kinds)
        self.headers = bearer_json_headers(settings.access_token)

    def audience_requests(
        self, facebook_id: str, members: list[MembershipChange], prepared: Prepared, now_ms: int
    ) -> list[HttpRequest]:
        rows_by_action = self._rows(members, prepared)
        return [
            self._request(facebook_id, action, chunk)
            for action, rows in rows_by_action.items()
            for chunk in chunks(rows, self.max_batch)
        ]

    def _rows(self, members: list[MembershipChange], prepared: Prepared) -> dict[str, list[list[str]]]:
        """Each member's match-key row, by action; members without any match key are rejected."""
        rows: dict[str, list[list[str]]] = {"add": [], "delete": []}
        for change in members:
            row = [_match_key(column, change.identities, kinds) for column, kinds in self.columns.items()]
            if sendable(change, rows, any(row), self.missing_description, prepared):
                rows[change.action].append(row)
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
