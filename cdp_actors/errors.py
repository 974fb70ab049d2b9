"""Why a request cannot be done, in the domain's words: raised by plain logic, actors and the HTTP faces alike.

No status codes and no Ray here: `serve_apps/errors.py` maps each class to its HTTP answer in one table. A new
refusal is a new class here and one row there. `message` is what the client reads, so it names no internals.
"""

from __future__ import annotations

from typing import Any


class RequestFailed(Exception):
    """A request that cannot be done as asked, through no bug of ours."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray pickles an actor's exception for its caller: rebuild from the fields, whatever __init__ takes
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(kind: type[RequestFailed], args: tuple[Any, ...], fields: dict[str, Any]) -> RequestFailed:
    error = kind.__new__(kind, *args)
    error.args = args
    error.__dict__.update(fields)
    return error


class BadRequest(RequestFailed, ValueError):
    """The request's own content is wrong; `path` is the JSON path of the field at fault, e.g.
    `$.user_identities.email`, and the message names it as mParticle does: `... - at `$.path``."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(f"{message} - at `{path}`" if path else message)
        self.path = path


class Unauthorized(RequestFailed):
    """No credentials, or credentials that do not hold (a stale signature, an expired token)."""


class Forbidden(RequestFailed):
    """Valid-looking credentials that do not grant this request."""


class NotFound(RequestFailed):
    """What the request names (a profile, a workspace, an identity) does not exist."""


class Gone(RequestFailed):
    """What the request names existed and is no longer served (a DSR results URL past its 7 days)."""


class ImmutableIdentity(BadRequest):
    """A change to an identity the workspace declares immutable."""

    def __init__(self, identity_type: str) -> None:
        super().__init__(f"{identity_type} is an immutable identity.")
        self.identity_type = identity_type


class Conflict(RequestFailed):
    """The request was made against a state that has changed since (a configuration version that is no longer
    the current one): read the current state, then decide again."""


class TooLarge(RequestFailed):
    """The request, or a part of it, exceeds a size limit."""


class Overloaded(RequestFailed):
    """We are behind: the request was not taken; the same request succeeds once we catch up."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(Overloaded):
    """The caller sent more requests than a limit allows (mParticle's Platform API rate limits): the same request
    succeeds after `retry_after_s` seconds. `exceeded` names the limit as mParticle's `X-mp-rate-limit-exceeded`
    header does: `org`, `account`, `app`, `feed`, `workspace`, ... (a limit on the caller, not on us being behind)."""

    def __init__(self, message: str, retry_after_s: int, exceeded: str) -> None:
        super().__init__(message, retry_after_s)
        self.exceeded = exceeded


class Unavailable(RequestFailed):
    """A part of the platform could not do its share (restarting, storage refusing writes); nothing was stored,
    and the same request may succeed after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
