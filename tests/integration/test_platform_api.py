"""The Platform API over real HTTP: an app platform's secret in its create answer only and only its hash stored; a
service, an output and a connection made live, secrets masked; bad input on every route is a 400 naming the field
with nothing stored; every route × no credentials / each client level / each console role; users added and removed
live; the rate limit's 429 and headers; CORS.

These tests share one platform whose workspace has a console user of every role and Platform API clients of both
levels (so it starts its own, on a new data directory)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray
import requests

from cdp_actors import handles
from cdp_actors.access import keys
from cdp_actors.access.roles import ENDPOINTS, ROLE_PERMISSIONS, Api, Grant, Role
from cdp_actors.access.sessions import CSRF_HEADER
from cdp_actors.config import WorkspaceConfig, parse_workspace
from cdp_actors.ratelimit import PERCENTAGE_USED_HEADER, Limit
from cdp_actors.secrets import MASK
from tests.conftest import demo_config
from tests.support import token_of, wait_for

USER_PASSWORD = "every-role-password-1"
USER_CLIENT = ("user-client", "user-client-secret-1")
ACCOUNT = {"accountId": "1"}
LIVE_S = 1.0
"""The Platform API's promise: a change counts everywhere within a second."""
ROUTES = [e for e in ENDPOINTS if e.path.startswith("/platform/") and "audiences" not in e.path]
CA_BASE = "/platform/v2/workspaces/{workspace_id}/calculatedattributes"
CA_PATH = "/platform/v2/workspaces/1/calculatedattributes"
REQUESTS: dict[tuple[str, str], tuple[str, Any]] = {  # a harmless request per route: (concrete path, body)
    ("GET", "/platform/v1/accounts"): ("/platform/v1/accounts", None),
    ("GET", "/platform/v1/accounts/{account_id}"): ("/platform/v1/accounts/1", None),
    ("GET", "/platform/v1/workspace"): ("/platform/v1/workspace", None),
    ("GET", "/platform/v1/apps"): ("/platform/v1/apps", None),
    ("POST", "/platform/v1/apps"): ("/platform/v1/apps", {}),
    ("GET", "/platform/v1/apps/{app_id}"): ("/platform/v1/apps/1", None),
    ("PUT", "/platform/v1/apps/{app_id}"): ("/platform/v1/apps/999", {"name": "x"}),
    ("DELETE", "/platform/v1/apps/{app_id}"): ("/platform/v1/apps/999", None),
    ("GET", "/platform/v1/apps/{app_id}/platforms"): ("/platform/v1/apps/1/platforms", None),
    ("POST", "/platform/v1/apps/{app_id}/platforms"): ("/platform/v1/apps/999/platforms", {}),
    ("GET", "/platform/v1/apps/{app_id}/platforms/{platform}"): ("/platform/v1/apps/1/platforms/server", None),
    ("PUT", "/platform/v1/apps/{app_id}/platforms/{platform}"): ("/platform/v1/apps/999/platforms/ios", {}),
    ("DELETE", "/platform/v1/apps/{app_id}/platforms/{platform}"): ("/platform/v1/apps/999/platforms/ios", None),
    ("GET", "/platform/v1/apps/{app_id}/platforms/{platform}/services"): (
        "/platform/v1/apps/1/platforms/server/services",
        None,
    ),  # fmt: skip
    ("GET", "/platform/v1/services"): ("/platform/v1/services", None),
    ("GET", "/platform/v1/services/{name}"): ("/platform/v1/services/webhook", None),
    ("GET", "/platform/v1/outputs"): ("/platform/v1/outputs", None),
    ("POST", "/platform/v1/outputs"): ("/platform/v1/outputs", {}),
    ("GET", "/platform/v1/outputs/{output_id}"): ("/platform/v1/outputs/1", None),
    ("PUT", "/platform/v1/outputs/{output_id}"): ("/platform/v1/outputs/999", {}),
    ("DELETE", "/platform/v1/outputs/{output_id}"): ("/platform/v1/outputs/999", None),
    ("GET", "/platform/v1/connections"): ("/platform/v1/connections", None),
    ("POST", "/platform/v1/connections"): ("/platform/v1/connections", {}),
    ("GET", "/platform/v1/connections/{connection_id}"): ("/platform/v1/connections/1", None),
    ("PUT", "/platform/v1/connections/{connection_id}"): ("/platform/v1/connections/999", {}),
    ("DELETE", "/platform/v1/connections/{connection_id}"): ("/platform/v1/connections/999", None),
    ("GET", "/platform/v1/users"): ("/platform/v1/users", None),
    ("POST", "/platform/v1/users"): ("/platform/v1/users", {}),
    ("GET", "/platform/v1/users/{user}"): ("/platform/v1/users/admin", None),
    ("PUT", "/platform/v1/users/{user}"): ("/platform/v1/users/nobody", {"role": "user"}),
    ("DELETE", "/platform/v1/users/{user}"): ("/platform/v1/users/nobody", None),
    **{(method, CA_BASE + route): (CA_PATH + concrete, body) for method, route, concrete, body in [
        ("GET", "", "", None), ("HEAD", "", "", None), ("POST", "", "", {}),
        ("GET", "/{ca_id}", "/999", None), ("PUT", "/{ca_id}", "/999", {"description": "x"}),
        ("DELETE", "/{ca_id}", "/999", None), ("POST", "/{ca_id}/activation", "/999/activation", None),
        ("GET", "/{ca_id}/activation", "/999/activation", None), ("DELETE", "/{ca_id}/draft", "/999/draft", None),
    ]},
}  # fmt: skip
issued_secrets: list[str] = []
answers: list[requests.Response] = []
"""Every answer but the ones that issued a secret: scanned for those secrets at the end."""


def platform_config(webhook_url: str) -> WorkspaceConfig:
    document = demo_config(webhook_url).model_dump(mode="json")
    document["inputs"][0]["secret"] = "demo-secret"
    document["api_clients"] = [
        {"client_id": "demo-admin", "client_secret": "demo-admin-secret", "api": "platform", "role": "admin"},
        {"client_id": "demo-client", "client_secret": "demo-client-secret", "api": "profile", "role": "read_only"},
        {"client_id": USER_CLIENT[0], "client_secret": USER_CLIENT[1], "api": "platform", "role": "user"},
    ]  # fmt: skip
    document["users"] = [{"name": role.value, "role": role.value, "password": USER_PASSWORD} for role in Role]
    return parse_workspace(document)


@pytest.fixture
def base(platform, receiver) -> str:
    return platform(platform_config(receiver.url)).base


@pytest.fixture
def admin(base: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token_of(base, "demo-admin", "demo-admin-secret")}


def call(base: str, method: str, path: str, headers: dict[str, str], body: Any = None, params: Any = ACCOUNT,
         cookies: Any = None, keep: bool = True) -> requests.Response:  # fmt: skip
    answer = requests.request(method, base + path, params=params, json=body, headers=headers, cookies=cookies,
                              timeout=30)  # fmt: skip
    if keep:
        answers.append(answer)
    return answer


def current() -> tuple[int, WorkspaceConfig]:
    return ray.get(handles.control().current.remote())


def events_status(base: str, key: str, secret: str) -> int:
    """What the Events API answers a minimal batch sent with these credentials."""
    batch = {"environment": "development", "events": [], "user_identities": {"customer_id": "platform-key-user"}}
    return requests.post(base + "/v2/events", json=batch, auth=(key, secret), timeout=30).status_code


def answers_within_a_second(base: str, key: str, secret: str, status: int) -> None:
    started, deadline, seen = time.monotonic(), time.monotonic() + 10, []
    while not seen or seen[-1] != status:
        assert time.monotonic() < deadline, f"the key answered {seen[-3:]}, not {status}"
        seen.append(events_status(base, key, secret))
    assert time.monotonic() - started < LIVE_S + 0.5  # + one request's time and a cache miss's hash


def allowed(answer: requests.Response) -> bool:
    assert answer.status_code < 500, answer.text
    return answer.status_code not in (401, 403)


# ---- apps, services, outputs, connections -----------------------------------------------------------------------


def test_an_app_platforms_secret_is_in_its_create_answer_only(base: str, admin: dict[str, str]) -> None:
    created = call(base, "POST", "/platform/v1/apps", admin, {"name": "Shop", "platforms": [{"platform": "iOS"}]},
                   keep=False)  # fmt: skip
    assert created.status_code == 201, created.text
    app = created.json()["data"][0]
    key = app["platforms"][0]["access_keys"][0]
    secret = key["secret"]
    issued_secrets.append(secret)
    assert created.json()["errors"] == [] and app["name"] == "Shop" and len(secret) == 64
    shown = call(base, "GET", f"/platform/v1/apps/{app['id']}", admin)
    assert shown.status_code == 200 and secret not in shown.text and key["key"] in shown.text
    _, config = current()
    stored = next(i for i in config.inputs if i.id == app["id"])
    assert stored.secret is None and keys.verify_secret(stored.secret_hash or "", keys.Secret(secret))
    answers_within_a_second(base, key["key"], secret, 202)  # the new key works on the Events API
    # a new key for it: the old one's revision passes, the new secret is in that answer only
    rotated = call(base, "PUT", f"/platform/v1/apps/{app['id']}/platforms/ios", admin,
                   {"regenerate_access_key": True}, keep=False)  # fmt: skip
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["data"][0]["access_keys"][0]
    issued_secrets.append(new_key["secret"])
    assert new_key["key"] != key["key"] and new_key["key_revision"] == key["key_revision"] + 1
    answers_within_a_second(base, key["key"], secret, 403)  # the old key stops
    answers_within_a_second(base, new_key["key"], new_key["secret"], 202)
    removed = call(base, "DELETE", f"/platform/v1/apps/{app['id']}", admin)
    assert removed.status_code == 204
    answers_within_a_second(base, new_key["key"], new_key["secret"], 403)
    assert call(base, "GET", f"/platform/v1/apps/{app['id']}", admin).status_code == 404
    assert all(i.id != app["id"] for i in current()[1].inputs)


def test_a_service_output_and_connection_are_made_live_with_secrets_masked(base: str, admin: dict[str, str]) -> None:
    services = call(base, "GET", "/platform/v1/services", admin).json()["data"]
    webhook = next(s for s in services if s["name"] == "webhook")
    assert "url" in webhook["settings_schema"]["properties"]
    settings = {"url": "http://127.0.0.1:9/hook", "auth_header": "Bearer partner-secret-1"}
    created = call(base, "POST", "/platform/v1/outputs", admin, {"name": "Hook", "service": "webhook",
                                                                  "settings": settings})  # fmt: skip
    assert created.status_code == 201, created.text
    output = created.json()["data"][0]
    assert output["settings"]["auth_header"] == MASK and "partner-secret-1" not in created.text
    # GET, change the URL, PUT it back with the mask: the stored secret stays
    shown = call(base, "GET", f"/platform/v1/outputs/{output['id']}", admin).json()["data"][0]
    edit = {"settings": {**shown["settings"], "url": "http://127.0.0.1:9/other"}}
    updated = call(base, "PUT", f"/platform/v1/outputs/{output['id']}", admin, edit)
    assert updated.status_code == 200 and updated.json()["data"][0]["settings"]["auth_header"] == MASK
    stored = next(o for o in current()[1].outputs if o.id == output["id"]).settings
    assert stored.url == "http://127.0.0.1:9/other"  # type: ignore[attr-defined]
    assert stored.auth_header.get_secret_value() == "Bearer partner-secret-1"  # type: ignore[attr-defined]
    connection = call(base, "POST", "/platform/v1/connections", admin, {"name": "to hook", "input": 1,
                                                                         "output": output["id"]})  # fmt: skip
    assert connection.status_code == 201, connection.text
    connection_id = connection.json()["data"][0]["id"]
    listed = call(base, "GET", "/platform/v1/apps/1/platforms/server/services", admin).json()["data"]
    mine = next(s for s in listed if s["id"] == connection_id)
    assert mine["output_service"]["settings"]["auth_header"] == MASK
    assert call(base, "DELETE", f"/platform/v1/connections/{connection_id}", admin).status_code == 204
    assert call(base, "DELETE", f"/platform/v1/outputs/{output['id']}", admin).status_code == 204
    assert all(o.id != output["id"] for o in current()[1].outputs)


BAD_BODIES: list[tuple[str, str, Any, str]] = [  # method, path, body, the field the 400 names
    ("POST", "/platform/v1/apps", {"name": "A", "platforms": [{"platform": ""}]}, "$.platforms[0].platform"),
    ("POST", "/platform/v1/apps", {"name": "A", "platforms": [{"platform": "iOS"}], "x": 1}, "$.x"),
    ("POST", "/platform/v1/apps", [], "$"),
    ("PUT", "/platform/v1/apps/1", {"name": 7}, "$.name"),
    ("PUT", "/platform/v1/apps/1/platforms/server", {"regenerate_access_key": False}, "$.regenerate_access_key"),
    ("POST", "/platform/v1/outputs", {"name": "o", "service": "webhook", "settings": {"url": "ftp://x"}},
     "$.settings.url"),
    ("POST", "/platform/v1/outputs", {"name": "o", "service": "nosuch"}, "$.service"),
    ("PUT", "/platform/v1/outputs/1", {"settings": {"url": "nope"}}, "$.settings.url"),
    ("POST", "/platform/v1/connections", {"input": 1, "output": 99}, "$.output"),
    ("PUT", "/platform/v1/connections/1", {"sample_percent": 200}, "$.sample_percent"),
    ("DELETE", "/platform/v1/outputs/1", None, "$.id"),  # used by a connection
    ("POST", "/platform/v1/users", {"name": "b", "role": "owner", "password": USER_PASSWORD}, "$.role"),
    ("POST", "/platform/v1/users", {"name": "b", "role": "user", "password": "short"}, "$.password"),
    ("POST", "/platform/v1/users", {"name": "admin", "role": "user", "password": USER_PASSWORD}, "$.name"),
    ("PUT", "/platform/v1/users/admin", {"role": "user"}, "$.role"),  # the last console admin
    ("DELETE", "/platform/v1/users/admin", None, "$.role"),
]  # fmt: skip


def test_bad_input_on_every_route_is_a_400_naming_the_field_and_stores_nothing(base: str, admin: dict[str, str]):
    for method, path, body, field in BAD_BODIES:
        before = current()[0]
        answer = call(base, method, path, admin, body)
        assert answer.status_code == 400, (method, path, answer.text)
        assert answer.json()["errors"][0]["message"].endswith(f"- at `{field}`"), (method, path, answer.text)
        assert current()[0] == before, (method, path)
    raw = requests.post(base + "/platform/v1/outputs", params=ACCOUNT, data=b"{nope", headers=admin, timeout=30)
    assert raw.status_code == 400
    for (method, path), (concrete, body) in REQUESTS.items():
        if path.startswith("/platform/v2/"):  # v2 (calculated attributes) takes no ?accountId=: test_ca_api.py
            continue
        answer = call(base, method, concrete, admin, body, params={})
        assert answer.status_code == 400 and "accountId" in answer.text, (method, path, answer.text)
        assert call(base, method, concrete, admin, body, params={"accountId": "2"}).status_code == 404


def test_if_match_refuses_a_change_to_a_version_that_is_no_longer_current(base: str, admin: dict[str, str]):
    shown = call(base, "GET", "/platform/v1/apps/1", admin)
    version = int(shown.headers["ETag"].strip('"'))
    assert version == current()[0]
    stale = call(base, "PUT", "/platform/v1/apps/1", {**admin, "If-Match": f'"{version - 1}"'}, {"name": "renamed"})
    assert stale.status_code == 409 and current()[0] == version
    fresh = call(base, "PUT", "/platform/v1/apps/1", {**admin, "If-Match": f'"{version}"'}, {"name": "renamed"})
    assert fresh.status_code == 200 and fresh.headers["ETag"] == f'"{version + 1}"'
    assert fresh.json()["data"][0]["name"] == "renamed"


# ---- who may call ---------------------------------------------------------------------------------------------


def send(base: str, key: tuple[str, str], headers: dict[str, str], cookies: Any = None) -> requests.Response:
    concrete, body = REQUESTS[key]
    return call(base, key[0], concrete, headers, body, cookies=cookies)


def test_every_route_is_listed_here():
    assert {(e.method, e.path) for e in ROUTES} == set(REQUESTS)


def test_every_route_without_credentials_is_401(base: str) -> None:
    for endpoint in ROUTES:
        for headers in ({}, {"Authorization": "Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ="}, {"Authorization": "Bearer x"}):
            answer = send(base, (endpoint.method, endpoint.path), headers)
            assert answer.status_code == 401, (endpoint, headers, answer.text)


def test_every_route_for_every_client_level(base: str) -> None:
    clients = {"demo-admin": ("demo-admin-secret", Grant(Api.PLATFORM, Role.ADMIN)),
               USER_CLIENT[0]: (USER_CLIENT[1], Grant(Api.PLATFORM, Role.USER)),
               "demo-client": ("demo-client-secret", Grant(Api.PROFILE, Role.READ_ONLY))}  # fmt: skip
    for client_id, (secret, grant) in clients.items():
        headers = {"Authorization": "Bearer " + token_of(base, client_id, secret)}
        for endpoint in ROUTES:
            answer = send(base, (endpoint.method, endpoint.path), headers)
            expected = grant.permits(endpoint.permission, workspace_id=1)
            assert allowed(answer) == expected, (client_id, endpoint, answer.status_code, answer.text)
            if not expected:
                assert answer.status_code == 403
                if endpoint.method != "HEAD":  # an answer to HEAD has no body
                    assert answer.json()["errors"][0]["code"] == "FORBIDDEN"


def login(base: str, user: str, password: str = USER_PASSWORD) -> requests.Response:
    return requests.post(base + "/cdp/login", json={"user": user, "password": password}, timeout=30)


def test_every_route_for_every_console_role(base: str) -> None:
    for role in Role:
        session = login(base, role.value)
        assert session.status_code == 200, session.text
        csrf = {CSRF_HEADER: session.json()["csrf_token"]}
        for endpoint in ROUTES:
            answer = send(base, (endpoint.method, endpoint.path), csrf, session.cookies)
            expected = endpoint.permission in ROLE_PERMISSIONS[role]
            assert allowed(answer) == expected, (role, endpoint, answer.status_code, answer.text)
        change = send(base, ("DELETE", "/platform/v1/users/{user}"), {}, session.cookies)  # no CSRF token
        assert change.status_code == 403, role


def test_a_user_added_through_the_api_logs_in_and_a_removed_one_is_out_within_a_second(
    base: str, admin: dict[str, str]
) -> None:
    password = "a-brand-new-password"
    created = call(base, "POST", "/platform/v1/users", admin, {"name": "ada", "role": "support",
                                                                "password": password}, keep=False)  # fmt: skip
    assert created.status_code == 201, created.text
    assert created.json()["data"][0] == {"id": "ada", "name": "ada", "role": "support"}
    stored = next(u for u in current()[1].users if u.name == "ada")
    assert stored.password is None and stored.password_hash and password not in stored.password_hash
    created_at = time.monotonic()
    session = wait_for(
        lambda: (answer := login(base, "ada", password)).status_code == 200 and answer,
        timeout=10,
        what="the new user to log in",
    )  # the admin app follows within a second
    assert time.monotonic() - created_at < LIVE_S + 1.0  # the poll interval, plus a login's argon2 and slack
    assert requests.get(base + "/cdp/status", cookies=session.cookies, timeout=30).status_code == 200
    assert call(base, "DELETE", "/platform/v1/users/ada", admin).status_code == 204
    removed_at = time.monotonic()
    wait_for(lambda: requests.get(base + "/cdp/status", cookies=session.cookies, timeout=30).status_code == 401,
             timeout=10, what="the removed user's session to stop working")  # fmt: skip
    assert time.monotonic() - removed_at < LIVE_S + 1.0  # the poll interval, plus one HTTP round trip's slack


# ---- rate limits and CORS ---------------------------------------------------------------------------------------


@pytest.fixture
def limited(base: str, platforms) -> Iterator[str]:
    """A second Platform API app with a limit of 3 requests a minute per account."""
    from ray import serve

    from serve_apps.platform import PlatformApi

    config = platforms.current
    app = PlatformApi.options(name="PlatformLimited").bind(config, str(platforms.data_dir), (Limit("account", 3, 60),))
    serve.run(app, name="platform-limited", route_prefix="/limited")
    yield base + "/limited/v1/accounts"
    serve.delete("platform-limited")


def test_past_the_rate_limit_a_429_with_retry_after_and_the_headers(limited: str, admin: dict[str, str]) -> None:
    for _ in range(5):  # refused before authentication: they cost nothing
        assert requests.get(limited, params=ACCOUNT, timeout=30).status_code == 401
    used = []
    for _ in range(3):
        answer = requests.get(limited, params=ACCOUNT, headers=admin, timeout=30)
        assert answer.status_code == 200, answer.text
        used.append(int(answer.headers[PERCENTAGE_USED_HEADER]))
    assert used == sorted(used) and used[-1] >= 90  # the bucket refills a little between requests
    refused = requests.get(limited, params=ACCOUNT, headers=admin, timeout=30)
    assert refused.status_code == 429 and refused.json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    assert int(refused.headers["Retry-After"]) >= 1 and refused.headers["X-mp-rate-limit-exceeded"] == "account"


def test_cors_preflight_and_any_origin_without_credentials(base: str, admin: dict[str, str]) -> None:
    origin = {"Origin": "https://console.example"}
    asking = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    preflight = requests.options(base + "/platform/v1/apps", params=ACCOUNT, headers=asking, timeout=30)
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    for answer in (call(base, "GET", "/platform/v1/apps", {**admin, **origin}),
                   call(base, "GET", "/platform/v1/apps", origin)):  # fmt: skip
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in answer.headers


def test_no_issued_secret_in_any_other_answer() -> None:
    assert issued_secrets
    for answer in answers:
        for secret in issued_secrets:
            assert secret not in answer.text + str(answer.headers)
