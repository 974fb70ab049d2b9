"""Twitter (X) Custom Audience output: adds and removes audience members with the X Ads API.

Followed: mParticle "Twitter Audience" docs (email, Twitter handle and device IDs (IDFA, Google Ad ID),
sent as SHA-256 hashes) and the X Ads API: ``POST accounts/{account_id}/custom_audiences/{id}/users``
with a JSON array of operations ``{"operation_type": "Update" | "Delete", "params": {"users": [{"email":
[hash], "handle": [hash], "device_id": [hash, ...]}]}}``, OAuth 1.0a (HMAC-SHA1) user-context auth, and
X's "Custom Audiences User Data" normalisation: emails trimmed and lower-cased, handles without ``@``
and lower-cased, IDFAs and Ad IDs lower-cased with dashes, then SHA-256 as lower-case hex.

Guessed / simplified: the X audience id comes from the `audience_ids` setting (X assigns it); one
operation per request, with at most 2,500 users (X limits a request to 2,500 operations and 5 MB, not
users per operation); the OAuth nonce is derived from the request (prepare is pure), so a retried
request carries the same nonce and timestamp; the default upload interval is 3 hours like the other
bulk audiences (X processes audience changes in batches every 6-8 hours).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import ClassVar, Literal
from urllib.parse import quote

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
    chunks,
    json_body,
    sendable,
    sha256_hex,
)

MatchIdentity = Literal["email", "twitter", "ios_advertising_id", "android_advertising_id"]
USER_FIELDS: dict[MatchIdentity, str] = {
    "email": "email",
    "twitter": "handle",
    "ios_advertising_id": "device_id",
    "android_advertising_id": "device_id",
}
OPERATIONS = {"add": "Update", "delete": "Delete"}


class Settings(SettingsModel):
    account_id: str = Field(min_length=1)
    consumer_key: Secret
    consumer_secret: Secret
    access_token: Secret
    access_token_secret: Secret
    audience_ids: dict[int, str] = {}
    """Our audience id → the X custom audience id to keep in step with it."""
    identities: tuple[MatchIdentity, ...] = Field(tuple(USER_FIELDS), min_length=1)
    """The identities forwarded, hashed (``twitter`` is the user's handle)."""
    api_url: PartnerUrl = "https://ads-api.x.com/12"
    bulk_max_age_s: BulkMaxAge = BULK_UPLOAD_INTERVAL_S


@dataclass(frozen=True)
class OAuth1Keys:
    consumer_key: str
    consumer_secret: str
    token: str
    token_secret: str


class Adapter(MappedAudienceAdapter[str]):
    max_batch: ClassVar[int] = 2_500
    mapping_setting: ClassVar[str] = "audience_ids"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.audience_ids, settings.bulk_max_age_s)
        self.audiences_url = f"{settings.api_url.rstrip('/')}/accounts/{settings.account_id}/custom_audiences"
        self.identities: list[MatchIdentity] = [kind for kind in USER_FIELDS if kind in settings.identities]
        self.missing_description = "none of " + ", ".join(self.identities)
        secrets = (settings.consumer_key, settings.consumer_secret, settings.access_token, settings.access_token_secret)
        self.keys = OAuth1Keys(*(secret.get_secret_value() for secret in secrets))

    def audience_requests(
        self, x_audience_id: str, members: list[MembershipChange], prepared: Prepared, now_ms: int
    ) -> list[HttpRequest]:
        users_by_action = self._users(members, prepared)
        return [
            self._request(x_audience_id, action, chunk, now_ms)
            for action, users in users_by_action.items()
            for chunk in chunks(users, self.max_batch)
        ]

    def _users(self, members: list[MembershipChange], prepared: Prepared) -> dict[str, list[dict[str, list[str]]]]:
        """The members as X user objects, by action; members without any accepted identity are rejected."""
        users: dict[str, list[dict[str, list[str]]]] = {"add": [], "delete": []}
        for change in members:
            user = self._user(change.identities)
            if sendable(change, users, bool(user), self.missing_description, prepared):
                users[change.action].append(user)
        return users

    def _user(self, identities: dict[str, str]) -> dict[str, list[str]]:
        user: dict[str, list[str]] = {}
        for kind in self.identities:
            value = identities.get(kind, "").strip().lstrip("@")  # handles are sent without their @
            if value:
                user.setdefault(USER_FIELDS[kind], []).append(sha256_hex(value))
        return user

    def _request(self, x_audience_id: str, action: str, users: list[dict[str, list[str]]], now_ms: int) -> HttpRequest:
        url = f"{self.audiences_url}/{x_audience_id}/users"
        body = json_body([{"operation_type": OPERATIONS[action], "params": {"users": users}}])
        nonce = hashlib.sha256(f"{now_ms}\n{url}\n".encode() + body).hexdigest()[:32]
        authorization = oauth1_header("POST", url, self.keys, nonce, now_ms // 1000)
        return HttpRequest(url, body, {"Content-Type": "application/json", "Authorization": authorization})


def oauth1_header(
    method: str, url: str, keys: OAuth1Keys, nonce: str, timestamp: int, params: dict[str, str] | None = None
) -> str:
    """An OAuth 1.0a HMAC-SHA1 Authorization header; `params` are query or form parameters (a JSON body is
    not signed), `url` has no query string."""
    oauth = {
        "oauth_consumer_key": keys.consumer_key,
        "oauth_nonce": nonce,
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": str(timestamp),
        "oauth_token": keys.token,
        "oauth_version": "1.0",
    }
    pairs = sorted((_encode(k), _encode(v)) for k, v in {**oauth, **(params or {})}.items())
    signed = "&".join(f"{k}={v}" for k, v in pairs)
    base = "&".join((method.upper(), _encode(url), _encode(signed)))
    key = f"{_encode(keys.consumer_secret)}&{_encode(keys.token_secret)}"
    oauth["oauth_signature"] = base64.b64encode(hmac.new(key.encode(), base.encode(), hashlib.sha1).digest()).decode()
    return "OAuth " + ", ".join(f'{_encode(k)}="{_encode(v)}"' for k, v in sorted(oauth.items()))


def _encode(value: str) -> str:
    return quote(value, safe="")  # RFC 3986 percent-encoding, as OAuth 1.0a requires
