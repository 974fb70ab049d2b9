"""One identity extraction: what a profile keeps of a batch's identities is what the identity index files the
batch under, for any batch, whichever spellings it uses."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_actors.identity import strategy
from cdp_actors.identity.strategy import MemoryState, Policy
from cdp_actors.profiles.model import Profile
from cdp_actors.profiles.update import apply_batch
from cdp_actors.schema.events import (
    DeviceInfo,
    UserIdentities,
    batch_identities,
    decode_batch,
    decode_head,
    decode_valid_batch,
    user_identities_of,
)
from cdp_actors.schema.identity_types import DEVICE_TYPES, USER_SPELLINGS, USER_TYPES

NOW = 1_700_000_000_000
NEW_MPID = 2**62 + 1
USER_KEYS = (*USER_TYPES, *USER_SPELLINGS)
# Few distinct values, so that a batch often spells one identity two ways with different values.
values = st.one_of(st.none(), st.just(""), st.sampled_from(["a", "b"]), st.text(min_size=1, max_size=20))


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"environment": "production"}
    if draw(st.booleans()):
        body["user_identities"] = draw(st.dictionaries(st.sampled_from(USER_KEYS), values, max_size=8))
    if draw(st.booleans()):
        body["device_info"] = draw(st.dictionaries(st.sampled_from(DEVICE_TYPES), values, max_size=4))
    if draw(st.booleans()):
        body["mp_deviceid"] = draw(values)
    return body


def index_keys(raw: bytes) -> set[tuple[str, str]]:
    """The (type, value) keys a fresh identity index files the batch's new profile under (Best Match: it claims
    every identity, no unique or login IDs to move one elsewhere)."""
    state = MemoryState()
    outcome = strategy.resolve_batch(
        state, Policy.of(strategy.BEST_MATCH), None, batch_identities(decode_head(raw)), NOW, NEW_MPID
    )
    return {key for key, holders in state.index.items() if outcome.mpid in holders}


def profile_identities(raw: bytes) -> set[tuple[str, str]]:
    profile = apply_batch(Profile(mpid=NEW_MPID), decode_valid_batch(raw), input_id=1, received_ms=NOW).profile
    return {(name, item.value) for name, item in (profile.user_identities | profile.device_identities).items()}


@settings(max_examples=300, deadline=None)
@given(batches())
def test_the_profile_and_the_identity_index_agree_on_every_batch(body: dict[str, Any]) -> None:
    raw = msgspec.json.encode(body)
    decode_batch(raw)  # as the door accepts it
    assert profile_identities(raw) == index_keys(raw)


def test_a_batch_spelling_one_identity_two_ways_keeps_the_canonical_spelling() -> None:
    raw = msgspec.json.encode({"user_identities": {"customer_id": "a", "customerid": "b", "other5": "o5"}})
    assert profile_identities(raw) == index_keys(raw) == {("customer_id", "a"), ("other_id_5", "o5")}
    # In either order on the wire, and the other spelling still counts when the canonical one is empty.
    spelled = {"other2": "b", "other_id_2": "a", "customer_id": "", "customerid": "c"}
    raw = msgspec.json.encode({"user_identities": spelled})
    assert profile_identities(raw) == index_keys(raw) == {("other_id_2", "a"), ("customer_id", "c")}


def test_the_batch_schema_holds_exactly_the_identity_types_of_the_one_table() -> None:
    fields = UserIdentities.__struct_fields__
    assert set(fields) == set(USER_TYPES) | set(USER_SPELLINGS)
    # `user_identities_of` reads the fields in order and keeps the first value per type: canonical ones first.
    assert max(fields.index(name) for name in USER_TYPES) < min(fields.index(name) for name in USER_SPELLINGS)
    assert set(DEVICE_TYPES) <= set(DeviceInfo.__struct_fields__)
    for spelling, name in USER_SPELLINGS.items():
        raw = msgspec.json.encode({"user_identities": {spelling: "v"}})
        assert user_identities_of(decode_batch(raw)) == {name: "v"}
