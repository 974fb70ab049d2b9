"""IDSync Identity API under `/v1`: identify, search, login, logout, modify, and alias.

A thin face: authenticate (Basic or HMAC signature), decode and validate, then one call to the
IdentityIndex actor, where the strategy runs atomically.
"""

from __future__ import annotations

from typing import Any

import lmdb
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.identity.strategy import IdentityError, Outcome
from cdp_actors.identity.types import CANONICAL_TO_IDSYNC
from cdp_actors.runtime import ensure_runtime
from cdp_actors.schema.identity import (
    AliasRequest,
    IdentityRequest,
    ModifyRequest,
    RequestError,
    decode_request,
    identity_changes,
    known_identities,
    parse_mpid,
)
from cdp_actors.telemetry import count, now_ms, setup_process, span
from serve_apps.auth import TooLarge, authenticate_signed, read_body
from serve_apps.errors import (
    STORAGE_ERRORS,
    bad_request,
    error_response,
    internal_error,
    json_response,
    unavailable,
    unsupported_media_type,
)

MAX_BODY_BYTES = 64 * 1024
LOOKUPS = ("identify", "search", "login", "logout")


def identity_response(outcome: Outcome, context: str | None) -> dict[str, Any]:
    return {
        "context": context,
        "mpid": str(outcome.mpid),
        "matched_identities": {CANONICAL_TO_IDSYNC.get(t, t): v for t, v in outcome.matched.items()},
        "is_ephemeral": False,
        "is_logged_in": outcome.logged_in,
    }


def index_failure(error: ray.exceptions.RayTaskError) -> Response | None:
    """The answer to a failed IdentityIndex call, or None for a bug (a 500)."""
    cause = error.cause
    if isinstance(cause, IdentityError):
        return error_response(cause.status, cause.code, cause.message)
    if isinstance(cause, lmdb.BadValsizeError):  # the request's own value, not the storage: a 503 would have the
        # client retry it for ever (the door's checks make this unreachable today)
        return bad_request("The identity index cannot store a value of this request - at `$`")
    if isinstance(cause, STORAGE_ERRORS):
        return unavailable(error, "The identity service")
    return None


def route(path: str) -> tuple[str, str | None] | None:
    """(operation, path argument) for a path under /v1, or None."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["v1"]:
        parts = parts[1:]
    if len(parts) == 1 and parts[0] in LOOKUPS:
        return parts[0], None
    if len(parts) == 2 and parts[1] == "modify":
        return "modify", parts[0]
    if len(parts) == 3 and parts[0] == "identity" and parts[2].lower() == "alias":
        return "alias", parts[1]
    return None


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=64,
    graceful_shutdown_timeout_s=5,
    graceful_shutdown_wait_loop_s=1,
)
class IdentityApi:
    def __init__(self, config: WorkspaceConfig, data_dir: str) -> None:
        setup_process(config, data_dir, "identity-api")
        ensure_runtime(config, data_dir)
        self.config = config
        self.index = handles.identity()

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except Exception as error:  # a bug: the client gets the API's 500, the log the traceback
            return internal_error(error, f"{request.method} {request.url.path}")

    async def _handle(self, request: Request) -> Response:
        target = route(request.url.path)
        if target is None:
            return error_response(404, "NOT_FOUND", f"No such endpoint: {request.url.path}")
        if request.method != "POST":
            return error_response(405, "METHOD_NOT_ALLOWED", "Use POST.", {"Allow": "POST"})
        refused = unsupported_media_type(request.headers.get("content-type"))
        if refused:
            return refused
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except TooLarge:
            return error_response(413, "REQUEST_TOO_LARGE", f"Request body exceeds {MAX_BODY_BYTES} bytes.")
        source = authenticate_signed(self.config, request, body)
        if isinstance(source, Response):
            return source
        operation, argument = target
        with span("identity.request", operation=operation):
            try:
                response = await self._dispatch(operation, argument, body, source.key)
            except RequestError as error:
                return bad_request(error.message)
            except IdentityError as error:
                return error_response(error.status, error.code, error.message)
            except ray.exceptions.RayTaskError as error:
                answer = index_failure(error)
                if answer is None:
                    raise
                return answer
            except ray.exceptions.RayError as error:  # the index actor is restarting
                return unavailable(error, "The identity service")
        count("cdp_identity_requests", 1, operation=operation)
        return response

    async def _dispatch(self, operation: str, argument: str | None, body: bytes, key: str) -> Response:
        if operation == "modify":
            return await self._modify(argument, body)
        if operation == "alias":
            return await self._alias(argument, body, key)
        request = decode_request(body, IdentityRequest)
        identities = known_identities(request)
        previous = parse_mpid(request.previous_mpid, "previous_mpid")
        now = now_ms()
        if operation == "search":
            found = await self.index.search.remote(identities)
            if found is None:
                return error_response(404, "NOT_FOUND_ERROR", "User Profile Not Found.")
            return json_response(200, identity_response(found, request.context))
        if operation == "identify":
            outcome = await self.index.identify.remote(identities, now, previous)
        elif operation == "login":
            outcome = await self.index.login.remote(identities, now, previous)
        else:
            outcome = await self.index.logout.remote(identities, now)
        return json_response(200, identity_response(outcome, request.context))

    async def _modify(self, argument: str | None, body: bytes) -> Response:
        mpid = parse_mpid(argument, "mpid")
        changes = identity_changes(decode_request(body, ModifyRequest))
        applied = await self.index.modify.remote(mpid, changes)
        results = [{"identity_type": CANONICAL_TO_IDSYNC.get(c.identity_type, c.identity_type),
                    "modified_mpid": str(mpid)} for c in applied]  # fmt: skip
        return json_response(200, {"change_results": results})

    async def _alias(self, api_key: str | None, body: bytes, key: str) -> Response:
        if api_key != key:
            return error_response(403, "FORBIDDEN", "The API key in the path is not the authenticated one.")
        request = decode_request(body, AliasRequest)
        source = parse_mpid(request.data.source_mpid, "data.source_mpid")
        destination = parse_mpid(request.data.destination_mpid, "data.destination_mpid")
        if source == destination:
            raise RequestError("Source MPID is the same as the target MPID.")
        await self.index.alias.remote(source, destination, request.data.start_unixtime_ms,
                                      request.data.end_unixtime_ms, now_ms())  # fmt: skip
        return Response(status_code=202)
