"""Input access keys: issued once, stored as salted scrypt hashes, verified on the Events API's hot path from a cache.

`issue()` makes a key (32 hex characters, as mParticle's) and a secret (64 URL-safe characters, 384 random bits);
the secret is in the create response only, the store keeps `hash_secret(secret)`
(https://docs.mparticle.com/developers/apis/platform/apps/: "this is the only time the Secret is transmitted").

Why scrypt (hashlib's, OpenSSL) and these parameters: the hash only has to make a stolen data directory useless,
and a secret of 384 random bits cannot be guessed however fast the hash, so the slow part of a password hash
buys nothing here; what matters (issue 15 point 4) is what a cache miss costs the Events API. scrypt at
n=2^14, r=8 (16 MiB, the scrypt paper's interactive setting) took 60–80 ms on the 2-core machine while it ran CI,
against 170–300 ms for argon2id at the password parameters. It comes with Python (no C extension to load in every
ingest replica), releases the GIL (the miss runs in a thread beside the event loop), and its parameters are in
the stored string, so changing them leaves old hashes verifiable (`needs_rehash` names them; a rotation replaces
them: a rehash needs the secret, which only a verification sees).

Not for HMAC-signed requests: IDSync's `x-mp-signature` mode (serve_apps/auth.py) computes an HMAC with the input's
secret, so an input that takes signed requests needs its secret recoverable (encrypted at rest with issue 15
point 6's key), not only hashed.

`KeyVerifier` is a replica's view: the current configuration's `{key: StoredKey}` and two bounded caches keyed by
(key, keyed BLAKE2b of the secret under a per-process random key, so the cache holds nothing that verifies
elsewhere). A hit costs one BLAKE2b and three dict lookups: 1.3 µs per verification (timeit, best of 5, on the
2-core machine while it ran CI), against 0.7 µs for a clear-text `compare_digest` of key and secret; a miss verifies
against the stored hash once: 60–80 ms there (`python -m benchmarks.input_keys` measures all three). Each
`StoredKey` has a `revision`, raised by the configuration on every revocation or rotation: a cached answer holds
only while the key's stamp it was made under (revision and stored hash) is current, so a revoked key is refused from
the first request after the replica has the new configuration version (a second, issue 15 point 3). The hash is part
of the stamp because the revision alone does not name a secret: a key removed and added again starts over at
revision 1 with another secret, and a replica that saw neither version in between must not keep answering from the
old one's cache. Wrong secrets are cached too (a misconfigured client retrying), and cache misses share a budget per
replica, so a flood of random secrets costs a bounded share of a core and answers 429; concurrent misses on the same
credentials (a replica's first requests) wait for one verification.

How the runtime uses it:
- The store never keeps an input's secret in clear: `hashed_inputs(config)` turns the seed file's clear secrets
  into `secret_hash`es before the control actor makes the file version 1 (`ControlCore.seed`). Only an input with
  `signed_requests: true` keeps its secret beside the hash (IDSync's HMAC mode, above).
- Each Events API and IDSync replica derives its `KeyVerifier` from the configuration it follows (`InputKeys`, the
  `derive` of its `LiveConfig`): one verifier per replica, `replace`d with each version's `stored_keys`, so the
  cache outlives versions that leave a key alone. Per request: `verifier.cached(key, secret)`; on `None`, `await
  asyncio.to_thread(verifier.verify, key, secret)` (serve_apps/auth.py `verify_basic`). `verify` raises Forbidden
  (wrong key or secret) or Overloaded (miss budget spent).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cdp_actors.config import Input, WorkspaceConfig
from cdp_actors.errors import Forbidden, Overloaded

SCRYPT_N = 2**14
"""CPU/memory cost: 16 MiB with r=8; see the module docstring for why not more."""
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
"""OpenSSL refuses more than 32 MiB by default; room for a later n=2^15."""
SALT_BYTES = 16
HASH_BYTES = 32
ACCESS_KEY_BYTES = 16
"""32 hex characters, the shape of mParticle's access keys."""
SECRET_BYTES = 48
"""384 bits, 64 URL-safe characters, the length of mParticle's secrets."""
MAX_SECRET_CHARS = 256
"""A longer "secret" is refused before hashing: it is not one we issued."""
MAX_CACHED = 10_000
"""Cached answers per replica and per kind (accepted, refused): ~200 bytes each, 2 MB at most. Accepted entries
need a correct secret, so they number the live (key, secret) pairs; refused ones are evicted oldest first."""
MISSES_PER_S = 5.0
"""Cache misses (scrypt verifications) a replica does per second, at most: ≤ 40 % of a core at ~80 ms each.
Enough to warm a replica's cache for a handful of inputs at once; a flood of wrong secrets gets 429, not a core."""
MISS_BURST = 10.0
"""Misses allowed at once after a quiet spell (a replica's start, with ten inputs sending)."""
MISS_LOCKS = 64
"""Locks that make concurrent misses on the same credentials wait for one verification (striped by a hash of the
credentials: 64 stripes make two different ones sharing a lock, so waiting for each other, rare)."""
RETRY_AFTER_S = 1

_SCHEME = "scrypt"
_REFUSED = "API key/secret are present but not valid."


class Secret:
    """A secret in memory: masked in repr and str."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class IssuedKey:
    """A new key: `secret` goes into the create response and nowhere else; `secret_hash` into the store."""

    key: str
    secret: Secret
    secret_hash: str


@dataclass(frozen=True)
class StoredKey:
    """An input's key as the configuration stores it."""

    key: str
    input_id: int
    secret_hash: str
    revision: int
    """Raised by every revocation, rotation or change of this key: a cached verification made under another
    revision no longer holds."""

    @property
    def stamp(self) -> tuple[int, str]:
        """What a cached answer was made under: it holds while the key has this stamp."""
        return (self.revision, self.secret_hash)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=HASH_BYTES)


def hash_secret(secret: Secret) -> str:
    """`scrypt$n$r$p$salt$hash` (base64): parameters travel with the hash."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(secret.reveal(), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(stored_hash: str, secret: Secret) -> bool:
    """Whether `secret` is the one `stored_hash` was made from (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored_hash.split("$")
        if scheme != _SCHEME or len(secret.reveal()) > MAX_SECRET_CHARS:
            return False
        actual = _scrypt(secret.reveal(), base64.b64decode(salt), int(n), int(r), int(p))
        return hmac.compare_digest(actual, base64.b64decode(digest))
    except ValueError:  # a malformed stored hash (also binascii.Error): matches nothing
        return False


def needs_rehash(stored_hash: str) -> bool:
    return not stored_hash.startswith(f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$")


def issue() -> IssuedKey:
    secret = Secret(secrets.token_urlsafe(SECRET_BYTES))
    return IssuedKey(secrets.token_hex(ACCESS_KEY_BYTES), secret, hash_secret(secret))


class MissBudget:
    """A token bucket of cache misses: `MISSES_PER_S` refilled continuously, `MISS_BURST` at most."""

    def __init__(self, per_s: float = MISSES_PER_S, burst: float = MISS_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._per_s, self._burst, self._clock = per_s, burst, clock
        self._tokens, self._at = burst, clock()
        self._lock = threading.Lock()  # misses run in threads

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_s)
            self._at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


class KeyVerifier:
    """One replica's check of Events API credentials: the stored hashes once, then cached answers."""

    def __init__(self, keys: Mapping[str, StoredKey], budget: MissBudget | None = None,
                 max_cached: int = MAX_CACHED) -> None:  # fmt: skip
        self._keys = dict(keys)
        self._budget = budget or MissBudget()
        self._max_cached = max_cached
        self._pepper = secrets.token_bytes(32)
        self._accepted: dict[tuple[str, bytes], tuple[int, str]] = {}  # → the key's stamp it was verified under
        self._refused: dict[tuple[str, bytes], tuple[int, str]] = {}
        self._lock = threading.Lock()
        """Held by writers only (misses run in threads, `replace` on the event loop); `cached` reads without it:
        a dict lookup is atomic under the GIL."""
        self._miss_locks = [threading.Lock() for _ in range(MISS_LOCKS)]
        """A replica's first requests arrive together with the same credentials: one verifies, the others wait for
        its cached answer instead of each spending a hash (and the budget, which would answer them 429)."""

    def __repr__(self) -> str:
        return f"KeyVerifier({len(self._keys)} keys, {len(self._accepted)} cached)"

    def replace(self, keys: Mapping[str, StoredKey]) -> None:
        """A new configuration version: answers about keys it changed, revoked or removed are dropped."""
        with self._lock:
            self._keys = dict(keys)
            for cache in (self._accepted, self._refused):
                for entry in [e for e, stamp in cache.items() if self._stamp_of(e[0]) != stamp]:
                    del cache[entry]

    def cached(self, key: str, secret: str) -> int | None:
        """The input id for a cached acceptance; Forbidden for an unknown key or a cached refusal; None when only
        `verify` can tell (run it in a thread: it may hash)."""
        stored = self._keys.get(key)
        if stored is None:
            raise Forbidden(_REFUSED)
        entry = (key, self._digest(secret))
        stamp = stored.stamp
        if self._accepted.get(entry) == stamp:
            return stored.input_id
        if self._refused.get(entry) == stamp:
            raise Forbidden(_REFUSED)
        return None

    def verify(self, key: str, secret: str) -> int:
        """The input id these credentials belong to; Forbidden if they are wrong, Overloaded if a hash is needed
        and this replica has spent its budget of them."""
        found = self.cached(key, secret)
        if found is not None:
            return found
        entry = (key, self._digest(secret))
        with self._miss_locks[hash(entry) % MISS_LOCKS]:
            return self._verify_once(entry, secret)

    def _verify_once(self, entry: tuple[str, bytes], secret: str) -> int:
        found = self.cached(entry[0], secret)  # another thread may have verified these credentials meanwhile
        if found is not None:
            return found
        stored = self._keys.get(entry[0])
        if stored is None:  # revoked by a `replace` since `cached` looked (this runs in a thread)
            raise Forbidden(_REFUSED)
        if not self._budget.take():
            raise Overloaded("Too many credentials to verify at once; retry shortly.", RETRY_AFTER_S)
        if verify_secret(stored.secret_hash, Secret(secret)):
            self._remember(self._accepted, entry, stored.stamp)
            return stored.input_id
        self._remember(self._refused, entry, stored.stamp)
        raise Forbidden(_REFUSED)

    def _digest(self, secret: str) -> bytes:
        return hashlib.blake2b(secret.encode("utf-8", "replace"), key=self._pepper, digest_size=16).digest()

    def _stamp_of(self, key: str) -> tuple[int, str] | None:
        stored = self._keys.get(key)
        return stored.stamp if stored else None

    def _remember(self, cache: dict[tuple[str, bytes], tuple[int, str]], entry: tuple[str, bytes],
                  stamp: tuple[int, str]) -> None:  # fmt: skip
        with self._lock:
            if len(cache) >= self._max_cached:
                del cache[next(iter(cache))]  # the oldest: dicts keep insertion order
            cache[entry] = stamp


# ---- the configuration's keys --------------------------------------------------------------------------------


def hashed_inputs(config: WorkspaceConfig) -> WorkspaceConfig:
    """The configuration as the store keeps it: every input's clear `secret` replaced by its `secret_hash`, except
    for inputs that take signed requests, which keep the secret beside the hash. Inputs without a clear secret
    are left as they are. Costs one scrypt (~70 ms) per input with a clear secret: call it once, on the seed."""
    return config.model_copy(update={"inputs": [_hashed(item) for item in config.inputs]})


def _hashed(item: Input) -> Input:
    if item.secret is None:
        return item
    update: dict[str, object] = {"secret_hash": hash_secret(Secret(item.secret.get_secret_value()))}
    if not item.signed_requests:
        update["secret"] = None
    return item.model_copy(update=update)


def stored_keys(config: WorkspaceConfig) -> dict[str, StoredKey]:
    """`{key: StoredKey}` of the inputs that have a stored hash."""
    return {
        item.key: StoredKey(item.key, item.id, item.secret_hash, item.key_revision)
        for item in config.inputs
        if item.secret_hash is not None
    }


class InputKeys:
    """A replica's `derive` for its live configuration: one `KeyVerifier` across versions, given each version's
    keys (a version that leaves a key alone keeps its cached answers).

    An input that reaches the replica with a clear secret and no hash (a configuration that did not pass through
    the store's seed) is hashed here once, and the hash reused while its secret stays the same: a fresh hash per
    version would have a new salt, so a new stamp, and empty the cache at every version."""

    def __init__(self, budget: MissBudget | None = None) -> None:
        self.verifier = KeyVerifier({}, budget)
        self._hashed_here: dict[tuple[int, str, int, bytes], str] = {}
        self._pepper = secrets.token_bytes(32)

    def __call__(self, config: WorkspaceConfig) -> KeyVerifier:
        keys = stored_keys(config)
        hashed_here: dict[tuple[int, str, int, bytes], str] = {}
        for item in config.inputs:
            if item.secret_hash is None and item.secret is not None:
                secret = item.secret.get_secret_value()
                memo = (item.id, item.key, item.key_revision, self._digest(secret))
                hashed_here[memo] = self._hashed_here.get(memo) or hash_secret(Secret(secret))
                keys[item.key] = StoredKey(item.key, item.id, hashed_here[memo], item.key_revision)
        self._hashed_here = hashed_here
        self.verifier.replace(keys)
        return self.verifier

    def _digest(self, secret: str) -> bytes:
        return hashlib.blake2b(secret.encode(), key=self._pepper, digest_size=16).digest()
