"""The DSR API (OpenDSR, https://docs.mparticle.com/developers/apis/dsr-api/v3/ and its v2, v1 forms): a thin HTTP
face over the DSR actor, which stores and runs the requests (`cdp_actors/dsr/`).

The app owns `/v3`. The v2 paths (`/v2/requests`, `/v2/discovery`) and v1's (`/v1/opengdpr_requests`,
`/v1/discovery`) fall under the Events and Identity APIs' prefixes: those apps hand them over whole through
`relay` (one call to this deployment), so every version is answered here, by one table of routes.

Rate limits as mParticle's DSR API v3 documents them: `dsr.requests_per_minute` (1,000) calls per minute per
workspace, every authenticated call counted (GET, POST, DELETE), by a token bucket per replica (`ratelimit.py`:
with N replicas the workspace may get up to N times the limit); `dsr.requests_per_day` (80,000) new requests per
UTC day per workspace, counted by the DSR actor in the request book, in the create's transaction (so across
replicas and restarts). Past either: 429 with `Retry-After` and `X-mp-rate-limit-exceeded: workspace`.

Basic auth with an input's key and secret, as the Events API. Refusals answer in mParticle's DSR shape,
`{"code", "message", "errors": [{"domain", "reason", "message"}]}` (not wrapped in `error`, unlike the OpenDSR
spec's example); bad credentials are a 401 as the DSR docs say.
"""

from __future__ import annotations

import time
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
from cdp_actors.config import WorkspaceConfig
from cdp_actors.dsr.model import DsrRequest
from cdp_actors.dsr.requests import results_url
from cdp_actors.dsr.wire import (
    Received,
    cancelled_body,
    created_body,
    discovery_body,
    parse_request,
    status_body,
)
from cdp_actors.errors import BadRequest, Forbidden, RateLimited, RequestFailed, Unavailable
from cdp_actors.ratelimit import Limit, RateLimiter
from cdp_actors.runtime import ensure_runtime
from cdp_actors.telemetry import now_ms, setup_process
from serve_apps.auth import read_body, verify_basic
from serve_apps.errors import ANSWERS, internal_error, unavailable
from serve_apps.live import LiveConfig
from serve_apps.routes import Route, Routes

MAX_BODY_BYTES = 256 * 1024
"""A request holds at most 50 identities and a few URLs: far below this."""
CERTIFICATE_PATH = "/v3/opendsr_cert.pem"
APP_NAME = "dsr"
DEPLOYMENT_NAME = "DsrApi"
VERSION_PATHS = {"3.0": "/v3/requests", "2.0": "/v2/requests", "1.0": "/v1/opengdpr_requests"}
RELAYED_PREFIXES = ("/v2/requests", "/v2/discovery", "/v1/opengdpr_requests", "/v1/discovery")
"""Paths under other apps' route prefixes that are this app's (see `relay`)."""


def _routes() -> Routes[tuple[str, str]]:
    routes = []
    for version, base in VERSION_PATHS.items():
        major = base.split("/")[1]
        routes += [
            Route("POST", base, ("create", version)),
            Route("GET", base, ("group", version)),
            Route("GET", base + "/{id}", ("status", version)),
            Route("DELETE", base + "/{id}", ("cancel", version)),
            Route("GET", base + "/{id}/results", ("results", version)),
            Route("GET", f"/{major}/discovery", ("discovery", version)),
        ]
    return Routes([*routes, Route("GET", CERTIFICATE_PATH, ("certificate", "3.0"))])


ROUTES = _routes()
MINUTE_S = 60.0
STATUSES = {Forbidden: 401}
"""Where the DSR API answers otherwise than the common table: bad credentials are a 401 (the DSR docs)."""


class Answer(msgspec.Struct, array_like=True):
    """A response as plain data, so that a relaying app can return it."""

    status: int
    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] = {}


@dataclass
class Call:
    operation: str
    version: str
    arguments: dict[str, str]
    query: dict[str, str]
    body: bytes
    base_url: str
    input_id: int


def refusal(error: RequestFailed) -> Answer:
    status = next((s for kind, s in STATUSES.items() if isinstance(error, kind)), None)
    if status is None:
        kind = next((k for k in type(error).__mro__ if k in ANSWERS), None)
        status = ANSWERS[kind][0] if kind is not None else 500
    domain = "Validation" if status == 400 else "Request"
    reason = "IllegalArgumentException" if status == 400 else type(error).__name__
    body = {"code": status, "message": error.message,
            "errors": [{"domain": domain, "reason": reason, "message": error.message}]}  # fmt: skip
    retry_after = getattr(error, "retry_after_s", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if isinstance(error, RateLimited):
        headers["X-mp-rate-limit-exceeded"] = error.exceeded
    return Answer(status, msgspec.json.encode(body), headers=headers)


def to_response(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type, headers=answer.headers)


async def relay(request: Request) -> Response:
    """A v1/v2 DSR request that reached the Events or Identity API, answered by this app."""
    try:
        body = await read_body(request, MAX_BODY_BYTES)
        handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=APP_NAME)
        query, headers = dict(request.query_params), dict(request.headers)
        answer: Answer = await handle.answer.remote(
            request.method, request.url.path, query, headers, body, _base_url(request)
        )
    except RequestFailed as error:
        answer = refusal(error)
    except (ray.exceptions.RayError, ValueError) as error:  # the DSR app is not deployed (ValueError) or restarting
        answer = refusal(Unavailable(f"The DSR service is unavailable ({type(error).__name__}); retry shortly.", 1))
    return to_response(answer)


def is_relayed(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in RELAYED_PREFIXES)


def _base_url(request: Request) -> str:
    """Scheme and host the client used (not Starlette's `base_url`, which carries the app's route prefix)."""
    return f"{request.url.scheme}://{request.url.netloc}"


@serve.deployment(ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=5, graceful_shutdown_wait_loop_s=1)
class DsrApi:
    def __init__(self, config: WorkspaceConfig, data_dir: str) -> None:
        setup_process(config, data_dir, "dsr-api")
        ensure_runtime(config, data_dir)
        self.live: LiveConfig[KeyVerifier] = LiveConfig(InputKeys())
        self.dsr = handles.dsr()
        self.limiter = RateLimiter(())

    def _admit(self, config: WorkspaceConfig) -> None:
        """Count one call against the workspace's per-minute limit (a changed limit starts a full bucket)."""
        limit = Limit("workspace", config.dsr.requests_per_minute, MINUTE_S)
        if self.limiter.limits != (limit,):
            self.limiter = RateLimiter((limit,))
        self.limiter.admit({"workspace": config.workspace.workspace_id}, time.monotonic())

    async def __call__(self, request: Request) -> Response:
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except RequestFailed as error:
            return to_response(refusal(error))
        answer = await self.answer(
            request.method,
            request.url.path,
            dict(request.query_params),
            dict(request.headers),
            body,
            _base_url(request),
        )
        return to_response(answer)

    async def answer(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes, base_url: str
    ) -> Answer:
        try:
            (operation, version), arguments = ROUTES.find(method, path)
            if operation == "certificate":
                pem = await self.dsr.certificate.remote()
                return Answer(200, pem, "application/x-pem-file")
            held = await self.live.snapshot()
            source = await verify_basic(held.derived, headers.get("authorization"))
            self._admit(held.config)
            call = Call(operation, version, arguments, query, body, base_url, source.id)
            return await self._dispatch(call, held.config)
        except ray.exceptions.RayError as error:
            cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else None
            return refusal(cause if isinstance(cause, RequestFailed) else unavailable(error, "The DSR service"))
        except RequestFailed as error:
            return refusal(error)
        except Exception as error:  # a bug: logged, a 500 without internals
            response = internal_error(error, f"{method} {path}")
            return Answer(response.status_code, bytes(response.body))

    async def _dispatch(self, call: Call, config: WorkspaceConfig) -> Answer:
        operation, version, arguments, base_url = call.operation, call.version, call.arguments, call.base_url
        controller = config.workspace.workspace_id
        if operation == "discovery":
            return Answer(200, msgspec.json.encode(discovery_body(version, base_url + CERTIFICATE_PATH)))
        if operation == "create":
            return await self._create(call, config)
        if operation == "group":
            group = call.query.get("group_id")
            if not group:
                raise BadRequest("group_id is required.", "group_id")
            found = await self.dsr.in_group.remote(group)
            return Answer(200, msgspec.json.encode([status_body(r, controller, results_url(b, r)) for r, b in found]))
        if operation == "status":
            request, base = await self.dsr.get.remote(arguments["id"])
            body = status_body(request, controller, results_url(base, request))
            return await self._signed(200, body, version, config)
        if operation == "cancel":
            request = await self.dsr.cancel.remote(arguments["id"])
            return await self._signed(202, cancelled_body(request, controller, now_ms()), version, config)
        request, data = await self.dsr.results.remote(arguments["id"])
        zipped = request.subject_request_type == "portability"
        return Answer(200, data, "application/zip" if zipped else "application/json")

    async def _create(self, call: Call, config: WorkspaceConfig) -> Answer:
        try:
            parsed = msgspec.json.decode(call.body)
        except msgspec.DecodeError:
            raise BadRequest("The body is not valid JSON.", "$") from None
        received = Received(call.input_id, now_ms(), config.dsr.waiting_period_s * 1000)
        request: DsrRequest = parse_request(parsed, call.version, received)
        await self.dsr.create.remote(request, call.base_url, config.dsr.requests_per_day)
        body = created_body(request, config.workspace.workspace_id, call.body)
        return await self._signed(201, body, call.version, config)

    async def _signed(self, status: int, body: dict[str, Any], version: str, config: WorkspaceConfig) -> Answer:
        """Signed as the live configuration's `dsr.processor_domain` names the processor."""
        encoded = msgspec.json.encode(body)
        headers = await self.dsr.sign.remote(encoded, version, config.dsr.processor_domain)
        return Answer(status, encoded, headers=headers)
