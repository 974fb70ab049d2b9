"""Input access keys: issued once, stored hashed, verified once then from the cache; revocation, rotation and the
budget of cache misses."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cdp_actors.access import keys
from cdp_actors.access.keys import KeyVerifier, MissBudget, Secret, StoredKey, hash_secret, issue, verify_secret
from cdp_actors.errors import Forbidden, Overloaded


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hashes(monkeypatch):
    """Counts the scrypt computations (verifications against the stored hash) from here on: issue keys first."""
    calls = []
    real = keys._scrypt

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(keys, "_scrypt", counted)
    return calls


def stored(issued: keys.IssuedKey, input_id: int = 7, revision: int = 1) -> dict[str, StoredKey]:
    return {issued.key: StoredKey(issued.key, input_id, issued.secret_hash, revision)}


def test_an_issued_secret_shows_only_through_reveal():
    issued = issue()
    secret = issued.secret.reveal()
    assert len(issued.key) == 32 and int(issued.key, 16) >= 0
    assert len(secret) == 64
    assert secret not in repr(issued) and secret not in str(issued.secret) and secret not in issued.secret_hash
    assert verify_secret(issued.secret_hash, issued.secret)
    assert not verify_secret(issued.secret_hash, Secret(secret[:-1]))
    assert issue().secret.reveal() != secret


def test_the_same_secret_hashes_differently_each_time():
    assert hash_secret(Secret("s" * 20)) != hash_secret(Secret("s" * 20))


def test_malformed_stored_hashes_match_nothing():
    for stored_hash in (
        "",
        "scrypt$1$2",
        "bcrypt$16384$8$1$AAAA$AAAA",
        "scrypt$x$8$1$AAAA$AAAA",
        "scrypt$16384$8$1$%$%",
    ):
        assert not verify_secret(stored_hash, Secret("s"))


def test_parameters_travel_with_the_hash_and_old_ones_need_a_rehash():
    old = "scrypt$1024$8$1$" + hash_secret(Secret("s")).split("$", 4)[4]
    assert keys.needs_rehash(old)
    assert not keys.needs_rehash(hash_secret(Secret("s")))


def test_a_key_is_hashed_once_then_answered_from_the_cache(hashes):
    issued = issue()
    verifier = KeyVerifier(stored(issued))
    secret = issued.secret.reveal()
    hashes.clear()
    assert verifier.cached(issued.key, secret) is None
    assert verifier.verify(issued.key, secret) == 7
    assert len(hashes) == 1
    for _ in range(100):
        assert verifier.cached(issued.key, secret) == 7
        assert verifier.verify(issued.key, secret) == 7
    assert len(hashes) == 1


def test_a_wrong_secret_is_refused_and_remembered(hashes):
    issued = issue()
    verifier = KeyVerifier(stored(issued))
    hashes.clear()
    for _ in range(3):
        with pytest.raises(Forbidden) as refused:
            verifier.verify(issued.key, "wrong-secret")
        assert "wrong-secret" not in str(refused.value)
    assert len(hashes) == 1
    assert verifier.verify(issued.key, issued.secret.reveal()) == 7
    assert len(hashes) == 2


def test_concurrent_misses_on_the_same_credentials_share_one_verification(hashes):
    """A replica's first requests come together: one hash, the others take its answer (none is refused 429)."""
    issued = issue()
    verifier = KeyVerifier(stored(issued), MissBudget(per_s=1, burst=1))
    hashes.clear()
    start = threading.Barrier(6)

    def request(secret: str) -> int | str:
        start.wait()
        try:
            return verifier.verify(issued.key, secret)
        except Forbidden:
            return "forbidden"

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(request, [issued.secret.reveal()] * 6))
    assert answers == [7] * 6
    assert len(hashes) == 1


def test_an_unknown_key_is_refused_without_hashing(hashes):
    verifier = KeyVerifier(stored(issue()))
    hashes.clear()
    with pytest.raises(Forbidden):
        verifier.verify("no-such-key", "secret")
    with pytest.raises(Forbidden):
        verifier.cached("no-such-key", "secret")
    assert hashes == []


def test_revocation_invalidates_the_cached_answer():
    issued = issue()
    verifier = KeyVerifier(stored(issued))
    secret = issued.secret.reveal()
    verifier.verify(issued.key, secret)
    verifier.replace({})  # the key revoked: gone from the new configuration version
    with pytest.raises(Forbidden):
        verifier.cached(issued.key, secret)
    with pytest.raises(Forbidden):
        verifier.verify(issued.key, secret)


def test_a_new_revision_invalidates_even_without_replace_pruning(hashes):
    issued = issue()
    verifier = KeyVerifier(stored(issued, revision=1))
    hashes.clear()
    verifier.verify(issued.key, issued.secret.reveal())
    verifier._keys = dict(stored(issued, revision=2))  # a version swap that skipped pruning
    assert verifier.cached(issued.key, issued.secret.reveal()) is None
    assert verifier.verify(issued.key, issued.secret.reveal()) == 7
    assert len(hashes) == 2


def test_rotation_refuses_the_old_secret_and_accepts_the_new():
    old = issue()
    verifier = KeyVerifier(stored(old, revision=1))
    verifier.verify(old.key, old.secret.reveal())
    new_secret = Secret("n" * 64)
    verifier.replace({old.key: StoredKey(old.key, 7, hash_secret(new_secret), 2)})
    with pytest.raises(Forbidden):
        verifier.verify(old.key, old.secret.reveal())
    assert verifier.verify(old.key, new_secret.reveal()) == 7


def test_a_key_removed_and_added_again_refuses_its_old_secret():
    """The revision starts over at 1 for a key added again: the cached answer must not outlive the old hash, even
    for a replica that never held the version without the key (two changes within one poll)."""
    old = issue()
    verifier = KeyVerifier(stored(old, revision=1))
    verifier.verify(old.key, old.secret.reveal())
    new_secret = Secret("n" * 64)
    verifier.replace({old.key: StoredKey(old.key, 7, hash_secret(new_secret), 1)})
    assert verifier.cached(old.key, old.secret.reveal()) is None  # no answer from the cache: a hash decides
    with pytest.raises(Forbidden):
        verifier.verify(old.key, old.secret.reveal())
    assert verifier.verify(old.key, new_secret.reveal()) == 7


def test_a_cached_refusal_does_not_outlive_a_new_hash():
    issued = issue()
    verifier = KeyVerifier(stored(issued, revision=3))
    with pytest.raises(Forbidden):
        verifier.verify(issued.key, "the-next-secret")
    verifier.replace({issued.key: StoredKey(issued.key, 7, hash_secret(Secret("the-next-secret")), 3)})
    assert verifier.verify(issued.key, "the-next-secret") == 7


def test_an_unrelated_change_keeps_other_keys_cached(hashes):
    first, second = issue(), issue()
    verifier = KeyVerifier({**stored(first, 1), **stored(second, 2)})
    verifier.verify(first.key, first.secret.reveal())
    hashes.clear()
    verifier.replace({**stored(first, 1), **stored(second, 2, revision=5)})
    assert verifier.cached(first.key, first.secret.reveal()) == 1
    assert hashes == []


def test_cache_misses_share_a_budget():
    clock = Clock()
    issued = issue()
    verifier = KeyVerifier(stored(issued), MissBudget(per_s=2, burst=2, clock=clock))
    for attempt in range(2):
        with pytest.raises(Forbidden):
            verifier.verify(issued.key, f"guess-{attempt}")
    with pytest.raises(Overloaded) as overloaded:
        verifier.verify(issued.key, issued.secret.reveal())
    assert overloaded.value.retry_after_s == 1
    clock.now += 0.5  # one miss refilled
    assert verifier.verify(issued.key, issued.secret.reveal()) == 7
    with pytest.raises(Overloaded):
        verifier.verify(issued.key, "guess-3")
    assert verifier.verify(issued.key, issued.secret.reveal()) == 7  # a hit spends nothing


def test_the_caches_are_bounded():
    issued = issue()
    verifier = KeyVerifier(stored(issued), MissBudget(per_s=1000, burst=1000), max_cached=3)
    for attempt in range(5):
        with pytest.raises(Forbidden):
            verifier.verify(issued.key, f"guess-{attempt}")
    assert len(verifier._refused) == 3


def test_the_verifier_shows_no_secret():
    issued = issue()
    verifier = KeyVerifier(stored(issued))
    verifier.verify(issued.key, issued.secret.reveal())
    assert issued.secret.reveal() not in repr(verifier) and issued.key not in repr(verifier)


def cheap_hash(secret: str) -> str:
    """A hash in the stored format with tiny scrypt parameters, so a state machine can verify thousands."""
    salt = b"0123456789abcdef"
    digest = keys._scrypt(secret, salt, 16, 1, 1)
    return f"scrypt$16$1$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class VerifierMachine(RuleBasedStateMachine):
    """Keys issued, rotated and revoked in the configuration, versions handed to the replica now and then, requests
    with current, old and wrong secrets: the verifier answers as a check against the version it holds would."""

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, tuple[int, str, int]] = {}  # key → (input id, secret, revision)
        self.held = dict(self.config)  # the version the replica holds
        self.retired: list[tuple[str, str]] = []
        self.verifier = KeyVerifier({}, MissBudget(per_s=1e9, burst=1e9), max_cached=4)

    def _stored(self) -> dict[str, StoredKey]:
        return {k: StoredKey(k, i, cheap_hash(s), r) for k, (i, s, r) in self.config.items()}

    @rule(key=st.sampled_from(["k1", "k2"]), secret=st.sampled_from(["s1", "s2"]))
    def issue_or_rotate(self, key, secret):
        if key in self.config:
            self.retired.append((key, self.config[key][1]))
        revision = self.config[key][2] + 1 if key in self.config else 1
        self.config[key] = (int(key[1]), secret, revision)

    @rule(key=st.sampled_from(["k1", "k2"]))
    def revoke(self, key):
        if key in self.config:
            self.retired.append((key, self.config.pop(key)[1]))

    @rule()
    def new_version(self):
        self.held = dict(self.config)
        self.verifier.replace(self._stored())

    @rule(key=st.sampled_from(["k1", "k2", "k3"]), secret=st.sampled_from(["s1", "s2", ""]))
    def request(self, key, secret):
        held = self.held.get(key)
        if held is not None and held[1] == secret:
            assert self.verifier.verify(key, secret) == held[0]
        else:
            with pytest.raises(Forbidden):
                self.verifier.verify(key, secret)

    @invariant()
    def caches_stay_bounded(self):
        assert len(self.verifier._accepted) <= 4 and len(self.verifier._refused) <= 4


VerifierMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_verifier_state_machine = VerifierMachine.TestCase
