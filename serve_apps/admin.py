"""Our own additions under `/cdp`: alerts, pipeline status, user search, detail and edit, reports, the audit log;
logging in.

Every route but `GET /cdp/health`, `POST /cdp/login` and `POST /cdp/logout` declares its permission
(`needs(Permission.X)`, the one check of serve_apps/access.py): a bearer token from `POST /oauth/token` or a
session cookie from `POST /cdp/login`, and a role that has the permission."""

# No `from __future__ import annotations` here: FastAPI must see the endpoint annotations as real types.
import asyncio
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import ray
import ray.exceptions
from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool
from ray import serve
from starlette.responses import Response

from cdp_actors import handles
from cdp_actors.access.passwords import MAX_PASSWORD_CHARS, Password
from cdp_actors.access.roles import Permission
from cdp_actors.access.sessions import CSRF_HEADER, SESSION_COOKIE, clear_cookie, set_cookie
from cdp_actors.audiences.standard import RUNS_DIR, latest_run
from cdp_actors.audit import DEFAULT_PAGE, AuditFilter, AuditPage
from cdp_actors.audit import MAX_PAGE as MAX_AUDIT_PAGE
from cdp_actors.config import WorkspaceConfig
from cdp_actors.dsr.wire import Received, console_request, console_row
from cdp_actors.errors import BadRequest, NotFound, Overloaded, Unauthorized
from cdp_actors.intake.deadletter import MAX_PAGE
from cdp_actors.platform.audiences import audience_size, merged_stats
from cdp_actors.profiles.views import backfill_summary, identity_report, user_detail
from cdp_actors.reports import DAY_MS, activity_rows, counter_key, day_range, day_text, forwarding_report
from cdp_actors.schema.events import BatchError, decode_batch
from cdp_actors.schema.identity import RequestError, check_identity_value, required_mpid
from cdp_actors.schema.identity_types import canonical, is_device_type
from cdp_actors.telemetry import now_ms
from serve_apps.access import Access, Principal, access_of, needs, now_s
from serve_apps.errors import RETRY_AFTER_S, install_error_handlers, json_response, unavailable
from serve_apps.live import LiveConfig

DEFAULT_ALERT_WINDOW_MS = 12 * 3600 * 1000
PROFILE_EDIT_ACTION = "edit"
"""How the audit log names a User Activity edit of a profile (target `profile:<mpid>`); a console user's session
is recorded as `login` and `logout` (target `user:<name>`)."""
_log = logging.getLogger(__name__)
app = FastAPI(title="cdp admin", docs_url=None, redoc_url=None)


install_error_handlers(app)


def parse_time_ms(value: str) -> int:
    """Epoch milliseconds, or an ISO-8601 timestamp (UTC unless it says otherwise)."""
    if value.isdigit():
        return int(value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


class DsrSubmission(BaseModel):
    """A data subject request for one profile, from its User Activity detail."""

    model_config = ConfigDict(extra="forbid")

    subject_request_type: Literal["erasure", "access", "portability"]
    regulation: Literal["gdpr", "ccpa"] = "gdpr"
    skip_waiting_period: StrictBool = False


DSR_SUBMIT_ACTION = "dsr.submit"
MAX_DSR_LISTING = 1000


class ProfileEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_id: int
    environment: Literal["production", "development"] = "production"
    user_attributes: dict[str, str | int | float | bool | list[str] | None] = {}
    deleted_user_attributes: list[str] = []
    gdpr: dict[str, StrictBool] = {}
    """Consent per GDPR purpose: true or false only."""
    ccpa_data_sale_opt_out: StrictBool | None = None
    identities: dict[str, str] = {}

    def check(self) -> None:
        """What the batch built from this edit could not say with this body's paths; raises RequestError."""
        for name, value in self.user_attributes.items():
            if isinstance(value, float) and not math.isfinite(value):  # Python's JSON parser lets NaN through
                raise RequestError(
                    f'Attribute values must be finite numbers, got {value} - at `$.user_attributes["{name}"]`'
                )
        for name, value in self.identities.items():
            check_identity_value(value, f"$.identities.{name}")

    def batch(self, mpid: int, now: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "mpid": mpid,
            "environment": self.environment,
            "events": [],
            "timestamp_unixtime_ms": now,
        }
        if self.user_attributes:
            body["user_attributes"] = self.user_attributes
        if self.deleted_user_attributes:
            body["deleted_user_attributes"] = self.deleted_user_attributes
        consent: dict[str, Any] = {}
        if self.gdpr:
            consent["gdpr"] = {p: {"consented": c, "timestamp_unixtime_ms": now} for p, c in self.gdpr.items()}
        if self.ccpa_data_sale_opt_out is not None:
            consent["ccpa"] = {
                "data_sale_opt_out": {"consented": self.ccpa_data_sale_opt_out, "timestamp_unixtime_ms": now}
            }
        if consent:
            body["consent_state"] = consent
        user, device = split_identities(self.identities)
        if user:
            body["user_identities"] = user
        if device:
            body["device_info"] = device
        return body


def split_identities(identities: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    user, device = {}, {}
    for name, value in identities.items():
        identity_type = canonical(name) or name  # an unknown name fails the batch validation, with its path
        (device if is_device_type(identity_type) else user)[identity_type] = value
    return user, device


_EDIT_PATHS = (
    ("$.user_identities.", "$.identities."),
    ("$.device_info.", "$.identities."),
    ("$.consent_state.gdpr", "$.gdpr"),
    ("$.consent_state.ccpa", "$.ccpa_data_sale_opt_out"),
)
"""Paths in the batch an edit becomes, and the edit body's paths they come from."""


def edit_error(message: str) -> str:
    """A batch validation error, naming the path in the edit's body."""
    for batch_path, edit_path in _EDIT_PATHS:
        message = message.replace(f"`{batch_path}", f"`{edit_path}")
    return message


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=256)
    password: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    """A SecretStr: never in a repr, a log line or an error message."""


def report_days(since: str | None, until: str | None) -> tuple[int, int]:
    try:
        return day_range(since, until, now_ms())
    except ValueError:
        raise BadRequest("dates must be YYYY-MM-DD (UTC)") from None


async def record_audit(actor: str, action: str, target: str, after: Any = None, personal: bool = False) -> None:
    """An audit entry for what already happened (an accepted profile edit, a login). What it records stands even if
    this fails: the failure is logged, and the answer stays the same, so that a client does not do it again."""
    try:
        await handles.control().audit.remote(actor, action, target, None, after, personal)
    except (ray.exceptions.RayError, ValueError) as error:  # ValueError: the control actor is not registered
        _log.error("the audit entry %s %s by %r was not recorded: %s", action, target, actor, type(error).__name__)


def _name_connection(config: WorkspaceConfig, entry: dict[str, Any]) -> None:
    connection = next((c for c in config.connections if c.id == entry["connection_id"]), None)
    entry["connection"] = connection.name if connection else ""
    if entry["connection_id"] == 0:  # processing alerts (a dead-lettered batch): no connection involved
        entry["connection"] = "(processing: no connection)"
    output = next((o for o in config.outputs if o.id == entry["output_id"]), None)
    entry["output"] = output.name if output else ""
    for kind in entry["types"]:
        for item in kind["inputs"]:
            source = next((i for i in config.inputs if i.id == item["input_id"]), None)
            item["input"] = source.name if source else ""


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=32,
    graceful_shutdown_timeout_s=5,  # requests are short; a stop should not wait Serve's default 20 s
    graceful_shutdown_wait_loop_s=1,
)
@serve.ingress(app)
class AdminApi:
    def __init__(self, config: WorkspaceConfig, data_dir: str) -> None:
        self.live = LiveConfig.plain()
        self.runtime = config.runtime  # fixed until a restart
        self.runs_dir = Path(data_dir) / RUNS_DIR
        app.state.access = Access(config, data_dir, follow=True)

    @app.get("/health")
    async def health(self) -> Response:
        """Open to anyone, and says nothing but that this app answers."""
        return json_response(200, {"status": "ok"})

    @app.post("/login")
    async def login(self, request: Request, body: Login) -> Response:
        """A console user's session: the cookie (HttpOnly, SameSite=Strict) and, in the body, the CSRF token that
        every state-changing request with that cookie sends back in `X-CSRF-Token`."""
        access = access_of(request)
        started = await access.login(body.user, Password(body.password.get_secret_value()))
        secure = request.url.scheme == "https"
        role = access.roles[body.user]
        response = json_response(200, {"user": body.user, "role": role.value, "csrf_token": started.csrf_token})
        response.headers["Set-Cookie"] = set_cookie(started.session_id, secure)
        await record_audit(body.user, "login", f"user:{body.user}")
        return response

    @app.post("/logout")
    async def logout(self, request: Request) -> Response:
        """Ends the cookie's session on every replica (with its CSRF token, as any state change)."""
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            raise Unauthorized("Log in: the session is missing, expired or ended.")
        user = await handles.sessions().resume.remote(session_id, now_s(), "POST", request.headers.get(CSRF_HEADER))
        await handles.sessions().end.remote(session_id)
        await record_audit(user, "logout", f"user:{user}")
        response = Response(status_code=204)
        response.headers["Set-Cookie"] = clear_cookie(request.url.scheme == "https")
        return response

    @app.get("/alerts", dependencies=[needs(Permission.ALERTS_READ)])
    async def alerts(
        self, since: str | None = None, until: str | None = None, environment: str | None = Query(None)
    ) -> Response:
        now = now_ms()
        try:
            until_ms = parse_time_ms(until) if until else now
            since_ms = parse_time_ms(since) if since else until_ms - DEFAULT_ALERT_WINDOW_MS
        except ValueError:
            raise BadRequest("since/until must be epoch milliseconds or ISO-8601 timestamps") from None
        if environment not in (None, "production", "development"):
            raise BadRequest("environment must be production or development")
        connections = await handles.alerts().summary.remote(since_ms, until_ms, environment)
        config = (await self.live.fresh()).config
        for entry in connections:
            _name_connection(config, entry)
        return json_response(
            200,
            {"since_ms": since_ms, "until_ms": until_ms, "environment": environment, "connections": connections},
        )

    @app.get("/status", dependencies=[needs(Permission.STATUS_READ)])
    async def status(self) -> Response:
        runtime = self.runtime
        intake, dispatcher, dead_letter, identity, shards, forwarders, backfills = await asyncio.gather(
            handles.intake().status.remote(),
            handles.dispatcher().status.remote(),
            handles.dispatcher().dead_letter_summary.remote(),
            handles.identity().stats.remote(),
            asyncio.gather(*(shard.stats.remote() for shard in handles.shards(runtime.shards))),
            asyncio.gather(*(forwarder.status.remote() for forwarder in handles.forwarders(runtime.forwarders))),
            asyncio.gather(*(shard.backfill_status.remote() for shard in handles.shards(runtime.shards))),
        )
        return json_response(
            200,
            {
                "intake": intake,
                "dispatcher": dispatcher,
                "dead_letter": dead_letter,
                "identity": identity,
                "shards": shards,
                "forwarders": forwarders,
                "calculated_attributes": backfill_summary(backfills),
            },
        )

    @app.get("/audiences", dependencies=[needs(Permission.AUDIENCES_READ)])
    async def audiences(self) -> Response:
        """Each audience with its kind, size and membership adds / drops per UTC day (real-time audiences, as the
        shards count them; `null` while they do not); a standard audience's size is its last run's."""
        config = (await self.live.fresh()).config
        stats = await self._audience_stats()
        rows = []
        for audience in config.audiences:
            counted = (stats or {}).get(audience.id, {})
            last = latest_run(self.runs_dir, audience.id) if audience.kind == "standard" else None
            rows.append({"id": audience.id, "name": audience.name, "kind": audience.kind,
                         "size": audience_size(audience, stats, last),
                         "calculated_at_ms": last.calculated_at_ms if last else None,
                         "adds": dict(sorted(counted.get("adds", {}).items())),
                         "drops": dict(sorted(counted.get("drops", {}).items())),
                         "connected_outputs": audience.connected_outputs})  # fmt: skip
        return json_response(200, {"audiences": rows})

    async def _audience_stats(self) -> dict[int, dict[str, Any]] | None:
        """The shards' counts per real-time audience, None while the shards do not keep them."""
        try:
            calls = [shard.audience_stats.remote() for shard in handles.shards(self.runtime.shards)]
        except AttributeError:
            return None
        return merged_stats(await asyncio.gather(*calls))

    @app.get("/deadletter")
    async def dead_letters(
        self,
        request: Request,
        principal: Annotated[Principal, needs(Permission.DEAD_LETTERS_READ)],
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        after: int = Query(0, ge=0),
        include_body: bool = False,
    ) -> Response:
        """Batches set aside because applying them failed on their own, oldest first; `after` is the last seq of
        the previous page (`next_after`). The raw batch (personal data) only with `include_body=true`, for a role
        that may see it."""
        if include_body:
            access_of(request).authorize(principal, Permission.DEAD_LETTER_BODIES_READ)
        page = await handles.dispatcher().dead_letters.remote(after, limit, include_body)
        return json_response(200, page)

    async def _shard_profile(self, mpid: int) -> dict[str, Any] | None:
        return await handles.shard_for(mpid, self.runtime.shards).profile.remote(mpid)

    @app.get("/users/search", dependencies=[needs(Permission.USER_ACTIVITY_SEARCH)])
    async def search(self, identity_type: str, value: str) -> Response:
        """Exact match on any identity; several profiles may hold a non-unique one."""
        canonical_type = canonical(identity_type)
        if canonical_type is None:
            raise BadRequest(f"Unknown identity type {identity_type!r}")
        holders = await handles.identity().holders.remote(canonical_type, value)
        profiles = await asyncio.gather(*(self._shard_profile(mpid) for mpid, _ in holders))
        users = [user_detail(mpid, record, profile) for (mpid, record), profile in zip(holders, profiles, strict=True)]
        for user in users:
            user.pop("recent_events")
        return json_response(200, {"identity_type": canonical_type, "value": value, "users": users})

    @app.get("/users/{mpid}", dependencies=[needs(Permission.USER_ACTIVITY_READ)])
    async def user(self, mpid: str) -> Response:
        value = required_mpid(mpid, "mpid")
        record, profile = await asyncio.gather(handles.identity().record.remote(value), self._shard_profile(value))
        if record is None and profile is None:
            raise NotFound(f"No profile with mpid {value}")
        return json_response(200, user_detail(value, record, profile))

    @app.post("/users/{mpid}/edit")
    async def edit(
        self, mpid: str, edit: ProfileEdit, principal: Annotated[Principal, needs(Permission.USER_ACTIVITY_EDIT)]
    ) -> Response:
        """Attributes, consent and identities change through an eventless batch from a chosen input, so
        connected outputs receive the change like any other. Once accepted, the edit is in the audit log as
        personal data: who, which profile, which paths; no values."""
        value = required_mpid(mpid, "mpid")
        if not any(i.id == edit.input_id for i in (await self.live.fresh()).config.inputs):
            raise BadRequest(f"input_id: no input with id {edit.input_id}")
        edit.check()
        try:
            raw = msgspec.json.encode(edit.batch(value, now_ms()))
        except UnicodeEncodeError:  # a lone surrogate, which Python's JSON parser lets through
            raise BadRequest("Text must be valid Unicode (no lone surrogates)", "$") from None
        try:
            decode_batch(raw)
        except BatchError as error:
            raise BadRequest(edit_error(error.message)) from None
        record = await handles.identity().record.remote(value)
        if record is None or record.orphaned:  # the batch's mpid would not resolve to it (resolve_batch)
            raise NotFound(f"No profile with mpid {value}")
        try:
            result = await handles.intake().append.remote(edit.input_id, now_ms(), [(None, raw)])
        except ray.exceptions.RayError as error:
            raise unavailable(error, "Intake") from error
        if result.overloaded:
            raise Overloaded("Intake is behind; retry later.", RETRY_AFTER_S)
        if result.refused:
            raise BadRequest(result.refused, "$")
        fields = edit.model_dump(exclude_defaults=True)
        await record_audit(principal.name, PROFILE_EDIT_ACTION, f"profile:{value}", fields, personal=True)
        return Response(status_code=202)

    @app.get("/dsr", dependencies=[needs(Permission.DSR_READ)])
    async def dsr_requests(self, limit: int = Query(100, ge=1, le=MAX_DSR_LISTING)) -> Response:
        """The newest data subject requests with their state (any API version or the console submitted them)."""
        rows = await handles.dsr().listing.remote(limit)
        requests = [console_row(r, p.steps_done, p.attempts, p.last_error) for r, p in rows]
        return json_response(200, {"requests": requests})

    @app.post("/users/{mpid}/dsr")
    async def submit_dsr(
        self,
        request: Request,
        mpid: str,
        submission: DsrSubmission,
        principal: Annotated[Principal, needs(Permission.DSR_WRITE)],
    ) -> Response:
        """A request for this profile (its MPID the only identity), processed like one from the DSR API. The
        console has no input key: the request counts as the workspace's first input's (partners connected to it
        are told)."""
        value = required_mpid(mpid, "mpid")
        config = (await self.live.fresh()).config
        received = Received(config.inputs[0].id, now_ms(), config.dsr.waiting_period_s * 1000)
        dsr_request = console_request(
            value, submission.subject_request_type, submission.regulation, submission.skip_waiting_period, received
        )
        await handles.dsr().create.remote(dsr_request, f"{request.url.scheme}://{request.url.netloc}")
        fields = submission.model_dump()
        await record_audit(principal.name, DSR_SUBMIT_ACTION, f"profile:{value}", fields, personal=True)
        return json_response(201, {"subject_request_id": dsr_request.subject_request_id, "request_status": "pending"})

    @app.get("/audit", dependencies=[needs(Permission.AUDIT_READ)])
    async def audit(
        self,
        order: Literal["asc", "desc"] = "desc",
        after_id: int | None = Query(None, ge=0),
        before_id: int | None = Query(None, ge=1),
        limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_AUDIT_PAGE),
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since_ms: int | None = Query(None, ge=0),
        until_ms: int | None = Query(None, ge=0),
    ) -> Response:
        """Every change through the Platform API and the admin endpoints: newest first (`before_id` = the previous
        page's `next`), or oldest first with `order=asc` (`after_id` = the previous page's `next`), filtered by
        actor, action, target (`output:*` for a prefix) and time. Secrets are masked; profile edits show paths."""
        if order == "desc" and after_id is not None:
            raise BadRequest("after_id pages oldest first: give order=asc, or before_id", "after_id")
        if order == "asc" and before_id is not None:
            raise BadRequest("before_id pages newest first: give order=desc, or after_id", "before_id")
        filters = AuditFilter(actor, action, target, since_ms, until_ms)
        cursor = after_id if order == "asc" else before_id
        page: AuditPage = await handles.control().audit_page.remote(order, cursor, limit, filters)
        return json_response(200, {"data": msgspec.to_builtins(page.entries), "next": page.next_cursor})

    async def _counts(self, first_hour: int, last_hour: int) -> list[tuple[str, int]]:
        """Report counters of every shard and of the alert store for hours first..last (UTC)."""
        first, last = counter_key(first_hour, "", "", 0)[:10], counter_key(last_hour + 1, "", "", 0)[:10]
        shards = handles.shards(self.runtime.shards)
        parts = await asyncio.gather(
            handles.alerts().counts.remote(first, last), *(shard.counts.remote(first, last) for shard in shards)
        )
        return [item for part in parts for item in part]

    @app.get("/reports/forwarding", dependencies=[needs(Permission.REPORTS_READ)])
    async def forwarding(self, date: str | None = None, hour: int | None = Query(None, ge=0, le=23)) -> Response:
        """Event Forwarding: inbound counts per message type and event name, outbound per output (UTC)."""
        _, day = report_days(date, date)
        first = day * 24 + (hour or 0)
        last = first if hour is not None else first + 23
        names = {o.id: (o.name, o.kind) for o in (await self.live.fresh()).config.outputs}
        report = forwarding_report(await self._counts(first, last), names)
        return json_response(200, {"date": day_text(day), "hour": hour, **report})

    @app.get("/reports/activity", dependencies=[needs(Permission.REPORTS_READ)])
    async def activity(
        self,
        since: str | None = None,
        until: str | None = None,
        environment: Literal["production", "development"] | None = None,
        input_id: int | None = None,
    ) -> Response:
        """Activity overview per UTC day: events received and forwarded, Fatal alerts, active users, sessions,
        revenue. Active users are counted per input, whatever the environment."""
        first, last = report_days(since, until)
        shards = handles.shards(self.runtime.shards)
        counts, fatal, activity = await asyncio.gather(
            self._counts(first * 24, last * 24 + 23),
            handles.alerts().fatal_by_day.remote(first * DAY_MS, (last + 1) * DAY_MS - 1, environment, input_id),
            asyncio.gather(*(shard.activity.remote(first, last) for shard in shards)),
        )
        active: dict[str, int] = {}
        for report in activity:
            for (day, source), entry in report.items():
                if input_id is None or source == input_id:
                    active[day_text(day)] = active.get(day_text(day), 0) + entry.active
        rows = activity_rows(counts, active, fatal, environment, input_id)
        return json_response(
            200,
            {
                "since": day_text(first),
                "until": day_text(last),
                "environment": environment,
                "input_id": input_id,
                "days": rows,
            },
        )

    @app.get("/reports/identity", dependencies=[needs(Permission.REPORTS_READ)])
    async def identity_report(self, since: str | None = None, until: str | None = None) -> Response:
        """Per day (UTC) and input: active, known and anonymous profiles, and identifier coverage."""
        first, last = report_days(since, until)
        shards = handles.shards(self.runtime.shards)
        reports = await asyncio.gather(*(shard.activity.remote(first, last) for shard in shards))
        names = {i.id: i.name for i in (await self.live.fresh()).config.inputs}
        return json_response(
            200, {"since": day_text(first), "until": day_text(last), "days": identity_report(reports, names)}
        )
