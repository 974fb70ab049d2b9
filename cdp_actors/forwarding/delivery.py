"""Delivery: outbox rows and audience changes to their outputs, in order per (connection, user), with retries.

Each (connection, MPID) lane is drained by one task, one row at a time, so a user's batches leave in
acceptance order while lanes run concurrently (bounded per output). A delivered or dropped row's key is
queued in `acks` for its shard; alerts, report counts and forwarded-event counts wait in buffers that
the Forwarder actor flushes.

A plain class, not the actor: Ray wraps every method of an actor class in a tracing coroutine, and on
this path that doubled the coroutines (and the garbage-collector work) per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
import msgspec

from cdp_actors.config import WorkspaceConfig
from cdp_actors.forwarding.breaker import CLOSED, Breaker
from cdp_actors.forwarding.bulk import BulkQueue
from cdp_actors.forwarding.coalesce import Coalescer
from cdp_actors.forwarding.http import send
from cdp_actors.forwarding.retry import FATAL, RETRY_COUNT_EXCEEDED, Attempt, RetryPolicy
from cdp_actors.forwarding.screening import Screened, passes_everything, screen
from cdp_actors.integrations.base import HttpRequest, MembershipChange, Prepared
from cdp_actors.integrations.registry import build_adapter, build_audience_adapter, takes_events
from cdp_actors.reports import outbound_key
from cdp_actors.schema.records import Alert, OutboxRow
from cdp_actors.telemetry import count, now_ms, span

log = logging.getLogger(__name__)
MAX_BUFFERED_ALERTS = 100_000


@dataclass(frozen=True)
class AudienceTarget:
    """Where an audience upload goes, in the fields alerts name (there is no connection or input)."""

    output_id: int
    mpid: int  # the audience id, shown where event alerts show the user
    connection_id: int = 0
    input_id: int = 0
    environment: str = "production"


class Delivery:
    def __init__(self, config: WorkspaceConfig) -> None:
        self.policy = RetryPolicy(config.retry.max_attempts, config.retry.base_delay_s, config.retry.max_delay_s)
        self.timeout = aiohttp.ClientTimeout(total=config.retry.request_timeout_s)
        self.outputs = {o.id: o for o in config.outputs}
        self.adapters = {o.id: build_adapter(o.kind, o.settings) for o in config.outputs if takes_events(o.kind)}
        audience = {o.id: build_audience_adapter(o.kind, o.settings) for o in config.outputs}
        self.audience_adapters = {output: adapter for output, adapter in audience.items() if adapter is not None}
        self.status_alerts = {o: a.status_alerts for o, a in {**self.audience_adapters, **self.adapters}.items()}
        self.max_age_s = config.retry.max_age_s
        self.bulk: dict[tuple[int, int], BulkQueue] = {}
        self.max_buffered_changes = config.runtime.max_buffered_audience_changes
        self.bulk_wake = asyncio.Event()
        self.connections = {c.id: c for c in config.connections}
        self.passthrough = {c.id: passes_everything(c, self.outputs[c.output].new_data_points == "forward")
                            for c in config.connections}  # fmt: skip
        self.breakers = {o.id: Breaker() for o in config.outputs}
        limit = config.runtime.output_concurrency
        self.sessions = {
            o.id: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) for o in config.outputs
        }
        self.slots = {o.id: asyncio.Semaphore(limit) for o in config.outputs}
        self.coalescers = {
            output: Coalescer(adapter.combine, adapter.max_batches_per_request, partial(self._send, output))
            for output, adapter in self.adapters.items()
            if getattr(adapter, "max_batches_per_request", 1) > 1
        }
        self.known: set[bytes] = set()  # queued, in flight, or delivered and awaiting the shard's ack
        self.lanes: dict[tuple[int, int], deque[OutboxRow]] = {}
        self.acks: dict[int, list[bytes]] = defaultdict(list)
        self.alerts: list[Alert] = []
        self.delivered = self.dropped = self.screened_out = 0
        self.forwarded_events: Counter[int] = Counter()
        self.skipped_events: Counter[tuple[int, str]] = Counter()
        self.report_counts: Counter[str] = Counter()
        self.forwarded_memberships: Counter[int] = Counter()

    def queue(self, rows: list[OutboxRow]) -> None:
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

    def acknowledged(self, keys: list[bytes]) -> None:
        """The shard deleted these rows: nothing here holds them any more."""
        self.known.difference_update(keys)

    async def _drain(self, lane: tuple[int, int]) -> None:
        queue = self.lanes[lane]
        while queue:
            row = queue[0]
            await self._deliver_row(row)
            queue.popleft()
            self.acks[row.shard].append(row.key)
        del self.lanes[lane]

    async def _deliver_row(self, row: OutboxRow) -> None:
        adapter = self.adapters[row.output_id]
        if self.passthrough[row.connection_id] and hasattr(adapter, "prepare_raw"):
            prepared = adapter.prepare_raw(row.payload, row.event_count)  # the hot path: no decode, no encode
        else:
            prepared = self._prepare(row, msgspec.json.decode(row.payload))
        if prepared is None:
            return
        for rejection in prepared.rejections:
            self._alert(row, rejection.alert_type, FATAL, rejection.message)
        for kind, n in prepared.skipped.items():
            self.skipped_events[(row.output_id, kind)] += n
        received_ms = row.received_ms or now_ms()
        expires_at = time.monotonic() + self.max_age_s - (now_ms() - received_ms) / 1000
        delivered = True
        for request in prepared.requests:  # every request is tried, even after one failed
            delivered = await self._deliver_request(row, request, expires_at) and delivered
        if delivered:
            self.delivered += 1
            self.forwarded_events[row.output_id] += prepared.forwarded_events
            self.report_counts[outbound_key(received_ms, row.environment, row.input_id, row.output_id)] += (
                prepared.forwarded_events
            )
        else:
            self.dropped += 1

    def _prepare(self, row: OutboxRow, batch: dict[str, Any]) -> Prepared | None:
        """Screen the row for its connection and turn it into the output's requests; None: nothing to send."""
        output = self.outputs[row.output_id]
        screened = Screened(batch) if self.passthrough[row.connection_id] else \
            screen(batch, self.connections[row.connection_id], output.new_data_points == "forward")  # fmt: skip
        if screened.batch is None:
            self.screened_out += 1
            return None
        try:
            return self.adapters[row.output_id].prepare(screened.batch, now_ms())
        except Exception as error:  # an adapter bug must not stall the lane: alert and drop the row
            log.exception("adapter %s failed", output.kind)
            self._alert(row, "Internal Error", FATAL, f"{output.kind} adapter failed: {error!r}")
            return None

    async def _deliver_request(self, row: OutboxRow | AudienceTarget, request: HttpRequest, expires_at: float) -> bool:
        """Send with retries until delivered, refused, out of attempts, or held past `retry.max_age_s`."""
        breaker = self.breakers[row.output_id]
        attempt_no = 0
        while True:
            attempt_no += 1
            # a closed breaker admits at once: skip creating the coroutine on the per-row path
            if breaker.state != CLOSED and not await breaker.admit(expires_at):
                detail = f"output {row.output_id} unavailable past retry.max_age_s"
                self._alert(row, RETRY_COUNT_EXCEEDED, FATAL, detail)
                return False
            attempt = await self._attempt(row, request)
            if attempt.ok:
                return True
            verdict = self.policy.judge(attempt_no, attempt)
            named = self.status_alerts[row.output_id].get(attempt.status or 0)
            alert_type = named if named and verdict.alert_type != RETRY_COUNT_EXCEEDED else verdict.alert_type
            detail = f"HTTP {attempt.status}" if attempt.status is not None else (attempt.error or "no response")
            self._alert(row, alert_type, verdict.severity, f"{detail} delivering to output {row.output_id}")
            if not verdict.retry:
                return False
            await asyncio.sleep(verdict.delay_s)

    async def _attempt(self, row: OutboxRow | AudienceTarget, request: HttpRequest) -> Attempt:
        coalescer = self.coalescers.get(row.output_id) if isinstance(row, OutboxRow) else None
        with span("forward.deliver", output=row.output_id, connection=row.connection_id, mpid=row.mpid) as s:
            attempt = await (coalescer.send(request) if coalescer else self._send(row.output_id, request))
            s.set_attribute("http.status_code", attempt.status or 0)
        self.breakers[row.output_id].record(attempt.ok or not attempt.retryable)
        return attempt

    async def _send(self, output_id: int, request: HttpRequest) -> Attempt:
        async with self.slots[output_id]:
            return await send(self.sessions[output_id], request, self.timeout)

    def _alert(self, row: OutboxRow | AudienceTarget, alert_type: str, severity: str, detail: str) -> None:
        alert = Alert(
            ts_ms=now_ms(),
            connection_id=row.connection_id,
            input_id=row.input_id,
            output_id=row.output_id,
            environment=row.environment,
            type=alert_type,
            severity=severity,
            message=f"{detail} (mpid {row.mpid})",
        )
        if len(self.alerts) < MAX_BUFFERED_ALERTS:
            self.alerts.append(alert)
        count("cdp_alerts", 1, type=alert_type, severity=severity)
        log.warning("delivery failed", extra={"fields": {"alert": alert_type, "severity": severity}})

    def queue_memberships(self, output_id: int, changes: list[MembershipChange]) -> list[MembershipChange]:
        """Queue audience membership changes for an audience output's bulk upload; returns those refused
        because the queue is at its bound (the caller keeps them and offers them again later)."""
        adapter = self.audience_adapters[output_id]
        refused = []
        now = time.monotonic()
        for change in changes:
            queue = self.bulk.get((output_id, change.audience_id))
            if queue is None:
                queue = self.bulk[(output_id, change.audience_id)] = BulkQueue.for_adapter(
                    adapter, self.max_buffered_changes
                )
            if not queue.add(change, now):
                refused.append(change)
        self.bulk_wake.set()
        return refused

    async def flush_bulk_forever(self) -> None:
        """Upload each audience queue's due groups, one group after another per queue, so a user's last
        change reaches the partner last."""
        while True:
            deadlines = [d for q in self.bulk.values() if (d := q.next_deadline()) is not None]
            wait = min([*deadlines, time.monotonic() + 1.0]) - time.monotonic()
            self.bulk_wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.bulk_wake.wait(), timeout=max(0.0, wait))
            for (output_id, audience_id), queue in list(self.bulk.items()):
                for group in queue.due(time.monotonic()):
                    await self._upload_group(output_id, audience_id, group)

    async def _upload_group(self, output_id: int, audience_id: int, group: list[MembershipChange]) -> None:
        target = AudienceTarget(output_id=output_id, mpid=audience_id)
        prepared = self.audience_adapters[output_id].prepare_memberships(group, now_ms())
        for rejection in prepared.rejections:
            self._alert(target, rejection.alert_type, FATAL, rejection.message)
        expires_at = time.monotonic() + self.max_age_s
        for request in prepared.requests:
            await self._deliver_request(target, request, expires_at)
        self.forwarded_memberships[output_id] += prepared.forwarded_events or len(group)

    def status(self) -> dict[str, Any]:
        return {
            "delivered_batches": self.delivered,
            "dropped_batches": self.dropped,
            "screened_out_batches": self.screened_out,
            "skipped_events": {f"{output}:{kind}": n for (output, kind), n in self.skipped_events.items()},
            "breakers": {output: breaker.state for output, breaker in self.breakers.items()},
            "audience_queues": {f"{output}:{audience}": len(q) for (output, audience), q in self.bulk.items()},
            "forwarded_memberships": dict(self.forwarded_memberships),
            "lanes": len(self.lanes),
            "held_rows": len(self.known),
        }
