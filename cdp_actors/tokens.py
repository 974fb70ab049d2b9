"""Profile API access tokens: stateless, signed with the client's own secret, with an expiry.

`<base64url(client_id|expires_ms)>.<hex HMAC-SHA256>`: any replica verifies a token without shared
state, and rotating a client's secret revokes every token issued to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cdp_actors.config import ApiClient


def _sign(client: ApiClient, payload: str) -> str:
    return hmac.new(client.client_secret.get_secret_value().encode(), payload.encode(), hashlib.sha256).hexdigest()


def issue_token(client: ApiClient, now_ms: int) -> str:
    payload = base64.urlsafe_b64encode(f"{client.client_id}|{now_ms + client.token_ttl_s * 1000}".encode()).decode()
    return f"{payload}.{_sign(client, payload)}"


def verify_token(clients: list[ApiClient], token: str, now_ms: int) -> ApiClient | None:
    """The client a valid, unexpired token was issued to; None otherwise."""
    payload, _, signature = token.partition(".")
    try:
        client_id, _, expires = base64.urlsafe_b64decode(payload.encode()).decode().rpartition("|")
        expires_ms = int(expires)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    client = next((c for c in clients if hmac.compare_digest(c.client_id.encode(), client_id.encode())), None)
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str, and a token is whatever a client sends.
    signature_ok = client is not None and hmac.compare_digest(
        _sign(client, payload).encode(), signature.encode("utf-8", "replace")
    )
    if not signature_ok or expires_ms <= now_ms:
        return None
    return client
