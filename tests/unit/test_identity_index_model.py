"""Stateful property test: the LMDB IdentityIndex against the in-memory model, and the index invariants.

Each run draws one policy (any strategy, priority, unique, login and immutable IDs), then random sequences
of identify / login / logout / modify / batch resolution run on both, with identity values up to the
door's length limit in any script, MPIDs over the whole signed 64-bit range, and batches carrying no
MPID, a live one, an orphaned one (a cached MPID) or one no one holds. After every step both hold the
same state, every unique identity has at most one live holder, the index and the profile records agree,
profiles exist only at MPIDs the index was offered for new profiles, no orphan is ever returned and no
orphan ever changes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cdp_actors.errors import RequestFailed
from cdp_actors.identity import strategy
from cdp_actors.identity.index import IdentityCore, LmdbState, _unpack_mpids, identity_key
from cdp_actors.identity.strategy import MemoryState, Outcome, Policy
from cdp_actors.schema.records import IdentityChange
from cdp_actors.storage.lmdb_env import mpid_from_key
from tests.unit.identity_data import (
    MPID_MAX,
    MPID_MIN,
    TYPES,
    batch_requests,
    identity_requests,
    identity_values,
    mpids,
    policies,
)

WHOSE = ("none", "last", "any", "orphan", "unknown")
"""Which MPID a batch (or a `previous_mpid`) carries: none, the last returned, any profile's, an orphan's,
or one that may belong to no one."""


def lmdb_snapshot(core: IdentityCore) -> tuple[dict, dict]:
    def read(state: LmdbState) -> tuple[dict, dict]:
        index = {key: _unpack_mpids(value) for key, value in state.txn.cursor(db=state.holders_db)}
        records = {}
        for key in state.txn.cursor(db=state.records_db).iternext(values=False):
            mpid = mpid_from_key(key)
            records[mpid] = msgspec.to_builtins(state.record(mpid))
        return index, records

    return core.read(read)


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = MemoryState()
        self.scratch = tempfile.TemporaryDirectory(prefix="idx-model-")
        self.core: IdentityCore | None = None
        self.policy = Policy()
        self.offered: set[int] = set()
        """Every MPID offered for a new profile: the only places a profile may be created."""
        self.returned: list[int] = []
        self.orphans: dict[int, dict] = {}
        """Each orphan as it was when it was orphaned: it must never change again."""

    def teardown(self) -> None:
        if self.core is not None:
            self.core.store.close()
        self.scratch.cleanup()

    @initialize(policy=policies())
    def start(self, policy: Policy) -> None:
        self.policy = policy
        self.core = IdentityCore(self.scratch.name, policy)

    def fresh(self, drawn: int) -> int:
        """`drawn`, or the next free MPID after it: hypothesis favours the range's ends, and two profiles
        created at one MPID would be a collision of 63-bit random numbers, not a case worth testing."""
        mpid = drawn
        while mpid == 0 or mpid in self.offered or mpid in self.model.records:
            mpid = MPID_MIN if mpid == MPID_MAX else mpid + 1
        self.offered.add(mpid)
        return mpid

    def pick(self, whose: str, drawn: int) -> int | None:
        orphans = sorted(self.orphans)
        known = sorted(self.model.records)
        if whose == "last" and self.returned:
            return self.returned[-1]
        if whose == "any" and known:
            return known[drawn % len(known)]
        if whose == "orphan" and orphans:
            return orphans[drawn % len(orphans)]
        return drawn if whose == "unknown" else None

    def both(self, operation: Callable[[Any], Any], replay: bool = False) -> Any:
        before = set(self.model.records)
        try:
            expected = operation(self.model)
        except RequestFailed as error:
            expected = error
        (actual,) = self.core.run([operation])
        if isinstance(expected, RequestFailed):
            assert type(actual) is type(expected) and actual.message == expected.message
            return None
        assert actual == expected
        if isinstance(actual, Outcome):
            assert actual.mpid in self.model.records and not self.model.records[actual.mpid].orphaned, actual
            assert replay or actual.created == (actual.mpid not in before), actual
            self.returned.append(actual.mpid)
        return actual

    @rule(request=identity_requests, whose=st.sampled_from(WHOSE), drawn=mpids, new=mpids)
    def identify(self, request: dict, whose: str, drawn: int, new: int) -> None:
        previous, mpid = self.pick(whose, drawn), self.fresh(new)
        self.both(lambda s: strategy.identify(s, self.policy, request, 0, previous, new_mpid=mpid))

    @rule(request=identity_requests, whose=st.sampled_from(WHOSE), drawn=mpids, new=mpids)
    def login(self, request: dict, whose: str, drawn: int, new: int) -> None:
        previous, mpid = self.pick(whose, drawn), self.fresh(new)
        self.both(lambda s: strategy.login(s, self.policy, request, 0, previous, new_mpid=mpid))

    @rule(request=identity_requests, new=mpids)
    def logout(self, request: dict, new: int) -> None:
        mpid = self.fresh(new)
        self.both(lambda s: strategy.logout(s, self.policy, request, 0, new_mpid=mpid))

    @rule(request=batch_requests, whose=st.sampled_from(WHOSE), drawn=mpids, new=mpids, replayed=st.booleans())
    def batch(self, request: dict, whose: str, drawn: int, new: int, replayed: bool) -> None:
        batch_mpid, mpid = self.pick(whose, drawn), self.fresh(new)
        first = self.both(lambda s: strategy.resolve_batch(s, self.policy, batch_mpid, request, 0, mpid))
        if replayed:  # the dispatcher re-resolves a chunk after a crash: the same MPID again
            again = self.both(
                lambda s: strategy.resolve_batch(s, self.policy, batch_mpid, request, 0, mpid), replay=True
            )
            assert again.mpid == first.mpid and not again.changes

    @precondition(lambda self: self.model.records)
    @rule(
        whose=st.sampled_from(WHOSE[1:]),
        drawn=mpids,
        identity_type=st.sampled_from(TYPES),
        old=st.none() | identity_values,
        new=st.none() | identity_values,
    )
    def modify(self, whose: str, drawn: int, identity_type: str, old: str | None, new: str | None) -> None:
        target = self.pick(whose, drawn)
        if target is not None and (old or new):
            change = IdentityChange(identity_type, old, new)
            self.both(lambda s: strategy.modify(s, self.policy, target, [change]))

    @invariant()
    def same_state_as_the_model(self) -> None:
        if self.core is None:
            return
        index, records = lmdb_snapshot(self.core)
        assert index == {identity_key(t, v): holders for (t, v), holders in self.model.index.items()}
        assert records == {m: msgspec.to_builtins(r) for m, r in self.model.records.items()}

    @invariant()
    def index_and_records_agree(self) -> None:
        for (identity_type, value), holders in self.model.index.items():
            assert holders and len(set(holders)) == len(holders)
            if identity_type in self.policy.unique:
                assert len(holders) == 1, (identity_type, value, holders)
            for mpid in holders:
                record = self.model.records[mpid]
                assert not record.orphaned and value in record.identities[identity_type]
        for mpid, record in self.model.records.items():
            for identity_type, values in record.identities.items():
                for value in values:
                    assert (mpid in self.model.index.get((identity_type, value), ())) != record.orphaned

    @invariant()
    def profiles_exist_only_where_offered(self) -> None:
        assert self.model.records.keys() <= self.offered  # a batch's own MPID never creates a profile

    @invariant()
    def orphans_never_change(self) -> None:
        for mpid, record in self.model.records.items():
            if record.orphaned:
                state = msgspec.to_builtins(record)
                assert self.orphans.setdefault(mpid, state) == state, mpid


IndexMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestIdentityIndexAgainstModel = IndexMachine.TestCase


def test_the_index_keys_values_past_lmdbs_key_limit(tmp_path: Path) -> None:
    """Defence in depth behind the door's bound: a value whose key would pass LMDB's 511 bytes is keyed by its
    hash, so it resolves like any other instead of failing every call that shares the commit."""
    core = IdentityCore(tmp_path, Policy.of(strategy.CONVERSION))
    try:
        long_email, other = "\U0001f600" * 300, "\U0001f600" * 299 + "x"  # 1,200 bytes; differing at the end
        first, same, different = core.run(
            [
                lambda s: strategy.identify(s, core.policy, {"email": long_email}, 0, new_mpid=1),
                lambda s: strategy.identify(s, core.policy, {"email": long_email, "ios_idfv": "d"}, 0, new_mpid=2),
                lambda s: strategy.identify(s, core.policy, {"email": other}, 0, new_mpid=3),
            ]
        )
        assert (first.mpid, same.mpid, different.mpid) == (1, 1, 3)
        assert core.read(lambda s: s.holders("email", long_email)) == [1]
        assert len(identity_key("email", long_email)) == len(b"email\x01") + 32
        assert identity_key("email", "x" * 505) == b"email\x00" + b"x" * 505  # 511 bytes: still plain
    finally:
        core.store.close()
