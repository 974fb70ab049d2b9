"""The workspace configuration as Platform API resources, and request bodies as configuration changes.

Mapping (https://docs.mparticle.com/developers/apis/platform/apps/ and neighbours):
- account and workspace: the one org/account/workspace of `config.workspace`;
- an app and its app platform: one input of kind `platform` (app id = input id; an app here holds one platform, so
  an app for iOS and Android is two apps). Creating one issues an access key and secret: the secret is in that
  answer only, the configuration keeps its salted hash (`secret_hash`). Feed inputs are not apps;
- a service: an output kind (`cdp_actors/integrations/`) with its settings' JSON schema; an output: one configured
  instance of a service (mParticle's "account" of a service), its secret settings masked in every answer;
- a connection: an input → output link with its filters and rules, as the workspace file writes it;
- a user: a console user and its role; a password arrives in clear and leaves as its argon2 hash only.

Every body is checked here for the fields it may hold (an unknown one is a `BadRequest` naming it); the rest of the
validation is the changes module's, through the workspace's own models, and its refusal paths (`$.kind`) are renamed
to the body's fields (`$.service`) by `renamed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cdp_actors.access.keys import IssuedKey
from cdp_actors.config import Connection, ConsoleUser, Input, Output, WorkspaceConfig
from cdp_actors.control.changes import (
    AddConnection,
    AddInput,
    AddOutput,
    AddUser,
    UpdateConnection,
    UpdateInput,
    UpdateOutput,
    UpdateUser,
    item_document,
)
from cdp_actors.errors import BadRequest, NotFound
from cdp_actors.integrations.registry import AUDIENCE_ONLY, MODULES, module_of, settings_model, takes_events
from cdp_actors.secrets import mask, restore_masked

APP_FIELDS = frozenset({"name", "platforms"})
APP_PLATFORM_FIELDS = frozenset({"platform"})
PLATFORM_UPDATE_FIELDS = frozenset({"platform", "regenerate_access_key"})
OUTPUT_FIELDS = frozenset({"name", "service", "settings", "new_data_points"})
CONNECTION_FIELDS = frozenset(set(Connection.model_fields) - {"id"})
USER_FIELDS = frozenset({"name", "role", "password"})
USER_UPDATE_FIELDS = frozenset({"role", "password"})
APP_PATHS = {"$.platform": "$.platforms[0].platform"}
OUTPUT_PATHS = {"$.kind": "$.service"}
USER_PATHS = {"$.password_hash": "$.password"}


# ---- reading -------------------------------------------------------------------------------------------------


def account_document(config: WorkspaceConfig) -> dict[str, Any]:
    w = config.workspace
    return {"id": w.account_id, "org_id": w.org_id, "name": w.name}


def workspace_document(config: WorkspaceConfig) -> dict[str, Any]:
    w = config.workspace
    return {"id": w.workspace_id, "account_id": w.account_id, "org_id": w.org_id, "name": w.name}


def apps(config: WorkspaceConfig) -> list[Input]:
    """The inputs the Platform API shows as apps: those of kind `platform`."""
    return [i for i in config.inputs if i.kind == "platform"]


def app_input(config: WorkspaceConfig, app_id: int) -> Input:
    found = next((i for i in apps(config) if i.id == app_id), None)
    if found is None:
        raise NotFound(f"No app with id {app_id}.")
    return found


def platform_input(config: WorkspaceConfig, app_id: int, platform: str) -> Input:
    """The input of app `app_id`'s platform (names compared in any case: `ios`, `iOS`)."""
    found = app_input(config, app_id)
    if found.platform.lower() != platform.lower():
        raise NotFound(f"App {app_id} has no {platform} platform.")
    return found


def platform_document(item: Input, secret: str | None = None) -> dict[str, Any]:
    """An app platform with its access key; the secret only in the answer that issued it."""
    key: dict[str, Any] = {"key": item.key, "key_revision": item.key_revision}
    if secret is not None:
        key["secret"] = secret
    return {"platform": item.platform, "access_keys": [key]}


def app_document(item: Input, secret: str | None = None) -> dict[str, Any]:
    return {"id": item.id, "name": item.name, "platforms": [platform_document(item, secret)]}


def service_document(kind: str) -> dict[str, Any]:
    """An output kind and what its settings take (secret fields are `writeOnly`, `format: password`)."""
    return {
        "name": kind,
        "takes_events": takes_events(kind),
        "takes_audiences": kind in AUDIENCE_ONLY or hasattr(module_of(kind), "AudienceAdapter"),
        "settings_schema": settings_model(kind).model_json_schema(),
    }


def services() -> list[dict[str, Any]]:
    return [service_document(kind) for kind in sorted(MODULES)]


def service(name: str) -> dict[str, Any]:
    kind = next((k for k in MODULES if k.lower() == name.lower()), None)
    if kind is None:
        raise NotFound(f"No service named {name!r}; known: {', '.join(sorted(MODULES))}.")
    return service_document(kind)


def output_document(item: Output) -> dict[str, Any]:
    return {"id": item.id, "name": item.name, "service": item.kind, "settings": mask(item.settings),
            "new_data_points": item.new_data_points}  # fmt: skip


def output_of(config: WorkspaceConfig, output_id: int) -> Output:
    found = next((o for o in config.outputs if o.id == output_id), None)
    if found is None:
        raise NotFound(f"No output with id {output_id}.")
    return found


def connection_document(item: Connection) -> dict[str, Any]:
    return item_document(item)


def connection_of(config: WorkspaceConfig, connection_id: int) -> Connection:
    found = next((c for c in config.connections if c.id == connection_id), None)
    if found is None:
        raise NotFound(f"No connection with id {connection_id}.")
    return found


def platform_services(config: WorkspaceConfig, item: Input) -> list[dict[str, Any]]:
    """The connections from an app platform, each with its output: mParticle's services of an app platform."""
    outputs = {o.id: o for o in config.outputs}
    return [{**connection_document(c), "output_service": output_document(outputs[c.output])}
            for c in config.connections if c.input == item.id]  # fmt: skip


def user_document(item: ConsoleUser) -> dict[str, Any]:
    return {"id": item.name, "name": item.name, "role": item.role.value}


def user_of(config: WorkspaceConfig, name: str) -> ConsoleUser:
    found = next((u for u in config.users if u.name == name), None)
    if found is None:
        raise NotFound(f"No user named {name!r}.")
    return found


# ---- writing -------------------------------------------------------------------------------------------------


def body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", "$")
    return body


def only_fields(body: Mapping[str, Any], allowed: frozenset[str], path: str = "$") -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field; allowed: {', '.join(sorted(allowed))}", f"{path}.{unknown[0]}")


def required(body: Mapping[str, Any], field: str, kind: type, path: str = "$") -> Any:
    value = body.get(field)
    if value is None:
        raise BadRequest(f"{field} is required", f"{path}.{field}")
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BadRequest(f"{field} must be a {'string' if kind is str else kind.__name__}", f"{path}.{field}")
    if isinstance(value, str) and not value.strip():
        raise BadRequest(f"{field} must not be empty", f"{path}.{field}")
    return value


def app_request(body: Any) -> tuple[str, str]:
    """`{"name", "platforms": [{"platform"}]}` → (name, platform): checked before a key is issued for it."""
    body = body_object(body)
    only_fields(body, APP_FIELDS)
    name = required(body, "name", str)
    platforms = required(body, "platforms", list)
    if len(platforms) != 1:
        raise BadRequest("an app holds exactly one platform here; create one app per platform", "$.platforms")
    platform = body_object_at(platforms[0], "$.platforms[0]")
    only_fields(platform, APP_PLATFORM_FIELDS, "$.platforms[0]")
    return name, required(platform, "platform", str, "$.platforms[0]")


def new_app(request: tuple[str, str], key: str, secret_hash: str) -> AddInput:
    """The input of a new app (one platform) holding its issued key's hash, never its secret."""
    name, platform = request
    return AddInput(fields={"name": name, "kind": "platform", "platform": platform, "key": key,
                            "secret_hash": secret_hash})  # fmt: skip


def body_object_at(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("must be a JSON object", path)
    return value


def renamed_app(body: Any, app_id: int) -> UpdateInput:
    body = body_object(body)
    only_fields(body, frozenset({"name"}))
    return UpdateInput(id=app_id, fields={"name": required(body, "name", str)})


def check_platform_update(body: Any, item: Input) -> None:
    """An app platform's only change is a new access key: `{"regenerate_access_key": true}`."""
    body = body_object(body)
    only_fields(body, PLATFORM_UPDATE_FIELDS)
    if "platform" in body and str(body["platform"]).lower() != item.platform.lower():
        raise BadRequest("an app platform's platform cannot change", "$.platform")
    if body.get("regenerate_access_key") is not True:
        raise BadRequest("an app platform changes only its access key: send true", "$.regenerate_access_key")


def new_access_key(item: Input, issued: IssuedKey) -> UpdateInput:
    """The input with a new key and secret hash and its revision raised: cached verifications of the old key stop
    holding. The clear secret is dropped, unless the input takes signed IDSync requests (an HMAC needs the secret
    itself; the store keeps it encrypted)."""
    secret = issued.secret.reveal() if item.signed_requests else None
    fields = {"key": issued.key, "secret_hash": issued.secret_hash, "secret": secret,
              "key_revision": item.key_revision + 1}  # fmt: skip
    return UpdateInput(id=item.id, fields=fields)


def new_output(body: Any) -> AddOutput:
    body = body_object(body)
    only_fields(body, OUTPUT_FIELDS)
    fields = {"kind" if name == "service" else name: value for name, value in body.items()}
    required(body, "name", str)
    required(body, "service", str)
    return AddOutput(fields=fields)


def changed_output(body: Any, current: Output) -> UpdateOutput:
    """Fields to change; a settings value that is the mask a GET showed keeps the stored secret."""
    body = body_object(body)
    only_fields(body, OUTPUT_FIELDS)
    fields = {"kind" if name == "service" else name: value for name, value in body.items()}
    settings = fields.get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise BadRequest("settings must be a JSON object", "$.settings")
    if isinstance(settings, dict) and fields.get("kind", current.kind) == current.kind:
        fields["settings"] = restore_masked(settings, current.settings)
    return UpdateOutput(id=current.id, fields=fields)


def new_connection(body: Any) -> AddConnection:
    body = body_object(body)
    only_fields(body, CONNECTION_FIELDS)
    return AddConnection(fields=dict(body))


def changed_connection(body: Any, connection_id: int) -> UpdateConnection:
    body = body_object(body)
    only_fields(body, CONNECTION_FIELDS)
    return UpdateConnection(id=connection_id, fields=dict(body))


def user_body(body: Any, creating: bool) -> tuple[dict[str, Any], str | None]:
    """The user fields but the password, and the password (to hash) if one was given."""
    body = body_object(body)
    only_fields(body, USER_FIELDS if creating else USER_UPDATE_FIELDS)
    if creating:
        required(body, "name", str)
        required(body, "role", str)
    password = required(body, "password", str) if creating or "password" in body else None
    return {name: value for name, value in body.items() if name != "password"}, password


def new_user(fields: dict[str, Any], password_hash: str) -> AddUser:
    return AddUser(fields={**fields, "password_hash": password_hash})


def changed_user(name: str, fields: dict[str, Any], password_hash: str | None) -> UpdateUser:
    hashed = {"password_hash": password_hash} if password_hash is not None else {}
    if not fields and not hashed:
        raise BadRequest("nothing to change: send role and/or password", "$")
    return UpdateUser(name=name, fields={**fields, **hashed})


# ---- refusals ------------------------------------------------------------------------------------------------


def renamed(error: BadRequest, paths: Mapping[str, str]) -> BadRequest:
    """The refusal with its path renamed to the request body's field (`$.kind` → `$.service`), also below it."""
    if error.path is None:
        return error
    for ours, theirs in paths.items():
        if error.path == ours or error.path.startswith((ours + ".", ours + "[")):
            message = error.message.removesuffix(f" - at `{error.path}`")
            return BadRequest(message, theirs + error.path[len(ours) :])
    return error
