"""Bearer tokens: what they grant, expiry, tampering of any character, revocation by key version, audience."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_actors.access.roles import Api, Grant, Role
from cdp_actors.access.tokens import (
    MAX_CLOCK_SKEW_S,
    PLATFORM_API_AUDIENCE,
    TOKEN_TTL_S,
    TokenSigner,
    bearer_of,
    check_token_request,
    derive_key,
    token_response,
)
from cdp_actors.errors import BadRequest, Unauthorized

KEY = derive_key(b"k" * 32, "tokens")
NOW = 1_800_000_000
GRANTS = (Grant(Api.PLATFORM, Role.ADMIN), Grant(Api.PROFILE, Role.READ_ONLY, frozenset({1, 7})))
VERSIONS = {"demo-admin": 3}


def issued(now: int = NOW, **kwargs) -> str:
    return TokenSigner(KEY).issue("demo-admin", 3, GRANTS, now, **kwargs)


def test_a_token_names_its_client_and_grants():
    token = TokenSigner(KEY).verify(issued(), NOW + 1, VERSIONS)
    assert token.client_id == "demo-admin"
    assert token.grants == GRANTS
    assert token.expires_s == NOW + TOKEN_TTL_S


def test_it_is_a_jwt_for_the_platform_api_audience_valid_eight_hours():
    header, payload, _ = issued().split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["aud"] == PLATFORM_API_AUDIENCE == "https://api.mparticle.com"
    assert claims["exp"] - claims["iat"] == TOKEN_TTL_S == 28_800
    assert claims["scope"] == "platform:admin profile:read_only:1.7"
    assert token_response("t") == {"access_token": "t", "expires_in": 28_800, "token_type": "Bearer"}


def test_a_token_expires():
    signer = TokenSigner(KEY)
    signer.verify(issued(), NOW + TOKEN_TTL_S - 1, VERSIONS)
    with pytest.raises(Unauthorized):
        signer.verify(issued(), NOW + TOKEN_TTL_S, VERSIONS)
    with pytest.raises(Unauthorized):
        signer.verify(issued(ttl_s=60), NOW + 60, VERSIONS)


def test_a_token_from_the_future_is_refused_beyond_the_skew():
    signer = TokenSigner(KEY)
    signer.verify(issued(NOW + MAX_CLOCK_SKEW_S), NOW, VERSIONS)
    with pytest.raises(Unauthorized):
        signer.verify(issued(NOW + MAX_CLOCK_SKEW_S + 1), NOW, VERSIONS)


def test_changing_any_character_breaks_the_token():
    token, signer = issued(), TokenSigner(KEY)
    for position, character in enumerate(token):
        for replacement in {"A", "b", "_", "."} - {character}:
            with pytest.raises(Unauthorized):
                signer.verify(token[:position] + replacement + token[position + 1 :], NOW, VERSIONS)


def test_a_forged_payload_with_its_own_or_no_signature_is_refused():
    header, payload, signature = issued().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "platform:admin"
    claims["exp"] += 10 * TOKEN_TTL_S
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    for token in (f"{header}.{forged}.{signature}", f"{none_header}.{payload}.", f"{header}.{payload}."):
        with pytest.raises(Unauthorized):
            TokenSigner(KEY).verify(token, NOW, VERSIONS)


def test_another_server_key_does_not_verify():
    with pytest.raises(Unauthorized):
        TokenSigner(derive_key(b"k" * 32, "sessions")).verify(issued(), NOW, VERSIONS)


def test_revoking_or_deleting_the_client_invalidates_its_tokens():
    token, signer = issued(), TokenSigner(KEY)
    for versions in ({"demo-admin": 4}, {}, {"other": 3}):
        with pytest.raises(Unauthorized):
            signer.verify(token, NOW, versions)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_refused_as_unauthorized_and_nothing_else(text):
    with pytest.raises(Unauthorized):
        TokenSigner(KEY).verify(text, NOW, VERSIONS)


def test_the_server_key_shows_nowhere():
    signer = TokenSigner(KEY)
    assert KEY.hex() not in repr(signer) and repr(KEY) not in repr(signer)
    with pytest.raises(ValueError):
        TokenSigner(b"short")
    with pytest.raises(ValueError):
        derive_key(b"short", "tokens")


def test_bearer_header():
    assert bearer_of("Bearer abc ") == "abc"
    assert bearer_of("bearer abc") == "abc"
    for header in (None, "", "Basic abc", "Bearer ", "Bearer"):
        with pytest.raises(Unauthorized):
            bearer_of(header)


def test_token_request_fields():
    check_token_request("client_credentials", "https://api.mparticle.com")
    check_token_request("client_credentials", "https://api.mparticle.com/")
    check_token_request("client_credentials", None)
    with pytest.raises(BadRequest) as refused:
        check_token_request("password", PLATFORM_API_AUDIENCE)
    assert refused.value.path == "$.grant_type"
    with pytest.raises(BadRequest) as refused:
        check_token_request("client_credentials", "https://evil.example.com")
    assert refused.value.path == "$.audience"


def test_only_our_exact_header_is_accepted_even_when_the_signature_holds():
    _, payload, _ = issued().split(".")
    signer = TokenSigner(KEY)
    for header in (
        b'{"alg":"none","typ":"JWT"}',
        b'{"typ":"JWT","alg":"HS256"}',
        b'{"alg":"HS256","typ":"JWT","kid":"1"}',
    ):
        encoded = base64.urlsafe_b64encode(header).rstrip(b"=").decode()
        signed = f"{encoded}.{payload}"
        with pytest.raises(Unauthorized):
            signer.verify(f"{signed}.{signer._signature(signed)}", NOW, VERSIONS)
