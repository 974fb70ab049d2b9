"""The audit log over real HTTP: a configuration change made through the control actor and a profile edit made
through `/cdp/users/{mpid}/edit` are read back from `GET /cdp/audit` with who made them, secrets masked and the
edit's values left out; only the admin role reads the log; `cdp config export` asks the running control actor;
a console session outlives a restart of the sessions actor. This module starts its own platform (a workspace with
a partner credential, a User-level client and a Support console user)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from cdp_actors.access.sessions import CSRF_HEADER
from cdp_actors.config import WorkspaceConfig, parse_workspace
from cdp_actors.control.changes import UpdateOutput
from cdp_actors.secrets import MASK
from tests.conftest import demo_config
from tests.support import token_of, wait_for

OLD_CREDENTIAL = "Bearer audit-old-credential-51"
NEW_CREDENTIAL = "Bearer audit-new-credential-62"
USER_CLIENT = ("audit-user-client", "audit-user-client-secret")
SUPPORT = ("support-person", "support-password-audit-1")
EDITED_EMAIL = "audited-person@example.com"


def audit_config(webhook_url: str) -> WorkspaceConfig:
    document = demo_config(webhook_url).model_dump(mode="json")
    document["inputs"][0]["secret"] = "demo-secret"
    document["outputs"][0]["settings"]["auth_header"] = OLD_CREDENTIAL
    document["api_clients"] = [
        {"client_id": "demo-admin", "client_secret": "demo-admin-secret", "api": "platform", "role": "admin"},
        {"client_id": USER_CLIENT[0], "client_secret": USER_CLIENT[1], "api": "platform", "role": "user"},
    ]
    document["users"] = [{"name": SUPPORT[0], "role": "support", "password": SUPPORT[1]}]
    return parse_workspace(document)


@pytest.fixture
def base(platform, receiver) -> str:
    return platform(audit_config(receiver.url)).base


def admin_headers(base: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token_of(base, "demo-admin", "demo-admin-secret")}


def audit(base: str, **query: Any) -> requests.Response:
    return requests.get(base + "/cdp/audit", params=query, headers=admin_headers(base), timeout=30)


def test_a_configuration_change_is_in_the_log_with_its_actor_and_masked_secrets(base: str) -> None:
    import ray

    from cdp_actors import handles

    change = UpdateOutput(id=1, fields={"settings": {"auth_header": NEW_CREDENTIAL}})
    version, _ = ray.get(handles.control().apply.remote(change, None, "ops-alice"))
    answer = audit(base, actor="ops-alice")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(e["actor"], e["action"], e["target"]) for e in body["data"]] == [("ops-alice", "update", "output:1")]
    entry = body["data"][0]
    assert entry["before"]["settings"]["auth_header"] == MASK and entry["after"]["settings"]["auth_header"] == MASK
    assert entry["changes"] == [{"path": "$.settings.auth_header", "before": MASK, "after": MASK}]
    assert OLD_CREDENTIAL not in answer.text and NEW_CREDENTIAL not in answer.text
    seeded = audit(base, order="asc", limit=1).json()
    assert seeded["data"][0]["action"] == "seed" and seeded["next"] == seeded["data"][0]["id"]
    assert "demo-admin-secret" not in audit(base, order="asc").text
    assert version >= 2


def test_a_profile_edit_is_in_the_log_as_personal_data(base: str) -> None:
    identify = {"environment": "production", "known_identities": {"customerid": "audited-person"}}
    auth = ("demo-key", "demo-secret")
    mpid = requests.post(base + "/v1/identify", json=identify, auth=auth, timeout=30).json()["mpid"]
    edit = {"input_id": 1, "user_attributes": {"$email_hint": EDITED_EMAIL}}
    answer = requests.post(f"{base}/cdp/users/{mpid}/edit", json=edit, headers=admin_headers(base), timeout=30)
    assert answer.status_code == 202, answer.text
    entries = audit(base, target=f"profile:{mpid}").json()["data"]
    assert [(e["actor"], e["action"]) for e in entries] == [("demo-admin", "edit")]
    assert entries[0]["before"] is None and entries[0]["after"] is None
    assert {c["path"] for c in entries[0]["changes"]} == {"$.input_id", "$.user_attributes.$email_hint"}
    assert EDITED_EMAIL not in audit(base).text


def test_only_the_admin_role_reads_the_log(base: str) -> None:
    user_token = {"Authorization": "Bearer " + token_of(base, *USER_CLIENT)}
    assert requests.get(base + "/cdp/audit", headers=user_token, timeout=30).status_code == 403
    session = requests.post(base + "/cdp/login", json={"user": SUPPORT[0], "password": SUPPORT[1]}, timeout=30)
    assert session.status_code == 200, session.text
    headers = {CSRF_HEADER: session.json()["csrf_token"]}
    answer = requests.get(base + "/cdp/audit", cookies=session.cookies, headers=headers, timeout=30)
    assert answer.status_code == 403 and answer.json()["errors"][0]["code"] == "FORBIDDEN"
    assert requests.get(base + "/cdp/audit", timeout=30).status_code == 401
    sessions = audit(base, actor=SUPPORT[0]).json()["data"]
    assert [(e["action"], e["target"]) for e in sessions][:1] == [("login", f"user:{SUPPORT[0]}")]


def test_bad_paging_is_a_400_naming_the_field(base: str) -> None:
    for query, field in (({"after_id": 3}, "after_id"), ({"limit": 0}, "limit"), ({"order": "sideways"}, "order")):
        answer = audit(base, **query)
        assert answer.status_code == 400, (query, answer.text)
        assert field in answer.json()["errors"][0]["message"], (query, answer.text)


def test_cdp_config_export_asks_the_running_control_actor(base: str, platforms, tmp_path) -> None:
    from cdp_actors.cli import main

    out = tmp_path / "exported.yaml"
    assert main(["config", "export", "--data-dir", str(platforms.data_dir), "--out", str(out)]) == 0
    text = out.read_text()
    assert "${CDP_OUTPUT_1_AUTH_HEADER}" in text and "${CDP_API_CLIENT_DEMO_ADMIN_CLIENT_SECRET}" in text
    for secret in (OLD_CREDENTIAL, NEW_CREDENTIAL, "demo-admin-secret", USER_CLIENT[1], SUPPORT[1]):
        assert secret not in text


def test_a_console_session_survives_a_restart_of_the_sessions_actor(base: str) -> None:
    import ray

    from cdp_actors import handles

    session = requests.post(base + "/cdp/login", json={"user": SUPPORT[0], "password": SUPPORT[1]}, timeout=30)
    assert session.status_code == 200, session.text
    status = base + "/cdp/status"
    assert requests.get(status, cookies=session.cookies, timeout=30).status_code == 200
    before = handles.sessions()
    ray.kill(before, no_restart=False)  # Ray restarts it (max_restarts=-1), with an empty memory
    wait_for(lambda: requests.get(status, cookies=session.cookies, timeout=30).status_code == 200,
             timeout=30, what="the restarted sessions actor to answer for the session")  # fmt: skip
    logout = requests.post(base + "/cdp/logout", cookies=session.cookies,
                           headers={CSRF_HEADER: session.json()["csrf_token"]}, timeout=30)  # fmt: skip
    assert logout.status_code == 204
    assert requests.get(status, cookies=session.cookies, timeout=30).status_code == 401
