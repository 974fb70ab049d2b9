"""Typed changes to the workspace configuration, applied as pure functions: add, update or remove an input (an
app platform of the Platform API, with its key and secret), an output (a service, with its settings), a
connection, or a console user (by name, with a role and the argon2 hash of a password, never the password).

`apply_change` validates through the same pydantic models that read the YAML file, so a change the file could
not hold is refused the same way; the refusal is a `BadRequest` naming the field of the request at fault
(`$.settings.url`), or a `NotFound` for an id that does not exist, and the configuration it was applied to is
left as it was (it is immutable; nothing is stored until the store commits the result).

Ids are never reused: a removed output's id may still key outbox rows and alerts, so a new output must not
inherit them. The next free id of each section is kept beside the configuration (`NextIds`) and only grows.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
from pydantic import BaseModel, SecretStr, ValidationError

from cdp_actors.access.roles import Role
from cdp_actors.audiences import criteria
from cdp_actors.calculated.definition import Definition
from cdp_actors.config import Audience, CalculatedAttribute, Connection, ConsoleUser, Input, Output, WorkspaceConfig
from cdp_actors.errors import BadRequest, Conflict, NotFound
from cdp_actors.integrations.registry import MODULES, takes_events, takes_memberships

SECTIONS: dict[str, type[BaseModel]] = {"inputs": Input, "outputs": Output, "connections": Connection}
"""The sections changes edit, each with the model of its items."""
ITEM_NAMES = {"inputs": "input", "outputs": "output", "connections": "connection", "audiences": "audience"}
MAX_CHANGED_PATHS = 50
"""Changed paths kept per history entry: a change touches one item, so more means a replaced section; the
count of the rest is kept instead."""

ENV_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
"""What `cdp_actors/envvars.py` expands in secrets (a test checks the two agree)."""

NextIds = Mapping[str, int]
"""Per section, the smallest id no item of it has ever had."""


# ---- the changes ---------------------------------------------------------------------------------------------


class AddItem(msgspec.Struct, frozen=True, kw_only=True):
    """An item to add: its fields as the Platform API received them. Without an `id`, the next free one."""

    section: ClassVar[str]
    fields: dict[str, Any]

    def __repr__(self) -> str:  # the fields may hold secrets: name them, never show them
        return f"{type(self).__name__}(fields=<{', '.join(map(str, self.fields))}>)"


class UpdateItem(msgspec.Struct, frozen=True, kw_only=True):
    """Fields to change on item `id`; the others keep their values. An output's `settings` merge the same way
    (a client need not send a partner secret again to change a URL), unless its `kind` changes."""

    section: ClassVar[str]
    id: int
    fields: dict[str, Any]

    def __repr__(self) -> str:  # the fields may hold secrets: name them, never show them
        return f"{type(self).__name__}(id={self.id}, fields=<{', '.join(map(str, self.fields))}>)"


class RemoveItem(msgspec.Struct, frozen=True, kw_only=True):
    section: ClassVar[str]
    id: int


class AddInput(AddItem, tag="add_input", frozen=True):
    section = "inputs"


class UpdateInput(UpdateItem, tag="update_input", frozen=True):
    section = "inputs"


class RemoveInput(RemoveItem, tag="remove_input", frozen=True):
    section = "inputs"


class AddOutput(AddItem, tag="add_output", frozen=True):
    section = "outputs"


class UpdateOutput(UpdateItem, tag="update_output", frozen=True):
    section = "outputs"


class RemoveOutput(RemoveItem, tag="remove_output", frozen=True):
    section = "outputs"


class AddConnection(AddItem, tag="add_connection", frozen=True):
    section = "connections"


class UpdateConnection(UpdateItem, tag="update_connection", frozen=True):
    section = "connections"


class RemoveConnection(RemoveItem, tag="remove_connection", frozen=True):
    section = "connections"


class AddUser(msgspec.Struct, tag="add_user", frozen=True, kw_only=True):
    """A console user: `name`, `role` and `password_hash` (passwords.hash_password): a change never carries a
    password in clear, so neither the store, its history nor an actor call ever holds one."""

    fields: dict[str, Any]

    def __repr__(self) -> str:
        return f"AddUser(fields=<{', '.join(map(str, self.fields))}>)"


class UpdateUser(msgspec.Struct, tag="update_user", frozen=True, kw_only=True):
    """A new `role` and/or `password_hash` for user `name`. A new hash replaces a password the seed file gave."""

    name: str
    fields: dict[str, Any]

    def __repr__(self) -> str:
        return f"UpdateUser(name={self.name!r}, fields=<{', '.join(map(str, self.fields))}>)"


class RemoveUser(msgspec.Struct, tag="remove_user", frozen=True, kw_only=True):
    name: str


UserChange = AddUser | UpdateUser | RemoveUser


# ---- calculated attributes: the changes ---------------------------------------------------------------------


class AddCalculatedAttribute(msgspec.Struct, tag="add_calculated_attribute", frozen=True, kw_only=True):
    """A new calculated attribute: `name`, `description` and its first `draft_definition` (the Platform API v2
    create body). `by` (`api_client:<id>`, `user:<name>`) and `at` (ISO 8601 UTC) are stamped by the caller, so
    applying a change stays a pure function of the change."""

    fields: dict[str, Any]
    by: str
    at: str


class UpdateCalculatedAttribute(msgspec.Struct, tag="update_calculated_attribute", frozen=True, kw_only=True):
    """New `name` (only before the first activation), `description` and/or `draft_definition` of CA `id`."""

    id: int
    fields: dict[str, Any]
    by: str
    at: str


class RemoveCalculatedAttribute(msgspec.Struct, tag="remove_calculated_attribute", frozen=True, kw_only=True):
    id: int


class ActivateCalculatedAttribute(msgspec.Struct, tag="activate_calculated_attribute", frozen=True, kw_only=True):
    """The draft becomes the active definition; `generation` is raised, so the shards start its state afresh."""

    id: int
    by: str
    at: str


class DiscardCalculatedAttributeDraft(
    msgspec.Struct, tag="discard_calculated_attribute_draft", frozen=True, kw_only=True
):
    id: int
    by: str
    at: str


CalculatedAttributeChange = (
    AddCalculatedAttribute | UpdateCalculatedAttribute | RemoveCalculatedAttribute | ActivateCalculatedAttribute
    | DiscardCalculatedAttributeDraft
)  # fmt: skip
CALCULATED_ATTRIBUTE_CHANGES = (AddCalculatedAttribute, UpdateCalculatedAttribute, RemoveCalculatedAttribute,
                                ActivateCalculatedAttribute, DiscardCalculatedAttributeDraft)  # fmt: skip


class AddAudience(AddItem, tag="add_audience", frozen=True):
    """An audience: `name`, `external_name`, `workspaces`, `kind`, `criteria` (the Platform API body), made by `by`
    at `on` (ISO 8601, UTC): its `created_*` and `last_modified_*`."""

    section = "audiences"
    by: str = ""
    on: str = ""


class UpdateAudience(UpdateItem, tag="update_audience", frozen=True):
    section = "audiences"
    by: str = ""
    on: str = ""


class RemoveAudience(RemoveItem, tag="remove_audience", frozen=True):
    section = "audiences"


class ConnectAudience(msgspec.Struct, tag="connect_audience", frozen=True, kw_only=True):
    """Audience `id` sends its membership changes to output `output_id` from now on."""

    id: int
    output_id: int
    by: str = ""
    on: str = ""


class DisconnectAudience(msgspec.Struct, tag="disconnect_audience", frozen=True, kw_only=True):
    id: int
    output_id: int
    by: str = ""
    on: str = ""


AudienceChange = AddAudience | UpdateAudience | RemoveAudience | ConnectAudience | DisconnectAudience


class UpdateDsrSettings(msgspec.Struct, tag="update_dsr_settings", frozen=True, kw_only=True):
    """The workspace's data subject request settings (`dsr:`): the given fields replace theirs."""

    fields: dict[str, Any]


Change = (
    AddInput | UpdateInput | RemoveInput
    | AddOutput | UpdateOutput | RemoveOutput
    | AddConnection | UpdateConnection | RemoveConnection
    | AddUser | UpdateUser | RemoveUser
    | CalculatedAttributeChange
    | AddAudience | UpdateAudience | RemoveAudience | ConnectAudience | DisconnectAudience
    | UpdateDsrSettings
)  # fmt: skip
"""Every change the store takes; a tagged union, so a change crosses an actor call or a log as msgpack."""


def change_name(change: Change) -> str:
    """The change's tag (`update_output`): how the history and logs name it."""
    return str(type(change).__struct_config__.tag)


@dataclass(frozen=True)
class Applied:
    config: WorkspaceConfig
    next_ids: dict[str, int]
    target: str
    """What the change touched, as `section/id` (`outputs/3`)."""


# ---- applying a change ---------------------------------------------------------------------------------------


def apply_change(config: WorkspaceConfig, change: Change, next_ids: NextIds) -> Applied:
    """The configuration with `change` made, or a refusal naming the field at fault; `config` is not modified."""
    if isinstance(change, (AddUser, UpdateUser, RemoveUser)):
        return Applied(_users_changed(config, change), dict(next_ids), f"users/{_user_name(change)}")
    if isinstance(change, CALCULATED_ATTRIBUTE_CHANGES):
        return _calculated_attributes_changed(config, change, next_ids)
    if isinstance(change, UpdateDsrSettings):
        return Applied(_dsr_changed(config, change), dict(next_ids), "dsr")
    if isinstance(change, (AddAudience, UpdateAudience, RemoveAudience, ConnectAudience, DisconnectAudience)):
        return _audiences_changed(config, change, next_ids)
    section = change.section
    items = list(getattr(config, section))
    ids = dict(next_ids)
    if isinstance(change, RemoveItem):
        position = _position(items, section, change.id)
        _check_removable(config, section, change.id)
        del items[position]
        return Applied(_rebuilt(config, section, items), ids, f"{section}/{change.id}")
    _refuse_environment_references(change.fields)
    if isinstance(change, AddItem):
        item = _new_item(section, change.fields, ids[section])
        ids[section] = max(ids[section], item.id + 1)
        items.append(item)
    else:
        position = _position(items, section, change.id)
        item = _updated_item(section, items[position], change.fields)
        items[position] = item
    _check_references(config.model_copy(update={section: items}), section, item)
    return Applied(_rebuilt(config, section, items), ids, f"{section}/{item.id}")


def _dsr_changed(config: WorkspaceConfig, change: UpdateDsrSettings) -> WorkspaceConfig:
    _refuse_environment_references(change.fields)
    try:
        dsr = type(config.dsr).model_validate({**config.dsr.model_dump(), **change.fields})
    except ValidationError as error:
        raise _refusal(error) from None
    return config.model_copy(update={"dsr": dsr})


def first_next_ids(config: WorkspaceConfig) -> dict[str, int]:
    """The next free ids of a configuration that has no history: one past the largest id of each section."""
    return {section: max((item.id for item in getattr(config, section)), default=0) + 1 for section in SECTIONS}


def _refuse_environment_references(value: Any, path: str = "$") -> None:
    """A change comes from an API client, not from the operator's file: a `${NAME}` in it would be expanded from
    the server's environment (where its keys live) and could be sent to a URL the client chooses."""
    if isinstance(value, str) and ENV_REFERENCE.search(value):
        raise BadRequest("${...} environment references belong in the workspace file, not in a change", path)
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_environment_references(item, f"{path}.{key}")
    if isinstance(value, list):
        for n, item in enumerate(value):
            _refuse_environment_references(item, f"{path}[{n}]")


def _new_item(section: str, fields: dict[str, Any], next_id: int) -> Any:
    given = fields.get("id")
    if given is not None and (not isinstance(given, int) or isinstance(given, bool) or given < next_id):
        raise BadRequest(f"{ITEM_NAMES[section]} id {given!r} is taken or was used before; omit it", "$.id")
    return _validated(section, {**fields, "id": next_id if given is None else given})


def _updated_item(section: str, item: Any, fields: dict[str, Any]) -> Any:
    if "id" in fields and fields["id"] != item.id:
        raise BadRequest(f"the id of {ITEM_NAMES[section]} {item.id} cannot change", "$.id")
    merged = {**item_document(item), **fields}
    same_kind = fields.get("kind", getattr(item, "kind", None)) == getattr(item, "kind", None)
    if section == "outputs" and same_kind and isinstance(fields.get("settings"), dict):
        merged["settings"] = {**item_document(item)["settings"], **fields["settings"]}
    return _validated(section, merged)


def _validated(section: str, fields: dict[str, Any]) -> Any:
    if section == "outputs" and fields.get("kind") not in MODULES:  # else pydantic reports it at the item's root
        raise BadRequest(f"unknown output kind; known: {', '.join(sorted(MODULES))}", "$.kind")
    try:
        return SECTIONS[section].model_validate(fields)
    except ValidationError as error:
        raise _refusal(error) from None


def _refusal(error: ValidationError) -> BadRequest:
    """The first field at fault, as a JSON path of the request (`$.settings.url`), with pydantic's message (never
    the value: it may be a secret)."""
    first = error.errors()[0]
    path = "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ").split("\n")[0]
    if message.startswith("."):  # a model validator naming a field below it: ".settings.url: message"
        below, _, message = message.partition(": ")
        path += below
    return BadRequest(message, path)


def _position(items: list[Any], section: str, item_id: int) -> int:
    for position, item in enumerate(items):
        if item.id == item_id:
            return position
    raise NotFound(f"No {ITEM_NAMES[section]} with id {item_id}.")


def _check_removable(config: WorkspaceConfig, section: str, item_id: int) -> None:
    if section == "inputs" and len(config.inputs) == 1:
        raise BadRequest("a workspace keeps at least one input", "$.id")
    if section in ("inputs", "outputs"):
        field = ITEM_NAMES[section]
        users = [c.id for c in config.connections if getattr(c, field) == item_id]
        if users:
            raise BadRequest(f"{field} {item_id} is used by connections {users}; remove them first", "$.id")
    if section == "outputs":
        connected = [a.id for a in config.audiences if item_id in a.connected_outputs]
        if connected:
            raise BadRequest(f"output {item_id} receives audiences {connected}; disconnect them first", "$.id")


def _check_references(config: WorkspaceConfig, section: str, item: Any) -> None:
    """What the workspace's own validator would refuse, named by the request's field rather than the file's."""
    if section == "inputs" and sum(i.key == item.key for i in config.inputs) > 1:
        raise BadRequest("another input has this key", "$.key")
    if section == "connections":
        if not any(i.id == item.input for i in config.inputs):
            raise BadRequest(f"no input with id {item.input}", "$.input")
        output = next((o for o in config.outputs if o.id == item.output), None)
        if output is None:
            raise BadRequest(f"no output with id {item.output}", "$.output")
        if not takes_events(output.kind):
            raise BadRequest(f"{output.kind} takes audience memberships, not event data", "$.output")
    if section == "outputs" and not takes_events(item.kind):
        users = [c.id for c in config.connections if c.output == item.id]
        if users:
            raise BadRequest(f"{item.kind} takes no event data, and connections {users} send it", "$.kind")
    if section == "outputs" and not takes_memberships(item.kind):
        connected = [a.id for a in config.audiences if item.id in a.connected_outputs]
        if connected:
            raise BadRequest(
                f"{item.kind} takes no audience memberships, and audiences {connected} send them", "$.kind"
            )


# ---- console users -------------------------------------------------------------------------------------------

USER_FIELDS = frozenset({"name", "role", "password_hash"})
"""What a user change may set: a password arrives hashed (`password` in clear belongs to the seed file only)."""


def _user_name(change: AddUser | UpdateUser | RemoveUser) -> str:
    return str(change.fields.get("name", "")) if isinstance(change, AddUser) else change.name


def _users_changed(config: WorkspaceConfig, change: AddUser | UpdateUser | RemoveUser) -> WorkspaceConfig:
    users = list(config.users)
    if isinstance(change, AddUser):
        _check_user_fields(change.fields)
        user = _validated_user(change.fields)
        if any(u.name == user.name for u in users):
            raise BadRequest("another user has this name", "$.name")
        users.append(user)
    else:
        position = next((n for n, u in enumerate(users) if u.name == change.name), None)
        if position is None:
            raise NotFound(f"No user named {change.name!r}.")
        if isinstance(change, RemoveUser):
            del users[position]
        else:
            _check_user_fields(change.fields)
            if "name" in change.fields and change.fields["name"] != change.name:
                raise BadRequest("a user's name cannot change", "$.name")
            merged = {**item_document(users[position]), **change.fields}
            if "password_hash" in change.fields:
                merged["password"] = None  # the new password replaces the one the seed file gave
            users[position] = _validated_user(merged)
    _check_an_admin_remains(config, users)
    return _rebuilt_users(config, users)


def _check_user_fields(fields: dict[str, Any]) -> None:
    _refuse_environment_references(fields)
    unknown = sorted(set(fields) - USER_FIELDS)
    if unknown:
        raise BadRequest(f"a user change sets only {', '.join(sorted(USER_FIELDS))}", f"$.{unknown[0]}")


def _validated_user(fields: dict[str, Any]) -> ConsoleUser:
    try:
        return ConsoleUser.model_validate(fields)
    except ValidationError as error:
        raise _refusal(error) from None


def _check_an_admin_remains(config: WorkspaceConfig, users: list[ConsoleUser]) -> None:
    """A workspace whose last console admin was removed or demoted could not manage users again from the console."""
    had_admin = any(u.role is Role.ADMIN for u in config.users)
    if had_admin and not any(u.role is Role.ADMIN for u in users):
        raise BadRequest("the workspace keeps at least one console user with the admin role", "$.role")


def _rebuilt_users(config: WorkspaceConfig, users: list[ConsoleUser]) -> WorkspaceConfig:
    fields = {name: getattr(config, name) for name in WorkspaceConfig.model_fields}
    try:
        return WorkspaceConfig.model_validate({**fields, "users": users})
    except ValidationError as error:
        raise _refusal(error) from None


def _rebuilt(config: WorkspaceConfig, section: str, items: list[Any]) -> WorkspaceConfig:
    """The workspace with a new section, through the workspace's own validation (items are validated already)."""
    fields = {name: getattr(config, name) for name in WorkspaceConfig.model_fields}
    try:
        return WorkspaceConfig.model_validate({**fields, section: items})
    except ValidationError as error:  # a rule the checks above do not know yet: refused all the same
        raise _refusal(error) from None


# ---- calculated attributes: applying -------------------------------------------------------------------------
# https://docs.mparticle.com/developers/apis/platform/calculated-attributes/ : changes edit the draft; activation
# moves it to the active definition; the name is read-only once activated.

CALCULATED_ATTRIBUTES = "calculated_attributes"
CALCULATED_ATTRIBUTE_FIELDS = frozenset({"name", "description", "draft_definition"})
"""What a create or update sets; the rest (ids, stamps, the active definition, generation) the changes keep."""


def _calculated_attributes_changed(
    config: WorkspaceConfig, change: CalculatedAttributeChange, next_ids: NextIds
) -> Applied:
    items, ids = list(config.calculated_attributes), dict(next_ids)
    if isinstance(change, AddCalculatedAttribute):
        item = _new_calculated_attribute(change, _next_calculated_attribute_id(items, ids))
        ids[CALCULATED_ATTRIBUTES] = item.id + 1
        items.append(item)
    else:
        position = _calculated_attribute_position(items, change.id)
        if isinstance(change, RemoveCalculatedAttribute):
            _check_not_in_audiences(config, items[position])
            del items[position]
            return Applied(_rebuilt(config, CALCULATED_ATTRIBUTES, items), ids, f"{CALCULATED_ATTRIBUTES}/{change.id}")
        item = _changed_calculated_attribute(items[position], change)
        items[position] = item
    if any(other.name == item.name and other.id != item.id for other in items):
        raise Conflict(f"Another calculated attribute is named {item.name!r}.")
    return Applied(_rebuilt(config, CALCULATED_ATTRIBUTES, items), ids, f"{CALCULATED_ATTRIBUTES}/{item.id}")


def _next_calculated_attribute_id(items: list[CalculatedAttribute], next_ids: NextIds) -> int:
    """A store written before this section existed has no counter for it: one past the largest id then."""
    return max(next_ids.get(CALCULATED_ATTRIBUTES, 1), max((item.id for item in items), default=0) + 1)


def _calculated_attribute_position(items: list[CalculatedAttribute], ca_id: int) -> int:
    position = next((n for n, item in enumerate(items) if item.id == ca_id), None)
    if position is None:
        raise NotFound(f"No calculated attribute with id {ca_id}.")
    return position


def _new_calculated_attribute(change: AddCalculatedAttribute, ca_id: int) -> CalculatedAttribute:
    fields = _calculated_attribute_fields(change.fields)
    if "name" not in fields:
        raise BadRequest("name is required", "$.name")
    stamps = {"created_by": change.by, "created_on": change.at, "last_modified_by": change.by,
              "last_modified_on": change.at}  # fmt: skip
    return _validated_calculated_attribute({**fields, **stamps, "id": ca_id})


def _changed_calculated_attribute(
    item: CalculatedAttribute,
    change: UpdateCalculatedAttribute | ActivateCalculatedAttribute | DiscardCalculatedAttributeDraft,
) -> CalculatedAttribute:
    stamps: dict[str, Any] = {"last_modified_by": change.by, "last_modified_on": change.at}
    if isinstance(change, UpdateCalculatedAttribute):
        fields = _calculated_attribute_fields(change.fields)
        if item.activated_on is not None and fields.get("name", item.name) != item.name:
            raise BadRequest("the name of a calculated attribute is read-only once it was activated", "$.name")
        return _validated_calculated_attribute({**item_document(item), **fields, **stamps})
    if item.draft_definition is None:
        if isinstance(change, DiscardCalculatedAttributeDraft):
            raise NotFound(f"Calculated attribute {item.id} has no draft definition.")
        raise BadRequest(f"calculated attribute {item.id} has no draft definition to activate", "$.draft_definition")
    if isinstance(change, DiscardCalculatedAttributeDraft):
        return item.model_copy(update={"draft_definition": None, **stamps})
    activated = {"active_definition": item.draft_definition, "draft_definition": None,
                 "generation": item.generation + 1, "activated_by": change.by, "activated_on": change.at}  # fmt: skip
    return item.model_copy(update={**activated, **stamps})


def _calculated_attribute_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields a change may set, the definition validated (a refusal names `$.draft_definition.<field>`)."""
    _refuse_environment_references(fields)
    unknown = sorted(set(fields) - CALCULATED_ATTRIBUTE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(CALCULATED_ATTRIBUTE_FIELDS))
        raise BadRequest(f"unknown field; a calculated attribute sets {allowed}", f"$.{unknown[0]}")
    if fields.get("draft_definition") is None:
        return {name: value for name, value in fields.items() if name != "draft_definition"}
    try:
        definition = Definition.model_validate(fields["draft_definition"])
    except ValidationError as error:
        refusal = _refusal(error)
        raise BadRequest(refusal.message.removesuffix(f" - at `{refusal.path}`"),
                         "$.draft_definition" + (refusal.path or "$")[1:]) from None  # fmt: skip
    return {**fields, "draft_definition": definition}


def _validated_calculated_attribute(fields: dict[str, Any]) -> CalculatedAttribute:
    try:
        return CalculatedAttribute.model_validate(fields)
    except ValidationError as error:
        raise _refusal(error) from None


def _check_not_in_audiences(config: WorkspaceConfig, item: CalculatedAttribute) -> None:
    users = [a.id for a in config.audiences if item.name in criteria.referenced_calculated_attributes(a.criteria)]
    if users:
        raise Conflict(f"Calculated attribute {item.name!r} is used by audiences {users}; change them first.")


# ---- audiences -----------------------------------------------------------------------------------------------

AUDIENCE_FIELDS = frozenset({"name", "external_name", "workspaces", "kind", "criteria"})
"""What an audience change may set: its connections change through connect / disconnect, its stamps by the change."""


def _audiences_changed(
    config: WorkspaceConfig,
    change: AddAudience | UpdateAudience | RemoveAudience | ConnectAudience | DisconnectAudience,
    next_ids: NextIds,
) -> Applied:
    audiences = list(config.audiences)
    ids = dict(next_ids)
    if isinstance(change, AddAudience):
        audience = _new_audience(change, max(ids.get("audiences", 1), *(a.id + 1 for a in audiences), 1))
        ids["audiences"] = audience.id + 1
        audiences.append(audience)
    else:
        position = _position(audiences, "audiences", change.id)
        audience = audiences[position]
        if isinstance(change, RemoveAudience):
            del audiences[position]
        else:
            audience = audiences[position] = _changed_audience(config, audience, change)
    removed = isinstance(change, RemoveAudience)
    if not removed:
        _check_workspaces(config, audience)
    calculated_names = {ca.name for ca in config.calculated_attributes}
    _check_audience_references(audiences, calculated_names, None if removed else audience.id)
    after = _rebuilt(config, "audiences", audiences)
    return Applied(after, ids, f"audiences/{audience.id}")


def _new_audience(change: AddAudience, audience_id: int) -> Audience:
    _check_audience_fields(change.fields)
    stamps = {"created_by": change.by, "created_on": change.on, "last_modified_by": change.by,
              "last_modified_on": change.on}  # fmt: skip
    return _validated_audience({**change.fields, **stamps, "id": audience_id})


def _changed_audience(
    config: WorkspaceConfig, audience: Audience, change: UpdateAudience | ConnectAudience | DisconnectAudience
) -> Audience:
    stamps = {"last_modified_by": change.by, "last_modified_on": change.on}
    if isinstance(change, UpdateAudience):
        _check_audience_fields(change.fields)
        return _validated_audience({**item_document(audience), **change.fields, **stamps})
    outputs = list(audience.connected_outputs)
    if isinstance(change, DisconnectAudience):
        if change.output_id not in outputs:
            raise NotFound(f"Audience {audience.id} is not connected to output {change.output_id}.")
        outputs.remove(change.output_id)
    else:
        output = next((o for o in config.outputs if o.id == change.output_id), None)
        if output is None:
            raise BadRequest(f"no output with id {change.output_id}", "$.output_id")
        if not takes_memberships(output.kind):
            raise BadRequest(f"{output.kind} takes no audience memberships", "$.output_id")
        if change.output_id in outputs:
            raise Conflict(f"Audience {audience.id} is connected to output {change.output_id} already.")
        outputs.append(change.output_id)
    return audience.model_copy(update={"connected_outputs": outputs, **stamps})


def _check_audience_fields(fields: dict[str, Any]) -> None:
    _refuse_environment_references(fields)
    unknown = sorted(set(fields) - AUDIENCE_FIELDS)
    if unknown:
        raise BadRequest(f"an audience change sets only {', '.join(sorted(AUDIENCE_FIELDS))}", f"$.{unknown[0]}")


def _validated_audience(fields: dict[str, Any]) -> Audience:
    """The audience, its criteria checked by the criteria module (operators for each type, the values each takes,
    identity and event types, the tree's size) with refusals naming the node in the request (`$.criteria.all[1]`)."""
    if "criteria" in fields:
        fields = {**fields, "criteria": _parsed_criteria(fields["criteria"])}
    try:
        return Audience.model_validate(fields)
    except ValidationError as error:
        raise _refusal(error) from None


def _parsed_criteria(data: Any) -> criteria.Node:
    try:
        return criteria.parse_criteria(data, "$.criteria")
    except BadRequest as error:  # its message starts with the path; ours ends with it
        raise BadRequest(error.message.removeprefix(f"{error.path}: "), error.path) from None


def member_of_nodes(node: Any, path: str = "$.criteria") -> list[tuple[criteria.MemberOf, str]]:
    """Every `{"audience": ID}` node of a criteria tree, with its path."""
    if isinstance(node, criteria.MemberOf):
        return [(node, path)]
    if isinstance(node, (criteria.All, criteria.Any_)):
        key = "all" if isinstance(node, criteria.All) else "any"
        children = node.all if isinstance(node, criteria.All) else node.any
        return [found for n, child in enumerate(children) for found in member_of_nodes(child, f"{path}.{key}[{n}]")]
    if isinstance(node, criteria.Not):
        return member_of_nodes(node.not_, f"{path}.not")
    return []


def _check_audience_references(audiences: list[Audience], calculated_names: set[str], changed: int | None) -> None:
    """Every `{"audience": ID}` names a real-time audience (the shards keep only those memberships), no audience
    depends on itself, every `{"calculated_attribute": NAME}` names a calculated attribute. A fault of the changed
    audience is a 400 naming its node; one the change made in another audience (removing, or turning standard, an
    audience that one names) is a 409. Checked before the workspace's own validation, which would name the file's
    paths (`audiences[2].criteria...`) rather than the request's."""
    kinds = {a.id: a.kind for a in audiences}
    named = {a.id: {node.audience for node, _ in member_of_nodes(a.criteria)} for a in audiences}
    for audience in audiences:
        for node, path in member_of_nodes(audience.criteria):
            if node.audience not in kinds:
                fault = f"no audience with id {node.audience}"
            elif kinds[node.audience] != "real_time":
                fault = f"audience {node.audience} is a standard audience; membership criteria name real-time ones"
            elif node.audience == audience.id or audience.id in _depended_on(named, node.audience):
                fault = f"audience {node.audience} depends on this audience: the criteria would form a cycle"
            else:
                continue
            if audience.id == changed:
                raise BadRequest(fault, path)
            raise Conflict(f"Audience {audience.id} ({audience.name}) depends on it: {fault}. Change that one first.")
    for audience in audiences:
        for name, path in calculated_attribute_nodes(audience.criteria):
            if name not in calculated_names and audience.id == changed:
                raise BadRequest(f"no calculated attribute named {name!r}", path)


def calculated_attribute_nodes(node: Any, path: str = "$.criteria") -> list[tuple[str, str]]:
    """The calculated attribute each `{"calculated_attribute": NAME}` node names, with the node's path."""
    if isinstance(node, criteria.CalculatedAttribute):
        return [(node.calculated_attribute, f"{path}.calculated_attribute")]
    if isinstance(node, (criteria.All, criteria.Any_)):
        key = "all" if isinstance(node, criteria.All) else "any"
        children = node.all if isinstance(node, criteria.All) else node.any
        return [
            found
            for n, child in enumerate(children)
            for found in calculated_attribute_nodes(child, f"{path}.{key}[{n}]")
        ]
    if isinstance(node, criteria.Not):
        return calculated_attribute_nodes(node.not_, f"{path}.not")
    return []


def _depended_on(named: dict[int, set[int]], audience_id: int) -> set[int]:
    """The audiences `audience_id`'s criteria name, directly or through others."""
    found: set[int] = set()
    waiting = list(named.get(audience_id, ()))
    while waiting:
        current = waiting.pop()
        if current not in found:
            found.add(current)
            waiting += named.get(current, ())
    return found


def _check_workspaces(config: WorkspaceConfig, audience: Audience) -> None:
    for n, workspace_id in enumerate(audience.workspaces):
        if workspace_id != config.workspace.workspace_id:
            raise BadRequest(f"no workspace with id {workspace_id}", f"$.workspaces[{n}]")


# ---- documents: the configuration as plain data --------------------------------------------------------------


def config_document(config: WorkspaceConfig, *, exclude_defaults: bool = False) -> dict[str, Any]:
    """The configuration as plain data (dicts, lists, str, int, float, bool, None) with secrets in clear: what
    `parse_workspace` reads back to an equal configuration. Only for the store's sealer and for an export."""
    return _plain(config.model_dump(mode="python", exclude_defaults=exclude_defaults))


def item_document(item: BaseModel) -> dict[str, Any]:
    return _plain(item.model_dump(mode="python"))


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, enum.Enum):  # a role, an API: written as their names
        return value.value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def changed_paths(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two documents differ, as paths (`outputs[id=2].settings.url`); items of a list that have ids are
    matched by id. Paths only, never values: a history entry must not hold a secret."""
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[str] = []
        for key in [*before, *(k for k in after if k not in before)]:
            found += changed_paths(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
        return found
    if _has_ids(before) and _has_ids(after):
        old, new = {item["id"]: item for item in before}, {item["id"]: item for item in after}
        found = []
        for item_id in [*old, *(i for i in new if i not in old)]:
            found += changed_paths(old.get(item_id), new.get(item_id), f"{path}[id={item_id}]")
        return found
    return [] if before == after else [path or "$"]


def _has_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) and "id" in item for item in value)
