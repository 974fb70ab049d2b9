"""Webhook output: POSTs the enriched outbound batch JSON, as is, to a URL, with an optional auth header."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from cdp_actors.integrations.base import HttpRequest, PartnerUrl, Prepared, Secret, SettingsModel, json_body


class Settings(SettingsModel):
    url: PartnerUrl
    auth_header: Secret | None = None
    """Sent verbatim as the Authorization header when set (e.g. ``Bearer abc``)."""
    max_batches_per_request: int = Field(1, ge=1, le=1000)
    """1: one batch per POST, as mParticle's webhook sends. Above 1, batches that are ready together go as
    one JSON array of batches (the Events API's bulk format), up to this many: far fewer requests at volume."""


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
