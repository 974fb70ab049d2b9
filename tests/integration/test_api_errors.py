"""Every refusal over real HTTP is the API's `{"errors": [{"code", "message"}]}`, with the right status: signed
IDSync requests out of the Date skew, non-ASCII credentials, unknown paths, content types, oversized bulk."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import requests

from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import DEMO_AUTH, Api, token_of

MAX_BATCH_BYTES = 4096  # small, so a too-large batch fits in one request
T0 = 1_700_000_000_000
IDENTIFY = {"environment": "production", "known_identities": {"email": "signed@x.io"}}


def config(receiver) -> Any:
    """This module's own config, so its tests share one platform (tests/conftest.py) and no other's."""
    return demo_config(receiver.url, limits={"max_batch_bytes": MAX_BATCH_BYTES})


def error_of(reply: requests.Response, status: int) -> dict[str, str]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    errors = reply.json()["errors"]
    assert all(set(e) >= {"code", "message"} for e in errors), errors
    return errors[0]


def signed_identify(api: Api, date: str, signature: str | bytes | None = None) -> requests.Response:
    body = json.dumps(IDENTIFY).encode()
    if signature is None:
        signature = hmac.new(b"demo-secret", f"POST\n{date}\n/v1/identify".encode() + body, hashlib.sha256).hexdigest()
    headers = {"x-mp-key": "demo-key", "Date": date, "x-mp-signature": signature, "Content-Type": "application/json"}
    return requests.post(api.base + "/v1/identify", data=body, headers=headers, timeout=30)


def test_signed_idsync_requests_must_carry_a_current_date_and_an_ascii_signature(platform, receiver) -> None:
    api = platform(config(receiver))
    now = datetime.now(timezone.utc)
    assert signed_identify(api, format_datetime(now, usegmt=True)).status_code == 200  # iOS's RFC 1123 form
    stale = error_of(signed_identify(api, format_datetime(now - timedelta(minutes=10), usegmt=True)), 401)
    assert stale["code"] == "UNAUTHORIZED" and "behind the server's clock" in stale["message"]
    assert "HTTP-date" in error_of(signed_identify(api, "not a date"), 401)["message"]
    accented = error_of(signed_identify(api, format_datetime(now, usegmt=True), "é".encode() * 32), 401)
    assert "does not match" in accented["message"]


def test_non_ascii_bearer_tokens_and_basic_credentials_are_401(platform, receiver) -> None:
    api = platform(config(receiver))
    url = f"{api.base}/userprofile/v1/1/1/1/1?fields=user_identities"
    issued = api.post(
        "/oauth/token", {"client_id": "demo-client", "client_secret": "demo-client-secret"}, auth=None
    ).json()["access_token"]
    payload = issued.partition(".")[0].encode()  # a valid client and expiry: the signature is what gets compared
    for token in ("é".encode() * 20, payload + b"." + "é".encode() * 32):
        reply = requests.get(url, headers={"Authorization": b"Bearer " + token}, timeout=30)
        assert error_of(reply, 401)["code"] == "UNAUTHORIZED"
    reply = requests.post(
        api.base + "/v2/events",
        data=json.dumps(batch("x")),
        headers={"Authorization": b"Basic " + "é".encode() * 8},
        timeout=30,
    )
    assert error_of(reply, 401)["code"] == "UNAUTHORIZED"


def test_unknown_paths_and_methods_are_the_api_shape(platform, receiver) -> None:
    api = platform(config(receiver))
    assert error_of(api.get("/cdp/nothing-here"), 404) == {
        "code": "NOT_FOUND",
        "message": "No such endpoint: GET /cdp/nothing-here",
    }
    assert error_of(api.post("/cdp/status", {}), 405)["code"] == "METHOD_NOT_ALLOWED"
    profile_client = {"Authorization": "Bearer " + token_of(api.base, "demo-client", "demo-client-secret")}
    not_a_number = requests.get(
        api.base + "/userprofile/v1/1/1/1/not-a-number", params={"fields": "x"}, headers=profile_client, timeout=30
    )
    assert error_of(not_a_number, 400)["code"] == "BAD_REQUEST"  # authenticated first: anonymous is a 401
    for path in ("/v2/foo/events", "/v2/events/extra", "/v2/x/bulkevents"):
        assert error_of(api.post(path, batch("nowhere", [custom("e", T0)])), 404)["code"] == "NOT_FOUND", path
    assert api.accepted_batches() == 0  # shared platform: no test of this module before this one sent a valid batch


def test_text_plain_is_accepted_other_content_types_are_415_and_store_nothing(platform, receiver) -> None:
    api = platform(config(receiver))
    before = api.accepted_batches()
    body = json.dumps(batch("web", [custom("e", T0)])).encode()
    web_sdk = {"Authorization": DEMO_AUTH, "Content-Type": "text/plain;charset=UTF-8"}
    assert requests.post(api.base + "/v2/events", data=body, headers=web_sdk, timeout=30).status_code == 202
    assert api.accepted_batches() == before + 1
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"):
        headers = {"Authorization": DEMO_AUTH, "Content-Type": content_type}
        refused = error_of(requests.post(api.base + "/v2/events", data=body, headers=headers, timeout=30), 415)
        assert refused["code"] == "UNSUPPORTED_MEDIA_TYPE" and "application/json or text/plain" in refused["message"]
        refused_identify = {"environment": "production", "known_identities": {"email": "refused@x.io"}}
        identify = requests.post(
            api.base + "/v1/identify", data=json.dumps(refused_identify), headers=headers, timeout=30
        )
        assert error_of(identify, 415)["code"] == "UNSUPPORTED_MEDIA_TYPE"
        token = requests.post(
            api.base + "/oauth/token", data="client_id=demo-client", timeout=30, headers={"Content-Type": content_type}
        )
        assert error_of(token, 415)["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert api.accepted_batches() == before + 1
    assert api.get("/cdp/users/search", identity_type="email", value="refused@x.io").json()["users"] == []


def test_a_bulk_request_of_only_too_large_batches_is_413_and_a_mix_with_invalid_ones_400(platform, receiver) -> None:
    api = platform(config(receiver))
    before = api.accepted_batches()
    huge = batch("huge", [custom("e", T0, blob="x" * MAX_BATCH_BYTES)])
    too_large = api.post("/v2/bulkevents", [huge, huge])
    assert error_of(too_large, 413)["code"] == "REQUEST_TOO_LARGE"
    assert [e["index"] for e in too_large.json()["errors"]] == [0, 1]
    mixed = api.post("/v2/bulkevents", [huge, {"environment": "nowhere"}])
    assert error_of(mixed, 400)["code"] == "REQUEST_TOO_LARGE"  # each batch's own reason, by index
    assert [(e["index"], e["code"]) for e in mixed.json()["errors"]] == [(0, "REQUEST_TOO_LARGE"), (1, "BAD_REQUEST")]
    assert error_of(api.post("/v2/events", huge), 413)["code"] == "REQUEST_TOO_LARGE"
    assert api.accepted_batches() == before
