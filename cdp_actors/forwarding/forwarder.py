"""Forwarder: delivers outbox rows to their outputs, in order per (connection, user), with retries.

Each (connection, MPID) lane is drained by one task, one row at a time, so a user's batches leave in
acceptance order while lanes run concurrently (bounded per output). A row is acknowledged to its
shard, which deletes it, once delivered or dropped with a Fatal alert; until then it stays in the
shard's outbox, so pending retries survive any restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict, deque
from typing import Any

import aiohttp
import ray

from cdp_actors.config import WorkspaceConfig
from cdp_actors.forwarding.retry import Attempt, RetryPolicy, Verdict
from cdp_actors.integrations.base import build_integration
from cdp_actors.partition import ALERTS_NAME, NAMESPACE, shard_name
from cdp_actors.schema.records import Alert, OutboxRow
from cdp_actors.telemetry import count, now_ms, span

log = logging.getLogger(__name__)
FLUSH_INTERVAL_S = 0.02
MAX_BUFFERED_ALERTS = 100_000


@ray.remote(max_restarts=-1, max_task_retries=0)
class Forwarder:
    def __init__(self, data_dir: str, index: int, config: WorkspaceConfig) -> None:
        from cdp_actors.telemetry import setup_process

        setup_process(config, data_dir, f"forwarder-{index}")
        self.index = index
        self.policy = RetryPolicy(config.retry.max_attempts, config.retry.base_delay_s, config.retry.max_delay_s)
        timeout = config.retry.request_timeout_s
        self.integrations = {o.id: build_integration(o, timeout) for o in config.outputs}
        limit = config.runtime.output_concurrency
        self.sessions = {
            o.id: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) for o in config.outputs
        }
        self.slots = {o.id: asyncio.Semaphore(limit) for o in config.outputs}
        self.shards = [ray.get_actor(shard_name(i), namespace=NAMESPACE) for i in range(config.runtime.shards)]
        self.alerts_store = ray.get_actor(ALERTS_NAME, namespace=NAMESPACE)
        self.known: set[bytes] = set()  # queued, in flight, or delivered and awaiting the shard's ack
        self.lanes: dict[tuple[int, int], deque[OutboxRow]] = {}
        self.acks: dict[int, list[bytes]] = defaultdict(list)
        self.alerts: list[Alert] = []
        self.delivered = self.dropped = 0
        self.forwarded_events: Counter[int] = Counter()
        loop = asyncio.get_running_loop()
        loop.create_task(self._ask_for_resend())
        loop.create_task(self._flush_forever())

    async def deliver(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            if row.key in self.known:
                continue
            self.known.add(row.key)
            lane = (row.connection_id, row.mpid)
            queue = self.lanes.get(lane)
            if queue is None:
                self.lanes[lane] = deque([row])
                asyncio.get_running_loop().create_task(self._drain(lane))
            else:
                queue.append(row)

    async def _drain(self, lane: tuple[int, int]) -> None:
        queue = self.lanes[lane]
        while queue:
            row = queue[0]
            await self._deliver_row(row)
            queue.popleft()
            self.acks[row.shard].append(row.key)
        del self.lanes[lane]

    async def _deliver_row(self, row: OutboxRow) -> None:
        attempt_no = 0
        while True:
            attempt_no += 1
            attempt = await self._attempt(row)
            if attempt.ok:
                self.delivered += 1
                self.forwarded_events[row.output_id] += row.event_count
                return
            verdict = self.policy.judge(attempt_no, attempt)
            self._raise_alert(row, attempt, verdict)
            if not verdict.retry:
                self.dropped += 1
                return
            await asyncio.sleep(verdict.delay_s)

    async def _attempt(self, row: OutboxRow) -> Attempt:
        async with self.slots[row.output_id]:
            with span("forward.deliver", output=row.output_id, connection=row.connection_id, mpid=row.mpid) as s:
                attempt = await self.integrations[row.output_id].send(self.sessions[row.output_id], row)
                s.set_attribute("http.status_code", attempt.status or 0)
                return attempt

    def _raise_alert(self, row: OutboxRow, attempt: Attempt, verdict: Verdict) -> None:
        detail = f"HTTP {attempt.status}" if attempt.status is not None else (attempt.error or "no response")
        alert = Alert(
            ts_ms=now_ms(),
            connection_id=row.connection_id,
            input_id=row.input_id,
            output_id=row.output_id,
            environment=row.environment,
            type=verdict.alert_type,
            severity=verdict.severity,
            message=f"{detail} delivering batch to output {row.output_id} for mpid {row.mpid}",
        )
        if len(self.alerts) < MAX_BUFFERED_ALERTS:
            self.alerts.append(alert)
        count("cdp_alerts", 1, type=verdict.alert_type, severity=verdict.severity)
        log.warning("delivery failed", extra={"fields": {"alert": verdict.alert_type, "severity": verdict.severity}})

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await asyncio.gather(self._flush_acks(), self._flush_alerts(), return_exceptions=True)
            forwarded, self.forwarded_events = self.forwarded_events, Counter()
            for output, events in forwarded.items():
                count("cdp_events_forwarded", events, output=str(output))

    async def _flush_acks(self) -> None:
        pending, self.acks = self.acks, defaultdict(list)
        for shard, keys in pending.items():
            try:
                await self.shards[shard].ack.remote(keys)
            except ray.exceptions.RayError:  # the shard is restarting: keep the keys and try again
                self.acks[shard].extend(keys)
            else:
                self.known.difference_update(keys)

    async def _flush_alerts(self) -> None:
        if not self.alerts:
            return
        batch, self.alerts = self.alerts, []
        try:
            await self.alerts_store.record.remote(batch)
        except ray.exceptions.RayError:
            self.alerts = batch + self.alerts

    async def _ask_for_resend(self) -> None:
        """After a (re)start nothing is held here: every shard hands its undelivered rows over again."""
        for shard in self.shards:
            while True:
                try:
                    await shard.resend.remote(self.index)
                    break
                except ray.exceptions.RayError:
                    await asyncio.sleep(0.5)

    def status(self) -> dict[str, Any]:
        return {
            "forwarder": self.index,
            "delivered_batches": self.delivered,
            "dropped_batches": self.dropped,
            "lanes": len(self.lanes),
            "held_rows": len(self.known),
        }
