"""Background tasks that are owned, the one way the runtime starts them.

The event loop keeps only a weak reference to a task, so one nobody holds can be garbage collected before it
finishes (a lane that never advances); and a task that dies of an unexpected exception would otherwise say so
only as a warning at garbage collection, if at all: a loop that stops silently is a stall nobody sees.

- `spawn(work, name)`: a one-off task, kept until done; an exception it ends with is logged with its location.
- `keep_running(loop, name)`: a long-lived loop. An unexpected exception is logged with its location and the
  loop starts again after a pause that doubles while it keeps failing. Every loop of the runtime is written to
  start over from persisted or in-memory state (the dispatcher from its cursor, the alias loop from the stored
  jobs, the forwarder's resend from the shards not answered yet), so running it again in place is safe and
  keeps the actor's other work going; exiting the actor would instead lose what its memory holds (callers'
  futures, rows held for delivery) for the same retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cdp_actors.constants import MAX_RESTART_DELAY_S, RESTART_DELAY_S
from cdp_actors.redaction import code_location, describe

log = logging.getLogger(__name__)


Work = Coroutine[Any, Any, None]


class Tasks:
    """The running tasks of one owner, each kept until it is done; an exception one ends with is logged."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.running: set[asyncio.Task[None]] = set()
        self.failed = 0
        self.restarts = 0

    def spawn(self, work: Work, name: str | None = None) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self.running.add(task)
        task.add_done_callback(self._finished)
        return task

    def keep_running(
        self, loop: Callable[[], Work], name: str, first_delay_s: float = RESTART_DELAY_S
    ) -> asyncio.Task[None]:
        """Run `loop()` until it returns; after an unexpected exception, log it and run it again."""
        return self.spawn(self._restarting(loop, name, first_delay_s), name)

    async def _restarting(self, loop: Callable[[], Work], name: str, first_delay_s: float) -> None:
        delay = first_delay_s
        while True:
            started = time.monotonic()
            try:
                await loop()
                return
            except Exception as error:  # noqa: BLE001 (logged, then the loop runs again)
                self.failed += 1
                self.restarts += 1
                log.error(
                    "%s loop %s failed, restarting in %.1f s: %s (at %s)",
                    self.owner,
                    name,
                    delay,
                    describe(error),
                    code_location(error),
                    extra={"fields": {"task": name}},
                )
            if time.monotonic() - started > MAX_RESTART_DELAY_S:  # it ran a good while: a new fault, not the same
                delay = first_delay_s
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY_S)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        self.failed += 1
        log.error(
            "%s task failed: %s (at %s)",
            self.owner,
            describe(error),
            code_location(error),
            extra={"fields": {"task": task.get_name()}},
        )

    def __len__(self) -> int:
        return len(self.running)


_process_tasks = Tasks("actor")
"""The background tasks of this process (one actor per process under Ray)."""


def spawn(work: Work, name: str) -> asyncio.Task[None]:
    """Start a one-off background task of this process, kept until done, its failure logged."""
    return _process_tasks.spawn(work, name)


def keep_running(loop: Callable[[], Work], name: str) -> asyncio.Task[None]:
    """Start a long-lived loop of this process that runs again after an unexpected exception."""
    return _process_tasks.keep_running(loop, name)


def restarts() -> int:
    """How many times this process's long-lived loops were run again after an unexpected exception."""
    return _process_tasks.restarts
