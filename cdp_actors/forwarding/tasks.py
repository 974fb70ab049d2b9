"""Background tasks that are owned: the event loop keeps only a weak reference to a task, so one nobody holds
can be garbage collected before it finishes (a lane that never advances); and a task that dies of an unexpected
exception would otherwise say so only as a warning at garbage collection, if at all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from cdp_actors.redaction import code_location, describe

log = logging.getLogger(__name__)


class Tasks:
    """The running tasks of one owner, each kept until it is done; an exception one ends with is logged."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.running: set[asyncio.Task[None]] = set()
        self.failed = 0

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self.running.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        self.failed += 1
        log.error("%s task failed: %s (at %s)", self.owner, describe(error), code_location(error),
                  extra={"fields": {"task": task.get_name()}})  # fmt: skip

    def __len__(self) -> int:
        return len(self.running)
