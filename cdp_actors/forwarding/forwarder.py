"""Forwarder: the actor that takes shards' outbox windows and audience changes and hands them to `Delivery`.

A row is acknowledged to its shard, which deletes it, once delivered or dropped with a Fatal alert; until
then it stays in the shard's outbox, so pending retries survive any restart. After a (re)start the actor
asks every shard for its undelivered rows again before taking the shard's new windows.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from typing import Any

import ray

from cdp_actors.config import WorkspaceConfig
from cdp_actors.constants import FLUSH_INTERVAL_S, RESEND_RETRY_S
from cdp_actors.forwarding.delivery import Delivery, Pending
from cdp_actors.forwarding.tasks import Tasks
from cdp_actors.integrations.base import MembershipChange
from cdp_actors.partition import ALERTS_NAME, NAMESPACE, shard_name
from cdp_actors.redaction import code_location, describe
from cdp_actors.schema.records import Alert, decode_window
from cdp_actors.telemetry import count

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=0)
class Forwarder:
    def __init__(self, data_dir: str, index: int, config: WorkspaceConfig) -> None:
        from cdp_actors.telemetry import setup_process

        setup_process(config, data_dir, f"forwarder-{index}")
        self.index = index
        self.delivery = Delivery(config)
        self.shards = [ray.get_actor(shard_name(i), namespace=NAMESPACE) for i in range(config.runtime.shards)]
        self.alerts_store = ray.get_actor(ALERTS_NAME, namespace=NAMESPACE)
        self.resent: set[int] = set()  # shards that handed this process their undelivered rows
        self.early: dict[int, list[bytes]] = defaultdict(list)  # windows that arrived before that
        self.loops = Tasks(f"forwarder-{index}")
        for work in (self._ask_for_resend(), self._flush_forever(), self.delivery.flush_bulk_forever()):
            self.loops.spawn(work)

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
            flushed = await asyncio.gather(self._flush_acks(pending.acks), self._flush_alerts(pending.alerts),
                                           self._flush_report_counts(pending.report_counts),
                                           return_exceptions=True)  # fmt: skip
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
                self.delivery.acknowledged(keys)

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
        """After a (re)start nothing is held here: every shard hands its undelivered rows over again."""
        for index, shard in enumerate(self.shards):
            while True:
                try:
                    windows = await shard.resend.remote(self.index)
                    break
                except ray.exceptions.RayError:
                    await asyncio.sleep(RESEND_RETRY_S)
            self.resent.add(index)
            for window in windows + self.early.pop(index, []):  # handed over before the resend: known rows skipped
                self.delivery.queue(decode_window(window))

    def status(self) -> dict[str, Any]:
        return {"forwarder": self.index, **self.delivery.status()}
