"""Retry policy and alert naming, after the System Alerts table of the product docs.

Retried: 408, 429, 500, 502, 503, 504, timeouts and connection errors, with exponential backoff and
jitter (or the partner's `Retry-After`, never longer than `max_delay_s`). Never retried: every other status,
including 400, 401, 403, 404, 409, 413, 414 and 525, and redirects (3xx: not followed, so a partner cannot point
deliveries elsewhere, and a POST is not turned into a GET without its body).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http import HTTPStatus

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
TIMEOUT = "408-Request Timeout"
CONNECTION_ERROR = "306-Unknown"
RETRY_COUNT_EXCEEDED = "Retry Count Exceeded"
WARNING, FATAL = "Warning", "Fatal"
_rng = random.Random()
_NAMED = {
    400: "400-Bad Request",
    401: "401-Unauthorized",
    403: "403-Forbidden",
    404: "404-Not Found",
    408: TIMEOUT,
    409: "409-Conflict",
    413: "413-Request Entity Too Large",
    414: "414-Request-URI Too Long",
    500: "500-Internal Server Error",
    502: "502-Bad Gateway",
    503: "503-Service Unavailable",
    504: "504-Gateway Timeout",
    525: "525-SSL Termination Error",
}


def alert_type_for_status(status: int) -> str:
    if status in _NAMED:
        return _NAMED[status]
    try:
        return f"{status}-{HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status}-Unknown"


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt came back with: an HTTP status, or a transport failure."""

    status: int | None = None
    timed_out: bool = False
    error: str = ""
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUSES

    @property
    def alert_type(self) -> str:
        if self.status is not None:
            return alert_type_for_status(self.status)
        return TIMEOUT if self.timed_out else CONNECTION_ERROR


@dataclass(frozen=True)
class Verdict:
    """After a failed attempt: retry after `delay_s`, or drop with a Fatal alert."""

    retry: bool
    alert_type: str
    severity: str
    delay_s: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0

    def backoff(self, attempt: int, rng: random.Random = _rng) -> float:
        """Exponential backoff with jitter (50–100% of the step) after attempt number `attempt` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return ceiling * (0.5 + rng.random() / 2)

    def judge(self, attempt_no: int, attempt: Attempt, rng: random.Random = _rng) -> Verdict:
        if not attempt.retryable:
            return Verdict(False, attempt.alert_type, FATAL)
        if attempt_no >= self.max_attempts:
            return Verdict(False, RETRY_COUNT_EXCEEDED, FATAL)
        if attempt.retry_after_s is None:
            return Verdict(True, attempt.alert_type, WARNING, self.backoff(attempt_no, rng))
        # capped: a partner's `Retry-After: inf` (or a date years ahead) must not park the user's lane for ever
        return Verdict(True, attempt.alert_type, WARNING, min(attempt.retry_after_s, self.max_delay_s))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header, in seconds or as an HTTP date (0 for a date past); None when
    absent or unusable (NaN, negative). May be very large or infinite: `RetryPolicy.judge` caps it."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)  # a digit string of any length is a float (at worst inf), never an error
    except ValueError:
        return _seconds_until(text, now or datetime.now(timezone.utc))
    return None if math.isnan(seconds) or seconds < 0 else seconds


def _seconds_until(http_date: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP dates always are
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())
