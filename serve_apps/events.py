"""Events API: `POST /v2/events` and `POST /v2/bulkevents`, a thin HTTP face over the intake log.

Authenticate the input, bound the sizes, validate every batch, then one actor call appends all valid
batches durably; 202 only after that commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.intake.log import AppendResult
from cdp_actors.runtime import ensure_runtime
from cdp_actors.schema.events import BatchError, decode_batch, decode_raw_list
from cdp_actors.telemetry import count, now_ms, setup_process, span
from serve_apps.auth import TooLarge, authenticate, read_body
from serve_apps.errors import (
    RETRY_AFTER_S,
    bad_request,
    error_response,
    internal_error,
    json_response,
    unavailable,
    unsupported_media_type,
)

ENDPOINTS = {"/v2/events": False, "/v2/bulkevents": True}
"""Path (under the app's `/v2` prefix) to whether its body is a list of batches."""


@dataclass
class Validated:
    accepted: list[tuple[str | None, bytes]]
    events: int
    rejected: list[dict[str, Any]]


def validate_batches(items: list[bytes], max_batch_bytes: int) -> Validated:
    accepted: list[tuple[str | None, bytes]] = []
    rejected: list[dict[str, Any]] = []
    events = 0
    for index, raw in enumerate(items):
        if len(raw) > max_batch_bytes:
            message = f"Batch is {len(raw)} bytes; the limit is {max_batch_bytes}."
            rejected.append({"index": index, "code": "REQUEST_TOO_LARGE", "message": message})
            continue
        try:
            batch = decode_batch(raw)
        except BatchError as error:
            rejected.append({"index": index, "code": "BAD_REQUEST", "message": error.message})
            continue
        accepted.append((batch.source_request_id, raw))
        events += len(batch.events)
    return Validated(accepted, events, rejected)


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=64,
    graceful_shutdown_timeout_s=5,  # requests are short; a stop should not wait Serve's default 20 s
    graceful_shutdown_wait_loop_s=1,
)
class EventsApi:
    def __init__(self, config: WorkspaceConfig, data_dir: str) -> None:
        setup_process(config, data_dir, "events-api")
        ensure_runtime(config, data_dir)
        self.config = config
        self.limits = config.limits
        self.intake = handles.intake()

    async def __call__(self, request: Request) -> Response:
        bulk = ENDPOINTS.get(request.url.path.rstrip("/"))
        if bulk is None:
            return error_response(404, "NOT_FOUND", f"No such endpoint: {request.url.path}")
        if request.method != "POST":
            return error_response(405, "METHOD_NOT_ALLOWED", "Use POST.", {"Allow": "POST"})
        refused = unsupported_media_type(request.headers.get("content-type"))
        if refused:
            return refused
        try:
            with span("ingest.request", bulk=bulk):
                return await self._ingest(request, bulk)
        except Exception as error:  # a bug: the client gets the API's 500, the log the traceback
            return internal_error(error, f"POST {request.url.path}")

    async def _ingest(self, request: Request, bulk: bool) -> Response:
        source = authenticate(self.config, request.headers.get("authorization"))
        if isinstance(source, Response):
            return source
        try:
            body = await read_body(request, self.limits.max_request_bytes)
        except TooLarge:
            return error_response(
                413, "REQUEST_TOO_LARGE", f"Request body exceeds {self.limits.max_request_bytes} bytes."
            )
        items = self._split(body, bulk)
        if isinstance(items, Response):
            return items
        checked = validate_batches(items, self.limits.max_batch_bytes)
        if not checked.accepted:
            return self._all_rejected(checked, bulk)
        try:
            result: AppendResult = await self.intake.append.remote(source.id, now_ms(), checked.accepted)
        except ray.exceptions.RayError as error:
            return unavailable(error, "Intake")
        if result.overloaded:
            return error_response(
                429, "TOO_MANY_REQUESTS", f"Intake is {result.lag} batches behind; retry later.",
                {"Retry-After": str(RETRY_AFTER_S)},
            )  # fmt: skip
        if result.refused:  # the request's own fault, not the intake's: resending it would fail again
            return bad_request(f"{result.refused} - at `$`")
        count("cdp_events_received", checked.events, input=str(source.id))
        count("cdp_batches_deduplicated", result.duplicates, input=str(source.id))
        if not checked.rejected:
            return Response(status_code=202)
        return json_response(
            202, {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": checked.rejected}
        )

    def _split(self, body: bytes, bulk: bool) -> list[bytes] | Response:
        if not bulk:
            return [body]
        try:
            items = decode_raw_list(body)
        except BatchError as error:
            return bad_request(error.message)
        if len(items) > self.limits.max_bulk_batches:
            return error_response(
                413, "REQUEST_TOO_LARGE",
                f"A bulk request holds at most {self.limits.max_bulk_batches} batches; got {len(items)}.",
            )  # fmt: skip
        if not items:
            return bad_request("Expected at least one batch - at `$`")
        return [bytes(item) for item in items]

    def _all_rejected(self, checked: Validated, bulk: bool) -> Response:
        """Nothing accepted: 413 if every batch was too large, else 400 naming each batch's reason by index."""
        every_too_large = all(r["code"] == "REQUEST_TOO_LARGE" for r in checked.rejected)
        if not bulk:
            error = checked.rejected[0]
            return error_response(413 if every_too_large else 400, error["code"], error["message"])
        errors = [{"code": r["code"], "message": f"batch {r['index']}: {r['message']}", "index": r["index"]}
                  for r in checked.rejected]  # fmt: skip
        return json_response(413 if every_too_large else 400, {"errors": errors})
