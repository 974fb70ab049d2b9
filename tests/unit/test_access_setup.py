"""What access control takes from the machine: the access key (environment or data directory), the console users'
hashes (configured or generated-and-announced-once passwords, never stored in clear), `cdp serve`'s demo warning."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from cdp_actors.access.passwords import Password, verify_password
from cdp_actors.access.setup import (
    ACCESS_KEY_ENV,
    ACCESS_KEY_FILE,
    USERS_FILE,
    AccessKeyError,
    demo_credentials,
    load_access_key,
    load_password_hashes,
    prepare_users,
)
from cdp_actors.cli import demo_credentials_warning
from cdp_actors.config import ConsoleUser, parse_workspace
from tests.conftest import demo_config

PASSWORD = "configured-password-1"


def test_the_key_is_created_once_private_and_then_read_back(tmp_path: Path):
    first = load_access_key({}, tmp_path)
    assert len(first) == 32 and load_access_key({}, tmp_path) == first
    assert stat.S_IMODE((tmp_path / ACCESS_KEY_FILE).stat().st_mode) == 0o600
    assert load_access_key({}, tmp_path / "other") != first


def test_the_environment_key_wins_and_a_bad_one_is_refused_without_showing_it(tmp_path: Path):
    key = bytes(range(32))
    assert load_access_key({ACCESS_KEY_ENV: base64.b64encode(key).decode()}, tmp_path) == key
    assert not (tmp_path / ACCESS_KEY_FILE).exists()
    for bad in ("not base64 !", base64.b64encode(b"short").decode()):
        with pytest.raises(AccessKeyError) as refused:
            load_access_key({ACCESS_KEY_ENV: bad}, tmp_path)
        assert bad not in str(refused.value)


def test_a_truncated_key_file_is_refused(tmp_path: Path):
    (tmp_path / ACCESS_KEY_FILE).write_bytes(b"abc")
    with pytest.raises(AccessKeyError):
        load_access_key({}, tmp_path)


def user(name: str, password: str | None = None) -> ConsoleUser:
    return ConsoleUser.model_validate({"name": name, "role": "admin", "password": password})


def test_a_user_without_a_password_gets_one_announced_once_and_stored_only_hashed(tmp_path: Path):
    announced: list[tuple[str, Password]] = []
    prepare_users([user("admin")], tmp_path, lambda name, password: announced.append((name, password)))
    assert [name for name, _ in announced] == ["admin"]
    generated = announced[0][1]
    stored = (tmp_path / USERS_FILE).read_text()
    assert generated.reveal() not in stored
    assert verify_password(load_password_hashes(tmp_path)["admin"], generated)
    assert stat.S_IMODE((tmp_path / USERS_FILE).stat().st_mode) == 0o600
    prepare_users([user("admin")], tmp_path, lambda name, password: announced.append((name, password)))
    assert len(announced) == 1  # the next start keeps the hash and shows nothing


def test_a_configured_password_is_hashed_kept_and_rehashed_when_it_changes(tmp_path: Path):
    def nothing(name: str, password: Password) -> Any:
        raise AssertionError("a configured password is never announced")

    first = prepare_users([user("admin", PASSWORD)], tmp_path, nothing)
    assert PASSWORD not in (tmp_path / USERS_FILE).read_text()
    assert prepare_users([user("admin", PASSWORD)], tmp_path, nothing) == first  # same password: same hash
    changed = prepare_users([user("admin", "another-password-2")], tmp_path, nothing)
    assert verify_password(changed["admin"], Password("another-password-2"))
    assert not verify_password(changed["admin"], Password(PASSWORD))


def test_users_no_longer_configured_are_dropped(tmp_path: Path):
    prepare_users([user("admin", PASSWORD), user("gone", PASSWORD)], tmp_path, lambda *_: None)
    prepare_users([user("admin", PASSWORD)], tmp_path, lambda *_: None)
    assert list(json.loads((tmp_path / USERS_FILE).read_text())) == ["admin"]


def test_an_unset_password_variable_means_none(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CDP_TEST_UNSET_PASSWORD", raising=False)
    assert user("admin", "${CDP_TEST_UNSET_PASSWORD}").password is None
    monkeypatch.setenv("CDP_TEST_UNSET_PASSWORD", PASSWORD)
    configured = user("admin", "${CDP_TEST_UNSET_PASSWORD}").password
    assert configured is not None and configured.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(user("admin", "${CDP_TEST_UNSET_PASSWORD}"))


def test_serve_warns_about_demo_credentials_only_beyond_loopback():
    config = demo_config("http://127.0.0.1:9/webhook")
    assert set(demo_credentials(config)) == {"input demo-key", "api client demo-admin", "api client demo-client"}
    for host in ("127.0.0.1", "localhost", "::1"):
        assert demo_credentials_warning(config, host) is None
    warning = demo_credentials_warning(config, "0.0.0.0")
    assert warning and "api client demo-admin" in warning
    assert "demo-admin-secret" not in warning and "demo-secret" not in warning
    document = config.model_dump(mode="json")
    document["inputs"][0]["secret"] = "changed"
    for client in document["api_clients"]:
        client["client_secret"] = "changed"
    document["users"] = []
    assert demo_credentials_warning(parse_workspace(document), "0.0.0.0") is None


def test_without_an_announcer_no_password_is_generated(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    assert prepare_users([user("admin")], tmp_path, None) == {}
    assert "admin" in caplog.text
    assert prepare_users([user("admin", PASSWORD)], tmp_path, None).keys() == {"admin"}
