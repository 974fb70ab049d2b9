"""mParticle-style error responses: `{"errors":[{"code":..., "message":...}]}`."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

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
