"""The Platform API at `/platform/v1/...` (https://docs.mparticle.com/developers/apis/platform/overview/): accounts,
workspaces, apps and app platforms (inputs, with access keys issued once), services (output kinds and their
settings schemas), outputs, connections and console users.

Every route declares its permission (`platform_call(Permission.X)`): authenticate (a bearer token from `POST
/oauth/token`, or a console session and, for a change, its CSRF token), take a token of the replica's rate limiter
(429 with `Retry-After` and `X-mp-rate-limit-exceeded` past mParticle's limits), authorize the role, check
`?accountId=`. A change goes to the control actor as one typed change (`cdp_actors/control/changes.py`) made by
`api_client:<id>` or `user:<name>`; the replica offers the new version to its own live configuration, so its next
request reads its write, and every other process has it within a second. The translation is Ray-free
(`cdp_actors/platform/`); this module only speaks HTTP and Ray.

The rate limits count per replica (ratelimit.py): the app runs as one replica.
"""

# No `from __future__ import annotations` here: FastAPI must see the endpoint annotations as real types.

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import ray.exceptions
from fastapi import Depends, FastAPI, Request
from ray import serve
from starlette.responses import Response

from cdp_actors import handles
from cdp_actors.access import keys
from cdp_actors.access.passwords import Password, hash_password
from cdp_actors.access.roles import Permission
from cdp_actors.audiences import standard
from cdp_actors.config import Audience, WorkspaceConfig
from cdp_actors.control.changes import (
    ActivateCalculatedAttribute,
    Change,
    DiscardCalculatedAttributeDraft,
    RemoveAudience,
    RemoveCalculatedAttribute,
    RemoveConnection,
    RemoveInput,
    RemoveOutput,
    RemoveUser,
)
from cdp_actors.errors import BadRequest, Conflict, NotFound, RequestFailed
from cdp_actors.partition import partition_of
from cdp_actors.platform import audiences as aud
from cdp_actors.platform import calculated as ca
from cdp_actors.platform import resources as r
from cdp_actors.platform.http import (
    check_account,
    cors_headers,
    envelope,
    etag,
    expected_version,
    is_preflight,
    preflight_headers,
)
from cdp_actors.ratelimit import PLATFORM_API_LIMITS, Limit, RateLimiter
from cdp_actors.tasks import Tasks
from cdp_actors.telemetry import now_ms
from serve_apps.access import Access, Principal, access_of
from serve_apps.errors import install_error_handlers, json_response, unavailable

app = FastAPI(title="cdp platform api", docs_url=None, redoc_url=None)
install_error_handlers(app)

P = Permission
SEND_RETRY_S = 1.0
"""How long a standard audience's send waits before offering again what a full bulk queue refused: a queue drains
with its next upload, seconds away once it is full."""
MAX_BODY_BYTES = 256 * 1024
"""A Platform API body is one configuration item: a few KB. Larger is refused before parsing."""
BACKFILL_STATUS_TIMEOUT_S = 2.0
"""How long a CA's GET waits for the shards' backfill progress: a shard busy with a large chunk answers late, and
the definition is worth answering without its progress (then reported as none) rather than not at all."""
CA_BASE = "/v2/workspaces/{workspace_id}/calculatedattributes"


@app.middleware("http")
async def cors_and_limits(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Preflights answered here (no credentials come with them); every other answer gets the CORS headers and,
    when it is a success, the rate limiter's share used."""
    origin = request.headers.get("origin")
    if is_preflight(request.method, request.headers):
        return Response(status_code=204, headers=preflight_headers(origin, request.headers.get(
            "access-control-request-method")))  # fmt: skip
    response = await call_next(request)
    response.headers.update(cors_headers(origin))
    admitted = getattr(request.state, "admitted", None)
    if admitted is not None and response.status_code < 300:
        response.headers.update(admitted.headers())
    return response


def platform_call(permission: Permission, account: bool = True) -> Any:
    """The dependency every route declares: who is calling, within the rate limits, allowed, on our account (the v2
    routes take no `?accountId=`: `account=False`)."""

    async def check(request: Request) -> Principal:
        access = access_of(request)
        principal = await access.principal(request)  # 401 first: an anonymous request costs no token
        workspace = (await access.snapshot()).config.workspace
        limiter: RateLimiter = request.app.state.limiter
        request.state.admitted = limiter.admit({"account": workspace.account_id, "org": workspace.org_id},
                                               time.monotonic())  # fmt: skip
        access.authorize(principal, permission)
        if account:
            check_account(request.query_params.get("accountId"), workspace)
        return principal

    check.permission = permission  # type: ignore[attr-defined]  # read by the route table test
    return Depends(check)


def actor_of(principal: Principal) -> str:
    return f"user:{principal.name}" if principal.session_id else f"api_client:{principal.name}"


async def body_of(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"a Platform API body is at most {MAX_BODY_BYTES} bytes", "$")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON", "$") from None


def answer(version: int, data: list[Any], status: int = 200) -> Response:
    return json_response(status, envelope(data), {"ETag": etag(version)})


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    num_replicas=1,  # the rate limits count per replica
    max_ongoing_requests=32,
    graceful_shutdown_timeout_s=5,
    graceful_shutdown_wait_loop_s=1,
)
@serve.ingress(app)
class PlatformApi:
    def __init__(self, config: WorkspaceConfig, data_dir: str, limits: Sequence[Limit] = PLATFORM_API_LIMITS) -> None:
        self.access = Access(config, data_dir, follow=True)
        app.state.access = self.access
        app.state.limiter = RateLimiter(limits)
        self.runtime = config.runtime  # fixed until a restart
        self.runs_dir = Path(data_dir) / standard.RUNS_DIR
        self.runs: dict[int, standard.StandardRun] = {}
        """The standard audience runs started by this replica (the app runs one), the last one per audience."""
        self.resumed = False
        """Whether the runs a previous replica left unfinished have been started again (at the first look)."""
        self.tasks = Tasks("platform api")

    async def _current(self) -> tuple[int, WorkspaceConfig]:
        snapshot = await self.access.snapshot()
        return snapshot.version, snapshot.config

    async def _apply(
        self, request: Request, principal: Principal, change: Change, paths: dict[str, str] | None = None
    ) -> tuple[int, WorkspaceConfig]:
        """The change made by the control actor (nothing stored if it is refused), in use here from now on."""
        expected = expected_version(request.headers.get("if-match"))
        try:
            version, config = await handles.control().apply.remote(change, expected, actor_of(principal))
        except BadRequest as error:  # an actor's refusal arrives as RayTaskError(BadRequest), a BadRequest too
            raise r.renamed(error, paths or {}) from None
        except RequestFailed:
            raise
        except ray.exceptions.RayError as error:
            raise unavailable(error, "The configuration store") from error
        await self.access.offer(version, config)
        return version, config

    # ---- accounts and workspaces ----

    @app.get("/v1/accounts", dependencies=[platform_call(P.ACCOUNTS_READ)])
    async def accounts(self) -> Response:
        version, config = await self._current()
        return answer(version, [r.account_document(config)])

    @app.get("/v1/accounts/{account_id}", dependencies=[platform_call(P.ACCOUNTS_READ)])
    async def account(self, account_id: int) -> Response:
        version, config = await self._current()
        check_account(str(account_id), config.workspace)
        return answer(version, [r.account_document(config)])

    @app.get("/v1/workspace", dependencies=[platform_call(P.WORKSPACES_READ)])
    async def workspaces(self) -> Response:
        version, config = await self._current()
        return answer(version, [r.workspace_document(config)])

    # ---- apps and app platforms (inputs) ----

    @app.get("/v1/apps", dependencies=[platform_call(P.APPS_READ)])
    async def apps(self) -> Response:
        version, config = await self._current()
        return answer(version, [r.app_document(item) for item in r.apps(config)])

    @app.post("/v1/apps")
    async def create_app(
        self, request: Request, principal: Annotated[Principal, platform_call(P.APPS_WRITE)]
    ) -> Response:
        """A new app with one platform: its access key and secret are in this answer, and never again."""
        wanted = r.app_request(await body_of(request))
        issued = await asyncio.to_thread(keys.issue)  # scrypt: ~70 ms of a core
        change = r.new_app(wanted, issued.key, issued.secret_hash)
        version, config = await self._apply(request, principal, change, r.APP_PATHS)
        created = next(i for i in config.inputs if i.key == issued.key)
        return answer(version, [r.app_document(created, issued.secret.reveal())], 201)

    @app.get("/v1/apps/{app_id}", dependencies=[platform_call(P.APPS_READ)])
    async def app_(self, app_id: int) -> Response:
        version, config = await self._current()
        return answer(version, [r.app_document(r.app_input(config, app_id))])

    @app.put("/v1/apps/{app_id}")
    async def rename_app(
        self, request: Request, principal: Annotated[Principal, platform_call(P.APPS_WRITE)], app_id: int
    ) -> Response:
        _, config = await self._current()
        r.app_input(config, app_id)
        version, config = await self._apply(request, principal, r.renamed_app(await body_of(request), app_id))
        return answer(version, [r.app_document(r.app_input(config, app_id))])

    @app.delete("/v1/apps/{app_id}")
    async def delete_app(
        self, request: Request, principal: Annotated[Principal, platform_call(P.APPS_WRITE)], app_id: int
    ) -> Response:
        """Removes the app's input: its key stops working on every replica within a second."""
        _, config = await self._current()
        r.app_input(config, app_id)
        version, _ = await self._apply(request, principal, RemoveInput(id=app_id))
        return Response(status_code=204, headers={"ETag": etag(version)})

    @app.get("/v1/apps/{app_id}/platforms", dependencies=[platform_call(P.APPS_READ)])
    async def platforms(self, app_id: int) -> Response:
        version, config = await self._current()
        return answer(version, [r.platform_document(r.app_input(config, app_id))])

    @app.post("/v1/apps/{app_id}/platforms")
    async def create_platform(
        self, request: Request, principal: Annotated[Principal, platform_call(P.APPS_WRITE)], app_id: int
    ) -> Response:
        _, config = await self._current()
        r.app_input(config, app_id)
        raise Conflict(f"App {app_id} has its platform: an app holds one platform here; create one app per platform.")

    @app.get("/v1/apps/{app_id}/platforms/{platform}", dependencies=[platform_call(P.APPS_READ)])
    async def platform(self, app_id: int, platform: str) -> Response:
        version, config = await self._current()
        return answer(version, [r.platform_document(r.platform_input(config, app_id, platform))])

    @app.put("/v1/apps/{app_id}/platforms/{platform}")
    async def rotate_key(
        self,
        request: Request,
        principal: Annotated[Principal, platform_call(P.APPS_WRITE)],
        app_id: int,
        platform: str,
    ) -> Response:
        """`{"regenerate_access_key": true}`: a new key and secret (in this answer only); the old key stops working
        on every replica within a second."""
        _, config = await self._current()
        item = r.platform_input(config, app_id, platform)
        r.check_platform_update(await body_of(request), item)
        issued = await asyncio.to_thread(keys.issue)
        version, config = await self._apply(request, principal, r.new_access_key(item, issued))
        updated = r.app_input(config, app_id)
        return answer(version, [r.platform_document(updated, issued.secret.reveal())])

    @app.delete("/v1/apps/{app_id}/platforms/{platform}")
    async def delete_platform(
        self,
        request: Request,
        principal: Annotated[Principal, platform_call(P.APPS_WRITE)],
        app_id: int,
        platform: str,
    ) -> Response:
        _, config = await self._current()
        r.platform_input(config, app_id, platform)
        version, _ = await self._apply(request, principal, RemoveInput(id=app_id))
        return Response(status_code=204, headers={"ETag": etag(version)})

    @app.get("/v1/apps/{app_id}/platforms/{platform}/services", dependencies=[platform_call(P.CONNECTIONS_READ)])
    async def platform_services(self, app_id: int, platform: str) -> Response:
        version, config = await self._current()
        return answer(version, r.platform_services(config, r.platform_input(config, app_id, platform)))

    # ---- services (output kinds) and outputs ----

    @app.get("/v1/services", dependencies=[platform_call(P.SERVICES_READ)])
    async def services(self) -> Response:
        version, _ = await self._current()
        return answer(version, r.services())

    @app.get("/v1/services/{name}", dependencies=[platform_call(P.SERVICES_READ)])
    async def service(self, name: str) -> Response:
        version, _ = await self._current()
        return answer(version, [r.service(name)])

    @app.get("/v1/outputs", dependencies=[platform_call(P.SERVICES_READ)])
    async def outputs(self) -> Response:
        version, config = await self._current()
        return answer(version, [r.output_document(item) for item in config.outputs])

    @app.post("/v1/outputs")
    async def create_output(
        self, request: Request, principal: Annotated[Principal, platform_call(P.CONNECTIONS_WRITE)]
    ) -> Response:
        version, config = await self._apply(request, principal, r.new_output(await body_of(request)), r.OUTPUT_PATHS)
        return answer(version, [r.output_document(config.outputs[-1])], 201)

    @app.get("/v1/outputs/{output_id}", dependencies=[platform_call(P.SERVICES_READ)])
    async def output(self, output_id: int) -> Response:
        version, config = await self._current()
        return answer(version, [r.output_document(r.output_of(config, output_id))])

    @app.put("/v1/outputs/{output_id}")
    async def update_output(
        self, request: Request, principal: Annotated[Principal, platform_call(P.CONNECTIONS_WRITE)], output_id: int
    ) -> Response:
        """Settings merge into the stored ones; a secret sent back as the mask a GET showed stays as it was."""
        _, config = await self._current()
        change = r.changed_output(await body_of(request), r.output_of(config, output_id))
        version, config = await self._apply(request, principal, change, r.OUTPUT_PATHS)
        return answer(version, [r.output_document(r.output_of(config, output_id))])

    @app.delete("/v1/outputs/{output_id}")
    async def delete_output(
        self, request: Request, principal: Annotated[Principal, platform_call(P.CONNECTIONS_WRITE)], output_id: int
    ) -> Response:
        version, _ = await self._apply(request, principal, RemoveOutput(id=output_id))
        return Response(status_code=204, headers={"ETag": etag(version)})

    # ---- connections ----

    @app.get("/v1/connections", dependencies=[platform_call(P.CONNECTIONS_READ)])
    async def connections(self) -> Response:
        version, config = await self._current()
        return answer(version, [r.connection_document(item) for item in config.connections])

    @app.post("/v1/connections")
    async def create_connection(
        self, request: Request, principal: Annotated[Principal, platform_call(P.CONNECTIONS_WRITE)]
    ) -> Response:
        version, config = await self._apply(request, principal, r.new_connection(await body_of(request)))
        return answer(version, [r.connection_document(config.connections[-1])], 201)

    @app.get("/v1/connections/{connection_id}", dependencies=[platform_call(P.CONNECTIONS_READ)])
    async def connection(self, connection_id: int) -> Response:
        version, config = await self._current()
        return answer(version, [r.connection_document(r.connection_of(config, connection_id))])

    @app.put("/v1/connections/{connection_id}")
    async def update_connection(
        self, request: Request, principal: Annotated[Principal, platform_call(P.CONNECTIONS_WRITE)], connection_id: int
    ) -> Response:
        change = r.changed_connection(await body_of(request), connection_id)
        version, config = await self._apply(request, principal, change)
        return answer(version, [r.connection_document(r.connection_of(config, connection_id))])

    @app.delete("/v1/connections/{connection_id}")
    async def delete_connection(
        self, request: Request, principal: Annotated[Principal, platform_call(P.CONNECTIONS_WRITE)], connection_id: int
    ) -> Response:
        version, _ = await self._apply(request, principal, RemoveConnection(id=connection_id))
        return Response(status_code=204, headers={"ETag": etag(version)})

    # ---- console users ----

    @app.get("/v1/users", dependencies=[platform_call(P.USERS_READ)])
    async def users(self) -> Response:
        version, config = await self._current()
        return answer(version, [r.user_document(item) for item in config.users])

    @app.get("/v1/users/{user}", dependencies=[platform_call(P.USERS_READ)])
    async def user(self, user: str) -> Response:
        version, config = await self._current()
        return answer(version, [r.user_document(r.user_of(config, user))])

    @app.post("/v1/users")
    async def create_user(
        self, request: Request, principal: Annotated[Principal, platform_call(P.USERS_WRITE)]
    ) -> Response:
        """`{"name", "role", "password"}`: only the password's argon2 hash is stored; the user can log in on every
        replica within a second."""
        fields, password = r.user_body(await body_of(request), creating=True)
        assert password is not None
        password_hash = await asyncio.to_thread(hash_password, Password(password))
        version, config = await self._apply(request, principal, r.new_user(fields, password_hash), r.USER_PATHS)
        return answer(version, [r.user_document(r.user_of(config, fields["name"]))], 201)

    @app.put("/v1/users/{user}")
    async def update_user(
        self, request: Request, principal: Annotated[Principal, platform_call(P.USERS_WRITE)], user: str
    ) -> Response:
        _, config = await self._current()
        r.user_of(config, user)
        fields, password = r.user_body(await body_of(request), creating=False)
        password_hash = None if password is None else await asyncio.to_thread(hash_password, Password(password))
        version, config = await self._apply(request, principal, r.changed_user(user, fields, password_hash),
                                            r.USER_PATHS)  # fmt: skip
        return answer(version, [r.user_document(r.user_of(config, user))])

    @app.delete("/v1/users/{user}")
    async def delete_user(
        self, request: Request, principal: Annotated[Principal, platform_call(P.USERS_WRITE)], user: str
    ) -> Response:
        """The user's sessions stop working on every replica within a second (their role is gone: 401)."""
        version, _ = await self._apply(request, principal, RemoveUser(name=user))
        return Response(status_code=204, headers={"ETag": etag(version)})

    # ---- calculated attributes (v2: no `?accountId=`, no envelope) ----

    async def _workspace_config(self, workspace_id: int) -> WorkspaceConfig:
        _, config = await self._current()
        ca.check_workspace(workspace_id, config.workspace)
        return config

    async def _backfill_progress(self, config: WorkspaceConfig) -> list[ca.BackfillProgress]:
        """Each shard's `backfill_status()`; none from a shard that has no such method, is restarting or is late."""
        try:
            shards = await asyncio.to_thread(handles.shards, config.runtime.shards)
            calls = [shard.backfill_status.remote() for shard in shards]
            return list(await asyncio.wait_for(asyncio.gather(*calls), BACKFILL_STATUS_TIMEOUT_S))
        except (AttributeError, ValueError, asyncio.TimeoutError, ray.exceptions.RayError):
            return []

    async def _apply_ca(self, request: Request, principal: Principal, change: Change,
                        paths: dict[str, str] | None = None) -> Response:  # fmt: skip
        version, _ = await self._apply(request, principal, change, paths)
        return Response(status_code=204, headers={"ETag": etag(version)})

    @app.get(CA_BASE, dependencies=[platform_call(P.CALCULATED_ATTRIBUTES_READ, account=False)])
    async def calculated_attributes(self, workspace_id: int, name: str | None = None) -> Response:
        config = await self._workspace_config(workspace_id)
        progress = await self._backfill_progress(config)
        return json_response(200, [ca.calculated_attribute_document(config, item, progress)
                                   for item in ca.named(config, name)])  # fmt: skip

    @app.head(CA_BASE, dependencies=[platform_call(P.CALCULATED_ATTRIBUTES_READ, account=False)])
    async def calculated_attribute_exists(self, workspace_id: int, name: str | None = None) -> Response:
        config = await self._workspace_config(workspace_id)
        return Response(status_code=204 if ca.named(config, name) else 404)

    @app.post(CA_BASE)
    async def create_calculated_attribute(
        self,
        request: Request,
        principal: Annotated[Principal, platform_call(P.CALCULATED_ATTRIBUTES_WRITE, account=False)],
        workspace_id: int,
    ) -> Response:
        """`{name, description, draft_definition}` (or `definition`): answers the new id, an integer."""
        await self._workspace_config(workspace_id)
        change, paths = ca.new_calculated_attribute(await body_of(request), actor_of(principal), ca.now_iso())
        version, config = await self._apply(request, principal, change, paths)
        created = next(item for item in config.calculated_attributes if item.name == change.fields["name"])
        return json_response(200, created.id, {"ETag": etag(version)})

    @app.get(CA_BASE + "/{ca_id}", dependencies=[platform_call(P.CALCULATED_ATTRIBUTES_READ, account=False)])
    async def calculated_attribute(self, workspace_id: int, ca_id: int) -> Response:
        config = await self._workspace_config(workspace_id)
        item = ca.calculated_attribute_of(config, ca_id)
        progress = await self._backfill_progress(config) if item.active_definition is not None else []
        return json_response(200, ca.calculated_attribute_document(config, item, progress))

    @app.put(CA_BASE + "/{ca_id}")
    async def update_calculated_attribute(
        self,
        request: Request,
        principal: Annotated[Principal, platform_call(P.CALCULATED_ATTRIBUTES_WRITE, account=False)],
        workspace_id: int,
        ca_id: int,
    ) -> Response:
        """The draft (and name, until the first activation; description any time) changes; 204."""
        ca.calculated_attribute_of(await self._workspace_config(workspace_id), ca_id)
        change, paths = ca.changed_calculated_attribute(await body_of(request), ca_id, actor_of(principal),
                                                        ca.now_iso())  # fmt: skip
        return await self._apply_ca(request, principal, change, paths)

    @app.delete(CA_BASE + "/{ca_id}")
    async def delete_calculated_attribute(
        self,
        request: Request,
        principal: Annotated[Principal, platform_call(P.CALCULATED_ATTRIBUTES_WRITE, account=False)],
        workspace_id: int,
        ca_id: int,
    ) -> Response:
        """Refused (409) while an audience's criteria test it."""
        await self._workspace_config(workspace_id)
        return await self._apply_ca(request, principal, RemoveCalculatedAttribute(id=ca_id))

    @app.post(CA_BASE + "/{ca_id}/activation")
    async def activate_calculated_attribute(
        self,
        request: Request,
        principal: Annotated[Principal, platform_call(P.CALCULATED_ATTRIBUTES_WRITE, account=False)],
        workspace_id: int,
        ca_id: int,
    ) -> Response:
        """The draft becomes the active definition: every shard backfills it from its stored history, then keeps
        it up to date (progress in the GET's `calculation_status`)."""
        await self._workspace_config(workspace_id)
        change = ActivateCalculatedAttribute(id=ca_id, by=actor_of(principal), at=ca.now_iso())
        return await self._apply_ca(request, principal, change)

    @app.get(CA_BASE + "/{ca_id}/activation",
             dependencies=[platform_call(P.CALCULATED_ATTRIBUTES_READ, account=False)])  # fmt: skip
    async def calculated_attribute_activation(self, workspace_id: int, ca_id: int) -> Response:
        config = await self._workspace_config(workspace_id)
        return json_response(200, ca.activation_document(ca.calculated_attribute_of(config, ca_id)))

    @app.delete(CA_BASE + "/{ca_id}/draft")
    async def discard_calculated_attribute_draft(
        self,
        request: Request,
        principal: Annotated[Principal, platform_call(P.CALCULATED_ATTRIBUTES_WRITE, account=False)],
        workspace_id: int,
        ca_id: int,
    ) -> Response:
        await self._workspace_config(workspace_id)
        change = DiscardCalculatedAttributeDraft(id=ca_id, by=actor_of(principal), at=ca.now_iso())
        return await self._apply_ca(request, principal, change)

    # ---- audiences ----

    async def _audience_stats(self) -> dict[int, dict[str, Any]] | None:
        """The shards' membership counts per real-time audience; None while the shards do not keep them."""
        shards = handles.shards(self.runtime.shards)
        try:
            calls = [shard.audience_stats.remote() for shard in shards]
        except AttributeError:
            return None
        try:
            return aud.merged_stats(await asyncio.gather(*calls))
        except ray.exceptions.RayError as error:
            raise unavailable(error, "The profile shards") from error

    async def _documents(self, config: WorkspaceConfig, audiences: list[Audience]) -> list[dict[str, Any]]:
        stats = await self._audience_stats() if any(a.kind == "real_time" for a in audiences) else None
        return [aud.audience_document(a, config, aud.audience_size(a, stats, self._last_run(a.id))) for a in audiences]

    def _last_run(self, audience_id: int) -> standard.RunResult | None:
        return standard.latest_run(self.runs_dir, audience_id)

    @app.get("/v1/audiences", dependencies=[platform_call(P.AUDIENCES_READ)])
    async def audiences(self) -> Response:
        version, config = await self._current()
        return answer(version, await self._documents(config, list(config.audiences)))

    @app.get("/v1/workspace/{workspace_id}/audiences", dependencies=[platform_call(P.AUDIENCES_READ)])
    async def workspace_audiences(self, workspace_id: int) -> Response:
        version, config = await self._current()
        if workspace_id != config.workspace.workspace_id:
            raise NotFound(f"No workspace with id {workspace_id}.")
        return answer(
            version, await self._documents(config, [a for a in config.audiences if a.workspaces == [workspace_id]])
        )

    @app.post("/v1/audiences")
    async def create_audience(
        self, request: Request, principal: Annotated[Principal, platform_call(P.AUDIENCES_WRITE)]
    ) -> Response:
        """`{"name", "external_name", "workspaces", "kind", "criteria"}`: the answer is the audience with its `id`."""
        change = aud.new_audience(await body_of(request), actor_of(principal), now_ms())
        version, config = await self._apply(request, principal, change)
        return answer(version, await self._documents(config, [config.audiences[-1]]), 201)

    @app.get("/v1/audiences/{audience_id}", dependencies=[platform_call(P.AUDIENCES_READ)])
    async def audience(self, audience_id: int) -> Response:
        version, config = await self._current()
        return answer(version, await self._documents(config, [aud.audience_of(config, audience_id)]))

    @app.put("/v1/audiences/{audience_id}")
    async def update_audience(
        self, request: Request, principal: Annotated[Principal, platform_call(P.AUDIENCES_WRITE)], audience_id: int
    ) -> Response:
        change = aud.changed_audience(await body_of(request), audience_id, actor_of(principal), now_ms())
        version, config = await self._apply(request, principal, change)
        return answer(version, await self._documents(config, [aud.audience_of(config, audience_id)]))

    @app.delete("/v1/audiences/{audience_id}")
    async def delete_audience(
        self, request: Request, principal: Annotated[Principal, platform_call(P.AUDIENCES_WRITE)], audience_id: int
    ) -> Response:
        """Refused (409) while another audience's criteria name this one."""
        version, _ = await self._apply(request, principal, RemoveAudience(id=audience_id))
        return Response(status_code=204, headers={"ETag": etag(version)})

    @app.post("/v1/audiences/{audience_id}/connections")
    async def connect_audience(
        self, request: Request, principal: Annotated[Principal, platform_call(P.AUDIENCES_WRITE)], audience_id: int
    ) -> Response:
        """`{"output_id"}`: an output that takes audience memberships; the answer is the audience."""
        change = aud.connection_request(await body_of(request), audience_id, actor_of(principal), now_ms())
        version, config = await self._apply(request, principal, change)
        return answer(version, await self._documents(config, [aud.audience_of(config, audience_id)]), 201)

    @app.delete("/v1/audiences/{audience_id}/connections/{output_id}")
    async def disconnect_audience(
        self,
        request: Request,
        principal: Annotated[Principal, platform_call(P.AUDIENCES_WRITE)],
        audience_id: int,
        output_id: int,
    ) -> Response:
        change = aud.disconnection(audience_id, output_id, actor_of(principal), now_ms())
        version, _ = await self._apply(request, principal, change)
        return Response(status_code=204, headers={"ETag": etag(version)})

    # ---- standard audiences: a run over every shard, its CSV, sending it ----

    @app.post("/v1/audiences/{audience_id}/calculate")
    async def calculate(
        self,
        request: Request,
        principal: Annotated[Principal, platform_call(P.AUDIENCES_WRITE)],
        audience_id: int,
        identities: str | None = None,
    ) -> Response:
        """Starts a run of a standard audience over all profiles, one call per shard in parallel; `?identities=`
        chooses the CSV's identity columns (default customer_id, email). 202 with its progress."""
        version, config = await self._current()
        audience = aud.audience_of(config, audience_id)
        aud.check_standard(audience)
        running = (await self._standard_runs(config)).get(audience_id)
        if running is not None and running.progress()["state"] == "running":
            raise Conflict(
                f"Audience {audience_id} is being calculated: {running.done} of {running.shards} shards done."
            )
        run = await self._start_run(audience, standard.identity_columns(identities), now_ms())
        return answer(version, [aud.run_document(audience, run, self._last_run(audience_id))], 202)

    async def _start_run(self, audience: Audience, identities: list[str], at_ms: int) -> standard.StandardRun:
        run = standard.StandardRun(self.runs_dir, audience, self.runtime.shards, identities, at_ms)
        await asyncio.to_thread(run.mark_started)
        self.runs[audience.id] = run
        self.tasks.spawn(self._run(run), f"standard-audience-{audience.id}")
        return run

    async def _standard_runs(self, config: WorkspaceConfig) -> dict[int, standard.StandardRun]:
        """This replica's runs, once it has started again those a previous replica left unfinished."""
        if not self.resumed:
            self.resumed = False
            standard_audiences = {a.id: a for a in config.audiences if a.kind == "standard"}
            for left in await asyncio.to_thread(standard.interrupted_runs, self.runs_dir):
                audience = standard_audiences.get(left.audience_id)
                if audience is None or left.audience_id in self.runs:
                    await asyncio.to_thread(standard.forget_interrupted, self.runs_dir, left)
                else:
                    await self._start_run(audience, left.identities, left.now_ms)
        return self.runs

    async def _run(self, run: standard.StandardRun) -> None:
        shards = handles.shards(self.runtime.shards)
        calls = [shard.standard_audience.remote(run.audience, run.now_ms, tuple(run.identities)) for shard in shards]
        try:
            for done in asyncio.as_completed(calls):
                run.shard_done(await done)
            await asyncio.to_thread(run.finish)
        except Exception as error:
            run.failed(f"{type(error).__name__}: the run stopped; start it again")
            raise

    @app.get("/v1/audiences/{audience_id}/calculate", dependencies=[platform_call(P.AUDIENCES_READ)])
    async def calculation(self, audience_id: int) -> Response:
        """The run's progress (shards done / total) and the last result (size, when)."""
        version, config = await self._current()
        audience = aud.audience_of(config, audience_id)
        aud.check_standard(audience)
        run = (await self._standard_runs(config)).get(audience_id)
        return answer(version, [aud.run_document(audience, run, self._last_run(audience_id))])

    @app.get("/v1/audiences/{audience_id}/download", dependencies=[platform_call(P.AUDIENCES_READ)])
    async def download(self, audience_id: int) -> Response:
        """The last run's members as CSV: `mpid` and the identity columns the run chose."""
        _, config = await self._current()
        aud.check_standard(aud.audience_of(config, audience_id))
        last = self._require_run(audience_id)
        data = await asyncio.to_thread((self.runs_dir / last.csv_file).read_bytes)
        disposition = f'attachment; filename="audience-{audience_id}-{last.calculated_at_ms}.csv"'
        return Response(data, media_type="text/csv", headers={"Content-Disposition": disposition})

    def _require_run(self, audience_id: int) -> standard.RunResult:
        last = self._last_run(audience_id)
        if last is None:
            raise NotFound(f"Audience {audience_id} has not been calculated: POST .../calculate first.")
        return last

    @app.post("/v1/audiences/{audience_id}/send")
    async def send(
        self, request: Request, principal: Annotated[Principal, platform_call(P.AUDIENCES_WRITE)], audience_id: int
    ) -> Response:
        """The last run's members, as membership `add` changes, to each output the audience is connected to."""
        version, config = await self._current()
        audience = aud.audience_of(config, audience_id)
        aud.check_standard(audience)
        if not audience.connected_outputs:
            raise BadRequest(f"audience {audience_id} is connected to no output", "connected_outputs")
        last = self._require_run(audience_id)
        members = await asyncio.to_thread(standard.run_members, self.runs_dir, last)
        changes = aud.membership_adds(audience, members, now_ms())
        by_forwarder: dict[int, list[Any]] = {}
        for change in changes:
            by_forwarder.setdefault(partition_of(change.mpid, self.runtime.forwarders), []).append(change)
        offers = [
            (f, output_id, items) for f, items in by_forwarder.items() for output_id in audience.connected_outputs
        ]
        try:
            refused = await asyncio.gather(*(self._offer(*offer) for offer in offers))
        except ray.exceptions.RayError as error:
            raise unavailable(error, "The forwarders") from error
        for (forwarder, output_id, _), left in zip(offers, refused, strict=True):
            if left:
                self.tasks.spawn(self._offer_until_taken(forwarder, output_id, left), f"send-{audience_id}-{output_id}")
        sent = {"audience_id": audience_id, "members": len(members), "outputs": audience.connected_outputs,
                "calculated_at_ms": last.calculated_at_ms, "waiting": sum(len(left) for left in refused)}  # fmt: skip
        return answer(version, [sent], 202)

    async def _offer(self, forwarder: int, output_id: int, changes: list[Any]) -> list[Any]:
        """The changes to one forwarder's bulk queue of the output; those it refuses (the queue is full)."""
        return await handles.forwarder(forwarder).deliver_memberships.remote(output_id, changes)

    async def _offer_until_taken(self, forwarder: int, output_id: int, changes: list[Any]) -> None:
        """Offered again as the full queue drains (its uploads), until every change is taken."""
        while changes:
            await asyncio.sleep(SEND_RETRY_S)
            with contextlib.suppress(ray.exceptions.RayError):  # a restarting forwarder: offer again
                changes = await self._offer(forwarder, output_id, changes)
