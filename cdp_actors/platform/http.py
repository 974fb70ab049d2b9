"""What every Platform API answer shares: the `data`/`errors` envelope, `?accountId=`, `If-Match`, CORS.

- Envelope (https://docs.mparticle.com/developers/apis/platform/overview/, "Return Data"): entities are returned as
  an array in `data`; errors as an array in `errors` (our one error table, serve_apps/errors.py, writes
  `{"errors": [{"code", "message"}]}` for every refusal). A success carries `"errors": []` so a client can test the
  array either way.
- `?accountId=` is required on every route. Missing or not an integer: 400 naming it (the overview says a missing one
  is a 401; a 401 would tell a client whose token is good to fetch another, so we name the parameter instead).
  Another account than ours: 404, as the overview says of entities outside the account's scope.
- `If-Match: <version>` (optional) makes a change conditional on the configuration's version: a stale one is a 409
  and nothing is stored. Every answer carries the version it was made from as `ETag`.
- CORS: the overview allows AJAX requests from any origin, so `Access-Control-Allow-Origin: *`, and never
  `Access-Control-Allow-Credentials`: a browser page on another origin must send a bearer token it holds itself; it
  can never ride on a console session cookie (those are SameSite=Strict too). A preflight (`OPTIONS` with
  `Access-Control-Request-Method`) is answered without credentials, as browsers send none with it.
"""

from __future__ import annotations

from typing import Any

from cdp_actors.config import Workspace
from cdp_actors.errors import BadRequest, NotFound

ACCOUNT_PARAMETER = "accountId"
ALLOWED_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "If-Match")
EXPOSED_HEADERS = ("ETag", "Retry-After", "X-mp-rate-limit-percentage-used", "X-mp-rate-limit-exceeded")
"""Headers a cross-origin page may read: the version, and what tells it to slow down."""
PREFLIGHT_MAX_AGE_S = 600
"""Seconds a browser may reuse a preflight answer: Chrome caps it at 7,200, Firefox at 86,400; ten minutes keeps a
console page from preflighting every call while a change to these headers reaches browsers within minutes."""


def envelope(data: list[Any]) -> dict[str, Any]:
    return {"data": data, "errors": []}


def check_account(given: str | None, workspace: Workspace) -> None:
    """`?accountId=` names our account, or the request is refused (400 missing or malformed, 404 another)."""
    if given is None or not given.strip():
        raise BadRequest("accountId is required on every Platform API request", ACCOUNT_PARAMETER)
    try:
        account = int(given)
    except ValueError:
        raise BadRequest("accountId must be an integer", ACCOUNT_PARAMETER) from None
    if account != workspace.account_id:
        raise NotFound(f"No account {account}.")


def expected_version(if_match: str | None) -> int | None:
    """The configuration version an `If-Match` header names (`"12"`, `12`, `W/"12"`), or None without one."""
    if if_match is None or not if_match.strip() or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise BadRequest("If-Match must be the configuration version an ETag gave", "If-Match")
    return int(text)


def etag(version: int) -> str:
    return f'"{version}"'


def cors_headers(origin: str | None) -> dict[str, str]:
    """Headers of an answer to a cross-origin request (none for a same-origin or non-browser one)."""
    if not origin:
        return {}
    return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS)}


def is_preflight(method: str, headers: Any) -> bool:
    return method == "OPTIONS" and "access-control-request-method" in headers


def preflight_headers(origin: str | None, requested_method: str | None) -> dict[str, str]:
    """The answer to a preflight. A method we do not serve gets no Allow-Methods naming it: the browser refuses
    the actual request itself."""
    allowed = requested_method is not None and requested_method.upper() in ALLOWED_METHODS
    headers = {"Access-Control-Allow-Origin": "*", "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
               "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS)}  # fmt: skip
    if allowed:
        headers["Access-Control-Allow-Methods"] = ", ".join(ALLOWED_METHODS)
    return headers if origin else {}
