"""Calculated attributes over real HTTP: the Platform API v2 routes with a bearer token (create → list / HEAD / get →
update the draft → activate → activation status → discard a draft → delete), bad input a 400 naming the field with
nothing stored, 404s (an unknown id, another workspace), a duplicate name 409, who may call (a read-only console
user reads and cannot write, an audiences-only one cannot read, a Profile API client nothing); the CA Seeding API with
an input's key and secret, single and bulk (one bad item: 400 and nothing appended to the intake), and the Events API
refusing a client batch that carries seeds.

The platform's workspace has console users of the roles under test, so it runs a platform of its own."""

from __future__ import annotations

import time
from typing import Any

import pytest
import ray
import requests

from cdp_actors import handles
from cdp_actors.access.sessions import CSRF_HEADER
from cdp_actors.config import WorkspaceConfig, parse_workspace
from tests.conftest import demo_config
from tests.support import DEMO_AUTH, Api, token_of, wait_for

PASSWORD = "calculated-attributes-password-1"
BASE = "/platform/v2/workspaces/1/calculatedattributes"
COUNT_PURCHASES: dict[str, Any] = {
    "recipe_type": "event",
    "datapoint": {"type": "event", "event_type": "custom_event", "event_name": "Purchase"},
    "conditions": [],
    "calculation_type": "count",
}
SUM_AMOUNT: dict[str, Any] = {
    "data_point": {"type": "event_attribute", "event_type": "custom_event", "event_name": "Purchase",
                   "attribute_name": "amount"},
    "conditions": [{"type": "number", "operator": "greater_than", "attribute_name": "amount", "value": "0"}],
    "calculation_type": "sum",
    "time_period": {"type": "within", "within": 30, "within_unit": "days"},
}  # fmt: skip


def ca_config(webhook_url: str) -> WorkspaceConfig:
    document = demo_config(webhook_url).model_dump(mode="json")
    document["inputs"][0]["secret"] = "demo-secret"
    document["api_clients"] = [
        {"client_id": "demo-admin", "client_secret": "demo-admin-secret", "api": "platform", "role": "admin"},
        {"client_id": "demo-client", "client_secret": "demo-client-secret", "api": "profile", "role": "read_only"},
    ]  # fmt: skip
    document["users"] = [{"name": role, "role": role, "password": PASSWORD}
                         for role in ("admin", "read_only", "audiences_only")]  # fmt: skip
    return parse_workspace(document)


@pytest.fixture
def api(platform, receiver) -> Api:
    return platform(ca_config(receiver.url))


@pytest.fixture
def admin(api: Api) -> dict[str, str]:
    return {"Authorization": api.bearer()}


def call(api: Api, method: str, path: str, headers: dict[str, str], body: Any = None, **params: Any) -> Any:
    answer = requests.request(method, api.base + path, json=body, headers=headers, params=params, timeout=30)
    assert answer.status_code < 500, answer.text
    return answer


def version() -> int:
    return ray.get(handles.control().current.remote())[0]


def named(api: Api, admin: dict[str, str], name: str) -> list[dict[str, Any]]:
    answer = call(api, "GET", BASE, admin, name=name)
    assert answer.status_code == 200, answer.text
    return answer.json()


def create(api: Api, admin: dict[str, str], name: str, definition: dict[str, Any]) -> int:
    answer = call(api, "POST", BASE, admin, {"name": name, "description": f"{name}!", "draft_definition": definition})
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json(), int)
    return answer.json()


def activate(api: Api, admin: dict[str, str], ca_id: int) -> None:
    answer = call(api, "POST", f"{BASE}/{ca_id}/activation", admin)
    assert answer.status_code == 204, answer.text


def errors_of(answer: requests.Response) -> str:
    (error,) = answer.json()["errors"]
    assert error["code"] == "BAD_REQUEST"
    return error["message"]


# ---- the definition API --------------------------------------------------------------------------------------


def test_a_calculated_attribute_from_creation_to_removal(api: Api, admin: dict[str, str]) -> None:
    ca_id = create(api, admin, "Purchases", COUNT_PURCHASES)
    assert call(api, "HEAD", BASE, admin, name="Purchases").status_code == 204
    assert call(api, "HEAD", BASE, admin, name="Nobody").status_code == 404
    (listed,) = named(api, admin, "Purchases")
    assert listed["id"] == ca_id and listed["description"] == "Purchases!"
    assert listed["created_by"] == listed["last_modified_by"] == "api_client:demo-admin"
    assert listed["created_on"].endswith("Z") and listed["active_definition"] is None
    assert listed["draft_definition"]["data_point"]["event_name"] == "Purchase" and listed["audience_count"] == 0
    assert listed["calculation_status"]["state"] == "draft"
    assert ca_id in [item["id"] for item in call(api, "GET", BASE, admin).json()]

    updated = call(api, "PUT", f"{BASE}/{ca_id}", admin, {"definition": SUM_AMOUNT})
    assert updated.status_code == 204 and not updated.content
    draft = call(api, "GET", f"{BASE}/{ca_id}", admin).json()
    assert draft["draft_definition"]["calculation_type"] == "sum" and draft["name"] == "Purchases"
    status = call(api, "GET", f"{BASE}/{ca_id}/activation", admin).json()
    assert status == {"calculated_attribute_id": ca_id, "is_active": False, "activated_on": None,
                      "activated_by": None}  # fmt: skip

    activate(api, admin, ca_id)
    active = call(api, "GET", f"{BASE}/{ca_id}", admin).json()
    assert active["draft_definition"] is None and active["active_definition"]["calculation_type"] == "sum"
    assert active["active_definition"]["time_period"] == {"type": "within", "date": None, "within": 30,
                                                          "within_unit": "days"}  # fmt: skip
    assert active["calculation_status"]["state"] in ("calculating", "active")
    status = call(api, "GET", f"{BASE}/{ca_id}/activation", admin).json()
    assert status["is_active"] is True and status["activated_by"] == "api_client:demo-admin"
    assert status["activated_on"] == active["activated_on"] and status["activated_on"].endswith("Z")
    stored = next(c for c in ray.get(handles.control().current.remote())[1].calculated_attributes if c.id == ca_id)
    assert stored.generation == 1  # what the shards key their state by

    renamed = call(api, "PUT", f"{BASE}/{ca_id}", admin, {"name": "Orders"})
    assert renamed.status_code == 400 and "`$.name`" in errors_of(renamed)
    assert call(api, "POST", f"{BASE}/{ca_id}/activation", admin).status_code == 400  # no draft to activate
    assert call(api, "PUT", f"{BASE}/{ca_id}", admin, {"draft_definition": COUNT_PURCHASES}).status_code == 204
    assert call(api, "DELETE", f"{BASE}/{ca_id}/draft", admin).status_code == 204
    kept = call(api, "GET", f"{BASE}/{ca_id}", admin).json()
    assert kept["draft_definition"] is None and kept["active_definition"]["calculation_type"] == "sum"
    assert call(api, "DELETE", f"{BASE}/{ca_id}/draft", admin).status_code == 404

    assert call(api, "DELETE", f"{BASE}/{ca_id}", admin).status_code == 204
    assert call(api, "GET", f"{BASE}/{ca_id}", admin).status_code == 404
    assert call(api, "HEAD", BASE, admin, name="Purchases").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"draft_definition": COUNT_PURCHASES}, "$.name"),
        ({"name": "n"}, "$.draft_definition"),
        ({"name": "n", "draft_definition": {**COUNT_PURCHASES, "calculation_type": "median"}},
         "$.draft_definition.calculation_type"),
        ({"name": "n", "definition": {**SUM_AMOUNT, "conditions": [
            {"type": "number", "operator": "sideways", "attribute_name": "amount", "value": "1"}]}},
         "$.definition.conditions[0].operator"),
        ({"name": "n", "draft_definition": {**SUM_AMOUNT, "time_period": {"type": "all"}}},
         "$.draft_definition.time_period.type"),
        ({"name": "n", "draft_definition": COUNT_PURCHASES, "active_definition": COUNT_PURCHASES},
         "$.active_definition"),
    ],
)  # fmt: skip
def test_a_bad_definition_is_a_400_naming_the_field_and_stores_nothing(
    api: Api, admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    before = version()
    answer = call(api, "POST", BASE, admin, body)
    assert answer.status_code == 400 and f"`{field}`" in errors_of(answer), answer.text
    assert version() == before and not named(api, admin, "n")


def test_unknown_ids_other_workspaces_and_duplicate_names(api: Api, admin: dict[str, str]) -> None:
    ca_id = create(api, admin, "Spend", SUM_AMOUNT)
    for method, path in [("GET", f"{BASE}/999"), ("PUT", f"{BASE}/999"), ("DELETE", f"{BASE}/999"),
                         ("POST", f"{BASE}/999/activation"), ("GET", f"{BASE}/999/activation"),
                         ("DELETE", f"{BASE}/999/draft"), ("GET", "/platform/v2/workspaces/2/calculatedattributes"),
                         ("GET", f"/platform/v2/workspaces/2/calculatedattributes/{ca_id}")]:  # fmt: skip
        answer = call(api, method, path, admin, {"description": "x"} if method == "PUT" else None)
        assert answer.status_code == 404 and answer.json()["errors"][0]["code"] == "NOT_FOUND", (method, path)
    assert call(api, "HEAD", "/platform/v2/workspaces/2/calculatedattributes", admin, name="Spend").status_code == 404
    before = version()
    duplicate = call(api, "POST", BASE, admin, {"name": "Spend", "draft_definition": COUNT_PURCHASES})
    assert duplicate.status_code == 409 and duplicate.json()["errors"][0]["code"] == "CONFLICT"
    assert version() == before and len(named(api, admin, "Spend")) == 1
    assert call(api, "DELETE", f"{BASE}/{ca_id}", admin).status_code == 204


def login(api: Api, role: str) -> tuple[Any, dict[str, str]]:
    session = requests.post(api.base + "/cdp/login", json={"user": role, "password": PASSWORD}, timeout=30)
    assert session.status_code == 200, session.text
    return session.cookies, {CSRF_HEADER: session.json()["csrf_token"]}


def test_who_may_read_and_write_calculated_attributes(api: Api, admin: dict[str, str]) -> None:
    ca_id = create(api, admin, "Visible", COUNT_PURCHASES)
    before = version()
    for role, reads in [("read_only", True), ("audiences_only", False)]:
        cookies, csrf = login(api, role)
        get = requests.get(api.base + BASE, cookies=cookies, timeout=30)
        assert get.status_code == (200 if reads else 403), (role, get.text)
        for method, path, body in [("POST", BASE, {"name": "No", "draft_definition": COUNT_PURCHASES}),
                                   ("PUT", f"{BASE}/{ca_id}", {"description": "no"}),
                                   ("POST", f"{BASE}/{ca_id}/activation", None),
                                   ("DELETE", f"{BASE}/{ca_id}", None)]:  # fmt: skip
            answer = requests.request(method, api.base + path, json=body, headers=csrf, cookies=cookies, timeout=30)
            assert answer.status_code == 403 and answer.json()["errors"][0]["code"] == "FORBIDDEN", (role, method)
    profile_client = {"Authorization": "Bearer " + token_of(api.base, "demo-client", "demo-client-secret")}
    assert call(api, "GET", BASE, profile_client).status_code == 403
    assert call(api, "GET", BASE, {}).status_code == 401
    assert version() == before
    assert call(api, "DELETE", f"{BASE}/{ca_id}", admin).status_code == 204


# ---- the seeding API -----------------------------------------------------------------------------------------------


def seeding(user: str, *seeds: dict[str, Any]) -> dict[str, Any]:
    return {"environment": "development", "identities": {"customer_id": user},
            "calculated_attributes": {"workspace": list(seeds)},
            "user_attributes": {"workspace": [{"attribute_name": "seeded", "attribute_value": "yes"}]}}  # fmt: skip


def seed(name: str, calculation: str, form: dict[str, Any]) -> dict[str, Any]:
    return {"attribute_name": name, "calculation_type": calculation, "cutoff_date": "2026-11-01", "seed": form}


def test_seeding_single_and_bulk_all_or_nothing(api: Api, admin: dict[str, str]) -> None:
    activate(api, admin, create(api, admin, "Lifetime spend", SUM_AMOUNT))
    draft_id = create(api, admin, "Not yet", COUNT_PURCHASES)
    good = seed("Lifetime spend", "sum", {"value": 120.5})
    accepted = api.accepted_batches()

    single = api.post("/v2/calculatedattributes", seeding("seeded-1", good))
    assert single.status_code == 202, single.text
    assert api.accepted_batches() == accepted + 1

    bad = seed("Lifetime spend", "sum", {"value": "lots"})
    refused = api.post("/v2/bulkcalculatedattributes", [seeding("seeded-2", good), seeding("seeded-3", bad)])
    assert refused.status_code == 400 and errors_of(refused) == "Lifetime spend: Seed value must be numeric"
    unknown = api.post("/v2/calculatedattributes", seeding("seeded-4", seed("Not yet", "count", {"value": 1})))
    assert unknown.status_code == 400
    assert errors_of(unknown) == "Not yet: No matching calculated attribute definition found"
    assert api.accepted_batches() == accepted + 1  # nothing of the refused requests was appended

    bulk = api.post("/v2/bulkcalculatedattributes", [seeding(f"seeded-{n}", good) for n in range(5, 8)])
    assert bulk.status_code == 202, bulk.text
    assert api.accepted_batches() == accepted + 4

    assert api.post("/v2/calculatedattributes", seeding("x", good), auth=None).status_code == 401
    wrong = "Basic " + __import__("base64").b64encode(b"demo-key:wrong").decode()
    assert api.post("/v2/calculatedattributes", seeding("x", good), auth=wrong).status_code in (401, 403)
    assert api.post("/v2/calculatedattributes", {"environment": "production"}).status_code == 400
    assert call(api, "DELETE", f"{BASE}/{draft_id}", admin).status_code == 204


def test_the_events_api_refuses_a_batch_carrying_seeds(api: Api) -> None:
    accepted = api.accepted_batches()
    batch = {"environment": "development", "user_identities": {"customer_id": "sneaky"}, "events": [],
             "calculated_attribute_seeds": [{"attribute_name": "Lifetime spend", "calculation_type": "sum",
                                             "cutoff_ms": 1_700_000_000_000, "value": "1000000"}]}  # fmt: skip
    answer = api.post("/v2/events", batch, auth=DEMO_AUTH)
    assert answer.status_code == 400 and "calculated_attribute_seeds" in errors_of(answer)
    assert api.post("/v2/bulkevents", [batch], auth=DEMO_AUTH).status_code == 400
    assert api.accepted_batches() == accepted


def test_a_seed_and_the_events_after_it_combine_in_the_profile(api: Api, admin: dict[str, str]) -> None:
    """Seeding then live events: the shard applies the seed (an eventless batch through the intake), then folds
    the purchases in; the profile shows the sum of both."""
    definition = {**SUM_AMOUNT, "time_period": None, "conditions": []}
    ca_id = create(api, admin, "Seeded spend", definition)
    activate(api, admin, ca_id)
    shards = handles.shards(ray.get(handles.control().current.remote())[1].runtime.shards)
    wait_for(lambda: all(ca_id in ray.get(s.backfill_status.remote()) for s in shards), 30, what="the shards' CA")
    user = "seeded-and-live"
    seeded = api.post("/v2/calculatedattributes", {
        "environment": "development", "identities": {"customer_id": user},
        "calculated_attributes": {"workspace": [seed("Seeded spend", "sum", {"value": 100})]}})  # fmt: skip
    assert seeded.status_code == 202, seeded.text
    now_ms = int(time.time() * 1000)
    purchases = [
        {
            "event_type": "custom_event",
            "data": {
                "event_name": "Purchase",
                "custom_event_type": "transaction",
                "timestamp_unixtime_ms": now_ms,
                "custom_attributes": {"amount": str(amount)},
            },
        }
        for amount in (5, 15)
    ]
    live = api.post("/v2/events", {"environment": "development", "user_identities": {"customer_id": user},
                                   "events": purchases})  # fmt: skip
    assert live.status_code == 202, live.text

    def value() -> str | None:
        users = api.get("/cdp/users/search", identity_type="customer_id", value=user).json()["users"]
        return users[0].get("calculated", {}).get("Seeded spend") if users else None

    assert wait_for(lambda: value() == "120", 30, what="seed + live sum") and value() == "120"
