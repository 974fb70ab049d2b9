"""Partner credentials in output settings: encrypted at rest, masked in every answer, never in clear on disk.

Which settings are secret is said in one place, by type: every credential field of an integration's `Settings`
(`integrations/<kind>.py`) is a `Secret` (`integrations/base.py`, a pydantic `SecretStr`), at any depth
(`firehose.account_settings` is a `dict[str, Secret]`). This module finds them in a validated settings model by
that type; no table to keep in step with the adapters, whose behaviour does not change.

What it offers (Ray-free, HTTP-free):
- `Keyring`: AES-256-GCM keys, the first one current. `load_keyring` reads them from `CDP_SECRETS_KEY` (base64,
  comma-separated, newest first) or from a key file (`cdp serve --secrets-key-file`, one base64 key a line,
  newest first) that must lie outside the data directory: a key next to the data it protects protects nothing
  against a stolen disk or backup. `generate_key` makes a new key.
- `encrypt_settings(settings, keyring, context)`: a JSON-ready document of a settings model in which every secret is
  an envelope `{"$encrypted": "v1:<key id>:<base64 nonce+ciphertext>"}`; `decrypt_settings(model, stored,
  keyring, context)` validates it back into the model, secrets as `SecretStr` (never a plain `str`, so they stay
  out of reprs; and a decrypted value is not `${ENV}`-expanded a second time).
- `mask(value)`: what a GET (and the audit log) may show of settings or of any document: every secret, every
  envelope and every field named like a credential (`SECRET_FIELD_NAMES`) becomes `MASK`. `restore_masked` keeps
  the stored secret where a PUT sends back the mask it was shown, so GET-edit-PUT does not overwrite a credential
  with asterisks.
- Rotation: each envelope names its key; decryption takes any key of the keyring; `needs_rotation` says whether a
  stored document has an envelope under an old key and `rotate_settings` re-encrypts it under the current key.
- The start guard: `require_keys(key_ids_in(stored documents), keyring)` refuses to start, naming the missing key
  ids and where a key is configured, when the store holds envelopes that no configured key opens.

Why AES-GCM rather than Fernet: GCM authenticates associated data, so each ciphertext is bound to its place
(`context`, e.g. `output:7`, and the field path): an envelope copied to another output or field fails to decrypt
instead of handing one partner's credential to another. The key id in each envelope makes decryption one key
lookup; Fernet (AES-128-CBC + HMAC) carries no key id, so MultiFernet tries every key in turn. Nonces are 96 random
bits: safe for 2^32 encryptions under one key, and settings are written a few times a day.

How it is wired:
- Keys never travel between processes: a `Keyring` refuses to pickle. Each process that needs them calls
  `load_keyring(os.environ, key_file, data_dir)` itself: `ensure_runtime` once at start (to fail fast with
  `SecretsKeyError`'s message), then the control actor in `__init__`, given the key file's path (a path is no
  secret) as an argument; Ray workers on the local node inherit `cdp serve`'s environment, and on a cluster the
  head node needs the key file (or the variable). `key_file_to_use`: `--secrets-key-file`, else none when
  `CDP_SECRETS_KEY` is set, else `default_key_file` (`~/.config/cdp/secrets.key`), which `ensure_key_file` makes
  (0600) at the first start so that the demo runs out of the box.
- The control actor's store seals every snapshot with `control/sealer.py` (every `SecretStr` of the configuration
  encrypted, bound to its item and field), calls `require_keys` over the current snapshot's key ids when it opens
  (the start fails), and re-encrypts the kept snapshots under a new current key.
- Configuration versions still reach the forwarders as validated models (secrets as `SecretStr` in memory);
  `encrypt_settings`/`decrypt_settings` are for carrying the stored (encrypted) settings to them instead:
  measured ~14 µs per secret, validation included, on the 2-core machine under CI load (test_secrets.py prints
  it): about 3 ms for a version of 100 outputs with two credentials each.
- Platform API / admin GET answers of services (outputs) return `mask(settings)`; PUT bodies go through
  `restore_masked(body, current settings)` before validation; the audit log masks with `mask`.
- `cdp config export` writes `${NAME}` placeholders, or the secrets in clear with `--include-secrets`.
- No key at all (neither given nor the default file): a secret to store raises `SecretsKeyError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, SecretStr

KEY_ENV = "CDP_SECRETS_KEY"
"""Environment variable holding the keys: base64 of 32 random bytes each, comma-separated, the current one first."""
KEY_FILE_FLAG = "--secrets-key-file"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce: 96 random bits
KEY_ID_BYTES = 4
"""A key id is the first 4 bytes (8 hex digits) of a hash of the key: distinct for the few keys a keyring holds,
and it tells nothing about the key."""
ENVELOPE_FIELD = "$encrypted"
"""The one field of an encrypted value in a stored document: a one-key object whose value is a string. No settings
field has that name; a settings dict key of that name (firehose's `account_settings`) holds a secret, itself sealed
into an envelope, so it is never mistaken for one."""
ENVELOPE_VERSION = "v1"
DEFAULT_KEY_DIR = "cdp"
DEFAULT_KEY_FILE = "secrets.key"
MASK = "********"
"""What a GET shows of a secret: the same for every value, so not even its length shows. mParticle never returns a
credential after it was set (the Platform API's apps docs: the secret is in the create response only)."""
SECRET_FIELD_NAMES = frozenset({
    "secret", "client_secret", "password", "api_secret", "api_key", "access_token", "access_token_secret",
    "consumer_secret", "auth_header", "dev_key", "project_token", "secret_hash", "password_hash",
})  # fmt: skip
"""Field names masked even when their value is a plain string: documents that did not come from a settings model
(a Platform API body, a user record) reach the audit log and answers too. Defence in depth only: the settings
models' `Secret` type is what decides encryption."""

ModelT = TypeVar("ModelT", bound=BaseModel)
FieldPath = tuple[str | int, ...]


class SecretsKeyError(ValueError):
    """The keys cannot do what is needed: none configured, a malformed one, or none opens a stored value. The message
    says what to set; it never holds a key or a secret."""


class Keyring:
    """AES-GCM keys by key id; the first is the current one (new encryptions), the others only decrypt."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SecretsKeyError("a keyring needs at least one key")
        self._ciphers: dict[str, AESGCM] = {}
        for key in keys:
            if len(key) != KEY_BYTES:
                raise SecretsKeyError(f"a secrets key must be {KEY_BYTES} bytes (base64 of {KEY_BYTES} random bytes)")
            self._ciphers.setdefault(key_id(key), AESGCM(key))
        self.current_id = key_id(keys[0])

    def __repr__(self) -> str:
        return f"Keyring(current={self.current_id}, keys={list(self._ciphers)})"

    def __reduce__(self) -> Any:
        raise TypeError("a Keyring is not sent to another process: call load_keyring where the keys are used")

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def encrypt(self, clear: str, associated: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current_id].encrypt(nonce, clear.encode(), associated.encode())
        return f"{ENVELOPE_VERSION}:{self.current_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, associated: str) -> str:
        version, kid, body = _split_token(token)
        cipher = self._ciphers.get(kid)
        if version != ENVELOPE_VERSION or cipher is None:
            raise SecretsKeyError(f"no configured key opens a value encrypted with key {kid} ({_where_keys_go()})")
        raw = base64.b64decode(body)
        try:
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated.encode()).decode()
        except InvalidTag:  # a wrong key under a colliding id, a tampered value, or one moved from another place
            raise SecretsKeyError(f"an encrypted value does not open at {associated!r}: tampered or moved") from None


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"cdp-secrets-key-id:" + key).digest()[:KEY_ID_BYTES].hex()


def generate_key() -> str:
    """A new key, as `CDP_SECRETS_KEY` and the key file take it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def _split_token(token: str) -> tuple[str, str, str]:
    parts = token.split(":")
    if len(parts) != 3:
        raise SecretsKeyError("a stored encrypted value is malformed")
    return parts[0], parts[1], parts[2]


def _where_keys_go() -> str:
    return f"set {KEY_ENV} or pass {KEY_FILE_FLAG}, with the current key first and every older key after it"


# ---- loading the keys ------------------------------------------------------------------------------------------


def load_keyring(environ: Mapping[str, str], key_file: str | Path | None, data_dir: str | Path) -> Keyring | None:
    """The keys from the environment or from the key file (not both), or None when neither is given."""
    from_env = environ.get(KEY_ENV, "").strip()
    if from_env and key_file is not None:
        raise SecretsKeyError(f"give the secrets key either in {KEY_ENV} or in {KEY_FILE_FLAG}, not both")
    if from_env:
        return Keyring([_decoded(text, f"{KEY_ENV} (key {n + 1})") for n, text in enumerate(from_env.split(","))])
    if key_file is None:
        return None
    path = Path(key_file).resolve()
    if path.is_relative_to(Path(data_dir).resolve()):
        raise SecretsKeyError(f"{KEY_FILE_FLAG} {path} lies inside the data directory; keep the key elsewhere")
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise SecretsKeyError(f"cannot read {KEY_FILE_FLAG} {path}: {error.strerror}") from None
    keys = [_decoded(line, f"{path} line {n + 1}") for n, line in enumerate(lines) if _is_key_line(line)]
    if not keys:
        raise SecretsKeyError(f"{KEY_FILE_FLAG} {path} holds no key")
    return Keyring(keys)


def _is_key_line(line: str) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith("#")


def _decoded(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretsKeyError(f"{where} is not base64") from None  # the text itself is never quoted: it is a key
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(f"{where} is {len(key)} bytes; a key is {KEY_BYTES} random bytes, base64-encoded")
    return key


def default_key_file(environ: Mapping[str, str]) -> Path:
    """Where `cdp serve` keeps the key when none is given: `$XDG_CONFIG_HOME/cdp/secrets.key` (by default
    `~/.config/cdp/secrets.key`), the user's own configuration, outside any data directory."""
    config_home = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(config_home) / DEFAULT_KEY_DIR / DEFAULT_KEY_FILE


def ensure_key_file(path: str | Path) -> bool:
    """Create `path` holding one new key (0600, its directory 0700) unless it exists; True if this call made it.
    Two processes starting together make one file: the second finds the first's (O_EXCL)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write(f"# cdp secrets key (AES-256-GCM), current key first; back it up apart from the data\n"
                   f"{generate_key()}\n")  # fmt: skip
        file.flush()
        os.fsync(file.fileno())
    return True


def key_file_to_use(environ: Mapping[str, str], given: str | Path | None) -> Path | None:
    """The key file a start uses: the one given (`--secrets-key-file`), else none when `CDP_SECRETS_KEY` is set,
    else `default_key_file`."""
    if given is not None:
        return Path(given)
    if environ.get(KEY_ENV, "").strip():
        return None
    return default_key_file(environ)


def require_keys(key_ids_in_use: Iterable[str], keyring: Keyring | None) -> None:
    """The start guard: refuse when stored values are encrypted under keys the keyring lacks (or there is none)."""
    needed = set(key_ids_in_use)
    missing = needed - set(keyring.key_ids if keyring else ())
    if not missing:
        return
    held = f"the data directory holds output settings encrypted with keys {', '.join(sorted(missing))}"
    lacking = "but no secrets key is configured" if keyring is None else "which are not among the configured keys"
    raise SecretsKeyError(f"{held}, {lacking}: {_where_keys_go()}")


# ---- settings documents ----------------------------------------------------------------------------------------


def secret_paths(settings: BaseModel) -> list[FieldPath]:
    """Where a settings model holds a secret (a `SecretStr` value), as paths of field names and keys."""
    return [path for path, value in _leaves(settings.model_dump()) if isinstance(value, SecretStr)]


def encrypt_settings(settings: BaseModel, keyring: Keyring | None, context: str) -> dict[str, Any]:
    """The settings as a JSON-ready document with every secret encrypted, bound to `context` and its path."""

    def seal(path: FieldPath, value: Any) -> Any:
        if not isinstance(value, SecretStr):
            return value
        if keyring is None:
            raise SecretsKeyError(
                f"{_dotted(path)} is a credential and no secrets key is configured: {_where_keys_go()}"
            )
        return {ENVELOPE_FIELD: keyring.encrypt(value.get_secret_value(), _associated(context, path))}

    return _mapped(settings.model_dump(mode="python"), seal)


def decrypt_settings(model: type[ModelT], stored: Mapping[str, Any], keyring: Keyring | None, context: str) -> ModelT:
    """`stored` (from `encrypt_settings`) validated into `model`, its secrets decrypted into `SecretStr`."""

    def unseal(path: FieldPath, value: Any) -> Any:
        if not is_envelope(value):
            return value
        if keyring is None:
            raise SecretsKeyError(f"{_dotted(path)} is encrypted and no secrets key is configured: {_where_keys_go()}")
        return SecretStr(keyring.decrypt(value[ENVELOPE_FIELD], _associated(context, path)))

    return model.model_validate(_mapped(dict(stored), unseal))


def key_ids_in(stored: Any) -> set[str]:
    """The key ids of every envelope in a stored document."""
    return {_split_token(value[ENVELOPE_FIELD])[1] for _, value in _envelopes(stored)}


def needs_rotation(stored: Any, keyring: Keyring) -> bool:
    return any(kid != keyring.current_id for kid in key_ids_in(stored))


def rotate_settings(stored: Mapping[str, Any], keyring: Keyring, context: str) -> dict[str, Any]:
    """`stored` with every envelope re-encrypted under the current key (decrypted with whichever key sealed it)."""

    def reseal(path: FieldPath, value: Any) -> Any:
        if not is_envelope(value):
            return value
        associated = _associated(context, path)
        return {ENVELOPE_FIELD: keyring.encrypt(keyring.decrypt(value[ENVELOPE_FIELD], associated), associated)}

    return _mapped(dict(stored), reseal)


# ---- masking ---------------------------------------------------------------------------------------------------


def mask(value: Any) -> Any:
    """`value` (a settings model, a stored or plain document, models within) as data with every secret as `MASK`."""

    def hide(path: FieldPath, leaf: Any) -> Any:
        named_secret = bool(path) and isinstance(path[-1], str) and path[-1] in SECRET_FIELD_NAMES
        if isinstance(leaf, SecretStr) or is_envelope(leaf) or (named_secret and leaf is not None):
            return MASK
        return leaf

    return _mapped(value, hide)


def restore_masked(submitted: Mapping[str, Any], current: BaseModel) -> dict[str, Any]:
    """A submitted settings document with each `MASK` that stands where `current` holds a secret replaced by that
    secret: a client that sends back what a GET showed it keeps the credential."""
    secrets = dict(_leaves(current.model_dump()))

    def restore(path: FieldPath, value: Any) -> Any:
        kept = secrets.get(path)
        return kept if value == MASK and isinstance(kept, SecretStr) else value

    return _mapped(dict(submitted), restore)


def plain(value: Any) -> Any:
    """`value` with every model, at any depth, as its fields (secrets still `SecretStr`): what `mask` and a diff see."""
    return _mapped(value, lambda _path, leaf: leaf)


# ---- walking documents -----------------------------------------------------------------------------------------


def is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(ENVELOPE_FIELD), str)


def _mapped(value: Any, change: Any, path: FieldPath = ()) -> Any:
    """`value` rebuilt with `change(path, leaf)` applied to each leaf; envelopes and SecretStr count as leaves,
    models become their fields, lists and tuples become lists (JSON's arrays)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python")
    if isinstance(value, Mapping) and not is_envelope(value):
        return {key: _mapped(item, change, (*path, key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mapped(item, change, (*path, n)) for n, item in enumerate(value)]
    return change(path, value)


def _leaves(value: Any, path: FieldPath = ()) -> Iterator[tuple[FieldPath, Any]]:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python")
    if isinstance(value, Mapping) and not is_envelope(value):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            yield from _leaves(item, (*path, n))
    else:
        yield path, value


def _envelopes(value: Any) -> Iterator[tuple[FieldPath, Any]]:
    return ((path, leaf) for path, leaf in _leaves(value) if is_envelope(leaf))


def _dotted(path: FieldPath) -> str:
    return "$." + ".".join(str(part) for part in path) if path else "$"


def _associated(context: str, path: FieldPath) -> str:
    return f"{context}\x00{_dotted(path)}"
