"""Calculated attribute changes without Ray: create (stamps, unique names, definitions validated with the request's
paths), update of the draft (the name read-only once activated), activation (draft → active, generation raised),
discarding the draft, removal (refused while an audience tests the CA); every refusal leaves the configuration as
it was; the v2 documents; the changes through the configuration store and its audit log."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cdp_actors.config import WorkspaceConfig
from cdp_actors.control.changes import (
    ActivateCalculatedAttribute,
    AddCalculatedAttribute,
    DiscardCalculatedAttributeDraft,
    RemoveCalculatedAttribute,
    UpdateCalculatedAttribute,
    apply_change,
    first_next_ids,
)
from cdp_actors.control.owner import ControlCore
from cdp_actors.errors import BadRequest, Conflict, NotFound
from cdp_actors.platform import calculated as ca
from tests.unit.test_platform_api import config_with

AT = "2026-12-01T08:00:00Z"
LATER = "2026-12-01T09:00:00Z"
CLIENT = "api_client:demo-admin"
USER = "user:ada"
COUNT_PURCHASES: dict[str, Any] = {
    "recipe_type": "event",
    "datapoint": {"type": "event", "event_type": "custom_event", "event_name": "Purchase"},
    "conditions": [],
    "calculation_type": "count",
}
SUM_AMOUNT: dict[str, Any] = {
    "data_point": {"type": "event_attribute", "event_type": "custom_event", "event_name": "Purchase",
                   "attribute_name": "amount"},
    "calculation_type": "sum",
    "time_period": {"type": "within", "within": 7, "within_unit": "days"},
}  # fmt: skip


def add(name: str = "Purchases", definition: dict[str, Any] | None = None, **fields: Any) -> AddCalculatedAttribute:
    body = {"name": name, "draft_definition": definition or COUNT_PURCHASES, **fields}
    return AddCalculatedAttribute(fields=body, by=CLIENT, at=AT)


def step(config: WorkspaceConfig, change: Any, next_ids: dict[str, int] | None = None) -> WorkspaceConfig:
    return apply_change(config, change, next_ids or first_next_ids(config)).config


def refused(config: WorkspaceConfig, change: Any, kind: type[Exception] = BadRequest) -> Any:
    """The refusal, after checking the configuration it was applied to is unchanged."""
    before = copy.deepcopy(config.model_dump())
    with pytest.raises(kind) as caught:
        apply_change(config, change, first_next_ids(config))
    assert config.model_dump() == before
    return caught.value


@pytest.fixture
def config() -> WorkspaceConfig:
    return config_with()


@pytest.fixture
def created(config: WorkspaceConfig) -> WorkspaceConfig:
    return step(config, add())


# ---- create ---------------------------------------------------------------------------------------------------


def test_a_new_calculated_attribute_holds_its_draft_and_who_made_it_when(config: WorkspaceConfig) -> None:
    applied = apply_change(config, add(description="how many"), first_next_ids(config))
    item = applied.config.calculated_attributes[0]
    assert applied.target == "calculated_attributes/1" and applied.next_ids["calculated_attributes"] == 2
    assert (item.id, item.name, item.description, item.generation) == (1, "Purchases", "how many", 0)
    assert item.draft_definition is not None and item.active_definition is None
    assert item.draft_definition.data_point.event_name == "Purchase"  # `datapoint` read as data_point
    assert (item.created_by, item.created_on, item.last_modified_by, item.last_modified_on) == (CLIENT, AT, CLIENT, AT)
    assert item.activated_on is None and item.activated_by is None


def test_ids_are_never_reused(created: WorkspaceConfig) -> None:
    applied = apply_change(created, RemoveCalculatedAttribute(id=1), {"calculated_attributes": 2})
    again = apply_change(applied.config, add("Again"), applied.next_ids)
    assert [c.id for c in again.config.calculated_attributes] == [2]


def test_a_store_without_a_counter_for_the_section_takes_one_past_the_largest_id(created: WorkspaceConfig) -> None:
    ids = {name: n for name, n in first_next_ids(created).items() if name != "calculated_attributes"}
    assert [c.id for c in step(created, add("Second"), ids).calculated_attributes] == [1, 2]


def test_names_are_unique(created: WorkspaceConfig) -> None:
    error = refused(created, add("Purchases", SUM_AMOUNT), Conflict)
    assert "Purchases" in error.message


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"draft_definition": COUNT_PURCHASES}, "$.name"),
        ({"name": "", "draft_definition": COUNT_PURCHASES}, "$.name"),
        ({"name": "x" * 257, "draft_definition": COUNT_PURCHASES}, "$.name"),
        ({"name": "n", "draft_definition": COUNT_PURCHASES, "generation": 4}, "$.generation"),
        ({"name": "n", "draft_definition": {**COUNT_PURCHASES, "calculation_type": "median"}},
         "$.draft_definition.calculation_type"),
        ({"name": "n", "draft_definition": {"calculation_type": "count"}}, "$.draft_definition.data_point"),
        ({"name": "n", "draft_definition": {**COUNT_PURCHASES, "conditions": [
            {"type": "number", "operator": "sideways", "attribute_name": "a", "value": "1"}]}},
         "$.draft_definition.conditions[0].operator"),
        ({"name": "n", "draft_definition": {**SUM_AMOUNT, "time_period": {"type": "all"}}},
         "$.draft_definition.time_period.type"),
        ({"name": "${HOME}", "draft_definition": COUNT_PURCHASES}, "$.name"),
    ],
)  # fmt: skip
def test_a_bad_create_is_refused_naming_the_field(config: WorkspaceConfig, fields: dict[str, Any], path: str) -> None:
    error = refused(config, AddCalculatedAttribute(fields=fields, by=CLIENT, at=AT))
    assert error.path == path, error.message


# ---- update, activate, discard ---------------------------------------------------------------------------------


def test_an_update_changes_the_draft_and_the_modification_stamps_only(created: WorkspaceConfig) -> None:
    change = UpdateCalculatedAttribute(id=1, fields={"draft_definition": SUM_AMOUNT, "description": "d"}, by=USER,
                                       at=LATER)  # fmt: skip
    item = step(created, change).calculated_attributes[0]
    assert item.draft_definition is not None and item.draft_definition.calculation_type == "sum"
    assert item.description == "d" and item.name == "Purchases" and item.active_definition is None
    assert (item.created_by, item.created_on, item.last_modified_by, item.last_modified_on) == (CLIENT, AT, USER, LATER)


def test_the_name_changes_before_the_first_activation_only(created: WorkspaceConfig) -> None:
    renamed = step(created, UpdateCalculatedAttribute(id=1, fields={"name": "Orders"}, by=USER, at=LATER))
    assert renamed.calculated_attributes[0].name == "Orders"
    active = step(created, ActivateCalculatedAttribute(id=1, by=USER, at=LATER))
    error = refused(active, UpdateCalculatedAttribute(id=1, fields={"name": "Orders"}, by=USER, at=LATER))
    assert error.path == "$.name" and "read-only" in error.message
    same_name = UpdateCalculatedAttribute(id=1, fields={"name": "Purchases", "description": "x"}, by=USER, at=LATER)
    assert step(active, same_name).calculated_attributes[0].description == "x"


def test_an_update_may_not_take_another_calculated_attributes_name(created: WorkspaceConfig) -> None:
    two = step(created, add("Amount", SUM_AMOUNT))
    refused(two, UpdateCalculatedAttribute(id=2, fields={"name": "Purchases"}, by=USER, at=LATER), Conflict)


def test_an_update_sets_only_its_fields(created: WorkspaceConfig) -> None:
    for fields, path in [({"active_definition": COUNT_PURCHASES}, "$.active_definition"), ({"id": 9}, "$.id"),
                         ({"draft_definition": {**COUNT_PURCHASES, "recipe_type": "user"}},
                          "$.draft_definition.recipe_type")]:  # fmt: skip
        assert refused(created, UpdateCalculatedAttribute(id=1, fields=fields, by=USER, at=LATER)).path == path


def test_activation_moves_the_draft_and_raises_the_generation(created: WorkspaceConfig) -> None:
    item = step(created, ActivateCalculatedAttribute(id=1, by=USER, at=LATER)).calculated_attributes[0]
    assert item.draft_definition is None and item.active_definition is not None
    assert item.active_definition.calculation_type == "count" and item.generation == 1
    assert (item.activated_by, item.activated_on, item.last_modified_by) == (USER, LATER, USER)
    active = step(created, ActivateCalculatedAttribute(id=1, by=USER, at=LATER))
    redrafted = step(active, UpdateCalculatedAttribute(id=1, fields={"draft_definition": SUM_AMOUNT}, by=USER, at=AT))
    both = redrafted.calculated_attributes[0]
    assert both.active_definition is not None and both.active_definition.calculation_type == "count"
    again = step(redrafted, ActivateCalculatedAttribute(id=1, by=CLIENT, at=AT)).calculated_attributes[0]
    assert again.generation == 2 and again.active_definition is not None
    assert again.active_definition.calculation_type == "sum" and again.activated_by == CLIENT


def test_activation_without_a_draft_is_refused(created: WorkspaceConfig) -> None:
    active = step(created, ActivateCalculatedAttribute(id=1, by=USER, at=LATER))
    assert refused(active, ActivateCalculatedAttribute(id=1, by=USER, at=LATER)).path == "$.draft_definition"


def test_discarding_the_draft_keeps_the_active_definition(created: WorkspaceConfig) -> None:
    active = step(created, ActivateCalculatedAttribute(id=1, by=USER, at=LATER))
    redrafted = step(active, UpdateCalculatedAttribute(id=1, fields={"draft_definition": SUM_AMOUNT}, by=USER, at=AT))
    item = step(redrafted, DiscardCalculatedAttributeDraft(id=1, by=CLIENT, at=LATER)).calculated_attributes[0]
    assert item.draft_definition is None and item.active_definition == active.calculated_attributes[0].active_definition
    assert item.generation == 1 and item.last_modified_by == CLIENT
    refused(step(redrafted, DiscardCalculatedAttributeDraft(id=1, by=USER, at=AT)),
            DiscardCalculatedAttributeDraft(id=1, by=USER, at=AT), NotFound)  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        UpdateCalculatedAttribute(id=7, fields={"description": "x"}, by=USER, at=AT),
        ActivateCalculatedAttribute(id=7, by=USER, at=AT),
        DiscardCalculatedAttributeDraft(id=7, by=USER, at=AT),
        RemoveCalculatedAttribute(id=7),
    ],
)
def test_an_unknown_id_is_not_found(created: WorkspaceConfig, change: Any) -> None:
    refused(created, change, NotFound)


# ---- remove ----------------------------------------------------------------------------------------------------


def with_audience(config: WorkspaceConfig, criteria: dict[str, Any]) -> WorkspaceConfig:
    document = config.model_dump(mode="json")
    document["audiences"] = [{"id": 4, "name": "Buyers", "criteria": criteria}]
    return WorkspaceConfig.model_validate(document)


def test_removal_is_refused_while_an_audience_tests_the_calculated_attribute(created: WorkspaceConfig) -> None:
    leaf = {"calculated_attribute": "Purchases", "type": "number", "operator": "greater_than", "value": "2"}
    deep = {"all": [{"identity": "email"}, {"not": {"any": [leaf]}}]}
    error = refused(with_audience(created, deep), RemoveCalculatedAttribute(id=1), Conflict)
    assert "[4]" in error.message
    other = with_audience(step(created, add("Other")), {"calculated_attribute": "Other", "type": "string",
                                                        "operator": "exists"})  # fmt: skip
    assert [c.name for c in step(other, RemoveCalculatedAttribute(id=1)).calculated_attributes] == ["Other"]
    assert ca.audience_count(with_audience(created, deep), "Purchases") == 1


# ---- the v2 documents --------------------------------------------------------------------------------------------


def test_the_document_is_the_v2_object_with_data_point_spelled_so(created: WorkspaceConfig) -> None:
    active = step(created, ActivateCalculatedAttribute(id=1, by=USER, at=LATER))
    document = ca.calculated_attribute_document(active, active.calculated_attributes[0])
    assert set(document) == {"id", "name", "description", "created_by", "created_on", "last_modified_on",
                             "last_modified_by", "active_definition", "draft_definition", "audience_count",
                             "activated_on", "activated_by", "calculation_status"}  # fmt: skip
    assert document["active_definition"]["data_point"]["event_name"] == "Purchase"
    assert "datapoint" not in document["active_definition"] and document["draft_definition"] is None
    assert ca.activation_document(active.calculated_attributes[0]) == {
        "calculated_attribute_id": 1, "is_active": True, "activated_on": LATER, "activated_by": USER}  # fmt: skip
    assert ca.activation_document(created.calculated_attributes[0])["is_active"] is False


def test_calculation_status_sums_the_shards_backfill_of_the_current_generation(created: WorkspaceConfig) -> None:
    draft = created.calculated_attributes[0]
    assert ca.calculation_status(draft, [])["state"] == "draft"
    item = step(created, ActivateCalculatedAttribute(id=1, by=USER, at=LATER)).calculated_attributes[0]
    running = [{1: {"generation": 1, "done": 10, "total": 40, "finished": False, "eta_s": 3.0}},
               {1: {"generation": 1, "done": 50, "total": 50, "finished": True, "eta_s": 0}},
               {1: {"generation": 0, "done": 0, "total": 99, "finished": False, "eta_s": 80}}]  # fmt: skip
    assert ca.calculation_status(item, running) == {"state": "calculating", "done": 60, "total": 90, "eta_s": 3.0}
    done = [{1: {"generation": 1, "done": 40, "total": 40, "finished": True, "eta_s": 0}}]
    assert ca.calculation_status(item, done) == {"state": "active", "done": 40, "total": 40, "eta_s": 0}
    assert ca.calculation_status(item, [])["state"] == "active"  # no shard reports a backfill of it


# ---- request bodies ----------------------------------------------------------------------------------------------


def test_a_create_body_takes_draft_definition_or_definition() -> None:
    change, renames = ca.new_calculated_attribute({"name": "n", "definition": COUNT_PURCHASES}, CLIENT, AT)
    assert change.fields == {"name": "n", "draft_definition": COUNT_PURCHASES} and renames
    change, renames = ca.new_calculated_attribute({"name": "n", "draft_definition": COUNT_PURCHASES,
                                                   "description": "d"}, USER, AT)  # fmt: skip
    assert change.fields["description"] == "d" and not renames and (change.by, change.at) == (USER, AT)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ([], "$"),
        ({"draft_definition": COUNT_PURCHASES}, "$.name"),
        ({"name": 3, "draft_definition": COUNT_PURCHASES}, "$.name"),
        ({"name": "n"}, "$.draft_definition"),
        ({"name": "n", "definition": "count"}, "$.definition"),
        ({"name": "n", "definition": COUNT_PURCHASES, "draft_definition": COUNT_PURCHASES}, "$.definition"),
        ({"name": "n", "draft_definition": COUNT_PURCHASES, "colour": "red"}, "$.colour"),
        ({"name": "n", "draft_definition": COUNT_PURCHASES, "active_definition": {}}, "$.active_definition"),
        ({"name": "n", "draft_definition": COUNT_PURCHASES, "description": "d" * 1001}, "$.description"),
    ],
)
def test_a_bad_create_body_is_refused_naming_the_field(body: Any, path: str) -> None:
    with pytest.raises(BadRequest) as error:
        ca.new_calculated_attribute(body, CLIENT, AT)
    assert error.value.path == path


def test_an_update_body_needs_something_to_change_and_ignores_read_only_fields() -> None:
    with pytest.raises(BadRequest):
        ca.changed_calculated_attribute({"id": 1, "created_by": "x"}, 1, USER, AT)
    change, _ = ca.changed_calculated_attribute({"id": 1, "description": "d"}, 1, USER, AT)
    assert change.fields == {"description": "d"}


def test_now_iso_is_utc_with_z() -> None:
    assert ca.now_iso().endswith("Z") and len(ca.now_iso()) == len(AT)


# ---- through the store ----------------------------------------------------------------------------------------------


def test_the_store_keeps_calculated_attributes_and_audits_each_change(tmp_path: Any, config: WorkspaceConfig) -> None:
    core = ControlCore(tmp_path)
    try:
        core.seed(config)
        core.apply(add(definition={**SUM_AMOUNT, "time_period": {"type": "since", "date": "2026-01-01T00:00:00"}}),
                   None, CLIENT)  # fmt: skip
        core.apply(ActivateCalculatedAttribute(id=1, by=USER, at=LATER), None, USER)
        with pytest.raises(Conflict):
            core.apply(add(), None, CLIENT)
        core.apply(RemoveCalculatedAttribute(id=1), None, USER)
        core.store._held = None  # read the stored snapshots back, not the held configuration
        assert core.current()[1].calculated_attributes == []
        activated = core.store.snapshot(core.current()[0] - 1).calculated_attributes[0]
        assert activated.generation == 1 and activated.active_definition is not None
        entries = core.audit_page(order="asc").entries
        actions = [(e.actor, e.action, e.target) for e in entries if e.target.startswith("calculated")]
        assert actions == [(CLIENT, "create", "calculated_attribute:1"), (USER, "update", "calculated_attribute:1"),
                           (USER, "delete", "calculated_attribute:1")]  # fmt: skip
    finally:
        core.close()
