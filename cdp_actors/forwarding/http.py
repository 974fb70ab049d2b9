"""One HTTP attempt to a partner, as an `Attempt`: transport failures come back as values, never raise.

Redirects are not followed: a 3xx is the attempt's status (a delivery error, not retried). Following one would
turn a POST into a GET without its body, counted as delivered, and let a partner point our requests, with their
credentials, at any address (an internal one). An error's text names no credential (`cdp_actors/redaction.py`).
"""

from __future__ import annotations

import asyncio

import aiohttp

from cdp_actors.forwarding.retry import Attempt, parse_retry_after
from cdp_actors.integrations.base import HttpRequest
from cdp_actors.redaction import describe, request_secrets


class UnsendableRequest(Exception):
    """A request the HTTP client refused to send for a reason other than the network (e.g. a header it will not
    write); retrying cannot help. Its text is already redacted."""


async def send(session: aiohttp.ClientSession, request: HttpRequest, timeout: aiohttp.ClientTimeout) -> Attempt:
    try:
        async with session.request(
            request.method,
            request.url,
            data=request.body,
            headers=request.headers,
            timeout=timeout,
            allow_redirects=False,
        ) as reply:
            await reply.read()
            return Attempt(status=reply.status, retry_after_s=parse_retry_after(reply.headers.get("Retry-After")))
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        return Attempt(timed_out=True, error="timeout")
    except aiohttp.ClientError as error:
        return Attempt(error=describe(error, request_secrets(request.url, request.headers)))
    except Exception as error:
        raise UnsendableRequest(describe(error, request_secrets(request.url, request.headers))) from None
