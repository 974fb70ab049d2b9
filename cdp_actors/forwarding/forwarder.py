"""Forwarder: the actor that takes shards' outbox windows and audience changes and hands them to `Delivery`.

A row is acknowledged to its shard, which deletes it, once delivered or dropped with a Fatal alert; until
then it stays in the shard's outbox, so pending retries survive any restart. After a (re)start the actor
asks every shard for its undelivered rows again before taking the shard's new windows.

It follows the configuration's versions like the dispatcher (`cdp_actors/control/follow.py`): from the control
actor's current one at (re)start, then every poll, and at once when `Delivery` is handed a row of an output or
connection it does not know yet (the shards may hold a version before this process does). `Delivery.use` takes a
version between prepared requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict

import ray
import ray.exceptions

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.constants import FLUSH_INTERVAL_S, RESEND_RETRY_S
from cdp_actors.control.follow import current_version, follow
from cdp_actors.control.watcher import ConfigWatcher
from cdp_actors.forwarding.delivery import Delivery, ForwarderStatus, Pending
from cdp_actors.integrations.base import MembershipChange
from cdp_actors.redaction import code_location, describe
from cdp_actors.schema.records import Alert, decode_window
from cdp_actors.tasks import keep_running
from cdp_actors.telemetry import count

log = logging.getLogger(__name__)
FORGET_TIMEOUT_REQUESTS = 3
"""An erasure waits this many request timeouts at most for the erased users' lane heads to leave (one may be on
the wire, and wait for its output's slot first); past that the erasure step fails and is tried again."""


@ray.remote(max_restarts=-1, max_task_retries=0)
class Forwarder:
    def __init__(self, data_dir: str, index: int, config: WorkspaceConfig) -> None:
        from cdp_actors.telemetry import setup_process

        setup_process(config, data_dir, f"forwarder-{index}")
        self.index = index
        self.delivery = Delivery(config)
        self.forget_timeout_s = FORGET_TIMEOUT_REQUESTS * config.retry.request_timeout_s
        self.watcher = ConfigWatcher((0, config), self.delivery.use)  # the current version comes with the first poll
        self.loaded = asyncio.Event()  # the current version is held: rows handed over now go as it says
        self.shards = handles.shards(config.runtime.shards)
        self.alerts_store = handles.alerts()
        self.resent: set[int] = set()  # shards that handed this process their undelivered rows
        self.early: dict[int, list[bytes]] = defaultdict(list)  # windows that arrived before that
        keep_running(self._follow_config, "configuration poll")
        keep_running(self._ask_for_resend, "resend")
        keep_running(self._flush_forever, "flush")
        keep_running(self.delivery.flush_bulk_forever, "audience uploads")

    async def _follow_config(self) -> None:
        if self.watcher.version == 0:
            self.watcher.offer(*await current_version())
        self.loaded.set()
        await follow(self.watcher, self.delivery.version_wanted)

    def config_version(self) -> int:
        return self.watcher.version

    async def deliver(self, shard: int, windows: list[bytes]) -> None:
        """Queue windows of one shard's outbox rows (one per output). Until that shard has answered this
        process's resend, its windows wait: they may be older than what the resend returns, and must not
        overtake it."""
        if shard not in self.resent:
            self.early[shard].extend(windows)
            return
        for window in windows:
            self.delivery.queue(decode_window(window))

    async def deliver_memberships(self, output_id: int, changes: list[MembershipChange]) -> list[MembershipChange]:
        return self.delivery.queue_memberships(output_id, changes)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            pending = self.delivery.take_pending()
            flushed = await asyncio.gather(
                self._flush_acks(pending.acks),
                self._flush_alerts(pending.alerts),
                self._flush_report_counts(pending.report_counts),
                return_exceptions=True,
            )
            for error in flushed:
                if isinstance(error, Exception):  # not a restarting actor (that is retried): say so, go on
                    log.error("flush failed: %s (at %s)", describe(error), code_location(error))
            for output, events in pending.forwarded_events.items():
                count("cdp_events_forwarded", events, output=str(output))

    async def _flush_acks(self, acks: dict[int, list[bytes]]) -> None:
        for shard, keys in acks.items():
            try:
                await self.shards[shard].ack.remote(keys)
            except ray.exceptions.RayError:  # the shard is restarting: keep the keys and try again
                self.delivery.give_back(Pending(acks={shard: keys}))
            else:
                self.delivery.acknowledged(shard, keys)

    async def _flush_alerts(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        try:
            await self.alerts_store.record.remote(alerts)
        except ray.exceptions.RayError:
            self.delivery.give_back(Pending(alerts=alerts))

    async def _flush_report_counts(self, counts: Counter[str]) -> None:
        if not counts:
            return
        try:
            await self.alerts_store.record_forwarded.remote(dict(counts))
        except ray.exceptions.RayError:
            self.delivery.give_back(Pending(report_counts=counts))

    async def _ask_for_resend(self) -> None:
        """After a (re)start nothing is held here: every shard hands its undelivered rows over again. Any failure
        asks that shard again (after a pause), so no shard's windows are left waiting in `early`. It waits for the
        current configuration version first: a restarted process was created with the first one."""
        await self.loaded.wait()
        for index, shard in enumerate(self.shards):
            while index not in self.resent:
                try:
                    windows = await shard.resend.remote(self.index)
                    for window in windows + self.early.get(index, []):  # handed over before: known rows skipped
                        self.delivery.queue(decode_window(window))
                except ray.exceptions.RayError:  # the shard is restarting
                    await asyncio.sleep(RESEND_RETRY_S)
                except Exception as error:
                    log.error(
                        "resend from shard %d failed, asking again: %s (at %s)",
                        index,
                        describe(error),
                        code_location(error),
                    )
                    await asyncio.sleep(RESEND_RETRY_S)
                else:
                    self.early.pop(index, None)
                    self.resent.add(index)

    async def forget(self, mpids: list[int]) -> int:
        """Erased users: their event rows held here are discarded (`Delivery.forget`); returns how many."""
        return await self.delivery.forget(mpids, self.forget_timeout_s)

    def status(self) -> ForwarderStatus:
        return self.delivery.status(self.index)
