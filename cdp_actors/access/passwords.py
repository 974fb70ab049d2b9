"""Console users' passwords: argon2id hashes with named parameters, rehash when they change, generated first passwords.

A password lives in a `Password` while it is in memory: its repr and str are masked, so a log line, a traceback's
locals or an exception's text never carry it. Only `hash_password` and `verify_password` reveal it, to argon2.

Wiring (next session): the login handler calls `verify_password(stored_hash, Password(form_password))`; when
it returns `Verified.REHASH` the handler stores `hash_password(...)` of the same password (parameters were
raised since the hash was made). A login for an unknown user name calls `verify_unknown_user` so that it takes
as long as a wrong password and timing does not tell which user names exist. First start: `generate_password()`
when `CDP_ADMIN_PASSWORD` is unset, printed once, only its hash stored.
Cost: one verification took 170–300 ms of one core on the 2-core machine while it ran CI (less on an idle one):
a login, never a request on a hot path (a session cookie carries the rest).
"""

from __future__ import annotations

import contextlib
import enum
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cdp_actors.errors import BadRequest

ARGON2_TIME_COST = 3
"""Passes over memory. With the 64 MiB below this is RFC 9106's second recommended option (argon2id, t=3,
64 MiB), argon2-cffi's default: a fraction of a second per hash, slow for a guesser, fine for a login."""
ARGON2_MEMORY_KIB = 64 * 1024
"""Memory per hash in KiB: what makes a GPU guesser pay per guess in memory, not only in compute."""
ARGON2_PARALLELISM = 4
"""Lanes per hash (RFC 9106's recommendation); part of the hash, so changing it triggers a rehash at login."""
MIN_PASSWORD_CHARS = 12
"""Shortest password a console user may set: NIST SP 800-63B asks for at least 8; 12 because these accounts
see personal data and have no second factor yet."""
MAX_PASSWORD_CHARS = 256
"""Longest accepted: a passphrase fits; a megabyte "password" would only make every login attempt costly."""
GENERATED_PASSWORD_BYTES = 18
"""Randomness of a generated first password: 144 bits, 24 URL-safe characters, easy to paste."""

_HASHER = PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM)
_UNKNOWN_USER_HASH = _HASHER.hash(secrets.token_urlsafe(GENERATED_PASSWORD_BYTES))
"""A hash no password matches, verified for unknown user names so that they cost what a wrong password costs."""


class Password:
    """A password in memory: masked in repr and str; `reveal()` only where it is hashed or verified."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Password('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("A Password is not pickled: hash it first")  # never sent to an actor or written in clear


class Verified(enum.Enum):
    """What a verification found; truthy only when the password matches."""

    MISMATCH = "mismatch"
    OK = "ok"
    REHASH = "rehash"
    """It matches, and the hash was made with other parameters: store a new hash of the same password."""

    def __bool__(self) -> bool:
        return self is not Verified.MISMATCH


def check_password_policy(password: Password, field: str = "$.password") -> None:
    """BadRequest naming the field (never the value) if the password is too short or too long."""
    length = len(password.reveal())
    if length < MIN_PASSWORD_CHARS:
        raise BadRequest(f"A password needs at least {MIN_PASSWORD_CHARS} characters", field)
    if length > MAX_PASSWORD_CHARS:
        raise BadRequest(f"A password has at most {MAX_PASSWORD_CHARS} characters", field)


def hash_password(password: Password) -> str:
    """The argon2id hash to store (PHC string: parameters and salt included)."""
    check_password_policy(password)
    return _HASHER.hash(password.reveal())


def verify_password(stored_hash: str, password: Password) -> Verified:
    """Whether `password` matches `stored_hash` (argon2 compares in constant time), and whether to rehash."""
    if len(password.reveal()) > MAX_PASSWORD_CHARS:
        verify_unknown_user()  # as slow as any other refusal
        return Verified.MISMATCH
    try:
        _HASHER.verify(stored_hash, password.reveal())
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return Verified.MISMATCH
    return Verified.REHASH if _HASHER.check_needs_rehash(stored_hash) else Verified.OK


def verify_unknown_user() -> None:
    """Spend a verification's time for a user name that does not exist."""
    with contextlib.suppress(VerificationError):
        _HASHER.verify(_UNKNOWN_USER_HASH, "")


def generate_password() -> Password:
    """A random first password (for the console's `admin` when `CDP_ADMIN_PASSWORD` is unset)."""
    return Password(secrets.token_urlsafe(GENERATED_PASSWORD_BYTES))
