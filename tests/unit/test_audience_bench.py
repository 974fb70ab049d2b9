"""The pure parts of `cdp bench audiences`: the workspace it runs, the probe adds it reads, its figures."""

from __future__ import annotations

from pathlib import Path

from benchmarks.audiences import (
    CA_DEFINITIONS,
    MEMBERSHIP_OUTPUT_ID,
    PROBE_AUDIENCE_ID,
    HistoryWorkload,
    derived_workspace,
    membership_latencies_ms,
    probe_adds,
)
from benchmarks.servers import percentiles
from cdp_actors.audiences.criteria import check_node, referenced_calculated_attributes
from cdp_actors.calculated.definition import CALCULATION_TYPES
from cdp_actors.config import load_workspace
from cdp_actors.integrations.base import MembershipChange
from cdp_actors.integrations.firehose import audience_membership_change_request

DEMO = Path(__file__).resolve().parents[2] / "configs" / "workspace.yaml"


def test_the_derived_workspace_is_valid_and_as_the_issue_asks() -> None:
    config = derived_workspace(load_workspace(DEMO), "http://127.0.0.1:1/members", probe=True)
    cas = config.active_calculated_attributes()
    assert len(cas) == 20
    assert {ca.active_definition.calculation_type for ca in cas if ca.active_definition} == set(CALCULATION_TYPES)
    windows = [ca for ca in cas if ca.active_definition and ca.active_definition.time_period]
    assert len(windows) == 10 and all(ca.active_definition.time_period.type == "within" for ca in windows)  # type: ignore[union-attr]
    audiences = config.real_time_audiences()
    assert len(audiences) == 21 and audiences[-1].id == PROBE_AUDIENCE_ID
    assert all(a.connected_outputs == [MEMBERSHIP_OUTPUT_ID] for a in audiences)
    used = set().union(*(referenced_calculated_attributes(a.criteria) for a in audiences))
    assert used <= {ca.name for ca in cas} and len(used) >= 8
    for audience in audiences:
        check_node(audience.criteria)
    assert config.inputs[0].clear_secret() == "demo-secret"  # the secrets survive the rebuild
    assert len(CA_DEFINITIONS) == 20


def test_probe_adds_are_read_from_the_firehose_membership_request() -> None:
    def change(audience: int, mpid: int, user: str, action: str) -> MembershipChange:
        return MembershipChange(audience, "a", mpid, action, {"customer_id": user, "email": "x@y.z"}, 1)

    body = audience_membership_change_request(
        [change(PROBE_AUDIENCE_ID, 1, "probe-1", "add"), change(901, 2, "probe-2", "add"),
         change(PROBE_AUDIENCE_ID, 3, "probe-3", "delete"), change(PROBE_AUDIENCE_ID, 4, "probe-4", "add")],
        {"account_id": 1},
    )  # fmt: skip
    assert sorted(probe_adds(body)) == ["probe-1", "probe-4"]
    assert sorted(probe_adds([body])) == ["probe-1", "probe-4"]


def test_latency_figures() -> None:
    latencies, missing = membership_latencies_ms({"probe-1": 10.0, "probe-2": 11.0, "probe-3": 12.0},
                                                 {"probe-1": 10.25, "probe-2": 12.5})  # fmt: skip
    assert sorted(latencies) == [250.0, 1500.0] and missing == 1
    assert percentiles(latencies)["p50"] == 1500.0


def test_the_history_workload_visits_every_user() -> None:
    workload = HistoryWorkload(250)
    users = [workload.batch(0)["user_identities"]["customer_id"] for _ in range(250)]
    assert len(set(users)) == 250
