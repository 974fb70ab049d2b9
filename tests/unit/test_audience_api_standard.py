"""Standard audiences without Ray: one shard's members read from its LMDB store (profiles written by the shard's own
apply), checked against a plain evaluation of the users as generated; a run's CSV, its summary and its members read
back; the identity columns a request chooses."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp_actors.audiences.standard import (
    DEFAULT_IDENTITIES,
    Member,
    StandardRun,
    identity_columns,
    latest_run,
    run_members,
    standard_members,
    write_run,
)
from cdp_actors.config import Audience
from cdp_actors.errors import BadRequest
from cdp_actors.profiles.shard import ShardCore
from cdp_actors.schema.records import ShardRecord
from tests.conftest import demo_config

NOW_MS = 1_764_547_200_000
PLANS = ("gold", "silver", None)


DAY_MS = 86_400_000


class User:
    """A generated user: what its batches say, and what the oracle reads. Events are clearly inside a week (1 to 5
    days ago) or clearly outside it (10 to 30 days ago), so the oracle need not know how a window meets day ends."""

    def __init__(self, mpid: int, plan: str | None, email: bool, consented: bool | None, opted_out: bool | None,
                 recent: tuple[int, ...] = (), old: tuple[int, ...] = ()) -> None:  # fmt: skip
        self.mpid, self.plan, self.email, self.consented, self.opted_out = mpid, plan, email, consented, opted_out
        self.recent, self.old = recent, old

    def batch(self) -> dict[str, Any]:
        times = [NOW_MS - days * DAY_MS for days in (*self.recent, *self.old)]
        played = [{"event_type": "custom_event", "data": {"event_name": "Played", "custom_event_type": "navigation",
                                                          "timestamp_unixtime_ms": t}} for t in times]  # fmt: skip
        body: dict[str, Any] = {"environment": "production", "events": played,
                                "user_identities": {"customer_id": f"c{self.mpid}"}}  # fmt: skip
        if self.email:
            body["user_identities"]["email"] = f"u{self.mpid}@example.com"
        if self.plan:
            body["user_attributes"] = {"plan": self.plan}
        consent: dict[str, Any] = {}
        if self.consented is not None:
            consent["gdpr"] = {"marketing": {"consented": self.consented, "timestamp_unixtime_ms": NOW_MS}}
        if self.opted_out is not None:
            consent["ccpa"] = {"data_sale_opt_out": {"consented": self.opted_out, "timestamp_unixtime_ms": NOW_MS}}
        if consent:
            body["consent_state"] = consent
        return body


def stored(path: Path, users: list[User]) -> ShardCore:
    core = ShardCore(path, 0, demo_config("http://127.0.0.1:9/webhook"))
    records = [
        ShardRecord(n + 1, n + 1, u.mpid, 1, NOW_MS, json.dumps(u.batch()).encode()) for n, u in enumerate(users)
    ]
    core.apply(records, None)
    return core


def audience(criteria: Any) -> Audience:
    return Audience(id=7, name="Standard", kind="standard", criteria=criteria)


GOLD = {"user_attribute": "plan", "type": "string", "operator": "equals", "value": "gold"}
CRITERIA: dict[str, tuple[Any, Any]] = {  # criteria and the oracle's reading of them
    "gold": (GOLD, lambda u: u.plan == "gold"),
    "no plan": ({"user_attribute": "plan", "type": "string", "operator": "not_exists"}, lambda u: u.plan is None),
    "email": ({"identity": "email"}, lambda u: u.email),
    "gold or email": ({"any": [GOLD, {"identity": "email"}]}, lambda u: u.plan == "gold" or u.email),
    "gold without email": ({"all": [GOLD, {"not": {"identity": "email"}}]}, lambda u: u.plan == "gold" and not u.email),
    "consented": ({"gdpr_consented": "marketing"}, lambda u: u.consented is True),
    "opted out": ({"ccpa_data_sale_opt_out": True}, lambda u: u.opted_out is True),
    "not opted out": ({"ccpa_data_sale_opt_out": False}, lambda u: u.opted_out is not True),
    "played twice this week": (
        {
            "event": {"event_name": "Played", "custom_event_type": "navigation"},
            "count": {"operator": "at_least", "value": 2},
            "within_days": 7,
        },
        lambda u: len(u.recent) >= 2,
    ),  # fmt: skip
    "gold, played at most once this week": (
        {
            "all": [
                GOLD,
                {"event": {"event_name": "Played"}, "count": {"operator": "at_most", "value": 1}, "within_days": 7},
            ]
        },
        lambda u: u.plan == "gold" and len(u.recent) <= 1,
    ),  # fmt: skip
}

users_strategy = st.lists(
    st.builds(
        User,
        st.integers(1, 10**6),
        st.sampled_from(PLANS),
        st.booleans(),
        st.sampled_from([None, True, False]),
        st.sampled_from([None, True, False]),
    ),  # fmt: skip
    max_size=12,
    unique_by=lambda u: u.mpid,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(users=users_strategy, name=st.sampled_from(sorted(CRITERIA)))
def test_a_shards_members_are_the_users_the_criteria_hold_for(users: list[User], name: str):
    criteria, oracle = CRITERIA[name]
    with tempfile.TemporaryDirectory() as directory:
        core = stored(Path(directory) / "shard-0", users)
        try:
            members = standard_members(core.store, audience(criteria), NOW_MS, ["email"])
        finally:
            core.store.close()
    assert sorted(m.mpid for m in members) == sorted(u.mpid for u in users if oracle(u))
    by_mpid = {u.mpid: u for u in users}
    for member in members:  # only the identity types asked for
        expected = {"email": f"u{member.mpid}@example.com"} if by_mpid[member.mpid].email else {}
        assert member.identities == expected


def test_event_counts_are_the_engines_over_the_whole_kept_history(tmp_path: Path):
    gold = ("gold", False, None, None)
    users = [User(1, None, False, None, None, (1, 2)), User(2, *gold, (1,), (20,)), User(3, *gold, (), (12, 15, 29)),
             User(4, *gold, (1, 3, 4))]  # fmt: skip
    core = stored(tmp_path / "shard-0", users)
    try:
        for name, expected in (("played twice this week", [1, 4]), ("gold, played at most once this week", [2, 3])):
            members = standard_members(core.store, audience(CRITERIA[name][0]), NOW_MS)
            assert sorted(m.mpid for m in members) == expected, name
    finally:
        core.store.close()


def test_membership_of_a_real_time_audience_reads_the_profile(tmp_path: Path):
    core = stored(tmp_path / "shard-0", [User(1, "gold", True, None, None), User(2, "gold", True, None, None)])
    try:
        from cdp_actors.profiles.model import decode_profile, encode_profile
        from cdp_actors.storage.lmdb_env import mpid_key

        with core.store.write() as txn:  # as the shard records a real-time membership
            profiles = core.store.db("profiles")
            raw = txn.get(mpid_key(2), db=profiles)
            assert raw is not None
            profile = decode_profile(raw)
            profile.audiences = {3: NOW_MS}
            txn.put(mpid_key(2), encode_profile(profile), db=profiles)
        members = standard_members(core.store, audience({"all": [GOLD, {"audience": 3}]}), NOW_MS)
    finally:
        core.store.close()
    assert [(m.mpid, m.identities) for m in members] == [(2, {"customer_id": "c2", "email": "u2@example.com"})]


# ---- a run and its result ------------------------------------------------------------------------------------------


def test_a_run_counts_shards_then_writes_its_csv_and_summary(tmp_path: Path):
    run = StandardRun(tmp_path, audience(GOLD), 2, ["email", "customer_id"], NOW_MS)
    assert run.progress() == {"state": "running", "shards_done": 0, "shards_total": 2, "started_at_ms": NOW_MS}
    run.shard_done([Member(5, {"email": "e5", "customer_id": "c5"})])
    assert latest_run(tmp_path, 7) is None  # nothing durable before the last shard
    run.shard_done([Member(-3, {"customer_id": "c,3"})])
    result = run.finish()
    assert run.progress()["state"] == "done" and (result.size, result.calculated_at_ms) == (2, NOW_MS)
    assert latest_run(tmp_path, 7) == result
    with open(tmp_path / result.csv_file, newline="") as file:
        assert list(csv.reader(file)) == [["mpid", "email", "customer_id"], ["-3", "", "c,3"], ["5", "e5", "c5"]]
    assert run_members(tmp_path, result) == [
        Member(-3, {"customer_id": "c,3"}),
        Member(5, {"email": "e5", "customer_id": "c5"}),
    ]
    later = write_run(tmp_path, 7, [], ["email"], NOW_MS + 1)
    assert latest_run(tmp_path, 7) == later and latest_run(tmp_path, 70) is None
    write_run(tmp_path, 70, [], ["email"], NOW_MS + 2)
    assert latest_run(tmp_path, 7) == later  # audience 70's runs are not audience 7's


def test_identity_columns_are_known_types_in_the_order_asked():
    assert identity_columns(None) == list(DEFAULT_IDENTITIES) == identity_columns(" ")
    assert identity_columns("email,customerid,email,ios_idfv") == ["email", "customer_id", "ios_idfv"]
    for bad in ("email,shoe_size", ",".join(f"other_id_{n}" for n in range(2, 11)) + ",email,customer_id"):
        with pytest.raises(BadRequest) as refused:
            identity_columns(bad)
        assert refused.value.path == "identities"
