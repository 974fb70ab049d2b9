"""Attribute merge and consent diff: pure logic, property-tested."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_actors.profiles.model import ConsentRecord, Profile, Stamped
from cdp_actors.profiles.update import apply_batch, consent_notifications, merge_attributes, merge_consent
from cdp_actors.schema.events import decode_batch

names = st.sampled_from(["$firstname", "plan", "score", "tags"])
values = st.one_of(st.text(max_size=5), st.lists(st.text(max_size=3), max_size=3))
writes = st.lists(
    st.tuples(st.dictionaries(names, values, max_size=3), st.lists(names, max_size=2), st.integers(0, 50)),
    min_size=1,
    max_size=6,
)


def batch(**fields: Any):
    return decode_batch(msgspec.json.encode({"environment": "production", **fields}))


def merged(sequence) -> dict[str, Stamped]:
    attributes: dict[str, Stamped] = {}
    for updates, deleted, ts in sequence:
        attributes = merge_attributes(attributes, updates, deleted, ts)
    return attributes


@settings(max_examples=200, deadline=None)
@given(writes, st.randoms())
def test_attribute_merge_converges_in_any_order(sequence, rnd) -> None:
    shuffled = list(sequence)
    rnd.shuffle(shuffled)
    assert merged(shuffled) == merged(sequence)


@settings(max_examples=200, deadline=None)
@given(writes)
def test_attribute_merge_keeps_the_latest_write(sequence) -> None:
    result = merged(sequence)
    for name, item in result.items():
        stamps = [ts for updates, deleted, ts in sequence if name in updates or name in deleted]
        assert item.ts == max(stamps)
        if item.value is not None:
            assert any(updates.get(name) == item.value and ts == item.ts for updates, _, ts in sequence)


def test_out_of_order_batches_converge_on_the_profile() -> None:
    newer = batch(
        user_attributes={"plan": "gold"},
        events=[
            {
                "event_type": "custom_event",
                "data": {"event_name": "a", "custom_event_type": "other", "timestamp_unixtime_ms": 2000},
            }
        ],
    )
    older = batch(
        user_attributes={"plan": "silver", "city": "Oslo"},
        events=[
            {
                "event_type": "custom_event",
                "data": {"event_name": "b", "custom_event_type": "other", "timestamp_unixtime_ms": 1000},
            }
        ],
    )
    one = apply_batch(apply_batch(Profile(mpid=1), newer, 1, 5000).profile, older, 1, 5000).profile
    two = apply_batch(apply_batch(Profile(mpid=1), older, 1, 5000).profile, newer, 1, 5000).profile
    assert one.live_attributes() == two.live_attributes() == {"plan": "gold", "city": "Oslo"}
    assert (one.first_seen_ms, one.last_seen_ms) == (1000, 2000)


def test_deleted_attribute_is_removed_and_not_resurrected_by_an_older_write() -> None:
    profile = apply_batch(Profile(mpid=1), batch(user_attributes={"plan": "gold"}), 1, 1000).profile
    profile = apply_batch(profile, batch(deleted_user_attributes=["plan"]), 1, 2000).profile
    assert "plan" not in profile.live_attributes()
    stale = batch(
        user_attributes={"plan": "bronze"},
        events=[{"event_type": "screen_view", "data": {"screen_name": "x", "timestamp_unixtime_ms": 1500}}],
    )
    assert "plan" not in apply_batch(profile, stale, 1, 3000).profile.live_attributes()


consents = st.builds(
    ConsentRecord,
    consented=st.booleans(),
    timestamp_unixtime_ms=st.integers(0, 20),
    document=st.sampled_from([None, "v1", "v2"]),
)
consent_states = st.dictionaries(
    st.sampled_from(["gdpr", "ccpa"]),
    st.dictionaries(st.sampled_from(["location", "marketing", "data_sale_opt_out"]), consents, max_size=2),
    max_size=2,
)


@settings(max_examples=300, deadline=None)
@given(consent_states, consent_states)
def test_consent_diff_names_exactly_the_changed_purposes(old, incoming) -> None:
    new = merge_consent(old, incoming)
    notes = consent_notifications(old, new)
    changed = {
        (regulation, purpose)
        for regulation, purposes in new.items()
        for purpose, record in purposes.items()
        if old.get(regulation, {}).get(purpose) != record
    }
    assert {(n["type"].removesuffix("_change"), n["data"]["purpose"]) for n in notes} == changed
    for note in notes:
        regulation = note["type"].removesuffix("_change")
        current = new[regulation][note["data"]["purpose"]]
        assert note["data"]["current"]["consented"] == current.consented
        assert note["data"]["current"]["regulation"] == regulation
        previous = old.get(regulation, {}).get(note["data"]["purpose"])
        assert (note["data"]["old"] is None) == (previous is None)


@settings(max_examples=200, deadline=None)
@given(st.lists(consent_states, min_size=1, max_size=4))
def test_consent_merge_converges_in_any_order(states) -> None:
    results = set()
    for order in itertools.islice(itertools.permutations(states), 6):
        state: dict = {}
        for incoming in order:
            state = merge_consent(state, incoming)
        results.add(msgspec.json.encode(state, order="sorted"))
    assert len(results) == 1


def test_consent_change_produces_a_system_notification() -> None:
    granted = batch(
        consent_state={"gdpr": {"location": {"consented": True, "timestamp_unixtime_ms": 10, "document": "v1"}}}
    )
    first = apply_batch(Profile(mpid=7), granted, 1, 100)
    assert first.notifications[0]["type"] == "gdpr_change"
    assert first.notifications[0]["data"]["old"] is None
    same = apply_batch(first.profile, granted, 1, 200)
    assert same.notifications == []
    revoked = batch(
        consent_state={
            "gdpr": {"location": {"consented": False, "timestamp_unixtime_ms": 20}},
            "ccpa": {"data_sale_opt_out": {"consented": True, "timestamp_unixtime_ms": 20}},
        }
    )
    after = apply_batch(same.profile, revoked, 1, 300)
    kinds = {(n["type"], n["data"]["old"] is None, n["data"]["current"]["consented"]) for n in after.notifications}
    assert kinds == {("gdpr_change", False, False), ("ccpa_change", True, True)}
