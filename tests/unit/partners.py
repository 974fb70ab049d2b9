"""What the output integrations' unit tests share: outbound batches and events as `profiles/outbound.py` builds
them, and a local partner that records the requests it receives over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from cdp_actors.forwarding.http import send
from cdp_actors.forwarding.retry import Attempt
from cdp_actors.integrations.base import HttpRequest
from tests.support import free_port

NOW_MS = 1_700_000_000_000
EVENT_MS = NOW_MS - 60_000
"""When the sample events happened: a minute before they are forwarded."""

# ---- outbound batches and their events -------------------------------------------------------------------


def user_identities(**values: str) -> list[dict[str, Any]]:
    """The batch's `user_identities`, one entry per identity type given."""
    return [{"identity_type": kind, "identity": value} for kind, value in values.items()]


def outbound_batch(*events: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An enriched outbound batch of `events`; `fields` add to or replace its top-level fields."""
    return {
        "environment": "production",
        "schema_version": 2,
        "timestamp_unixtime_ms": NOW_MS,
        "events": list(events),
        **fields,
    }


def event(event_type: str, event_id: int = 201, ts: int = EVENT_MS, **data: Any) -> dict[str, Any]:
    """An event with its time, event id and message id (the event id + 1000) and `data`."""
    stamps = {"timestamp_unixtime_ms": ts, "event_id": event_id, "message_id": event_id + 1000}
    return {"event_type": event_type, "data": {**stamps, **data}}


def custom_event(name: str | None, event_id: int, ts: int, attributes: dict[str, Any], **data: Any) -> dict[str, Any]:
    """A custom event named `name` (no name when None) with `attributes` as its custom attributes."""
    named = {"event_name": name} if name is not None else {}
    return event("custom_event", event_id, ts, **named, custom_attributes=attributes, **data)


def commerce_event(
    action: str,
    products: list[dict[str, Any]],
    event_id: int,
    ts: int = EVENT_MS,
    *,
    total: float | None,
    transaction_id: str,
    **data: Any,
) -> dict[str, Any]:
    """A commerce event of one product action paid in EUR; `total` is its total amount, left out when None."""
    product_action = {"action": action, "transaction_id": transaction_id, "products": products}
    if total is not None:
        product_action["total_amount"] = total
    return event("commerce_event", event_id, ts, product_action=product_action, currency_code="EUR", **data)


def custom(name: str | None, event_id: int = 101, ts: int = EVENT_MS, **attributes: Any) -> dict[str, Any]:
    """A sample custom event, a navigation from the source message ``src-1``."""
    return custom_event(name, event_id, ts, attributes, custom_event_type="navigation", source_message_id="src-1")


def nth_event(event_type: str, n: int = 1, **data: Any) -> dict[str, Any]:
    """The batch's n-th sample event: event id 1000 + n."""
    return event(event_type, 1000 + n, **data)


def nth_commerce(action: str, products: list[dict[str, Any]], n: int = 1, **data: Any) -> dict[str, Any]:
    """The batch's n-th sample event, a commerce event of 102.0 in all, transaction ``t-1``."""
    return commerce_event(action, products, 1000 + n, total=102.0, transaction_id="t-1", **data)


# ---- a local partner over real HTTP ----------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as the local partner received it."""

    method: str
    path: str
    path_qs: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, decoded from JSON."""
        return json.loads(self.body)


Reply = Callable[[Received], web.Response]
"""How the local partner answers a request it received."""


def reply_ok(received: Received) -> web.Response:
    """A 200 with a plain-text ``ok``."""
    return web.Response(text="ok")


@dataclass(frozen=True)
class LocalPartner:
    """A partner's HTTP API on a free local port, up while `deliver` sends it requests."""

    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        """The partner's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def deliver(
        self, requests: list[HttpRequest], reply: Reply = reply_ok, timeout_s: float = 10.0
    ) -> tuple[list[Attempt], list[Received]]:
        """Send `requests` with the forwarder's `send`; the attempts, and the requests as the partner received them."""
        return asyncio.run(self._deliver(requests, reply, timeout_s))

    async def _deliver(
        self, requests: list[HttpRequest], reply: Reply, timeout_s: float
    ) -> tuple[list[Attempt], list[Received]]:
        received: list[Received] = []

        async def record(request: web.Request) -> web.Response:
            seen = Received(
                request.method,
                request.path,
                request.path_qs,
                dict(request.query),
                dict(request.headers),
                await request.read(),
            )
            received.append(seen)
            return reply(seen)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        try:
            async with aiohttp.ClientSession() as session:
                timeout = aiohttp.ClientTimeout(total=timeout_s)
                attempts = [await send(session, request, timeout) for request in requests]
        finally:
            await runner.cleanup()
        return attempts, received
