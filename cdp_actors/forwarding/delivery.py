"""Delivery: outbox rows and audience changes to their outputs, in order per (connection, user), with retries.

Membership rows (`OutboxRow.audience_id` non-zero) do not wait in lanes: each of a row's changes (one batch's, of
one user, for one output) goes into the bulk queue of its (output, audience), which uploads by size or age; the
row is acknowledged once the uploads carrying all of its changes (or the newer changes of the same user that
replaced them) are done, delivered or dropped with a Fatal alert. Until then it stays in its shard's outbox, so a
forwarder crash loses no change: the shard hands it over again.

Rows wait in (connection, MPID) lanes and only a lane's head is out, so a user's batches leave in acceptance
order while lanes run concurrently (bounded per output); when the head is done, the lane's next row starts.
For an output that combines requests (webhook), the heads ready together go as one request, one task for
the group: a task and its coroutines per row cost several times the HTTP itself (27 against 6 µs of CPU per
row). An exception while screening, preparing or sending one row fails that row alone (a Fatal alert, the row
dropped, the lane's next row started), never the lane. A delivered or dropped row's key is queued in `acks`
for its shard; alerts, report counts and forwarded-event counts wait in buffers that the Forwarder flushes.

A plain class, not the actor: Ray wraps every method of an actor class in a tracing coroutine, and on
this path that doubled the coroutines (and the garbage-collector work) per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import msgspec

from cdp_actors.config import Connection, Output, WorkspaceConfig
from cdp_actors.constants import BULK_MAX_SLEEP_S, MAX_BUFFERED_ALERTS
from cdp_actors.control.diff import is_newer_item, largest_ids, output_changes
from cdp_actors.forwarding.breaker import CLOSED, Breaker
from cdp_actors.forwarding.bulk import BulkQueue, RowRef, Upload
from cdp_actors.forwarding.coalesce import Grouper
from cdp_actors.forwarding.erased import ErasedSubjects
from cdp_actors.forwarding.http import send
from cdp_actors.forwarding.retry import FATAL, RETRY_COUNT_EXCEEDED, Attempt, RetryPolicy
from cdp_actors.forwarding.screening import Screened, passes_everything, screen
from cdp_actors.integrations.base import Adapter, HttpRequest, MembershipChange, Prepared, combines, sends_raw
from cdp_actors.integrations.registry import build_adapter, build_audience_adapter, takes_events
from cdp_actors.profiles.handoff import membership_changes
from cdp_actors.redaction import code_location, describe
from cdp_actors.reports import outbound_key
from cdp_actors.schema.records import Alert, OutboxRow
from cdp_actors.tasks import Tasks
from cdp_actors.telemetry import count, now_ms, span

log = logging.getLogger(__name__)
OUTPUT_REMOVED, CONNECTION_REMOVED = "Output Removed", "Connection Removed"
"""The alert types of a row dropped because its output, or its connection, was removed before it was sent."""
FORGET_POLL_S = 0.02
"""How often `forget` looks whether the erased users' rows held here are gone (a few lane heads finishing)."""
INTERNAL_ERROR = "Internal Error"
"""The alert type of a row dropped because screening, preparing or sending it raised (a bug, or data no check
at the door caught): the row fails alone."""


@dataclass(frozen=True)
class AudienceTarget:
    """Where an audience upload goes, in the fields alerts name (there is no connection or input)."""

    output_id: int
    mpid: int  # the audience id, shown where event alerts show the user
    connection_id: int = 0
    input_id: int = 0
    environment: str = "production"


Target = OutboxRow | AudienceTarget
"""What a request delivers, as alerts name it."""


class SubjectErased(Exception):
    """A row about to be (re)sent is of an erased user: it is discarded instead (`Delivery.forget`)."""


@dataclass
class Pending:
    """What delivery buffered for the Forwarder to pass on: keys of rows delivered or dropped (by shard, for
    the shards to delete), alerts, report counts (per `outbound_key`) and forwarded events (per output)."""

    acks: dict[int, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    alerts: list[Alert] = field(default_factory=list)
    report_counts: Counter[str] = field(default_factory=Counter)
    forwarded_events: Counter[int] = field(default_factory=Counter)


@dataclass
class Routing:
    """What delivery derives from one configuration version: the outputs with their adapters, the connections
    with their filters. A row (or a coalesced group) is prepared and combined with one `Routing`."""

    outputs: dict[int, Output]
    adapters: dict[int, Adapter]
    audience_adapters: dict[int, Any]
    status_alerts: dict[int, dict[int, str]]
    connections: dict[int, Connection]
    passthrough: dict[int, bool]
    """Connections whose filters change nothing: their rows go as the shard encoded them."""

    @staticmethod
    def of(config: WorkspaceConfig, previous: Routing | None = None, rebuild: frozenset[int] = frozenset()) -> Routing:
        """The routing of `config`, keeping the adapters of `previous` for outputs not in `rebuild` (an adapter
        may cost something to build, and an unchanged one needs no rebuilding)."""
        outputs = {o.id: o for o in config.outputs}
        before_events = {} if previous is None else previous.adapters
        before_audience = {} if previous is None else previous.audience_adapters
        adapters, audience = {}, {}
        for o in config.outputs:
            if takes_events(o.kind):
                kept = o.id in before_events and o.id not in rebuild
                adapters[o.id] = before_events[o.id] if kept else build_adapter(o.kind, o.settings)
            kept = o.id in before_audience and o.id not in rebuild
            audience_adapter = before_audience[o.id] if kept else build_audience_adapter(o.kind, o.settings)
            if audience_adapter is not None:
                audience[o.id] = audience_adapter
        connections = {c.id: c for c in config.connections}
        return Routing(
            outputs=outputs,
            adapters=adapters,
            audience_adapters=audience,
            status_alerts={o: a.status_alerts for o, a in {**audience, **adapters}.items()},
            connections=connections,
            passthrough={
                c.id: passes_everything(c, outputs[c.output].new_data_points == "forward") for c in config.connections
            },
        )


class Delivery:
    def __init__(self, config: WorkspaceConfig) -> None:
        self.policy = RetryPolicy(config.retry.max_attempts, config.retry.base_delay_s, config.retry.max_delay_s)
        self.timeout = aiohttp.ClientTimeout(total=config.retry.request_timeout_s)
        self.max_age_s = config.retry.max_age_s
        self.bulk: dict[tuple[int, int], BulkQueue] = {}
        self.max_buffered_changes = config.runtime.max_buffered_audience_changes
        self.forwarder_window = config.runtime.forwarder_window
        self.bulk_wake = asyncio.Event()
        self.uploading: set[tuple[int, int]] = set()  # bulk queues with an upload under way: one at a time each
        self.refused: list[tuple[OutboxRow, MembershipChange]] = []  # membership rows a full queue refused
        retry = config.retry
        self.breaker_settings = (retry.breaker_failures, retry.breaker_open_s, retry.breaker_max_open_s)
        self.output_concurrency = config.runtime.output_concurrency
        self.tasks = Tasks("delivery")
        # per output, kept across versions (a changed output keeps them; a removed one's in-flight retries use them)
        self.breakers: dict[int, Breaker] = {}
        self.sessions: dict[int, aiohttp.ClientSession] = {}
        self.slots: dict[int, asyncio.Semaphore] = {}
        self.groupers: dict[int, Grouper[OutboxRow]] = {}
        self.config = config
        self.routing = Routing.of(config)
        self.largest_ids = largest_ids(config)  # of every version held: ids are never reused
        self.parked: list[OutboxRow] = []  # lane heads of outputs or connections of a version not held yet
        self.version_wanted = asyncio.Event()  # set when a row needs a newer version: the forwarder looks early
        self._add_outputs(self.routing.outputs)
        self.known: set[bytes] = set()  # queued, in flight, or delivered and awaiting the shard's ack
        # the same, of membership rows: by shard too, as two shards' membership keys may be equal (each numbers
        # its own changes), while a batch's rows are the one shard's that applied its sequence number
        self.known_changes: set[RowRef] = set()
        self.parts_left: dict[RowRef, int] = {}  # membership rows' changes not uploaded yet (only rows of 2 or more)
        self.lanes: dict[tuple[int, int], deque[OutboxRow]] = {}
        self.acks: dict[int, list[bytes]] = defaultdict(list)
        self.alerts: list[Alert] = []
        self.delivered = self.dropped = self.screened_out = self.failed = 0
        self.forwarded_events: Counter[int] = Counter()
        self.skipped_events: Counter[tuple[int, str]] = Counter()
        self.report_counts: Counter[str] = Counter()
        self.forwarded_memberships: Counter[int] = Counter()
        self.erased = ErasedSubjects()
        self.erasure_signal = asyncio.Event()  # set (and replaced) by `forget`: retries and breaker waits look again
        self.discarded = 0

    outputs = property(lambda self: self.routing.outputs)
    adapters = property(lambda self: self.routing.adapters)
    audience_adapters = property(lambda self: self.routing.audience_adapters)
    status_alerts = property(lambda self: self.routing.status_alerts)
    connections = property(lambda self: self.routing.connections)
    passthrough = property(lambda self: self.routing.passthrough)

    def use(self, config: WorkspaceConfig) -> Routing:
        """Deliver under `config` from now on, between prepared requests: requests built already go as they were
        built. An added output gets its adapter, session, breaker and slot; a changed one a new adapter, keeping
        its session and breaker; a removed one's rows not yet prepared are dropped with a Fatal alert (as a row
        of a removed connection is): nothing would deliver them as the workspace now says. The connections'
        filters are rebuilt. Rows that waited for this version start."""
        changes = output_changes(self.config, config)
        self.routing = Routing.of(config, self.routing, changes.added | changes.changed)
        self.config = config
        self.largest_ids = tuple(map(max, zip(self.largest_ids, largest_ids(config), strict=True)))  # type: ignore[assignment]
        self._add_outputs({i: self.routing.outputs[i] for i in changes.added | changes.changed})
        self._retune_bulk_queues(changes.changed)
        parked, self.parked = self.parked, []
        for row in parked:
            if row.audience_id:
                self._queue_membership_row(row)
            else:
                self._start(row)
        return self.routing

    def _retune_bulk_queues(self, outputs: Set[int]) -> None:
        """The queues of changed audience outputs take the new adapter's group size and age limit at once."""
        for (output_id, _), queue in self.bulk.items():
            adapter = self.audience_adapters.get(output_id) if output_id in outputs else None
            if adapter is not None:
                queue.retune(adapter.max_batch, adapter.max_age_s)
                self.bulk_wake.set()  # a deadline may have come closer

    def _add_outputs(self, outputs: dict[int, Output]) -> None:
        """Sessions, breakers and slots for outputs that have none yet; the groupers of combining outputs."""
        for output in outputs:
            if output not in self.sessions:
                connector = aiohttp.TCPConnector(limit=self.output_concurrency)
                self.sessions[output] = aiohttp.ClientSession(connector=connector)
                self.breakers[output] = Breaker(*self.breaker_settings)
                self.slots[output] = asyncio.Semaphore(self.output_concurrency)
            adapter = self.routing.adapters.get(output)
            if adapter is not None and combines(adapter) and adapter.max_batches_per_request > 1:
                grouper = self.groupers.get(output)
                size = adapter.max_batches_per_request
                if grouper is None:
                    self.groupers[output] = Grouper(size, partial(self._deliver_group, output))
                else:
                    grouper.max_items = size
            else:
                self.groupers.pop(output, None)  # rows it still holds go on: `_deliver_group` sends them alone

    def _routable(self, row: OutboxRow, routing: Routing) -> bool:
        """Whether `routing` knows the row's output and connection. If not, the row waits for a newer version
        (ids above every id held belong to one not held yet), or is dropped: its output or connection was
        removed."""
        if row.output_id in routing.adapters and row.connection_id in routing.connections:
            return True
        largest_output, largest_connection = self.largest_ids
        if is_newer_item(row.output_id, largest_output) or is_newer_item(row.connection_id, largest_connection):
            self.parked.append(row)
            self.version_wanted.set()
            return False
        self.dropped += 1
        removed = "output" if row.output_id not in routing.adapters else "connection"
        alert_type = OUTPUT_REMOVED if removed == "output" else CONNECTION_REMOVED
        item = row.output_id if removed == "output" else row.connection_id
        self._alert(row, alert_type, FATAL, f"{removed} {item} was removed before the batch was sent")
        self._done(row, None, False)
        return False

    def queue(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            if row.audience_id:
                if (row.shard, row.key) not in self.known_changes:
                    self.known_changes.add((row.shard, row.key))
                    self._queue_membership_row(row)
                continue
            if row.key in self.known:
                continue
            if self.erased and row.mpid in self.erased:  # handed over before the erasure, arriving after it
                self._discard_held(row)
                continue
            self.known.add(row.key)
            lane = (row.connection_id, row.mpid)
            waiting = self.lanes.get(lane)
            if waiting is None:
                self.lanes[lane] = deque([row])
                self._start(row)
            else:
                waiting.append(row)

    def take_pending(self) -> Pending:
        """Everything buffered since the last call; the buffers start empty again."""
        taken = Pending(self.acks, self.alerts, self.report_counts, self.forwarded_events)
        self.acks, self.alerts, self.report_counts, self.forwarded_events = defaultdict(list), [], Counter(), Counter()
        return taken

    def give_back(self, unsent: Pending) -> None:
        """What the Forwarder could not pass on (a shard or the alert store restarting): taken again next
        time, its alerts before those buffered since."""
        for shard, keys in unsent.acks.items():
            self.acks[shard].extend(keys)
        self.alerts[:0] = unsent.alerts
        self.report_counts.update(unsent.report_counts)
        self.forwarded_events.update(unsent.forwarded_events)

    def acknowledged(self, shard: int, keys: list[bytes]) -> None:
        """The shard deleted these rows: nothing here holds them any more."""
        self.known.difference_update(keys)
        if self.known_changes:
            self.known_changes.difference_update((shard, key) for key in keys)

    def _start(self, row: OutboxRow) -> None:
        """Deliver the head of a lane: with the output's other ready rows as one request when the output
        combines requests and is healthy, else on its own."""
        if not self._routable(row, self.routing):
            return
        grouper = self.groupers.get(row.output_id)
        if grouper is not None and self.breakers[row.output_id].state == CLOSED:
            grouper.add(row)
        else:
            self.tasks.spawn(self._deliver_alone(row))

    def _done(self, row: OutboxRow, prepared: Prepared | None, delivered: bool) -> None:
        """The lane's head is delivered or dropped: count it, ack it, start the user's next row."""
        try:
            if prepared is not None:
                if delivered:
                    self.delivered += 1
                    self.forwarded_events[row.output_id] += prepared.forwarded_events
                    key = outbound_key(row.received_ms or now_ms(), row.environment, row.input_id, row.output_id)
                    self.report_counts[key] += prepared.forwarded_events
                else:
                    self.dropped += 1
        finally:  # whatever happens counting, the lane advances
            self.acks[row.shard].append(row.key)
            lane = (row.connection_id, row.mpid)
            waiting = self.lanes[lane]
            waiting.popleft()
            if waiting:
                self._start(waiting[0])
            else:
                del self.lanes[lane]

    def _unfinished(self, row: OutboxRow) -> bool:
        """The row is still its lane's head: neither delivered nor dropped yet."""
        waiting = self.lanes.get((row.connection_id, row.mpid))
        return bool(waiting) and waiting[0] is row

    def _fail(self, rows: Sequence[OutboxRow], doing: str, error: Exception) -> None:
        """Drop those of `rows` still unfinished with a Fatal alert naming what was being done and `error`
        (redacted, no payload), and start their lanes' next rows: an exception on one row's path must never
        stall its lane."""
        detail = f"{doing} failed: {describe(error)}"
        log.error("%s (at %s)", detail, code_location(error), extra={"fields": {"alert": INTERNAL_ERROR}})
        for row in rows:
            if self._unfinished(row):
                self.failed += 1
                self._alert(row, INTERNAL_ERROR, FATAL, detail)
                self._done(row, Prepared(), False)

    async def _deliver_alone(self, row: OutboxRow) -> None:
        prepared = self._prepared(row, self.routing)
        if prepared is not None:
            await self._deliver_prepared(row, prepared)

    async def _deliver_prepared(self, row: OutboxRow, prepared: Prepared) -> None:
        try:
            expires_at = self._expires_at(row)
            delivered = True
            for request in prepared.requests:  # every request is tried, even after one failed
                delivered = await self._deliver_request(row.output_id, request, expires_at, [row]) and delivered
            self._done(row, prepared, delivered)
        except SubjectErased:
            self._discard(row)
        except Exception as error:
            self._fail([row], "sending the batch", error)

    async def _deliver_group(self, output_id: int, rows: list[OutboxRow]) -> None:
        """The first attempt for a group of lane heads, as one combined request. Rows that need more than
        one request, or arrive while the output's breaker is not closed, go on their own; if the combined
        request fails, its retries run outside the group's slot. A row whose preparation fails fails alone."""
        routing = self.routing  # one version prepares and combines the group
        adapter = routing.adapters.get(output_id)
        if self.breakers[output_id].state != CLOSED or adapter is None or output_id not in self.groupers:
            for row in rows:  # the output is not healthy, removed, or no longer combines
                self.tasks.spawn(self._deliver_alone(row))
            return
        together: list[tuple[OutboxRow, Prepared]] = []
        for row in rows:
            prepared = self._prepared(row, routing)
            if prepared is None:
                continue
            if len(prepared.requests) == 1:
                together.append((row, prepared))
            else:  # prepared once: its rejections are alerted and its skipped events counted once
                self.tasks.spawn(self._deliver_prepared(row, prepared))
        if together:
            try:
                await self._deliver_together(output_id, adapter, together)
            except SubjectErased:
                self._split_erased(together)
            except Exception as error:
                self._fail([row for row, _ in together], "sending the batches", error)

    async def _deliver_together(
        self, output_id: int, adapter: Adapter, together: list[tuple[OutboxRow, Prepared]]
    ) -> None:
        try:
            assert combines(adapter), output_id  # only a combining output's rows are grouped (`groupers`)
            request = adapter.combine([prepared.requests[0] for _, prepared in together])
        except Exception as error:  # a bug in combining is no row's fault: each goes on its own instead
            log.error(
                "combining requests for output %s failed: %s (at %s)", output_id, describe(error), code_location(error)
            )
            for row, prepared in together:
                self.tasks.spawn(self._deliver_prepared(row, prepared))
            return
        attempt = await self._attempt(output_id, request, [row for row, _ in together])
        if attempt.ok:
            for row, prepared in together:
                self._done(row, prepared, True)
        else:
            self.tasks.spawn(self._retry_group(output_id, together, request, attempt))

    async def _retry_group(
        self, output_id: int, together: list[tuple[OutboxRow, Prepared]], request: HttpRequest, failed: Attempt
    ) -> None:
        rows = [row for row, _ in together]
        try:
            expires_at = min(self._expires_at(row) for row in rows)
            delivered = await self._deliver_request(output_id, request, expires_at, rows, failed)
            for row, prepared in together:
                self._done(row, prepared, delivered)
        except SubjectErased:
            self._split_erased(together)
        except Exception as error:
            self._fail(rows, "sending the batches", error)

    def _expires_at(self, row: OutboxRow) -> float:
        """When (monotonic) the row has been held `retry.max_age_s` since it was received."""
        received_ms = row.received_ms or now_ms()
        return time.monotonic() + self.max_age_s - (now_ms() - received_ms) / 1000

    def _prepared(self, row: OutboxRow, routing: Routing) -> Prepared | None:
        """The row's requests, built by `routing`'s adapter; None when it has none to send: screened out, failed
        (an exception while decoding, screening or preparing it fails the row alone, with a Fatal alert), or not
        routable (its output or connection removed, or of a version not held yet: see `_routable`)."""
        if self._erased(row):
            self._discard(row)
            return None
        if not self._routable(row, routing):
            return None
        try:
            prepared = self._prepare(row, routing)
        except Exception as error:
            self._fail([row], f"preparing the batch for {routing.outputs[row.output_id].kind}", error)
            return None
        if prepared is None:
            self._done(row, None, True)
        return prepared

    def _prepare(self, row: OutboxRow, routing: Routing) -> Prepared | None:
        """Screen the row for its connection and turn it into the output's requests, alerting its rejections
        and counting skipped events; None: nothing to send. May raise (see `_prepared`)."""
        adapter = routing.adapters[row.output_id]
        if routing.passthrough[row.connection_id] and sends_raw(adapter):
            prepared = adapter.prepare_raw(row.payload, row.event_count)  # the hot path: no decode, no encode
        else:
            prepared = self._prepare_decoded(row, msgspec.json.decode(row.payload), routing)
            if prepared is None:
                return None
        for rejection in prepared.rejections:
            self._alert(row, rejection.alert_type, FATAL, rejection.message)
        for kind, n in prepared.skipped.items():
            self.skipped_events[(row.output_id, kind)] += n
        return prepared

    def _prepare_decoded(self, row: OutboxRow, batch: dict[str, Any], routing: Routing) -> Prepared | None:
        output = routing.outputs[row.output_id]
        screened = (
            Screened(batch)
            if routing.passthrough[row.connection_id]
            else screen(batch, routing.connections[row.connection_id], output.new_data_points == "forward")
        )
        if screened.batch is None:
            self.screened_out += 1
            return None
        return routing.adapters[row.output_id].prepare(screened.batch, now_ms())

    async def _deliver_request(
        self,
        output_id: int,
        request: HttpRequest,
        expires_at: float,
        about: Sequence[Target],
        failed: Attempt | None = None,
    ) -> bool:
        """Send with retries until delivered, refused, out of attempts, or held past `retry.max_age_s`;
        alerts name every row in `about`. `failed`: a first attempt already made (for a group)."""
        breaker = self.breakers[output_id]
        attempt_no, attempt = 0, failed
        while True:
            attempt_no += 1
            if attempt is None:
                self._refuse_erased(about)
                # a closed breaker admits at once: skip creating the coroutine on the per-row path
                if breaker.state != CLOSED:
                    admitted = await self._admit(breaker, expires_at)
                    if admitted is None:  # an erasure meanwhile: look at the rows again
                        attempt_no -= 1
                        continue
                    if not admitted:
                        detail = f"output {output_id} unavailable past retry.max_age_s"
                        self._alert_all(about, RETRY_COUNT_EXCEEDED, FATAL, detail)
                        return False
                attempt = await self._attempt(output_id, request, about)
            if attempt.ok:
                return True
            verdict = self.policy.judge(attempt_no, attempt)
            named = self.status_alerts.get(output_id, {}).get(attempt.status or 0)
            alert_type = named if named and verdict.alert_type != RETRY_COUNT_EXCEEDED else verdict.alert_type
            detail = _attempt_detail(attempt)
            self._alert_all(about, alert_type, verdict.severity, f"{detail} delivering to output {output_id}")
            if not verdict.retry:
                return False
            await self._pause(verdict.delay_s)
            attempt = None

    async def _attempt(self, output_id: int, request: HttpRequest, about: Sequence[Target]) -> Attempt:
        with span("forward.deliver", output=output_id, batches=len(about)) as s:
            async with self.slots[output_id]:
                if self.erased and any(self._erased(row) for row in about):  # erased while waiting for the slot
                    self.breakers[output_id].release_probe()
                    raise SubjectErased()
                attempt = await send(self.sessions[output_id], request, self.timeout)
            s.set_attribute("http.status_code", attempt.status or 0)
        self.breakers[output_id].record(attempt.ok or not attempt.retryable)
        return attempt

    def _alert_all(self, about: Sequence[Target], alert_type: str, severity: str, detail: str) -> None:
        for row in about:
            self._alert(row, alert_type, severity, detail)

    def _alert(self, row: Target, alert_type: str, severity: str, detail: str) -> None:
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
        """Queue membership changes sent once, not from an outbox (a standard audience's send), for the output's
        bulk upload; returns those refused because the queue is at its bound (the caller keeps them and offers
        them again later)."""
        refused = [change for change in changes if not self._bulk_add(output_id, change, None)]
        self.bulk_wake.set()
        return refused

    def _queue_membership_row(self, row: OutboxRow) -> None:
        """A membership row into its (output, audience) bulk queue, its change stamped with a stable id; a row of
        an output not known yet waits for that version, one of a removed output (or undecodable) is dropped with
        a Fatal alert. A full queue's refused rows are offered again after its next upload."""
        target = AudienceTarget(output_id=row.output_id, mpid=row.audience_id)
        if row.output_id not in self.routing.audience_adapters:
            if is_newer_item(row.output_id, self.largest_ids[0]):
                self.parked.append(row)
                self.version_wanted.set()
                return
            detail = f"output {row.output_id} was removed or takes no audiences before the change was sent"
            return self._drop_membership_row(row, target, OUTPUT_REMOVED, detail)
        try:
            changes = membership_changes(row)
        except Exception as error:
            detail = f"decoding an audience change failed: {describe(error)}"
            return self._drop_membership_row(row, target, INTERNAL_ERROR, detail)
        if not changes:
            return self._membership_row_done(row.shard, row.key)
        if len(changes) > 1:
            self.parts_left[(row.shard, row.key)] = len(changes)
        for change in changes:
            if not self._bulk_add(row.output_id, change, (row.shard, row.key)):
                self.refused.append((row, change))
        self.bulk_wake.set()

    def _membership_row_done(self, shard: int, key: bytes) -> None:
        """One of a membership row's changes was uploaded (or dropped): the row is acknowledged with its last."""
        left = self.parts_left.pop((shard, key), 1) - 1
        if left > 0:
            self.parts_left[(shard, key)] = left
        else:
            self.acks[shard].append(key)

    def _drop_membership_row(self, row: OutboxRow, target: AudienceTarget, alert_type: str, detail: str) -> None:
        self._alert(target, alert_type, FATAL, detail)
        self.acks[row.shard].append(row.key)

    def _bulk_add(self, output_id: int, change: MembershipChange, row: RowRef | None) -> bool:
        queue = self.bulk.get((output_id, change.audience_id))
        if queue is None:
            adapter = self.audience_adapters[output_id]
            queue = self.bulk[(output_id, change.audience_id)] = BulkQueue.for_adapter(
                adapter, self.max_buffered_changes
            )
        return queue.add(change, time.monotonic(), row)

    def _offer_refused(self) -> None:
        refused, self.refused = self.refused, []
        for row, change in refused:
            if not self._bulk_add(row.output_id, change, (row.shard, row.key)):
                self.refused.append((row, change))

    async def flush_bulk_forever(self) -> None:
        """Start each audience queue's due uploads: one upload at a time per queue, its groups one after another,
        so a user's last change reaches the partner last; queues upload concurrently (a slow partner, retrying,
        holds up only its own queues)."""
        while True:
            self._offer_refused()
            crowded = self._crowded_outputs()
            deadlines = [
                time.monotonic() if key[0] in crowded else deadline
                for key, queue in self.bulk.items()
                if key not in self.uploading and (deadline := queue.next_deadline()) is not None
            ]
            wait = min([*deadlines, time.monotonic() + BULK_MAX_SLEEP_S]) - time.monotonic()
            self.bulk_wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.bulk_wake.wait(), timeout=max(0.0, wait))
            crowded = self._crowded_outputs()
            for key, queue in list(self.bulk.items()):
                if key in self.uploading:
                    continue
                uploads = queue.drain() if key[0] in crowded else queue.due(time.monotonic())
                if uploads:
                    self.uploading.add(key)
                    self.tasks.spawn(self._upload_queue(key, uploads))

    def _crowded_outputs(self) -> set[int]:
        """Outputs that also take events (webhook, Firehose) whose waiting membership rows fill half of the lane
        window a shard hands them (`runtime.forwarder_window`, which their event rows share): their queues upload
        now, not at their age limit, so that waiting changes never hold the output's events back."""
        held: Counter[int] = Counter()
        for (output_id, _), queue in self.bulk.items():
            if output_id in self.routing.adapters:
                held[output_id] += queue.held_rows
        return {output_id for output_id, rows in held.items() if 2 * rows >= self.forwarder_window}

    async def _upload_queue(self, key: tuple[int, int], uploads: list[Upload]) -> None:
        try:
            for upload in uploads:
                await self._upload_group(*key, upload)
        finally:
            self.uploading.discard(key)
            self.bulk_wake.set()

    async def _upload_group(self, output_id: int, audience_id: int, upload: Upload) -> None:
        """Upload one group, then acknowledge its rows whatever the outcome: delivered, or dropped with a Fatal
        alert (refused, out of retries, its output removed, or an exception preparing or sending it)."""
        target = AudienceTarget(output_id=output_id, mpid=audience_id)
        try:
            await self._upload(output_id, target, upload.changes)
        except Exception as error:
            detail = f"uploading {len(upload.changes)} audience changes failed: {describe(error)}"
            log.error("%s (at %s)", detail, code_location(error), extra={"fields": {"alert": INTERNAL_ERROR}})
            self._alert(target, INTERNAL_ERROR, FATAL, detail)
        finally:
            for shard, key in upload.rows:
                self._membership_row_done(shard, key)

    async def _upload(self, output_id: int, target: AudienceTarget, changes: list[MembershipChange]) -> None:
        adapter = self.audience_adapters.get(output_id)
        if adapter is None:
            self._alert(target, OUTPUT_REMOVED, FATAL, f"output {output_id} was removed before the changes were sent")
            return
        prepared = adapter.prepare_memberships(changes, now_ms())
        for rejection in prepared.rejections:
            self._alert(target, rejection.alert_type, FATAL, rejection.message)
        expires_at = time.monotonic() + self.max_age_s
        delivered = True
        for request in prepared.requests:  # every request is tried, even after one failed
            delivered = await self._deliver_request(output_id, request, expires_at, [target]) and delivered
        if delivered:
            self.forwarded_memberships[output_id] += prepared.forwarded_events or len(changes)

    # --- erasure: the rows of erased users are discarded wherever they are held here

    async def forget(self, mpids: list[int], timeout_s: float) -> int:
        """The erased users' event rows are discarded (acknowledged to their shards, which removed them already,
        counted in `discarded`), never sent: those waiting in lanes at once, a lane head as soon as it is looked at
        (before preparing it, before each attempt, after its slot is free, in a retry's pause or a breaker's
        wait). Returns once no row of theirs is held here, with the rows discarded; TimeoutError past
        `timeout_s` (the erasure's step is tried again). A request already on the wire when this is called
        finishes: its outcome stands (the partner may have the row, as it may have every row delivered before;
        the deletion request the erasure sent it covers both). Membership rows are kept: the erasure's
        membership drops replace the users' pending changes in the bulk queues."""
        before = self.discarded
        wanted = set(mpids)
        self.erased.add(wanted)
        for lane, waiting in list(self.lanes.items()):
            while lane[1] in wanted and len(waiting) > 1:  # the head is out: it sees the erasure itself
                self._discard_held(waiting.pop())
        parked, self.parked = self.parked, []
        for row in parked:
            if self._erased(row):
                self._discard_held(row)
            else:
                self.parked.append(row)
        signal, self.erasure_signal = self.erasure_signal, asyncio.Event()
        signal.set()
        deadline = time.monotonic() + timeout_s
        while any(mpid in wanted for _, mpid in self.lanes):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"rows of {len(wanted)} erased users still held after {timeout_s:g} s")
            await asyncio.sleep(FORGET_POLL_S)
        return self.discarded - before

    def _erased(self, row: Target) -> bool:
        return isinstance(row, OutboxRow) and not row.audience_id and row.mpid in self.erased

    def _refuse_erased(self, about: Sequence[Target]) -> None:
        if self.erased and any(self._erased(row) for row in about):
            raise SubjectErased()

    def _discard_held(self, row: OutboxRow) -> None:
        """A row not (or no longer) in a lane: counted and acknowledged."""
        self.discarded += 1
        self.acks[row.shard].append(row.key)

    def _discard(self, row: OutboxRow) -> None:
        """A lane head of an erased user: counted, acknowledged, the lane's next row started."""
        if self._unfinished(row):
            self.discarded += 1
            self._done(row, None, False)

    def _split_erased(self, together: list[tuple[OutboxRow, Prepared]]) -> None:
        """A group with rows of an erased user: those are discarded, the others go on their own."""
        for row, prepared in together:
            if self._erased(row):
                self._discard(row)
            elif self._unfinished(row):
                self.tasks.spawn(self._deliver_prepared(row, prepared))

    async def _pause(self, delay_s: float) -> None:
        """A retry's wait, cut short by an erasure (the retry then looks at its rows again)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.erasure_signal.wait(), delay_s)

    async def _admit(self, breaker: Breaker, expires_at: float) -> bool | None:
        """The breaker's admission, or None if an erasure came first (the caller looks at its rows again)."""
        admit = asyncio.ensure_future(breaker.admit(expires_at))
        erasure = asyncio.ensure_future(self.erasure_signal.wait())
        try:
            await asyncio.wait({admit, erasure}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            erasure.cancel()
            if not admit.done():
                admit.cancel()  # still waiting: it granted nothing
        return admit.result() if admit.done() and not admit.cancelled() else None

    async def close(self) -> None:
        """Close the outputs' HTTP sessions (the Forwarder's live as long as its process)."""
        for session in self.sessions.values():
            await session.close()

    def status(self, forwarder: int) -> ForwarderStatus:
        return ForwarderStatus(
            forwarder=forwarder,
            delivered_batches=self.delivered,
            dropped_batches=self.dropped,
            screened_out_batches=self.screened_out,
            failed_batches=self.failed,
            skipped_events={f"{output}:{kind}": n for (output, kind), n in self.skipped_events.items()},
            breakers={output: breaker.state for output, breaker in self.breakers.items()},
            audience_queues={f"{output}:{audience}": len(q) for (output, audience), q in self.bulk.items()},
            forwarded_memberships=dict(self.forwarded_memberships),
            lanes=len(self.lanes),
            held_rows=len(self.known) + len(self.known_changes),
            discarded_batches=self.discarded,
        )


class ForwarderStatus(msgspec.Struct):
    """What one forwarder's `Delivery` has done since it started, and holds now (for `/cdp/status`)."""

    forwarder: int
    delivered_batches: int
    dropped_batches: int
    screened_out_batches: int
    failed_batches: int
    skipped_events: dict[str, int]
    """Events an output does not take, per "output:kind"."""
    breakers: dict[int, str]
    """Each output's circuit breaker state."""
    audience_queues: dict[str, int]
    """Membership changes waiting per "output:audience"."""
    forwarded_memberships: dict[int, int]
    lanes: int
    held_rows: int
    """Outbox rows queued, in flight, or delivered and awaiting the shard's acknowledgement."""
    discarded_batches: int = 0
    """Rows of erased users discarded instead of delivered (`Delivery.forget`)."""


def _attempt_detail(attempt: Attempt) -> str:
    """What an alert says of a failed attempt: its status, or its (redacted) transport error."""
    if attempt.status is None:
        return attempt.error or "no response"
    if 300 <= attempt.status < 400:
        return f"HTTP {attempt.status} (redirects are not followed)"
    return f"HTTP {attempt.status}"
