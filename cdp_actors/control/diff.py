"""What changed between two versions of the configuration, for the processes that follow versions live: which
outputs were added, changed (kind or settings: they need a new adapter) or removed. Pure, no Ray.

The forwarder's `Delivery` builds per-output resources from it (a new output's adapter, session, breaker and slot;
a changed output's adapter, keeping its session and breaker); a shard adds the outbox lanes of added outputs.

`is_newer_item` answers whether an id no version held so far names an item of a later version: ids are never
reused and a new item's id is larger than any id its section ever had (`changes.NextIds`), so an id above the
largest one known belongs to a version not seen yet, while an unknown id at or below it was removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdp_actors.config import Output, WorkspaceConfig


@dataclass(frozen=True)
class OutputChanges:
    added: frozenset[int]
    changed: frozenset[int]
    """Outputs whose kind or settings differ: a new adapter. A new name or `new_data_points` is not a change
    here (the name is not sent; `new_data_points` is read with the connections' filters, rebuilt per version)."""
    removed: frozenset[int]

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.changed or self.removed)


def output_changes(before: WorkspaceConfig, after: WorkspaceConfig) -> OutputChanges:
    old = {output.id: output for output in before.outputs}
    new = {output.id: output for output in after.outputs}
    return OutputChanges(
        added=frozenset(new.keys() - old.keys()),
        changed=frozenset(i for i in new.keys() & old.keys() if _adapter_differs(old[i], new[i])),
        removed=frozenset(old.keys() - new.keys()),
    )


def _adapter_differs(before: Output, after: Output) -> bool:
    # settings models compare field by field, secrets by their values
    return before.kind != after.kind or before.settings != after.settings


def is_newer_item(item_id: int, largest_seen: int) -> bool:
    """Whether `item_id`, held by no version seen so far, belongs to a later version rather than to a removed
    item; `largest_seen` is the largest id of its section in any version the caller has held."""
    return item_id > largest_seen


def largest_ids(config: WorkspaceConfig) -> tuple[int, int]:
    """The largest output id and connection id of a configuration (0 for an empty section)."""
    return max((o.id for o in config.outputs), default=0), max((c.id for c in config.connections), default=0)
