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
    api_url: PartnerUrl = "https://adsapi.snapchat.com/v1"
    bulk_max_age_s: BulkMaxAge = BULK_UPLOAD_INTERVAL_S


class Adapter(MappedAudienceAdapter[str]):
    max_batch: ClassVar[int] = 100_000
    mapping_setting: ClassVar[str] = "segment_ids"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.segment_ids, settings.bulk_max_age_s)
        self.api_url = settings.api_url.rstrip("/")
        self.identities: list[MatchIdentity] = [kind for kind in SCHEMAS if kind in settings.identities]
        self.missing_description = "none of " + ", ".join(self.identities)
        self.headers = bearer_json_headers(settings.access_token)

    def audience_requests(
        self, segment_id: str, members: list[MembershipChange], prepared: Prepared, now_ms: int
    ) -> list[HttpRequest]:
        """One request per action and identifier type (Snap takes one schema per request)."""
        hashes = self._hashes(members, prepared)
        return [
            self._request(segment_id, action, schema, chunk)
            for (action, schema), values in hashes.items()
            for chunk in chunks(values, self.max_batch)
        ]

    def _hashes(self, members: list[MembershipChange], prepared: Prepared) -> dict[tuple[str, str], list[str]]:
        """The members' hashed identifiers by (action, schema), deduplicated; members without any are rejected."""
        hashes: dict[tuple[str, str], dict[str, None]] = {
            (action, schema): {} for action in METHODS for schema in dict.fromkeys(SCHEMAS.values())
        }  # in request order: adds, then deletes; emails, phones, advertising ids
        for change in members:
            found = [(SCHEMAS[kind], _hashed(kind, change.identities.get(kind, ""))) for kind in self.identities]
            found = [(schema, value) for schema, value in found if value]
            if sendable(change, METHODS, bool(found), self.missing_description, prepared):
                for schema, value in found:
                    hashes[(change.action, schema)][value] = None
        return {key: list(values) for key, values in hashes.items() if values}

    def _request(self, segment_id: str, action: str, schema: str, values: list[str]) -> HttpRequest:
        body = json_body({"users": [{"schema": [schema], "data": [[value] for value in values]}]})
        return HttpRequest(f"{self.api_url}/segments/{segment_id}/users", body, self.headers, METHODS[action])


def _hashed(kind: MatchIdentity, value: str) -> str:
    if SCHEMAS[kind] == "PHONE_SHA256":
        value = phone_digits(value)
    return sha256_hex(value) if value.strip() else ""
