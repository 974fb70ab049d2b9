"""Every refusal answers with its documented status, code and `{"errors": [{"code", "message"}]}` body, from the one
table in serve_apps/errors.py; no client mistake is a 500; routes answer unknown paths and methods from it too."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.requests import Request

import serve_apps.errors
from cdp_actors import errors
from cdp_actors.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    ImmutableIdentity,
    NotFound,
    Overloaded,
    RateLimited,
    RequestFailed,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from cdp_actors.predict.train import NotEnoughExamples
from cdp_actors.schema.events import BatchError
from cdp_actors.schema.identity import RequestError
from serve_apps import events, identity
from serve_apps.errors import (
    IDSYNC_CODES,
    MethodNotAllowed,
    NoSuchEndpoint,
    UnsupportedMediaType,
    answer,
    answer_of,
    install_error_handlers,
)
from serve_apps.routes import Route, Routes
from tests.support import ray_task_error
from tests.unit.test_auth_and_errors import asgi_call

RATE_LIMITED_HEADERS = {"retry-after": "3", "x-mp-rate-limit-exceeded": "account"}
DOCUMENTED: list[tuple[RequestFailed, int, str, str, dict[str, str]]] = [
    # refusal, status, code, message, headers
    (
        BadRequest("Unknown identity type", "$.user_identities.email"),
        400,
        "BAD_REQUEST",
        "Unknown identity type - at `$.user_identities.email`",
        {},
    ),
    (BadRequest("Given time range is invalid."), 400, "BAD_REQUEST", "Given time range is invalid.", {}),
    (ImmutableIdentity("other"), 400, "BAD_REQUEST", "other is an immutable identity.", {}),
    (NotEnoughExamples(99, 901), 400, "BAD_REQUEST", NotEnoughExamples(99, 901).message, {}),
    (RequestError("bad - at `$.data`"), 400, "BAD_REQUEST", "bad - at `$.data`", {}),
    (BatchError("bad - at `$.events[0]`"), 400, "BAD_REQUEST", "bad - at `$.events[0]`", {}),
    (Unauthorized("no key"), 401, "UNAUTHORIZED", "no key", {}),
    (Forbidden("wrong key"), 403, "FORBIDDEN", "wrong key", {}),
    (NotFound("No profile with mpid 7."), 404, "NOT_FOUND", "No profile with mpid 7.", {}),
    (NoSuchEndpoint("No such endpoint: /v2/x"), 404, "NOT_FOUND", "No such endpoint: /v2/x", {}),
    (MethodNotAllowed("Use POST.", ("POST",)), 405, "METHOD_NOT_ALLOWED", "Use POST.", {"allow": "POST"}),
    (Conflict("Version 3 is not the current one (4)."), 409, "CONFLICT", "Version 3 is not the current one (4).", {}),
    (Gone("The results expired."), 410, "GONE", "The results expired.", {}),
    (TooLarge("Request body exceeds 10 bytes."), 413, "REQUEST_TOO_LARGE", "Request body exceeds 10 bytes.", {}),
    (UnsupportedMediaType("no XML"), 415, "UNSUPPORTED_MEDIA_TYPE", "no XML", {}),
    (Overloaded("Intake is behind", 1), 429, "TOO_MANY_REQUESTS", "Intake is behind", {"retry-after": "1"}),
    (RateLimited("Over the limit", 3, "account"), 429, "TOO_MANY_REQUESTS", "Over the limit", RATE_LIMITED_HEADERS),
    (Unavailable("Intake is restarting", 2), 503, "SERVICE_UNAVAILABLE", "Intake is restarting", {"retry-after": "2"}),
]


def request(method: str = "POST", path: str = "/v2/events") -> Request:
    return Request({"type": "http", "method": method, "path": path, "query_string": b"", "headers": []})


def reply(response: Any) -> tuple[int, str, str, dict[str, str]]:
    (error,) = json.loads(response.body)["errors"]
    headers = {name: response.headers[name] for name in ("allow", *RATE_LIMITED_HEADERS) if name in response.headers}
    assert response.headers["content-type"] == "application/json"
    return response.status_code, error["code"], error["message"], headers


@pytest.mark.parametrize(("refusal", "status", "code", "message", "headers"), DOCUMENTED)
def test_each_refusal_answers_its_documented_status_code_and_body(
    refusal: RequestFailed, status: int, code: str, message: str, headers: dict[str, str]
) -> None:
    assert reply(answer_of(refusal)) == (status, code, message, headers)
    assert reply(answer(refusal, request())) == (status, code, message, headers)


def subclasses(kind: type) -> set[type]:
    return {kind, *(sub for direct in kind.__subclasses__() for sub in subclasses(direct))}


def test_every_refusal_class_is_documented_here_and_only_an_unavailable_service_is_a_5xx() -> None:
    """A new refusal class must get a row in the table (a client mistake must not fall to a 500) and one here."""
    assert {type(refusal) for refusal, *_ in DOCUMENTED} == subclasses(RequestFailed) - {RequestFailed}
    for kind in subclasses(RequestFailed) - {RequestFailed}:
        assert any(base in serve_apps.errors.ANSWERS for base in kind.__mro__), kind
    for refusal, status, *_ in DOCUMENTED:
        assert status < 500 or isinstance(refusal, Unavailable), refusal


def test_domain_refusals_depend_on_nothing_and_hold_no_status_code() -> None:
    tree = ast.parse(Path(errors.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "typing"} and not any(isinstance(node, ast.Import) for node in ast.walk(tree))
    numbers = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, int)]
    assert not [n for n in numbers if 100 <= n < 600]


def test_idsync_names_a_missing_profile_its_own_way_but_not_an_unknown_path() -> None:
    assert reply(answer(NotFound("User Profile Not Found."), request(), IDSYNC_CODES))[:2] == (404, "NOT_FOUND_ERROR")
    assert reply(answer(NoSuchEndpoint("No such endpoint: /v1/x"), request(), IDSYNC_CODES))[:2] == (404, "NOT_FOUND")
    assert reply(answer(BadRequest("x"), request(), IDSYNC_CODES))[:2] == (400, "BAD_REQUEST")


@pytest.mark.parametrize("refusal", [row[0] for row in DOCUMENTED])
def test_a_refusal_raised_in_an_actor_answers_as_itself(refusal: RequestFailed) -> None:
    """Ray pickles the actor's exception and raises it wrapped in RayTaskError(<its class>) in the caller."""
    copied = pickle.loads(pickle.dumps(refusal))
    assert (type(copied), copied.message, vars(copied)) == (type(refusal), refusal.message, vars(refusal))
    wrapped = ray_task_error("IdentityIndex.modify", copied)
    assert reply(answer(wrapped, request())) == reply(answer_of(refusal))


def test_a_bug_is_a_500_without_its_text_also_from_an_actor() -> None:
    for bug in (KeyError("token=s3cret"), ray_task_error("IntakeLog.append", KeyError("token=s3cret"))):
        response = answer(bug, request())
        assert response.status_code == 500 and b"s3cret" not in response.body
        assert json.loads(response.body)["errors"][0]["code"] == "INTERNAL_ERROR"


def test_the_route_tables_keep_todays_paths_404s_and_405s() -> None:
    assert events.ROUTES.find("POST", "/v2/events") == (False, {})
    assert events.ROUTES.find("POST", "/v2/bulkevents/") == (True, {})
    for path in ("/v2/foo/events", "/v2/events/extra", "/v2/x/bulkevents", "/v2"):
        with pytest.raises(NoSuchEndpoint, match=f"^No such endpoint: {path}$"):
            events.ROUTES.find("POST", path)
    with pytest.raises(MethodNotAllowed, match="^Use POST.$") as wrong:
        events.ROUTES.find("GET", "/v2/events")
    assert wrong.value.allowed == ("POST",)
    assert identity.ROUTES.find("POST", "/v1/login") == ("login", {})
    assert identity.ROUTES.find("POST", "/v1/8/modify") == ("modify", {"mpid": "8"})
    assert identity.ROUTES.find("POST", "/v1/identity/k1/Alias") == ("alias", {"api_key": "k1"})  # the Web SDK's
    assert identity.ROUTES.find("POST", "/v1/identity/k1/alias") == ("alias", {"api_key": "k1"})
    for path in ("/v1/Login", "/v1/8/Modify", "/v1/identity/k1", "/v1/unknown"):
        with pytest.raises(NoSuchEndpoint):
            identity.ROUTES.find("POST", path)


def test_a_route_table_names_every_method_a_path_allows() -> None:
    routes = Routes([Route("GET", "/a/{id}", "read"), Route("PUT", "/a/{id}", "write")])
    assert routes.find("PUT", "/a/1") == ("write", {"id": "1"})
    with pytest.raises(MethodNotAllowed) as wrong:
        routes.find("POST", "/a/1")
    assert reply(answer_of(wrong.value)) == (405, "METHOD_NOT_ALLOWED", "Use GET or PUT.", {"allow": "GET, PUT"})


def test_a_fastapi_app_answers_refusals_validation_failures_and_routing_from_the_table() -> None:
    app = FastAPI()
    install_error_handlers(app, {NotFound: "NOT_FOUND_ERROR"})

    @app.get("/profiles/{mpid}")
    async def profile(mpid: int) -> dict[str, int]:
        raise NotFound(f"No profile with mpid {mpid}.")

    @app.get("/busy")
    async def busy() -> dict[str, int]:
        raise Overloaded("behind", 1)

    missing = asgi_call(app, "GET", "/profiles/5")
    assert (missing[0], json.loads(missing[2])) == (
        404,
        {"errors": [{"code": "NOT_FOUND_ERROR", "message": "No profile with mpid 5."}]},
    )
    invalid = asgi_call(app, "GET", "/profiles/x")
    assert invalid[0] == 400 and json.loads(invalid[2])["errors"][0]["message"].endswith(" - at `path.mpid`")
    status, headers, _ = asgi_call(app, "GET", "/busy")
    assert (status, headers[b"retry-after"]) == (429, b"1")
    unknown = asgi_call(app, "GET", "/nope")
    assert (unknown[0], json.loads(unknown[2])["errors"][0]["code"]) == (404, "NOT_FOUND")
    wrong = asgi_call(app, "POST", "/busy")
    assert (wrong[0], wrong[1][b"allow"], json.loads(wrong[2])["errors"][0]["message"]) == (
        405,
        b"GET",
        "POST is not allowed on /busy.",
    )
