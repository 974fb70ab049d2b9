"""The DSR API's rate limits (https://docs.mparticle.com/developers/apis/dsr-api/v3/, "Rate limits"): the request
book counts new requests per UTC day in the create's transaction, refuses past the daily limit with a Retry-After
until the next day (a refused request is not counted), keeps the count across a reopen, and starts again the next
day; the workspace setting takes the limits and the live `update_dsr_settings` change sets them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_actors.control.changes import UpdateDsrSettings, apply_change, first_next_ids
from cdp_actors.dsr.requests import DsrBook
from cdp_actors.dsr.wire import DAY_MS
from cdp_actors.errors import BadRequest, RateLimited
from tests.unit.test_dsr_lifecycle import BASE, request

T0 = 1_700_000_000_000  # 22:13:20 UTC: 6,400 s before the next UTC day
SECONDS_TO_NEXT_DAY = 6_400


def test_creations_past_the_daily_limit_are_refused_until_the_next_utc_day(tmp_path: Path) -> None:
    book = DsrBook(tmp_path, 1)
    for n in range(3):
        book.create(request(n, email=f"u{n}@example.com", received_ms=T0), BASE, requests_per_day=3)
    with pytest.raises(RateLimited) as refused:
        book.create(request(3, email="u3@example.com", received_ms=T0 + 1000), BASE, requests_per_day=3)
    assert refused.value.retry_after_s == SECONDS_TO_NEXT_DAY - 1 and refused.value.exceeded == "workspace"
    assert book.created_on(T0) == 3  # the refused one did not count
    book.close()
    reopened = DsrBook(tmp_path, 1)  # a restart keeps the day's count
    with pytest.raises(RateLimited):
        reopened.create(request(4, email="u4@example.com", received_ms=T0 + 2000), BASE, requests_per_day=3)
    next_day = (T0 // DAY_MS + 1) * DAY_MS
    reopened.create(request(5, email="u5@example.com", received_ms=next_day), BASE, requests_per_day=3)
    assert reopened.created_on(next_day) == 1 and reopened.created_on(T0) == 0  # the old day's count dropped


def test_a_request_refused_for_another_reason_is_not_counted(tmp_path: Path) -> None:
    book = DsrBook(tmp_path, 1)
    book.create(request(1, received_ms=T0), BASE, requests_per_day=2)
    with pytest.raises(BadRequest):  # the same id again
        book.create(request(1, received_ms=T0), BASE, requests_per_day=2)
    assert book.created_on(T0) == 1
    book.create(request(2, email="other@example.com", received_ms=T0), BASE, requests_per_day=2)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3 * DAY_MS - 1), min_size=1, max_size=25), st.integers(1, 5))
def test_admitted_per_day_matches_a_plain_count(offsets: list[int], limit: int) -> None:
    """Whatever the times (in order), the book admits exactly min(limit, sent) requests per UTC day."""
    import tempfile

    times = sorted(T0 + offset for offset in offsets)
    with tempfile.TemporaryDirectory() as directory:
        book = DsrBook(directory, 1)
        admitted: dict[int, int] = {}
        for n, at in enumerate(times):
            try:
                book.create(request(n, email=f"h{n}@example.com", received_ms=at), BASE, requests_per_day=limit)
            except RateLimited:
                continue
            admitted[at // DAY_MS] = admitted.get(at // DAY_MS, 0) + 1
        book.close()
    sent: dict[int, int] = {}
    for at in times:
        sent[at // DAY_MS] = sent.get(at // DAY_MS, 0) + 1
    assert admitted == {day: min(limit, count) for day, count in sent.items()}


def test_the_limits_are_workspace_settings_changed_live() -> None:
    from cdp_actors.config import parse_workspace
    from tests.conftest import demo_config

    config = demo_config("http://partner.example")
    assert (config.dsr.requests_per_minute, config.dsr.requests_per_day) == (1_000, 80_000)
    change = UpdateDsrSettings(fields={"requests_per_minute": 5, "processor_domain": "dsr.example.com"})
    changed = apply_change(config, change, first_next_ids(config)).config
    assert (changed.dsr.requests_per_minute, changed.dsr.processor_domain) == (5, "dsr.example.com")
    assert changed.dsr.requests_per_day == 80_000
    with pytest.raises(BadRequest) as refused:
        apply_change(config, UpdateDsrSettings(fields={"requests_per_day": 0}), first_next_ids(config))
    assert refused.value.path == "$.requests_per_day"
    assert parse_workspace({**config.model_dump(mode="json"), "dsr": {"requests_per_day": 7}}).dsr.requests_per_day == 7


def test_the_settings_change_is_applied_recorded_and_audited(tmp_path: Path) -> None:
    from cdp_actors.control.owner import ControlCore
    from tests.conftest import demo_config

    control = ControlCore(tmp_path)
    control.seed(demo_config("http://partner.example"))
    version, config = control.apply(UpdateDsrSettings(fields={"requests_per_day": 9}), None, "test")
    assert config.dsr.requests_per_day == 9 and control.current() == (version, config)
    assert (control.history()[-1].change, control.history()[-1].target) == ("update_dsr_settings", "dsr")
    control.close()
