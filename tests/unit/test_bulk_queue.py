from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdp_actors.forwarding.bulk import BulkQueue, RowRef, Upload
from cdp_actors.integrations import facebook_audience
from cdp_actors.integrations.base import MembershipChange


def change(mpid: int, action: str = "add", ts: int = 1_000, audience: int = 7) -> MembershipChange:
    return MembershipChange(audience, "Buyers", mpid, action, {"email": f"u{mpid}@example.com"}, ts)


def mpids(groups: list[Upload]) -> list[list[int]]:
    return [[c.mpid for c in group.changes] for group in groups]


def filled(queue: BulkQueue, count: int, now: float = 0.0) -> BulkQueue:
    for mpid in range(1, count + 1):
        assert queue.add(change(mpid), now)
    return queue


def test_nothing_is_due_before_a_full_batch_or_the_age_limit() -> None:
    queue = filled(BulkQueue(max_batch=3, max_age_s=10, max_buffered=10), 2)
    assert queue.due(9.999) == []
    assert len(queue) == 2


def test_flushes_full_batches_as_soon_as_they_exist_and_keeps_the_rest() -> None:
    queue = filled(BulkQueue(max_batch=3, max_age_s=10, max_buffered=10), 7)
    assert mpids(queue.due(1.0)) == [[1, 2, 3], [4, 5, 6]]
    assert len(queue) == 1
    assert queue.due(1.0) == []


def test_flushes_everything_in_batches_once_the_oldest_change_is_old_enough() -> None:
    queue = BulkQueue(max_batch=3, max_age_s=10, max_buffered=10)
    queue.add(change(1), 0.0)
    queue.add(change(2), 5.0)
    assert queue.due(9.9) == []
    assert mpids(queue.due(10.0)) == [[1, 2]]
    assert len(queue) == 0 and queue.due(100.0) == []


def test_an_age_flush_still_splits_at_max_batch() -> None:
    queue = BulkQueue(max_batch=3, max_age_s=10, max_buffered=10)
    for mpid in range(1, 3):
        queue.add(change(mpid), 0.0)
    assert mpids(queue.due(10.0)) == [[1, 2]]
    filled(queue, 7, now=20.0)
    assert mpids(queue.due(30.0)) == [[1, 2, 3], [4, 5, 6], [7]]


def test_next_deadline_follows_the_oldest_change() -> None:
    queue = BulkQueue(max_batch=3, max_age_s=10, max_buffered=10)
    assert queue.next_deadline() is None
    queue.add(change(1), 2.0)
    queue.add(change(2), 4.0)
    assert queue.next_deadline() == 12.0
    queue.add(change(3), 5.0)
    assert queue.next_deadline() == 2.0  # a full batch is waiting: already due
    queue.due(5.0)
    assert queue.next_deadline() is None


def test_the_bound_refuses_new_users_until_a_flush_makes_room() -> None:
    queue = filled(BulkQueue(max_batch=2, max_age_s=10, max_buffered=3), 3)
    assert queue.full
    assert not queue.add(change(4), 1.0)
    assert len(queue) == 3
    assert queue.add(change(2, "delete", ts=2_000), 1.0)  # a pending user's newer change still fits
    assert mpids(queue.due(1.0)) == [[1, 2]]
    assert queue.add(change(4), 1.0)
    assert mpids(queue.drain()) == [[3, 4]]


def test_a_newer_change_replaces_the_pending_one_in_place_keeping_its_age() -> None:
    queue = BulkQueue(max_batch=10, max_age_s=10, max_buffered=10)
    queue.add(change(1, "add", ts=1_000), 0.0)
    queue.add(change(2, "add", ts=1_000), 1.0)
    queue.add(change(1, "delete", ts=2_000), 8.0)
    assert len(queue) == 2
    [group] = queue.due(10.0)
    assert [(c.mpid, c.action) for c in group.changes] == [(1, "delete"), (2, "add")]


def test_an_older_change_than_the_pending_one_is_ignored() -> None:
    queue = BulkQueue(max_batch=10, max_age_s=10, max_buffered=10)
    queue.add(change(1, "delete", ts=2_000), 0.0)
    assert queue.add(change(1, "add", ts=1_500), 1.0)
    [upload] = queue.drain()
    assert [c.action for c in upload.changes] == ["delete"]


def test_the_same_user_in_two_audiences_is_queued_twice() -> None:
    queue = BulkQueue(max_batch=10, max_age_s=10, max_buffered=10)
    queue.add(change(1, audience=7), 0.0)
    queue.add(change(1, audience=8), 0.0)
    assert len(queue) == 2


@pytest.mark.parametrize(("max_batch", "max_age_s", "max_buffered"), [(0, 10, 10), (3, 0, 10), (3, 10, 2)])
def test_rejects_unworkable_limits(max_batch: int, max_age_s: float, max_buffered: int) -> None:
    with pytest.raises(ValueError):
        BulkQueue(max_batch, max_age_s, max_buffered)


def test_for_adapter_takes_the_partner_batch_size_and_the_configured_age() -> None:
    settings = facebook_audience.Settings(access_token="t", bulk_max_age_s=60)
    queue = BulkQueue.for_adapter(facebook_audience.Adapter(settings), max_buffered=50_000)
    assert (queue.max_batch, queue.max_age_s, queue.max_buffered) == (10_000, 60, 50_000)


def test_the_same_inputs_give_the_same_groups() -> None:
    def run() -> list[Upload]:
        queue = BulkQueue(max_batch=3, max_age_s=10, max_buffered=10)
        for t, mpid in enumerate([5, 3, 9, 3, 1, 4]):
            queue.add(change(mpid, ts=t), float(t))
        return queue.due(6.0) + queue.due(20.0)

    assert run() == run()
    assert mpids(run()) == [[5, 3, 9], [1, 4]]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 12), st.sampled_from(["add", "delete"])),
        st.tuples(st.just("tick"), st.floats(0, 6), st.just("")),
    ),
    max_size=80,
)


@given(operations)
def test_the_partner_ends_with_each_users_last_accepted_change(ops: list[tuple[str, float, str]]) -> None:
    queue, now, ts = BulkQueue(max_batch=3, max_age_s=10, max_buffered=5), 0.0, 0
    expected: dict[int, str] = {}  # per user, the action the partner must end up with
    sent: list[MembershipChange] = []
    for op, value, action in ops:
        if op == "tick":
            now += value
            groups = [group.changes for group in queue.due(now)]
            assert all(1 <= len(group) <= 3 for group in groups)
            assert all(len({c.mpid for c in group}) == len(group) for group in groups)
            sent += [c for group in groups for c in group]
        else:
            ts += 1
            if queue.add(change(int(value), action, ts=ts), now):
                expected[int(value)] = action
        assert len(queue) <= 5
    sent += [c for group in queue.drain() for c in group.changes]
    final = {c.mpid: c.action for c in sent}  # later sends win, as at the partner
    assert final == expected


def test_an_upload_carries_the_rows_of_its_changes_and_of_those_they_replaced() -> None:
    queue = BulkQueue(max_batch=10, max_age_s=10, max_buffered=10)
    queue.add(change(1, "add", ts=1_000), 0.0, (0, b"k1"))
    queue.add(change(2, "add", ts=1_000), 0.0, (1, b"k2"))
    queue.add(change(1, "delete", ts=2_000), 1.0, (0, b"k3"))  # replaces k1's change
    queue.add(change(1, "add", ts=1_500), 2.0, (0, b"k4"))  # older than the pending one: ignored, row kept
    [upload] = queue.due(10.0)
    assert [(c.mpid, c.action) for c in upload.changes] == [(1, "delete"), (2, "add")]
    assert upload.rows == [(0, b"k1"), (0, b"k3"), (0, b"k4"), (1, b"k2")]


def test_a_change_sent_once_carries_no_row() -> None:
    queue = BulkQueue(max_batch=10, max_age_s=10, max_buffered=10)
    queue.add(change(1), 0.0)
    assert queue.drain() == [Upload([change(1)], [])]


rows_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 6), st.integers(0, 20)),
        st.tuples(st.just("tick"), st.integers(0, 6), st.just(0)),
    ),
    max_size=60,
)


@given(rows_ops)
def test_every_accepted_row_is_acknowledged_once_with_a_change_at_least_as_new(ops: list[tuple[str, int, int]]) -> None:
    """Against a plain model: a row accepted by the queue is in exactly one upload, and that upload carries a
    change of the row's user no older than the row's own (so acknowledging it loses nothing)."""
    queue, now = BulkQueue(max_batch=3, max_age_s=10, max_buffered=4), 0.0
    accepted: dict[RowRef, int] = {}  # row -> timestamp of its change
    mpid_of: dict[RowRef, int] = {}
    uploads: list[Upload] = []
    for n, (op, value, ts) in enumerate(ops):
        if op == "tick":
            now += value
            uploads += queue.due(now)
        else:
            row = (value % 2, n.to_bytes(4, "big"))
            if queue.add(change(value, ts=ts), now, row):
                accepted[row], mpid_of[row] = ts, value
        assert queue.held_rows == len(accepted) - sum(len(upload.rows) for upload in uploads)
    uploads += queue.drain()
    acknowledged = [row for upload in uploads for row in upload.rows]
    assert sorted(acknowledged) == sorted(accepted)
    for upload in uploads:
        carried = {c.mpid: c.timestamp_ms for c in upload.changes}
        assert all(carried[mpid_of[row]] >= accepted[row] for row in upload.rows)
