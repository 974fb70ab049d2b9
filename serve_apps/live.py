"""`LiveConfig`: a Serve replica's hold on the workspace configuration, following the control actor's versions.

At its first request the replica takes the control actor's current version (the control actor may start after the
replica: `serve run` deploys the apps in any order); from then on, a background loop asks
the control actor every CONFIG_POLL_INTERVAL_S whether a newer version exists (one small actor call, almost always
answered None) and offers it to the replica's `ConfigWatcher`, which builds what the replica derives from it (a key
table, filters) once per version. A request takes one `snapshot()` and uses only it from start to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

import ray.exceptions

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.control.watcher import CONFIG_POLL_INTERVAL_S, ConfigSnapshot, ConfigWatcher
from cdp_actors.tasks import keep_running

T = TypeVar("T")


def _same(config: WorkspaceConfig) -> WorkspaceConfig:
    return config


class LiveConfig(Generic[T]):
    def __init__(self, derive: Callable[[WorkspaceConfig], T]) -> None:
        self.derive = derive
        self.watcher: ConfigWatcher[T] | None = None
        self._poller: asyncio.Task[None] | None = None

    @staticmethod
    def plain() -> LiveConfig[WorkspaceConfig]:
        """A live configuration that derives nothing."""
        return LiveConfig(_same)

    async def snapshot(self) -> ConfigSnapshot[T]:
        """The version a request uses from start to end (awaits the control actor only at the first request)."""
        if self.watcher is None:
            current = await handles.control().current.remote()
            if self.watcher is None:  # another request may have loaded it meanwhile
                self.watcher = ConfigWatcher(current, self.derive)
                self._poller = keep_running(self._poll_forever, "configuration poll")
        return self.watcher.held

    async def offer(self, version: int, config: WorkspaceConfig) -> None:
        """A version this replica wrote itself (a Platform API change): in use from its next request on."""
        await self.snapshot()
        assert self.watcher is not None
        self.watcher.offer(version, config)

    async def fresh(self) -> ConfigSnapshot[T]:
        """The newest version at this moment, not at the last poll: for a rare request that must see a change
        made a moment ago through another replica (a CA seeded right after its activation)."""
        held = await self.snapshot()
        try:
            await self._poll_once()
        except ray.exceptions.RayError:  # the control actor restarting: the held version, as between polls
            return held
        assert self.watcher is not None
        return self.watcher.held

    async def _poll_once(self) -> None:
        assert self.watcher is not None
        found = await handles.control().changed_since.remote(self.watcher.version)
        if found is not None:
            self.watcher.offer(*found)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL_INTERVAL_S)
            await self._poll_once()
