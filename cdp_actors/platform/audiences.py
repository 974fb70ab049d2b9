"""Audiences as the Platform API shows them (https://docs.mparticle.com/developers/apis/platform/audiences/), and
request bodies as configuration changes.

An audience reads as mParticle lists it: `id`, `name`, `external_name`, `is_calculated` (true when boolean logic
builds it: our real-time audiences, evaluated batch by batch), `connected_outputs` (the output platforms it is
connected to: `{"id", "name", "service"}` each) and `workspaces` (`{"id", "name"}` each); then ours: `kind`
(`real_time` | `standard`), `criteria` (the tree as it was given), `size` when known (a standard audience's last
run, a real-time one's members as the shards count them) and the `created_*` / `last_modified_*` stamps.

A create or update body is `{"name", "external_name", "workspaces", "kind", "criteria"}`; a connection body
`{"output_id"}`. The fields are checked here; the values by the changes module (`cdp_actors/control/changes.py`),
through the configuration's own models.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from cdp_actors.audiences.standard import Member, RunResult, StandardRun
from cdp_actors.config import Audience, WorkspaceConfig
from cdp_actors.control.changes import AUDIENCE_FIELDS, AddAudience, ConnectAudience, DisconnectAudience, UpdateAudience
from cdp_actors.errors import BadRequest, NotFound
from cdp_actors.integrations.base import MembershipChange
from cdp_actors.platform.resources import body_object, only_fields, required

CONNECTION_FIELDS = frozenset({"output_id"})


def stamp(now_ms: int) -> str:
    """When a change was made, as the audience's `created_on` / `last_modified_on` show it (ISO 8601, UTC)."""
    moment = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- reading -------------------------------------------------------------------------------------------------


def audience_of(config: WorkspaceConfig, audience_id: int) -> Audience:
    found = next((a for a in config.audiences if a.id == audience_id), None)
    if found is None:
        raise NotFound(f"No audience with id {audience_id}.")
    return found


def criteria_document(audience: Audience) -> Any:
    return audience.model_dump(mode="json", by_alias=True, exclude_none=True)["criteria"]


def audience_document(audience: Audience, config: WorkspaceConfig, size: int | None = None) -> dict[str, Any]:
    outputs = {o.id: o for o in config.outputs}
    connected = [{"id": i, "name": outputs[i].name, "service": outputs[i].kind}
                 for i in audience.connected_outputs if i in outputs]  # fmt: skip
    workspace = config.workspace
    return {
        "id": audience.id,
        "name": audience.name,
        "external_name": audience.external_name,
        "is_calculated": audience.kind == "real_time",
        "connected_outputs": connected,
        "workspaces": [
            {"id": w, "name": workspace.name if w == workspace.workspace_id else ""} for w in audience.workspaces
        ],  # fmt: skip
        "kind": audience.kind,
        "criteria": criteria_document(audience),
        "size": size,
        "created_by": audience.created_by,
        "created_on": audience.created_on,
        "last_modified_by": audience.last_modified_by,
        "last_modified_on": audience.last_modified_on,
    }


def names_by_id(config: WorkspaceConfig) -> dict[int, str]:
    return {a.id: a.name for a in config.audiences}


# ---- writing -------------------------------------------------------------------------------------------------


def audience_fields(body: Any, creating: bool) -> dict[str, Any]:
    body = body_object(body)
    only_fields(body, AUDIENCE_FIELDS)
    if creating:
        required(body, "name", str)
        if body.get("criteria") is None:
            raise BadRequest("criteria is required", "$.criteria")
    elif not body:
        raise BadRequest(f"nothing to change: send some of {', '.join(sorted(AUDIENCE_FIELDS))}", "$")
    return dict(body)


def new_audience(body: Any, actor: str, now_ms: int) -> AddAudience:
    return AddAudience(fields=audience_fields(body, creating=True), by=actor, on=stamp(now_ms))


def changed_audience(body: Any, audience_id: int, actor: str, now_ms: int) -> UpdateAudience:
    return UpdateAudience(id=audience_id, fields=audience_fields(body, creating=False), by=actor, on=stamp(now_ms))


def connection_request(body: Any, audience_id: int, actor: str, now_ms: int) -> ConnectAudience:
    body = body_object(body)
    only_fields(body, CONNECTION_FIELDS)
    output_id = required(body, "output_id", int)
    return ConnectAudience(id=audience_id, output_id=output_id, by=actor, on=stamp(now_ms))


def disconnection(audience_id: int, output_id: int, actor: str, now_ms: int) -> DisconnectAudience:
    return DisconnectAudience(id=audience_id, output_id=output_id, by=actor, on=stamp(now_ms))


# ---- sizes and standard runs ----------------------------------------------------------------------------------


def merged_stats(reports: list[dict[int, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """The shards' `audience_stats()` summed per audience: `{"size", "adds": {day: n}, "drops": {day: n}}`."""
    merged: dict[int, dict[str, Any]] = {}
    for report in reports:
        for audience_id, stats in report.items():
            into = merged.setdefault(int(audience_id), {"size": 0, "adds": {}, "drops": {}})
            into["size"] += stats.get("size", 0)
            for kind in ("adds", "drops"):
                for day, n in stats.get(kind, {}).items():
                    into[kind][day] = into[kind].get(day, 0) + n
    return merged


def audience_size(audience: Audience, stats: dict[int, dict[str, Any]] | None, last: RunResult | None) -> int | None:
    """A real-time audience's members as the shards count them (None while they do not say); a standard one's
    last run's (None before its first)."""
    if audience.kind == "standard":
        return last.size if last else None
    if stats is None:
        return None
    return stats.get(audience.id, {}).get("size", 0)


def run_document(audience: Audience, run: StandardRun | None, last: RunResult | None) -> dict[str, Any]:
    """A standard audience's calculation: the run in progress (or the last one started here) and the last result."""
    shown: dict[str, Any] = {"audience_id": audience.id}
    shown.update(run.progress() if run else {"state": "done" if last else "never_run"})
    if last is not None:
        shown.update(size=last.size, calculated_at_ms=last.calculated_at_ms, identities=last.identities)
    return shown


def check_standard(audience: Audience) -> None:
    if audience.kind != "standard":
        raise BadRequest(f"audience {audience.id} is real-time: the shards keep its members up to date", "kind")


def membership_adds(audience: Audience, members: list[Member], now_ms: int) -> list[MembershipChange]:
    """A standard audience's members as `add` changes, as audience outputs receive real-time ones."""
    return [MembershipChange(audience.id, audience.name, m.mpid, "add", m.identities, now_ms) for m in members]
