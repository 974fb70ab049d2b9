"""Refusals as mParticle-style answers, `{"errors":[{"code":..., "message":...}]}`, from one table (ANSWERS).

Code anywhere raises a `cdp_actors.errors` refusal; each app has one handler (`answer`) that maps it. A new
kind of refusal is a class in `cdp_actors/errors.py` and a row in ANSWERS."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import lmdb
import msgspec
import ray
import ray.exceptions
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from cdp_actors.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    Overloaded,
    RateLimited,
    RequestFailed,
    TooLarge,
    Unauthorized,
    Unavailable,
)

RETRY_AFTER_S = 1
STORAGE_ERRORS = (lmdb.Error, OSError)
"""What an actor's write raises when its storage refuses it: a full disk, an I/O error."""

_encode = msgspec.json.encode
RATE_LIMIT_EXCEEDED_HEADER = "X-mp-rate-limit-exceeded"
"""Which limit a 429 hit (https://docs.mparticle.com/guides/default-service-limits/)."""


class NoSuchEndpoint(NotFound):
    """No route of the app has this path."""


class MethodNotAllowed(RequestFailed):
    """The path exists, not for this method; `allowed` are the methods it has."""

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class UnsupportedMediaType(RequestFailed):
    """The body is labelled as something other than JSON."""


ANSWERS: dict[type[RequestFailed], tuple[int, str]] = {  # exception: (HTTP status, mParticle-style code)
    BadRequest: (400, "BAD_REQUEST"),
    Unauthorized: (401, "UNAUTHORIZED"),
    Forbidden: (403, "FORBIDDEN"),
    NotFound: (404, "NOT_FOUND"),
    NoSuchEndpoint: (404, "NOT_FOUND"),
    MethodNotAllowed: (405, "METHOD_NOT_ALLOWED"),
    Conflict: (409, "CONFLICT"),
    Gone: (410, "GONE"),
    TooLarge: (413, "REQUEST_TOO_LARGE"),
    UnsupportedMediaType: (415, "UNSUPPORTED_MEDIA_TYPE"),
    Overloaded: (429, "TOO_MANY_REQUESTS"),
    RateLimited: (429, "TOO_MANY_REQUESTS"),
    Unavailable: (503, "SERVICE_UNAVAILABLE"),
}
"""The one place a refusal becomes an answer: body `{"errors": [{"code", "message"}]}` with this status. A class
not listed answers as its nearest listed base class; an exception that is no RequestFailed is a bug (a 500)."""

IDSYNC_CODES: dict[type[RequestFailed], str] = {NotFound: "NOT_FOUND_ERROR"}
"""IDSync's own code for a profile it cannot find (search's 404, https://docs.mparticle.com/developers/idsync/http-api/);
its other answers are the table's."""


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(body), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"errors": [{"code": code, "message": message}]}, headers)


def answer_of(error: RequestFailed, codes: Mapping[type[RequestFailed], str] | None = None) -> Response:
    """The HTTP answer to a refusal, from ANSWERS; `codes` are an API's own codes for some classes."""
    kind = next((k for k in type(error).__mro__ if k in ANSWERS), None)
    if kind is None:  # a refusal class without a row: our bug, not the client's
        return internal_error(error, f"the error table ({type(error).__name__})")
    status, code = ANSWERS[kind]
    return error_response(status, (codes or {}).get(kind, code), error.message, headers_of(error))


def headers_of(error: RequestFailed) -> dict[str, str] | None:
    if isinstance(error, RateLimited):
        return {"Retry-After": str(error.retry_after_s), RATE_LIMIT_EXCEEDED_HEADER: error.exceeded}
    if isinstance(error, (Overloaded, Unavailable)):
        return {"Retry-After": str(error.retry_after_s)}
    if isinstance(error, MethodNotAllowed):
        return {"Allow": ", ".join(error.allowed)}
    return None


def answer(error: Exception, request: Request, codes: Mapping[type[RequestFailed], str] | None = None) -> Response:
    """The one exception handler of every app: a refusal answers from ANSWERS, anything else is a bug (a 500).
    A refusal raised inside an actor arrives as Ray's `RayTaskError(<its class>)`, an instance of its class too."""
    if isinstance(error, RequestValidationError):
        error = validation_error(error)
    elif isinstance(error, StarletteHTTPException):
        error = http_error(request, error)
    if isinstance(error, RequestFailed):
        return answer_of(error, codes)
    if isinstance(error, StarletteHTTPException):
        headers = dict(error.headers) if error.headers else None
        return error_response(error.status_code, code_for(error.status_code), str(error.detail), headers)
    return internal_error(error, f"{request.method} {request.url.path}")


def validation_error(error: RequestValidationError) -> BadRequest:
    """FastAPI's request validation failure, naming the field."""
    first = error.errors()[0]
    return BadRequest(first["msg"], ".".join(str(part) for part in first["loc"]))


def http_error(request: Request, error: StarletteHTTPException) -> RequestFailed | StarletteHTTPException:
    """FastAPI's routing failures (an unknown path, a wrong method) as our refusals; other statuses stay as raised."""
    if error.status_code == 404:
        return NoSuchEndpoint(f"No such endpoint: {request.method} {request.url.path}")
    if error.status_code == 405:
        allowed = tuple((error.headers or {}).get("Allow", "").split(", "))
        return MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}.", allowed)
    return error


def unavailable(error: ray.exceptions.RayError, service: str) -> Unavailable:
    """A runtime actor that could not do its part, saying why: it is restarting, its storage refuses writes (a
    full disk), or it failed. Its write was one transaction, so nothing was stored."""
    cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else None
    if cause is None:
        reason = f"{service} is restarting"
    elif isinstance(cause, STORAGE_ERRORS):
        reason = f"{service} cannot write to its storage ({cause})"
    else:
        reason = f"{service} failed ({type(cause).__name__})"
    return Unavailable(f"{reason}; nothing was stored. Retry shortly.", RETRY_AFTER_S)


log = logging.getLogger("cdp_actors.serve_apps")

CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    410: "GONE",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}
"""mParticle-style code for a status, for errors raised outside our own apps (Serve's, by status alone)."""

ACCEPTED_CONTENT_TYPES = ("application/json", "text/plain")
"""Request bodies are JSON whatever the label: the server SDKs (Python, Node, Java) and every IDSync client send
`application/json`, the Web SDK's batch uploads `text/plain;charset=UTF-8` (a CORS-simple request, no preflight).
A missing Content-Type is accepted too; any other (a form, multipart, XML) is a 415."""


def code_for(status: int) -> str:
    return CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")


CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a client that went away mid-request: nobody reads it, the access log shows it."""


def internal_error(error: BaseException, where: str) -> Response:
    """500 for a bug: the exception goes to the log, never its text to the client (it may name internals).
    A client that disconnected while sending its body is routine under timeouts, not a bug: no traceback."""
    if isinstance(error, ClientDisconnect):
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    log.error("unexpected error in %s", where, exc_info=error)
    return error_response(500, "INTERNAL_ERROR", "An unexpected error occurred; it has been logged.")


def check_media_type(content_type: str | None) -> None:
    """Raises UnsupportedMediaType unless the body is labelled as one of ACCEPTED_CONTENT_TYPES (any parameters)
    or not labelled."""
    if content_type is None or not content_type.strip():
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media_type!r} is not accepted; send a JSON body as {' or '.join(ACCEPTED_CONTENT_TYPES)}."
        )


def install_error_handlers(app: FastAPI, codes: Mapping[type[RequestFailed], str] | None = None) -> None:
    """`answer` as the FastAPI app's handler for refusals, validation failures, FastAPI's and Starlette's HTTP
    errors (unknown paths, 405s) and any unexpected exception."""

    async def handler(request: Request, error: Exception) -> Response:
        return answer(error, request, codes)

    for kind in (RequestFailed, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handler)


class ErrorEnvelope:
    """ASGI middleware for the responses Serve writes itself, outside our apps: its backpressure 429 and 503
    ("Request dropped due to backpressure"), a timeout's 408, an unavailable deployment's 503, a 500. They are
    plain text and not configurable (ray/serve/_private/http_util.py `convert_object_to_asgi_messages`, used by
    the Python proxy's router and by a replica's direct ingress alike); this rewrites every error that is not
    JSON into `{"errors": [{"code", "message"}]}`, keeping the status and headers (Retry-After). A 500's text
    can name internals: it is replaced by a generic message."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict[str, Any] = {}
        body = bytearray()

        async def rewrite(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                if message["status"] >= 400 and not _is_json(message.get("headers", [])):
                    held["start"] = message
                    return
            elif message["type"] == "http.response.body" and "start" in held:
                if len(body) < MAX_HELD_ERROR_BYTES:
                    body.extend(message.get("body", b"")[:MAX_HELD_ERROR_BYTES])
                if message.get("more_body", False):
                    return
                for part in enveloped(held.pop("start"), bytes(body)):
                    await send(part)
                return
            await send(message)

        await self.app(scope, receive, rewrite)


MAX_HELD_ERROR_BYTES = 4096
"""Of a plain-text error body, what is kept to become the message (Serve's are one line)."""


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"content-type" and value.lower().startswith(b"application/json") for name, value in headers
    )


def enveloped(start: dict[str, Any], body: bytes) -> list[dict[str, Any]]:
    """The ASGI messages of an error response in the API's shape, from a plain one."""
    status = start["status"]
    text = body.decode("utf-8", "replace").strip()[:500]
    if (status >= 500 and status != 503) or not text:
        text = "An unexpected error occurred; it has been logged." if status >= 500 else f"HTTP {status}"
    encoded = _encode({"errors": [{"code": code_for(status), "message": text}]})
    headers = [
        (name, value)
        for name, value in start.get("headers", [])
        if name.lower() not in (b"content-type", b"content-length")
    ]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(encoded)).encode())]
    return [{**start, "headers": headers}, {"type": "http.response.body", "body": encoded, "more_body": False}]


def ingress_middlewares() -> list[Middleware]:
    """Serve's HTTP proxy callback (`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=serve_apps.errors.ingress_middlewares`):
    the middlewares Serve wraps around its Python proxy and each replica's direct ingress (HAProxy mode)."""
    return [Middleware(ErrorEnvelope)]
