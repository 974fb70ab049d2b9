"""Partner credentials in output settings: encrypted at rest under a configured key (never stored in clear), bound to
their place, rotated, masked in answers; the start refuses encrypted data it cannot open."""

from __future__ import annotations

import base64
import pickle
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from pydantic import BaseModel, SecretStr

from cdp_actors.audit import AUDIT_DB, AuditLog
from cdp_actors.integrations import appsflyer, twitter_audience
from cdp_actors.integrations.registry import MODULES, settings_model
from cdp_actors.secrets import (
    ENVELOPE_FIELD,
    KEY_ENV,
    KEY_FILE_FLAG,
    MASK,
    Keyring,
    SecretsKeyError,
    decrypt_settings,
    encrypt_settings,
    generate_key,
    key_ids_in,
    load_keyring,
    mask,
    needs_rotation,
    require_keys,
    restore_masked,
    rotate_settings,
    secret_paths,
)
from cdp_actors.storage.lmdb_env import Store

SAMPLES: dict[str, dict[str, Any]] = {
    "webhook": {"url": "https://hooks.example.com/in", "auth_header": "Bearer s3cret-webhook-auth"},
    "firehose": {"url": "https://partner.example.com/fh", "api_key": "s3cret-fh-key", "api_secret": "s3cret-fh-sec",
                 "account_settings": {"apiKey": "s3cret-fh-account", "region": "s3cret-fh-region"}},
    "mixpanel": {"project_token": "s3cret-mixpanel-token", "api_secret": "s3cret-mixpanel-secret"},
    "amplitude": {"api_key": "s3cret-amplitude-key"},
    "braze": {"api_url": "https://rest.iad-01.braze.com", "api_key": "s3cret-braze-key"},
    "facebook_capi": {"pixel_id": "123", "access_token": "s3cret-fb-capi-token"},
    "appsflyer": {"dev_key": "s3cret-appsflyer-dev"},
    "facebook_audience": {"access_token": "s3cret-fb-aud-token", "audience_ids": {5: "fb-555"}},
    "snapchat_audience": {"access_token": "s3cret-snap-token"},
    "twitter_audience": {"account_id": "acc", "consumer_key": "s3cret-tw-ck", "consumer_secret": "s3cret-tw-cs",
                         "access_token": "s3cret-tw-at", "access_token_secret": "s3cret-tw-ats"},
    "braze_audience": {"api_url": "https://rest.iad-01.braze.com", "api_key": "s3cret-braze-aud-key"},
    "pinterest_audience": {"ad_account_id": "ad-1", "access_token": "s3cret-pin-token",
                           "customer_lists": {5: {"email": "list-e"}}},
}  # fmt: skip
"""Valid settings of every output kind, each credential a distinct `s3cret-...` value and nothing else so named."""


def settings_of(kind: str) -> BaseModel:
    return settings_model(kind).model_validate(SAMPLES[kind])


def clear_secrets(kind: str) -> list[str]:
    return [value for value in _strings(SAMPLES[kind]) if "s3cret-" in value]


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return [value] if isinstance(value, str) else []


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([base64.b64decode(generate_key())])


def stored_bytes(document: Any) -> bytes:
    """What a store writes: the document as JSON."""
    return msgspec.json.encode(document)


def test_every_output_kind_has_a_sample_and_its_credentials_are_found_by_type() -> None:
    assert set(SAMPLES) == set(MODULES)
    firehose = settings_of("firehose")
    assert secret_paths(firehose) == [("api_key",), ("api_secret",), ("account_settings", "apiKey"),
                                      ("account_settings", "region")]  # fmt: skip
    assert secret_paths(settings_of("webhook")) == [("auth_header",)]
    assert secret_paths(settings_model("webhook").model_validate({"url": "https://h.example.com"})) == []


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_settings_are_stored_without_a_clear_secret_and_read_back_equal(kind: str, keyring: Keyring) -> None:
    settings = settings_of(kind)
    stored = encrypt_settings(settings, keyring, "output:7")
    raw = stored_bytes(stored)
    assert clear_secrets(kind) and not [s for s in clear_secrets(kind) if s.encode() in raw]
    assert key_ids_in(msgspec.json.decode(raw)) == {keyring.current_id}
    assert decrypt_settings(settings_model(kind), msgspec.json.decode(raw), keyring, "output:7") == settings


def test_non_secret_settings_are_stored_as_they_are(keyring: Keyring) -> None:
    stored = encrypt_settings(settings_of("pinterest_audience"), keyring, "output:1")
    assert stored["ad_account_id"] == "ad-1" and stored["customer_lists"] == {5: {"email": "list-e", "maid": None}}
    assert set(stored["access_token"]) == {ENVELOPE_FIELD}


def test_the_same_secret_encrypts_differently_each_time(keyring: Keyring) -> None:
    settings = settings_of("amplitude")
    first, second = (encrypt_settings(settings, keyring, "output:1") for _ in range(2))
    assert first["api_key"] != second["api_key"]


def test_an_envelope_opens_only_where_it_was_sealed(keyring: Keyring) -> None:
    stored = encrypt_settings(settings_of("twitter_audience"), keyring, "output:1")
    model = settings_model("twitter_audience")
    with pytest.raises(SecretsKeyError, match="tampered or moved"):
        decrypt_settings(model, stored, keyring, "output:2")  # another output
    swapped = {**stored, "consumer_key": stored["access_token"], "access_token": stored["consumer_key"]}
    with pytest.raises(SecretsKeyError, match="tampered or moved"):
        decrypt_settings(model, swapped, keyring, "output:1")  # another field


def test_a_tampered_envelope_is_refused(keyring: Keyring) -> None:
    stored = encrypt_settings(settings_of("amplitude"), keyring, "output:1")
    version, kid, body = stored["api_key"][ENVELOPE_FIELD].split(":")
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 1
    tampered = {**stored, "api_key": {ENVELOPE_FIELD: f"{version}:{kid}:{base64.b64encode(bytes(raw)).decode()}"}}
    with pytest.raises(SecretsKeyError, match="tampered or moved"):
        decrypt_settings(settings_model("amplitude"), tampered, keyring, "output:1")


def test_a_decrypted_secret_is_a_secret_str_and_not_expanded_again(keyring: Keyring) -> None:
    literal = appsflyer.Settings.model_construct(dev_key=SecretStr("${HOME}-literal"))
    stored = encrypt_settings(literal, keyring, "output:1")
    restored = decrypt_settings(appsflyer.Settings, stored, keyring, "output:1")
    assert isinstance(restored.dev_key, SecretStr) and restored.dev_key.get_secret_value() == "${HOME}-literal"
    assert "${HOME}" not in repr(restored)


def test_a_credential_cannot_be_stored_without_a_key_but_settings_without_one_can() -> None:
    with pytest.raises(SecretsKeyError, match=rf"\$\.auth_header is a credential .*{KEY_ENV}.*{KEY_FILE_FLAG}"):
        encrypt_settings(settings_of("webhook"), None, "output:1")
    plain = settings_model("webhook").model_validate({"url": "https://h.example.com"})
    assert encrypt_settings(plain, None, "output:1")["url"] == "https://h.example.com"


# ---- rotation and the start guard --------------------------------------------------------------------------------


def test_rotation_decrypts_with_the_old_key_and_reencrypts_with_the_current() -> None:
    old, new = (base64.b64decode(generate_key()) for _ in range(2))
    settings = settings_of("firehose")
    stored = encrypt_settings(settings, Keyring([old]), "output:3")
    both = Keyring([new, old])
    assert needs_rotation(stored, both)
    assert decrypt_settings(settings_model("firehose"), stored, both, "output:3") == settings
    rotated = rotate_settings(stored, both, "output:3")
    assert key_ids_in(rotated) == {both.current_id} and not needs_rotation(rotated, both)
    assert decrypt_settings(settings_model("firehose"), rotated, Keyring([new]), "output:3") == settings
    with pytest.raises(SecretsKeyError, match=f"key {both.current_id}"):
        decrypt_settings(settings_model("firehose"), rotated, Keyring([old]), "output:3")


def test_the_start_refuses_encrypted_data_without_its_key_and_says_what_to_set(keyring: Keyring) -> None:
    stored = encrypt_settings(settings_of("braze"), keyring, "output:1")
    in_use = key_ids_in(stored)
    require_keys(in_use, keyring)
    require_keys(set(), None)  # nothing encrypted: no key needed (the demo workspace)
    with pytest.raises(SecretsKeyError, match=f"{keyring.current_id}.*no secrets key is configured.*{KEY_ENV}"):
        require_keys(in_use, None)
    other = Keyring([base64.b64decode(generate_key())])
    with pytest.raises(SecretsKeyError, match=f"{keyring.current_id}.*not among the configured keys.*{KEY_FILE_FLAG}"):
        require_keys(in_use, other)


# ---- loading keys ------------------------------------------------------------------------------------------------


def test_keys_load_from_the_environment_newest_first(tmp_path: Path) -> None:
    new, old = generate_key(), generate_key()
    keyring = load_keyring({KEY_ENV: f"{new},{old}"}, None, tmp_path / "data")
    assert keyring is not None and keyring.current_id == Keyring([base64.b64decode(new)]).current_id
    assert len(keyring.key_ids) == 2
    assert load_keyring({}, None, tmp_path / "data") is None


def test_keys_load_from_a_file_outside_the_data_directory(tmp_path: Path) -> None:
    key = generate_key()
    key_file = tmp_path / "keys" / "secrets.key"
    key_file.parent.mkdir()
    key_file.write_text(f"# current first\n{key}\n\n")
    keyring = load_keyring({}, key_file, tmp_path / "data")
    assert keyring is not None and keyring.current_id == Keyring([base64.b64decode(key)]).current_id
    inside = tmp_path / "data" / "secrets.key"
    inside.parent.mkdir()
    inside.write_text(key)
    with pytest.raises(SecretsKeyError, match="inside the data directory"):
        load_keyring({}, inside, tmp_path / "data")
    with pytest.raises(SecretsKeyError, match="not both"):
        load_keyring({KEY_ENV: key}, key_file, tmp_path / "data")


@pytest.mark.parametrize(("text", "problem"), [("not base64!", "is not base64"), (base64.b64encode(b"short").decode(),
                                                                                   "is 5 bytes")])  # fmt: skip
def test_a_malformed_key_is_refused_without_quoting_it(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(SecretsKeyError, match=problem) as refused:
        load_keyring({KEY_ENV: text}, None, tmp_path)
    assert text not in str(refused.value)
    key_file = tmp_path / "k"
    key_file.write_text(f"{generate_key()}\n{text}\n")
    with pytest.raises(SecretsKeyError, match=f"line 2 {problem}"):
        load_keyring({}, key_file, tmp_path / "data")


def test_a_keyring_shows_key_ids_only_and_stays_in_its_process() -> None:
    key = generate_key()
    ring = Keyring([base64.b64decode(key)])
    assert key not in repr(ring) and ring.current_id in repr(ring)
    with pytest.raises(TypeError, match="load_keyring"):
        pickle.dumps(ring)


# ---- masking -----------------------------------------------------------------------------------------------------


def test_mask_hides_every_secret_and_keeps_the_rest(keyring: Keyring) -> None:
    shown = mask(settings_of("firehose"))
    assert shown["api_key"] == shown["api_secret"] == shown["account_settings"]["apiKey"] == MASK
    assert shown["url"] == "https://partner.example.com/fh" and shown["account_id"] == 0
    assert mask(encrypt_settings(settings_of("firehose"), keyring, "output:1")) == shown
    unset = mask(settings_model("mixpanel").model_validate({"project_token": "t"}))
    assert unset["api_secret"] is None  # an unset credential shows as unset
    body = mask({"client_id": "demo-admin", "client_secret": "plain-text", "roles": ["admin"]})
    assert body == {"client_id": "demo-admin", "client_secret": MASK, "roles": ["admin"]}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_no_masked_answer_holds_a_secret(kind: str) -> None:
    shown = msgspec.json.encode(mask(settings_of(kind)))
    assert not [secret for secret in clear_secrets(kind) if secret.encode() in shown]


def test_a_put_of_what_a_get_showed_keeps_the_credential() -> None:
    current = settings_of("twitter_audience")
    submitted = {**mask(current), "account_id": "acc-2", "access_token": "s3cret-new-token"}
    updated = twitter_audience.Settings.model_validate(restore_masked(submitted, current))
    assert updated.account_id == "acc-2"
    assert updated.consumer_secret.get_secret_value() == "s3cret-tw-cs"
    assert updated.access_token.get_secret_value() == "s3cret-new-token"


# ---- the bytes on disk -------------------------------------------------------------------------------------------


def bytes_under(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


def test_no_file_of_the_data_directory_holds_a_secret_in_clear(tmp_path: Path, keyring: Keyring) -> None:
    """Settings written through a store's file (LMDB, synced) and their change in the audit log: the raw bytes of
    the data directory hold no secret. The same scan finds a secret written in clear, so it can see one."""
    data_dir = tmp_path / "data"
    store = Store(data_dir / "config", ("outputs", AUDIT_DB))
    audit = AuditLog(store, clock_ms=lambda: 1_700_000_000_000)
    secrets = [secret for kind in SAMPLES for secret in clear_secrets(kind)]
    with store.write() as txn:
        for n, kind in enumerate(sorted(SAMPLES)):
            settings = settings_of(kind)
            stored = encrypt_settings(settings, keyring, f"output:{n}")
            txn.put(n.to_bytes(8, "big"), stored_bytes({"kind": kind, "settings": stored}), db=store.db("outputs"))
            audit.record_in(txn, "api_client:demo-admin", "create", f"output:{n}", None, settings)
    store.close()
    on_disk = bytes_under(data_dir)
    assert not [secret for secret in secrets if secret.encode() in on_disk]
    control = Store(tmp_path / "control", ("outputs",))
    with control.write() as txn:
        txn.put(b"1", stored_bytes(SAMPLES["amplitude"]), db=control.db("outputs"))
    control.close()
    assert b"s3cret-amplitude-key" in bytes_under(tmp_path / "control")


def test_decrypting_a_version_costs_microseconds(keyring: Keyring) -> None:
    """Decryption runs when a configuration version is loaded, never per batch; measured here for the record."""
    stored = encrypt_settings(settings_of("twitter_audience"), keyring, "output:1")  # four secrets
    model = settings_model("twitter_audience")
    rounds = 500
    started = time.perf_counter()
    for _ in range(rounds):
        decrypt_settings(model, stored, keyring, "output:1")
    per_secret_us = (time.perf_counter() - started) / rounds / 4 * 1e6
    print(f"decrypt_settings: {per_secret_us:.1f} µs per secret, validation included")
    assert per_secret_us < 1_000  # a generous bound on a busy CI machine; the figure is what matters
