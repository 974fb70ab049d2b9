"""Authentication of workspace inputs (HTTP Basic key:secret, or IDSync's HMAC signature) and bounded bodies."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

from cdp_actors.config import Input, WorkspaceConfig
from serve_apps.errors import error_response


class TooLarge(Exception):
    pass


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, sep, secret = decoded.partition(":")
    return (key, secret) if sep else None


def authenticate(config: WorkspaceConfig, header: str | None) -> Input | Response:
    credentials = parse_basic_auth(header)
    if credentials is None:
        return error_response(401, "UNAUTHORIZED", "Authentication missing: send HTTP Basic auth with key:secret.")
    found = config.input_by_key(credentials[0])
    if found is None or not found.credentials_match(*credentials):
        return error_response(403, "FORBIDDEN", "API key/secret are present but not valid.")
    return found


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def missing_credentials() -> Response:
    return error_response(401, "UNAUTHORIZED", "Authentication missing: send HTTP Basic auth with key:secret.")


def signature_of(secret: str, method: str, date: str, path: str, body: bytes) -> str:
    """IDSync's `x-mp-signature`: hex HMAC-SHA256 over METHOD\nDATE\nPATH followed by the raw body."""
    message = f"{method}\n{date}\n{path}".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def authenticate_signed(config: WorkspaceConfig, request: Request, body: bytes) -> Input | Response:
    """Basic auth, or the HMAC mode: `x-mp-key`, `Date` and `x-mp-signature` headers."""
    headers = request.headers
    if "authorization" in headers or "x-mp-signature" not in headers:
        return authenticate(config, headers.get("authorization"))
    key, date = headers.get("x-mp-key", ""), headers.get("date", "")
    found = config.input_by_key(key) if key and date else None
    if found is None:
        return error_response(401, "UNAUTHORIZED", "x-mp-key and Date must accompany x-mp-signature.")
    expected = signature_of(found.secret.get_secret_value(), request.method, date, request.url.path, body)
    if not hmac.compare_digest(expected, headers["x-mp-signature"].lower()):
        return error_response(401, "UNAUTHORIZED", "x-mp-signature does not match the request.")
    return found
