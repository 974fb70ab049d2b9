"""Derived state in a profile shard (ShardCore, no Ray): calculated attribute values, real-time audience
membership and its outbox rows, the sweep, activation backfills and initial syncs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cdp_actors.config import WorkspaceConfig, parse_workspace
from cdp_actors.integrations.base import MembershipChange
from cdp_actors.partition import partition_of
from cdp_actors.profiles.derived import MembershipDelta, UserStates, recompute
from cdp_actors.profiles.handoff import membership_changes, membership_key, outbox_lane
from cdp_actors.profiles.model import decode_profile
from cdp_actors.profiles.shard import ShardCore
from cdp_actors.profiles.views import backfill_summary, live_attributes, user_detail
from cdp_actors.reports import DAY_MS
from cdp_actors.schema.records import OutboxRow, ShardRecord
from cdp_actors.storage.lmdb_env import mpid_key, u64
from tests.samples import batch, custom

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_760_000_000_000 // DAY_MS * DAY_MS + 12 * 3_600_000  # noon UTC: a day's events stay in that day
MEMBERS_OUTPUT = 2
SYNC_OUTPUT = 3
PLAYS = {
    "id": 1,
    "name": "plays",
    "generation": 1,
    "active_definition": {
        "data_point": {"type": "event", "event_name": "Played", "event_type": "custom_event"},
        "calculation_type": "count",
        "time_period": {"type": "within", "within": 1, "within_unit": "days"},
    },
}
SPENT = {
    "id": 2,
    "name": "spent",
    "generation": 1,
    "active_definition": {
        "data_point": {"type": "event_attribute", "event_name": "Bought", "attribute_name": "amount"},
        "calculation_type": "sum",
    },
}
LAST_PLAY = {
    "id": 3,
    "name": "last play",
    "generation": 1,
    "active_definition": {
        "data_point": {"type": "event", "event_name": "Played", "event_type": "custom_event"},
        "calculation_type": "last_occurrence_timestamp",
        "time_period": {"type": "within", "within": 1, "within_unit": "days"},
    },
}
PLAYERS = {  # played at least twice within a day
    "id": 1,
    "name": "players",
    "criteria": {
        "event": {"event_type": "custom_event", "event_name": "Played"},
        "count": {"value": 2},
        "within_days": 1,
    },
    "connected_outputs": [MEMBERS_OUTPUT],
}
BIG_SPENDERS = {
    "id": 2,
    "name": "big spenders",
    "criteria": {"calculated_attribute": "spent", "type": "number", "operator": "greater_than", "value": "10"},
}

CASUAL_BIG_SPENDERS = {  # evaluated on the memberships computed before it in the same pass
    "id": 3,
    "name": "casual big spenders",
    "criteria": {"all": [{"not": {"audience": 1}}, {"audience": 2}]},
}


def workspace(
    cas: list[dict] = [PLAYS, SPENT],  # noqa: B006
    audiences: list[dict] = [CASUAL_BIG_SPENDERS, PLAYERS, BIG_SPENDERS],  # noqa: B006
) -> WorkspaceConfig:
    data = yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text())
    data["outputs"][0]["settings"]["url"] = "http://127.0.0.1:1/events"
    for output in (MEMBERS_OUTPUT, SYNC_OUTPUT):
        data["outputs"].append(
            {"id": output, "name": f"members-{output}", "kind": "webhook", "settings": {"url": "http://127.0.0.1:1/m"}}
        )
    data["calculated_attributes"] = cas
    data["audiences"] = audiences
    return parse_workspace(data)


def record(seq: int, mpid: int, events: list[dict], received_ms: int, **fields: Any) -> ShardRecord:
    raw = json.dumps(batch(f"user-{mpid}", events, **fields)).encode()
    return ShardRecord(seq, seq, mpid, 1, received_ms, raw)


def played(ts: int) -> dict:
    return custom("Played", ts)


def bought(ts: int, amount: float) -> dict:
    return custom("Bought", ts, amount=amount)


def profile(core: ShardCore, mpid: int) -> Any:
    with core.store.read() as txn:
        data = txn.get(mpid_key(mpid), db=core.store.db("profiles"))
    assert data is not None
    return decode_profile(data)


def rows(core: ShardCore) -> list[OutboxRow]:
    with core.store.read() as txn:
        return [msgspec.msgpack.decode(v, type=OutboxRow) for _, v in txn.cursor(core.store.db("outbox"))]


def membership_rows(core: ShardCore) -> list[tuple[OutboxRow, MembershipChange]]:
    return [(r, change) for r in rows(core) if r.audience_id for change in membership_changes(r)]


def finish_jobs(core: ShardCore, now_ms: int, limit: int = 1000) -> None:
    while core.backfill(limit, now_ms):
        pass


def test_calculated_attribute_values_are_set_by_the_batch_and_carried_outbound(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, workspace(), version=1)
    core.apply([record(1, 7, [played(T0), played(T0 + 1), bought(T0, 5)], T0 + 10)], None)
    core.apply([record(2, 7, [bought(T0 + 2, 10.5)], T0 + 20)], 1)
    assert profile(core, 7).calculated == {"plays": "2", "spent": "15.5"}
    outbound = [json.loads(r.payload) for r in rows(core) if not r.audience_id]
    assert outbound[-1]["user_attributes"]["plays"] == "2"  # the outbound batch carries the CA values
    assert outbound[-1]["user_attributes"]["spent"] == "15.5"
    assert set(profile(core, 7).audiences) == {1, 2}  # a player: not a casual one
    core.apply([record(3, 8, [bought(T0, 11)], T0)], 2)
    assert set(profile(core, 8).audiences) == {2, 3}


def test_a_replayed_chunk_counts_nothing_twice(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, workspace(), version=1)
    chunk = [record(1, 7, [played(T0)], T0), record(2, 7, [played(T0 + 1)], T0 + 1)]
    core.apply(chunk, None)
    assert core.apply(chunk, None) == 0
    assert core.apply([*chunk, record(3, 7, [bought(T0 + 2, 3)], T0 + 2)], None) == 1
    assert profile(core, 7).calculated == {"plays": "2", "spent": "3"}
    assert len(membership_rows(core)) == 1  # one add, not two


def test_the_sweep_drops_a_within_one_day_value_and_the_membership(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, workspace(cas=[PLAYS, SPENT, LAST_PLAY]), version=1)
    core.apply([record(1, 7, [played(T0), played(T0 + 1)], T0 + 1)], None)
    assert profile(core, 7).calculated.keys() == {"plays", "spent", "last play"}
    assert profile(core, 7).calculated["plays"] == "2"
    assert core.sweep(T0 + 1000, 100) == 0  # nothing due yet
    assert core.sweep(T0 + 2 * DAY_MS, 100) == 1
    assert profile(core, 7).calculated == {"plays": "0", "spent": "0"}  # a count of nothing is 0; no last play
    assert 1 not in profile(core, 7).audiences
    changes = [(r.output_id, c.action, c.mpid, c.timestamp_ms) for r, c in membership_rows(core)]
    assert changes == [(MEMBERS_OUTPUT, "add", 7, T0 + 1), (MEMBERS_OUTPUT, "delete", 7, T0 + 2 * DAY_MS)]
    assert core.sweep(T0 + 3 * DAY_MS, 100) == 0  # its index entry went with the value
    stats = core.audience_stats()[1]
    assert stats["size"] == 0 and sum(stats["adds"].values()) == 1 and sum(stats["drops"].values()) == 1


def test_membership_rows_have_their_keys_payload_and_identities(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, workspace(), version=1)
    core.apply([record(1, 7, [played(T0)], T0), record(2, 8, [played(T0)], T0)], None)
    core.apply([record(3, 7, [played(T0 + 5)], T0 + 5), record(4, 8, [played(T0 + 6)], T0 + 6)], 2)
    found = membership_rows(core)
    forwarders = core.forwarders
    assert sorted(r.key for r, _ in found) == sorted(
        [
            membership_key(partition_of(7, forwarders), MEMBERS_OUTPUT, 3, 0, 1),
            membership_key(partition_of(8, forwarders), MEMBERS_OUTPUT, 4, 0, 2),
        ]
    )
    row, change = next((r, c) for r, c in found if r.mpid == 7)
    assert (row.connection_id, row.audience_id, row.output_id) == (0, 1, MEMBERS_OUTPUT)
    assert change == MembershipChange(1, "players", 7, "add", {"customer_id": "user-7"}, T0 + 5, "0-1")


def test_a_batch_writes_one_membership_row_per_output_carrying_all_its_changes_in_evaluation_order(
    tmp_path: Path,
) -> None:
    both = [MEMBERS_OUTPUT, SYNC_OUTPUT]
    audiences = [
        {**CASUAL_BIG_SPENDERS, "connected_outputs": [MEMBERS_OUTPUT]},
        PLAYERS,
        {**BIG_SPENDERS, "connected_outputs": both},
    ]
    core = ShardCore(tmp_path, 0, workspace(audiences=audiences), version=1)
    core.apply([record(1, 8, [bought(T0, 11)], T0)], None)  # a big spender, and so a casual one
    by_row = {r.key: (r.output_id, r.event_count) for r in rows(core) if r.audience_id}
    forwarder = partition_of(8, core.forwarders)
    assert by_row == {
        membership_key(forwarder, MEMBERS_OUTPUT, 1, 0, 1): (MEMBERS_OUTPUT, 2),
        membership_key(forwarder, SYNC_OUTPUT, 1, 0, 3): (SYNC_OUTPUT, 1),
    }
    changes = [(r.output_id, c.audience_id, c.action, c.change_id) for r, c in membership_rows(core)]
    assert changes == [
        (MEMBERS_OUTPUT, 2, "add", "0-1"),
        (MEMBERS_OUTPUT, 3, "add", "0-2"),
        (SYNC_OUTPUT, 2, "add", "0-3"),
    ]
    core.apply([record(2, 8, [played(T0 + 1), played(T0 + 2)], T0 + 2)], 1)  # a player: no longer a casual one
    later = [
        (r.output_id, c.audience_id, c.action, c.change_id) for r, c in membership_rows(core) if r.key[-8:] > u64(3)
    ]
    assert later == [(MEMBERS_OUTPUT, 1, "add", "0-4"), (MEMBERS_OUTPUT, 3, "delete", "0-5")]


def test_membership_rows_of_the_same_sequence_number_keep_a_users_changes_in_order(tmp_path: Path) -> None:
    """Sweeps and syncs write at the last applied sequence number: two such rows of one user must reach the
    forwarder (which reads its lane in key order) in the order they were made, whatever audiences they start with."""
    audiences = [{**a, "connected_outputs": [MEMBERS_OUTPUT]} for a in (CASUAL_BIG_SPENDERS, PLAYERS, BIG_SPENDERS)]
    core = ShardCore(tmp_path, 0, workspace(audiences=audiences), version=1)
    core.apply([record(1, 8, [bought(T0, 11)], T0)], None)
    by_id = {a.audience.id: a.audience for a in core.derived.derivations.audiences}
    user = profile(core, 8)
    with core.store.write() as txn:  # as two sweeps at the same sequence number would
        core.derived._write_changes(txn, user, [MembershipDelta(by_id[3], "delete")], 1, 0, T0 + 5)
        core.derived._write_changes(
            txn, user, [MembershipDelta(by_id[1], "add"), MembershipDelta(by_id[3], "add")], 1, 0, T0 + 5
        )
    of_casual = [c.action for _, c in membership_rows(core) if c.audience_id == 3]
    assert of_casual == ["add", "delete", "add"]


def test_a_new_connection_sends_the_current_members_first(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, workspace(), version=1)
    core.apply([record(1, 7, [played(T0), played(T0)], T0), record(2, 8, [played(T0)], T0)], None)
    before = len(membership_rows(core))
    connected = {**PLAYERS, "connected_outputs": [MEMBERS_OUTPUT, SYNC_OUTPUT]}
    core.use(2, workspace(audiences=[CASUAL_BIG_SPENDERS, connected, BIG_SPENDERS]))
    finish_jobs(core, T0 + 10, limit=1)
    synced = [(r.key, c.mpid, c.action) for r, c in membership_rows(core)[before:] if r.output_id == SYNC_OUTPUT]
    assert synced == [(membership_key(partition_of(7, core.forwarders), SYNC_OUTPUT, 2, 0, 2), 7, "add")]
    core.use(3, workspace(audiences=[CASUAL_BIG_SPENDERS, connected, BIG_SPENDERS]))  # already synced: nothing again
    finish_jobs(core, T0 + 20)
    assert len(membership_rows(core)) == before + 1


def test_seeds_combine_with_what_the_shard_computes(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, workspace(), version=1)
    seed = {"attribute_name": "spent", "calculation_type": "sum", "cutoff_ms": T0 - DAY_MS, "value": "100"}
    unknown = {**seed, "attribute_name": "nobody"}
    core.apply([record(1, 7, [], T0, calculated_attribute_seeds=[seed, unknown])], None)
    assert profile(core, 7).calculated == {"plays": "0", "spent": "100"}
    core.apply([record(2, 7, [bought(T0, 15)], T0)], 1)
    assert profile(core, 7).calculated == {"plays": "0", "spent": "115"}


def test_a_backfill_equals_the_live_computation_and_resumes_after_a_restart(tmp_path: Path) -> None:
    chunk = [record(n, mpid, [played(T0 + n), bought(T0 + n, n)], T0 + n) for n, mpid in enumerate([5, 7, 9, 7, 11], 1)]
    live = ShardCore(tmp_path / "live", 0, workspace(), version=1)
    live.apply(chunk, None)
    later = ShardCore(tmp_path / "later", 0, workspace(cas=[], audiences=[]), version=1)
    later.apply(chunk, None)
    assert profile(later, 7).calculated == {}
    later.use(2, workspace())
    assert later.backfill_status(T0)[1] == {"generation": 1, "done": 0, "total": 4, "finished": False, "eta_s": None}
    assert later.backfill(2, T0 + 100) == 2  # users 5 and 7
    later.store.close()  # as if killed: the next start resumes from the cursor kept in meta
    later = ShardCore(tmp_path / "later", 0, workspace(), version=2)
    assert later.backfill_status(T0 + 200)[1]["done"] == 2
    finish_jobs(later, T0 + 100)
    assert later.backfill_status(T0 + 300)[1] | {"eta_s": 0} == {
        "generation": 1,
        "done": 4,
        "total": 4,
        "finished": True,
        "eta_s": 0,
    }
    for mpid in (5, 7, 9, 11):
        assert profile(later, mpid).calculated == profile(live, mpid).calculated
        assert set(profile(later, mpid).audiences) == set(profile(live, mpid).audiences)
    assert profile(later, 7).calculated == {"plays": "2", "spent": "6"}


def test_live_batches_leave_a_backfilling_derivation_to_the_job(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, workspace(cas=[], audiences=[]), version=1)
    core.apply([record(1, 5, [bought(T0, 1)], T0), record(2, 9, [bought(T0, 2)], T0)], None)
    core.use(2, workspace())
    core.backfill(1, T0)  # user 5 done, 9 not yet
    core.apply([record(3, 5, [bought(T0, 10)], T0), record(4, 9, [bought(T0, 20)], T0)], 2)
    assert profile(core, 5).calculated == {"plays": "0", "spent": "11"}
    assert profile(core, 9).calculated == {}
    finish_jobs(core, T0)
    assert profile(core, 9).calculated == {"plays": "0", "spent": "22"}  # from the history, each batch once


# ---- property: incremental == backfilled from scratch ---------------------------------------------------------

USERS = st.sampled_from([3, 5, 8])
EVENT = st.tuples(st.sampled_from(["Played", "Bought", "Other"]), st.integers(0, 3 * DAY_MS), st.integers(1, 9))
STEP = st.one_of(
    st.tuples(st.just("batch"), USERS, st.lists(EVENT, min_size=1, max_size=3), st.integers(0, DAY_MS)),
    st.tuples(st.just("sweep"), st.integers(0, DAY_MS)),
    st.tuples(st.just("backfill"), st.integers(1, 3)),
)


def event_of(name: str, ts: int, amount: int) -> dict:
    return custom(name, ts, amount=amount)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, max_size=12), activate_at=st.integers(0, 12))
@example(  # a batch with yesterday's event before today's: the backfill must fold it at the batch's latest time
    steps=[
        ("batch", 3, [("Played", 0, 1), ("Played", 0, 1)], 0),
        ("batch", 3, [("Played", DAY_MS // 2 + 1, 1), ("Played", 0, 1)], 0),
    ],
    activate_at=0,
)
def test_incremental_state_equals_a_backfill_of_everything(
    tmp_path_factory: Any, steps: list, activate_at: int
) -> None:
    """Batches applied one by one (the derivations activated at a random point, sweeps and backfill steps in
    between) end where a shard that sees the derivations only at the end and backfills everything does."""
    incremental = ShardCore(tmp_path_factory.mktemp("inc"), 0, workspace(cas=[], audiences=[]), version=1)
    fresh = ShardCore(tmp_path_factory.mktemp("fresh"), 0, workspace(cas=[], audiences=[]), version=1)
    try:  # each example's environments are closed, also when it fails (shrinking runs many)
        compare_incremental_with_backfill(incremental, fresh, steps, activate_at)
    finally:
        incremental.store.close()
        fresh.store.close()


def compare_incremental_with_backfill(incremental: ShardCore, fresh: ShardCore, steps: list, activate_at: int) -> None:
    now, seq, users = T0, 0, set()
    for n, step in enumerate(steps):
        if n == activate_at:
            incremental.use(2, workspace())
        if step[0] == "batch":
            _, mpid, events, advance = step
            now += advance
            seq += 1
            chunk = [record(seq, mpid, [event_of(name, now - back, a) for name, back, a in events], now)]
            incremental.apply(chunk, seq - 1)
            fresh.apply(chunk, seq - 1)
            users.add(mpid)
        elif step[0] == "sweep":
            now += step[1]
            incremental.sweep(now, 1000)
        else:
            incremental.backfill(step[1], now)
    incremental.use(2, workspace())
    fresh.use(2, workspace())
    finish_jobs(incremental, now)
    finish_jobs(fresh, now)
    incremental.sweep(now, 1000)
    fresh.sweep(now, 1000)
    for mpid in users:
        # a value stamped at a user's last batch may differ from `now` only by what the sweep refreshed
        assert profile(incremental, mpid).calculated == profile(fresh, mpid).calculated, mpid
        assert set(profile(incremental, mpid).audiences) == set(profile(fresh, mpid).audiences), mpid


def test_lanes_of_membership_rows_are_the_outputs_lanes(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, workspace(), version=1)
    core.apply([record(1, 7, [played(T0), played(T0)], T0)], None)
    assert outbox_lane(partition_of(7, core.forwarders), MEMBERS_OUTPUT) in core.outbox_lanes()


def test_views_show_calculated_values_memberships_and_backfill_progress(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, workspace(), version=1)
    core.apply([record(1, 7, [played(T0), played(T0), bought(T0, 12)], T0)], None)
    shown = core.profile(7)
    assert live_attributes(shown) == {"plays": "2", "spent": "12"}
    detail = user_detail(7, None, shown)
    assert detail["calculated"] == {"plays": "2", "spent": "12"}
    assert set(detail["audiences"]) == {"1", "2"}
    one = {1: {"generation": 2, "done": 3, "total": 4, "finished": False, "eta_s": 5.0}}
    two = {1: {"generation": 2, "done": 4, "total": 4, "finished": True, "eta_s": 0.0}}
    assert backfill_summary([one, two]) == {
        "1": {"generation": 2, "done": 7, "total": 8, "finished": False, "eta_s": 5.0}
    }


# ---- property: evaluating only what a batch changed == evaluating everything ----------------------------------

FACT_AUDIENCES = [
    {"id": 11, "name": "pro", "criteria": {"user_attribute": "plan", "type": "string", "operator": "equals",
                                           "value": "pro"}},
    {"id": 12, "name": "reachable", "criteria": {"identity": "mobile_number"}},
    {"id": 13, "name": "consented", "criteria": {"gdpr_consented": "analytics"}},
    {"id": 14, "name": "not sold", "criteria": {"ccpa_data_sale_opt_out": True}},
    {"id": 15, "name": "spenders", "criteria": {"calculated_attribute": "spent", "type": "number",
                                                "operator": "greater_than", "value": "10"}},
    {"id": 16, "name": "pro players", "criteria": {"all": [{"audience": 11}, {
        "event": {"event_type": "custom_event", "event_name": "Played"}, "count": {"value": 1}, "within_days": 1}]}},
    {"id": 17, "name": "neither", "criteria": {"not": {"any": [{"audience": 13}, {"audience": 15}]}}},
]  # fmt: skip
CONSENT = st.one_of(
    st.none(),
    st.builds(lambda c: {"gdpr": {"analytics": {"consented": c, "timestamp_unixtime_ms": T0}}}, st.booleans()),
    st.builds(lambda c: {"ccpa": {"data_sale_opt_out": {"consented": c, "timestamp_unixtime_ms": T0}}}, st.booleans()),
)
FACT_STEP = st.tuples(
    USERS,
    st.lists(EVENT, max_size=2),
    st.sampled_from([None, "free", "pro"]),  # the plan attribute set (None: not sent)
    st.booleans(),  # a mobile number arrives
    CONSENT,
    st.integers(0, DAY_MS // 2),  # time passes before the batch
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(FACT_STEP, min_size=1, max_size=14))
def test_evaluating_what_a_batch_changed_equals_evaluating_everything(tmp_path_factory: Any, steps: list) -> None:
    """After every batch, the user's CA values and memberships (evaluated only where the batch changed a fact
    they read: attributes, identities, consent, CA values, other audiences, event counts) are what a full
    recomputation of every value and audience from the stored states gives."""
    core = ShardCore(tmp_path_factory.mktemp("facts"), 0, workspace(audiences=FACT_AUDIENCES), version=1)
    try:
        now = T0
        for seq, (mpid, events, plan, mobile, consent, advance) in enumerate(steps, start=1):
            now += advance
            fields: dict[str, Any] = {"user_attributes": {"plan": plan}} if plan else {}
            if mobile:
                fields["user_identities"] = {"customer_id": f"user-{mpid}", "mobile_number": f"+1555{seq:07d}"}
            if consent:
                fields["consent_state"] = consent
            made = [event_of(name, now - back, a) for name, back, a in events]
            core.apply([record(seq, mpid, made, now, **fields)], seq - 1)
            assert_fully_evaluated(core, mpid, now)
    finally:
        core.store.close()


def assert_fully_evaluated(core: ShardCore, mpid: int, now_ms: int) -> None:
    derived = core.derived
    stored = profile(core, mpid)
    with core.store.read() as txn:
        record = derived._read(txn, mpid)
    states = UserStates(record, derived.derivations)
    full, changes = recompute(stored, states.get, derived.derivations, lambda _: True, now_ms)
    assert full.calculated == stored.calculated
    assert set(full.audiences) == set(stored.audiences) and not changes


def test_an_event_without_a_time_is_backfilled_at_its_batchs_time(tmp_path: Path) -> None:
    """The live fold counts events without `timestamp_unixtime_ms` at their batch's time (here its receipt: no
    event has one); the history keeps that time with each, so a backfill counts them in that day (not at 1970)."""
    live = ShardCore(tmp_path / "live", 0, workspace(), version=1)
    later = ShardCore(tmp_path / "later", 0, workspace(cas=[], audiences=[]), version=1)
    untimed = {"event_type": "custom_event", "data": {"event_name": "Played", "custom_event_type": "navigation"}}
    for core in (live, later):
        core.apply([record(1, 5, [untimed, untimed], T0)], None)
    later.use(2, workspace())
    finish_jobs(later, T0 + 1000)
    assert profile(live, 5).calculated["plays"] == profile(later, 5).calculated["plays"] == "2"
