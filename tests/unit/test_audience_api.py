"""Audiences through the configuration changes and the Platform API's translation, without Ray: add, update, remove,
connect and disconnect, each refusal naming the request's field with nothing changed; references between audiences;
the document the API answers; `audience_memberships` of the Profile API; the shards' counts merged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from cdp_actors.config import WorkspaceConfig, parse_workspace
from cdp_actors.control.changes import (
    AddAudience,
    AddOutput,
    Change,
    ConnectAudience,
    DisconnectAudience,
    RemoveAudience,
    RemoveOutput,
    UpdateAudience,
    UpdateOutput,
    apply_change,
    first_next_ids,
)
from cdp_actors.control.owner import ControlCore
from cdp_actors.errors import BadRequest, Conflict, NotFound
from cdp_actors.platform import audiences as aud
from cdp_actors.profiles.views import profile_api_body
from tests.conftest import demo_config

GOLD = {"user_attribute": "plan", "type": "string", "operator": "equals", "value": "gold"}
AUDIENCE_OUTPUT = {"id": 2, "name": "fb", "kind": "facebook_audience",
                   "settings": {"access_token": "t"}}  # fmt: skip
EVENT_OUTPUT = {"id": 3, "name": "mix", "kind": "mixpanel", "settings": {"project_token": "p"}}


def workspace() -> WorkspaceConfig:
    document = demo_config("http://127.0.0.1:9/webhook").model_dump(mode="json")
    document["inputs"][0]["secret"] = "demo-secret"
    for client, secret in zip(document["api_clients"], ["demo-admin-secret", "demo-client-secret"], strict=False):
        client["client_secret"] = secret
    document["users"] = [{"name": "admin", "role": "admin", "password": "test-admin-password"}]
    return parse_workspace(document)


class Workspace:
    """A configuration and its next ids, changed as the store changes them."""

    def __init__(self, config: WorkspaceConfig | None = None) -> None:
        self.config = config or workspace()
        self.ids = first_next_ids(self.config)

    def apply(self, change: Any) -> WorkspaceConfig:
        applied = apply_change(self.config, change, self.ids)
        self.config, self.ids = applied.config, applied.next_ids
        return applied.config

    def refused(self, change: Any, kind: type[Exception] = BadRequest) -> Any:
        before = self.config
        with pytest.raises(kind) as refused:
            self.apply(change)
        assert self.config is before
        return refused.value

    def add(self, criteria: Any = GOLD, **fields: Any) -> int:
        body = {"name": "Gold users", "criteria": criteria, **fields}
        self.apply(aud.new_audience(body, "api_client:demo-admin", 1_700_000_000_000))
        return self.config.audiences[-1].id


def with_outputs() -> Workspace:
    ws = Workspace()
    ws.apply(AddOutput(fields=AUDIENCE_OUTPUT))
    ws.apply(AddOutput(fields=EVENT_OUTPUT))
    return ws


# ---- add, update, remove ----------------------------------------------------------------------------------------


def test_an_added_audience_has_a_new_id_its_criteria_and_the_callers_stamps():
    ws = Workspace()
    first = ws.add(external_name="gold", kind="standard", workspaces=[1])
    audience = ws.config.audiences[0]
    assert (audience.id, audience.name, audience.external_name, audience.kind) == (
        first,
        "Gold users",
        "gold",
        "standard",
    )
    assert aud.criteria_document(audience) == GOLD
    assert audience.created_by == audience.last_modified_by == "api_client:demo-admin"
    assert audience.created_on == audience.last_modified_on == "2023-11-14T22:13:20.000Z"
    ws.apply(RemoveAudience(id=first))
    assert ws.add() == first + 1  # ids are never reused


def test_an_update_changes_the_given_fields_and_the_last_modified_stamp_only():
    ws = Workspace()
    audience_id = ws.add()
    ws.apply(aud.changed_audience({"name": "Gold"}, audience_id, "user:ada", 1_800_000_000_000))
    audience = ws.config.audiences[0]
    assert (audience.name, aud.criteria_document(audience)) == ("Gold", GOLD)
    assert (audience.created_by, audience.last_modified_by) == ("api_client:demo-admin", "user:ada")
    assert audience.created_on != audience.last_modified_on


@pytest.mark.parametrize(
    ("criteria", "path"),
    [
        ({"all": [GOLD, {"identity": "email"}, {"bogus": 1}]}, "$.criteria.all[2]"),
        ({"not": {"event": {"event_name": "Played"}, "within_days": 0}}, "$.criteria.not.within_days"),
        ({"any": []}, "$.criteria.any"),
        ({"all": [{"any": [GOLD, {**GOLD, "type": "colour"}]}]}, "$.criteria.all[0].any[1].type"),
        (5, "$.criteria"),
        ({"audience": 99}, "$.criteria"),
        ({"all": [GOLD, {"audience": 99}]}, "$.criteria.all[1]"),
        (
            {"not": {"calculated_attribute": "ltv", "type": "number", "operator": "exists"}},
            "$.criteria.not.calculated_attribute",
        ),
    ],
)
def test_bad_criteria_are_refused_naming_the_node_and_nothing_is_stored(criteria: Any, path: str):
    ws = Workspace()
    refused = ws.refused(aud.new_audience({"name": "x", "criteria": criteria}, "a", 0))
    assert refused.path == path, refused
    assert ws.config.audiences == []


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"criteria": GOLD}, "$.name"),
        ({"name": "x"}, "$.criteria"),
        ({"name": "x", "criteria": GOLD, "id": 7}, "$.id"),
        ({"name": "x", "criteria": GOLD, "connected_outputs": [2]}, "$.connected_outputs"),
        ({"name": "x", "criteria": GOLD, "kind": "weekly"}, "$.kind"),
        ({"name": "x", "criteria": GOLD, "workspaces": [2]}, "$.workspaces[0]"),
        ({"name": "x", "criteria": GOLD, "created_by": "someone"}, "$.created_by"),
        ({"name": "${HOME}", "criteria": GOLD}, "$.name"),
        ([], "$"),
    ],
)
def test_a_bad_audience_body_is_refused_naming_its_field(body: Any, path: str):
    ws = Workspace()
    with pytest.raises(BadRequest) as refused:
        ws.apply(aud.new_audience(body, "a", 0))
    assert refused.value.path == path
    assert ws.config.audiences == []


def test_an_unknown_audience_is_not_found():
    ws = Workspace()
    for change in (
        RemoveAudience(id=5),
        UpdateAudience(id=5, fields={"name": "x"}),
        ConnectAudience(id=5, output_id=1),
    ):
        ws.refused(change, NotFound)


# ---- references between audiences ---------------------------------------------------------------------------------


def test_an_audience_another_names_cannot_be_removed_or_turned_standard():
    ws = Workspace()
    gold = ws.add()
    ws.add({"all": [{"identity": "email"}, {"audience": gold}]})
    assert "depends on it" in ws.refused(RemoveAudience(id=gold), Conflict).message
    ws.refused(UpdateAudience(id=gold, fields={"kind": "standard"}), Conflict)
    ws.apply(RemoveAudience(id=ws.config.audiences[1].id))
    ws.apply(RemoveAudience(id=gold))
    assert ws.config.audiences == []


def test_membership_criteria_name_real_time_audiences_and_form_no_cycle():
    ws = Workspace()
    standard = ws.add(kind="standard")
    assert ws.refused(aud.new_audience({"name": "x", "criteria": {"audience": standard}}, "a", 0)).path == "$.criteria"
    first = ws.add()
    second = ws.add({"any": [{"audience": first}]})
    refused = ws.refused(UpdateAudience(id=first, fields={"criteria": {"not": {"audience": second}}}))
    assert (refused.path, "cycle" in refused.message) == ("$.criteria.not", True)
    assert ws.refused(UpdateAudience(id=first, fields={"criteria": {"audience": first}})).path == "$.criteria"


# ---- connections ------------------------------------------------------------------------------------------------


def test_an_audience_connects_to_outputs_that_take_memberships_once_each():
    ws = with_outputs()
    audience_id = ws.add()
    ws.apply(aud.connection_request({"output_id": 2}, audience_id, "user:ada", 0))
    ws.apply(aud.connection_request({"output_id": 1}, audience_id, "user:ada", 0))  # the webhook takes them too
    assert ws.config.audiences[0].connected_outputs == [2, 1]
    assert ws.config.audiences[0].last_modified_by == "user:ada"
    ws.refused(aud.connection_request({"output_id": 2}, audience_id, "a", 0), Conflict)
    assert ws.refused(aud.connection_request({"output_id": 3}, audience_id, "a", 0)).path == "$.output_id"
    assert ws.refused(aud.connection_request({"output_id": 9}, audience_id, "a", 0)).path == "$.output_id"
    for body, path in (({}, "$.output_id"), ({"output_id": "2"}, "$.output_id"), ({"output_id": 2, "x": 1}, "$.x")):
        with pytest.raises(BadRequest) as refused:
            aud.connection_request(body, audience_id, "a", 0)
        assert refused.value.path == path
    ws.apply(aud.disconnection(audience_id, 2, "a", 0))
    assert ws.config.audiences[0].connected_outputs == [1]
    ws.refused(aud.disconnection(audience_id, 2, "a", 0), NotFound)


def test_an_output_an_audience_is_connected_to_is_not_removed_nor_turned_event_only():
    ws = with_outputs()
    audience_id = ws.add()
    ws.apply(ConnectAudience(id=audience_id, output_id=2))
    assert "disconnect" in ws.refused(RemoveOutput(id=2)).message
    ws.refused(UpdateOutput(id=2, fields={"kind": "mixpanel", "settings": {"project_token": "p"}}))
    ws.apply(DisconnectAudience(id=audience_id, output_id=2))
    ws.apply(RemoveOutput(id=2))


# ---- the store: changes cross actors as msgpack, and are audited ---------------------------------------------------


def test_audience_changes_cross_an_actor_call_and_are_audited_by_target(tmp_path: Path):
    changes: list[Change] = [AddAudience(fields={"name": "x", "criteria": GOLD}, by="a", on="t"),
                             UpdateAudience(id=1, fields={"name": "y"}), RemoveAudience(id=1),
                             ConnectAudience(id=1, output_id=2), DisconnectAudience(id=1, output_id=2)]  # fmt: skip
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(changes), type=list[Change]) == changes
    core = ControlCore(tmp_path)
    try:
        core.seed(workspace())
        core.apply(
            aud.new_audience({"name": "Gold", "criteria": GOLD}, "api_client:demo-admin", 0),
            None,
            "api_client:demo-admin",
        )
        _, config = core.apply(RemoveAudience(id=1), None, "user:ada")
        assert config.audiences == []
        entries = core.audit_page().entries
        assert [(e.action, e.target, e.actor) for e in entries[:2]] == [
            ("delete", "audience:1", "user:ada"), ("create", "audience:1", "api_client:demo-admin")]  # fmt: skip
        assert core.current()[1].audiences == []
    finally:
        core.close()


# ---- documents --------------------------------------------------------------------------------------------------


def test_the_document_has_the_platform_api_fields_then_ours():
    ws = with_outputs()
    audience_id = ws.add({"all": [{"not": {"identity": "email"}}, GOLD]}, external_name="gold-ext")
    ws.apply(ConnectAudience(id=audience_id, output_id=2))
    document = aud.audience_document(ws.config.audiences[0], ws.config, size=3)
    assert list(document)[:6] == ["id", "name", "external_name", "is_calculated", "connected_outputs", "workspaces"]
    assert document["is_calculated"] is True and document["kind"] == "real_time"
    assert document["connected_outputs"] == [{"id": 2, "name": "fb", "service": "facebook_audience"}]
    assert document["workspaces"] == [{"id": 1, "name": ws.config.workspace.name}]
    assert document["criteria"] == {"all": [{"not": {"identity": "email"}}, GOLD]}  # as given: `not`, no nulls
    assert document["size"] == 3
    ws.add(kind="standard")
    assert aud.audience_document(ws.config.audiences[1], ws.config)["is_calculated"] is False


def test_sizes_come_from_the_shards_for_real_time_and_the_last_run_for_standard():
    merged = aud.merged_stats([{1: {"size": 2, "adds": {"2026-12-01": 2}, "drops": {}}},
                               {1: {"size": 1, "adds": {"2026-12-01": 1, "2026-12-02": 1}, "drops": {"2026-12-02": 1}}},
                               {}])  # fmt: skip
    assert merged == {1: {"size": 3, "adds": {"2026-12-01": 3, "2026-12-02": 1}, "drops": {"2026-12-02": 1}}}
    ws = Workspace()
    ws.add()
    ws.add(kind="standard")
    real_time, standard = ws.config.audiences
    assert aud.audience_size(real_time, merged, None) == 3
    assert aud.audience_size(real_time, None, None) is None  # the shards do not count yet: unknown
    assert aud.audience_size(real_time, {}, None) == 0
    assert aud.audience_size(standard, merged, None) is None


# ---- the Profile API's audience_memberships ------------------------------------------------------------------------


def test_audience_memberships_name_each_current_audience():
    profile = {"audiences": {3: 1_700_000_000_000, 1: 1_700_000_000_001, 8: 5}}
    body = profile_api_body(42, None, profile, ["audience_memberships"], {1: "Gold", 3: "Churn risk"})
    assert body["audience_memberships"] == [
        {"audience_id": 1, "audience_name": "Gold", "expiration_timestamp_ms": None},
        {"audience_id": 3, "audience_name": "Churn risk", "expiration_timestamp_ms": None},
    ]  # audience 8 was removed from the configuration since: not listed
    by_text = profile_api_body(42, None, {"audiences": {"1": 5}}, ["audience_memberships"], {1: "Gold"})
    assert by_text["audience_memberships"] == [body["audience_memberships"][0]]
    assert profile_api_body(42, None, None, ["audience_memberships"])["audience_memberships"] == []
    assert "audience_memberships" not in profile_api_body(42, None, profile, ["user_attributes"])


def test_an_audience_with_every_kind_of_node_survives_the_stores_restart(tmp_path: Path):
    """The store writes the configuration as plain data and reads it back: a `not` node must read back as one."""
    criteria = {"all": [{"not": {"identity": "email"}}, {"any": [GOLD, {"ccpa_data_sale_opt_out": False}]},
                        {"event": {"event_name": "Played"}, "count": {"operator": "at_most", "value": 2},
                         "within_days": 7}]}  # fmt: skip
    core = ControlCore(tmp_path)
    try:
        core.seed(workspace())
        core.apply(aud.new_audience({"name": "Every node", "criteria": criteria}, "a", 0), None, "a")
        core.apply(UpdateAudience(id=1, fields={"name": "Renamed"}), None, "a")  # merges the stored criteria
    finally:
        core.close()
    reopened = ControlCore(tmp_path)
    try:
        stored = reopened.current()[1].audiences[0]
    finally:
        reopened.close()
    assert stored.name == "Renamed"
    assert aud.criteria_document(stored) == {**criteria, "all": [criteria["all"][0], criteria["all"][1],
                                             {**criteria["all"][2], "event": {"event_name": "Played",
                                              "event_type": "custom_event", "conditions": []}}]}  # fmt: skip
