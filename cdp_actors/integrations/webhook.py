"""Webhook output: POSTs the enriched outbound batch JSON to a URL, with an optional auth header."""

from __future__ import annotations

import asyncio

import aiohttp

from cdp_actors.config import WebhookSettings
from cdp_actors.forwarding.retry import Attempt, parse_retry_after
from cdp_actors.schema.records import OutboxRow


class Webhook:
    def __init__(self, settings: WebhookSettings, timeout_s: float) -> None:
        self.url = settings.url
        self.headers = {"Content-Type": "application/json", "User-Agent": "cdp-actors/0.1"}
        if settings.auth_header is not None:
            self.headers["Authorization"] = settings.auth_header.get_secret_value()
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, session: aiohttp.ClientSession, row: OutboxRow) -> Attempt:
        try:
            async with session.post(self.url, data=row.payload, headers=self.headers, timeout=self.timeout) as reply:
                await reply.read()
                return Attempt(status=reply.status, retry_after_s=parse_retry_after(reply.headers.get("Retry-After")))
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            return Attempt(timed_out=True, error="timeout")
        except aiohttp.ClientError as error:
            return Attempt(error=f"{type(error).__name__}: {error}")
