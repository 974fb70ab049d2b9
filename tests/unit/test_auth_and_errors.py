"""HMAC Date skew, non-ASCII credentials, content types, and Serve's own errors put in the API's shape."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from ray.serve._private.http_util import convert_object_to_asgi_messages, retry_after_headers
from starlette.requests import ClientDisconnect, Request

from cdp_actors.access.keys import InputKeys, hashed_inputs
from cdp_actors.access.roles import Api, Role, credential_grant
from cdp_actors.access.tokens import MIN_KEY_BYTES, TokenSigner
from cdp_actors.cli import ERROR_MIDDLEWARES
from cdp_actors.config import WorkspaceConfig
from cdp_actors.errors import Forbidden, Unauthorized
from serve_apps.auth import (
    MAX_DATE_SKEW,
    authenticate,
    authenticate_signed,
    parse_basic_auth,
    signed_at,
    verify_basic,
)
from serve_apps.errors import (
    ErrorEnvelope,
    UnsupportedMediaType,
    answer_of,
    check_media_type,
    ingress_middlewares,
    install_error_handlers,
    internal_error,
)
from tests.conftest import demo_config

NOW = datetime(2026, 11, 30, 21, 38, 23, tzinfo=timezone.utc)
CONFIG = demo_config("http://127.0.0.1:9/hook")
STORED = hashed_inputs(CONFIG)
"""The demo workspace as the store keeps it: the demo input takes signed requests, so it keeps its secret too."""
BODY = b'{"environment": "production", "known_identities": {"email": "a@b.io"}}'


def signed_request(date: str, signature: str | None = None, path: str = "/v1/identify") -> Request:
    if signature is None:
        message = f"POST\n{date}\n{path}".encode() + BODY
        signature = hmac.new(b"demo-secret", message, hashlib.sha256).hexdigest()
    headers = [
        (b"x-mp-key", b"demo-key"),
        (b"date", date.encode("latin-1")),
        (b"x-mp-signature", signature.encode("latin-1")),
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
    }
    return Request(scope)


def http_date(when: datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT")


def refusal(request: Request, now: datetime = NOW, config: WorkspaceConfig = STORED) -> str | None:
    try:
        asyncio.run(authenticate_signed(config, InputKeys()(config), request, BODY, now))
    except Unauthorized as refused:
        assert answer_of(refused).status_code == 401
        return refused.message
    return None


@pytest.mark.parametrize(
    "date",
    [
        "Mon, 30 Nov 2026 21:38:23 GMT",  # iOS: RFC 1123 in GMT
        "Mon, 30 Nov 2026 13:38:23 PST",  # Android: `zzz` in the device's zone
        "Mon, 30 Nov 2026 23:08:23 GMT+01:30",
        "Mon, 30 Nov 2026 22:38:23 +0100",
        "20261130T213823Z",  # mParticle's docs: ISO-8601 basic
        "2026-11-30T21:38:23+00:00",
    ],
)
def test_the_date_formats_the_sdks_send_name_the_same_instant(date: str) -> None:
    assert signed_at(date) == NOW
    assert refusal(signed_request(date)) is None


@pytest.mark.parametrize(
    "date",
    [
        "",
        "yesterday",
        "Mon, 30 Nov 2026 22:38:23 CET",
        "2026-11-30T21:38:23",
        "Mon, 99 Nov 2026 22:38:23 GMT",
        "9999-12-31T23:59:59-23:59",
        "\u00e9t\u00e9",
    ],
)
def test_a_date_without_a_known_instant_is_refused_saying_why(date: str) -> None:
    message = refusal(signed_request(date))
    assert message is not None and ("Date" in message or "x-mp-key" in message)


def test_a_missing_date_or_an_unknown_key_is_refused_saying_which() -> None:
    request = signed_request(http_date(NOW))
    headers = [(name, value) for name, value in request.scope["headers"] if name != b"date"]
    assert "Date must accompany" in (refusal(Request({**request.scope, "headers": headers})) or "")
    headers = [
        (b"x-mp-key", b"other-key") if name == b"x-mp-key" else (name, value)
        for name, value in request.scope["headers"]
    ]
    assert "not a key of this workspace" in (refusal(Request({**request.scope, "headers": headers})) or "")


def test_a_signed_request_for_an_input_that_keeps_only_a_hash_is_refused_saying_so() -> None:
    document = CONFIG.model_dump(mode="python")
    document["inputs"][0]["secret"] = "demo-secret"
    document["inputs"][0]["signed_requests"] = False
    unsigned = hashed_inputs(WorkspaceConfig.model_validate(document))
    assert unsigned.inputs[0].secret is None
    assert "does not take signed requests" in (refusal(signed_request(http_date(NOW)), config=unsigned) or "")


def test_the_skew_bound_holds_both_ways_to_the_second() -> None:
    edge = MAX_DATE_SKEW
    for offset in (edge, -edge):
        assert refusal(signed_request(http_date(NOW + offset))) is None
    late = refusal(signed_request(http_date(NOW - edge - timedelta(seconds=1))))
    early = refusal(signed_request(http_date(NOW + edge + timedelta(seconds=1))))
    assert late is not None and "301 s behind" in late and "within 300 s" in late
    assert early is not None and "301 s ahead of" in early


def test_a_captured_signed_request_replayed_after_the_skew_is_refused() -> None:
    captured = signed_request(http_date(NOW))
    assert refusal(captured) is None
    assert "behind" in (refusal(captured, NOW + MAX_DATE_SKEW + timedelta(seconds=1)) or "")
    # Re-dating the capture breaks its signature
    redated = signed_request(http_date(NOW + timedelta(hours=1)), captured.headers["x-mp-signature"])
    assert "does not match" in (refusal(redated, NOW + timedelta(hours=1)) or "")


def test_non_ascii_signatures_tokens_and_basic_credentials_are_refused_not_raised() -> None:
    assert "does not match" in (refusal(signed_request(http_date(NOW), "\u00e9" * 64)) or "")
    signer, versions = TokenSigner(b"k" * MIN_KEY_BYTES), {"demo-client": 1}
    token = signer.issue("demo-client", 1, (credential_grant(Api.PROFILE, Role.READ_ONLY),), 0)
    assert signer.verify(token, 1, versions).client_id == "demo-client"
    signed, accent = token.rpartition(".")[0], "\u00e9"
    for forged in (f"{signed}.{accent * 43}", f"{accent * 2}.{'ab' * 32}", "\u00ff", f"{signed}.\udcff"):
        with pytest.raises(Unauthorized):
            signer.verify(forged, 1, versions)
    verifier = InputKeys()(STORED)
    for header in ("Basic \u00e9\u00e9\u00e9\u00e9", "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()):
        assert parse_basic_auth(header) is None
        with pytest.raises(Unauthorized):
            authenticate(CONFIG, header)
        with pytest.raises(Unauthorized):
            asyncio.run(verify_basic(verifier, header))
    for key in ("demo-key", "d\u00e9mo"):
        latin = "Basic " + base64.b64encode(f"{key}:s\u00e9cret".encode()).decode()
        with pytest.raises(Forbidden):  # well-formed UTF-8 credentials that match nothing: 403
            authenticate(CONFIG, latin)
        with pytest.raises(Forbidden):
            asyncio.run(verify_basic(verifier, latin))


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "application/json; charset=utf-8", "text/plain;charset=UTF-8", "TEXT/PLAIN"],
)
def test_json_and_the_web_sdks_text_plain_are_accepted(content_type: str | None) -> None:
    check_media_type(content_type)  # raises nothing


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", "application/jsonx"],
)
def test_other_content_types_are_415_naming_the_accepted_ones(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        check_media_type(content_type)
    reply = answer_of(refused.value)
    assert reply.status_code == 415
    error = json.loads(reply.body)["errors"][0]
    assert error["code"] == "UNSUPPORTED_MEDIA_TYPE" and "application/json or text/plain" in error["message"]


def through_envelope(messages: list[dict[str, Any]]) -> tuple[dict[str, Any], bytes]:
    sent: list[dict[str, Any]] = []

    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    async def collect(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(ErrorEnvelope(app)({"type": "http"}, None, collect))
    return sent[0], b"".join(m.get("body", b"") for m in sent[1:])


def test_serves_backpressure_429_becomes_the_api_shape_keeping_retry_after() -> None:
    # The exact messages Serve's proxy and a replica's direct ingress send for a request past max_queued_requests
    plain = convert_object_to_asgi_messages(
        "Request dropped due to backpressure", status_code=429, extra_headers=retry_after_headers(1)
    )
    start, body = through_envelope(plain)
    headers = dict(start["headers"])
    assert start["status"] == 429 and headers[b"retry-after"] == b"1"
    assert headers[b"content-type"] == b"application/json" and int(headers[b"content-length"]) == len(body)
    assert json.loads(body) == {
        "errors": [{"code": "TOO_MANY_REQUESTS", "message": "Request dropped due to backpressure"}]
    }


def test_a_plain_500_loses_its_text_and_json_and_successes_pass_untouched() -> None:
    start, body = through_envelope(convert_object_to_asgi_messages("KeyError: 'secret-token'", status_code=500))
    assert start["status"] == 500 and b"secret" not in body
    assert json.loads(body)["errors"][0]["code"] == "INTERNAL_ERROR"
    ours = convert_object_to_asgi_messages({"errors": [{"code": "X", "message": "y"}]}, status_code=400)
    assert through_envelope(ours)[1] == b'{"errors":[{"code":"X","message":"y"}]}'
    assert through_envelope(convert_object_to_asgi_messages("ok", status_code=200))[1] == b"ok"


def test_cluster_configs_install_the_error_middleware_on_every_node() -> None:
    root = Path(__file__).resolve().parents[2]
    service = yaml.safe_load((root / "configs" / "kuberay-rayservice.yaml").read_text())
    spec = service["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    containers = [c for group in groups for c in group["template"]["spec"]["containers"]]
    assert len(containers) == 3
    for container in containers:
        assert {"name": "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "value": ERROR_MIDDLEWARES} in container["env"]
    assert (
        f"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH={ERROR_MIDDLEWARES}"
        in (root / "configs" / "ray-cluster.sh").read_text()
    )
    assert ingress_middlewares()[0].cls is ErrorEnvelope  # the path names a callable Serve can import


def test_a_bug_is_a_logged_500_without_its_text_and_a_client_disconnect_is_no_bug(caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="cdp_actors.serve_apps"):
        reply = internal_error(KeyError("token=s3cret"), "POST /v2/events")
        gone = internal_error(ClientDisconnect(), "POST /v2/events")
    assert reply.status_code == 500 and b"s3cret" not in reply.body
    assert json.loads(reply.body)["errors"][0]["code"] == "INTERNAL_ERROR"
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [KeyError]  # the bug's traceback, once
    assert gone.status_code == 499 and not gone.body


def asgi_call(app: Any, method: str, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request straight through an ASGI app: status, headers, body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "root_path": "",
    }
    with contextlib.suppress(RuntimeError):  # Starlette re-raises a bug after answering it, for the server's log
        asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_the_fastapi_apps_answer_unknown_paths_wrong_methods_and_bugs_in_the_api_shape() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/status")
    async def status() -> dict[str, str]:
        raise RuntimeError("password=hunter2")

    missing, wrong, bug = (
        asgi_call(app, "GET", "/nope"),
        asgi_call(app, "POST", "/status"),
        asgi_call(app, "GET", "/status"),
    )
    assert (missing[0], json.loads(missing[2])) == (
        404,
        {"errors": [{"code": "NOT_FOUND", "message": "No such endpoint: GET /nope"}]},
    )
    assert wrong[0] == 405 and wrong[1][b"allow"] == b"GET" and b"METHOD_NOT_ALLOWED" in wrong[2]
    assert bug[0] == 500 and b"hunter2" not in bug[2] and json.loads(bug[2])["errors"][0]["code"] == "INTERNAL_ERROR"
