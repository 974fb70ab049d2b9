"""Erasure in each store, without Ray: which keys of which dbs belong to an MPID, that erasing removes exactly
those (a profile's audiences get `delete` rows to their outputs), and that after the compaction no file of the
environment holds the subject's bytes, while before it the freed pages do."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from cdp_actors.identity import strategy
from cdp_actors.identity.index import IdentityCore, LmdbState, erase_profiles
from cdp_actors.identity.strategy import Policy
from cdp_actors.intake.deadletter import DeadLetter, DeadLetters
from cdp_actors.intake.erasure import batch_of_subject
from cdp_actors.intake.log import IntakeLogCore, _Pending
from cdp_actors.profiles.erasure import subject_keys
from cdp_actors.profiles.shard import SHARD_DBS, ShardCore
from cdp_actors.schema.records import ShardRecord
from cdp_actors.storage.lmdb_env import SharedEnvironment, Store, mpid_key
from tests.samples import batch
from tests.unit.test_shard_derived import MEMBERS_OUTPUT, T0, membership_rows, played, workspace

SUBJECT, OTHER = 7, 8


def email(mpid: int) -> str:
    return f"subject-{mpid}@example.com"


def customer(mpid: int) -> str:
    return f"cust-{mpid}-9f3a"


def raw_batch(mpid: int, events: list[dict]) -> bytes:
    body = batch(customer(mpid), events)
    body["user_identities"]["email"] = email(mpid)
    return json.dumps(body).encode()


def record(seq: int, mpid: int, events: list[dict], received_ms: int) -> ShardRecord:
    return ShardRecord(seq, seq, mpid, 1, received_ms, raw_batch(mpid, events))


def files_holding(directory: Path, needle: str) -> list[str]:
    """Every file under `directory` whose raw bytes hold `needle` (UTF-8)."""
    return [str(p) for p in directory.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def keys_of(core: ShardCore, mpid: int) -> dict[str, list[bytes]]:
    dbs = {name: core.store.db(name) for name in SHARD_DBS}
    with core.store.read() as txn:
        found = subject_keys(txn, dbs, mpid, core.derived.next_change_of(txn, mpid))
    return {name: getattr(found, name) for name in found.__struct_fields__}


def filled_shard(path: Path) -> ShardCore:
    """Two users who each played twice (members of `players`, connected to MEMBERS_OUTPUT), on one shard."""
    core = ShardCore(path, 0, workspace(), version=1)
    core.apply([record(1, SUBJECT, [played(T0)], T0), record(2, OTHER, [played(T0)], T0)], None)
    core.apply([record(3, SUBJECT, [played(T0 + 1)], T0 + 5), record(4, OTHER, [played(T0 + 1)], T0 + 5)], 2)
    return core


def test_the_keys_of_an_mpid_are_its_own_in_every_db(tmp_path: Path) -> None:
    core = filled_shard(tmp_path)
    subject, other = keys_of(core, SUBJECT), keys_of(core, OTHER)
    assert subject["profiles"] == [mpid_key(SUBJECT)] and subject["derived"] == [mpid_key(SUBJECT)]
    assert len(subject["history"]) == 2 and all(k.startswith(mpid_key(SUBJECT)) for k in subject["history"])
    assert len(subject["activity"]) == 1 and subject["activity"][0].endswith(mpid_key(SUBJECT))
    assert len(subject["expiry"]) == 1 and subject["expiry"][0].endswith(mpid_key(SUBJECT))
    assert len(subject["outbox"]) == 3  # two outbound batches, one `add` to players' output
    for name, keys in subject.items():
        assert not set(keys) & set(other[name]), name
    assert keys_of(core, 424242) == {name: [] for name in subject}


def test_erasing_a_profile_leaves_no_record_and_no_bytes_and_the_others_untouched(tmp_path: Path) -> None:
    core = filled_shard(tmp_path)
    other_before = keys_of(core, OTHER)
    core.erase([SUBJECT], T0 + 10)
    left = keys_of(core, SUBJECT)
    assert left["outbox"] and all(not keys for name, keys in left.items() if name != "outbox")
    drops = [(row, change) for row, change in membership_rows(core) if row.mpid == SUBJECT]
    assert [(row.output_id, change.action) for row, change in drops] == [(MEMBERS_OUTPUT, "delete")]
    assert left["outbox"] == [row.key for row, _ in drops]  # the drop is all that is left, to be delivered
    assert keys_of(core, OTHER) == other_before
    assert core.profile(OTHER) is not None and core.profile(SUBJECT) is None
    assert files_holding(tmp_path, email(SUBJECT))  # in the drop, until the partner has it
    core.store.close()
    core = ShardCore(tmp_path, 0, workspace(), version=1)  # a restart keeps what is owed
    core.delete_outbox(left["outbox"])  # the partner acknowledged the drop: compacted again
    assert files_holding(tmp_path, email(SUBJECT)) == [] and files_holding(tmp_path, customer(SUBJECT)) == []
    core.erase([SUBJECT], T0 + 20)  # idempotent: nothing more to remove
    assert keys_of(core, SUBJECT) == {name: [] for name in left}
    assert files_holding(tmp_path, email(OTHER)) and files_holding(tmp_path, customer(OTHER))
    core.apply([record(5, OTHER, [played(T0 + 30)], T0 + 30)], 4)  # the reopened store keeps working
    assert core.profile(OTHER)["batches"] == 3  # type: ignore[index]


def test_without_the_compaction_freed_pages_keep_the_subjects_bytes(tmp_path: Path, monkeypatch) -> None:
    core = filled_shard(tmp_path)
    monkeypatch.setattr(Store, "compact", lambda self: None)
    core.erase([SUBJECT], T0 + 10)
    core.delete_outbox(keys_of(core, SUBJECT)["outbox"])
    assert core.profile(SUBJECT) is None
    assert files_holding(tmp_path, customer(SUBJECT))


def test_compaction_keeps_every_live_record(tmp_path: Path) -> None:
    store = Store(tmp_path / "env", ("a", "b"))
    with store.write() as txn:
        for n in range(5000):
            txn.put(n.to_bytes(4, "big"), f"value-{n}".encode() * 20, db=store.db("a" if n % 2 else "b"))
    with store.write() as txn:
        for n in range(0, 5000, 3):
            txn.delete(n.to_bytes(4, "big"), db=store.db("a" if n % 2 else "b"))
    with store.read() as txn:
        before = {name: list(txn.cursor(store.db(name))) for name in ("a", "b")}
    store.compact()
    with store.read() as txn:
        assert {name: list(txn.cursor(store.db(name))) for name in ("a", "b")} == before
    assert not files_holding(tmp_path, "value-3value-3")
    assert not (tmp_path / "env.compacting").exists()
    with store.write() as txn:  # writable again
        txn.put(b"new", b"x", db=store.db("a"))


def test_the_identity_index_forgets_the_profile_and_what_points_to_it(tmp_path: Path) -> None:
    core = IdentityCore(tmp_path, Policy.of(strategy.LINK))
    policy = core.policy

    def run(operation):  # noqa: ANN001, ANN202
        [result] = core.run([operation])
        assert not isinstance(result, Exception), result
        return result

    subject = run(lambda s: strategy.identify(s, policy, {"customer_id": customer(1), "email": email(1)}, T0)).mpid
    other = run(lambda s: strategy.identify(s, policy, {"customer_id": customer(2)}, T0)).mpid
    run(lambda s: s.put(other, msgspec.structs.replace(s.record(other), alias_source=subject)))
    run(lambda s: s.add_alias_job(subject, other, (0, T0)))
    held = run(lambda s: erase_profiles(s, [subject]))
    assert held == {"customer_id": [customer(1)], "email": [email(1)]}

    def state(s: LmdbState):  # noqa: ANN202
        return s.record(subject), s.holders("email", email(1)), s.alias_jobs(), s.record(other)

    record, holders, jobs, other_record = core.read(state)
    assert record is None and holders == [] and jobs == []
    assert other_record is not None and other_record.alias_source is None
    assert other_record.identities == {"customer_id": [customer(2)]}
    assert run(lambda s: erase_profiles(s, [subject])) == {}  # idempotent
    core.store.compact()
    assert files_holding(tmp_path, email(1)) == [] and files_holding(tmp_path, customer(2))
    again = run(lambda s: strategy.identify(s, policy, {"email": email(1)}, T0 + 1))
    assert again.created and again.mpid != subject  # new data for the same identity: a new profile


def test_intake_batches_are_matched_by_their_identities_or_mpid() -> None:
    identities = {"email": [email(1)], "customer_id": [customer(1)]}
    assert batch_of_subject(raw_batch(1, []), identities, [])
    assert not batch_of_subject(raw_batch(2, []), identities, [])
    assert batch_of_subject(json.dumps({"mpid": 77, "events": []}).encode(), identities, [77])
    assert not batch_of_subject(json.dumps({"user_identities": {"other": email(1)}}).encode(), identities, [])
    poison = b'{"user_identities": {"email": "' + email(1).encode() + b'"}, "events": [{'
    assert batch_of_subject(poison, identities, [])  # undecodable: by the value's JSON string in the bytes


def test_the_intake_removes_kept_batches_and_dead_letters_of_the_subject(tmp_path: Path) -> None:
    log = IntakeLogCore(tmp_path / "intake", max_lag=1000)
    loop = asyncio.new_event_loop()
    raws = [raw_batch(1, []), raw_batch(2, []), raw_batch(1, [played(T0)])]
    log.write([_Pending(1, T0, [(None, raw) for raw in raws], loop.create_future())])
    dead = DeadLetters(log.store)
    with log.store.write() as txn:
        dead.put(txn, DeadLetter(9, 1, T0, raw_batch(1, [])[:-1], "boom", 3, T0))
        dead.put(txn, DeadLetter(10, 1, T0, raw_batch(2, [])[:-1], "boom", 3, T0))
    removed = log.erase({"email": [email(1)]}, [])
    assert removed == 3
    with log.store.read() as txn:
        kept = [json.loads(msgspec.msgpack.decode(v)[2]) for v in txn.cursor(log.store.db("log")).iternext(keys=False)]
    assert [b["user_identities"]["email"] for b in kept] == [email(2)]
    assert [e.seq for e in DeadLetters(log.store).page(0, 10)] == [10]
    assert files_holding(tmp_path, email(1)) == [] and files_holding(tmp_path, customer(1)) == []
    assert log.write([_Pending(1, T0, [(None, raw_batch(3, []))], loop.create_future())])[0].accepted == 1


@pytest.mark.parametrize("stray", [True, False])
def test_a_compaction_interrupted_by_a_crash_is_cleaned_at_the_next_open(tmp_path: Path, stray: bool) -> None:
    store = Store(tmp_path / "env", ("a",))
    with store.write() as txn:
        txn.put(b"k", b"v", db=store.db("a"))
    store.close()
    if stray:
        (tmp_path / "env.compacting").mkdir()
        (tmp_path / "env.compacting" / "data.mdb").write_bytes(b"half a copy")
    reopened = Store(tmp_path / "env", ("a",))
    assert not (tmp_path / "env.compacting").exists()
    with reopened.read() as txn:
        assert txn.get(b"k", db=reopened.db("a")) == b"v"


def test_a_compaction_refuses_while_another_process_has_the_environment_open(tmp_path: Path) -> None:
    store = Store(tmp_path / "env", ("a",))
    with store.write() as txn:
        txn.put(b"gone", b"subject-bytes" * 10, db=store.db("a"))
    with store.write() as txn:
        txn.delete(b"gone", db=store.db("a"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(tmp_path / "env")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        with pytest.raises(SharedEnvironment):
            store.compact()
        assert files_holding(tmp_path, "subject-bytes")  # left as it was
        with store.write() as txn:  # and still usable
            txn.put(b"k", b"v", db=store.db("a"))
    finally:
        holder.communicate(b"\n", timeout=30)
    store.compact()  # alone now
    assert not files_holding(tmp_path, "subject-bytes")
    with store.read() as txn:
        assert txn.get(b"k", db=store.db("a")) == b"v"


HOLD_OPEN = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=2)
print("open", flush=True)
sys.stdin.readline()
"""


def test_the_intake_forgets_request_ids_that_embed_the_subjects_identity(tmp_path: Path) -> None:
    """A `source_request_id` like `<customer id>-<n>` stays in the deduplication index after its batch was
    dispatched and trimmed: the erasure removes it too, and only it (another user's id still deduplicates)."""
    log = IntakeLogCore(tmp_path / "intake", max_lag=1000)
    loop = asyncio.new_event_loop()
    sent = [(f"{customer(1)}-0", raw_batch(1, [])), (f"{customer(2)}-0", raw_batch(2, [])), ("id-1", raw_batch(3, []))]
    log.write([_Pending(1, T0, sent, loop.create_future())])
    with log.store.write() as txn:  # dispatched and trimmed: only the ids are left of those batches
        for key in [bytes(k) for k in txn.cursor(log.store.db("log")).iternext(values=False)]:
            txn.delete(key, db=log.store.db("log"))
    log.erase({"customer_id": [customer(1)], "email": [email(1)], "other": ["1"]}, [])
    assert files_holding(tmp_path, customer(1)) == []
    again = log.write([_Pending(1, T0, sent, loop.create_future())])[0]
    assert (again.accepted, again.duplicates) == (1, 2)  # the subject's id is new again; "1" matched no other id


def test_compaction_leaves_no_deleted_key_in_a_branch_page(tmp_path: Path) -> None:
    """A key that began a leaf page when it split stays in the parent branch page as its separator after the
    record is deleted; LMDB's compacting copy keeps branch pages as they are, so it kept such a key (an erased
    source_request_id naming a customer was found so in the intake's file)."""
    store = Store(tmp_path / "env", ("srid",))
    keys = [f"customer-{n:05d}-request".encode() for n in range(3000)]  # ~80 leaf pages: ~80 separators
    with store.write() as txn:
        for key in keys:
            txn.put(key, b"x" * 8, db=store.db("srid"))
    erased, kept = keys[1::2], keys[::2]
    with store.write() as txn:
        for key in erased:
            txn.delete(key, db=store.db("srid"))
    store.compact()
    data = (tmp_path / "env" / "data.mdb").read_bytes()
    assert [key for key in erased if key in data] == []
    with store.read() as txn:
        assert [key for key, _ in txn.cursor(store.db("srid"))] == kept
