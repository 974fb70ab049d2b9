"""Profile API: `POST /oauth/token` (client credentials) and `/userprofile/v1/...`
(https://docs.mparticle.com/developers/profile-api/).

Deployed at the root prefix, so it also answers the unknown paths no other app claims (404).
"""

# No `from __future__ import annotations` here: FastAPI must see the endpoint annotations as real types.

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from fastapi import Depends, FastAPI, Path, Request
from pydantic import BaseModel, SecretStr
from ray import serve
from starlette.responses import Response

from cdp_actors import handles
from cdp_actors.access.roles import Permission
from cdp_actors.access.tokens import check_token_request, token_response
from cdp_actors.config import WorkspaceConfig
from cdp_actors.errors import BadRequest, NotFound
from cdp_actors.profiles.views import PROFILE_FIELDS, profile_api_body
from cdp_actors.schema.events import INT64_MAX, INT64_MIN
from cdp_actors.schema.identity import check_identity_value
from cdp_actors.schema.identity_types import canonical
from serve_apps.access import Access, access_of, needs
from serve_apps.errors import UnsupportedMediaType, install_error_handlers, json_response

app = FastAPI(title="cdp profile api", docs_url=None, redoc_url=None)


install_error_handlers(app)


def json_body(request: Request) -> None:
    """FastAPI parses a body as JSON only when it is labelled so (or not labelled): anything else is a 415."""
    content_type = request.headers.get("content-type")
    if content_type and content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type {content_type.split(';', 1)[0].strip()!r} is not accepted; "
            "send the JSON body as application/json."
        )


class TokenRequest(BaseModel):
    client_id: str
    client_secret: SecretStr
    """A SecretStr: never in a repr, a log line or an error message."""
    grant_type: Literal["client_credentials"] = "client_credentials"
    audience: str | None = None


class ResolveIdentity(BaseModel):
    type: str
    value: str


class ResolveRequest(BaseModel):
    environment_type: Literal["production", "development"] = "production"
    identity: ResolveIdentity


Mpid = Annotated[int, Path(ge=INT64_MIN, le=INT64_MAX)]
"""MPIDs are signed 64-bit integers; a larger number cannot name a profile (and no LMDB key can hold it)."""


def parse_fields(fields: str | None) -> list[str]:
    wanted = [f.strip() for f in (fields or "").split(",") if f.strip()]
    if not wanted:
        raise BadRequest(f"fields is required: a comma-separated list of {', '.join(PROFILE_FIELDS)}")
    unknown = [f for f in wanted if f not in PROFILE_FIELDS]
    if unknown:
        raise BadRequest(f"Unknown fields {unknown}; allowed: {', '.join(PROFILE_FIELDS)}")
    return wanted


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=32,
    graceful_shutdown_timeout_s=5,
    graceful_shutdown_wait_loop_s=1,
)
@serve.ingress(app)
class ProfileApi:
    def __init__(self, config: WorkspaceConfig, data_dir: str) -> None:
        self.config = config
        self.workspace = config.workspace
        self.access = Access(config, data_dir, follow=True)
        app.state.access = self.access

    @app.post("/oauth/token", dependencies=[Depends(json_body)])
    async def token(self, request: Request, body: TokenRequest) -> Response:
        """Client credentials → a bearer token carrying the client's API and role (valid `token_ttl_s`, 8 h)."""
        check_token_request(body.grant_type, body.audience)
        access = access_of(request)
        await access.refresh()  # a client added or removed through the Platform API counts at once
        client = access.client(body.client_id, body.client_secret.get_secret_value())
        return json_response(200, token_response(access.issue(client), client.token_ttl_s))

    def _check_workspace(self, org: int, account: int, workspace: int) -> None:
        ours = (self.workspace.org_id, self.workspace.account_id, self.workspace.workspace_id)
        if (org, account, workspace) != ours:
            raise NotFound(f"No workspace {org}/{account}/{workspace}.")

    async def _body(self, mpid: int, fields: list[str]) -> Response:
        shard = handles.shard_for(mpid, self.config.runtime.shards)
        record, profile = await asyncio.gather(handles.identity().record.remote(mpid), shard.profile.remote(mpid))
        if (record is None or record.orphaned) and profile is None:
            raise NotFound(f"No profile with mpid {mpid}.")
        names = {a.id: a.name for a in (await self.access.snapshot()).config.audiences}  # the live configuration's
        body = profile_api_body(mpid, record, profile, fields, names)
        return Response(msgspec.json.encode(body), media_type="application/json")

    # Declared before the by-MPID route, which would otherwise claim /userprofile/v1/resolve/... paths.
    @app.post(
        "/userprofile/v1/resolve/{org}/{account}/{workspace}",
        dependencies=[needs(Permission.PROFILE_READ), Depends(json_body)],
    )
    async def resolve(
        self, request: Request, org: int, account: int, workspace: int, body: ResolveRequest, fields: str | None = None
    ) -> Response:
        """A profile by an immutable identity."""
        self._check_workspace(org, account, workspace)
        wanted = parse_fields(fields)
        check_identity_value(body.identity.value, "$.identity.value")
        identity_type = canonical(body.identity.type)
        if identity_type not in self.config.identity.policy().immutable:
            raise BadRequest(f"identity.type must be an immutable identity type; {body.identity.type!r} is not.")
        holders: list[tuple[int, Any]] = await handles.identity().holders.remote(identity_type, body.identity.value)
        live = [mpid for mpid, record in holders if not record.orphaned]
        if not live:
            raise NotFound("No profile holds that identity.")
        return await self._body(live[0], wanted)

    @app.api_route(
        "/userprofile/v1/{org}/{account}/{workspace}/{mpid}",
        methods=["GET", "POST"],
        dependencies=[needs(Permission.PROFILE_READ)],
    )
    async def profile(
        self, request: Request, org: int, account: int, workspace: int, mpid: Mpid, fields: str | None = None
    ) -> Response:
        self._check_workspace(org, account, workspace)
        return await self._body(mpid, parse_fields(fields))
