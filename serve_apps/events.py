"""Events API: `POST /v2/events` and `POST /v2/bulkevents`, a thin HTTP face over the intake log.

Authenticate the input, bound the sizes, validate every batch, then one actor call appends all valid
batches durably; 202 only after that commit. A request with `Sec-GPC: 1` has each of its batches marked
`"gpc": true` before the append (`mark_gpc`), so the signal is logged with the batch it came with.

The CA Seeding API (`POST /v2/calculatedattributes`, `POST /v2/bulkcalculatedattributes`,
https://docs.mparticle.com/developers/apis/ca-seeding-api/) shares the app, its authentication and its intake path:
each request is checked against the active calculated attributes (`cdp_actors/calculated/seeding.py`) and becomes an
eventless batch carrying `calculated_attribute_seeds`, appended like any batch (202 once on disk). A bulk request is
all-or-nothing: every item is checked before one append of them all. A client batch sent to the Events API that
carries `calculated_attribute_seeds` is refused: only the seeding endpoints write them.

A replica follows the configuration's versions (`LiveConfig`) and verifies credentials against the stored hashes
through its `KeyVerifier` (`InputKeys`): a key revoked or rotated is refused from the first request after the
replica holds the new version. `static_keys=True` deploys the check the Events API had before the configuration
store: the clear-text secrets of the configuration it was given, no poll loop; only the ingest benchmark's
same-run comparison uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import ray
import ray.exceptions
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from cdp_actors import handles
from cdp_actors.access.keys import InputKeys, KeyVerifier
from cdp_actors.calculated.seeding import active_definitions, parse_seed_request
from cdp_actors.config import WorkspaceConfig
from cdp_actors.errors import BadRequest, Overloaded, TooLarge
from cdp_actors.intake.log import AppendResult
from cdp_actors.runtime import ensure_runtime
from cdp_actors.schema.events import Batch, BatchError, decode_batch, decode_raw_list, mark_gpc
from cdp_actors.telemetry import count, now_ms, setup_process, span
from serve_apps import dsr
from serve_apps.auth import Source, authenticate, read_body, verify_basic
from serve_apps.errors import RETRY_AFTER_S, answer, check_media_type, json_response, unavailable
from serve_apps.live import LiveConfig
from serve_apps.routes import Route, Routes

ROUTES = Routes([Route("POST", "/v2/events", False), Route("POST", "/v2/bulkevents", True)])
"""Path (with the app's `/v2` prefix) to whether its body is a list of batches."""
SEEDING_ROUTES = Routes([Route("POST", "/v2/calculatedattributes", False),
                         Route("POST", "/v2/bulkcalculatedattributes", True)])  # fmt: skip
"""The CA Seeding API's paths to whether the body is a list of seeding requests."""
SEEDS_REFUSED = (
    "calculated_attribute_seeds are written only by the CA Seeding API (/v2/calculatedattributes)"
    " - at `$.calculated_attribute_seeds`"
)


@dataclass
class Validated:
    accepted: list[tuple[str | None, bytes]]
    events: int
    rejected: list[dict[str, Any]]


def gpc_signalled(headers: Any) -> bool:
    """`Sec-GPC: 1` (https://globalprivacycontrol.github.io/gpc-spec/): the only value the spec defines."""
    return headers.get("sec-gpc", "").strip() == "1"


def validate_batches(items: list[bytes], max_batch_bytes: int, gpc: bool = False) -> Validated:
    """`gpc`: the request carried `Sec-GPC: 1`; each accepted batch is marked with it (`mark_gpc`) before the append,
    so that what the shards apply is what was logged. Without the header the raw bytes are kept as they came."""
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
        if batch.calculated_attribute_seeds is not None:
            rejected.append({"index": index, "code": "BAD_REQUEST", "message": SEEDS_REFUSED})
            continue
        accepted.append((batch.source_request_id, mark_gpc(raw) if gpc else raw))
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
            path = request.url.path
            if dsr.is_relayed(path):  # the DSR API's v2 paths: answered by its app
                return await dsr.relay(request)
            if path.rstrip("/") in SEEDING_ROUTES.exact:
                bulk, _ = SEEDING_ROUTES.find(request.method, path)
                check_media_type(request.headers.get("content-type"))
                return await self._seed(request, bulk)
            bulk, _ = ROUTES.find(request.method, path)
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
        checked = validate_batches(items, self.limits.max_batch_bytes, gpc_signalled(request.headers))
        if not checked.accepted:
            return self._all_rejected(checked, bulk)
        result = await self._append(source.id, checked.accepted)
        count("cdp_events_received", checked.events, input=str(source.id))
        count("cdp_batches_deduplicated", result.duplicates, input=str(source.id))
        if not checked.rejected:
            return Response(status_code=202)
        return json_response(
            202, {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": checked.rejected}
        )

    async def _append(self, input_id: int, batches: list[tuple[str | None, bytes]]) -> AppendResult:
        """One durable append of `batches`: returns once they are on disk (synced)."""
        try:
            result: AppendResult = await self.intake.append.remote(input_id, now_ms(), batches)
        except ray.exceptions.RayError as error:
            raise unavailable(error, "Intake") from error
        if result.overloaded:
            raise Overloaded(f"Intake is {result.lag} batches behind; retry later.", RETRY_AFTER_S)
        if result.refused:  # the request's own fault, not the intake's: resending it would fail again
            raise BadRequest(result.refused, "$")
        return result

    async def _seed(self, request: Request, bulk: bool) -> Response:
        """The CA Seeding API: every request checked against the active definitions, then one append of all."""
        source = await self._authenticate(request)
        body = await read_body(request, self.limits.max_request_bytes)
        config = self.static_config if self.live is None else (await self.live.fresh()).config
        active = active_definitions(config.calculated_attributes)
        batches = [parse_seed_request(item, active) for item in self._seed_requests(body, bulk)]
        encoded = [msgspec.json.encode(batch) for batch in batches]
        too_large = next((n for n, raw in enumerate(encoded) if len(raw) > self.limits.max_batch_bytes), None)
        if too_large is not None:
            raise TooLarge(f"Seeding request {too_large} is over {self.limits.max_batch_bytes} bytes as a batch.")
        await self._append(source.id, [(None, raw) for raw in encoded])
        count("cdp_calculated_attribute_seeds_received", sum(_seeds_in(b) for b in batches), input=str(source.id))
        return Response(status_code=202)

    def _seed_requests(self, body: bytes, bulk: bool) -> list[object]:
        try:
            parsed = msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise BadRequest("the body is not valid JSON", "$") from None
        if not bulk:
            return [parsed]
        if not isinstance(parsed, list) or not parsed:
            raise BadRequest("a bulk seeding request is a non-empty JSON array of seeding requests", "$")
        if len(parsed) > self.limits.max_bulk_batches:
            raise TooLarge(f"A bulk request holds at most {self.limits.max_bulk_batches} users; got {len(parsed)}.")
        return parsed

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


def _seeds_in(batch: Batch) -> int:
    return len(batch.calculated_attribute_seeds or ())
