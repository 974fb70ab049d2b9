"""IDSync Identity API under `/v1`: identify, search, login, logout, modify, and alias.

A thin face: authenticate (Basic against the stored hashes, as the Events API does, or the HMAC signature of an
input that takes signed requests), decode and validate, then one call to the IdentityIndex actor, where the
strategy runs atomically.
"""

from __future__ import annotations

from typing import Any

import lmdb
import ray
import ray.exceptions
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from cdp_actors import handles
from cdp_actors.access.keys import InputKeys
from cdp_actors.config import WorkspaceConfig
from cdp_actors.errors import BadRequest, Forbidden, NotFound, RequestFailed
from cdp_actors.identity.strategy import Outcome
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
from cdp_actors.schema.identity_types import CANONICAL_TO_IDSYNC
from cdp_actors.telemetry import count, now_ms, setup_process, span
from serve_apps import dsr
from serve_apps.auth import authenticate_signed, read_body
from serve_apps.errors import IDSYNC_CODES, STORAGE_ERRORS, answer, check_media_type, json_response, unavailable
from serve_apps.live import LiveConfig
from serve_apps.routes import Route, Routes

MAX_BODY_BYTES = 64 * 1024
LOOKUPS = ("identify", "search", "login", "logout")
ROUTES = Routes(
    [
        *(Route("POST", f"/v1/{lookup}", lookup) for lookup in LOOKUPS),
        Route("POST", "/v1/{mpid}/modify", "modify"),
        Route("POST", "/v1/identity/{api_key}/alias", "alias", any_case=True),
    ]
)
"""Path (with the app's `/v1` prefix) to the operation."""


def identity_response(outcome: Outcome, context: str | None) -> dict[str, Any]:
    return {
        "context": context,
        "mpid": str(outcome.mpid),
        "matched_identities": {CANONICAL_TO_IDSYNC.get(t, t): v for t, v in outcome.matched.items()},
        "is_ephemeral": False,
        "is_logged_in": outcome.logged_in,
    }


def index_refusal(error: ray.exceptions.RayError) -> RequestFailed | None:
    """Why a failed IdentityIndex call refuses the request, or None for a bug (a 500)."""
    if not isinstance(error, ray.exceptions.RayTaskError):  # the index actor is restarting
        return unavailable(error, "The identity service")
    cause = error.cause
    if isinstance(cause, RequestFailed):  # the strategy's refusal
        return cause
    if isinstance(cause, lmdb.BadValsizeError):  # the request's own value, not the storage: a 503 would have the
        # client retry it for ever (the door's checks make this unreachable today)
        return BadRequest("The identity index cannot store a value of this request", "$")
    if isinstance(cause, STORAGE_ERRORS):
        return unavailable(error, "The identity service")
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
        self.live = LiveConfig(InputKeys())
        self.index = handles.identity()

    async def __call__(self, request: Request) -> Response:
        try:
            if dsr.is_relayed(request.url.path):  # the DSR API's v1 paths: answered by its app
                return await dsr.relay(request)
            return await self._handle(request)
        except Exception as error:  # the app's one handler: a refusal's answer from the table, a bug's 500
            return answer(error, request, IDSYNC_CODES)

    async def _handle(self, request: Request) -> Response:
        operation, arguments = ROUTES.find(request.method, request.url.path)
        check_media_type(request.headers.get("content-type"))
        body = await read_body(request, MAX_BODY_BYTES)
        held = await self.live.snapshot()
        source = await authenticate_signed(held.config, held.derived, request, body)
        with span("identity.request", operation=operation):
            try:
                response = await self._dispatch(operation, arguments, body, source.key)
            except ray.exceptions.RayError as error:
                refusal = index_refusal(error)
                if refusal is None:
                    raise
                raise refusal from error
        count("cdp_identity_requests", 1, operation=operation)
        return response

    async def _dispatch(self, operation: str, arguments: dict[str, str], body: bytes, key: str) -> Response:
        if operation == "modify":
            return await self._modify(arguments["mpid"], body)
        if operation == "alias":
            return await self._alias(arguments["api_key"], body, key)
        request = decode_request(body, IdentityRequest)
        identities = known_identities(request)
        previous = parse_mpid(request.previous_mpid, "previous_mpid")
        now = now_ms()
        if operation == "search":
            found = await self.index.search.remote(identities)
            if found is None:
                raise NotFound("User Profile Not Found.")
            return json_response(200, identity_response(found, request.context))
        if operation == "identify":
            outcome = await self.index.identify.remote(identities, now, previous)
        elif operation == "login":
            outcome = await self.index.login.remote(identities, now, previous)
        else:
            outcome = await self.index.logout.remote(identities, now)
        return json_response(200, identity_response(outcome, request.context))

    async def _modify(self, argument: str, body: bytes) -> Response:
        mpid = parse_mpid(argument, "mpid")
        changes = identity_changes(decode_request(body, ModifyRequest))
        applied = await self.index.modify.remote(mpid, changes)
        results = [
            {"identity_type": CANONICAL_TO_IDSYNC.get(c.identity_type, c.identity_type), "modified_mpid": str(mpid)}
            for c in applied
        ]
        return json_response(200, {"change_results": results})

    async def _alias(self, api_key: str, body: bytes, key: str) -> Response:
        if api_key != key:
            raise Forbidden("The API key in the path is not the authenticated one.")
        request = decode_request(body, AliasRequest)
        source = parse_mpid(request.data.source_mpid, "data.source_mpid")
        destination = parse_mpid(request.data.destination_mpid, "data.destination_mpid")
        if source == destination:
            raise RequestError("Source MPID is the same as the target MPID.")
        await self.index.alias.remote(
            source, destination, request.data.start_unixtime_ms, request.data.end_unixtime_ms, now_ms()
        )
        return Response(status_code=202)
