"""One HTTP attempt to a partner, as an `Attempt`: transport failures come back as values, never raise."""

from __future__ import annotations

import asyncio

import aiohttp

from cdp_actors.forwarding.retry import Attempt, parse_retry_after
from cdp_actors.integrations.base import HttpRequest


async def send(session: aiohttp.ClientSession, request: HttpRequest, timeout: aiohttp.ClientTimeout) -> Attempt:
    try:
        async with session.request(request.method, request.url, data=request.body, headers=request.headers,
                                   timeout=timeout) as reply:  # fmt: skip
            await reply.read()
            return Attempt(status=reply.status, retry_after_s=parse_retry_after(reply.headers.get("Retry-After")))
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        return Attempt(timed_out=True, error="timeout")
    except aiohttp.ClientError as error:
        return Attempt(error=f"{type(error).__name__}: {error}")
