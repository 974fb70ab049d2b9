"""Who is calling and may they: the one check every protected route of the admin and Profile apps goes through.

Each replica builds one `Access` in `__init__` (it loads the access key itself, cdp_actors/access/setup.py) and
puts it on `app.state.access`; with `follow=True` it follows the configuration's versions (serve_apps/live.py), so
API clients and console users added, changed or removed through the Platform API count on every replica within a
second. A route declares what it needs with `dependencies=[needs(Permission.X)]`; the
dependency authenticates to grants, then `authorize(grants, permission, workspace)`:
- a bearer token: `TokenSigner.verify`, no call out; the whole check measured ~22 µs on the 2-core machine while
  CI ran;
- else the session cookie: one call to the `sessions` actor (~1 ms), which also checks the CSRF token of a state
  change; the user's role comes from this replica's configuration.
No credentials: 401 (`Unauthorized`); a role without the permission, or a state change without its CSRF token: 403
(`Forbidden`); serve_apps/errors.py maps both. A handler that needs more than its route's permission (the
dead-letter bodies) takes the `Principal` (`Annotated[Principal, needs(...)]`) and calls `Access.authorize`.

`tests/unit/test_access_wiring.py` checks that every route of the admin app declares exactly the permission
`roles.ENDPOINTS` gives it, or is one of the `roles.OPEN_ENDPOINTS`.
"""

# No `from __future__ import annotations` here: FastAPI must see the dependency annotations as real types.

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from cdp_actors import handles
from cdp_actors.access.passwords import Password, Verified, hash_password, verify_password, verify_unknown_user
from cdp_actors.access.roles import Api, Grant, Permission, Role, authorize
from cdp_actors.access.sessions import CSRF_HEADER, SESSION_COOKIE, StartedSession
from cdp_actors.access.setup import load_access_key, load_password_hashes
from cdp_actors.access.tokens import BearerToken, TokenSigner, bearer_of, derive_key
from cdp_actors.config import ApiClient, WorkspaceConfig
from cdp_actors.control.watcher import ConfigSnapshot
from cdp_actors.errors import Unauthorized
from serve_apps.live import LiveConfig

TOKEN_KEY_PURPOSE = "tokens"
CLIENT_KEY_VERSION = 1
"""Every configured client's key version until the configuration store versions them: a token stays valid until
it expires or the client is removed from the configuration (within a second on every replica)."""
_LOGIN_REFUSED = "Unknown user name or wrong password."


@dataclass(frozen=True)
class Principal:
    """Who is calling: a client id or a user name, and their grants."""

    name: str
    grants: tuple[Grant, ...]
    session_id: str | None = None

    def __repr__(self) -> str:
        return f"Principal({self.name!r}, {[g.scope for g in self.grants]})"


def now_s() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Directory:
    """Who exists in one configuration version: the API clients, the console users' roles and password hashes."""

    workspace_id: int
    clients: dict[str, ApiClient]
    key_versions: dict[str, int]
    roles: dict[str, Role]
    password_hashes: dict[str, str]


def directory_of(config: WorkspaceConfig, file_hashes: Mapping[str, str]) -> Directory:
    """A version's directory. A user's hash set through the Platform API (in the configuration) wins over the one
    `users.json` holds from the seed file's password."""
    clients = {client.client_id: client for client in config.api_clients}
    hashes = {name: digest for name, digest in file_hashes.items()}
    hashes |= {user.name: user.password_hash for user in config.users if user.password_hash is not None}
    return Directory(
        config.workspace.workspace_id,
        clients,
        {client_id: CLIENT_KEY_VERSION for client_id in clients},
        {user.name: user.role for user in config.users},
        hashes,
    )


class Access:
    """A replica's view of access: the token signer and the clients and users of the configuration's current
    version. With `follow=True` (every Serve replica) it follows the control actor's versions through a
    `LiveConfig`, so a client or user added or removed through the Platform API counts within a second; without
    (unit tests), it keeps the configuration it was built with."""

    def __init__(self, config: WorkspaceConfig, data_dir: str, follow: bool = False) -> None:
        self.signer = TokenSigner(derive_key(load_access_key(os.environ, data_dir), TOKEN_KEY_PURPOSE))
        self.file_hashes = load_password_hashes(data_dir)
        self.directory = directory_of(config, self.file_hashes)
        self.fixed = ConfigSnapshot(0, config, self.directory)
        self.live: LiveConfig[Directory] | None = LiveConfig(self._derive) if follow else None

    def _derive(self, config: WorkspaceConfig) -> Directory:
        return directory_of(config, self.file_hashes)

    def __repr__(self) -> str:
        return f"Access({len(self.clients)} clients, {len(self.roles)} users)"

    async def snapshot(self) -> ConfigSnapshot[Directory]:
        """The replica's current configuration version with its directory (~1 µs after the first request): what one
        request uses from start to end. Without `follow`, the configuration the replica was built with."""
        if self.live is None:
            return self.fixed
        held = await self.live.snapshot()
        self.directory = held.derived
        return held

    async def refresh(self) -> Directory:
        return (await self.snapshot()).derived

    async def offer(self, version: int, config: WorkspaceConfig) -> None:
        """A version this replica wrote itself: in use from its next request on."""
        if self.live is not None:
            await self.live.offer(version, config)
            await self.refresh()

    @property
    def workspace_id(self) -> int:
        return self.directory.workspace_id

    @property
    def clients(self) -> dict[str, ApiClient]:
        return self.directory.clients

    @property
    def key_versions(self) -> dict[str, int]:
        return self.directory.key_versions

    @property
    def roles(self) -> dict[str, Role]:
        return self.directory.roles

    @property
    def password_hashes(self) -> dict[str, str]:
        return self.directory.password_hashes

    def client(self, client_id: str, client_secret: str) -> ApiClient:
        """The client these credentials name (compared in constant time); Unauthorized otherwise."""
        found = [c for c in self.clients.values() if c.credentials_match(client_id, client_secret)]
        if not found:
            raise Unauthorized("Unknown client_id or wrong client_secret.")
        return found[0]

    def issue(self, client: ApiClient) -> str:
        return self.signer.issue(client.client_id, CLIENT_KEY_VERSION, (client.grant(),), now_s(), client.token_ttl_s)

    def verify_bearer(self, authorization: str | None) -> BearerToken:
        return self.signer.verify(bearer_of(authorization), now_s(), self.key_versions)

    def user_grants(self, user: str) -> tuple[Grant, ...]:
        """A session user's grants from the configuration (a user removed since has none: 401)."""
        role = self.roles.get(user)
        if role is None:
            raise Unauthorized("Log in: the session is missing, expired or ended.")
        return (Grant(Api.PLATFORM, role, frozenset({self.workspace_id})),)

    async def principal(self, request: Request) -> Principal:
        """Bearer token first (API clients); else the session cookie; else 401."""
        await self.refresh()
        authorization = request.headers.get("authorization")
        session_id = request.cookies.get(SESSION_COOKIE)
        if authorization or not session_id:
            token = self.verify_bearer(authorization)
            return Principal(token.client_id, token.grants)
        user = await handles.sessions().resume.remote(
            session_id, now_s(), request.method, request.headers.get(CSRF_HEADER)
        )
        return Principal(user, self.user_grants(user), session_id)

    async def check(self, request: Request, permission: Permission) -> Principal:
        principal = await self.principal(request)
        self.authorize(principal, permission)
        return principal

    def authorize(self, principal: Principal, permission: Permission) -> None:
        authorize(principal.grants, permission, self.workspace_id)

    async def login(self, user: str, password: Password) -> StartedSession:
        """A new session for a user whose password matches; Unauthorized (the same for an unknown user, and as
        slow) otherwise. The argon2 verification runs in a thread: it takes ~0.2 s of a core."""
        await self.refresh()
        stored = self.password_hashes.get(user)
        if stored is None or user not in self.roles:
            await asyncio.to_thread(verify_unknown_user)
            raise Unauthorized(_LOGIN_REFUSED)
        verified = await asyncio.to_thread(verify_password, stored, password)
        if not verified:
            raise Unauthorized(_LOGIN_REFUSED)
        if verified is Verified.REHASH:  # this replica's copy only; users.json is rewritten at the next start
            self.password_hashes[user] = await asyncio.to_thread(hash_password, password)
        return await handles.sessions().start.remote(user, now_s())


def access_of(request: Request) -> Access:
    return request.app.state.access


def needs(permission: Permission) -> Any:
    """The dependency a protected route declares: `dependencies=[needs(Permission.X)]`."""

    async def check(request: Request) -> Principal:
        return await access_of(request).check(request, permission)

    check.permission = permission  # type: ignore[attr-defined]  # read by the route table test
    return Depends(check)


def permission_of_dependency(dependency: Callable[..., Coroutine[Any, Any, Any]]) -> Permission | None:
    return getattr(dependency, "permission", None)
