"""The audit log: append-only, ordered, durable, secrets masked (changes to them still shown), personal values never
kept, paged in bounded steps, old entries dropped after the retention period."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from cdp_actors import audit
from cdp_actors.audit import (
    AUDIT_DB,
    AUDIT_RETENTION_DAYS,
    DAY_MS,
    AuditEntry,
    AuditFilter,
    AuditLog,
    Change,
    diff,
)
from cdp_actors.integrations import firehose
from cdp_actors.secrets import MASK
from cdp_actors.storage.lmdb_env import Store

T0_MS = 1_700_000_000_000


class Clock:
    def __init__(self, now_ms: int = T0_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(tmp_path: Path, clock: Clock) -> Iterator[AuditLog]:
    store = Store(tmp_path / "config", ("outputs", AUDIT_DB))
    yield AuditLog(store, clock)
    store.close()


def output(api_key: str, url: str = "https://partner.example.com/fh") -> dict[str, Any]:
    settings = firehose.Settings.model_validate({"url": url, "api_key": api_key})
    return {"id": 7, "name": "partner", "kind": "firehose", "settings": settings}


def test_entries_are_appended_in_order_with_the_time_and_who_did_what(log: AuditLog, clock: Clock) -> None:
    first = log.record("user:admin", "create", "output:7", None, {"name": "a"})
    clock.now_ms += 5
    second = log.record("api_client:demo-admin", "delete", "output:7", {"name": "a"}, None)
    assert [(e.id, e.at_ms, e.actor, e.action, e.target) for e in log.page().entries] == [
        (1, T0_MS, "user:admin", "create", "output:7"),
        (2, T0_MS + 5, "api_client:demo-admin", "delete", "output:7"),
    ]
    assert (first.id, second.id) == (1, 2)
    assert first.changes == [Change("$.name", None, "a")] and second.changes == [Change("$.name", "a", None)]


def test_ids_keep_the_order_when_the_clock_steps_back(log: AuditLog, clock: Clock) -> None:
    log.record("user:a", "update", "t", 1, 2)
    clock.now_ms -= 60_000
    log.record("user:a", "update", "t", 2, 3)
    assert [(e.id, e.at_ms) for e in log.page().entries] == [(1, T0_MS), (2, T0_MS - 60_000)]


def test_secrets_are_masked_and_a_changed_secret_still_shows_as_changed(log: AuditLog) -> None:
    entry = log.record("user:admin", "update", "output:7", output("s3cret-old"), output("s3cret-new"))
    raw = msgspec.json.encode(entry)
    assert b"s3cret" not in raw
    assert entry.before["settings"]["api_key"] == entry.after["settings"]["api_key"] == MASK
    assert entry.changes == [Change("$.settings.api_key", MASK, MASK)]


def test_an_unchanged_secret_is_no_change(log: AuditLog) -> None:
    entry = log.record("user:admin", "update", "output:7", output("s3cret"), output("s3cret", "https://new.example"))
    assert entry.changes == [Change("$.settings.url", "https://partner.example.com/fh", "https://new.example")]


def test_plain_documents_mask_fields_named_like_credentials(log: AuditLog) -> None:
    entry = log.record("user:admin", "create", "api_client:ci", None, {"client_id": "ci", "client_secret": "s3cret"})
    assert entry.after == {"client_id": "ci", "client_secret": MASK}
    assert Change("$.client_secret", None, MASK) in entry.changes and b"s3cret" not in msgspec.json.encode(entry)


def test_personal_changes_keep_the_paths_and_no_value(log: AuditLog) -> None:
    before = {"user_attributes": {"$firstname": "Ada", "plan": "gold"}}
    after = {"user_attributes": {"$firstname": "Ada", "plan": "platinum", "city": "London"}}
    entry = log.record("user:support", "update", "mpid:42", before, after, personal=True)
    assert (entry.before, entry.after) == (None, None)
    assert entry.changes == [Change("$.user_attributes.city"), Change("$.user_attributes.plan")]
    assert b"platinum" not in msgspec.json.encode(log.page().entries)


def test_diff_compares_objects_by_field_and_arrays_whole() -> None:
    before = {"a": 1, "list": [1, 2], "nested": {"x": 1, "y": {}}, "gone": True}
    after = {"a": 1, "list": [1, 2, 3], "nested": {"x": 2, "y": {"z": 1}}, "new": "v"}
    assert diff(before, after) == [
        Change("$.gone", True, None),
        Change("$.list", [1, 2], [1, 2, 3]),
        Change("$.nested.x", 1, 2),
        Change("$.nested.y", {}, None),
        Change("$.nested.y.z", None, 1),
        Change("$.new", None, "v"),
    ]
    assert diff({"k": SecretStr("same")}, {"k": SecretStr("same")}) == []


def test_an_entry_is_written_with_the_change_or_not_at_all(log: AuditLog) -> None:
    """`record_in` shares the caller's transaction: a change that fails leaves no entry behind."""
    with pytest.raises(RuntimeError), log.store.write() as txn:
        txn.put(b"7", b"new output", db=log.store.db("outputs"))
        log.record_in(txn, "user:admin", "create", "output:7", None, {"id": 7})
        raise RuntimeError("the change failed before commit")
    assert log.count() == 0
    with log.store.read() as txn:
        assert txn.get(b"7", db=log.store.db("outputs")) is None


def test_entries_survive_a_restart_and_ids_continue(tmp_path: Path, clock: Clock) -> None:
    store = Store(tmp_path / "config", (AUDIT_DB,))
    AuditLog(store, clock).record("user:admin", "create", "output:1", None, {"id": 1})
    store.close()
    reopened = Store(tmp_path / "config", (AUDIT_DB,))
    log = AuditLog(reopened, clock)
    assert log.record("user:admin", "create", "output:2", None, {"id": 2}).id == 2
    assert [e.target for e in log.page().entries] == ["output:1", "output:2"]
    reopened.close()


def fill(log: AuditLog, clock: Clock, n: int) -> None:
    for i in range(n):
        clock.now_ms = T0_MS + i * 1000
        log.record(f"user:{'ab'[i % 2]}", ("create", "update")[i % 3 == 0], f"output:{i % 4}", None, {"i": i})


def test_pages_follow_the_log_oldest_first_and_newest_first(log: AuditLog, clock: Clock) -> None:
    fill(log, clock, 10)
    first = log.page(limit=4)
    assert [e.id for e in first.entries] == [1, 2, 3, 4] and first.next_cursor == 4
    rest = log.page(after_id=first.next_cursor or 0, limit=100)
    assert [e.id for e in rest.entries] == [5, 6, 7, 8, 9, 10] and rest.next_cursor is None
    newest = log.latest(limit=3)
    assert [e.id for e in newest.entries] == [10, 9, 8] and newest.next_cursor == 8
    assert [e.id for e in log.latest(before_id=newest.next_cursor, limit=100).entries] == [7, 6, 5, 4, 3, 2, 1]
    assert [e.id for e in log.latest(before_id=99, limit=2).entries] == [10, 9]
    assert log.latest(before_id=1).entries == []


def test_filters_select_by_actor_action_target_and_time(log: AuditLog, clock: Clock) -> None:
    fill(log, clock, 12)
    by = log.page(filters=AuditFilter(actor="user:a", action="update")).entries
    assert [e.id for e in by] == [1, 7]
    assert [e.id for e in log.page(filters=AuditFilter(target="output:3")).entries] == [4, 8, 12]
    assert len(log.page(filters=AuditFilter(target="output:*")).entries) == 12
    window = AuditFilter(since_ms=T0_MS + 2000, until_ms=T0_MS + 5000)
    assert [e.id for e in log.latest(filters=window).entries] == [5, 4, 3]


def test_a_filtered_page_reads_a_bounded_number_of_entries(
    log: AuditLog, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(log, clock, 10)
    monkeypatch.setattr(audit, "MAX_SCANNED", 4)
    nothing = AuditFilter(actor="user:nobody")
    page = log.page(filters=nothing)
    assert page.entries == [] and page.next_cursor == 4
    assert log.page(after_id=8, filters=nothing).next_cursor is None


def test_entries_past_the_retention_are_dropped_a_bounded_batch_per_write(
    log: AuditLog, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(log, clock, 5)
    monkeypatch.setattr(audit, "PRUNE_BATCH", 2)
    clock.now_ms = T0_MS + 2500 + AUDIT_RETENTION_DAYS * DAY_MS  # entries 1-3 (at 0, 1 and 2 s) are past it
    log.record("user:a", "update", "t", 1, 2)
    assert [e.id for e in log.page().entries] == [3, 4, 5, 6]
    log.record("user:a", "update", "t", 2, 3)
    assert [e.id for e in log.page().entries] == [4, 5, 6, 7]
    log.record("user:a", "update", "t", 3, 4)
    assert [e.id for e in log.page().entries] == [4, 5, 6, 7, 8]


ACTORS = ["user:a", "user:b", "api_client:c"]
TARGETS = ["output:1", "output:2", "input:1"]
RECORDS = st.lists(st.tuples(st.sampled_from(ACTORS), st.sampled_from(TARGETS), st.integers(0, 3_000)), max_size=40)
FILTERS = st.builds(
    AuditFilter,
    actor=st.none() | st.sampled_from(ACTORS),
    target=st.none() | st.sampled_from([*TARGETS, "output:*"]),
    since_ms=st.none() | st.integers(T0_MS, T0_MS + 60_000),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS, filters=FILTERS, page_size=st.integers(1, 7), scan_bound=st.integers(1, 9))
def test_paging_in_either_direction_reads_exactly_the_matching_entries(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    records: list[tuple[str, str, int]],
    filters: AuditFilter,
    page_size: int,
    scan_bound: int,
) -> None:
    """Against a model: the list of entries as recorded, filtered in memory."""
    monkeypatch.setattr(audit, "MAX_SCANNED", scan_bound)
    store = Store(tmp_path_factory.mktemp("audit"), (AUDIT_DB,))
    clock = Clock()
    log = AuditLog(store, clock)
    model: list[AuditEntry] = []
    for actor, target, gap_ms in records:
        clock.now_ms += gap_ms
        model.append(log.record(actor, "update", target, None, {"v": gap_ms}))
    expected = [entry.id for entry in model if filters.matches(entry)]
    forward, cursor = [], 0
    while True:
        page = log.page(after_id=cursor, limit=page_size, filters=filters)
        forward += [e.id for e in page.entries]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    backward, before = [], None
    while True:
        page = log.latest(before_id=before, limit=page_size, filters=filters)
        backward += [e.id for e in page.entries]
        if page.next_cursor is None:
            break
        before = page.next_cursor
    store.close()
    assert forward == expected and backward == expected[::-1]
