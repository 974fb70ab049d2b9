"""Credentials out of error texts, before they reach an alert or a log.

An HTTP client error's text can carry the request URL (aiohttp's `InvalidURL`, `ClientResponseError`), and some
partners take their credential in the URL (Facebook's `access_token`); an exception raised while preparing a
batch can carry anything. `redact` masks, in every URL of a text, the user info (`user:password@`), every query
value and the fragment (all of them, not only those named like a credential: no list of names is complete), and
any literal secret the caller knows (a request's header values). `describe` is what an alert or a log line may
say of an exception: its type and the first line of its text, redacted and cut short.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"
MAX_DETAIL_CHARS = 300
"""Characters of an exception's text kept in an alert or a log line: enough for aiohttp's longest messages (about
200), and a bound on what of a batch an exception message can carry into an alert."""
MIN_SECRET_CHARS = 4
"""Shorter literal values are not masked: they are no credential, and masking "1" would garble the text."""
PUBLIC_HEADERS = frozenset({"accept", "content-encoding", "content-length", "content-type", "user-agent"})
"""Request headers whose values are never credentials (and appear in error texts, e.g. a content type)."""
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_TRAILING_PUNCTUATION = ".,;:!)]}"


def redact_url(url: str) -> str:
    """`url` with its user info, each query value and its fragment masked; scheme, host, port and path kept."""
    start = url.index("://") + 3
    rest, hashed, _ = url[start:].partition("#")
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, authority_end)
    if at >= 0:
        rest = MASK + rest[at:]
    path, asked, query = rest.partition("?")
    if asked:
        query = "&".join(_masked_parameter(parameter) for parameter in query.split("&"))
    return url[:start] + path + asked + query + (f"#{MASK}" if hashed else "")


def _masked_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    if equals:
        return f"{name}={MASK}"
    return MASK if parameter else parameter  # a bare `?token` is all value


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every URL redacted (`redact_url`) and every literal secret of `secrets` masked."""
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _URL.sub(_redacted_match, text)


def _redacted_match(found: re.Match[str]) -> str:
    url = found.group()
    kept = url.rstrip(_TRAILING_PUNCTUATION)  # "see http://h/?a=b." : the full stop is the text's, not the URL's
    return redact_url(kept) + url[len(kept) :]


def request_secrets(url: str, headers: dict[str, str]) -> list[str]:
    """The literal credentials a request may carry: its header values (but public ones) and its query values,
    as sent and percent-decoded (an error text may show either)."""
    found = [value for name, value in headers.items() if name.lower() not in PUBLIC_HEADERS]
    try:
        query = urlsplit(url).query
    except ValueError:  # not a URL urlsplit takes (an invalid IPv6 host): `redact` still masks its query
        query = ""
    for parameter in query.split("&"):
        value = parameter.partition("=")[2]
        found += [value, unquote(value)]
    return found


def describe(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """What an alert or a log may say of `error`: its type and the first line of its text, redacted, at most
    `MAX_DETAIL_CHARS` characters of it."""
    try:
        text = str(error)
    except Exception:  # a broken __str__ (aiohttp's ClientResponseError without request info) must not raise here
        text = ""
    first_line = text.strip().partition("\n")[0]
    detail = redact(first_line, secrets)
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS] + "…"
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def code_location(error: BaseException) -> str:
    """Where `error` was raised, for a log line: the traceback's frames as file, line and function only (neither
    the message nor the source lines, which may hold data)."""
    frames = traceback.extract_tb(error.__traceback__)
    return " <- ".join(f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in reversed(frames))
