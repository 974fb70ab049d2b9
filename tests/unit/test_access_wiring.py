"""The wiring of access control into the Serve apps, without Ray: every route declares the permission the table
gives it; the one check (serve_apps/access.py) turns a bearer token or a session cookie into grants and refuses
with 401 or 403; login, CSRF and logout against the session store; the demo workspace's credentials.

The sessions actor is replaced by a `SessionStore` in this process (the actor is that class, `ray.remote`-ed)."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request

import serve_apps.access as access_module
from cdp_actors.access.passwords import Password
from cdp_actors.access.roles import (
    ENDPOINTS,
    OPEN_ENDPOINTS,
    PERMISSION_OF,
    ROLE_PERMISSIONS,
    Api,
    Grant,
    Permission,
    Role,
)
from cdp_actors.access.session_store import SessionStore
from cdp_actors.access.sessions import CSRF_HEADER, SESSION_COOKIE
from cdp_actors.access.setup import USERS_FILE, prepare_users
from cdp_actors.config import ConfigError, parse_workspace
from cdp_actors.errors import Forbidden, Unauthorized
from serve_apps import admin, profile
from serve_apps.access import Access, permission_of_dependency
from tests.conftest import ROOT, TEST_ADMIN_PASSWORD, demo_config

P = Permission
USER_PASSWORD = "a-long-enough-password"


def api_routes(module: Any) -> list[APIRoute]:
    """The FastAPI routes of a serve_apps module's app (Serve's ingress wraps them in an included router)."""
    routes: list[APIRoute] = []
    for route in module.app.routes:
        inner = getattr(route, "original_router", None)
        routes += [r for r in (inner.routes if inner else [route]) if isinstance(r, APIRoute)]
    return routes


def declared(route: APIRoute) -> set[Permission]:
    return {p for d in route.dependant.dependencies if (p := permission_of_dependency(d.call)) is not None}  # type: ignore[arg-type]


def test_every_admin_route_declares_exactly_the_tables_permission_or_is_open():
    routes = api_routes(admin)
    seen = set()
    for route in routes:
        for method in route.methods:
            key = (method, "/cdp" + route.path)
            seen.add(key)
            expected = set() if key in OPEN_ENDPOINTS else {PERMISSION_OF[key]}
            assert declared(route) == expected, key
    assert {(e.method, e.path) for e in ENDPOINTS if e.path.startswith("/cdp/")} - {("GET", "/cdp/audit")} <= seen
    assert seen >= OPEN_ENDPOINTS


def test_every_profile_api_route_but_the_token_endpoint_declares_profile_read():
    for route in api_routes(profile):
        assert declared(route) == (set() if route.path == "/oauth/token" else {P.PROFILE_READ}), route.path


# ---- the check ------------------------------------------------------------------------------------------------


class _Remote:
    def __init__(self, method: Any) -> None:
        self.method = method

    async def remote(self, *args: Any) -> Any:
        return self.method(*args)


class InProcessSessions:
    """`handles.sessions()` as the admin app calls it, over a SessionStore in this process."""

    def __init__(self, store: SessionStore) -> None:
        self.start, self.resume, self.end = _Remote(store.start), _Remote(store.resume), _Remote(store.end)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CDP_ACCESS_KEY", raising=False)
    sessions = InProcessSessions(SessionStore(tmp_path))
    monkeypatch.setattr(access_module.handles, "sessions", lambda: sessions)
    return tmp_path


def config_with_every_role() -> Any:
    config = demo_config("http://127.0.0.1:9/webhook")
    users = [{"name": role.value, "role": role.value, "password": USER_PASSWORD} for role in Role]
    clients = [
        {"client_id": "user-client", "client_secret": "user-client-secret", "api": "platform", "role": "user"},
        {"client_id": "short", "client_secret": "short-secret", "api": "platform", "role": "admin", "token_ttl_s": 1},
    ]
    document = config.model_dump(mode="json")
    document["users"] = users
    document["api_clients"] += clients
    document["inputs"][0]["secret"] = "demo-secret"
    for client, secret in zip(document["api_clients"], ["demo-admin-secret", "demo-client-secret"], strict=False):
        client["client_secret"] = secret
    return parse_workspace(document)


@pytest.fixture(scope="module")
def config() -> Any:
    return config_with_every_role()


@pytest.fixture(scope="module")
def users_file(config: Any, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """users.json for every role, hashed once (argon2 takes ~0.2 s a hash)."""
    directory = tmp_path_factory.mktemp("users")
    prepare_users(config.users, directory, lambda name, password: None)
    return (directory / USERS_FILE).read_bytes()


@pytest.fixture
def access(config: Any, data_dir: Path, users_file: bytes) -> Access:
    (data_dir / USERS_FILE).write_bytes(users_file)
    return Access(config, str(data_dir))


def request(method: str = "GET", headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": method, "path": "/cdp/x", "headers": raw, "query_string": b""})


def bearer(access: Access, client_id: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + access.issue(access.clients[client_id])}


def check(access: Access, permission: Permission, method: str = "GET", **headers: str) -> Any:
    return asyncio.run(access.check(request(method, headers), permission))


def test_no_credentials_basic_auth_or_garbage_is_401(access: Access):
    basic = "Basic " + base64.b64encode(b"demo-key:demo-secret").decode()
    for headers in ({}, {"Authorization": basic}, {"Authorization": "Bearer x.y.z"}, {"Authorization": "Bearer"}):
        with pytest.raises(Unauthorized):
            check(access, P.STATUS_READ, **headers)


def test_client_tokens_follow_the_role_table(access: Access):
    for client_id, grant in (
        ("demo-admin", Grant(Api.PLATFORM, Role.ADMIN)),
        ("user-client", Grant(Api.PLATFORM, Role.USER)),
        ("demo-client", Grant(Api.PROFILE, Role.READ_ONLY)),
    ):
        for permission in Permission:
            if grant.permits(permission, workspace_id=1):
                assert check(access, permission, **bearer(access, client_id)).name == client_id
            else:
                with pytest.raises(Forbidden):
                    check(access, permission, **bearer(access, client_id))


def test_a_tampered_or_expired_token_is_401(access: Access, monkeypatch: pytest.MonkeyPatch):
    token = bearer(access, "demo-client")["Authorization"]
    header, payload, signature = token.removeprefix("Bearer ").split(".")
    forged = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(payload + "==").replace(b"profile:read_only", b"platform:admin__")
    )
    for tampered in (f"{header}.{forged.decode().rstrip('=')}.{signature}", f"{header}.{payload}.{signature[:-2]}AA"):
        with pytest.raises(Unauthorized):
            check(access, P.PROFILE_READ, Authorization=f"Bearer {tampered}")
    short = bearer(access, "short")
    assert check(access, P.STATUS_READ, **short).name == "short"
    issued = access_module.now_s()
    monkeypatch.setattr(access_module, "now_s", lambda: issued + 1)  # the client's token_ttl_s is 1
    with pytest.raises(Unauthorized):
        check(access, P.STATUS_READ, **short)


def test_a_token_of_a_client_no_longer_configured_is_401(access: Access, config: Any, data_dir: Path):
    token = bearer(access, "user-client")
    document = config.model_dump(mode="json")
    document["api_clients"] = [c for c in document["api_clients"] if c["client_id"] != "user-client"]
    for client in document["api_clients"]:
        client["client_secret"] = "x"
    document["inputs"][0]["secret"] = "x"
    document["users"] = []
    later = Access(parse_workspace(document), str(data_dir))
    with pytest.raises(Unauthorized):
        check(later, P.STATUS_READ, **token)


def test_a_wrong_client_secret_is_401_and_not_echoed(access: Access):
    with pytest.raises(Unauthorized) as refused:
        access.client("demo-admin", "demo-client-secret")
    assert "secret" not in str(refused.value).replace("client_secret", "")


# ---- sessions -------------------------------------------------------------------------------------------------


def login(access: Access, user: str, password: str = USER_PASSWORD) -> Any:
    return asyncio.run(access.login(user, Password(password)))


def cookie(session_id: str, csrf: str | None = None) -> dict[str, str]:
    headers = {"Cookie": f"{SESSION_COOKIE}={session_id}"}
    return headers | ({CSRF_HEADER: csrf} if csrf is not None else {})


def test_every_role_logs_in_and_gets_what_the_table_allows(access: Access):
    for role in Role:
        started = login(access, role.value)
        for permission in Permission:
            if permission.api is Api.PLATFORM and permission in ROLE_PERMISSIONS[role]:
                assert check(access, permission, "POST", **cookie(started.session_id, started.csrf_token))
            else:
                with pytest.raises(Forbidden):
                    check(access, permission, **cookie(started.session_id))


def test_a_wrong_password_or_unknown_user_is_the_same_401(access: Access):
    messages = set()
    for user, password in (("admin", "wrong-password-here"), ("nobody", USER_PASSWORD), ("admin", "")):
        with pytest.raises(Unauthorized) as refused:
            login(access, user, password)
        messages.add(str(refused.value))
    assert len(messages) == 1


def test_a_state_change_with_a_session_needs_its_csrf_token(access: Access):
    started, other = login(access, "admin"), login(access, "support")
    assert check(access, P.STATUS_READ, **cookie(started.session_id)).name == "admin"  # GET: no token needed
    for given in (None, "", other.csrf_token, started.csrf_token[:-1]):
        with pytest.raises(Forbidden):
            check(access, P.USER_ACTIVITY_EDIT, "POST", **cookie(started.session_id, given))
    assert check(access, P.USER_ACTIVITY_EDIT, "POST", **cookie(started.session_id, started.csrf_token))


def test_an_ended_or_unknown_session_is_401(access: Access):
    started = login(access, "admin")
    access_module.handles.sessions().end.method(started.session_id)
    for session_id in (started.session_id, "made-up"):
        with pytest.raises(Unauthorized):
            check(access, P.STATUS_READ, **cookie(session_id))


def test_a_session_of_a_user_removed_from_the_configuration_is_401(access: Access):
    started = login(access, "support")
    del access.roles["support"]
    with pytest.raises(Unauthorized):
        check(access, P.STATUS_READ, **cookie(started.session_id))


def test_no_password_in_a_log_line_or_a_repr(access: Access, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    started = login(access, "admin")
    with pytest.raises(Unauthorized):
        login(access, "admin", "not-the-password")
    shown = caplog.text + repr(access) + repr(started) + repr(access.password_hashes)
    for secret in (USER_PASSWORD, "not-the-password", started.session_id, started.csrf_token):
        assert secret not in shown


# ---- the demo workspace ---------------------------------------------------------------------------------------


def test_the_demo_workspace_has_an_admin_client_and_an_admin_user():
    config = demo_config("http://127.0.0.1:9/webhook")
    admin_client = next(c for c in config.api_clients if c.client_id == "demo-admin")
    assert (admin_client.api, admin_client.role, admin_client.client_secret.get_secret_value()) == (
        Api.PLATFORM,
        Role.ADMIN,
        "demo-admin-secret",
    )
    assert [(u.name, u.role) for u in config.users] == [("admin", Role.ADMIN)]
    assert config.users[0].password is not None
    assert config.users[0].password.get_secret_value() == TEST_ADMIN_PASSWORD  # conftest sets CDP_ADMIN_PASSWORD
    assert "${CDP_ADMIN_PASSWORD}" in (ROOT / "configs" / "workspace.yaml").read_text()


@pytest.mark.parametrize(
    ("api", "role"), [("platform", "read_only"), ("platform", "support"), ("profile", "admin"), ("profile", "user")]
)
def test_a_client_gets_only_a_level_its_api_offers(api: str, role: str):
    document = demo_config("http://127.0.0.1:9/webhook").model_dump(mode="json")
    document["inputs"][0]["secret"] = "x"
    document["users"] = []
    document["api_clients"] = [{"client_id": "c", "client_secret": "s", "api": api, "role": role}]
    with pytest.raises(ConfigError, match=r"api_clients\[0\]\.role"):
        parse_workspace(document)


def test_user_and_client_names_are_unique():
    document = demo_config("http://127.0.0.1:9/webhook").model_dump(mode="json")
    document["inputs"][0]["secret"] = "x"
    document["api_clients"] = []
    document["users"] = [{"name": "a", "role": "admin"}, {"name": "a", "role": "user"}]
    with pytest.raises(ConfigError, match="users: names must be unique"):
        parse_workspace(document)
