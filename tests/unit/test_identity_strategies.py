"""The documented IDSync flows (https://docs.mparticle.com/guides/idsync/components/), step by step, on the
in-memory identity state; how an Events API batch's `mpid` is resolved, by example and as a property over every
policy."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_actors.errors import BadRequest, ImmutableIdentity, NotFound
from cdp_actors.identity import strategy as s
from cdp_actors.identity.index import BatchRequest, decode_requests, encode_requests
from cdp_actors.identity.strategy import MemoryState, Policy
from cdp_actors.schema.records import IdentityChange
from tests.unit.identity_data import batch_requests, identity_requests, mpids, policies

NOW = 1_700_000_000_000
NEW = 2**62 + 1  # the MPID offered for a batch's new profile in the property test
CONVERSION = Policy.of(s.CONVERSION, unique=["customer_id", "email"], login=["customer_id", "email"])


def test_profile_conversion_flow() -> None:
    state, policy = MemoryState(), CONVERSION
    p1 = s.identify(state, policy, {"ios_idfv": "9876"}, NOW)
    assert p1.created and not p1.logged_in
    known = {"customer_id": "c1", "email": "a@x.io", "ios_idfv": "9876"}
    login = s.login(state, policy, known, NOW, p1.mpid)
    assert (login.mpid, login.created, login.logged_in) == (p1.mpid, False, True)  # same MPID, now known
    assert {c.identity_type for c in login.changes} == {"customer_id", "email"}
    logout = s.logout(state, policy, {"ios_idfv": "9876"}, NOW)
    assert logout.created and logout.mpid != p1.mpid  # P1 is known now: a new anonymous profile
    again = s.login(state, policy, known, NOW, logout.mpid)
    assert again.mpid == p1.mpid and again.matched == known
    # A feed created P3 with an email; modifying P1's email to it takes it from P3, which is orphaned.
    p3 = s.identify(state, policy, {"email": "b@x.io"}, NOW)
    s.modify(state, policy, p1.mpid, [IdentityChange("email", "a@x.io", "b@x.io")])
    assert state.record(p3.mpid).orphaned
    assert s.search(state, policy, {"email": "b@x.io", "customer_id": "c1"}).mpid == p1.mpid
    assert s.search(state, policy, {"email": "a@x.io"}) is None
    # A new device: identify with its Roku ID gives P4; logging in there returns P1, which gains the Roku ID.
    p4 = s.identify(state, policy, {"roku_advertising_id": "r1"}, NOW)
    assert p4.created and p4.mpid != p1.mpid
    there = s.login(state, policy, {"customer_id": "c1", "roku_advertising_id": "r1"}, NOW, p4.mpid)
    assert there.mpid == p1.mpid and "r1" in state.record(p1.mpid).identities["roku_advertising_id"]


def test_profile_link_flow() -> None:
    state, policy = MemoryState(), Policy.of(s.LINK)
    p1 = s.identify(state, policy, {"ios_idfv": "d1"}, NOW)
    p2 = s.login(state, policy, {"customer_id": "c1", "ios_idfv": "d1"}, NOW, p1.mpid)
    assert p2.created and p2.mpid != p1.mpid
    assert state.record(p2.mpid).alias_source == p1.mpid  # "Source: P1", for a later alias
    p3 = s.logout(state, policy, {"ios_idfv": "d1"}, NOW)
    assert p3.created and p3.mpid not in (p1.mpid, p2.mpid)
    assert s.logout(state, policy, {"ios_idfv": "d1"}, NOW).mpid != p3.mpid  # always a new one
    assert s.login(state, policy, {"customer_id": "c1"}, NOW).mpid == p2.mpid


def test_profile_isolation_flow() -> None:
    state, policy = MemoryState(), Policy.of(s.ISOLATION)
    p1 = s.identify(state, policy, {"ios_idfv": "d1"}, NOW)
    p2 = s.login(state, policy, {"email": "e@x.io", "ios_idfv": "d1"}, NOW, p1.mpid)
    assert p2.created and p2.mpid != p1.mpid
    assert state.record(p1.mpid).identities == {"ios_idfv": ["d1"]}  # anonymous data never carried over
    assert s.logout(state, policy, {"ios_idfv": "d1"}, NOW).mpid == p1.mpid
    assert s.login(state, policy, {"email": "e@x.io", "ios_idfv": "d1"}, NOW).mpid == p2.mpid


def test_best_match_flow() -> None:
    state, policy = MemoryState(), Policy.of(s.BEST_MATCH)
    p1 = s.identify(state, policy, {"ios_idfv": "v1"}, NOW)
    assert s.identify(state, policy, {"email": "e@x.io", "ios_idfv": "v1"}, NOW).mpid == p1.mpid
    other_device = s.identify(state, policy, {"android_uuid": "a1", "email": "e@x.io"}, NOW)
    assert other_device.mpid == p1.mpid  # email outranks the Android ID
    assert s.identify(state, policy, {"android_uuid": "a1"}, NOW).mpid == p1.mpid
    s.identify(state, policy, {"android_uuid": "a1", "email": "second@x.io"}, NOW)
    assert state.record(p1.mpid).identities["email"] == ["e@x.io", "second@x.io"]  # no uniqueness
    with pytest.raises(BadRequest, match="best_match identity strategy has no login"):
        s.login(state, policy, {"email": "e@x.io"}, NOW)


def test_login_ids_protect_known_profiles() -> None:
    state, policy = MemoryState(), Policy.of(s.CONVERSION, unique=["customer_id", "email"], login=["email"])
    known = s.identify(state, policy, {"email": "e@x.io", "ios_idfv": "1234"}, NOW)
    stranger = s.identify(state, policy, {"ios_idfv": "1234"}, NOW)
    assert stranger.created and stranger.mpid != known.mpid
    assert s.search(state, policy, {"ios_idfv": "1234"}).mpid == stranger.mpid


def test_immutable_ids_gate_search_and_cannot_be_modified() -> None:
    state, policy = MemoryState(), Policy.of(s.CONVERSION, immutable=["other"])
    p = s.identify(state, policy, {"other": "imm-1", "email": "e@x.io"}, NOW)
    assert s.search(state, policy, {"email": "e@x.io"}) is None  # "User Profile Not Found"
    assert s.search(state, policy, {"other": "imm-1"}).mpid == p.mpid
    with pytest.raises(ImmutableIdentity, match="^other is an immutable identity.$"):
        s.modify(state, policy, p.mpid, [IdentityChange("other", "imm-1", "imm-2")])


def test_search_never_creates_and_modify_never_creates() -> None:
    state = MemoryState()
    assert s.search(state, CONVERSION, {"email": "nobody@x.io"}) is None
    assert state.records == {}
    with pytest.raises(NotFound, match="^No profile with mpid 42.$"):
        s.modify(state, CONVERSION, 42, [IdentityChange("email", None, "e@x.io")])
    assert state.records == {}


def test_modify_adds_replaces_and_removes() -> None:
    state, policy = MemoryState(), CONVERSION
    p = s.identify(state, policy, {"customer_id": "c1"}, NOW).mpid
    s.modify(state, policy, p, [IdentityChange("email", None, "e@x.io"), IdentityChange("ios_idfv", None, "v")])
    s.modify(state, policy, p, [IdentityChange("email", "e@x.io", "f@x.io"), IdentityChange("ios_idfv", "v", None)])
    assert state.record(p).identities == {"customer_id": ["c1"], "email": ["f@x.io"]}
    assert state.holders("email", "e@x.io") == [] and state.holders("ios_idfv", "v") == []


def test_a_batch_keeps_a_live_mpid_and_replay_resolves_identically() -> None:
    state, policy = MemoryState(), CONVERSION
    live = s.identify(state, policy, {"ios_idfv": "d1"}, NOW, new_mpid=777).mpid
    given = s.resolve_batch(state, policy, live, {"email": "e@x.io"}, NOW, new_mpid=1)
    assert (given.mpid, given.created) == (777, False) and state.record(777).identities["email"] == ["e@x.io"]
    first = s.resolve_batch(state, policy, None, {"customer_id": "new"}, NOW, new_mpid=555)
    replay = s.resolve_batch(state, policy, None, {"customer_id": "new"}, NOW, new_mpid=555)
    assert first.mpid == replay.mpid == 555 and first.changes[0].created and not replay.changes


def test_a_batch_mpid_no_one_holds_never_creates_a_profile_there() -> None:
    state, policy = MemoryState(), CONVERSION
    planted = s.resolve_batch(state, policy, 2**62, {"email": "e@x.io"}, NOW, new_mpid=555)
    assert (planted.mpid, planted.created) == (555, True) and state.record(2**62) is None
    known = s.identify(state, policy, {"customer_id": "c1"}, NOW, new_mpid=9).mpid
    by_identity = s.resolve_batch(state, policy, -(2**63), {"customer_id": "c1"}, NOW, new_mpid=556)
    assert (by_identity.mpid, by_identity.created) == (known, False) and state.record(-(2**63)) is None
    anonymous = s.resolve_batch(state, policy, 12345, {}, NOW, new_mpid=557)
    assert (anonymous.mpid, anonymous.created) == (557, True) and state.record(12345) is None


def test_a_cached_mpid_of_an_orphan_resolves_by_the_batch_identities() -> None:
    state, policy = MemoryState(), CONVERSION
    orphan = s.identify(state, policy, {"email": "b@x.io", "ios_idfv": "d3"}, NOW, new_mpid=3).mpid
    p1 = s.identify(state, policy, {"customer_id": "c1"}, NOW, new_mpid=1).mpid
    s.modify(state, policy, p1, [IdentityChange("email", None, "b@x.io")])
    frozen = state.record(orphan)
    assert frozen.orphaned
    moved = s.resolve_batch(state, policy, orphan, {"customer_id": "c1", "email": "b@x.io"}, NOW, new_mpid=10)
    assert (moved.mpid, moved.created) == (p1, False)
    device = s.resolve_batch(state, policy, orphan, {"ios_idfv": "d3"}, NOW, new_mpid=11)
    assert (device.mpid, device.created) == (11, True)  # the orphan's device ID was unindexed with it
    assert s.resolve_batch(state, policy, orphan, {"ios_idfv": "d3"}, NOW, new_mpid=12).mpid == 11
    bare = s.resolve_batch(state, policy, orphan, {}, NOW, new_mpid=13)
    assert (bare.mpid, bare.created) == (13, True)
    assert state.record(orphan) == frozen  # the orphan gained nothing


@settings(max_examples=300, deadline=None)
@given(
    policy=policies(),
    setup=st.lists(identity_requests, max_size=8),
    pick=st.integers(0, 20),
    unknown=mpids,
    request=batch_requests,
)
def test_a_batch_resolves_as_identify_would_unless_its_mpid_names_a_live_profile(
    policy: Policy, setup: list[dict[str, str]], pick: int, unknown: int, request: dict[str, str]
) -> None:
    state = MemoryState()
    for n, identities in enumerate(setup, start=1):
        s.identify(state, policy, identities, NOW, new_mpid=n)  # later claims may orphan earlier profiles
    batch_mpid = pick if 0 < pick <= len(setup) else None if pick == 0 else unknown
    unknown_before = state.record(batch_mpid) is None if batch_mpid else False
    expected_state = copy.deepcopy(state)
    expected = s.identify(expected_state, policy, request, NOW, new_mpid=NEW)
    before = copy.deepcopy(state.record(batch_mpid)) if batch_mpid else None

    outcome = s.resolve_batch(state, policy, batch_mpid, request, NOW, new_mpid=NEW)
    if before is not None and not before.orphaned:
        assert outcome.mpid == batch_mpid and not outcome.created
        return
    assert outcome == expected and state.records == expected_state.records  # as if it carried no mpid
    assert not state.records[outcome.mpid].orphaned
    if unknown_before and batch_mpid != NEW:
        assert state.record(batch_mpid) is None
    if before is not None:
        assert state.record(batch_mpid) == before  # an orphan stays as it was


def test_a_chunk_of_batch_requests_reaches_the_index_unchanged() -> None:
    """The dispatcher sends a chunk's requests as one msgpack array (`encode_requests`): MPIDs at the int64 bounds,
    a missing batch mpid and the identities come out as they went in, in order."""
    requests = [
        BatchRequest(None, {"customer_id": "c1", "email": "é@x.io"}, 1_000, 2**63 - 1),
        BatchRequest(-(2**63), {}, 0, 1),
        BatchRequest(7, {"ios_idfv": "d"}, 2, 3),
    ]
    assert decode_requests(encode_requests(requests)) == requests
