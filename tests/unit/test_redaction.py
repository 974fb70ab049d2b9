"""Credentials out of error texts: URLs' query values, user info and fragments, and known literal secrets."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from cdp_actors.redaction import MAX_DETAIL_CHARS, describe, redact, redact_url, request_secrets
from tests.support import free_port


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (
            "https://graph.facebook.com/v19.0/123/events?access_token=SECRET-TOKEN-123",
            "https://graph.facebook.com/v19.0/123/events?access_token=***",
        ),
        ("http://user:p%40ss@10.0.0.1:8080/hook?a=1&b=&c", "http://***@10.0.0.1:8080/hook?a=***&b=***&***"),
        ("https://h/cb#access_token=abc", "https://h/cb#***"),
        ("https://h/path/with/no/query", "https://h/path/with/no/query"),
        ("http://[::1/x?access_token=S", "http://[::1/x?access_token=***"),  # an invalid URL is redacted too
        ("http://h/a@b?k=v", "http://h/a@b?k=***"),  # an @ in the path is no user info
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_every_url_in_a_text_is_redacted() -> None:
    text = (
        "400, message='Bad Request', url='http://u:pw@a.io/x?access_token=T1&appsecret_proof=P1' "
        "then URL('https://b.io/y?api_key=K2') and http://c.io/z?sig=S3, done"
    )
    redacted = redact(text)
    for secret in ("pw", "T1", "P1", "K2", "S3"):
        assert secret not in redacted
    assert redacted == (
        "400, message='Bad Request', url='http://***@a.io/x?access_token=***&appsecret_proof=***' "
        "then URL('https://b.io/y?api_key=***') and http://c.io/z?sig=***, done"
    )


def test_known_secrets_are_masked_anywhere_in_the_text() -> None:
    secrets = request_secrets(
        "https://h/x?access_token=a%2Fb%20c", {"Authorization": "Bearer KEY-1", "Content-Type": "application/json"}
    )
    text = "header Bearer KEY-1 refused; token a/b c; content type application/json"
    assert redact(text, secrets) == "header *** refused; token ***; content type application/json"


def test_describe_keeps_the_type_and_a_short_redacted_first_line() -> None:
    error = ValueError("bad https://h/x?token=SECRET\nsecond line with payload " + "x" * 1000)
    assert describe(error) == "ValueError: bad https://h/x?token=***"
    long = describe(RuntimeError("y" * 5000))
    assert long.startswith("RuntimeError: yyy") and len(long) <= len("RuntimeError: ") + MAX_DETAIL_CHARS + 1
    assert describe(KeyError()) == "KeyError"


def test_describe_survives_an_exception_whose_str_raises() -> None:
    error = aiohttp.ClientResponseError(None, (), status=400, message="m")  # type: ignore[arg-type]
    assert describe(error) == "ClientResponseError"


@pytest.mark.parametrize("port", [99999, 0])  # an invalid URL (its text is the URL), a refused connection
def test_an_http_client_error_names_no_credential(port: int) -> None:
    url = f"http://user:PASSWORD-9@127.0.0.1:{port or free_port()}/events?access_token=SECRET-TOKEN-123"

    async def fail() -> BaseException:
        async with aiohttp.ClientSession() as session:
            try:
                await session.post(url, data=b"{}")
            except aiohttp.ClientError as error:
                return error
        raise AssertionError("the request did not fail")

    error = asyncio.run(fail())
    text = describe(error, request_secrets(url, {}))
    assert "SECRET-TOKEN-123" not in text and "PASSWORD-9" not in text
    assert text.startswith(type(error).__name__)
