"""`WorkspaceSealer`: every secret of a stored configuration encrypted with the operator's key (issue 15, point 6).

What is a secret is decided by type, as in `cdp_actors/secrets.py`: every `SecretStr` of the configuration model,
at any depth. Today that is each output's credential settings, an input's `secret` (kept in clear only for an
input that takes signed requests; the others keep `secret_hash`), each API client's `client_secret` and each
console user's configured `password` (the value `prepare_users` checks users.json's argon2 hash against at a
start). Each becomes an envelope `{"$encrypted": "v1:<key id>:<nonce+ciphertext>"}` bound to its place: the item
(`output:7`, `input:1`, `api_client:demo-admin`, `user:admin`) and the field's path inside it, so an envelope
copied to another item or field does not open.

Every snapshot is sealed afresh from the configuration model when the store writes it (new nonces; a few per
change); `unseal` gives each secret back as a `SecretStr`, which the workspace models take as it is (a decrypted
value is not `${ENV}`-expanded a second time). `rotate` re-encrypts a stored document under the current key;
`key_ids` lists the keys a stored document needs (the start guard, `require_keys`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from cdp_actors.config import WorkspaceConfig
from cdp_actors.control.changes import _plain, config_document
from cdp_actors.secrets import (
    ENVELOPE_FIELD,
    FieldPath,
    Keyring,
    SecretsKeyError,
    _mapped,
    is_envelope,
    key_ids_in,
    needs_rotation,
)

ITEM_CONTEXTS: dict[str, tuple[str, str]] = {
    "inputs": ("input", "id"),
    "outputs": ("output", "id"),
    "connections": ("connection", "id"),
    "api_clients": ("api_client", "client_id"),
    "users": ("user", "name"),
}
"""Per list section of the workspace: how an item is named in its secrets' associated data, and by which field."""


class WorkspaceSealer:
    """A `SecretSealer` over a keyring (None: no key configured, so a configuration holding a secret cannot be
    stored, and `SecretsKeyError` says what to set)."""

    def __init__(self, keyring: Keyring | None) -> None:
        self.keyring = keyring

    def __repr__(self) -> str:
        return f"WorkspaceSealer({self.keyring!r})"

    def seal(self, config: WorkspaceConfig) -> dict[str, Any]:
        document = config.model_dump(mode="python")  # secrets still SecretStr: found by type
        sealed = _mapped(document, lambda path, leaf: self._sealed(document, path, leaf))
        return _plain(sealed)  # enums as their values, as config_document writes them

    def unseal(self, document: dict[str, Any]) -> dict[str, Any]:
        return _mapped(document, lambda path, leaf: self._unsealed(document, path, leaf))

    def rotate(self, document: dict[str, Any]) -> dict[str, Any] | None:
        """`document` with every envelope under the current key, or None if it is already."""
        keyring = self.keyring
        if keyring is None or not needs_rotation(document, keyring):
            return None

        def reseal(path: FieldPath, leaf: Any) -> Any:
            if not is_envelope(leaf):
                return leaf
            associated = associated_data(document, path)
            return {ENVELOPE_FIELD: keyring.encrypt(keyring.decrypt(leaf[ENVELOPE_FIELD], associated), associated)}

        return _mapped(document, reseal)

    @staticmethod
    def key_ids(document: dict[str, Any]) -> set[str]:
        return key_ids_in(document)

    def _sealed(self, document: dict[str, Any], path: FieldPath, leaf: Any) -> Any:
        if not isinstance(leaf, SecretStr):
            return leaf
        if self.keyring is None:
            raise SecretsKeyError(
                f"{_dotted(path)} is a credential and no secrets key is configured: set CDP_SECRETS_KEY or pass "
                "--secrets-key-file"
            )
        return {ENVELOPE_FIELD: self.keyring.encrypt(leaf.get_secret_value(), associated_data(document, path))}

    def _unsealed(self, document: dict[str, Any], path: FieldPath, leaf: Any) -> Any:
        if not is_envelope(leaf):
            return leaf
        if self.keyring is None:
            raise SecretsKeyError(f"{_dotted(path)} is encrypted and no secrets key is configured")
        return SecretStr(self.keyring.decrypt(leaf[ENVELOPE_FIELD], associated_data(document, path)))


def associated_data(document: dict[str, Any], path: FieldPath) -> str:
    """What a secret at `path` is bound to: its item (`output:7`) and the field's path inside it."""
    if len(path) >= 2 and path[0] in ITEM_CONTEXTS and isinstance(path[1], int):
        kind, name_field = ITEM_CONTEXTS[str(path[0])]
        item = document[str(path[0])][path[1]]
        return f"{kind}:{item[name_field]}\x00{_dotted(path[2:])}"
    return f"workspace\x00{_dotted(path)}"


def secret_paths(config: WorkspaceConfig) -> list[FieldPath]:
    """Where the configuration holds a secret, as paths into its document."""
    found: list[FieldPath] = []

    def note(path: FieldPath, leaf: Any) -> Any:
        if isinstance(leaf, SecretStr):
            found.append(path)
        return leaf

    _mapped(config.model_dump(mode="python"), note)
    return found


def replaced_secrets(config: WorkspaceConfig, replace: Callable[[FieldPath], Any]) -> dict[str, Any]:
    """The configuration's document (defaults left out, as an export writes it) with each secret replaced by
    `replace(path)`."""
    document = config_document(config, exclude_defaults=True)
    for path in secret_paths(config):
        holder: Any = document
        try:
            for part in path[:-1]:
                holder = holder[part]
            holder[path[-1]] = replace(path)
        except (KeyError, IndexError, TypeError):  # a secret left at its default: not in the document
            continue
    return document


def _dotted(path: FieldPath) -> str:
    return "$." + ".".join(str(part) for part in path) if path else "$"
