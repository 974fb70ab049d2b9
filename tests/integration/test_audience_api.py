"""Audiences through the Platform API over real HTTP: create, list, get, update, connect, disconnect, delete with a
bearer token; bad criteria are a 400 naming the node with nothing stored; the Audiences Only role does all of it, a
Read Only user only reads, a Profile API client nothing. A standard audience over profiles sent through
`/v2/bulkevents`: its run's progress, size and CSV, and `/cdp/audiences`.

The workspace is test_platform_api's (a console user of every role, Platform API clients of both levels); its outputs
for audiences are created here through the API."""

from __future__ import annotations

import csv
import io
import time
import uuid
from typing import Any

import pytest
import ray
import requests
from ray import serve

from cdp_actors import handles
from cdp_actors.access.sessions import CSRF_HEADER
from cdp_actors.audiences import standard
from tests.faults.kill import SERVE_NAMESPACE, pid_of, serve_replicas, sigkill
from tests.integration.test_platform_api import login, platform_config
from tests.samples import custom
from tests.support import DEMO_AUTH, token_of, wait_for

ACCOUNT = {"accountId": "1"}
GOLD = {"user_attribute": "plan", "type": "string", "operator": "equals", "value": "gold"}


@pytest.fixture
def base(platform, receiver) -> str:
    return platform(platform_config(receiver.url)).base


@pytest.fixture
def admin(base: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token_of(base, "demo-admin", "demo-admin-secret")}


def call(base: str, method: str, path: str, headers: dict[str, str], body: Any = None, params: Any = None,
         cookies: Any = None) -> requests.Response:  # fmt: skip
    return requests.request(method, base + "/platform/v1" + path, params={**ACCOUNT, **(params or {})}, json=body,
                            headers=headers, cookies=cookies, timeout=30)  # fmt: skip


def data(answer: requests.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()["data"]


def version() -> int:
    return ray.get(handles.control().current.remote())[0]


def output(base: str, headers: dict[str, str], body: dict[str, Any]) -> int:
    return data(call(base, "POST", "/outputs", headers, {"name": f"out-{uuid.uuid4().hex[:6]}", **body}), 201)[0]["id"]


def test_audiences_are_defined_connected_and_removed_over_http(base: str, admin: dict[str, str], receiver) -> None:
    audience_output = output(base, admin, {"service": "braze_audience", "settings": {"api_url": receiver.base,
                                                                                     "api_key": "k"}})  # fmt: skip
    event_output = output(base, admin, {"service": "mixpanel", "settings": {"project_token": "p"}})
    body = {"name": "Gold users", "external_name": "gold", "workspaces": [1], "kind": "real_time",
            "criteria": {"all": [GOLD, {"identity": "email"}]}}  # fmt: skip
    created = data(call(base, "POST", "/audiences", admin, body), 201)[0]
    audience_id = created["id"]
    assert {k: created[k] for k in ("name", "external_name", "is_calculated", "connected_outputs", "kind")} == {
        "name": "Gold users", "external_name": "gold", "is_calculated": True, "connected_outputs": [],
        "kind": "real_time"}  # fmt: skip
    assert created["workspaces"] == [{"id": 1, "name": "demo"}] and created["criteria"] == body["criteria"]
    assert created["created_by"] == "api_client:demo-admin" and created["created_on"].endswith("Z")
    assert audience_id in [a["id"] for a in data(call(base, "GET", "/audiences", admin))]
    assert [a["id"] for a in data(call(base, "GET", "/workspace/1/audiences", admin))] == [audience_id]
    assert call(base, "GET", "/workspace/2/audiences", admin).status_code == 404

    updated = data(call(base, "PUT", f"/audiences/{audience_id}", admin, {"name": "Gold"}))[0]
    assert (updated["name"], updated["criteria"]) == ("Gold", body["criteria"])
    assert data(call(base, "GET", f"/audiences/{audience_id}", admin))[0]["name"] == "Gold"

    connected = data(call(base, "POST", f"/audiences/{audience_id}/connections", admin,
                          {"output_id": audience_output}), 201)[0]  # fmt: skip
    assert [o["id"] for o in connected["connected_outputs"]] == [audience_output]
    twice = call(base, "POST", f"/audiences/{audience_id}/connections", admin, {"output_id": audience_output})
    assert twice.status_code == 409, twice.text
    for output_id in (event_output, 99_999):
        refused = call(base, "POST", f"/audiences/{audience_id}/connections", admin, {"output_id": output_id})
        assert refused.status_code == 400 and "$.output_id" in refused.json()["errors"][0]["message"], refused.text
    busy = call(base, "DELETE", f"/outputs/{audience_output}", admin)
    assert busy.status_code == 400 and "disconnect" in busy.text
    assert call(base, "DELETE", f"/audiences/{audience_id}/connections/{audience_output}", admin).status_code == 204
    assert data(call(base, "GET", f"/audiences/{audience_id}", admin))[0]["connected_outputs"] == []
    assert call(base, "DELETE", f"/audiences/{audience_id}/connections/{audience_output}", admin).status_code == 404

    naming = {"name": "Gold too", "criteria": {"audience": audience_id}}
    dependent = data(call(base, "POST", "/audiences", admin, naming), 201)[0]
    assert call(base, "DELETE", f"/audiences/{audience_id}", admin).status_code == 409
    assert call(base, "DELETE", f"/audiences/{dependent['id']}", admin).status_code == 204
    assert call(base, "DELETE", f"/audiences/{audience_id}", admin).status_code == 204
    assert call(base, "GET", f"/audiences/{audience_id}", admin).status_code == 404


@pytest.mark.parametrize(
    ("criteria", "path"),
    [
        ({"all": [GOLD, {"user_attribute": "plan", "type": "string"}]}, "$.criteria.all[1].operator"),
        ({"any": [GOLD, {"favourite": "colour"}]}, "$.criteria.any[1]"),
        ({"not": {"audience": 99_999}}, "$.criteria.not"),
        ({"event": {"event_name": "Played"}, "within_days": 0}, "$.criteria.within_days"),
        ({"any": [{**GOLD, "operator": "greater_than"}]}, "$.criteria.any[0].operator"),
    ],
)
def test_bad_criteria_are_a_400_naming_the_node_and_nothing_is_stored(
    base: str, admin: dict[str, str], criteria: Any, path: str
) -> None:
    before, listed = version(), data(call(base, "GET", "/audiences", admin))
    refused = call(base, "POST", "/audiences", admin, {"name": "Bad", "criteria": criteria})
    assert refused.status_code == 400, refused.text
    error = refused.json()["errors"][0]
    assert error["code"] == "BAD_REQUEST" and error["message"].endswith(f"- at `{path}`"), error
    assert version() == before and data(call(base, "GET", "/audiences", admin)) == listed


def test_the_audiences_only_role_does_it_all_and_read_only_reads(base: str, admin: dict[str, str]) -> None:
    session = login(base, "audiences_only")
    assert session.status_code == 200, session.text
    csrf = {CSRF_HEADER: session.json()["csrf_token"]}
    created = data(call(base, "POST", "/audiences", csrf, {"name": "Mine", "criteria": GOLD}, cookies=session.cookies),
                   201)[0]  # fmt: skip
    path = f"/audiences/{created['id']}"
    assert created["created_by"] == "user:audiences_only"
    assert data(call(base, "PUT", path, csrf, {"kind": "standard"}, cookies=session.cookies))[0]["kind"] == "standard"
    outputs = data(call(base, "GET", "/outputs", csrf, cookies=session.cookies))
    webhook = next(o["id"] for o in outputs if o["service"] == "webhook")
    assert (
        call(base, "POST", f"{path}/connections", csrf, {"output_id": webhook}, cookies=session.cookies).status_code
        == 201
    )
    assert call(base, "DELETE", f"{path}/connections/{webhook}", csrf, cookies=session.cookies).status_code == 204
    assert call(base, "GET", "/audiences", csrf, cookies=session.cookies).status_code == 200
    assert call(base, "GET", "/apps", csrf, cookies=session.cookies).status_code == 403  # audiences only

    reader = login(base, "read_only")
    reader_csrf = {CSRF_HEADER: reader.json()["csrf_token"]}
    assert call(base, "GET", path, reader_csrf, cookies=reader.cookies).status_code == 200
    before = version()
    for method, where, body in (("POST", "/audiences", {"name": "x", "criteria": GOLD}), ("PUT", path, {"name": "x"}),
                                ("DELETE", path, None), ("POST", f"{path}/calculate", None)):  # fmt: skip
        assert call(base, method, where, reader_csrf, body, cookies=reader.cookies).status_code == 403, (method, where)
    profile_client = {"Authorization": "Bearer " + token_of(base, "demo-client", "demo-client-secret")}
    assert call(base, "GET", "/audiences", profile_client).status_code == 403
    assert call(base, "POST", "/audiences", profile_client, {"name": "x", "criteria": GOLD}).status_code == 403
    assert version() == before
    assert call(base, "DELETE", path, csrf, cookies=session.cookies).status_code == 204


def test_a_standard_audience_is_calculated_over_every_profile_downloaded_as_csv_and_sent(
    base: str, admin: dict[str, str], receiver
) -> None:
    tag = uuid.uuid4().hex[:8]
    plan = f"gold-{tag}"
    users = [(f"{tag}-{n}", plan if n % 3 else "silver", n % 2 == 0, n % 4) for n in range(16)]
    now = int(time.time() * 1000)
    batches = [{"environment": "production", "user_attributes": {"plan": p},
                "user_identities": {"customer_id": c, **({"email": f"{c}@example.com"} if e else {})},
                "events": [custom("Played", now - (k + 1) * 3_600_000) for k in range(played)]}
               for c, p, e, played in users]  # fmt: skip
    sent = requests.post(base + "/v2/bulkevents", json=batches, headers={"Authorization": DEMO_AUTH}, timeout=30)
    assert sent.status_code == 202, sent.text
    played_twice = {"event": {"event_name": "Played", "custom_event_type": "navigation"},
                    "count": {"operator": "at_least", "value": 2}, "within_days": 2}  # fmt: skip
    criteria = {"all": [{**GOLD, "value": plan}, {"identity": "email"}, played_twice]}
    expected = sorted((c, f"{c}@example.com") for c, p, e, played in users if p == plan and e and played >= 2)
    assert expected  # gold users with an email who played twice in the last two days

    audience_id = data(call(base, "POST", "/audiences", admin, {"name": f"Standard {tag}", "kind": "standard",
                                                                 "criteria": criteria}), 201)[0]["id"]  # fmt: skip
    assert call(base, "GET", f"/audiences/{audience_id}/download", admin).status_code == 404  # not calculated yet
    braze = output(base, admin, {"service": "braze_audience", "settings": {"api_url": receiver.base, "api_key": "k",
                                                                           "bulk_max_age_s": 0.2}})  # fmt: skip
    assert call(base, "POST", f"/audiences/{audience_id}/connections", admin, {"output_id": braze}).status_code == 201

    def calculated() -> dict[str, Any] | None:
        """A run over the shards once every user's profile is stored (the batches are applied asynchronously)."""
        started = data(call(base, "POST", f"/audiences/{audience_id}/calculate", admin,
                            params={"identities": "customer_id,email"}), 202)[0]  # fmt: skip
        assert started["state"] == "running" and started["shards_total"] >= 1
        done = wait_for(lambda: (s := data(call(base, "GET", f"/audiences/{audience_id}/calculate", admin))[0])
                        ["state"] != "running" and s, what="the run")  # fmt: skip
        assert done["state"] == "done" and done["shards_done"] == done["shards_total"], done
        return done if done["size"] == len(expected) else None

    done = wait_for(calculated, timeout=90, interval=0.5, what="a run that sees every user")
    assert data(call(base, "GET", f"/audiences/{audience_id}", admin))[0]["size"] == len(expected)
    download = call(base, "GET", f"/audiences/{audience_id}/download", admin)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0] == ["mpid", "customer_id", "email"]
    assert sorted((r[1], r[2]) for r in rows[1:]) == expected and all(int(r[0]) for r in rows[1:])

    listed = requests.get(base + "/cdp/audiences", headers=admin, timeout=30)
    assert listed.status_code == 200, listed.text
    row = next(a for a in listed.json()["audiences"] if a["id"] == audience_id)
    assert (row["kind"], row["size"], row["calculated_at_ms"]) == ("standard", len(expected), done["calculated_at_ms"])
    sent = data(call(base, "POST", f"/audiences/{audience_id}/send", admin), 202)[0]
    assert (sent["members"], sent["outputs"], sent["waiting"]) == (len(expected), [braze], 0)

    def uploaded() -> list[str]:
        bodies = [r.body for r in list(receiver.received) if r.path == "/users/track"]
        return sorted(a["external_id"] for b in bodies for a in b["attributes"] if a.get(f"In Standard {tag}"))

    wait_for(lambda: uploaded() == [c for c, _ in expected], what="the members at the audience output")

    bad = call(base, "POST", f"/audiences/{audience_id}/calculate", admin, params={"identities": "shoe_size"})
    assert bad.status_code == 400 and "identities" in bad.text
    real_time = data(call(base, "POST", "/audiences", admin, {"name": f"Live {tag}", "criteria": criteria}), 201)[0]
    assert call(base, "POST", f"/audiences/{real_time['id']}/calculate", admin).status_code == 400


def test_a_real_time_members_audience_memberships_and_sizes(base: str, admin: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:8]
    criteria = {"user_attribute": "plan", "type": "string", "operator": "equals", "value": f"gold-{tag}"}
    audience = data(call(base, "POST", "/audiences", admin, {"name": f"Live {tag}", "criteria": criteria}), 201)[0]
    batch = {"environment": "production", "events": [], "user_attributes": {"plan": f"gold-{tag}"},
             "user_identities": {"customer_id": f"live-{tag}"}}  # fmt: skip
    sent = requests.post(base + "/v2/events", json=batch, headers={"Authorization": DEMO_AUTH}, timeout=30)
    assert sent.status_code == 202, sent.text

    def found() -> list[Any]:
        search = {"identity_type": "customer_id", "value": f"live-{tag}"}
        return requests.get(base + "/cdp/users/search", params=search, headers=admin, timeout=30).json()["users"]

    mpid = wait_for(found, what="the user's profile")[0]["mpid"]
    reader = {"Authorization": "Bearer " + token_of(base, "demo-client", "demo-client-secret")}
    url = f"{base}/userprofile/v1/1/1/1/{mpid}"

    def memberships() -> list[Any]:
        body = requests.get(url, params={"fields": "audience_memberships"}, headers=reader, timeout=30).json()
        return body["audience_memberships"]

    listed = wait_for(memberships, what="the membership in the Profile API")
    assert listed == [{"audience_id": audience["id"], "audience_name": f"Live {tag}", "expiration_timestamp_ms": None}]
    assert data(call(base, "GET", f"/audiences/{audience['id']}", admin))[0]["size"] == 1
    rows = requests.get(base + "/cdp/audiences", headers=admin, timeout=30).json()["audiences"]
    row = next(r for r in rows if r["id"] == audience["id"])
    assert (row["kind"], row["size"], sum(row["adds"].values()), row["drops"]) == ("real_time", 1, 1, {})


def test_a_standard_run_cut_short_by_a_restart_is_run_again(platforms, base: str, admin: dict[str, str]) -> None:
    """A run's `.running` mark outlives the Platform API replica that drove it (`kill -9`); the next replica runs
    it again, as of the same time, at its first look at the audience's calculation."""
    tag = uuid.uuid4().hex[:8]
    batch = {"environment": "production", "user_attributes": {"plan": f"gold-{tag}"},
             "user_identities": {"customer_id": f"{tag}-gold"}}  # fmt: skip
    assert requests.post(base + "/v2/events", json=batch, headers={"Authorization": DEMO_AUTH}, timeout=30).ok
    criteria = {**GOLD, "value": f"gold-{tag}"}
    audience_id = data(call(base, "POST", "/audiences", admin, {"name": f"Cut short {tag}", "kind": "standard",
                                                                 "criteria": criteria}), 201)[0]["id"]  # fmt: skip
    wait_for(lambda: requests.get(base + "/cdp/users/search", headers=admin, timeout=30,
                                  params={"identity_type": "customer_id", "value": f"{tag}-gold"}).json()["users"],
             what="the profile stored")  # fmt: skip
    started_ms = int(time.time() * 1000) - 60_000
    runs = platforms.data_dir / standard.RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{audience_id}-{started_ms}.running").write_text('["customer_id"]')
    killed = platform_replica()
    assert killed is not None
    sigkill(pid_of(ray.get_actor(killed, namespace=SERVE_NAMESPACE)))
    wait_for(lambda: platform_replica(running=True) not in (None, killed), timeout=120, what="a new replica")

    def resumed() -> dict[str, Any] | None:
        answer = call(base, "GET", f"/audiences/{audience_id}/calculate", admin)
        shown = data(answer)[0] if answer.status_code == 200 else None
        return shown if shown and shown["state"] == "done" else None

    done = wait_for(resumed, timeout=60, what="the interrupted run, run again")
    assert (done["size"], done["calculated_at_ms"], done["identities"]) == (1, started_ms, ["customer_id"])
    assert not list(runs.glob("*.running"))


def platform_replica(running: bool = False) -> str | None:
    """The Platform API's replica actor (the app runs one); with `running`, only once Serve reports it running."""
    names = serve_replicas("platform", "PlatformApi")
    if running:
        states = serve.status().applications["platform"].deployments["PlatformApi"].replica_states
        if states.get("RUNNING", 0) != 1 or len(names) != 1:  # type: ignore[call-overload]
            return None
    return names[0] if names else None
