"""Webhook output: POSTs the enriched outbound batch JSON, as is, to a URL, with an optional auth header; and,
for audiences connected to it, their membership changes as Firehose `audience_membership_change_request` JSON
(https://docs.mparticle.com/developers/partners/firehose/), each audience entry with our `change_id`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from cdp_actors.integrations import firehose
from cdp_actors.integrations.base import (
    BulkMaxAge,
    HttpRequest,
    MembershipChange,
    PartnerUrl,
    Prepared,
    Secret,
    SettingsModel,
    chunks,
    json_body,
)

AUDIENCE_MAX_AGE_S = 1.0
"""How long membership changes wait to be posted together by default: webhooks are near real time."""
AUDIENCE_CHANGES_PER_REQUEST = 1000
"""Membership changes in one POST by default (Firehose's bulk size for audience messages)."""


class Settings(SettingsModel):
    url: PartnerUrl
    auth_header: Secret | None = None
    """Sent verbatim as the Authorization header when set (e.g. ``Bearer abc``)."""
    max_batches_per_request: int = Field(1, ge=1, le=1000)
    """1: one batch per POST, as mParticle's webhook sends. Above 1, batches that are ready together go as
    one JSON array of batches (the Events API's bulk format), up to this many: far fewer requests at volume."""
    audience_max_age_s: BulkMaxAge = AUDIENCE_MAX_AGE_S
    """How long, in seconds, a membership change waits for others to be posted with."""
    audience_changes_per_request: int = Field(AUDIENCE_CHANGES_PER_REQUEST, ge=1, le=10_000)
    """At most this many membership changes in one POST."""
    account_id: int = Field(0, ge=0)
    """The `account.account_id` of membership documents."""


class Adapter:
    status_alerts: ClassVar[dict[int, str]] = {}

    def __init__(self, settings: Settings) -> None:
        self.url = settings.url
        self.max_batches_per_request = settings.max_batches_per_request
        self.headers = {"Content-Type": "application/json", "User-Agent": "cdp-actors/0.1"}
        if settings.auth_header is not None:
            self.headers["Authorization"] = settings.auth_header.get_secret_value()

    def prepare(self, batch: dict[str, Any], now_ms: int) -> Prepared:
        events = len(batch.get("events") or [])
        return Prepared([HttpRequest(self.url, json_body(batch), self.headers)], forwarded_events=events)

    def prepare_raw(self, payload: bytes, event_count: int) -> Prepared:
        """The outbound batch exactly as the shard encoded it, when the connection changes nothing."""
        return Prepared([HttpRequest(self.url, payload, self.headers)], forwarded_events=event_count)

    def combine(self, requests: list[HttpRequest]) -> HttpRequest:
        """Several batches as one POST: a JSON array of their bodies."""
        return HttpRequest(self.url, b"[" + b",".join(request.body for request in requests) + b"]", self.headers)


class AudienceAdapter(Adapter):
    """The webhook's audience side: membership changes as `audience_membership_change_request` documents."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.max_batch = settings.audience_changes_per_request
        self.max_age_s = settings.audience_max_age_s
        self.account = {"account_id": settings.account_id}

    def prepare_memberships(self, changes: list[MembershipChange], now_ms: int) -> Prepared:
        documents = [
            firehose.audience_membership_change_request(chunk, self.account, with_change_ids=True)
            for chunk in chunks(changes, self.max_batch)
        ]
        requests = [HttpRequest(self.url, json_body(document), self.headers) for document in documents]
        return Prepared(requests, forwarded_events=len(changes))
