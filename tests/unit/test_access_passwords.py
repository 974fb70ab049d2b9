"""Console passwords: argon2id, rehash when the parameters change, and never a password in a repr, a str, an
exception's text or a pickle."""

from __future__ import annotations

import pickle
import traceback

import pytest
from argon2 import PasswordHasher

from cdp_actors.access import passwords
from cdp_actors.access.passwords import (
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    Password,
    Verified,
    generate_password,
    hash_password,
    verify_password,
)
from cdp_actors.errors import BadRequest

SECRET = "correct horse battery staple"


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password(Password(SECRET))


def test_the_right_password_verifies_and_a_wrong_one_does_not(stored):
    assert stored.startswith("$argon2id$") and SECRET not in stored
    assert verify_password(stored, Password(SECRET)) is Verified.OK
    assert verify_password(stored, Password(SECRET + " ")) is Verified.MISMATCH
    assert not verify_password(stored, Password(""))
    assert verify_password(stored, Password(SECRET))


def test_hashes_are_salted(stored):
    assert hash_password(Password(SECRET)) != stored


def test_the_named_parameters_are_in_the_hash(stored):
    m, t, p = (
        f"m={passwords.ARGON2_MEMORY_KIB}",
        f"t={passwords.ARGON2_TIME_COST}",
        f"p={passwords.ARGON2_PARALLELISM}",
    )
    assert f"${m},{t},{p}$" in stored


def test_a_hash_made_with_other_parameters_asks_for_a_rehash():
    weaker = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(SECRET)
    assert verify_password(weaker, Password(SECRET)) is Verified.REHASH
    assert verify_password(weaker, Password("wrong password!")) is Verified.MISMATCH


def test_malformed_hashes_match_nothing():
    for stored_hash in ("", "plain", "$argon2id$v=19$m=1,t=1,p=1$AAAA$AAAA"):
        assert verify_password(stored_hash, Password(SECRET)) is Verified.MISMATCH


def test_an_oversized_password_is_refused_without_argon2_on_it(stored):
    assert verify_password(stored, Password(SECRET + "x" * MAX_PASSWORD_CHARS)) is Verified.MISMATCH


def test_password_policy_names_the_field_never_the_value():
    for value in ("short-pw", "x" * (MAX_PASSWORD_CHARS + 1)):
        with pytest.raises(BadRequest) as refused:
            hash_password(Password(value))
        assert refused.value.path == "$.password"
        text = "".join(traceback.format_exception(refused.value))
        assert value not in text
    assert len("short-pw") < MIN_PASSWORD_CHARS


def test_a_password_never_shows_in_repr_str_format_or_pickle():
    password = Password(SECRET)
    for shown in (repr(password), str(password), f"{password}", f"{password!r}", repr([password]),
                  repr({"password": password})):  # fmt: skip
        assert SECRET not in shown and "***" in shown
    with pytest.raises(TypeError) as refused:
        pickle.dumps(password)
    assert SECRET not in str(refused.value)


def test_a_failed_verification_raises_nothing_that_could_carry_the_password(stored):
    for hashed in (stored, "garbage"):
        assert verify_password(hashed, Password(SECRET + "!")) is Verified.MISMATCH  # a value, no exception


def test_generated_passwords_are_random_and_pass_the_policy():
    generated = {generate_password().reveal() for _ in range(50)}
    assert len(generated) == 50
    assert all(MIN_PASSWORD_CHARS <= len(p) <= MAX_PASSWORD_CHARS for p in generated)
    assert all(set(p) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for p in generated)


def test_unknown_users_cost_a_verification(monkeypatch):
    calls = []

    class Counting:
        def verify(self, *args):
            calls.append(args)
            return True

    unknown_user_hash = passwords._UNKNOWN_USER_HASH
    monkeypatch.setattr(passwords, "_HASHER", Counting())
    passwords.verify_unknown_user()
    verify_password("stored", Password("x" * (MAX_PASSWORD_CHARS + 1)))  # refused for its length, as slowly
    assert [args[0] for args in calls] == [unknown_user_hash, unknown_user_hash]
