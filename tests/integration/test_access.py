"""Access over real HTTP: every admin endpoint × every role (401 / 403 / allowed), tokens expiring and altered,
console sessions with CSRF and logout, and no secret in any answer, log line or data-directory file.

These tests share one platform whose workspace has a console user of every role and Platform API clients of
both levels (so it starts its own, on a new data directory)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cdp_actors.access.roles import ENDPOINTS, ROLE_PERMISSIONS, Api, Grant, Permission, Role
from cdp_actors.access.sessions import CSRF_HEADER
from cdp_actors.config import WorkspaceConfig, parse_workspace
from tests.conftest import TEST_ADMIN_PASSWORD, demo_config
from tests.support import token_of, wait_for

USER_PASSWORD = "every-role-password-1"
WRONG_PASSWORD = "wrong-password-for-the-log-scan"
USER_CLIENT = ("user-client", "user-client-secret-1")
SHORT_CLIENT = ("short-lived", "short-lived-secret-1")
OUTPUT_SECRET = "Bearer webhook-credential-7f3a"
"""A partner credential in an output's settings (the webhook's `auth_header`): encrypted in the store."""
SECRETS = ("demo-admin-secret", "demo-client-secret", USER_CLIENT[1], SHORT_CLIENT[1], USER_PASSWORD,
           WRONG_PASSWORD, TEST_ADMIN_PASSWORD, OUTPUT_SECRET, "demo-secret")  # fmt: skip

CONCRETE = {  # a request for each admin route: (path, query, body)
    "/cdp/alerts": ("/cdp/alerts", {}, None),
    "/cdp/status": ("/cdp/status", {}, None),
    "/cdp/deadletter": ("/cdp/deadletter", {}, None),
    "/cdp/users/search": ("/cdp/users/search", {"identity_type": "email", "value": "nobody@example.com"}, None),
    "/cdp/users/{mpid}": ("/cdp/users/4242", {}, None),
    "/cdp/users/{mpid}/edit": ("/cdp/users/4242/edit", {}, {"input_id": 1}),
    "/cdp/reports/forwarding": ("/cdp/reports/forwarding", {}, None),
    "/cdp/reports/activity": ("/cdp/reports/activity", {}, None),
    "/cdp/reports/identity": ("/cdp/reports/identity", {}, None),
    "/cdp/audiences": ("/cdp/audiences", {}, None),
}
ADMIN_ENDPOINTS = [e for e in ENDPOINTS if e.path in CONCRETE]
answers: list[requests.Response] = []
"""Every answer of this module, scanned for secrets at the end."""


def access_config(webhook_url: str) -> WorkspaceConfig:
    document = demo_config(webhook_url).model_dump(mode="json")
    document["inputs"][0]["secret"] = "demo-secret"
    document["outputs"][0]["settings"]["auth_header"] = OUTPUT_SECRET
    document["api_clients"] = [
        {"client_id": "demo-admin", "client_secret": "demo-admin-secret", "api": "platform", "role": "admin"},
        {"client_id": "demo-client", "client_secret": "demo-client-secret", "api": "profile", "role": "read_only"},
        {"client_id": USER_CLIENT[0], "client_secret": USER_CLIENT[1], "api": "platform", "role": "user"},
        {"client_id": SHORT_CLIENT[0], "client_secret": SHORT_CLIENT[1], "api": "platform", "role": "admin",
         "token_ttl_s": 2},
    ]  # fmt: skip
    document["users"] = [{"name": role.value, "role": role.value, "password": USER_PASSWORD} for role in Role]
    return parse_workspace(document)


@pytest.fixture
def base(platform, receiver) -> str:
    return platform(access_config(receiver.url)).base


def send(base: str, method: str, path: str, headers: dict[str, str], cookies: Any = None) -> requests.Response:
    concrete, query, body = CONCRETE[path]
    answer = requests.request(
        method, base + concrete, params=query, json=body, headers=headers, cookies=cookies, timeout=30
    )
    answers.append(answer)
    return answer


def login(base: str, user: str, password: str = USER_PASSWORD) -> requests.Response:
    answer = requests.post(base + "/cdp/login", json={"user": user, "password": password}, timeout=30)
    answers.append(answer)
    return answer


def allowed(answer: requests.Response) -> bool:
    assert answer.status_code < 500, answer.text
    return answer.status_code not in (401, 403)


def test_health_is_open_and_says_nothing_else(base: str) -> None:
    answer = requests.get(base + "/cdp/health", timeout=30)
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_every_admin_endpoint_without_credentials_is_401(base: str) -> None:
    for endpoint in ADMIN_ENDPOINTS:
        for headers in ({}, {"Authorization": "Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ="}, {"Authorization": "Bearer x"}):
            answer = send(base, endpoint.method, endpoint.path, headers)
            assert answer.status_code == 401, (endpoint, headers, answer.text)
            assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_every_admin_endpoint_for_every_client_level(base: str) -> None:
    clients = {"demo-admin": ("demo-admin-secret", Grant(Api.PLATFORM, Role.ADMIN)),
               USER_CLIENT[0]: (USER_CLIENT[1], Grant(Api.PLATFORM, Role.USER)),
               "demo-client": ("demo-client-secret", Grant(Api.PROFILE, Role.READ_ONLY))}  # fmt: skip
    for client_id, (secret, grant) in clients.items():
        headers = {"Authorization": "Bearer " + token_of(base, client_id, secret)}
        for endpoint in ADMIN_ENDPOINTS:
            answer = send(base, endpoint.method, endpoint.path, headers)
            expected = grant.permits(endpoint.permission, workspace_id=1)
            assert allowed(answer) == expected, (client_id, endpoint, answer.status_code, answer.text)
            if not expected:
                assert answer.status_code == 403 and answer.json()["errors"][0]["code"] == "FORBIDDEN"


def test_every_admin_endpoint_for_every_console_role(base: str) -> None:
    for role in Role:
        session = login(base, role.value)
        assert session.status_code == 200, session.text
        csrf = {CSRF_HEADER: session.json()["csrf_token"]}
        for endpoint in ADMIN_ENDPOINTS:
            answer = send(base, endpoint.method, endpoint.path, csrf, session.cookies)
            expected = endpoint.permission in ROLE_PERMISSIONS[role]
            assert allowed(answer) == expected, (role, endpoint, answer.status_code, answer.text)
        bodies = requests.get(base + "/cdp/deadletter", params={"include_body": "true"}, cookies=session.cookies)
        assert allowed(bodies) == (Permission.DEAD_LETTER_BODIES_READ in ROLE_PERMISSIONS[role]), role


def test_a_token_expires_and_an_altered_one_is_refused(base: str) -> None:
    token = token_of(base, *SHORT_CLIENT)
    status = ("GET", "/cdp/status")
    assert send(base, *status, {"Authorization": f"Bearer {token}"}).status_code == 200
    header, payload, signature = token.split(".")
    for altered in (f"{header}.{payload}.{signature[::-1]}", f"{header}.{payload[:-4]}AAAA.{signature}", token + "x"):
        assert send(base, *status, {"Authorization": f"Bearer {altered}"}).status_code == 401
    wait_for(  # token_ttl_s is 2: polled, not slept
        lambda: send(base, *status, {"Authorization": f"Bearer {token}"}).status_code == 401,
        timeout=10,
        what="the token to expire",
    )


def test_a_session_needs_its_csrf_token_for_a_change_and_ends_at_logout(base: str) -> None:
    assert login(base, "admin", WRONG_PASSWORD).status_code == 401
    assert login(base, "nobody").status_code == 401
    session = login(base, "admin")
    assert session.status_code == 200
    cookie = session.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    csrf = session.json()["csrf_token"]
    edit = ("POST", "/cdp/users/{mpid}/edit")
    assert send(base, "GET", "/cdp/status", {}, session.cookies).status_code == 200
    for given in ({}, {CSRF_HEADER: "forged"}):
        assert send(base, *edit, given, session.cookies).status_code == 403
    assert send(base, *edit, {CSRF_HEADER: csrf}, session.cookies).status_code == 404  # allowed: no such profile
    logout = base + "/cdp/logout"
    assert requests.post(logout, cookies=session.cookies, timeout=30).status_code == 403  # no CSRF token
    assert requests.post(logout, cookies=session.cookies, headers={CSRF_HEADER: csrf}, timeout=30).status_code == 204
    assert send(base, "GET", "/cdp/status", {}, session.cookies).status_code == 401


def test_no_secret_in_any_answer_log_line_or_data_file(base: str, platforms) -> None:
    import ray

    logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())  # type: ignore[attr-defined]
    texts = (answer.text + str(answer.headers) for answer in answers)
    for text, secret in itertools.product(texts, SECRETS):
        assert secret not in text
    for path in files(logs_dir, Path(platforms.data_dir)):
        content = path.read_bytes()
        leaked = [secret for secret in SECRETS if secret.encode() in content]
        assert not leaked, (path, leaked)


def files(*directories: Path) -> Iterator[Path]:
    for directory in directories:
        yield from (path for path in directory.rglob("*") if path.is_file())
