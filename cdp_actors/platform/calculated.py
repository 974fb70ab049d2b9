"""Calculated attributes as the Platform API v2 shows them, and its request bodies as configuration changes
(https://docs.mparticle.com/developers/apis/platform/calculated-attributes/).

The object: `id, name, description, created_by, created_on, last_modified_on, last_modified_by, active_definition,
draft_definition, audience_count, activated_on, activated_by`, definitions written with `data_point` (read with
`datapoint` too), plus ours, `calculation_status`: `{state: draft | calculating | active, done, total, eta_s}` from
the shards' backfill of the active definition.

The v2 resources answer without the v1 `data` envelope and take no `?accountId=`: a list is a JSON array, an object
an object, a create the new integer id. A workspace id other than ours is a 404, as an entity outside the caller's
scope is in v1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from cdp_actors.audiences.criteria import referenced_calculated_attributes
from cdp_actors.calculated.definition import Definition
from cdp_actors.config import CalculatedAttribute, Workspace, WorkspaceConfig
from cdp_actors.control.changes import AddCalculatedAttribute, UpdateCalculatedAttribute
from cdp_actors.errors import BadRequest, NotFound

WRITABLE_FIELDS = frozenset({"name", "description", "draft_definition", "definition"})
"""What a create or update body sets: `definition` is accepted for `draft_definition`."""
READ_ONLY_FIELDS = frozenset({"id", "created_by", "created_on", "last_modified_on", "last_modified_by",
                              "audience_count", "activated_on", "activated_by", "calculation_status"})  # fmt: skip
"""Fields of the object a client may send back as a GET gave them (a read-modify-write PUT): ignored."""
MAX_DESCRIPTION_CHARS = 1000
BackfillProgress = Mapping[int, Mapping[str, Any]]
"""One shard's `backfill_status()`: per CA id, `{"generation", "done", "total", "finished", "eta_s"}`."""


def now_iso(now: datetime | None = None) -> str:
    """ISO 8601 UTC to the second, as the v2 object's `created_on` and the like are written."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- reading -------------------------------------------------------------------------------------------------


def check_workspace(workspace_id: int, workspace: Workspace) -> None:
    if workspace_id != workspace.workspace_id:
        raise NotFound(f"No workspace {workspace_id}.")


def calculated_attribute_of(config: WorkspaceConfig, ca_id: int) -> CalculatedAttribute:
    found = next((ca for ca in config.calculated_attributes if ca.id == ca_id), None)
    if found is None:
        raise NotFound(f"No calculated attribute with id {ca_id}.")
    return found


def named(config: WorkspaceConfig, name: str | None) -> list[CalculatedAttribute]:
    """The calculated attributes, or the one named `name` (`?name=`, compared exactly)."""
    return [ca for ca in config.calculated_attributes if name is None or ca.name == name]


def definition_document(definition: Definition | None) -> dict[str, Any] | None:
    return None if definition is None else definition.model_dump(mode="json")


def audience_count(config: WorkspaceConfig, name: str) -> int:
    return sum(name in referenced_calculated_attributes(a.criteria) for a in config.audiences)


def calculation_status(item: CalculatedAttribute, progress: Iterable[BackfillProgress]) -> dict[str, Any]:
    """How far the shards are with the active definition: `draft` before the first activation; `calculating` while
    a shard backfills the current generation from its stored history; `active` when every shard that reports it is
    done. A shard that reports nothing of this CA (it has no backfill of it running, or no such report at all)
    counts as done with nothing to do."""
    if item.active_definition is None:
        return {"state": "draft", "done": 0, "total": 0, "eta_s": None}
    reports = [p[item.id] for p in progress if item.id in p and p[item.id].get("generation") == item.generation]
    done = sum(int(r.get("done", 0)) for r in reports)
    total = sum(int(r.get("total", 0)) for r in reports)
    finished = all(bool(r.get("finished")) for r in reports)
    etas = [float(r["eta_s"]) for r in reports if r.get("eta_s") is not None and not r.get("finished")]
    return {"state": "active" if finished else "calculating", "done": done, "total": total,
            "eta_s": max(etas) if etas else (None if not finished else 0)}  # fmt: skip


def calculated_attribute_document(
    config: WorkspaceConfig, item: CalculatedAttribute, progress: Iterable[BackfillProgress] = ()
) -> dict[str, Any]:
    return {
        "id": item.id,
        "name": item.name,
        "description": item.description,
        "created_by": item.created_by,
        "created_on": item.created_on,
        "last_modified_on": item.last_modified_on,
        "last_modified_by": item.last_modified_by,
        "active_definition": definition_document(item.active_definition),
        "draft_definition": definition_document(item.draft_definition),
        "audience_count": audience_count(config, item.name),
        "activated_on": item.activated_on,
        "activated_by": item.activated_by,
        "calculation_status": calculation_status(item, progress),
    }


def activation_document(item: CalculatedAttribute) -> dict[str, Any]:
    return {"calculated_attribute_id": item.id, "is_active": item.active_definition is not None,
            "activated_on": item.activated_on, "activated_by": item.activated_by}  # fmt: skip


# ---- writing -------------------------------------------------------------------------------------------------


def _fields(body: Any, creating: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields a body sets, and how to rename a refusal's path back to the body's (`definition` for
    `draft_definition`, when the client wrote it so)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", "$")
    unknown = sorted(set(body) - WRITABLE_FIELDS - READ_ONLY_FIELDS)
    if "active_definition" in unknown:
        raise BadRequest("active_definition is read-only: change the draft, then activate it", "$.active_definition")
    if unknown:
        raise BadRequest(f"unknown field; allowed: {', '.join(sorted(WRITABLE_FIELDS))}", f"$.{unknown[0]}")
    if "definition" in body and "draft_definition" in body:
        raise BadRequest("send the definition once, as draft_definition (or definition)", "$.definition")
    fields: dict[str, Any] = {}
    if creating or "name" in body:
        fields["name"] = _text(body, "name", required=True)
    if "description" in body:
        fields["description"] = _text(body, "description", required=False)
    definition_key = "definition" if "definition" in body else "draft_definition"
    if body.get(definition_key) is not None:
        if not isinstance(body[definition_key], dict):
            raise BadRequest("must be a JSON object", f"$.{definition_key}")
        fields["draft_definition"] = body[definition_key]
    elif creating:
        raise BadRequest("draft_definition is required", f"$.{definition_key}")
    renames = {"$.draft_definition": "$.definition"} if definition_key == "definition" else {}
    if not fields:
        raise BadRequest("nothing to change: send name, description and/or draft_definition", "$")
    return fields, renames


def _text(body: Mapping[str, Any], field: str, required: bool) -> str:
    value = body.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{field} is required" if value is None else f"{field} must be a string", f"$.{field}")
    if required and not value.strip():
        raise BadRequest(f"{field} must not be empty", f"$.{field}")
    if field == "description" and len(value) > MAX_DESCRIPTION_CHARS:
        raise BadRequest(f"description is at most {MAX_DESCRIPTION_CHARS} characters", "$.description")
    return value


def new_calculated_attribute(body: Any, by: str, at: str) -> tuple[AddCalculatedAttribute, dict[str, str]]:
    """`{name, description, draft_definition}` (or `definition`) → the change, and the refusal paths' renames."""
    fields, renames = _fields(body, creating=True)
    return AddCalculatedAttribute(fields=fields, by=by, at=at), renames


def changed_calculated_attribute(
    body: Any, ca_id: int, by: str, at: str
) -> tuple[UpdateCalculatedAttribute, dict[str, str]]:
    fields, renames = _fields(body, creating=False)
    return UpdateCalculatedAttribute(id=ca_id, fields=fields, by=by, at=at), renames
