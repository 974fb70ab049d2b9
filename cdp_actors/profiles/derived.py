"""Derived state inside a profile shard: calculated attribute (CA) values and real-time audience membership.

Per user, one record in the `derived` db holds the encoded engine state of every derivation: `c<id>:<generation>`
for a CA, `a<id>:<leaf>` for an event leaf ("performed E at least N times within D days") of a real-time
audience. Applying a batch folds it into each state in the chunk's own transaction, sets the CA values on the
profile, re-evaluates the audiences in their evaluation order and writes the batch's membership changes to the
outbox (one row per connected output, carrying all of that output's changes), all in the same transaction as the
batch: a replayed chunk is skipped by the high-water mark, so nothing is counted twice.

Time alone changes values too ("within 7 days"): the `expiry` index (`u64(next_change_ms) + mpid_key`) names the
users whose value may change next, and `sweep` ages their states when that time comes.

A derivation the shard sees for the first time (a CA activated, a new or changed real-time audience) starts a
backfill job, recorded in meta: it visits the profiles in MPID order, folds each one's stored event history into
a fresh state and writes it with the job's cursor in one transaction, so a `kill -9` resumes where it stopped.
Until the job has passed a user, live batches leave that derivation alone for them (the history the job folds
holds those batches by then). What a backfill cannot see: events past `runtime.history_per_user` (the oldest
batches leave the history), and user attributes set before activation for `user_attribute` data points (the
history keeps events only); a seed sent before the job reaches a user is kept and the history folded onto it.

An audience that gains a connected output sends its current members there first: an initial-sync job, like a
backfill, writes an `add` row per member.

Everything here is Ray-free; `ShardCore` (shard.py) calls it inside its own transactions.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Set
from typing import Any, NamedTuple

import msgspec

from cdp_actors.audiences.criteria import Reads, evaluation_order, leaf_definition, reads
from cdp_actors.audiences.evaluate import Criteria, Facts, facts_of
from cdp_actors.calculated.engine import (
    Calculation,
    CalculationIndex,
    CAState,
    Observed,
    decode_state,
    encode_state,
)
from cdp_actors.config import Audience, WorkspaceConfig
from cdp_actors.partition import partition_of
from cdp_actors.profiles.handoff import MembershipChanges, membership_key
from cdp_actors.profiles.model import Profile, decode_profile, encode_profile
from cdp_actors.profiles.privacy import is_opted_out
from cdp_actors.reports import DAY_MS, day_text
from cdp_actors.schema.events import Batch, batch_time_ms
from cdp_actors.schema.records import OutboxRow
from cdp_actors.storage.lmdb_env import (
    Db,
    Store,
    Txn,
    add_counts,
    from_u64,
    iter_from,
    iter_prefix,
    mpid_from_key,
    mpid_key,
    read_counts,
    u64,
)

log = logging.getLogger(__name__)
DERIVED_DBS = ("derived", "expiry")
JOBS = b"derived-jobs"
KNOWN = b"derived-known"
CHANGE_NO = b"membership-change-no"
AUDIENCE_COUNTERS = "audience|"
"""Counter keys of audience adds and drops per day; they sort after the hourly report counters (digits first)."""
_encoder = msgspec.msgpack.Encoder()


# ---- what the configuration asks for ------------------------------------------------------------------------


def ca_key(ca_id: int, generation: int) -> str:
    return f"c{ca_id}:{generation}"


def audience_unit(audience: Audience) -> str:
    """`a<id>:<digest of the criteria>`: changed criteria are a new derivation, evaluated from scratch."""
    criteria = audience.criteria.model_dump_json(by_alias=True).encode()
    return f"a{audience.id}:{hashlib.sha256(criteria).hexdigest()[:12]}"


class CADerivation(NamedTuple):
    key: str
    ca_id: int
    generation: int
    name: str
    calculation: Calculation
    empty_value: str | None
    """Its value with no state (count: "0"; first occurrence: None): what a user without its state has."""


class AudienceDerivation(NamedTuple):
    unit: str
    audience: Audience
    criteria: Criteria
    leaves: list[tuple[str, Calculation]]
    """(derivation key `<unit>-<n>`, the count of the n-th event leaf) in `criteria.event_leaves` order."""
    reads: Reads


def ca_derivation(ca_id: int, generation: int, name: str, calculation: Calculation) -> CADerivation:
    key = ca_key(ca_id, generation)
    return CADerivation(key, ca_id, generation, name, calculation, calculation.value(None, 0))


class Readers:
    """Which real-time audiences (by position in the evaluation order) read each fact, so that a batch's changes
    name the audiences to evaluate again in a few look-ups, not a test of every audience."""

    def __init__(self, audiences: list[AudienceDerivation]) -> None:
        self.of_attribute: dict[str, list[int]] = {}
        self.of_calculated: dict[str, list[int]] = {}
        self.of_audience: dict[int, list[int]] = {}
        self.of_state: dict[str, int] = {}
        """An event leaf's derivation key -> its audience."""
        self.of_identities: list[int] = []
        self.of_consent: list[int] = []
        for position, derivation in enumerate(audiences):
            read = derivation.reads
            for name in read.attributes:
                self.of_attribute.setdefault(name, []).append(position)
            for name in read.calculated:
                self.of_calculated.setdefault(name, []).append(position)
            for audience_id in read.audiences:
                self.of_audience.setdefault(audience_id, []).append(position)
            for key, _ in derivation.leaves:
                self.of_state[key] = position
            if read.identities:
                self.of_identities.append(position)
            if read.consent:
                self.of_consent.append(position)


class Derivations:
    """The active CAs and the real-time audiences (in evaluation order) of one configuration, compiled once."""

    def __init__(self, config: WorkspaceConfig | None) -> None:
        """`config` None: none at all."""
        self.cas = [
            ca_derivation(ca.id, ca.generation, ca.name, Calculation(ca.active_definition))
            for ca in (config.active_calculated_attributes() if config else [])
            if ca.active_definition is not None
        ]
        self.audiences: list[AudienceDerivation] = []
        for audience in evaluation_order(config.real_time_audiences()) if config else []:
            criteria = Criteria(audience.criteria)
            unit = audience_unit(audience)
            leaves = [
                (f"{unit}-{n}", Calculation(leaf_definition(leaf))) for n, leaf in enumerate(criteria.event_leaves)
            ]
            self.audiences.append(AudienceDerivation(unit, audience, criteria, leaves, reads(audience.criteria)))
        self.calculations: dict[str, Calculation] = {ca.key: ca.calculation for ca in self.cas}
        self.unit_of: dict[str, str] = {ca.key: ca.key for ca in self.cas}
        for derivation in self.audiences:
            for key, calculation in derivation.leaves:
                self.calculations[key] = calculation
                self.unit_of[key] = derivation.unit
        self.index = CalculationIndex(self.calculations)
        self.units = [ca.key for ca in self.cas] + [a.unit for a in self.audiences]
        self.ca_by_name = {ca.name: ca for ca in self.cas}
        self.ca_by_unit = {ca.key: ca for ca in self.cas}
        self.audience_ids = {a.audience.id for a in self.audiences}
        self.connected = {(a.audience.id, output) for a in self.audiences for output in a.audience.connected_outputs}
        self.attributes_read: frozenset[str] = frozenset().union(*(a.reads.attributes for a in self.audiences))
        """The user attributes some audience's criteria test: a batch's change to any other one changes nothing
        derived (a CA's `user_attribute` data point reads the batch's attributes, not the profile's)."""
        self.readers = Readers(self.audiences)

    def __bool__(self) -> bool:
        return bool(self.cas or self.audiences)


# ---- what is stored -------------------------------------------------------------------------------------------


class UserDerived(msgspec.Struct, array_like=True):
    """One user's record in the `derived` db."""

    states: dict[str, bytes] = {}
    """Derivation key -> `encode_state`."""
    next_change_ms: int | None = None
    """Its key in the `expiry` index: the earliest time a state may change with no new data."""


class Job(msgspec.Struct, omit_defaults=True):
    """A backfill (of a CA or an audience: `unit`) or an initial sync (of an audience to one output)."""

    kind: str  # "backfill" | "sync"
    total: int
    """Profiles on the shard when it started."""
    started_ms: int
    cursor: int | None = None
    """The last MPID done; None: none yet."""
    done: int = 0
    finished: bool = False
    audience_id: int = 0
    output_id: int = 0


class Known(msgspec.Struct):
    """What the shard has seen of the configuration, so that a restart starts no job twice."""

    units: list[str] = []
    synced: list[tuple[int, int]] = []
    """(audience, output) pairs whose current members the output has been sent."""


_record_codec = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(UserDerived))
_jobs_decoder = msgspec.msgpack.Decoder(dict[str, Job])
_known_decoder = msgspec.msgpack.Decoder(Known)


# ---- the pure part: one user's values and memberships ----------------------------------------------------------


class MembershipDelta(NamedTuple):
    audience: Audience
    action: str  # "add" | "delete"


class Changed:
    """What one batch changed of a user's facts: the CAs and audiences that read none of it keep their value."""

    def __init__(self, before: Profile, after: Profile, states: Set[str], attributes_read: Set[str]) -> None:
        self.states = states
        """Derivation keys whose state the batch changed."""
        old, new = before.attributes, after.attributes
        self.attributes = {name for name in attributes_read if old.get(name) != new.get(name)}
        """Of `attributes_read` (the names some audience tests), those the batch changed."""
        self.identities = identity_types(before) != identity_types(after)
        self.consent = before.consent != after.consent

    def audiences_reached(self, readers: Readers) -> set[int]:
        """The audiences (positions in the evaluation order) that read a fact the batch changed, before CA values
        and memberships are known: `recompute` adds the readers of those as they change."""
        reached: set[int] = set()
        for name in self.attributes:
            reached.update(readers.of_attribute.get(name, ()))
        if self.identities:
            reached.update(readers.of_identities)
        if self.consent:
            reached.update(readers.of_consent)
        of_state = readers.of_state
        for key in self.states:
            position = of_state.get(key)
            if position is not None:
                reached.add(position)
        return reached


def identity_types(profile: Profile) -> set[str]:
    return {
        name
        for identities in (profile.user_identities, profile.device_identities)
        for name, item in identities.items()
        if item.value is not None
    }


def _always(_key: str) -> bool:
    return True


def leaf_count(calculation: Calculation, state: CAState | None, now_ms: int) -> int:
    """An event leaf's count (a `count` calculation over events, `criteria.leaf_definition`) as of `now_ms`, read
    from its buckets: its `value` would format the number as text for `holds` to parse back."""
    if state is None:
        return 0
    return int(sum([bucket.count for bucket in calculation.visible(state, now_ms)]))


def recompute(
    profile: Profile,
    state_of: Callable[[str], CAState | None],
    derivations: Derivations,
    live: Callable[[str], bool],
    now_ms: int,
    changed: Changed | None = None,
) -> tuple[Profile, list[MembershipDelta]]:
    """The profile with its CA values and audience memberships as of `now_ms`, and the membership changes.
    `changed` None: every value and audience is evaluated; else only the CAs whose state the batch changed (and
    those the profile lacks a value for that it could have: a renamed CA), and the audiences reading something
    that changed. A derivation that is not `live` for this user (its backfill has not reached them) keeps what
    it had."""
    every = changed is None
    calculated = {name: value for name, value in profile.calculated.items() if name in derivations.ca_by_name}
    values_changed: list[str] = []
    for ca in derivations.cas:
        key, name = ca.key, ca.name
        if (
            not every
            and key not in changed.states
            and (  # type: ignore[union-attr]
                name in calculated or (ca.empty_value is None and state_of(key) is None)
            )
        ):
            continue  # no new data, and no time passed (`on_batch` evaluates everything then): the same value
        if live is not _always and not live(key):
            continue  # not live: the previous generation's value until the backfill comes by
        value = ca.calculation.value(state_of(key), now_ms)
        if value != calculated.get(name):
            if value is None:
                del calculated[name]
            else:
                calculated[name] = value
            values_changed.append(name)
    profile = msgspec.structs.replace(profile, calculated=calculated)
    members = {a: entered for a, entered in profile.audiences.items() if a in derivations.audience_ids}
    audiences = derivations.audiences
    readers = derivations.readers
    if every:
        pending: set[int] = set(range(len(audiences)))
    else:
        pending = changed.audiences_reached(readers)  # type: ignore[union-attr]
        for name in values_changed:
            pending.update(readers.of_calculated.get(name, ()))
    changes = []
    user: Facts | None = None  # built once per user, when the first audience needs it
    for position, derivation in enumerate(audiences):
        if not pending:
            break
        if position not in pending:
            continue
        pending.discard(position)
        if live is not _always and not live(derivation.unit):
            continue
        audience_id = derivation.audience.id
        user = user or facts_of(profile, members.keys(), ())
        counts = [leaf_count(calculation, state_of(key), now_ms) for key, calculation in derivation.leaves]
        holds = derivation.criteria.holds(user.with_event_counts(counts))
        if holds == (audience_id in members):
            continue
        if holds:
            members[audience_id] = now_ms
        else:
            del members[audience_id]
        changes.append(MembershipDelta(derivation.audience, "add" if holds else "delete"))
        pending.update(readers.of_audience.get(audience_id, ()))  # later in the order: they read this one
    return msgspec.structs.replace(profile, audiences=members), changes


class UserStates:
    """One user's derivation states, each decoded when first asked for: a batch that concerns three of thirty
    derivations decodes three."""

    def __init__(self, record: UserDerived | None, derivations: Derivations) -> None:
        stored = record.states if record is not None else {}
        self.raw = {key: data for key, data in stored.items() if key in derivations.calculations}
        self.decoded: dict[str, CAState | None] = {}
        self.changed: set[str] = set()

    def get(self, key: str) -> CAState | None:
        if key not in self.decoded:
            data = self.raw.get(key)
            self.decoded[key] = decode_state(data) if data is not None else None
        return self.decoded[key]

    def set(self, key: str, state: CAState | None) -> None:
        if state is not self.get(key):
            self.decoded[key] = state
            self.changed.add(key)

    def encoded(self) -> dict[str, bytes]:
        kept = {key: data for key, data in self.raw.items() if key not in self.changed}
        for key in self.changed:
            state = self.decoded[key]
            if state is not None:
                kept[key] = encode_state(state)
        return kept


def batch_observed(batch: Batch, received_ms: int) -> Observed:
    return Observed(
        events=msgspec.to_builtins(batch.events),
        user_attributes=batch.user_attributes or {},
        batch_ms=batch_time_ms(batch, received_ms),
    )


def history_observed(events: list[dict[str, Any]]) -> Observed:
    """A stored history record (one batch's events) as the CA sees it. The batch's time is its latest event time,
    as `batch_time_ms` gives a live batch: the engine counts a later event at the batch's time, so the first
    event's time would move a batch's later events into an earlier day than the live fold did."""
    stamps = [(event.get("data") or {}).get("timestamp_unixtime_ms") for event in events]
    return Observed(events=events, user_attributes={}, batch_ms=max((t for t in stamps if t), default=0))


def identities_of(profile: Profile) -> dict[str, str]:
    """The canonical identity type -> value of a profile's user and device identities."""
    both = {**profile.device_identities, **profile.user_identities}
    return {name: str(item.value) for name, item in both.items() if item.value is not None}


# ---- the storage part -------------------------------------------------------------------------------------------


class DerivedState:
    """The shard's derived state: the derivations of the newest configuration seen, the jobs, and the reads and
    writes of the `derived`, `expiry`, `outbox`, `counters` and `meta` dbs, in transactions the caller owns or
    in its own."""

    def __init__(self, store: Store, shard: int, forwarders: int, last_seq: Callable[[], int]) -> None:
        self.store = store
        self.shard = shard
        self.forwarders = forwarders
        self.last_seq = last_seq
        self.version = -1
        self.derivations = Derivations(None)
        with store.read() as txn:
            jobs = txn.get(JOBS, db=self._db("meta"))
        self.jobs: dict[str, Job] = _jobs_decoder.decode(jobs) if jobs else {}

    def _db(self, name: str) -> Db:
        return self.store.db(name)

    # -- configuration --

    def follow(self, version: int, config: WorkspaceConfig, now_ms: int) -> bool:
        """Take `config` if it is newer than the one followed. Derived state follows the NEWEST version the shard
        has seen, whatever version a chunk is stamped with: versions only grow, and a CA activated in version 5
        must not be skipped for a chunk the dispatcher resolved under version 4 after the shard saw 5. New
        derivations start their backfill jobs, new connections their initial syncs."""
        if version <= self.version:
            return False
        derivations = Derivations(config)
        with self.store.write() as txn:
            data = txn.get(KNOWN, db=self._db("meta"))
            known = _known_decoder.decode(data) if data else Known()
            jobs = dict(self.jobs)
            profiles = txn.stat(self._db("profiles"))["entries"]
            seen_audiences = {unit.split(":")[0] for unit in known.units if unit.startswith("a")}
            for unit in derivations.units:
                if unit not in known.units:
                    jobs[unit] = Job("backfill", profiles, now_ms, finished=not profiles)
            synced = {tuple(pair) for pair in known.synced} & derivations.connected
            for audience_id, output_id in sorted(derivations.connected - synced):
                if f"a{audience_id}" not in seen_audiences or not profiles:  # a new audience has no members yet
                    synced.add((audience_id, output_id))
                else:
                    jobs.setdefault(
                        sync_unit(audience_id, output_id),
                        Job("sync", profiles, now_ms, audience_id=audience_id, output_id=output_id),
                    )
            wanted = set(derivations.units) | {sync_unit(a, o) for a, o in derivations.connected - synced}
            jobs = {unit: job for unit, job in jobs.items() if unit in wanted}
            known = Known(derivations.units, sorted(synced))  # type: ignore[arg-type]
            txn.put(KNOWN, _encoder.encode(known), db=self._db("meta"))
            txn.put(JOBS, _encoder.encode(jobs), db=self._db("meta"))
        self.version, self.derivations, self.jobs = version, derivations, jobs
        return True

    def live_for(self, mpid: int) -> Callable[[str], bool]:
        """`live` for one user; with no job running (nearly always), a constant."""
        if not self.pending():
            return _always
        return lambda key: self.live(key, mpid)

    def live(self, key: str, mpid: int) -> bool:
        """Whether live data updates derivation `key` (or unit) for this user: its backfill has passed them."""
        job = self.jobs.get(self.derivations.unit_of.get(key, key))
        return job is None or job.finished or (job.cursor is not None and mpid <= job.cursor)

    # -- one user --

    def _read(self, txn: Txn, mpid: int) -> UserDerived | None:
        data = txn.get(mpid_key(mpid), db=self._db("derived"))
        return _record_codec[1].decode(data) if data else None

    def _states(self, record: UserDerived | None) -> dict[str, CAState]:
        if record is None:
            return {}
        return {k: decode_state(v) for k, v in record.states.items() if k in self.derivations.calculations}

    def _write(self, txn: Txn, mpid: int, old: UserDerived | None, states: dict[str, CAState]) -> None:
        calculations = self.derivations.calculations
        changes = [calculations[k].next_change_ms(s) for k, s in states.items()]
        next_change = min((max(0, t) for t in changes if t is not None), default=None)
        self._put(txn, mpid, old, {k: encode_state(s) for k, s in states.items()}, next_change)

    def _put(
        self, txn: Txn, mpid: int, old: UserDerived | None, states: dict[str, bytes], next_change: int | None
    ) -> None:
        """Store the user's record, even with no state: a record says their values and audiences were evaluated
        once in full, so later batches evaluate only what they change."""
        old_next = old.next_change_ms if old else None
        if old_next != next_change:
            if old_next is not None:
                txn.delete(u64(old_next) + mpid_key(mpid), db=self._db("expiry"))
            if next_change is not None:
                txn.put(u64(next_change) + mpid_key(mpid), b"", db=self._db("expiry"))
        txn.put(mpid_key(mpid), _record_codec[0].encode(UserDerived(states, next_change)), db=self._db("derived"))

    def on_batch(
        self, txn: Txn, before: Profile, profile: Profile, batch: Batch, seq: int, input_id: int, received_ms: int
    ) -> Profile:
        """Fold one applied batch (and its seeds) into the user's derived state and re-evaluate what it can change;
        "now" is the batch's receipt, so a replay computes the same. A user's first batch, or one that comes after
        a window moved (`next_change_ms` passed, before the sweep got there), re-evaluates everything."""
        derivations = self.derivations
        if not derivations:
            return profile
        mpid = profile.mpid
        old = self._read(txn, mpid)
        states = UserStates(old, derivations)
        live = self.live_for(mpid)
        if batch.events or batch.user_attributes:
            observed = batch_observed(batch, received_ms)
            for key in derivations.index.concerned(observed):
                if live(key):
                    states.set(key, derivations.calculations[key].observe(states.get(key), observed))
        for seed in batch.calculated_attribute_seeds or []:
            ca = derivations.ca_by_name.get(seed.attribute_name)
            if ca is None:
                log.info("seed for %r, which is not an active calculated attribute: ignored", seed.attribute_name)
                continue
            states.set(ca.key, ca.calculation.seeded(states.get(ca.key), seed))  # kept for a backfill to fold onto
        windows_moved = old is not None and old.next_change_ms is not None and old.next_change_ms <= received_ms
        if old is None or windows_moved:
            every = {key: state for key in derivations.calculations if (state := states.get(key)) is not None}
            profile, changes = recompute(profile, every.get, derivations, live, received_ms)
            self._write(txn, mpid, old, every)
        else:
            changed = Changed(before, profile, states.changed, derivations.attributes_read)
            profile, changes = recompute(profile, states.get, derivations, live, received_ms, changed)
            if states.changed:
                self._put(txn, mpid, old, states.encoded(), self._next_change(old, states))
        self._write_changes(txn, profile, changes, seq, input_id, received_ms)
        return profile

    def _next_change(self, old: UserDerived | None, states: UserStates) -> int | None:
        """The earliest next change of the changed states and the record's before: it may come early (a changed
        state's oldest bucket may have gone), and then the sweep finds nothing moved and sets it right."""
        times = [old.next_change_ms] if old is not None and old.next_change_ms is not None else []
        for key in states.changed:
            state = states.decoded[key]
            at = self.derivations.calculations[key].next_change_ms(state) if state is not None else None
            if at is not None:
                times.append(max(0, at))
        return min(times, default=None)

    def _write_changes(
        self, txn: Txn, profile: Profile, changes: list[MembershipDelta], seq: int, input_id: int, now_ms: int
    ) -> None:
        if not changes:
            return
        counts: Counter[str] = Counter()
        day = now_ms // DAY_MS
        by_output: dict[int, list[MembershipDelta]] = {}
        for change in changes:
            audience = change.audience
            counts[audience_counter(audience.id, day, "add" if change.action == "add" else "drop")] += 1
            for output in audience.connected_outputs:
                by_output.setdefault(output, []).append(change)
        self._write_rows(txn, profile, by_output, seq, input_id, now_ms)
        add_counts(txn, self._db("counters"), counts)

    def _write_rows(
        self,
        txn: Txn,
        profile: Profile,
        by_output: dict[int, list[MembershipDelta]],
        seq: int,
        input_id: int,
        now_ms: int,
    ) -> None:
        """One outbox row per output, carrying all of `by_output[output]` (`handoff.MembershipChanges`); its
        changes take the next change numbers, the first in the row's key. None for an opted-out user."""
        if not by_output or is_opted_out(profile):  # an opted-out user's membership changes are not forwarded
            return
        identities = identities_of(profile)
        forwarder = partition_of(profile.mpid, self.forwarders)
        stored = txn.get(CHANGE_NO, db=self._db("meta"))
        change_no = from_u64(stored) if stored else 0
        for output, deltas in by_output.items():
            first = deltas[0].audience
            made = [(delta.audience.id, delta.audience.name, delta.action) for delta in deltas]
            row = OutboxRow(
                key=membership_key(forwarder, output, seq, 0, change_no + 1),
                shard=self.shard,
                connection_id=0,
                input_id=input_id,
                output_id=output,
                environment="production",
                mpid=profile.mpid,
                event_count=len(made),
                payload=_encoder.encode(MembershipChanges(profile.mpid, identities, now_ms, made)),
                received_ms=now_ms,
                audience_id=first.id,
            )
            txn.put(row.key, _encoder.encode(row), db=self._db("outbox"))
            change_no += len(made)
        txn.put(CHANGE_NO, u64(change_no), db=self._db("meta"))

    def next_change_of(self, txn: Txn, mpid: int) -> int | None:
        """The user's key time in the `expiry` index (None: not there)."""
        record = self._read(txn, mpid)
        return record.next_change_ms if record else None

    def drop_memberships(self, txn: Txn, profile: Profile, now_ms: int) -> None:
        """A profile is erased: a `delete` membership row to the connected outputs of each real-time audience it
        is in, so partners drop it as when it leaves one (and the day's drop counters)."""
        by_id = {derivation.audience.id: derivation.audience for derivation in self.derivations.audiences}
        drops = [MembershipDelta(by_id[a], "delete") for a in sorted(profile.audiences) if a in by_id]
        self._write_changes(txn, profile, drops, self.last_seq(), 0, now_ms)

    def _save_profile(self, txn: Txn, before: Profile, after: Profile) -> None:
        if after != before:
            txn.put(mpid_key(after.mpid), encode_profile(after), db=self._db("profiles"))

    # -- time passing --

    def sweep(self, now_ms: int, limit: int) -> int:
        """Age the states of up to `limit` users whose values may have changed by `now_ms`; returns how many."""
        if not self.derivations:
            return 0
        with self.store.write() as txn:
            due = []
            for key, _ in iter_from(txn, self._db("expiry"), b"", limit):
                if from_u64(key[:8]) > now_ms:
                    break
                due.append(mpid_from_key(key[8:]))
            for mpid in due:
                old = self._read(txn, mpid)
                states = {}
                for key, state in self._states(old).items():
                    aged = self.derivations.calculations[key].aged(state, now_ms)
                    if aged is not None:
                        states[key] = aged
                self._write(txn, mpid, old, states)
                self._refresh(txn, mpid, states, now_ms, lambda key, mpid=mpid: self.live(key, mpid))
        return len(due)

    def _refresh(
        self, txn: Txn, mpid: int, states: dict[str, CAState], now_ms: int, live: Callable[[str], bool]
    ) -> None:
        data = txn.get(mpid_key(mpid), db=self._db("profiles"))
        if not data:
            return
        before = decode_profile(data)
        after, changes = recompute(before, states.get, self.derivations, live, now_ms)
        self._save_profile(txn, before, after)
        self._write_changes(txn, after, changes, self.last_seq(), 0, now_ms)

    # -- jobs --

    def pending(self) -> bool:
        return any(not job.finished for job in self.jobs.values())

    def step(self, limit: int, now_ms: int) -> int:
        """One bounded step of the first unfinished job (backfills before syncs), with every backfill at the same
        cursor (jobs started together run together). Returns the users visited."""
        backfills = [(u, j) for u, j in self.jobs.items() if j.kind == "backfill" and not j.finished]
        if backfills:
            cursor = backfills[0][1].cursor
            return self._backfill([u for u, j in backfills if j.cursor == cursor], cursor, limit, now_ms)
        syncs = [(u, j) for u, j in self.jobs.items() if j.kind == "sync" and not j.finished]
        if syncs:
            return self._sync(syncs[0][0], limit, now_ms)
        return 0

    def _profiles_after(self, txn: Txn, cursor: int | None, limit: int) -> list[Profile]:
        start = mpid_key(cursor + 1) if cursor is not None else b""
        return [decode_profile(value) for _, value in iter_from(txn, self._db("profiles"), start, limit)]

    def _history(self, txn: Txn, mpid: int) -> Iterator[Observed]:
        for _, value in iter_prefix(txn, self._db("history"), mpid_key(mpid)):
            yield history_observed(msgspec.json.decode(value[2:]))

    def _backfill(self, units: list[str], cursor: int | None, limit: int, now_ms: int) -> int:
        keys = [k for k, unit in self.derivations.unit_of.items() if unit in units]
        with self.store.write() as txn:
            profiles = self._profiles_after(txn, cursor, limit)
            for profile in profiles:
                old = self._read(txn, profile.mpid)
                states = self._states(old)
                history = list(self._history(txn, profile.mpid))
                for key in keys:
                    state = states.get(key)  # a seed at most: live data has left it alone
                    for observed in history:
                        state = self.derivations.calculations[key].observe(state, observed)
                    if state is not None:
                        states[key] = state
                self._write(txn, profile.mpid, old, states)
                mpid = profile.mpid
                live = lambda key, mpid=mpid: self.derivations.unit_of.get(key, key) in units or self.live(key, mpid)  # noqa: E731
                self._refresh(txn, mpid, states, now_ms, live)
            jobs = self._advanced(units, profiles, limit)
            txn.put(JOBS, _encoder.encode(jobs), db=self._db("meta"))
        self.jobs = jobs
        return len(profiles)

    def _advanced(self, units: list[str], profiles: list[Profile], limit: int) -> dict[str, Job]:
        jobs = dict(self.jobs)
        for unit in units:
            job = jobs[unit]
            jobs[unit] = msgspec.structs.replace(
                job,
                cursor=profiles[-1].mpid if profiles else job.cursor,
                done=job.done + len(profiles),
                finished=len(profiles) < limit,
            )
        return jobs

    def _sync(self, unit: str, limit: int, now_ms: int) -> int:
        job = self.jobs[unit]
        derivation = next(a for a in self.derivations.audiences if a.audience.id == job.audience_id)
        with self.store.write() as txn:
            profiles = self._profiles_after(txn, job.cursor, limit)
            for profile in profiles:
                if job.audience_id in profile.audiences:
                    add = MembershipDelta(derivation.audience, "add")
                    self._write_rows(txn, profile, {job.output_id: [add]}, self.last_seq(), 0, now_ms)
            jobs = self._advanced([unit], profiles, limit)
            if jobs[unit].finished:
                data = txn.get(KNOWN, db=self._db("meta"))
                known = _known_decoder.decode(data) if data else Known()
                synced = sorted({*known.synced, (job.audience_id, job.output_id)})
                txn.put(KNOWN, _encoder.encode(Known(known.units, synced)), db=self._db("meta"))
            txn.put(JOBS, _encoder.encode(jobs), db=self._db("meta"))
        self.jobs = jobs
        return len(profiles)

    # -- reports --

    def backfill_status(self, now_ms: int) -> dict[int, dict[str, Any]]:
        """Per active CA id: its backfill's progress on this shard."""
        status = {}
        for ca in self.derivations.cas:
            job = self.jobs.get(ca.key) or Job("backfill", 0, now_ms, finished=True)
            status[ca.ca_id] = {
                "generation": ca.generation,
                "done": job.done,
                "total": max(job.total, job.done),
                "finished": job.finished,
                "eta_s": eta_s(job, now_ms),
            }
        return status

    def audience_stats(self) -> dict[int, dict[str, Any]]:
        """Per audience: its members on this shard, and adds and drops per day (YYYY-MM-DD)."""
        stats: dict[int, dict[str, Any]] = {}
        with self.store.read() as txn:
            counters = read_counts(txn, self._db("counters"), AUDIENCE_COUNTERS, AUDIENCE_COUNTERS[:-1] + "}")
        for key, n in counters:
            _, audience_id, day, kind = key.split("|")
            entry = stats.setdefault(int(audience_id), {"size": 0, "adds": {}, "drops": {}})
            entry[kind + "s"][day_text(int(day))] = n
            entry["size"] += n if kind == "add" else -n
        return stats


def sync_unit(audience_id: int, output_id: int) -> str:
    return f"sync:{audience_id}:{output_id}"


def audience_counter(audience_id: int, day: int, kind: str) -> str:
    return f"{AUDIENCE_COUNTERS}{audience_id:010d}|{day:06d}|{kind}"


def eta_s(job: Job, now_ms: int) -> float | None:
    """Seconds left at the rate so far; None before the first step."""
    if job.finished:
        return 0.0
    if not job.done:
        return None
    elapsed_s = max(now_ms - job.started_ms, 0) / 1000
    return round(max(job.total - job.done, 0) * elapsed_s / job.done, 1)
