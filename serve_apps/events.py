"""Events API: `POST /v2/events` and `POST /v2/bulkevents`, a thin HTTP face over the intake log.

Authenticate the input, bound the sizes, validate every batch, then one actor call appends all valid
batches durably; 202 only after that commit.

A replica follows the configuration's versions (`LiveConfig`) and verifies credentials against the stored hashes
through its `KeyVerifier` (`InputKeys`): a key revoked or rotated is refused from the first request after the
replica holds the new version. `static_keys=True` deploys the check the Events API had before the configuration
store: the clear-text secrets of the configuration it was given, no poll loop; only the ingest benchmark's
same-run comparison uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray
import ray.exceptions
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from cdp_actors import handles
from cdp_actors.access.keys import InputKeys, KeyVerifier
from cdp_actors.config import WorkspaceConfig
from cdp_actors.errors import BadRequest, Overloaded, TooLarge
from cdp_actors.intake.log import AppendResult
from cdp_actors.runtime import ensure_runtime
from cdp_actors.schema.events import BatchError, decode_batch, decode_raw_list
from cdp_actors.telemetry import count, now_ms, setup_process, span
from serve_apps.auth import Source, authenticate, read_body, verify_basic
from serve_apps.errors import RETRY_AFTER_S, answer, check_media_type, json_response, unavailable
from serve_apps.live import LiveConfig
from serve_apps.routes import Route, Routes

ROUTES = Routes([Route("POST", "/v2/events", False), Route("POST", "/v2/bulkevents", True)])
"""Path (with the app's `/v2` prefix) to whether its body is a list of batches."""


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
    def __init__(self, config: WorkspaceConfig, data_dir: str, static_keys: bool = False) -> None:
        setup_process(config, data_dir, "events-api")
        ensure_runtime(config, data_dir)
        self.live: LiveConfig[KeyVerifier] | None = None if static_keys else LiveConfig(InputKeys())
        self.static_config = config
        self.limits = config.limits
        self.intake = handles.intake()

    async def __call__(self, request: Request) -> Response:
        try:
            bulk, _ = ROUTES.find(request.method, request.url.path)
            check_media_type(request.headers.get("content-type"))
            with span("ingest.request", bulk=bulk):
                return await self._ingest(request, bulk)
        except Exception as error:  # the app's one handler: a refusal's answer from the table, a bug's 500
            return answer(error, request)

    async def _authenticate(self, request: Request) -> Source:
        header = request.headers.get("authorization")
        if self.live is None:
            return authenticate(self.static_config, header)
        return await verify_basic((await self.live.snapshot()).derived, header)

    async def _ingest(self, request: Request, bulk: bool) -> Response:
        source = await self._authenticate(request)
        body = await read_body(request, self.limits.max_request_bytes)
        items = self._split(body, bulk)
        checked = validate_batches(items, self.limits.max_batch_bytes)
        if not checked.accepted:
            return self._all_rejected(checked, bulk)
        try:
            result: AppendResult = await self.intake.append.remote(source.id, now_ms(), checked.accepted)
        except ray.exceptions.RayError as error:
            raise unavailable(error, "Intake") from error
        if result.overloaded:
            raise Overloaded(f"Intake is {result.lag} batches behind; retry later.", RETRY_AFTER_S)
        if result.refused:  # the request's own fault, not the intake's: resending it would fail again
            raise BadRequest(result.refused, "$")
        count("cdp_events_received", checked.events, input=str(source.id))
        count("cdp_batches_deduplicated", result.duplicates, input=str(source.id))
        if not checked.rejected:
            return Response(status_code=202)
        return json_response(
            202, {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": checked.rejected}
        )

    def _split(self, body: bytes, bulk: bool) -> list[bytes]:
        if not bulk:
            return [body]
        items = decode_raw_list(body)
        if len(items) > self.limits.max_bulk_batches:
            raise TooLarge(f"A bulk request holds at most {self.limits.max_bulk_batches} batches; got {len(items)}.")
        if not items:
            raise BadRequest("Expected at least one batch", "$")
        return [bytes(item) for item in items]

    def _all_rejected(self, checked: Validated, bulk: bool) -> Response:
        """Nothing accepted: 413 if every batch was too large, else 400 naming each batch's reason by index."""
        every_too_large = all(r["code"] == "REQUEST_TOO_LARGE" for r in checked.rejected)
        if not bulk:
            message = checked.rejected[0]["message"]
            raise TooLarge(message) if every_too_large else BadRequest(message)
        errors = [
            {"code": r["code"], "message": f"batch {r['index']}: {r['message']}", "index": r["index"]}
            for r in checked.rejected
        ]
        return json_response(413 if every_too_large else 400, {"errors": errors})
