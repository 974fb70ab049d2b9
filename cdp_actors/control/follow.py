"""How an actor follows the control actor's versions: load the current one, then poll for newer ones.

The polling half of the plan in the package docstring, for the dispatcher and the forwarders (Serve replicas have
`serve_apps/live.py`): one owned background loop per process that every CONFIG_POLL_INTERVAL_S asks
`changed_since(held version)` and offers what it gets to the process's `ConfigWatcher`. A process may also ask for
an early look (`wake`): a forwarder handed a row of an output it does not know yet does, rather than wait for the
interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.constants import RETRY_DELAY_S
from cdp_actors.control.watcher import CONFIG_POLL_INTERVAL_S, ConfigWatcher

log = logging.getLogger(__name__)
MIN_POLL_GAP_S = 0.05
"""Seconds between two looks however often `wake` is set: rows of a new output arriving by the thousand before
its version ask for one look, not one each."""


async def current_version() -> tuple[int, WorkspaceConfig]:
    """The control actor's current version, asked again until it answers (it is created before every other actor
    and restarted when it dies, so a failure here is a restart in progress)."""
    while True:
        try:
            return await handles.control().current.remote()
        except Exception:
            log.warning("could not read the current configuration version; asking again", exc_info=True)
            await asyncio.sleep(RETRY_DELAY_S)


async def follow(watcher: ConfigWatcher[Any], wake: asyncio.Event | None = None) -> None:
    """Offer the watcher every newer version, looking every CONFIG_POLL_INTERVAL_S or as soon as `wake` is set.
    A failed look keeps the held version (the next one looks again); run it under `keep_running`."""
    wake = wake or asyncio.Event()
    while True:
        await asyncio.sleep(MIN_POLL_GAP_S)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), CONFIG_POLL_INTERVAL_S - MIN_POLL_GAP_S)
        wake.clear()
        try:
            found = await handles.control().changed_since.remote(watcher.version)
        except Exception:
            log.warning("could not look for a new configuration version; keeping %d", watcher.version, exc_info=True)
            continue
        if found is not None:
            watcher.offer(*found)
