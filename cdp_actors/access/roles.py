"""Who may do what: mParticle's roles, the permissions our endpoints need, and one table between them.

Roles follow mParticle's "Users and Roles" (https://docs.mparticle.com/guides/platform-guide/users/): a person
holds one role per workspace. User Activity (search, detail, edit: personal data) needs Admin, Admin &
Compliance or Support (https://docs.mparticle.com/guides/platform-guide/activity/#user-activity); Read Only
sees what User sees and changes nothing; Compliance runs data subject requests and reads elsewhere.

API clients follow "API Credential Management" (https://docs.mparticle.com/developers/credential-management/):
a credential is granted per API with a permission level — the Platform API allows Admin or User, the Profile
API only Read Only. A `Grant` is (API, role, workspaces); a person's grants are on `Api.PLATFORM` (the console
and admin endpoints), a client's on the APIs its credential names. `Grant.permits` needs the permission's API,
the grant's workspace and `allowed(role, permission)`.

Wiring (next session): every `/cdp/*`, `/platform/*` and `/userprofile/*` handler names its permission; the Serve
app looks the route up in `ENDPOINTS` (or declares it beside the route) and calls `authorize(grants, permission,
workspace_id)` after authentication (tokens.py or sessions.py gave the grants): a frozenset membership test per
grant, ~1 µs (timeit on the loaded 2-core CI machine). `/cdp/deadletter?include_body=true` needs
`DEAD_LETTER_BODIES_READ` besides the route's own permission. `tests/unit/test_access_roles.py` walks `matrix()`;
the HTTP test of the issue walks the same table against the running apps.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cdp_actors.errors import BadRequest, Forbidden


class Api(str, enum.Enum):
    """The API a permission belongs to, as API credentials name them."""

    PLATFORM = "platform"
    """The Platform API (`/platform/*`) and our admin endpoints (`/cdp/*`): the console's surface."""
    PROFILE = "profile"
    """The Profile API (`/userprofile/*`)."""


class Role(str, enum.Enum):
    ADMIN = "admin"
    ADMIN_COMPLIANCE = "admin_compliance"
    SUPPORT = "support"
    USER = "user"
    READ_ONLY = "read_only"
    COMPLIANCE = "compliance"
    AUDIENCES_ONLY = "audiences_only"


API_ROLES: dict[Api, frozenset[Role]] = {
    Api.PLATFORM: frozenset(Role),  # a person holds any role; a Platform API credential Admin or User (below)
    Api.PROFILE: frozenset({Role.READ_ONLY}),
}
"""The roles a grant on each API may carry."""
CREDENTIAL_ROLES: dict[Api, frozenset[Role]] = {
    Api.PLATFORM: frozenset({Role.ADMIN, Role.USER}),
    Api.PROFILE: frozenset({Role.READ_ONLY}),
}
"""The permission levels API Credential Management offers per API."""


class Permission(str, enum.Enum):
    """What an endpoint needs. `.api` is the API it belongs to; `.personal` whether it shows or changes personal
    data (a profile, its identities, a raw batch)."""

    # Admin endpoints (`/cdp/*`), today's serve_apps/admin.py
    ALERTS_READ = "alerts:read"
    STATUS_READ = "status:read"
    DEAD_LETTERS_READ = "dead_letters:read"
    DEAD_LETTER_BODIES_READ = "dead_letters:read_bodies"
    REPORTS_READ = "reports:read"
    USER_ACTIVITY_SEARCH = "user_activity:search"
    USER_ACTIVITY_READ = "user_activity:read"
    USER_ACTIVITY_EDIT = "user_activity:edit"
    AUDIT_READ = "audit:read"
    # Platform API resources (issue 15, point 3)
    ACCOUNTS_READ = "accounts:read"
    WORKSPACES_READ = "workspaces:read"
    APPS_READ = "apps:read"
    APPS_WRITE = "apps:write"
    """Apps and app platforms (= inputs), including issuing and revoking their access keys."""
    SERVICES_READ = "services:read"
    """The services (= output kinds) and their settings schemas, and the configured outputs (secrets masked).
    Configuring an output is a connection change (`CONNECTIONS_WRITE`), as mParticle's
    `PUT /apps/{id}/platforms/{platform}/services` is."""
    CONNECTIONS_READ = "connections:read"
    CONNECTIONS_WRITE = "connections:write"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    """User management: console users, their roles, API credentials."""
    # Routes issues 9 and 10 add behind the same roles
    AUDIENCES_READ = "audiences:read"
    AUDIENCES_WRITE = "audiences:write"
    CALCULATED_ATTRIBUTES_READ = "calculated_attributes:read"
    CALCULATED_ATTRIBUTES_WRITE = "calculated_attributes:write"
    DSR_READ = "dsr:read"
    DSR_WRITE = "dsr:write"
    # Profile API
    PROFILE_READ = "profile:read"

    @property
    def api(self) -> Api:
        return Api.PROFILE if self is Permission.PROFILE_READ else Api.PLATFORM

    @property
    def personal(self) -> bool:
        return self in _PERSONAL

    @property
    def changes(self) -> bool:
        return self.value.endswith((":write", ":edit"))


_PERSONAL = frozenset({Permission.DEAD_LETTER_BODIES_READ, Permission.USER_ACTIVITY_SEARCH,
                       Permission.USER_ACTIVITY_READ, Permission.USER_ACTIVITY_EDIT, Permission.AUDIT_READ,
                       Permission.DSR_READ, Permission.DSR_WRITE, Permission.PROFILE_READ})  # fmt: skip
"""The audit log is personal: a profile edit's before/after holds attributes and identities."""

_CONFIGURATION_READ = frozenset({Permission.ALERTS_READ, Permission.STATUS_READ, Permission.DEAD_LETTERS_READ,
                                 Permission.REPORTS_READ, Permission.ACCOUNTS_READ, Permission.WORKSPACES_READ,
                                 Permission.APPS_READ, Permission.SERVICES_READ, Permission.CONNECTIONS_READ,
                                 Permission.AUDIENCES_READ, Permission.CALCULATED_ATTRIBUTES_READ})  # fmt: skip
"""What Read Only sees: everything but personal data and user management."""
_CONFIGURATION_WRITE = frozenset({Permission.APPS_WRITE,
                                  Permission.CONNECTIONS_WRITE, Permission.AUDIENCES_WRITE,
                                  Permission.CALCULATED_ATTRIBUTES_WRITE})  # fmt: skip
_USER_ACTIVITY = frozenset({Permission.USER_ACTIVITY_SEARCH, Permission.USER_ACTIVITY_READ,
                            Permission.USER_ACTIVITY_EDIT, Permission.DEAD_LETTER_BODIES_READ})  # fmt: skip
_USER_MANAGEMENT = frozenset({Permission.USERS_READ, Permission.USERS_WRITE, Permission.AUDIT_READ})
"""Admin's own: people, credentials, and the audit log of who changed what (which holds every actor's name and the
configuration before and after each change, masked): the Admin role (and Admin & Compliance, Admin plus privacy)."""
_PRIVACY = frozenset({Permission.DSR_READ, Permission.DSR_WRITE})

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.READ_ONLY: _CONFIGURATION_READ | {Permission.PROFILE_READ},
    Role.USER: _CONFIGURATION_READ | _CONFIGURATION_WRITE,
    Role.ADMIN: _CONFIGURATION_READ | _CONFIGURATION_WRITE | _USER_ACTIVITY | _USER_MANAGEMENT,
    Role.ADMIN_COMPLIANCE: _CONFIGURATION_READ | _CONFIGURATION_WRITE | _USER_ACTIVITY | _USER_MANAGEMENT | _PRIVACY,
    Role.SUPPORT: _CONFIGURATION_READ | _CONFIGURATION_WRITE | _USER_ACTIVITY | {Permission.DSR_READ},
    Role.COMPLIANCE: _CONFIGURATION_READ | _PRIVACY,
    Role.AUDIENCES_ONLY: frozenset(
        {Permission.AUDIENCES_READ, Permission.AUDIENCES_WRITE, Permission.SERVICES_READ, Permission.CONNECTIONS_READ}
    ),  # fmt: skip
}
"""Role → what it may do. `Read Only` holds `PROFILE_READ` because the Profile API's only level is Read Only;
a person's grants are on `Api.PLATFORM`, so no console user reaches the Profile API through it."""


def allowed(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


ALL_WORKSPACES: frozenset[int] = frozenset()
"""`Grant.workspaces` for every workspace of the account (Platform API credentials are account-wide)."""


@dataclass(frozen=True)
class Grant:
    """A role on one API, in some workspaces (`ALL_WORKSPACES`: all of the account's)."""

    api: Api
    role: Role
    workspaces: frozenset[int] = ALL_WORKSPACES

    def __post_init__(self) -> None:
        if self.role not in API_ROLES[self.api]:
            raise BadRequest(f"The {self.api.value} API has no {self.role.value} role", "$.role")

    def permits(self, permission: Permission, workspace_id: int) -> bool:
        in_workspace = not self.workspaces or workspace_id in self.workspaces
        return permission.api is self.api and in_workspace and allowed(self.role, permission)

    @property
    def scope(self) -> str:
        """`platform:admin`, `profile:read_only`: how a token names the grant."""
        return f"{self.api.value}:{self.role.value}"


def credential_grant(api: Api, role: Role, workspaces: Iterable[int] = ()) -> Grant:
    """A grant an API credential may hold (Platform: Admin or User, account-wide; Profile: Read Only)."""
    if role not in CREDENTIAL_ROLES[api]:
        levels = ", ".join(sorted(r.value for r in CREDENTIAL_ROLES[api]))
        raise BadRequest(f"The {api.value} API's credentials are {levels}", "$.role")
    return Grant(api, role, ALL_WORKSPACES if api is Api.PLATFORM else frozenset(workspaces))


def authorize(grants: Iterable[Grant], permission: Permission, workspace_id: int) -> None:
    """Forbidden unless one of the grants permits `permission` in the workspace."""
    if not any(grant.permits(permission, workspace_id) for grant in grants):
        raise Forbidden(f"Your role does not allow {permission.value} in workspace {workspace_id}.")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    permission: Permission


def _platform(resource: str, read: Permission, write: Permission, item: str = "{id}") -> list[Endpoint]:
    base = f"/platform/v1/{resource}"
    return [Endpoint("GET", base, read), Endpoint("POST", base, write), Endpoint("GET", f"{base}/{item}", read),
            Endpoint("PUT", f"{base}/{item}", write), Endpoint("DELETE", f"{base}/{item}", write)]  # fmt: skip


def _calculated_attributes(base: str) -> list[Endpoint]:
    read, write, item = Permission.CALCULATED_ATTRIBUTES_READ, Permission.CALCULATED_ATTRIBUTES_WRITE, base + "/{ca_id}"
    return [Endpoint("GET", base, read), Endpoint("HEAD", base, read), Endpoint("POST", base, write),
            Endpoint("GET", item, read), Endpoint("PUT", item, write), Endpoint("DELETE", item, write),
            Endpoint("POST", item + "/activation", write), Endpoint("GET", item + "/activation", read),
            Endpoint("DELETE", item + "/draft", write)]  # fmt: skip


P = Permission
ENDPOINTS: tuple[Endpoint, ...] = (
    # serve_apps/admin.py, mounted at /cdp
    Endpoint("GET", "/cdp/alerts", P.ALERTS_READ),
    Endpoint("GET", "/cdp/status", P.STATUS_READ),
    Endpoint("GET", "/cdp/deadletter", P.DEAD_LETTERS_READ),  # and DEAD_LETTER_BODIES_READ with include_body=true
    Endpoint("GET", "/cdp/users/search", P.USER_ACTIVITY_SEARCH),
    Endpoint("GET", "/cdp/users/{mpid}", P.USER_ACTIVITY_READ),
    Endpoint("POST", "/cdp/users/{mpid}/edit", P.USER_ACTIVITY_EDIT),
    Endpoint("GET", "/cdp/reports/forwarding", P.REPORTS_READ),
    Endpoint("GET", "/cdp/reports/activity", P.REPORTS_READ),
    Endpoint("GET", "/cdp/reports/identity", P.REPORTS_READ),
    Endpoint("GET", "/cdp/audit", P.AUDIT_READ),  # issue 15, point 5
    Endpoint("GET", "/cdp/audiences", P.AUDIENCES_READ),
    Endpoint("GET", "/cdp/dsr", P.DSR_READ),  # issue 10, point 7
    Endpoint("POST", "/cdp/users/{mpid}/dsr", P.DSR_WRITE),
    # Platform API (https://docs.mparticle.com/developers/apis/platform/overview/), `?accountId=` on each;
    # serve_apps/platform.py, mounted at /platform
    Endpoint("GET", "/platform/v1/accounts", P.ACCOUNTS_READ),
    Endpoint("GET", "/platform/v1/accounts/{account_id}", P.ACCOUNTS_READ),
    Endpoint("GET", "/platform/v1/workspace", P.WORKSPACES_READ),
    *_platform("apps", P.APPS_READ, P.APPS_WRITE, item="{app_id}"),
    *_platform("apps/{app_id}/platforms", P.APPS_READ, P.APPS_WRITE, item="{platform}"),
    Endpoint("GET", "/platform/v1/apps/{app_id}/platforms/{platform}/services", P.CONNECTIONS_READ),
    Endpoint("GET", "/platform/v1/services", P.SERVICES_READ),
    Endpoint("GET", "/platform/v1/services/{name}", P.SERVICES_READ),
    # outputs (configured services) and connections: ours, as resources (an output here serves many app platforms)
    *_platform("outputs", P.SERVICES_READ, P.CONNECTIONS_WRITE, item="{output_id}"),
    *_platform("connections", P.CONNECTIONS_READ, P.CONNECTIONS_WRITE, item="{connection_id}"),
    *_platform("users", P.USERS_READ, P.USERS_WRITE, item="{user}"),
    # audiences (https://docs.mparticle.com/developers/apis/platform/audiences/) and ours beside them: create,
    # update, connections to audience outputs, standard audiences' runs, CSV and sending
    *_platform("audiences", P.AUDIENCES_READ, P.AUDIENCES_WRITE, item="{audience_id}"),
    Endpoint("GET", "/platform/v1/workspace/{workspace_id}/audiences", P.AUDIENCES_READ),
    Endpoint("POST", "/platform/v1/audiences/{audience_id}/connections", P.AUDIENCES_WRITE),
    Endpoint("DELETE", "/platform/v1/audiences/{audience_id}/connections/{output_id}", P.AUDIENCES_WRITE),
    Endpoint("POST", "/platform/v1/audiences/{audience_id}/calculate", P.AUDIENCES_WRITE),
    Endpoint("GET", "/platform/v1/audiences/{audience_id}/calculate", P.AUDIENCES_READ),
    Endpoint("GET", "/platform/v1/audiences/{audience_id}/download", P.AUDIENCES_READ),
    Endpoint("POST", "/platform/v1/audiences/{audience_id}/send", P.AUDIENCES_WRITE),
    # calculated attributes (Platform API v2, https://docs.mparticle.com/developers/apis/platform/calculated-attributes/)
    *_calculated_attributes("/platform/v2/workspaces/{workspace_id}/calculatedattributes"),
    # Profile API (serve_apps/profile.py)
    Endpoint("GET", "/userprofile/v1/{org}/{account}/{workspace}/{mpid}", P.PROFILE_READ),
    Endpoint("POST", "/userprofile/v1/{org}/{account}/{workspace}/{mpid}", P.PROFILE_READ),
    Endpoint("POST", "/userprofile/v1/resolve/{org}/{account}/{workspace}", P.PROFILE_READ),
)
"""Every endpoint behind authentication and what it needs. Open without credentials: the health endpoint,
`POST /oauth/token` and the console's login; the Events and Identity APIs authenticate with input keys."""

OPEN_ENDPOINTS = frozenset({("GET", "/cdp/health"), ("POST", "/cdp/login"), ("POST", "/cdp/logout")})
"""Admin routes without a permission: the health check (no data), logging in, and logging out (which needs a session
and its CSRF token, checked by the route itself)."""

PERMISSION_OF: dict[tuple[str, str], Permission] = {(e.method, e.path): e.permission for e in ENDPOINTS}


def matrix(grant_levels: Iterable[tuple[Api, Role]] | None = None) -> Iterator[tuple[Endpoint, Grant, bool]]:
    """Every endpoint × every grant a principal may hold (each role on the Platform API, Read Only on the Profile
    API), with whether it is allowed in the grant's workspace."""
    levels = grant_levels or [(api, role) for api, roles in API_ROLES.items() for role in sorted(roles)]
    for endpoint in ENDPOINTS:
        for api, role in levels:
            grant = Grant(api, role)
            yield endpoint, grant, grant.permits(endpoint.permission, workspace_id=1)
