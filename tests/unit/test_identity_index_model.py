"""Stateful property test: the LMDB IdentityIndex against the in-memory model, and the index invariants.

Random sequences of identify / login / logout / modify / batch resolution run on both; after every
step both hold the same state, every unique identity has at most one live holder, the index and the
profile records agree, and no orphaned profile is ever returned.
"""

from __future__ import annotations

import itertools
import tempfile

import msgspec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cdp_actors.identity import strategy
from cdp_actors.identity.index import IdentityCore, LmdbState
from cdp_actors.identity.strategy import IdentityChange, IdentityError, MemoryState, Policy
from cdp_actors.storage.lmdb_env import mpid_from_key

TYPES = ("customer_id", "email", "other", "ios_idfv", "android_uuid")
requests = st.dictionaries(st.sampled_from(TYPES), st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3)
POLICIES = [
    Policy.of(strategy.CONVERSION, unique=["customer_id", "email"], login=["customer_id", "email"]),
    Policy.of(strategy.LINK),
    Policy.of(strategy.ISOLATION, immutable=["other"]),
    Policy.of(strategy.BEST_MATCH),
]


def lmdb_snapshot(core: IdentityCore) -> tuple[dict, dict]:
    def read(state: LmdbState) -> tuple[dict, dict]:
        index = {}
        for key, _ in state.txn.cursor(db=state.holders_db):
            identity_type, value = key.decode().split("\x00")
            index[(identity_type, value)] = state.holders(identity_type, value)
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
        self.core: IdentityCore | None = None
        self.scratch = tempfile.TemporaryDirectory(prefix="idx-model-")
        self.policy = POLICIES[0]
        self.mpids = itertools.count(1)
        self.returned: list[int] = []

    def teardown(self) -> None:
        if self.core is not None:
            self.core.store.close()
        self.scratch.cleanup()

    @rule(which=st.integers(0, len(POLICIES) - 1))
    def choose_policy(self, which: int) -> None:
        if self.core is None:  # once, before the first operation
            self.policy = POLICIES[which]
            self.core = IdentityCore(self.scratch.name, self.policy)

    def both(self, operation) -> object:  # noqa: ANN001
        if self.core is None:
            self.core = IdentityCore(self.scratch.name, self.policy)
        try:
            expected = operation(self.model)
        except IdentityError as error:
            expected = error
        (actual,) = self.core.run([operation])
        if isinstance(expected, IdentityError):
            assert isinstance(actual, IdentityError) and actual.message == expected.message
            return None
        assert actual == expected
        if isinstance(actual, strategy.Outcome):
            self.returned.append(actual.mpid)
        return actual

    @rule(request=requests, use_previous=st.booleans())
    def identify(self, request: dict, use_previous: bool) -> None:
        previous = self.returned[-1] if use_previous and self.returned else None
        mpid = next(self.mpids)
        self.both(lambda s: strategy.identify(s, self.policy, request, 0, previous, new_mpid=mpid))

    @rule(request=requests)
    def login(self, request: dict) -> None:
        mpid = next(self.mpids)
        self.both(lambda s: strategy.login(s, self.policy, request, 0, None, new_mpid=mpid))

    @rule(request=requests)
    def logout(self, request: dict) -> None:
        mpid = next(self.mpids)
        self.both(lambda s: strategy.logout(s, self.policy, request, 0, new_mpid=mpid))

    @rule(request=requests, given=st.booleans())
    def batch(self, request: dict, given: bool) -> None:
        batch_mpid = self.returned[-1] if given and self.returned else None
        mpid = next(self.mpids)
        self.both(lambda s: strategy.resolve_batch(s, self.policy, batch_mpid, request, 0, mpid))

    @rule(identity_type=st.sampled_from(TYPES), old=st.sampled_from([None, "a"]), new=st.sampled_from([None, "c"]))
    def modify(self, identity_type: str, old: str | None, new: str | None) -> None:
        if self.returned and (old or new):
            target = self.returned[-1]
            self.both(lambda s: strategy.modify(s, self.policy, target, [IdentityChange(identity_type, old, new)]))

    @invariant()
    def same_state_as_the_model(self) -> None:
        if self.core is None:
            return
        index, records = lmdb_snapshot(self.core)
        assert index == self.model.index
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
    def orphans_are_never_returned(self) -> None:
        if self.returned:
            assert not self.model.records[self.returned[-1]].orphaned


IndexMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestIdentityIndexAgainstModel = IndexMachine.TestCase
