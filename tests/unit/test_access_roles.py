"""The role matrix: every protected endpoint × every grant, against rules written from mParticle's role table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cdp_actors.access.roles import (
    API_ROLES,
    ENDPOINTS,
    OPEN_ENDPOINTS,
    PERMISSION_OF,
    ROLE_PERMISSIONS,
    Api,
    Grant,
    Permission,
    Role,
    authorize,
    credential_grant,
    matrix,
)
from cdp_actors.errors import BadRequest, Forbidden

SERVE_APPS = Path(__file__).resolve().parents[2] / "serve_apps"
P = Permission
USER_ACTIVITY_ROLES = {Role.ADMIN, Role.ADMIN_COMPLIANCE, Role.SUPPORT}
"""Only users with the Admin or Support roles can access the User Activity view (Admin & Compliance is Admin+)."""
USER_MANAGEMENT_ROLES = {Role.ADMIN, Role.ADMIN_COMPLIANCE}
CHANGING_ROLES = {Role.USER, Role.ADMIN, Role.ADMIN_COMPLIANCE, Role.SUPPORT}


def expected(permission: Permission, grant: Grant) -> bool:
    """The oracle, one rule per line of the docs' role table, independent of ROLE_PERMISSIONS."""
    role = grant.role
    if grant.api is Api.PROFILE or permission is P.PROFILE_READ:
        return grant.api is Api.PROFILE and permission is P.PROFILE_READ
    if role is Role.AUDIENCES_ONLY:
        return permission in {P.AUDIENCES_READ, P.AUDIENCES_WRITE, P.SERVICES_READ, P.CONNECTIONS_READ}
    if permission in {P.DSR_READ, P.DSR_WRITE}:
        return role in {Role.COMPLIANCE, Role.ADMIN_COMPLIANCE} or (role is Role.SUPPORT and permission is P.DSR_READ)
    if permission is P.AUDIT_READ:  # the audit log: Admin only (Admin & Compliance is Admin plus privacy)
        return role in {Role.ADMIN, Role.ADMIN_COMPLIANCE}
    if permission in {P.USERS_READ, P.USERS_WRITE}:
        return role in USER_MANAGEMENT_ROLES
    if permission.personal:
        return role in USER_ACTIVITY_ROLES
    if permission.changes:
        return role in CHANGING_ROLES
    return True  # configuration and operations reads: every role but Audiences Only


@pytest.mark.parametrize(("endpoint", "grant", "ok"), list(matrix()),
                         ids=lambda v: getattr(v, "path", None) or getattr(v, "scope", None) or str(v))  # fmt: skip
def test_every_endpoint_for_every_grant(endpoint, grant, ok):
    assert ok == expected(endpoint.permission, grant), f"{endpoint.method} {endpoint.path} as {grant.scope}"
    if ok:
        authorize([grant], endpoint.permission, workspace_id=1)
    else:
        with pytest.raises(Forbidden):
            authorize([grant], endpoint.permission, workspace_id=1)


def test_the_matrix_covers_every_endpoint_and_every_grant_level():
    cells = list(matrix())
    levels = {(g.api, g.role) for _, g, _ in cells}
    assert levels == {(api, role) for api, roles in API_ROLES.items() for role in roles}
    assert len(cells) == len(ENDPOINTS) * len(levels)


def _routes(module: str) -> set[tuple[str, str]]:
    """(method, path) of every FastAPI route declared in a serve_apps module (`@app.get("/path")`, ...), read from
    its source so the test needs no Ray."""
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse((SERVE_APPS / module).read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
            continue
        owner, path = node.func.value, node.args[0]
        if not (isinstance(owner, ast.Name) and owner.id == "app" and isinstance(path, ast.Constant)):
            continue
        if node.func.attr in {"get", "post", "put", "delete", "patch"}:
            found.add((node.func.attr.upper(), str(path.value)))
        elif node.func.attr == "api_route":
            methods = next(k.value for k in node.keywords if k.arg == "methods")
            assert isinstance(methods, ast.List)
            found |= {(str(m.value), str(path.value)) for m in methods.elts if isinstance(m, ast.Constant)}
    return found


def test_every_admin_route_has_a_permission():
    routes = _routes("admin.py")
    assert len(routes) >= 9
    protected = {(m, "/cdp" + p) for m, p in routes} - OPEN_ENDPOINTS
    missing = [route for route in protected if route not in PERMISSION_OF]
    assert not missing


def test_every_profile_api_route_but_the_token_endpoint_needs_profile_read():
    routes = _routes("profile.py") - {("POST", "/oauth/token")}
    assert routes
    assert all(PERMISSION_OF[route] is P.PROFILE_READ for route in routes)


def test_user_activity_is_for_admin_and_support_only():
    for role in Role:
        assert (P.USER_ACTIVITY_READ in ROLE_PERMISSIONS[role]) == (role in USER_ACTIVITY_ROLES)


def test_read_only_changes_nothing_and_sees_nothing_personal():
    assert not any(p.changes or p.personal for p in ROLE_PERMISSIONS[Role.READ_ONLY] if p.api is Api.PLATFORM)


def test_every_permission_is_needed_by_an_endpoint_or_a_handler():
    by_endpoints = {e.permission for e in ENDPOINTS}
    needed_in_handlers = {P.DEAD_LETTER_BODIES_READ}  # /cdp/deadletter?include_body=true
    calculated_or_dsr = {P.CALCULATED_ATTRIBUTES_READ, P.CALCULATED_ATTRIBUTES_WRITE, P.DSR_READ, P.DSR_WRITE}
    assert set(Permission) == by_endpoints | needed_in_handlers | calculated_or_dsr  # the last: issues 9 and 10


def test_a_grant_in_other_workspaces_does_not_permit():
    grant = Grant(Api.PLATFORM, Role.ADMIN, frozenset({2, 3}))
    assert grant.permits(P.USER_ACTIVITY_READ, 2)
    assert not grant.permits(P.USER_ACTIVITY_READ, 1)
    with pytest.raises(Forbidden):
        authorize([grant], P.USER_ACTIVITY_READ, 1)
    authorize([grant, Grant(Api.PLATFORM, Role.SUPPORT, frozenset({1}))], P.USER_ACTIVITY_READ, 1)


def test_no_grant_permits_nothing():
    with pytest.raises(Forbidden):
        authorize([], P.STATUS_READ, 1)


def test_credential_levels_are_the_documented_ones():
    assert credential_grant(Api.PLATFORM, Role.ADMIN).workspaces == frozenset()
    assert credential_grant(Api.PROFILE, Role.READ_ONLY, [1]).workspaces == {1}
    for api, role in [(Api.PLATFORM, Role.READ_ONLY), (Api.PLATFORM, Role.SUPPORT), (Api.PROFILE, Role.ADMIN)]:
        with pytest.raises(BadRequest) as refused:
            credential_grant(api, role)
        assert refused.value.path == "$.role"
    with pytest.raises(BadRequest):
        Grant(Api.PROFILE, Role.USER)
