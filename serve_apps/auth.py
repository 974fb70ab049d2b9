"""Authentication of workspace inputs (HTTP Basic key:secret, or IDSync's HMAC signature) and bounded bodies.

Basic credentials are verified against the stored hashes by the replica's `KeyVerifier` (cdp_actors/access/keys.py):
from its cache on the hot path, in a thread on a miss (`verify_basic`). `authenticate` is the clear-text check of a
configuration that still holds its inputs' secrets (a workspace file): the benchmark's static baseline uses it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from starlette.requests import Request

from cdp_actors.access.keys import KeyVerifier
from cdp_actors.config import WorkspaceConfig
from cdp_actors.errors import Forbidden, TooLarge, Unauthorized

MAX_DATE_SKEW = timedelta(minutes=5)
"""How far a signed request's `Date` may be from our clock, either way. The signature covers the Date, so a
captured request can be replayed only within this window; 5 minutes (Kerberos' default) leaves room for a
device clock that drifts without keeping a replay usable for long."""

_JAVA_GMT_OFFSET = re.compile(r"\s(?:GMT|UTC)([+-]\d{2}):?(\d{2})$")
"""Android's SDK formats `EEE, dd MMM yyyy HH:mm:ss zzz` in the device's zone: `GMT+05:30` where a zone has no
US abbreviation. RFC 5322's parser wants `+0530`."""


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters, or bytes that are not UTF-8
        return None
    key, sep, secret = decoded.partition(":")
    return (key, secret) if sep else None


@dataclass(frozen=True)
class Source:
    """The input a request authenticated as."""

    id: int
    key: str


def basic_credentials(header: str | None) -> tuple[str, str]:
    credentials = parse_basic_auth(header)
    if credentials is None:
        raise Unauthorized("Authentication missing: send HTTP Basic auth with key:secret.")
    return credentials


def authenticate(config: WorkspaceConfig, header: str | None) -> Source:
    """The clear-text check against a configuration holding its inputs' secrets (a workspace file)."""
    credentials = basic_credentials(header)
    found = config.input_by_key(credentials[0])
    if found is None or not found.credentials_match(*credentials):
        raise Forbidden("API key/secret are present but not valid.")
    return Source(found.id, found.key)


async def verify_basic(verifier: KeyVerifier, header: str | None) -> Source:
    """Basic credentials checked against the stored hashes: a cached answer, or one verification in a thread
    (~70 ms of scrypt that must not hold the replica's event loop)."""
    key, secret = basic_credentials(header)
    input_id = verifier.cached(key, secret)
    if input_id is None:
        input_id = await asyncio.to_thread(verifier.verify, key, secret)
    return Source(input_id, key)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"Request body exceeds {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"Request body exceeds {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def signature_of(secret: str, method: str, date: str, path: str, body: bytes) -> str:
    """IDSync's `x-mp-signature`: hex HMAC-SHA256 over METHOD\nDATE\nPATH followed by the raw body."""
    message = f"{method}\n{date}\n{path}".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_at(date: str) -> datetime | None:
    """The instant a `Date` header names, as the SDKs send it: an HTTP-date (`Mon, 30 Nov 2026 21:38:23 GMT`,
    iOS), the same in the device's zone (`PST`, `GMT+05:30`, `-0800`: Android), or ISO-8601 (`20170712T224127Z`,
    mParticle's docs). None if it is none of these or names no zone we know (`CET` is ambiguous)."""
    text = date.strip()
    try:
        if text[:4].isdigit():
            parsed = datetime.fromisoformat(text)
        else:
            parsed = parsedate_to_datetime(_JAVA_GMT_OFFSET.sub(r" \1\2", text))
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else None


def date_refusal(date: str, now: datetime) -> str | None:
    """Why a signed request's `Date` is refused, or None if it is within the skew of `now`."""
    when = signed_at(date)
    if when is None:
        return "Date must be an HTTP-date (e.g. `Mon, 30 Nov 2026 21:38:23 GMT`) or ISO-8601 UTC (`20261130T213823Z`)."
    skew = when - now
    if abs(skew) > MAX_DATE_SKEW:
        direction = "ahead of" if skew > timedelta(0) else "behind"
        return (
            f"Date is {int(abs(skew).total_seconds())} s {direction} the server's clock; a signed request must "
            f"be within {int(MAX_DATE_SKEW.total_seconds())} s."
        )
    return None


def signatures_match(expected: str, given: str) -> bool:
    """Constant-time, for any text a client sends: compare_digest refuses a non-ASCII str (TypeError)."""
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8", "replace"))


async def authenticate_signed(
    config: WorkspaceConfig, verifier: KeyVerifier, request: Request, body: bytes, now: datetime | None = None
) -> Source:
    """Basic auth (through `verifier`), or the HMAC mode: `x-mp-key`, `Date` and `x-mp-signature` headers, for an
    input that takes signed requests (only those keep the secret an HMAC needs)."""
    headers = request.headers
    if "authorization" in headers or "x-mp-signature" not in headers:
        return await verify_basic(verifier, headers.get("authorization"))
    key, date = headers.get("x-mp-key", ""), headers.get("date", "")
    if not key or not date:
        raise Unauthorized("x-mp-key and Date must accompany x-mp-signature.")
    found = config.input_by_key(key)
    if found is None:
        raise Unauthorized("x-mp-key is not a key of this workspace.")
    if not found.signed_requests or found.secret is None:
        raise Unauthorized("This key does not take signed requests: send HTTP Basic auth with key:secret.")
    refused = date_refusal(date, now or datetime.now(timezone.utc))
    if refused:
        raise Unauthorized(refused)
    expected = signature_of(found.clear_secret(), request.method, date, request.url.path, body)
    if not signatures_match(expected, headers["x-mp-signature"]):
        raise Unauthorized("x-mp-signature does not match the request.")
    return Source(found.id, found.key)
