"""`ConfigWatcher`: how a process that uses the configuration (a shard, a forwarder, a Serve replica) holds one
version, notices a newer one and swaps to it between batches, never inside one.

The process gives the watcher what it has: a cheap way to read the current version number (`read_version`) and
a way to load the current configuration (`load`), both synchronous; or nothing, and it `offer`s versions itself
(from a background poll of the control actor, or a push). `derive` builds what the process makes from a
configuration (adapters, a key table, filters) once per version, not per batch.

Per batch, the caller takes one `snapshot()` and uses only it for the whole batch: its version, configuration
and derived object stay together however many versions arrive meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cdp_actors.config import WorkspaceConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

CONFIG_POLL_INTERVAL_S = 0.5
"""Seconds between looks at the current version: a new version is in use within this plus one load (a
configuration validates in a few ms), inside the second the Platform API promises; a look costs ~1 µs in
the owner's process and one actor call (~1 ms) elsewhere, so twice a second is nothing."""


@dataclass(frozen=True)
class ConfigSnapshot(Generic[T]):
    """One version of the configuration and what the process derived from it: what a batch holds."""

    version: int
    config: WorkspaceConfig
    derived: T


class ConfigWatcher(Generic[T]):
    def __init__(
        self,
        initial: tuple[int, WorkspaceConfig],
        derive: Callable[[WorkspaceConfig], T],
        read_version: Callable[[], int] | None = None,
        load: Callable[[], tuple[int, WorkspaceConfig]] | None = None,
        poll_interval_s: float = CONFIG_POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (read_version is None) != (load is None):
            raise ValueError("read_version and load go together: a watcher polls with both or is offered versions")
        self.derive = derive
        self.read_version = read_version
        self.load = load
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self.held = ConfigSnapshot(initial[0], initial[1], derive(initial[1]))
        self.last_poll = clock()

    @property
    def version(self) -> int:
        return self.held.version

    def snapshot(self) -> ConfigSnapshot[T]:
        """The snapshot a batch uses from start to end: the held one, after a look at the current version when
        the poll interval has passed. A look that fails (the owner restarting) keeps the held version."""
        if self.read_version is not None and self.clock() - self.last_poll >= self.poll_interval_s:
            self.last_poll = self.clock()
            try:
                self._poll()
            except Exception:  # the batch goes on with the version it had; the next interval looks again
                log.warning("could not look for a new configuration version; keeping version %d", self.version,
                            exc_info=True)  # fmt: skip
        return self.held

    def is_due(self) -> bool:
        """Whether a poll of the owner is due (for a process that polls asynchronously and then `offer`s)."""
        return self.clock() - self.last_poll >= self.poll_interval_s

    def offer(self, version: int, config: WorkspaceConfig) -> bool:
        """Hold `version` from now on if it is newer than the held one; True if it was taken. An older or equal
        version (a late answer, a repeated push) changes nothing. If `derive` fails, the held version stays and
        the error propagates."""
        self.last_poll = self.clock()
        if version <= self.held.version:
            return False
        self.held = ConfigSnapshot(version, config, self.derive(config))
        return True

    def _poll(self) -> None:
        assert self.read_version is not None and self.load is not None
        if self.read_version() != self.held.version:
            self.offer(*self.load())
