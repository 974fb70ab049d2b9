"""mParticle-style error responses: `{"errors":[{"code":..., "message":...}]}`."""

from __future__ import annotations

from typing import Any

import lmdb
import msgspec
import ray
from starlette.responses import Response

RETRY_AFTER_S = 1
STORAGE_ERRORS = (lmdb.Error, OSError)
"""What an actor's write raises when its storage refuses it: a full disk, an I/O error."""

_encode = msgspec.json.encode


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(body), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"errors": [{"code": code, "message": message}]}, headers)


def bad_request(message: str) -> Response:
    return error_response(400, "BAD_REQUEST", message)


def validation_error(error: Any) -> Response:
    """FastAPI's request validation failure as an mParticle-style 400 naming the field."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return bad_request(f"{first['msg']} - at `{where}`")


def unavailable(error: ray.exceptions.RayError, service: str) -> Response:
    """503 with Retry-After for a runtime actor that could not do its part, saying why: it is restarting, its
    storage refuses writes (a full disk), or it failed. Its write was one transaction, so nothing was stored."""
    cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else None
    if cause is None:
        reason = f"{service} is restarting"
    elif isinstance(cause, STORAGE_ERRORS):
        reason = f"{service} cannot write to its storage ({cause})"
    else:
        reason = f"{service} failed ({type(cause).__name__})"
    return error_response(503, "SERVICE_UNAVAILABLE", f"{reason}; nothing was stored. Retry shortly.",
                          {"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
