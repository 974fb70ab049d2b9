"""Standard audiences: evaluated once, on demand, over every stored profile and its whole kept event history
(https://docs.mparticle.com/guides/platform-guide/audiences/standard/), where real-time ones are kept up to date by
the shards batch by batch.

- `standard_members(store, audience, now_ms)`: one shard's members, read in one LMDB read transaction (a consistent
  view while the shard goes on applying chunks). Event-count leaves are counted with the calculated-attribute
  engine over the leaf's definition (`criteria.leaf_definition`), fed the user's history batch by batch; calculated
  attribute leaves read `Profile.calculated`, membership leaves `Profile.audiences` (real-time audiences).
- `StandardRun`: a run over all shards (progress: shards done / total) and its result, kept as one CSV file per run
  (`mpid` + the chosen identity types) with a small JSON summary beside it, in `<data dir>/audiences/`: the last
  result of each audience survives restarts and is what `/download` serves and `/send` sends. A run in progress
  is marked by a `.running` file from its start to its result, so a run cut short by a restart of the process
  that drove it is found (`interrupted_runs`) and run again, as of the same time.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from cdp_actors.audiences.criteria import leaf_definition
from cdp_actors.audiences.evaluate import Criteria, facts_of
from cdp_actors.calculated.engine import Calculation, Observed
from cdp_actors.config import Audience
from cdp_actors.errors import BadRequest
from cdp_actors.profiles.model import Profile, decode_profile
from cdp_actors.profiles.privacy import is_opted_out
from cdp_actors.schema.identity_types import DEVICE_TYPES, USER_TYPES, canonical
from cdp_actors.storage.lmdb_env import Store, iter_prefix, mpid_key

RUNS_DIR = "audiences"
"""Under the data directory: `<audience id>-<calculated at ms>.csv` and `.json` per run."""
DEFAULT_IDENTITIES = ("customer_id", "email")
"""The identity columns of a run's CSV when the request chooses none."""
MAX_IDENTITY_COLUMNS = 10


class Member(msgspec.Struct, array_like=True):
    """A user in a standard audience: the MPID and the identities the run's CSV has columns for."""

    mpid: int
    identities: dict[str, str]


# ---- evaluating one shard ----------------------------------------------------------------------------------------


def standard_members(store: Store, audience: Audience, now_ms: int, identity_types: Iterable[str] = ()) -> list[Member]:
    """The members among the profiles of one shard's store, as of `now_ms`, with their identities of
    `identity_types` (all of them when empty)."""
    wanted = set(identity_types)
    compiled = Criteria(audience.criteria)
    counting = [Calculation(leaf_definition(leaf)) for leaf in compiled.event_leaves]
    members = []
    with store.read() as txn:
        history = store.db("history")
        for _, value in txn.cursor(store.db("profiles")).iternext():
            profile = decode_profile(value)
            counts = event_counts(counting, _batches(txn, history, profile.mpid), now_ms) if counting else []
            if not is_opted_out(profile) and compiled.holds(facts_of(profile, frozenset(profile.audiences), counts)):
                members.append(Member(profile.mpid, identities_of(profile, wanted)))
    return members


def _batches(txn: Any, history: Any, mpid: int) -> list[list[dict[str, Any]]]:
    """The user's kept event history, one list of events per stored batch, oldest first."""
    return [msgspec.json.decode(value[2:]) for _, value in iter_prefix(txn, history, mpid_key(mpid))]


def identities_of(profile: Profile, wanted: set[str]) -> dict[str, str]:
    found = {**profile.device_identities, **profile.user_identities}
    kept = {name: item.value for name, item in found.items() if not wanted or name in wanted}
    return {name: str(value) for name, value in kept.items() if value is not None}


def event_counts(counting: list[Calculation], batches: list[list[dict[str, Any]]], now_ms: int) -> list[int]:
    """Per event leaf, in tree order, how many of its events the user performed within its window as of `now_ms`:
    the engine's `count` over the leaf's definition, fed the whole kept history batch by batch. A batch is stamped
    with its latest event time (the history keeps no receipt time; an event without one is counted as of now)."""
    counts = []
    for calculation in counting:
        state = None
        for events in batches:
            stamps = [t for e in events if isinstance(t := (e.get("data") or {}).get("timestamp_unixtime_ms"), int)]
            state = calculation.observe(state, Observed(events, {}, max(stamps, default=now_ms)))
        value = calculation.value(state, now_ms)
        counts.append(int(float(value)) if value else 0)
    return counts


# ---- a run over all shards, and its result ------------------------------------------------------------------------


def identity_columns(text: str | None) -> list[str]:
    """`?identities=email,customer_id` as canonical identity types (each known), in the order given."""
    if text is None or not text.strip():
        return list(DEFAULT_IDENTITIES)
    columns: list[str] = []
    for name in (part.strip() for part in text.split(",") if part.strip()):
        found = canonical(name)
        if found is None or found not in (*USER_TYPES, *DEVICE_TYPES):
            raise BadRequest(f"unknown identity type {name!r}", "identities")
        if found not in columns:
            columns.append(found)
    if len(columns) > MAX_IDENTITY_COLUMNS:
        raise BadRequest(f"at most {MAX_IDENTITY_COLUMNS} identity types", "identities")
    return columns


class RunResult(msgspec.Struct):
    """A finished run: how many members, as of when, and where its CSV is."""

    audience_id: int
    size: int
    calculated_at_ms: int
    identities: list[str]
    csv_file: str


class StandardRun:
    """One run of a standard audience over `shards` shards: progress as each shard answers, then its result written
    (CSV first, then the JSON summary that makes it the audience's latest: a crash in between leaves no result)."""

    def __init__(self, runs_dir: Path, audience: Audience, shards: int, identities: list[str], now_ms: int) -> None:
        self.runs_dir, self.audience, self.shards = runs_dir, audience, shards
        self.identities, self.now_ms = identities, now_ms
        self.members: list[Member] = []
        self.done = 0
        self.error: str | None = None
        self.result: RunResult | None = None

    def shard_done(self, members: list[Member]) -> None:
        self.members += members
        self.done += 1

    def failed(self, error: str) -> None:
        self.error = error

    @property
    def name(self) -> str:
        return f"{self.audience.id}-{self.now_ms}"

    def mark_started(self) -> None:
        """The `.running` file that says this run has no result yet (its identities: what a rerun needs)."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        _write_synced(self.runs_dir / f"{self.name}.running", msgspec.json.encode(self.identities))

    def finish(self) -> RunResult:
        self.result = write_run(self.runs_dir, self.audience.id, self.members, self.identities, self.now_ms)
        (self.runs_dir / f"{self.name}.running").unlink(missing_ok=True)
        return self.result

    def progress(self) -> dict[str, Any]:
        state = "failed" if self.error else "done" if self.result else "running"
        shown: dict[str, Any] = {"state": state, "shards_done": self.done, "shards_total": self.shards,
                                 "started_at_ms": self.now_ms}  # fmt: skip
        if self.error:
            shown["error"] = self.error
        return shown


def csv_text(members: list[Member], identities: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["mpid", *identities])
    for member in sorted(members, key=lambda m: m.mpid):
        writer.writerow([member.mpid, *(member.identities.get(name, "") for name in identities)])
    return out.getvalue()


def write_run(runs_dir: Path, audience_id: int, members: list[Member], identities: list[str], now_ms: int) -> RunResult:
    runs_dir.mkdir(parents=True, exist_ok=True)
    name = f"{audience_id}-{now_ms}"
    _write_synced(runs_dir / f"{name}.csv", csv_text(members, identities).encode())
    result = RunResult(audience_id, len(members), now_ms, identities, f"{name}.csv")
    _write_synced(runs_dir / f"{name}.json", msgspec.json.encode(result))
    return result


def _write_synced(path: Path, data: bytes) -> None:
    """Written whole or not at all: a temporary file, synced, renamed over the name."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class Interrupted(NamedTuple):
    audience_id: int
    now_ms: int
    identities: list[str]


def interrupted_runs(runs_dir: Path) -> list[Interrupted]:
    """Runs started and never finished (their driver stopped), oldest first."""
    found = []
    for marker in sorted(runs_dir.glob("*.running")):
        audience_id, now_ms = (int(part) for part in marker.stem.split("-"))
        identities: list[str]
        try:
            identities = msgspec.json.decode(marker.read_bytes(), type=list[str])
        except (OSError, msgspec.DecodeError):  # cut short while written: the run never got past its start
            identities = list(DEFAULT_IDENTITIES)
        found.append(Interrupted(audience_id, now_ms, identities))
    return sorted(found, key=lambda run: run.now_ms)


def forget_interrupted(runs_dir: Path, run: Interrupted) -> None:
    """An interrupted run of an audience that is gone or no longer standard: nothing to run again."""
    (runs_dir / f"{run.audience_id}-{run.now_ms}.running").unlink(missing_ok=True)


def latest_run(runs_dir: Path, audience_id: int) -> RunResult | None:
    """The audience's last finished run, if any."""
    found = sorted(runs_dir.glob(f"{audience_id}-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if not found:
        return None
    try:
        return msgspec.json.decode(found[-1].read_bytes(), type=RunResult)
    except (OSError, msgspec.DecodeError):
        return None


def run_members(runs_dir: Path, result: RunResult) -> list[Member]:
    """The members a run's CSV holds (with its identity columns)."""
    with open(runs_dir / result.csv_file, newline="") as file:
        rows = list(csv.DictReader(file))
    return [Member(int(row.pop("mpid")), {name: value for name, value in row.items() if value}) for row in rows]
