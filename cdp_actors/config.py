"""The workspace configuration: inputs, outputs, connections, identity and runtime settings.

Loaded from YAML and validated by pydantic; a bad file raises `ConfigError` whose message names each bad
field by its path (``outputs[0].settings.url: ...``). Secrets may be written as ``${ENV_VAR}`` and are
held as `SecretStr`, so they never appear in reprs or logs.
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    model_validator,
)

from cdp_actors.access.roles import CREDENTIAL_ROLES, Api, Grant, Role, credential_grant
from cdp_actors.access.tokens import TOKEN_TTL_S
from cdp_actors.audiences.criteria import Node, check_audiences
from cdp_actors.calculated.definition import Definition
from cdp_actors.envvars import expand_env
from cdp_actors.identity.strategy import Policy
from cdp_actors.integrations.base import Secret
from cdp_actors.schema.identity_types import ALL_TYPES


class ConfigError(ValueError):
    """The workspace file is missing, unparsable or invalid; the message says where."""


class _Strict(BaseModel):
    # a default in Field() is given as `default=`: type checkers read it only from the keyword
    model_config = ConfigDict(extra="forbid", frozen=True)


def credentials_match(given: tuple[str, str], expected: tuple[str, SecretStr]) -> bool:
    """Both parts compared in constant time, always both, so timing tells nothing about either."""
    id_ok = hmac.compare_digest(given[0].encode(), expected[0].encode())
    secret_ok = hmac.compare_digest(given[1].encode(), expected[1].get_secret_value().encode())
    return id_ok and secret_ok


class Workspace(_Strict):
    org_id: int = 1
    account_id: int = 1
    workspace_id: int = 1
    name: str = "demo"


class Input(_Strict):
    """A platform or feed input; its key/secret authenticate Events API calls."""

    id: int
    name: str
    kind: Literal["platform", "feed"] = "platform"
    platform: str = "server"
    key: str = Field(min_length=1)
    secret: Secret | None = None
    """In clear only in a workspace file (the store's seed) or for an input that takes signed IDSync requests."""
    secret_hash: str | None = None
    """The salted hash the store keeps (cdp_actors/access/keys.py): what Basic authentication is verified against."""
    key_revision: int = Field(default=1, ge=1)
    """Raised by every rotation or revocation of this input's key: cached verifications of another revision fail."""
    signed_requests: bool = False
    """Whether the input takes IDSync requests signed with `x-mp-signature` (an HMAC keyed with the secret itself):
    only such an input keeps its secret in the store (encrypted at rest); every other keeps only its hash."""

    @model_validator(mode="after")
    def _has_a_secret(self) -> Input:
        if self.secret is None and self.secret_hash is None:
            raise ValueError("an input needs a secret (or, in the configuration store, its secret_hash)")
        if self.signed_requests and self.secret is None:
            raise ValueError(".secret: an input that takes signed requests needs its secret, not only its hash")
        return self

    def clear_secret(self) -> str:
        """The secret as a workspace file gives it (benchmarks and tests sign their requests with it)."""
        if self.secret is None:
            raise ValueError(f"input {self.id} holds only its secret's hash")
        return self.secret.get_secret_value()

    def credentials_match(self, key: str, secret: str) -> bool:
        if self.secret is None:
            return False
        return credentials_match((key, secret), (self.key, self.secret))


class Output(_Strict):
    id: int
    name: str
    kind: str
    settings: SerializeAsAny[BaseModel]
    """The integration's own settings model (`integrations/<kind>.py`), validated on load."""
    new_data_points: Literal["forward", "block"] = "forward"
    """What the connections' data filters do with data points they do not list."""

    @model_validator(mode="before")
    @classmethod
    def _typed_settings(cls, data: Any) -> Any:
        from cdp_actors.integrations.registry import settings_model

        if not isinstance(data, dict) or isinstance(data.get("settings"), BaseModel):
            return data
        try:
            model = settings_model(str(data.get("kind")))
            return {**data, "settings": model.model_validate(data.get("settings") or {})}
        except ValidationError as error:  # reported under the output's path, field by field (see _describe)
            raise ValueError(
                "\n".join(f".settings.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            ) from None


class DataFilters(_Strict):
    """Per data point: true forwards it, false blocks it; unlisted ones follow the output's
    `new_data_points` default. Event names are matched as written; attributes by key."""

    event_types: dict[str, bool] = {}
    event_names: dict[str, bool] = {}
    event_attributes: dict[str, bool] = {}
    user_attributes: dict[str, bool] = {}
    user_identities: dict[str, bool] = {}


class ForwardingRule(_Strict):
    """`only_forward` / `do_not_forward` data matching a condition:
    - `event_attribute` (per event) or `user_attribute` (per batch) `name` equal to `value` (or present);
    - `gdpr`: purpose `name` consented; `ccpa_data_sale_opt_out`: the user opted out of data sale;
    - `identity`: the user has identity type `name` (equal to `value` when given)."""

    on: Literal["event_attribute", "user_attribute", "gdpr", "ccpa_data_sale_opt_out", "identity"]
    action: Literal["only_forward", "do_not_forward"]
    name: str = ""
    value: str | None = None

    @model_validator(mode="after")
    def _needs_name(self) -> ForwardingRule:
        if self.on != "ccpa_data_sale_opt_out" and not self.name:
            raise ValueError(f"a rule on {self.on} needs a name")
        return self


class Connection(_Strict):
    id: int
    name: str = ""
    input: int
    output: int
    active: bool = True
    environments: list[Literal["production", "development"]] = ["production", "development"]
    filters: DataFilters = DataFilters()
    rules: list[ForwardingRule] = []
    sample_percent: float = Field(default=100.0, ge=0, le=100)
    """Share of users whose data flows, chosen deterministically by MPID."""
    min_app_version: str | None = None
    """Batches from an older `application_info.application_version` do not flow."""


if TYPE_CHECKING:
    IdentityType = str  # a type checker cannot read a Literal built from a tuple at run time
else:
    IdentityType = Literal[ALL_TYPES]  # pydantic refuses any other name, listing the known ones


class Identity(_Strict):
    """IDSync settings; unset lists take the strategy's documented defaults (cdp_actors/identity/strategy.py)."""

    strategy: Literal["profile_conversion", "profile_link", "profile_isolation", "best_match"] = "profile_conversion"
    priority: list[IdentityType] | None = None
    unique_ids: list[IdentityType] | None = None
    login_ids: list[IdentityType] | None = None
    immutable_ids: list[IdentityType] = []
    """Immutable IDs are also unique and login IDs; they cannot be modified."""

    @model_validator(mode="after")
    def _strategy_allows_keys(self) -> Identity:
        if self.strategy == "best_match" and (self.unique_ids or self.login_ids or self.immutable_ids):
            raise ValueError("best_match has no unique, login or immutable IDs")
        return self

    def policy(self) -> Policy:
        return Policy.of(self.strategy, self.priority, self.unique_ids, self.login_ids, self.immutable_ids)


class ApiClient(_Strict):
    """OAuth client credentials (`POST /oauth/token`) for one API, with the permission level API Credential
    Management offers it (https://docs.mparticle.com/developers/credential-management/): the Platform API (and
    our `/cdp/*` admin endpoints) Admin or User, the Profile API Read Only."""

    client_id: str = Field(min_length=1)
    client_secret: Secret
    api: Api = Api.PROFILE
    role: Role = Role.READ_ONLY
    token_ttl_s: int = Field(default=TOKEN_TTL_S, gt=0)

    @model_validator(mode="after")
    def _credential_level(self) -> ApiClient:
        if self.role not in CREDENTIAL_ROLES[self.api]:
            levels = ", ".join(sorted(r.value for r in CREDENTIAL_ROLES[self.api]))
            raise ValueError(f".role: the {self.api.value} API's credentials are {levels}")
        return self

    def grant(self) -> Grant:
        return credential_grant(self.api, self.role)

    def credentials_match(self, client_id: str, secret: str) -> bool:
        return credentials_match((client_id, secret), (self.client_id, self.client_secret))


def _password_or_none(value: Any) -> Any:
    """`${CDP_ADMIN_PASSWORD}` with the variable unset is no password (one is generated at first start), not an
    error; any other reference is expanded as usual."""
    if isinstance(value, str) and (match := _WHOLE_ENV_REF.fullmatch(value.strip())):
        return os.environ.get(match.group(1))
    return expand_env(value)


_WHOLE_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConsoleUser(_Strict):
    """A person who logs in to the admin endpoints (`POST /cdp/login`) with one role in this workspace."""

    name: str = Field(min_length=1, max_length=256)
    role: Role
    password: Annotated[SecretStr | None, BeforeValidator(_password_or_none)] = None
    """In clear only here (usually `${CDP_ADMIN_PASSWORD}`); only its argon2 hash is stored, in the data
    directory. Unset: a password is generated and printed once at the first start."""
    password_hash: str | None = None
    """The argon2 hash of a password set through the Platform API (`/platform/v1/users`): the configuration store
    keeps it, and it takes precedence over `password` and the data directory's `users.json`."""


class Limits(_Strict):
    max_batch_bytes: int = Field(default=128 * 1024, gt=0)
    max_request_bytes: int = Field(default=256 * 1024, gt=0)
    max_bulk_batches: int = Field(default=100, gt=0)
    max_intake_lag_batches: int = Field(default=20_000, gt=0)
    """Past this many accepted-but-unprocessed batches the Events API answers 429."""
    max_queued_requests: int = Field(default=32, ge=1)
    """HTTP requests Serve holds for the Events and Identity APIs beyond what their replicas are working on
    (`runtime.ingest_max_ongoing_requests` each); past it they are answered 429 with `Retry-After`, so a
    flood costs bounded memory instead of an ever longer proxy queue."""
    dedupe_retention_days: int = Field(default=30, gt=0)


class Retry(_Strict):
    max_attempts: int = Field(default=8, ge=1)
    base_delay_s: float = Field(default=0.5, gt=0)
    max_delay_s: float = Field(default=60.0, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    max_age_s: float = Field(default=86_400.0, gt=0)
    """A batch not delivered this long after its receipt (its output down, its breaker open) is dropped with
    a Fatal `Retry Count Exceeded` alert: what bounds the outbox of an output that never comes back."""
    breaker_failures: int = Field(default=10, ge=1)
    """Consecutive failed attempts (no answer, or a retryable status) that open an output's circuit breaker."""
    breaker_open_s: float = Field(default=1.0, gt=0)
    """Seconds an open breaker holds the output's lanes before one probe; doubled after each failed probe."""
    breaker_max_open_s: float = Field(default=10.0, gt=0)
    """The longest an open breaker waits before a probe, in seconds."""

    @model_validator(mode="after")
    def _breaker_waits_grow(self) -> Retry:
        if self.breaker_max_open_s < self.breaker_open_s:
            raise ValueError("breaker_max_open_s must be at least breaker_open_s")
        return self


class Runtime(_Strict):
    shards: int = Field(default=2, ge=1, le=256)
    forwarders: int = Field(default=1, ge=1, le=64)
    ingest_replicas: int = Field(default=1, ge=1)
    ingest_max_ongoing_requests: int = Field(default=32, ge=1)
    """Requests one Events API replica works on at once (each is one intake call). With the queue bound this
    caps the time an accepted request waits: about (ongoing + queued) / requests per second."""
    max_chunk_batches: int = Field(default=2000, ge=1)
    history_per_user: int = Field(default=200, ge=0)
    forwarder_window: int = Field(default=500, ge=1)
    """Undelivered outbox rows a shard hands to one forwarder, per output, at a time; the rest wait in LMDB.
    500 keeps a coalescing output's requests full (8 in flight × 100 batches across two shards); more only
    adds rows (and their coroutines) for the forwarder's garbage collector to scan."""
    output_concurrency: int = Field(default=64, ge=1)
    max_buffered_audience_changes: int = Field(default=100_000, ge=1)
    """Membership changes an audience output's bulk queue holds per audience before refusing more."""


class CalculatedAttribute(_Strict):
    """A calculated attribute (https://docs.mparticle.com/developers/apis/platform/ , v2 "Calculated attributes"):
    changes go to `draft_definition`; activation moves the draft to `active_definition` and raises `generation`,
    and the shards then backfill the new definition from the stored history and keep it up to date."""

    id: int
    name: str = Field(min_length=1, max_length=256)
    description: str = ""
    draft_definition: Definition | None = None
    active_definition: Definition | None = None
    generation: int = Field(default=0, ge=0)
    """How many times it was activated: shards keep state per (id, generation), so a new definition starts clean."""
    created_by: str = ""
    created_on: str = ""
    last_modified_by: str = ""
    last_modified_on: str = ""
    activated_by: str | None = None
    activated_on: str | None = None


class Audience(_Strict):
    """An audience (https://docs.mparticle.com/developers/apis/platform/audiences/): criteria over one user,
    evaluated by the shards in real time (or on demand for `standard`), members sent to `connected_outputs`."""

    id: int
    name: str = Field(min_length=1, max_length=256)
    external_name: str = ""
    kind: Literal["real_time", "standard"] = "real_time"
    workspaces: list[int] = [1]
    criteria: Node
    connected_outputs: list[int] = []
    """Audience outputs (and webhook / firehose outputs) receiving this audience's membership changes."""
    created_by: str = ""
    created_on: str = ""
    last_modified_by: str = ""
    last_modified_on: str = ""


class Telemetry(_Strict):
    exporter: Literal["none", "console", "file"] = "none"
    file: str = "spans.jsonl"
    """With exporter ``file``: where spans go, relative to the data dir."""


class Dsr(_Strict):
    """Data subject requests (https://docs.mparticle.com/developers/apis/dsr-api/v3/)."""

    waiting_period_s: int = Field(default=7 * 86_400, ge=0)
    """A request stays pending (cancellable) this long before it is processed: mParticle's 7 days by default;
    `skip_waiting_period` in a request makes it 0. Tests and demos use seconds."""
    processor_domain: str = Field(default="opendsr.mparticle.com", min_length=1)
    """`X-OpenDSR-Processor-Domain` of answers and callbacks, and the name the signing certificate is issued to."""
    requests_per_minute: int = Field(default=1_000, ge=1)
    """DSR API calls (create, status, group, cancel, discovery) per minute per workspace: mParticle's limit."""
    requests_per_day: int = Field(default=80_000, ge=1)
    """New requests per UTC day per workspace: mParticle's limit."""


class Gpc(_Strict):
    """What a Global Privacy Control signal (https://globalprivacycontrol.github.io/gpc-spec/) means for the user:
    exactly one of CCPA's data-sale opt-out (`data_sale_opt_out` consented) or a GDPR purpose not consented."""

    ccpa_data_sale_opt_out: bool = False
    gdpr_purpose: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_meaning(self) -> Gpc:
        if self.ccpa_data_sale_opt_out == (self.gdpr_purpose is not None):
            raise ValueError("set exactly one of ccpa_data_sale_opt_out: true or gdpr_purpose: NAME (or gpc: off)")
        return self


def _gpc_off(value: Any) -> Any:
    """`gpc: off` (YAML reads a bare `off` as false), `false` or null: GPC signals are ignored."""
    return None if value in (False, None, "off") else value


class Privacy(_Strict):
    gpc: Annotated[Gpc | None, BeforeValidator(_gpc_off)] = Gpc(ccpa_data_sale_opt_out=True)
    """GPC is honoured by default as the CCPA opt-out of sale (California treats it as one); `off` ignores it."""


class WorkspaceConfig(_Strict):
    workspace: Workspace = Workspace()
    inputs: list[Input] = Field(min_length=1)
    outputs: list[Output] = []
    connections: list[Connection] = []
    identity: Identity = Identity()
    api_clients: list[ApiClient] = []
    users: list[ConsoleUser] = []
    calculated_attributes: list[CalculatedAttribute] = []
    audiences: list[Audience] = []
    limits: Limits = Limits()
    retry: Retry = Retry()
    runtime: Runtime = Runtime()
    telemetry: Telemetry = Telemetry()
    dsr: Dsr = Dsr()
    privacy: Privacy = Privacy()

    @model_validator(mode="after")
    def _references_resolve(self) -> WorkspaceConfig:
        from cdp_actors.integrations.registry import takes_events, takes_memberships

        for kind, items in (("inputs", self.inputs), ("outputs", self.outputs), ("connections", self.connections)):
            ids = [item.id for item in items]
            if len(ids) != len(set(ids)):
                raise ValueError(f"{kind}: ids must be unique, got {ids}")
        for kind, names in (
            ("api_clients", [c.client_id for c in self.api_clients]),
            ("users", [u.name for u in self.users]),
        ):
            if len(names) != len(set(names)):
                raise ValueError(f"{kind}: names must be unique, got {names}")
        keys = [i.key for i in self.inputs]
        if len(keys) != len(set(keys)):
            raise ValueError("inputs: keys must be unique")
        input_ids = {i.id for i in self.inputs}
        output_ids = {o.id for o in self.outputs}
        for n, conn in enumerate(self.connections):
            if conn.input not in input_ids:
                raise ValueError(f"connections[{n}].input: no input with id {conn.input}")
            if conn.output not in output_ids:
                raise ValueError(f"connections[{n}].output: no output with id {conn.output}")
            kind = next(o.kind for o in self.outputs if o.id == conn.output)
            if not takes_events(kind):
                raise ValueError(f"connections[{n}].output: {kind} takes audience memberships, not event data")
        check_audiences(self.audiences, {ca.name for ca in self.calculated_attributes})
        kinds = {o.id: o.kind for o in self.outputs}
        for n, audience in enumerate(self.audiences):
            for m, output_id in enumerate(audience.connected_outputs):
                where = f"audiences[{n}].connected_outputs[{m}]"
                if output_id not in kinds:
                    raise ValueError(f"{where}: no output with id {output_id}")
                if not takes_memberships(kinds[output_id]):
                    raise ValueError(f"{where}: {kinds[output_id]} does not take audience memberships")
        return self

    def active_calculated_attributes(self) -> list[CalculatedAttribute]:
        return [ca for ca in self.calculated_attributes if ca.active_definition is not None]

    def real_time_audiences(self) -> list[Audience]:
        return [a for a in self.audiences if a.kind == "real_time"]

    def input_by_key(self, key: str) -> Input | None:
        return next((i for i in self.inputs if hmac.compare_digest(i.key.encode(), key.encode())), None)

    def active_connections(self, input_id: int) -> list[Connection]:
        return [c for c in self.connections if c.active and c.input == input_id]

    def with_output_url(self, output_id: int, url: str) -> WorkspaceConfig:
        """A copy whose webhook output points elsewhere (the benchmark and tests use local sinks)."""
        return self.with_output_settings(output_id, url=url)

    def with_output_settings(self, output_id: int, **settings: Any) -> WorkspaceConfig:
        """A copy with some of one output's settings replaced."""
        outputs = [
            o.model_copy(update={"settings": o.settings.model_copy(update=settings)}) if o.id == output_id else o
            for o in self.outputs
        ]
        return self.model_copy(update={"outputs": outputs})


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        for line in item["msg"].removeprefix("Value error, ").split("\n"):
            # A validator may name fields below its own path as ".sub.field: message".
            lines.append(f"{path}{line}" if line.startswith(".") else f"{path or '<root>'}: {line}")
    return "\n".join(lines)


def parse_workspace(data: Any, source: str = "<workspace>") -> WorkspaceConfig:
    try:
        return WorkspaceConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source} is invalid:\n{_describe(error)}") from None


def load_workspace(path: str | Path) -> WorkspaceConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return parse_workspace(data, str(path))
