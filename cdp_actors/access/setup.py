"""What access control needs from the machine: the server key, the console users' stored hashes, the demo warning.

- `load_access_key(environ, data_dir)`: the master key that signs bearer tokens and CSRF tokens (each through
  `tokens.derive_key(master, purpose)`). From `CDP_ACCESS_KEY` (base64 of at least 32 bytes) when set, which a
  cluster whose Serve replicas run on other nodes needs; otherwise `access.key` in the data directory, created
  (0600, 32 random bytes) by whichever process comes first. Every process that verifies tokens (each Serve replica
  of the admin and Profile apps, the session store actor) calls it itself in `__init__`: the key never travels in a
  task spec. Unlike the secrets key (secrets.py) it may live in the data directory: it protects no data at rest,
  and whoever reads the data directory has the data anyway.
- `prepare_users(users, data_dir, announce)`: run by whoever starts the runtime (`ensure_runtime`), before the apps
  (`cdp serve` with an `announce` that prints; a Serve replica under `serve run` without one, generating nothing):
  each configured user's argon2 hash into `users.json` of the data directory. A configured password
  (`${CDP_ADMIN_PASSWORD}`) is hashed when the stored hash does not match it; a user without one gets a generated
  password, announced once (printed by `cdp serve`, never logged) and kept only as its hash.
- `load_password_hashes(data_dir)`: what the admin app's replicas read at start to check a login.
- `demo_credentials(config)`: the demo's well-known credentials still configured, for `cdp serve`'s warning.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cdp_actors.access.passwords import Password, generate_password, hash_password, verify_password
from cdp_actors.access.tokens import MIN_KEY_BYTES
from cdp_actors.storage.lmdb_env import make_private_dir, open_private

if TYPE_CHECKING:
    from cdp_actors.config import ConsoleUser, WorkspaceConfig

_log = logging.getLogger(__name__)

ACCESS_KEY_ENV = "CDP_ACCESS_KEY"
ACCESS_KEY_FILE = "access.key"
USERS_FILE = "users.json"
GENERATED_KEY_BYTES = 32
"""256 bits: HMAC-SHA256's full strength."""
DEMO_CREDENTIALS = {
    ("input", "demo-key"): "demo-secret",
    ("api client", "demo-admin"): "demo-admin-secret",
    ("api client", "demo-client"): "demo-client-secret",
}
"""The credentials configs/workspace.yaml and the README publish: anyone can use them."""


class AccessKeyError(ValueError):
    """The configured access key is unusable; the message says why (never the key)."""


def load_access_key(environ: Mapping[str, str], data_dir: str | Path) -> bytes:
    configured = environ.get(ACCESS_KEY_ENV)
    if configured:
        try:
            key = base64.b64decode(configured.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise AccessKeyError(f"{ACCESS_KEY_ENV} must be base64") from None
        if len(key) < MIN_KEY_BYTES:
            raise AccessKeyError(f"{ACCESS_KEY_ENV} must hold at least {MIN_KEY_BYTES} bytes")
        return key
    path = make_private_dir(data_dir) / ACCESS_KEY_FILE
    try:
        fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return _read_key_file(path)
    with os.fdopen(fd, "wb") as file:
        file.write(secrets.token_bytes(GENERATED_KEY_BYTES))
        file.flush()
        os.fsync(file.fileno())
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < MIN_KEY_BYTES:  # a creator that died between create and write: make it again
        raise AccessKeyError(f"{path} is truncated: remove it and start again")
    return key


def load_password_hashes(data_dir: str | Path) -> dict[str, str]:
    path = Path(data_dir) / USERS_FILE
    if not path.exists():
        return {}
    stored = json.loads(path.read_text())
    return {str(name): str(digest) for name, digest in stored.items()}


def prepare_users(
    users: Sequence[ConsoleUser], data_dir: str | Path, announce: Callable[[str, Password], None] | None
) -> dict[str, str]:
    """Store each user's hash (users not configured any more are dropped); `announce(name, password)` for each
    generated password. Returns the stored hashes. Without `announce` (a Serve replica starting the runtime, whose
    output goes to a log file) no password is generated: such a user cannot log in until the platform is started
    by `cdp serve` or given a password."""
    stored = load_password_hashes(data_dir)
    hashes: dict[str, str] = {}
    for user in users:
        if user.password_hash is not None:  # set through the Platform API: the configuration store holds its hash
            continue
        if user.password is not None:
            password = Password(user.password.get_secret_value())
            current = stored.get(user.name)
            keep = current is not None and verify_password(current, password)
            hashes[user.name] = current if keep and current else hash_password(password)
        elif user.name in stored:
            hashes[user.name] = stored[user.name]
        elif announce is None:
            _log.warning("Console user %r has no password yet: set one, or start with `cdp serve`", user.name)
        else:
            generated = generate_password()
            hashes[user.name] = hash_password(generated)
            announce(user.name, generated)
    if hashes != stored:
        _write_hashes(Path(data_dir), hashes)
    return hashes


def _write_hashes(data_dir: Path, hashes: dict[str, str]) -> None:
    make_private_dir(data_dir)
    temporary = data_dir / f"{USERS_FILE}.{os.getpid()}.tmp"  # replicas starting together each write their own
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w") as file:
        json.dump(hashes, file, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, data_dir / USERS_FILE)


def demo_credentials(config: WorkspaceConfig) -> list[str]:
    """`input demo-key`, `api client demo-admin`, ...: the published demo credentials this config still uses."""
    configured = {("input", i.key): i.secret for i in config.inputs if i.secret is not None} | {
        ("api client", c.client_id): c.client_secret for c in config.api_clients
    }
    return [
        f"{kind} {name}"
        for (kind, name), secret in DEMO_CREDENTIALS.items()
        if (kind, name) in configured and configured[(kind, name)].get_secret_value() == secret
    ]
