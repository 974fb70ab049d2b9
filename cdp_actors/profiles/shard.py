"""ProfileShard: owns the profiles of the users hashed to it, in its own LMDB environment.

One transaction per chunk applies every batch to its profile, appends event history and writes an
outbox row per active connection (the transactional outbox), together with the shard's high-water
mark: a replayed chunk is skipped, never applied twice. Outbox rows are handed to forwarders in
bounded windows and deleted when the forwarder acknowledges them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import ray
import ray.exceptions

from cdp_actors import handles
from cdp_actors.audiences.standard import Member, standard_members
from cdp_actors.config import Audience, WorkspaceConfig
from cdp_actors.constants import BACKFILL_USERS_PER_STEP, DERIVED_TICK_S, SWEEP_USERS_PER_STEP
from cdp_actors.identity.strategy import AliasJob
from cdp_actors.partition import partition_of
from cdp_actors.profiles.derived import DERIVED_DBS, DerivedState
from cdp_actors.profiles.erasure import subject_keys
from cdp_actors.profiles.handoff import LANE_BYTES, HandOff, lane_window, outbox_key, outbox_lane
from cdp_actors.profiles.model import Profile, SubjectRecord, decode_profile, encode_profile
from cdp_actors.profiles.outbound import build_outbound
from cdp_actors.profiles.privacy import is_opted_out, opted_in
from cdp_actors.profiles.update import apply_batch
from cdp_actors.reports import DAY_MS, HOUR_MS, OPTED_OUT, formatted, inbound_counts
from cdp_actors.schema.events import decode_valid_batch, encode, stamped_events
from cdp_actors.schema.records import AliasExport, DayActivity, OutboxRow, ShardRecord, Window
from cdp_actors.storage.lmdb_env import (
    Store,
    add_counts,
    from_u64,
    iter_from,
    iter_prefix,
    mpid_key,
    read_counts,
    u64,
)
from cdp_actors.telemetry import count, span

log = logging.getLogger(__name__)
SHARD_DBS = ("profiles", "history", "outbox", "meta", "activity", "counters", *DERIVED_DBS)
ACTIVITY_RETENTION_DAYS = 400  # the identity report's reach
LAST_SEQ = b"last_seq"
ALIAS_DONE = b"alias-done:"
ERASURE_DROPS = b"erasure-drops"
"""The outbox keys of the membership drops erasures wrote and partners have not acknowledged yet: their rows carry
the erased profiles' identities, so the store is compacted again once the last one is gone."""
_keys_codec = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(list[bytes]))
_row_encoder = msgspec.msgpack.Encoder()


def wall_ms() -> int:
    return int(time.time() * 1000)


class SequenceGap(RuntimeError):
    """The shard has not applied a chunk the dispatcher believes it sent: resend from the cursor."""


class ConfigVersionGap(SequenceGap):
    """The dispatcher stamped a chunk with a configuration version this shard does not hold (it restarted and
    started from the control actor's current one) and did not send it: resend from the cursor, with it."""


CONTROL_TIMEOUT_S = 30.0
"""How long a (re)starting shard waits for the control actor's current version before it starts from the
configuration it was created with (the dispatcher's first chunk then brings its own version)."""


def history_key(mpid: int, seq: int) -> bytes:
    return mpid_key(mpid) + u64(seq)


def read_subject(store: Store, mpid: int) -> SubjectRecord | None:
    """The user's profile and its whole event history, in one read transaction; None when there is no profile."""
    with store.read() as txn:
        data = txn.get(mpid_key(mpid), db=store.db("profiles"))
        if not data:
            return None
        history = iter_prefix(txn, store.db("history"), mpid_key(mpid))
        events = [event for _, value in history for event in msgspec.json.decode(value[2:])]
    return SubjectRecord(decode_profile(data), events)


def withheld_counts(batch: Any, record: ShardRecord, connections: list[Any], counts: Counter[tuple]) -> None:
    """An opted-out user's batch: the events each connected output did not get, under the forwarding report's
    `opted_out` kind (per output, as `forwarded`)."""
    hour, environment = record.received_ms // HOUR_MS, batch.environment or "production"
    events = len(batch.events) + len(record.identity_changes)  # as a row would have carried them
    for connection in connections:
        counts[(hour, OPTED_OUT, environment, record.input_id, str(connection.output))] += events


def activity_key(day: int, input_id: int, mpid: int) -> bytes:
    return day.to_bytes(4, "big") + input_id.to_bytes(4, "big") + mpid_key(mpid)


class Activity(msgspec.Struct, array_like=True):
    """A profile's state on one day, as seen through one input (the identity report's raw data)."""

    known: bool
    identity_types: list[str]


_activity_codec = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Activity))


def _after(lane: bytes) -> bytes:
    """The smallest key past every key that starts with `lane`."""
    return (int.from_bytes(lane, "big") + 1).to_bytes(len(lane), "big")  # lanes never reach all 0xff


def event_time(event: dict[str, Any]) -> int:
    return (event.get("data") or {}).get("timestamp_unixtime_ms", -1)


class ShardStats(msgspec.Struct):
    shard: int
    last_seq: int
    """The last log seq this shard applied."""
    applied_since_start: int
    profiles: int
    outbox: int
    """Outbox rows not acknowledged by a forwarder yet."""
    handed_to_forwarders: int
    """Outbox rows a forwarder holds (handed over, not acknowledged)."""


class ShardCore:
    """The shard's state and storage, without Ray."""

    def __init__(self, path: str | Path, index: int, config: WorkspaceConfig, version: int = 0) -> None:
        self.index = index
        self.config = config
        self.version = version
        """The configuration version whose connections turn batches into outbox rows."""
        self.forwarders = config.runtime.forwarders
        self.history_cap = config.runtime.history_per_user
        self.login_ids = config.identity.policy().login
        self.trimmed_day = 0
        self.store = Store(path, SHARD_DBS)
        with self.store.read() as txn:
            value = txn.get(LAST_SEQ, db=self.store.db("meta"))
        self.last_seq = from_u64(value) if value else 0
        self.applied_since_start = 0
        self.derived = DerivedState(self.store, index, self.forwarders, lambda: self.last_seq)
        with self.store.read() as txn:
            owed = txn.get(ERASURE_DROPS, db=self.store.db("meta"))
        self.erasure_drops: set[bytes] = set(_keys_codec[1].decode(owed)) if owed else set()
        self.derived.follow(version, config, wall_ms())

    def use(self, version: int, config: WorkspaceConfig) -> None:
        """Turn the next chunks into outbox rows under this version (taken between chunks, never inside one).
        The version is the dispatcher's: an older one than held is taken too, so that a chunk's rows follow the
        version its dispatcher resolved it under. What stays fixed until a restart (runtime, identity) is not read
        from it. Derived state follows only a newer version (`DerivedState.follow`)."""
        self.version, self.config = version, config
        self.derived.follow(version, config, wall_ms())

    def follow(self, version: int, config: WorkspaceConfig, now_ms: int) -> bool:
        """Take a newer configuration for derived state only (the tick's): outbox rows of connections keep
        following the chunks' versions."""
        return self.derived.follow(version, config, now_ms)

    def sweep(self, now_ms: int, limit: int) -> int:
        """Refresh up to `limit` users whose derived values changed by `now_ms` only because time passed."""
        return self.derived.sweep(now_ms, limit)

    def backfill(self, limit: int, now_ms: int) -> int:
        """One bounded step of the activation backfills and initial syncs; returns the users visited."""
        return self.derived.step(limit, now_ms)

    def backfill_status(self, now_ms: int) -> dict[int, dict[str, Any]]:
        return self.derived.backfill_status(now_ms)

    def audience_stats(self) -> dict[int, dict[str, Any]]:
        return self.derived.audience_stats()

    def outbox_lanes(self) -> list[bytes]:
        """The lanes that hold outbox rows now, one key lookup each: after a restart, the rows of an output that
        was removed meanwhile are still handed on (their forwarder drops them with an alert) and so leave."""
        lanes = []
        with self.store.read() as txn:
            cursor = txn.cursor(self.store.db("outbox"))
            found = cursor.first()
            while found:
                lane = bytes(cursor.key()[:LANE_BYTES])
                lanes.append(lane)
                found = cursor.set_range(_after(lane))
        return lanes

    def apply(self, records: list[ShardRecord], prev_seq: int | None) -> int:
        if prev_seq is not None and prev_seq > self.last_seq:
            raise SequenceGap(f"shard {self.index} applied up to {self.last_seq}, dispatcher sent {prev_seq}")
        fresh = [r for r in records if r.seq > self.last_seq]
        if not fresh:
            return 0
        with self.store.write() as txn:
            profiles: dict[int, Profile] = {}
            counts: Counter[tuple] = Counter()
            for record in fresh:
                profiles[record.mpid] = self._apply_one(txn, record, profiles, counts)
            add_counts(txn, self.store.db("counters"), formatted(counts))
            profiles_db = self.store.db("profiles")
            for mpid, profile in profiles.items():
                txn.put(mpid_key(mpid), encode_profile(profile), db=profiles_db)
            txn.put(LAST_SEQ, u64(fresh[-1].seq), db=self.store.db("meta"))
        self.last_seq = fresh[-1].seq
        self.applied_since_start += len(fresh)
        return len(fresh)

    def _load(self, txn: Any, mpid: int) -> Profile:
        data = txn.get(mpid_key(mpid), db=self.store.db("profiles"))
        return decode_profile(data) if data else Profile(mpid=mpid)

    def _apply_one(
        self, txn: Any, record: ShardRecord, profiles: dict[int, Profile], counts: Counter[tuple]
    ) -> Profile:
        batch = decode_valid_batch(record.raw)
        inbound_counts(batch, record.input_id, record.received_ms, counts)
        before = profiles.get(record.mpid) or self._load(txn, record.mpid)
        gpc = self.config.privacy.gpc
        profile, notifications = apply_batch(before, batch, record.input_id, record.received_ms, gpc)
        profile = self._append_history(txn, profile, record, stamped_events(batch, record.received_ms))
        profile = self.derived.on_batch(txn, before, profile, batch, record.seq, record.input_id, record.received_ms)
        self._note_activity(txn, profile, record)
        connections = self.config.active_connections(record.input_id)
        if connections and is_opted_out(profile):  # no outbox row at all: no output can be reached past this
            withheld_counts(batch, record, connections, counts)
            connections = []
        if connections:
            created = {n for n, v in profile.user_identities.items() if before.user_identities.get(n) != v}
            payload = encode(build_outbound(batch, profile, record, notifications, created))
            forwarder = partition_of(record.mpid, self.forwarders)
            for connection in connections:
                row = OutboxRow(
                    key=outbox_key(forwarder, connection.output, record.seq, connection.id),
                    shard=self.index,
                    connection_id=connection.id,
                    input_id=record.input_id,
                    output_id=connection.output,
                    environment=batch.environment or "production",
                    mpid=record.mpid,
                    event_count=len(batch.events) + len(record.identity_changes),  # as sent: with identity changes
                    payload=payload,
                    received_ms=record.received_ms,
                )
                txn.put(row.key, _row_encoder.encode(row), db=self.store.db("outbox"))
        return profile

    def _note_activity(self, txn: Any, profile: Profile, record: ShardRecord) -> None:
        types = sorted({*profile.user_identities, *profile.device_identities})
        activity = Activity(any(t in self.login_ids for t in profile.user_identities), types)
        day = record.received_ms // DAY_MS
        txn.put(
            activity_key(day, record.input_id, record.mpid),
            _activity_codec[0].encode(activity),
            db=self.store.db("activity"),
        )
        if day > self.trimmed_day:  # once a day: activity older than the retention goes
            cursor = txn.cursor(self.store.db("activity"))
            while cursor.first() and int.from_bytes(cursor.key()[:4], "big") <= day - ACTIVITY_RETENTION_DAYS:
                cursor.delete()
            self.trimmed_day = day

    def counts(self, first: str, last: str) -> list[tuple[str, int]]:
        with self.store.read() as txn:
            return read_counts(txn, self.store.db("counters"), first, last)

    def activity(self, first_day: int, last_day: int) -> dict[tuple[int, int], DayActivity]:
        """Per (day, input): active and known profiles, and how many had each identity type."""
        report: dict[tuple[int, int], DayActivity] = {}
        with self.store.read() as txn:
            for key, value in iter_from(txn, self.store.db("activity"), first_day.to_bytes(4, "big"), 10**12):
                day = int.from_bytes(key[:4], "big")
                if day > last_day:
                    break
                activity = _activity_codec[1].decode(value)
                entry = report.setdefault((day, int.from_bytes(key[4:8], "big")), DayActivity())
                entry.active += 1
                entry.known += activity.known
                for identity_type in activity.identity_types:
                    entry.coverage[identity_type] = entry.coverage.get(identity_type, 0) + 1
        return report

    def _append_history(self, txn: Any, profile: Profile, record: ShardRecord, events: list) -> Profile:
        """One record per batch (its event count, then its events); the oldest batches go past `history_cap`."""
        if not self.history_cap or not events:
            return profile
        history = self.store.db("history")
        txn.put(history_key(record.mpid, record.seq), len(events).to_bytes(2, "big") + encode(events), db=history)
        size = profile.history + len(events)
        if size > self.history_cap:
            prefix = mpid_key(record.mpid)
            cursor = txn.cursor(history)
            cursor.set_range(prefix)
            while size > self.history_cap and cursor.key().startswith(prefix):
                size -= int.from_bytes(cursor.value()[:2], "big")
                cursor.delete()
        return msgspec.structs.replace(profile, history=size)

    def alias_export(self, job: AliasJob) -> AliasExport:
        """The source's events stamped inside the job's window, and its first-seen time."""
        note = f"aliased into {job.destination} (alias job {job.job})"
        with self.store.write() as txn:
            profile = self._load(txn, job.source)
            if note not in profile.status_messages:
                profile = msgspec.structs.replace(profile, status_messages=[*profile.status_messages, note])
                txn.put(mpid_key(job.source), encode_profile(profile), db=self.store.db("profiles"))
            history = iter_prefix(txn, self.store.db("history"), mpid_key(job.source))
            stored = [e for _, value in history for e in msgspec.json.decode(value[2:])]
        events = [e for e in stored if job.start_ms <= event_time(e) < job.end_ms]
        return AliasExport(events, profile.first_seen_ms)

    def alias_import(self, job: AliasJob, exported: AliasExport) -> bool:
        """Add an alias job's events and first-seen time to the destination, once per job."""
        events, first_seen_ms = exported.events, exported.first_seen_ms
        done = ALIAS_DONE + u64(job.job)
        with self.store.write() as txn:
            if txn.get(done, db=self.store.db("meta")):
                return False
            profile = self._load(txn, job.destination)
            if events:  # under sequence 0, so the copied past sorts before the destination's own batches
                key = history_key(job.destination, 0) + u64(job.job)
                txn.put(key, len(events).to_bytes(2, "big") + encode(events), db=self.store.db("history"))
            profile = msgspec.structs.replace(
                profile,
                first_seen_ms=first_seen_ms or profile.first_seen_ms,
                history=profile.history + len(events),
                status_messages=[*profile.status_messages, f"merged from {job.source} (alias job {job.job})"],
            )
            txn.put(mpid_key(job.destination), encode_profile(profile), db=self.store.db("profiles"))
            txn.put(done, b"1", db=self.store.db("meta"))
        return True

    def erase(self, mpids: list[int], now_ms: int) -> int:
        """Remove every record of these profiles in one transaction (a profile in audiences then gets its `delete`
        membership rows to their connected outputs: those stay, to be delivered), then compact the
        environment so that no freed page keeps their bytes. Idempotent: an MPID with no records is skipped,
        and the compaction runs again. Returns the records removed."""
        removed = 0
        dbs = {name: self.store.db(name) for name in SHARD_DBS}
        with self.store.write() as txn:
            for mpid in mpids:
                data = txn.get(mpid_key(mpid), db=dbs["profiles"])
                keys = subject_keys(txn, dbs, mpid, self.derived.next_change_of(txn, mpid))
                for name, key in keys.items():
                    txn.delete(key, db=dbs[name])
                removed += len(keys)
                if data:  # after its rows went: these stay
                    self.derived.drop_memberships(txn, opted_in(decode_profile(data)), now_ms)  # partners drop it
                    self.erasure_drops.update(subject_keys(txn, dbs, mpid, None).outbox)
            self._note_erasure_drops(txn)
        self.store.compact()
        return removed

    def _note_erasure_drops(self, txn: Any) -> None:
        if self.erasure_drops:
            txn.put(ERASURE_DROPS, _keys_codec[0].encode(sorted(self.erasure_drops)), db=self.store.db("meta"))
        else:
            txn.delete(ERASURE_DROPS, db=self.store.db("meta"))

    def outbox_window(self, lane: bytes, after: bytes | None, limit: int) -> Window:
        """Up to `limit` rows of one lane, in key (acceptance) order, after the key `after`."""
        start = after + b"\x00" if after else lane
        window = Window()
        with self.store.read() as txn:
            for key, value in iter_from(txn, self.store.db("outbox"), start, limit):
                if key[:LANE_BYTES] != lane:
                    break
                window.add(key, value)
        return window

    def delete_outbox(self, keys: list[bytes]) -> None:
        """Rows acknowledged (delivered, or dropped with an alert). When they were the last membership drops of
        erased profiles, the store is compacted again: those rows held the profiles' identities."""
        delivered = self.erasure_drops.intersection(keys)
        with self.store.write() as txn:
            for key in keys:
                txn.delete(key, db=self.store.db("outbox"))
            if delivered:
                self.erasure_drops -= delivered
                self._note_erasure_drops(txn)
        if delivered and not self.erasure_drops:
            self.store.compact()

    def profile(self, mpid: int, recent: int = 20) -> dict[str, Any] | None:
        with self.store.read() as txn:
            data = txn.get(mpid_key(mpid), db=self.store.db("profiles"))
            if not data:
                return None
            history = iter_prefix(txn, self.store.db("history"), mpid_key(mpid))
            events = [event for _, value in history for event in msgspec.json.decode(value[2:])]
        view = msgspec.to_builtins(decode_profile(data))
        view["recent_events"] = events[-recent:]
        return view

    def stats(self, handed_to_forwarders: int) -> ShardStats:
        with self.store.read() as txn:
            return ShardStats(
                shard=self.index,
                last_seq=self.last_seq,
                applied_since_start=self.applied_since_start,
                profiles=txn.stat(self.store.db("profiles"))["entries"],
                outbox=txn.stat(self.store.db("outbox"))["entries"],
                handed_to_forwarders=handed_to_forwarders,
            )


def output_lanes(config: WorkspaceConfig) -> list[bytes]:
    """Every (forwarder, output) lane of a configuration. Lanes are only ever added while a shard runs: a removed
    output's rows still leave through theirs (see `Delivery`: dropped with a Fatal alert)."""
    return [outbox_lane(f, o.id) for f in range(config.runtime.forwarders) for o in config.outputs]


def _current_or(config: WorkspaceConfig) -> tuple[int, WorkspaceConfig]:
    """The control actor's current version, or `config` as version 0 if it does not answer in time."""
    try:
        return ray.get(handles.control().current.remote(), timeout=CONTROL_TIMEOUT_S)
    except Exception:
        log.warning("no current configuration version from the control actor; starting from the first", exc_info=True)
        return 0, config


@ray.remote(max_restarts=-1, max_task_retries=0)
class ProfileShard:
    """Sync actor: calls from the dispatcher run one at a time, in the order they were sent."""

    def __init__(self, data_dir: str, index: int, config: WorkspaceConfig) -> None:
        from cdp_actors.telemetry import setup_process

        setup_process(config, data_dir, f"shard-{index}")
        version, config = _current_or(config)  # a restarted shard starts from the current version, not its first
        self.core = ShardCore(Path(data_dir) / f"shard-{index}", index, config, version)
        self.handoff = HandOff([*output_lanes(config), *self.core.outbox_lanes()], lane_window(config))
        self.handing: dict[int, Any] = {}  # forwarder -> the call with its latest windows
        self.forwarder_handles: dict[int, Any] = {}
        self._pump_all()
        self._ticker = threading.Thread(target=self._tick_forever, name=f"shard-{index}-tick", daemon=True)
        self._ticker.start()

    def _tick_forever(self) -> None:
        """Calls this actor's own `tick` (so it runs between chunks, in the actor's call order: no locks), at once
        again while jobs or due users remain, else every DERIVED_TICK_S."""
        me = ray.get_runtime_context().current_actor
        while True:
            try:
                more = ray.get(me.tick.remote())
            except Exception:  # a failed tick is retried next time; the actor itself restarts on a crash
                log.warning("shard tick failed", exc_info=True)
                more = False
            if not more:
                time.sleep(DERIVED_TICK_S)

    def tick(self, now_ms: int | None = None) -> bool:
        """Take the control actor's configuration if newer (for derived state), then a bounded step of the
        backfills / initial syncs and a bounded sweep at `now_ms` (the wall clock when None). True: more to do."""
        now_ms = wall_ms() if now_ms is None else now_ms
        changed = ray.get(handles.control().changed_since.remote(self.core.derived.version))
        if changed is not None:
            version, config = changed
            self.core.follow(version, config, now_ms)
            self.handoff.add_lanes(output_lanes(config))
        visited = self.core.backfill(BACKFILL_USERS_PER_STEP, now_ms)
        swept = self.core.sweep(now_ms, SWEEP_USERS_PER_STEP)
        if visited or swept:
            self._pump_all()
        return visited == BACKFILL_USERS_PER_STEP or swept == SWEEP_USERS_PER_STEP

    def backfill_status(self) -> dict[int, dict[str, Any]]:
        """Per active CA id: {"generation", "done", "total", "finished", "eta_s"} of its backfill on this shard."""
        return self.core.backfill_status(wall_ms())

    def audience_stats(self) -> dict[int, dict[str, Any]]:
        """Per real-time audience id: {"size", "adds": {day: n}, "drops": {day: n}} on this shard."""
        return self.core.audience_stats()

    def apply(
        self, records: list[ShardRecord], prev_seq: int | None, version: int | None = None,
        config: WorkspaceConfig | None = None,
    ) -> int:  # fmt: skip
        """Apply a chunk under configuration `version`; `config` comes with it when the dispatcher does not know
        that this shard holds that version (the version's first chunk here, or after a restart of either)."""
        if config is not None and version is not None:
            self.core.use(version, config)
            # a new output's rows get their lanes before they exist
            self.handoff.add_lanes(output_lanes(config), lane_window(config))
        elif version is not None and version != self.core.version:
            raise ConfigVersionGap(f"shard {self.core.index} holds version {self.core.version}, not {version}")
        with span("profile.apply", shard=self.core.index, batches=len(records)):
            applied = self.core.apply(records, prev_seq)
        count("cdp_batches_applied", applied, shard=str(self.core.index))
        self._pump_all()
        return applied

    def config_version(self) -> int:
        return self.core.version

    def erase(self, mpids: list[int]) -> int:
        """Erase these profiles (`ShardCore.erase`): between two chunks, as every call of this actor runs, so a
        chunk is applied wholly before or wholly after. Returns the records removed."""
        with span("profile.erase", shard=self.core.index, profiles=len(mpids)):
            removed = self.core.erase(mpids, wall_ms())
        self._pump_all()  # the membership drops
        return removed

    def ack(self, keys: list[bytes]) -> None:
        self.core.delete_outbox(keys)
        self._pump(self.handoff.acknowledged(keys))

    def resend(self, forwarder: int) -> list[bytes]:
        """The forwarder (re)started: everything it held is undelivered again. Returns the first window of each
        of its lanes (encoded), so it queues them before any hand-off that reached it earlier."""
        self.forwarder_handles.pop(forwarder, None)
        return [window.encoded() for window in self.handoff.resend(forwarder, self.core.outbox_window)]

    def _pump_all(self) -> None:
        self._pump(self.handoff.lanes)

    def _pump(self, lanes: Iterable[bytes]) -> None:
        """Hand each lane's next rows, up to its window, to the lane's forwarder: one call per forwarder."""
        windows = self.handoff.next_windows(lanes, self.core.outbox_window, self._reachable)
        for forwarder, handed in windows.items():
            previous = self.handing.get(forwarder)
            if previous is not None:  # an async actor may run a caller's calls out of order (a large argument is
                with contextlib.suppress(ray.exceptions.RayError):  # fetched first): one hand-off in flight each
                    ray.get(previous)
            encoded = [window.encoded() for window in handed]
            self.handing[forwarder] = self.forwarder_handles[forwarder].deliver.remote(self.core.index, encoded)

    def _reachable(self, forwarder: int) -> bool:
        return self._forwarder(forwarder) is not None

    def _forwarder(self, forwarder: int) -> Any:
        if forwarder not in self.forwarder_handles:
            try:
                self.forwarder_handles[forwarder] = handles.forwarder(forwarder)
            except ValueError:  # not started yet; it asks for a resend when it starts
                return None
        return self.forwarder_handles[forwarder]

    def profile(self, mpid: int) -> dict[str, Any] | None:
        return self.core.profile(mpid)

    def location(self) -> tuple[str, str]:
        """The Ray node this shard runs on and its LMDB environment's path there (for `cdp export`'s readers)."""
        return ray.get_runtime_context().get_node_id(), str(self.core.store.path)

    def subject(self, mpid: int) -> SubjectRecord | None:
        """The user's profile and event history, for a data subject request (`read_subject`)."""
        return read_subject(self.core.store, mpid)

    def alias_export(self, job: AliasJob) -> AliasExport:
        return self.core.alias_export(job)

    def activity(self, first_day: int, last_day: int) -> dict[tuple[int, int], DayActivity]:
        return self.core.activity(first_day, last_day)

    def counts(self, first: str, last: str) -> list[tuple[str, int]]:
        return self.core.counts(first, last)

    def alias_import(self, job: AliasJob, exported: AliasExport) -> bool:
        return self.core.alias_import(job, exported)

    def stats(self) -> ShardStats:
        return self.core.stats(self.handoff.holding())

    def standard_audience(self, audience: Audience, now_ms: int, identities: tuple[str, ...] = ()) -> list[Member]:
        """This shard's members of a standard audience, read in one read transaction (audiences/standard.py)."""
        return standard_members(self.core.store, audience, now_ms, identities)
