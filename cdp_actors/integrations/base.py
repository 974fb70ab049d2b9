"""The interface every output integration implements, and the registry that builds them."""

from __future__ import annotations

from typing import Protocol

import aiohttp

from cdp_actors.config import Output
from cdp_actors.forwarding.retry import Attempt
from cdp_actors.schema.records import OutboxRow


class Integration(Protocol):
    async def send(self, session: aiohttp.ClientSession, row: OutboxRow) -> Attempt:
        """Deliver one outbound batch; transport failures come back as an `Attempt`, never raise."""
        ...


def build_integration(output: Output, timeout_s: float) -> Integration:
    if output.kind == "webhook":
        from cdp_actors.integrations.webhook import Webhook

        return Webhook(output.settings, timeout_s)
    raise ValueError(f"unknown output kind {output.kind!r}")
