"""`ControlCore`: the one owner of the versioned workspace configuration and of the audit log.

The runtime makes it the `control` actor (runtime.py), created first: `seed(config)` makes the workspace file
version 1 of an empty store, and every other actor and Serve replica starts from `current()` and then follows
new versions by polling `changed_since(version)` (see the package docstring).

Secrets at rest: the store is opened with a `WorkspaceSealer` over the keyring this process loads itself
(`CDP_SECRETS_KEY`, or the key file whose path it is given; secrets.py): every snapshot it writes holds each secret
encrypted. Opening refuses (`SecretsKeyError`, naming the key ids) a store whose current snapshot needs a key the
keyring lacks; when the current key is new, every kept snapshot is re-encrypted under it.

Audit: the store's LMDB environment holds the audit log (`audit.AUDIT_DB`). `apply` writes the change's entry (who,
`create`/`update`/`delete`, `output:7`, the item before and after, masked) in the change's own transaction, and
so does the seed; `audit` records what is not configuration (a profile edit, with `personal=True`: paths only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cdp_actors.access.keys import Secret as KeySecret
from cdp_actors.access.keys import hashed_inputs, verify_secret
from cdp_actors.audit import AuditFilter, AuditLog, AuditPage
from cdp_actors.config import WorkspaceConfig
from cdp_actors.control.changes import (
    ITEM_NAMES,
    AddCalculatedAttribute,
    AddItem,
    AddUser,
    Change,
    RemoveCalculatedAttribute,
    RemoveItem,
    RemoveUser,
    changed_paths,
    config_document,
)
from cdp_actors.control.sealer import WorkspaceSealer, replaced_secrets
from cdp_actors.control.store import SEED_ACTOR, ConfigStore, HistoryEntry
from cdp_actors.secrets import load_keyring, require_keys
from cdp_actors.storage.lmdb_env import Txn

CONTROL_DIR = "control"
SEED_TARGET = "workspace"


class ControlCore:
    def __init__(self, data_dir: str | Path, secrets_key_file: str | None = None) -> None:
        self.data_dir = str(Path(data_dir).resolve())
        keyring = load_keyring(os.environ, secrets_key_file, data_dir)
        self.sealer = WorkspaceSealer(keyring)
        self.store = ConfigStore(Path(data_dir) / CONTROL_DIR, self.sealer)
        self.audit_log = AuditLog(self.store.store)
        try:
            stored = self.store.stored_document()
            if stored is not None:
                require_keys(self.sealer.key_ids(stored), keyring)
                self.store.rewrite_snapshots(self._rotated)
        except BaseException:
            self.store.close()  # a store refused is not left open (LMDB opens an environment once per process)
            raise

    def __repr__(self) -> str:
        return f"ControlCore({self.store.store.env.path()})"

    def close(self) -> None:
        self.store.close()

    def data_directory(self) -> str:
        """The data directory this owner's store lies in: how `cdp config export` knows it found the right one."""
        return self.data_dir

    def seed(self, config: WorkspaceConfig) -> bool:
        """Make `config` version 1 if the store is empty; True if it did (a seeded store ignores its seed). Inputs'
        secrets are stored as hashes (`hashed_inputs`), computed only when the store is empty: every replica's start
        offers the seed again."""
        return self.store.is_empty() and self.store.seed_from(hashed_inputs(config), self._recorder(SEED_ACTOR))

    def current(self) -> tuple[int, WorkspaceConfig]:
        return self.store.current()

    def changed_since(self, version: int) -> tuple[int, WorkspaceConfig] | None:
        return self.store.changed_since(version)

    def apply(self, change: Change, expected_version: int | None, actor: str) -> tuple[int, WorkspaceConfig]:
        """The change, its history entry and its audit entry, in one synced transaction."""
        return self.store.apply(change, expected_version, actor, self._recorder(actor, change))

    def history(self, after_version: int = 0, limit: int = 100) -> list[HistoryEntry]:
        return self.store.history(after_version, limit)

    def export_yaml(self, include_secrets: bool = False) -> str:
        """The configuration as a workspace file. Its secrets as `${NAME}` placeholders (`placeholder_name`), so
        the file holds no credential and is a seed again once those variables are set; in clear with
        `include_secrets` (then it loads back equal)."""
        if include_secrets:
            return self.store.export_yaml()
        version, config = self.store.current()
        document = replaced_secrets(config, lambda path: "${" + placeholder_name(config, path) + "}")
        header = (
            f"# The workspace configuration, version {version}, exported from the configuration store.\n"
            "# Secrets are ${NAME} placeholders: set those variables before seeding a new store with this file.\n"
        )
        return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)

    # ---- the audit log ----

    def audit(self, actor: str, action: str, target: str, before: Any, after: Any, personal: bool = False) -> int:
        """Record a change that is not configuration (a profile edit: `personal=True`); the entry's id."""
        return self.audit_log.record(actor, action, target, before, after, personal).id

    def audit_page(
        self, order: str = "desc", cursor: int | None = None, limit: int = 100, filters: AuditFilter | None = None
    ) -> AuditPage:
        """Entries newest first from before `cursor` (`desc`), or oldest first after it (`asc`)."""
        wanted = filters or AuditFilter()
        if order == "asc":
            return self.audit_log.page(cursor or 0, limit, wanted)
        return self.audit_log.latest(cursor, limit, wanted)

    def _recorder(self, actor: str, change: Change | None = None) -> Any:
        def record(txn: Txn, entry: HistoryEntry, before: WorkspaceConfig | None, after: WorkspaceConfig) -> None:
            if change is None:
                self.audit_log.record_in(txn, actor, "seed", SEED_TARGET, None, after)
                return
            section, _, key = entry.target.partition("/")  # `outputs/7`, `users/ada`
            self.audit_log.record_in(
                txn, actor, action_of(change), f"{ITEM_NAMES.get(section, section.removesuffix('s'))}:{key}",
                _item(before, section, key), _item(after, section, key),
            )  # fmt: skip

        return record

    def _rotated(self, document: dict[str, Any]) -> dict[str, Any] | None:
        if self.sealer.keyring is None or not self.sealer.key_ids(document) <= set(self.sealer.keyring.key_ids):
            return None  # an old snapshot under a key no longer configured stays as it is (it is never read again)
        return self.sealer.rotate(document)


def action_of(change: Change) -> str:
    """`create`, `update` or `delete`: how the audit log names what a change did."""
    if isinstance(change, (AddItem, AddUser, AddCalculatedAttribute)):
        return "create"
    if isinstance(change, (RemoveItem, RemoveUser, RemoveCalculatedAttribute)):
        return "delete"
    return "update"


def _item(config: WorkspaceConfig | None, section: str, key: str) -> Any:
    """The item a change's target names: by id, or by name for a console user."""
    if config is None:
        return None
    value = getattr(config, section)
    if not isinstance(value, list):  # a settings section (`dsr`): the whole of it
        return value
    return next((item for item in value if str(getattr(item, "id", item.name)) == key), None)


def placeholder_name(config: WorkspaceConfig, path: tuple[str | int, ...]) -> str:
    """`CDP_OUTPUT_3_API_KEY`, `CDP_API_CLIENT_DEMO_ADMIN_CLIENT_SECRET`: the variable an exported secret names."""
    section = str(path[0])
    parts: list[str] = [section.removesuffix("s")]
    if len(path) >= 2 and isinstance(path[1], int):
        item = getattr(config, section)[path[1]]
        parts.append(str(getattr(item, "id", None) or getattr(item, "client_id", None) or getattr(item, "name", "")))
        parts.extend(str(part) for part in path[2:] if part != "settings")
    else:
        parts.extend(str(part) for part in path[1:])
    words = "_".join(parts).upper()
    return "CDP_" + "".join(c if c.isalnum() else "_" for c in words)


MAX_REPORTED_PATHS = 10
"""Paths a start's warning names when the workspace file and the store differ; the rest are counted."""


def file_differences(file: WorkspaceConfig, stored: WorkspaceConfig) -> list[str]:
    """Where a workspace file differs from the configuration store (`outputs[id=2].settings.url`), paths only.
    An input whose store keeps only its secret's hash counts as equal when the file's secret verifies against it
    (one scrypt, ~70 ms, per such input: once per start)."""
    file_document, stored_document = config_document(file), config_document(stored)
    by_id = {item["id"]: item for item in stored_document["inputs"]}
    for item in file_document["inputs"]:
        kept = by_id.get(item["id"])
        if kept is None or kept.get("secret") is not None or not kept.get("secret_hash") or not item.get("secret"):
            continue
        if verify_secret(kept["secret_hash"], KeySecret(item["secret"])):
            item.update(secret=None, secret_hash=kept["secret_hash"], key_revision=kept.get("key_revision"))
    return changed_paths(file_document, stored_document)


def differences_warning(source: str, paths: list[str]) -> str | None:
    """What `cdp serve` says once when its workspace file is not the configuration it runs."""
    if not paths:
        return None
    named = ", ".join(paths[:MAX_REPORTED_PATHS]) + (f" and {len(paths) - MAX_REPORTED_PATHS} more"
                                                     if len(paths) > MAX_REPORTED_PATHS else "")  # fmt: skip
    return (
        f"cdp: WARNING: {source} differs from the configuration store, which wins (it is the configuration since "
        f"the first start, changed through the Platform API): {named}. `cdp config export` writes the store's "
        "configuration to a file"
    )
