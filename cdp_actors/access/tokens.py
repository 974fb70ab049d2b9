"""OAuth client-credentials bearer tokens for the Platform API (and the Profile API, which shares the endpoint).

`POST /oauth/token` with `{"client_id", "client_secret", "audience": "https://api.mparticle.com", "grant_type":
"client_credentials"}` answers `{"access_token", "expires_in": 28800, "token_type": "Bearer"}`, as mParticle's
(https://docs.mparticle.com/developers/apis/platform/overview/). The token is a JWT (HS256), as mParticle's is,
so a client that peeks into it finds what it expects: `sub` (client id), `aud`, `iat`, `exp`, `scope`
(`platform:admin profile:read_only:1.2`, one `api:role[:workspace.workspace]` per grant) and `kv`, the client's
key version.

Unlike `cdp_actors/tokens.py` (the Profile API's first tokens, signed with the client's own secret) the signature
is an HMAC with a server key: client secrets are stored hashed (keys.py), so there is nothing in clear to sign
with, and the server key lets any replica verify without a lookup of the secret. Revocation: every client has a
key version in the configuration; revoking or rotating a client raises it (deleting removes the client), and a
token whose `kv` is not the client's current version is refused. Tampering with any byte breaks the HMAC; the
header must be exactly ours, so `alg: none` and algorithm confusion cannot arise.

Wiring (next session): the server key comes from the secret source of issue 15 point 6 (environment, or a file
outside the data directory), through `derive_key(master, "tokens")`; every replica builds one `TokenSigner`.
`/oauth/token` validates the body with `check_token_request`, verifies the client's secret against its stored
hash (`keys.verify_secret`: a cache miss every time, ~50 ms, so it runs in a thread and is rate-limited by issue
15 point 8), then answers `token_response(signer.issue(...))`. Every `/platform/*`, `/cdp/*` and `/userprofile/*`
request with `Authorization: Bearer ...` calls `signer.verify(token, now_s, key_versions)` with the current
configuration's `{client_id: key_version}`: one HMAC-SHA256 and a JSON decode, ~10 µs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from cdp_actors.access.roles import Api, Grant, Role
from cdp_actors.errors import BadRequest, Unauthorized

PLATFORM_API_AUDIENCE = "https://api.mparticle.com"
"""The `audience` mParticle's token endpoint expects (Platform API overview, "Prerequisites")."""
GRANT_TYPE = "client_credentials"
TOKEN_TTL_S = 8 * 3600
"""mParticle's tokens are valid 8 hours (`expires_in: 28800`); clients cache them that long."""
MAX_CLOCK_SKEW_S = 60
"""A token issued up to this far in our future is still accepted: replicas' clocks differ by milliseconds on one
machine, by NTP's tens of milliseconds on a cluster; a minute leaves room without making a forged `iat` useful
(the HMAC stops forgery anyway)."""
MIN_KEY_BYTES = 32
"""A server key shorter than SHA-256's output would weaken the HMAC."""
MAX_TOKEN_CHARS = 4096
"""A token we issue is ~300 characters; anything much longer is not ours and is refused before any work."""

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
_REFUSED = "Send a valid, unexpired Bearer token from POST /oauth/token."


def derive_key(master: bytes, purpose: str) -> bytes:
    """A key for one purpose ("tokens", "sessions") from the server's master key: a leak of one use's key (or a
    collision of uses) does not give away another's."""
    if len(master) < MIN_KEY_BYTES:
        raise ValueError(f"The server key needs at least {MIN_KEY_BYTES} bytes")
    return hmac.new(master, f"cdp-access:{purpose}".encode(), hashlib.sha256).digest()


class Claims(msgspec.Struct, forbid_unknown_fields=True):
    sub: str
    aud: str
    iat: int
    exp: int
    scope: str
    kv: int


_decode_claims = msgspec.json.Decoder(Claims)


@dataclass(frozen=True)
class BearerToken:
    """What a valid token says: who (the client id) and what it may do."""

    client_id: str
    grants: tuple[Grant, ...]
    expires_s: int


def scope_of(grants: tuple[Grant, ...]) -> str:
    parts = []
    for grant in grants:
        workspaces = ".".join(str(w) for w in sorted(grant.workspaces))
        parts.append(f"{grant.scope}:{workspaces}" if workspaces else grant.scope)
    return " ".join(parts)


def grants_of(scope: str) -> tuple[Grant, ...]:
    grants = []
    for part in scope.split():
        api, role, workspaces = (part.split(":") + [""])[:3]
        grants.append(Grant(Api(api), Role(role), frozenset(int(w) for w in workspaces.split(".") if w)))
    return tuple(grants)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies bearer tokens with one server key; holds no secret of any client."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"A token key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "TokenSigner(key='***')"

    def _signature(self, signed: str) -> str:
        return _b64(hmac.new(self._key, signed.encode(), hashlib.sha256).digest())

    def issue(self, client_id: str, key_version: int, grants: tuple[Grant, ...], now_s: int,
              ttl_s: int = TOKEN_TTL_S) -> str:  # fmt: skip
        claims = Claims(sub=client_id, aud=PLATFORM_API_AUDIENCE, iat=now_s, exp=now_s + ttl_s,
                        scope=scope_of(grants), kv=key_version)  # fmt: skip
        signed = f"{_HEADER}.{_b64(msgspec.json.encode(claims))}"
        return f"{signed}.{self._signature(signed)}"

    def verify(self, token: str, now_s: int, key_versions: Mapping[str, int]) -> BearerToken:
        """The token's client and grants; Unauthorized if it is malformed, tampered with, expired, for another
        audience, or from a client that was revoked, rotated or deleted since (`key_versions`: client id →
        current key version)."""
        claims = self._authentic_claims(token)
        if claims.aud != PLATFORM_API_AUDIENCE or claims.exp <= now_s or claims.iat > now_s + MAX_CLOCK_SKEW_S:
            raise Unauthorized(_REFUSED)
        if key_versions.get(claims.sub) != claims.kv:
            raise Unauthorized(_REFUSED)
        try:
            grants = grants_of(claims.scope)
        except (ValueError, BadRequest):  # we sign only scopes we wrote: an old version's role name
            raise Unauthorized(_REFUSED) from None
        return BearerToken(claims.sub, grants, claims.exp)

    def _authentic_claims(self, token: str) -> Claims:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized(_REFUSED)
        header, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        expected = self._signature(f"{header}.{payload}")
        # Bytes, not str: compare_digest raises TypeError on a non-ASCII str, and a token is whatever a client sends
        authentic = hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
        if not authentic or header != _HEADER:
            raise Unauthorized(_REFUSED)
        try:
            return _decode_claims.decode(_unb64(payload))
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise Unauthorized(_REFUSED) from None


def bearer_of(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer ...` header; Unauthorized without one."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(_REFUSED)
    return token.strip()


def check_token_request(grant_type: str | None, audience: str | None) -> None:
    """BadRequest naming the field unless the request is a client-credentials grant for the Platform API. A
    missing `audience` is accepted (our first Profile API clients sent none); a different one is not."""
    if grant_type != GRANT_TYPE:
        raise BadRequest(f"grant_type must be {GRANT_TYPE}", "$.grant_type")
    if audience is not None and audience.rstrip("/") != PLATFORM_API_AUDIENCE:
        raise BadRequest(f"audience must be {PLATFORM_API_AUDIENCE}", "$.audience")


def token_response(access_token: str, ttl_s: int = TOKEN_TTL_S) -> dict[str, object]:
    """The body of `POST /oauth/token`'s 200, as mParticle's."""
    return {"access_token": access_token, "expires_in": ttl_s, "token_type": "Bearer"}
