"""The control actor's core: secrets encrypted in every stored snapshot (and opened again, rotated, refused without
their key), the audit entry written with each change, the export with placeholders or in clear."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from cdp_actors.access.keys import Secret, hash_secret, verify_secret
from cdp_actors.access.keys import Secret as KeySecret
from cdp_actors.access.passwords import Password, hash_password
from cdp_actors.audit import AuditFilter
from cdp_actors.cli import main
from cdp_actors.config import WorkspaceConfig, load_workspace, parse_workspace
from cdp_actors.control.changes import AddOutput, AddUser, RemoveConnection, RemoveUser, UpdateOutput, UpdateUser
from cdp_actors.control.owner import CONTROL_DIR, ControlCore, differences_warning, file_differences
from cdp_actors.errors import BadRequest
from cdp_actors.secrets import (
    KEY_ENV,
    MASK,
    SecretsKeyError,
    default_key_file,
    ensure_key_file,
    generate_key,
    key_file_to_use,
    key_id,
)
from tests.conftest import TEST_ADMIN_PASSWORD

DEMO = Path(__file__).resolve().parents[2] / "configs" / "workspace.yaml"
BRAZE_KEY = "braze-api-key-1234567890"
AUTH_HEADER = "Bearer webhook-secret-0987"
SECRETS = ("demo-secret", "demo-admin-secret", "demo-client-secret", BRAZE_KEY, AUTH_HEADER, TEST_ADMIN_PASSWORD)


def workspace() -> WorkspaceConfig:
    document = yaml.safe_load(DEMO.read_text())
    document["outputs"][0]["settings"]["auth_header"] = AUTH_HEADER
    document["outputs"].append({"id": 2, "name": "braze", "kind": "braze",
                                "settings": {"api_url": "https://rest.example.com", "api_key": BRAZE_KEY}})  # fmt: skip
    return parse_workspace(document)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = generate_key()
    monkeypatch.setenv(KEY_ENV, value)
    return value


def stored_bytes(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in (data_dir / CONTROL_DIR).iterdir())


def test_no_secret_is_stored_in_clear_and_every_one_comes_back(tmp_path: Path, key: str) -> None:
    core = ControlCore(tmp_path)
    assert core.seed(workspace())
    core.apply(UpdateOutput(id=2, fields={"settings": {"api_key": BRAZE_KEY + "-new"}}), None, "alice")
    core.close()
    content = stored_bytes(tmp_path)
    assert not [secret for secret in SECRETS if secret.encode() in content]
    reopened = ControlCore(tmp_path)
    _, config = reopened.current()
    assert config.inputs[0].credentials_match("demo-key", "demo-secret")
    assert config.api_clients[0].credentials_match("demo-admin", "demo-admin-secret")
    assert config.users[0].password is not None and config.users[0].password.get_secret_value() == TEST_ADMIN_PASSWORD
    settings: Any = config.outputs[1].settings
    assert settings.api_key.get_secret_value() == BRAZE_KEY + "-new"
    assert config.outputs[0].settings.auth_header.get_secret_value() == AUTH_HEADER  # type: ignore[attr-defined]
    reopened.close()


def test_a_store_does_not_open_without_its_key(tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ControlCore(tmp_path).seed(workspace())
    other = generate_key()
    monkeypatch.setenv(KEY_ENV, other)
    with pytest.raises(SecretsKeyError) as refused:
        ControlCore(tmp_path)
    assert key_id(base64.b64decode(key)) in str(refused.value) and key not in str(refused.value)


def test_a_new_current_key_re_encrypts_every_kept_snapshot(tmp_path: Path, key: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    core = ControlCore(tmp_path)
    core.seed(workspace())
    core.apply(RemoveConnection(id=1), None, "alice")
    core.close()
    new = generate_key()
    monkeypatch.setenv(KEY_ENV, f"{new},{key}")
    ControlCore(tmp_path).close()
    monkeypatch.setenv(KEY_ENV, new)  # the old key gone: every snapshot still opens
    core = ControlCore(tmp_path)
    for version in (1, 2):
        assert core.store.stored_document(version) is not None
        assert core.sealer.key_ids(core.store.stored_document(version) or {}) == {key_id(base64.b64decode(new))}
        assert core.store.snapshot(version).api_clients[0].credentials_match("demo-admin", "demo-admin-secret")


def test_an_envelope_moved_to_another_item_does_not_open(tmp_path: Path, key: str) -> None:
    core = ControlCore(tmp_path)
    core.seed(workspace())
    document = core.store.stored_document() or {}
    clients = document["api_clients"]
    clients[1]["client_secret"] = clients[0]["client_secret"]  # demo-client would get demo-admin's secret
    with pytest.raises(SecretsKeyError):
        core.sealer.unseal(document)


def test_each_change_is_audited_in_its_own_transaction_secrets_masked(tmp_path: Path, key: str) -> None:
    core = ControlCore(tmp_path)
    core.seed(workspace())
    core.apply(UpdateOutput(id=2, fields={"settings": {"api_key": "rotated-braze-key-1"}}), None, "alice")
    core.apply(AddOutput(fields={"name": "hook", "kind": "webhook", "settings": {"url": "https://x.example"}}),
               None, "bob")  # fmt: skip
    with pytest.raises(BadRequest):
        core.apply(UpdateOutput(id=2, fields={"settings": {"api_url": "ftp://nope"}}), None, "mallory")
    page = core.audit_page("asc")
    assert [(e.actor, e.action, e.target) for e in page.entries] == [
        ("seed", "seed", "workspace"), ("alice", "update", "output:2"), ("bob", "create", "output:3")]  # fmt: skip
    update = page.entries[1]
    assert update.before["settings"]["api_key"] == MASK and update.after["settings"]["api_key"] == MASK
    assert [(c.path, c.before, c.after) for c in update.changes] == [("$.settings.api_key", MASK, MASK)]
    assert page.entries[2].before is None and page.entries[2].after["name"] == "hook"
    text = msgspec.json.encode(page).decode()
    assert not [secret for secret in (*SECRETS, "rotated-braze-key-1") if secret in text]
    newest = core.audit_page("desc", limit=1, filters=AuditFilter(actor="alice"))
    assert [e.id for e in newest.entries] == [update.id]


def test_console_user_changes_are_stored_and_audited_by_name_hash_masked(tmp_path: Path, key: str) -> None:
    core = ControlCore(tmp_path)
    core.seed(workspace())
    password_hash = hash_password(Password("a-brand-new-password"))
    core.apply(AddUser(fields={"name": "ada", "role": "support", "password_hash": password_hash}), None, "alice")
    core.apply(UpdateUser(name="ada", fields={"role": "read_only"}), None, "alice")
    core.apply(RemoveUser(name="ada"), None, "bob")
    entries = core.audit_page("asc").entries[1:]
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("alice", "create", "user:ada"), ("alice", "update", "user:ada"), ("bob", "delete", "user:ada")]  # fmt: skip
    assert entries[0].after["password_hash"] == MASK and entries[2].after is None
    assert password_hash not in msgspec.json.encode(entries).decode()


def test_a_personal_change_is_audited_by_paths_only(tmp_path: Path, key: str) -> None:
    core = ControlCore(tmp_path)
    core.seed(workspace())
    entry_id = core.audit("admin", "edit", "profile:42", None, {"user_attributes": {"email": "ada@example.com"}},
                          personal=True)  # fmt: skip
    entry = core.audit_page("desc", limit=1).entries[0]
    assert entry.id == entry_id and entry.target == "profile:42"
    assert entry.after is None and [c.path for c in entry.changes] == ["$.user_attributes.email"]
    assert b"ada@example.com" not in stored_bytes(tmp_path)


EXPORTED_VARIABLES = {
    "CDP_INPUT_1_SECRET": "demo-secret",
    "CDP_OUTPUT_1_AUTH_HEADER": AUTH_HEADER,
    "CDP_OUTPUT_2_API_KEY": BRAZE_KEY,
    "CDP_API_CLIENT_DEMO_ADMIN_CLIENT_SECRET": "demo-admin-secret",
    "CDP_API_CLIENT_DEMO_CLIENT_CLIENT_SECRET": "demo-client-secret",
    "CDP_USER_ADMIN_PASSWORD": TEST_ADMIN_PASSWORD,
}


def test_the_export_names_secrets_as_placeholders_or_holds_them_when_asked(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = ControlCore(tmp_path)
    core.seed(workspace())
    masked = core.export_yaml()
    assert not [secret for secret in SECRETS if secret in masked]
    assert "${CDP_OUTPUT_2_API_KEY}" in masked and "${CDP_API_CLIENT_DEMO_ADMIN_CLIENT_SECRET}" in masked
    for name, value in EXPORTED_VARIABLES.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "masked.yaml").write_text(masked)
    assert load_workspace(tmp_path / "masked.yaml") == core.current()[1]
    (tmp_path / "clear.yaml").write_text(core.export_yaml(include_secrets=True))
    assert load_workspace(tmp_path / "clear.yaml") == core.current()[1]


def test_a_default_key_file_is_made_once_owner_only(tmp_path: Path) -> None:
    path = default_key_file({"HOME": str(tmp_path)})
    assert path == tmp_path / ".config" / "cdp" / "secrets.key"
    assert default_key_file({"XDG_CONFIG_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "cdp" / "secrets.key"
    assert ensure_key_file(path) and not ensure_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert key_file_to_use({}, None) is not None and key_file_to_use({KEY_ENV: "k"}, None) is None
    assert key_file_to_use({KEY_ENV: "k"}, path) == path


def test_a_key_file_opens_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    key_file = tmp_path / "keys" / "secrets.key"
    ensure_key_file(key_file)
    core = ControlCore(tmp_path / "data", str(key_file))
    core.seed(workspace())
    core.close()
    reopened = ControlCore(tmp_path / "data", str(key_file)).current()[1]
    assert reopened.model_copy(update={"inputs": workspace().inputs}) == workspace()
    for stored, seeded in zip(reopened.inputs, workspace().inputs, strict=True):  # inputs keep their secrets' hashes
        assert verify_secret(stored.secret_hash or "", Secret(seeded.clear_secret()))
    with pytest.raises(SecretsKeyError):  # no key at all: the encrypted store is refused, not read as garbage
        ControlCore(tmp_path / "data")


def test_cdp_config_export_opens_the_store_when_no_platform_runs(tmp_path: Path, key: str) -> None:
    core = ControlCore(tmp_path / "data")
    core.seed(workspace())
    core.apply(RemoveConnection(id=1), None, "alice")
    core.close()
    out = tmp_path / "exported.yaml"
    assert main(["config", "export", "--data-dir", str(tmp_path / "data"), "--out", str(out)]) == 0
    text = out.read_text()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert "version 2" in text and "${CDP_OUTPUT_2_API_KEY}" in text
    assert not [secret for secret in SECRETS if secret in text]
    assert main(["config", "export", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--include-secrets"]) == 0
    assert load_workspace(out) == ControlCore(tmp_path / "data").current()[1]


def test_cdp_config_export_says_what_is_missing(tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    core = ControlCore(tmp_path / "data")
    core.seed(workspace())
    core.close()
    monkeypatch.setenv(KEY_ENV, generate_key())
    assert main(["config", "export", "--data-dir", str(tmp_path / "data")]) == 2
    assert "not among the configured keys" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["config", "export", "--data-dir", str(tmp_path / "empty")])


def test_a_start_names_where_the_file_differs_from_the_store(tmp_path: Path) -> None:
    stored = workspace()
    assert file_differences(workspace(), stored) == []
    changed = stored.with_output_settings(1, url="https://elsewhere.example/hook")
    paths = file_differences(workspace(), changed)
    assert paths == ["outputs[id=1].settings.url"]
    warning = differences_warning("configs/workspace.yaml", paths)
    assert warning is not None and "outputs[id=1].settings.url" in warning and "elsewhere" not in warning
    assert differences_warning("x", []) is None
    hashed = [i.model_copy(update={"secret": None, "secret_hash": hash_secret(KeySecret("demo-secret"))})
              for i in stored.inputs]  # fmt: skip
    assert file_differences(workspace(), stored.model_copy(update={"inputs": hashed})) == []
    other = [i.model_copy(update={"secret": None, "secret_hash": hash_secret(KeySecret("other"))})
             for i in stored.inputs]  # fmt: skip
    assert file_differences(workspace(), stored.model_copy(update={"inputs": other})) != []
