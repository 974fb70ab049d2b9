"""`ControlCore`: the one owner of the versioned workspace configuration (and, with it, the audit log).

The runtime makes it the `control` actor (runtime.py), created first: `seed(config)` makes the workspace file
version 1 of an empty store, and every other actor and Serve replica starts from `current()` and then follows
new versions by polling `changed_since(version)` (see the package docstring).
"""

from __future__ import annotations

from pathlib import Path

from cdp_actors.access.keys import hashed_inputs
from cdp_actors.config import WorkspaceConfig
from cdp_actors.control.changes import Change
from cdp_actors.control.store import ClearSecrets, ConfigStore, HistoryEntry

CONTROL_DIR = "control"


class ControlCore:
    def __init__(self, data_dir: str | Path) -> None:
        self.store = ConfigStore(Path(data_dir) / CONTROL_DIR, ClearSecrets())

    def seed(self, config: WorkspaceConfig) -> bool:
        """Make `config` version 1 if the store is empty; True if it did (a seeded store ignores its seed). Inputs'
        secrets are stored as hashes (`hashed_inputs`), computed only when the store is empty: every replica's start
        offers the seed again."""
        return self.store.is_empty() and self.store.seed_from(hashed_inputs(config))

    def current(self) -> tuple[int, WorkspaceConfig]:
        return self.store.current()

    def changed_since(self, version: int) -> tuple[int, WorkspaceConfig] | None:
        return self.store.changed_since(version)

    def apply(self, change: Change, expected_version: int | None, actor: str) -> tuple[int, WorkspaceConfig]:
        return self.store.apply(change, expected_version, actor)

    def history(self, after_version: int = 0, limit: int = 100) -> list[HistoryEntry]:
        return self.store.history(after_version, limit)

    def export_yaml(self) -> str:
        return self.store.export_yaml()
