"""IDSync strategies (Profile Conversion, Profile Link, Profile Isolation, Best Match) as plain logic.

Every operation reads and writes an `IdentityState`: identity (type, value) → the MPIDs holding it, in
claim order, and MPID → `IdentityRecord`. The IdentityIndex actor runs each call inside one LMDB write
transaction, so an operation is atomic; `MemoryState` is the same state in dicts, for tests.

Rules (IDSync guide, https://docs.mparticle.com/guides/idsync/components/):
- lookups run in priority order; the first profile that the request may see wins;
- a profile holding a login ID ("known") is visible only to a request carrying one of its login IDs,
  and one holding an immutable ID only to a request carrying it;
- a request whose unique ID differs from the profile's is about someone else;
- a unique ID lives on one profile: claiming it elsewhere removes it, and a profile left with no unique
  ID is orphaned, its identities unindexed so it is never returned again.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeGuard

import msgspec

from cdp_actors.errors import BadRequest, ImmutableIdentity, NotFound
from cdp_actors.schema.identity_types import ALL_TYPES, DEFAULT_PRIORITY
from cdp_actors.schema.records import IdentityChange

CONVERSION, LINK, ISOLATION, BEST_MATCH = "profile_conversion", "profile_link", "profile_isolation", "best_match"
DEFAULT_KEYS = {
    CONVERSION: ("customer_id",),
    LINK: ("customer_id", "email"),
    ISOLATION: ("customer_id", "email"),
    BEST_MATCH: (),
}


class IdentityRecord(msgspec.Struct):
    identities: dict[str, list[str]] = {}
    created_ms: int = 0
    orphaned: bool = False
    alias_source: int | None = None
    """Profile Link: the anonymous profile a newly known profile came from, for a later alias."""
    aliased_windows: list[tuple[int, int]] = []
    """Time windows this profile was the source of an alias for."""
    alias_destination: bool = False


class Outcome(msgspec.Struct):
    mpid: int
    created: bool = False
    matched: dict[str, str] = {}
    changes: list[IdentityChange] = []
    logged_in: bool = False


class IdentityState(Protocol):
    def holders(self, identity_type: str, value: str) -> list[int]: ...
    def set_holders(self, identity_type: str, value: str, mpids: list[int]) -> None: ...
    def record(self, mpid: int) -> IdentityRecord | None: ...
    def put(self, mpid: int, record: IdentityRecord) -> None: ...


class MemoryState:
    """The identity state in dicts: the reference model for tests."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, str], list[int]] = {}
        self.records: dict[int, IdentityRecord] = {}

    def holders(self, identity_type: str, value: str) -> list[int]:
        return list(self.index.get((identity_type, value), ()))

    def set_holders(self, identity_type: str, value: str, mpids: list[int]) -> None:
        if mpids:
            self.index[(identity_type, value)] = list(mpids)
        else:
            self.index.pop((identity_type, value), None)

    def record(self, mpid: int) -> IdentityRecord | None:
        found = self.records.get(mpid)
        return (
            msgspec.structs.replace(found, identities={t: list(v) for t, v in found.identities.items()})
            if found
            else None
        )

    def put(self, mpid: int, record: IdentityRecord) -> None:
        self.records[mpid] = record


@dataclass(frozen=True)
class Policy:
    strategy: str = CONVERSION
    priority: tuple[str, ...] = DEFAULT_PRIORITY
    unique: frozenset[str] = frozenset({"customer_id"})
    login: frozenset[str] = frozenset({"customer_id"})
    immutable: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        strategy: str,
        priority: Iterable[str] | None = None,
        unique: Iterable[str] | None = None,
        login: Iterable[str] | None = None,
        immutable: Iterable[str] = (),
    ) -> Policy:
        """A policy with the strategy's documented defaults for whatever is not given."""
        ordered = list(dict.fromkeys([*(priority or DEFAULT_PRIORITY), *ALL_TYPES]))
        immutable = frozenset(immutable)
        return cls(
            strategy,
            tuple(ordered),
            frozenset(DEFAULT_KEYS[strategy] if unique is None else unique) | immutable,
            frozenset(DEFAULT_KEYS[strategy] if login is None else login) | immutable,
            immutable,
        )

    def ordered(self, request: Mapping[str, str]) -> list[tuple[str, str]]:
        rank = {name: n for n, name in enumerate(self.priority)}
        return sorted(request.items(), key=lambda item: rank.get(item[0], len(rank)))

    def is_known(self, record: IdentityRecord) -> bool:
        return any(record.identities.get(t) for t in self.login)

    def carries_login(self, request: Mapping[str, str]) -> bool:
        return any(t in self.login for t in request)

    def visible(self, record: IdentityRecord | None, request: Mapping[str, str]) -> TypeGuard[IdentityRecord]:
        """May `request` resolve to this profile? (Never when there is none: True means `record` is not None.)"""
        if record is None or record.orphaned:
            return False
        held = record.identities
        if any(held.get(t) and request[t] not in held[t] for t in self.unique if t in request):
            return False
        if any(held.get(t) and request.get(t) not in held[t] for t in self.immutable):
            return False
        return not self.is_known(record) or self.holds_login(record, request)

    def holds_login(self, record: IdentityRecord, request: Mapping[str, str]) -> bool:
        return any(request.get(t) in record.identities.get(t, ()) for t in self.login)


def random_mpid() -> int:
    """A new MPID: a positive signed 64-bit integer (never 0)."""
    return secrets.randbits(63) or 1


def find(
    state: IdentityState,
    policy: Policy,
    request: Mapping[str, str],
    *,
    login_only: bool = False,
    anonymous_only: bool = False,
) -> int | None:
    for identity_type, value in policy.ordered(request):
        if login_only and identity_type not in policy.login:
            continue
        for mpid in state.holders(identity_type, value):
            record = state.record(mpid)
            if policy.visible(record, request) and not (anonymous_only and policy.is_known(record)):
                return mpid
    return None


def attach(state: IdentityState, policy: Policy, mpid: int, request: Mapping[str, str]) -> list[IdentityChange]:
    """Add the request's identities to the profile; a unique ID replaces the profile's own and moves here."""
    record = state.record(mpid)
    assert record is not None, mpid
    changes = []
    for identity_type, value in policy.ordered(request):
        held = record.identities.get(identity_type, [])
        if value in held:
            continue
        holders = state.holders(identity_type, value)
        change = IdentityChange(identity_type, None, value, created=not holders)
        if identity_type in policy.unique:
            for previous in held:
                _unindex(state, identity_type, previous, mpid)
            change.old = held[0] if held else None
            record.identities[identity_type] = [value]
            for other in holders:
                if other != mpid:
                    _take_unique(state, policy, other, identity_type, value)
            state.set_holders(identity_type, value, [mpid])
        else:
            record.identities[identity_type] = [*held, value]
            state.set_holders(identity_type, value, [*holders, mpid])
        changes.append(change)
    state.put(mpid, record)
    return changes


def detach(state: IdentityState, mpid: int, identity_type: str, value: str) -> bool:
    record = state.record(mpid)
    held = record.identities.get(identity_type, []) if record else []
    if record is None or value not in held:
        return False
    record.identities[identity_type] = [v for v in held if v != value]
    if not record.identities[identity_type]:
        del record.identities[identity_type]
    _unindex(state, identity_type, value, mpid)
    state.put(mpid, record)
    return True


def _take_unique(state: IdentityState, policy: Policy, mpid: int, identity_type: str, value: str) -> None:
    detach(state, mpid, identity_type, value)
    record = state.record(mpid)
    if record is not None and not any(record.identities.get(t) for t in policy.unique):
        record.orphaned = True
        for other_type, values in record.identities.items():
            for other in values:
                _unindex(state, other_type, other, mpid)
        state.put(mpid, record)


def _unindex(state: IdentityState, identity_type: str, value: str, mpid: int) -> None:
    state.set_holders(identity_type, value, [m for m in state.holders(identity_type, value) if m != mpid])


def create(state: IdentityState, policy: Policy, request: Mapping[str, str], now_ms: int, mpid: int) -> Outcome:
    state.put(mpid, IdentityRecord({}, created_ms=now_ms))
    changes = attach(state, policy, mpid, request)
    return Outcome(mpid, created=True, changes=changes, logged_in=policy.carries_login(request))


def _existing(state: IdentityState, mpid: int) -> IdentityRecord:
    """The record of a profile the caller knows is there (found visible, or just created)."""
    record = state.record(mpid)
    assert record is not None, mpid
    return record


def _resolved(state: IdentityState, policy: Policy, mpid: int, request: Mapping[str, str]) -> Outcome:
    before = _existing(state, mpid)
    matched = {t: v for t, v in request.items() if v in before.identities.get(t, ())}
    changes = attach(state, policy, mpid, request)
    logged_in = policy.holds_login(_existing(state, mpid), request)
    return Outcome(mpid, matched=matched, changes=changes, logged_in=logged_in)


def _anonymous(state: IdentityState, policy: Policy, mpid: int | None) -> bool:
    record = state.record(mpid) if mpid else None
    return record is not None and not record.orphaned and not policy.is_known(record)


def identify(
    state: IdentityState,
    policy: Policy,
    request: Mapping[str, str],
    now_ms: int,
    previous_mpid: int | None = None,
    new_mpid: int | None = None,
) -> Outcome:
    """The profile the request describes, gaining the request's identities; a new one if none may be seen.

    Profile Conversion and Best Match turn an anonymous profile into the known one (same MPID); Profile
    Link and Isolation give a new known user a new profile."""
    converts = policy.strategy in (CONVERSION, BEST_MATCH)
    if converts or not policy.carries_login(request):
        mpid = find(state, policy, request)
        if mpid is None and policy.strategy == CONVERSION and _anonymous(state, policy, previous_mpid):
            mpid = previous_mpid
    else:
        mpid = find(state, policy, request, login_only=True)
    if mpid is not None:
        return _resolved(state, policy, mpid, request)
    outcome = create(state, policy, request, now_ms, new_mpid or random_mpid())
    if policy.strategy == LINK and _anonymous(state, policy, previous_mpid):
        record = _existing(state, outcome.mpid)
        record.alias_source = previous_mpid
        state.put(outcome.mpid, record)
    return outcome


def login(
    state: IdentityState,
    policy: Policy,
    request: Mapping[str, str],
    now_ms: int,
    previous_mpid: int | None = None,
    new_mpid: int | None = None,
) -> Outcome:
    _needs_login_support(policy, "login")
    return identify(state, policy, request, now_ms, previous_mpid, new_mpid)


def logout(
    state: IdentityState, policy: Policy, request: Mapping[str, str], now_ms: int, new_mpid: int | None = None
) -> Outcome:
    """Back to an anonymous profile: Link always makes a new one; the others return to the device's
    anonymous profile when it still exists (under Conversion it became the known one, so a new one)."""
    _needs_login_support(policy, "logout")
    anonymous = {t: v for t, v in request.items() if t not in policy.login}
    mpid = None if policy.strategy == LINK else find(state, policy, anonymous, anonymous_only=True)
    if mpid is not None:
        return _resolved(state, policy, mpid, anonymous)
    return create(state, policy, anonymous, now_ms, new_mpid or random_mpid())


def search(state: IdentityState, policy: Policy, request: Mapping[str, str]) -> Outcome | None:
    """Read-only lookup; never creates."""
    mpid = find(state, policy, request)
    if mpid is None:
        return None
    record = _existing(state, mpid)
    matched = {t: v for t, v in request.items() if v in record.identities.get(t, ())}
    return Outcome(mpid, matched=matched, logged_in=policy.holds_login(record, request))


def modify(state: IdentityState, policy: Policy, mpid: int, changes: list[IdentityChange]) -> list[IdentityChange]:
    """Apply old → new value changes to an existing profile (None old: add; None new: remove)."""
    record = state.record(mpid)
    if record is None or record.orphaned:
        raise NotFound(f"No profile with mpid {mpid}.")
    for change in changes:
        if change.identity_type in policy.immutable:
            raise ImmutableIdentity(change.identity_type)
    applied = []
    for change in changes:
        removed = change.old is not None and detach(state, mpid, change.identity_type, change.old)
        added = attach(state, policy, mpid, {change.identity_type: change.new}) if change.new is not None else []
        if removed or added:
            applied.append(IdentityChange(change.identity_type, change.old if removed else None, change.new))
    return applied


def resolve_batch(
    state: IdentityState,
    policy: Policy,
    batch_mpid: int | None,
    request: Mapping[str, str],
    now_ms: int,
    new_mpid: int,
) -> Outcome:
    """An Events API batch: the profile its `mpid` names when that profile is live (it gains the batch's
    identities); otherwise the batch resolves by its identities as if it carried no `mpid`. `new_mpid` is
    derived from the batch's log position, so a replay resolves identically.

    mParticle documents neither a batch `mpid` the identity store does not hold nor one of an orphaned
    profile (the JSON reference, https://docs.mparticle.com/developers/server/json-reference/, gives only the
    type, int64). So: an unknown one never creates a profile at that MPID, since a client could plant data
    where a future user would land. An orphan's is not followed either: "orphans are never returned again"
    (IDSync guide), and an orphan has no single successor (with two unique IDs, its customer ID and its email
    may have moved to different profiles). SDKs cache MPIDs, so such batches are
    normal traffic, and the identities they carry are the evidence of whose data it is; with none, the batch
    gets a new anonymous profile, as a batch without `mpid` or identities does."""
    record = state.record(batch_mpid) if batch_mpid else None
    if not batch_mpid or record is None or record.orphaned:
        return identify(state, policy, request, now_ms, new_mpid=new_mpid)
    return _resolved(state, policy, batch_mpid, request)


ALIAS_MAX_WINDOW_MS = 90 * 86_400_000


class AliasJob(msgspec.Struct, array_like=True):
    job: int
    source: int
    destination: int
    start_ms: int
    end_ms: int


def alias(
    state: IdentityState, source: int, destination: int, start_ms: int | None, end_ms: int | None, now_ms: int
) -> tuple[int, int] | None:
    """Validate an alias request and record it on both profiles; the window to copy, or None when a
    server rule says not to apply it (which, as documented, is not an error)."""
    end = end_ms if end_ms is not None else now_ms
    start = max(start_ms if start_ms is not None else 0, now_ms - ALIAS_MAX_WINDOW_MS)
    if end <= start:
        raise BadRequest("Given time range is invalid.")
    source_record, destination_record = state.record(source), state.record(destination)
    if source_record is None or destination_record is None:
        raise BadRequest("source MPID or target MPID does not exist.")
    overlaps = any(s < end and start < e for s, e in source_record.aliased_windows)
    if overlaps or source_record.alias_destination or destination_record.aliased_windows:
        return None
    source_record.aliased_windows = [*source_record.aliased_windows, (start, end)]
    destination_record.alias_destination = True
    state.put(source, source_record)
    state.put(destination, destination_record)
    return start, end


def _needs_login_support(policy: Policy, operation: str) -> None:
    if policy.strategy == BEST_MATCH:
        raise BadRequest(f"The best_match identity strategy has no {operation}; use identify.")
