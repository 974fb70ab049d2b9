"""The Platform API without Ray: every route declares the table's permission; request bodies become the changes they
should (and refusals name the request's fields, nothing applied); answers never show a secret; console users'
changes; the envelope, `?accountId=`, `If-Match` and CORS."""

from __future__ import annotations

from typing import Any

import pytest

from cdp_actors.access import keys
from cdp_actors.access.passwords import Password, hash_password, verify_password
from cdp_actors.access.roles import ENDPOINTS, PERMISSION_OF, Role
from cdp_actors.config import WorkspaceConfig, parse_workspace
from cdp_actors.control.changes import AddUser, RemoveUser, UpdateUser, apply_change, first_next_ids
from cdp_actors.errors import BadRequest, NotFound
from cdp_actors.platform import resources as r
from cdp_actors.platform.http import (
    check_account,
    cors_headers,
    envelope,
    expected_version,
    is_preflight,
    preflight_headers,
)
from cdp_actors.secrets import MASK
from serve_apps import platform
from tests.conftest import demo_config
from tests.unit.test_access_wiring import api_routes, declared

PASSWORD_HASH = hash_password(Password("a-long-enough-password"))


def config_with(**sections: Any) -> WorkspaceConfig:
    document = demo_config("http://127.0.0.1:9/webhook").model_dump(mode="json")
    document["inputs"][0]["secret"] = "demo-secret"
    for client, secret in zip(document["api_clients"], ["demo-admin-secret", "demo-client-secret"], strict=False):
        client["client_secret"] = secret
    document["users"] = [{"name": "admin", "role": "admin", "password": "test-admin-password"}]
    document.update(sections)
    return parse_workspace(document)


def applied(config: WorkspaceConfig, change: Any) -> WorkspaceConfig:
    return apply_change(config, change, first_next_ids(config)).config


# ---- routes ---------------------------------------------------------------------------------------------------


def test_every_platform_route_declares_exactly_the_tables_permission():
    seen = set()
    for route in api_routes(platform):
        for method in route.methods or ():
            key = (method, "/platform" + route.path)
            seen.add(key)
            assert declared(route) == {PERMISSION_OF[key]}, key
    implemented = {(e.method, e.path) for e in ENDPOINTS if e.path.startswith("/platform/")}
    assert seen == implemented


# ---- apps and app platforms -----------------------------------------------------------------------------------


def test_a_new_app_is_an_input_holding_only_its_secrets_hash():
    config = config_with()
    issued = keys.issue()
    wanted = r.app_request({"name": "Shop", "platforms": [{"platform": "iOS"}]})
    change = r.new_app(wanted, issued.key, issued.secret_hash)
    after = applied(config, change)
    created = after.inputs[-1]
    assert (created.name, created.platform, created.key, created.kind) == ("Shop", "iOS", issued.key, "platform")
    assert created.secret is None and keys.verify_secret(created.secret_hash or "", issued.secret)
    shown = r.app_document(created)
    assert issued.secret.reveal() not in str(shown) and shown["platforms"][0]["access_keys"] == [
        {"key": issued.key, "key_revision": 1}
    ]
    once = r.app_document(created, issued.secret.reveal())
    assert once["platforms"][0]["access_keys"][0]["secret"] == issued.secret.reveal()


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ([], "$"),
        ({"platforms": [{"platform": "iOS"}]}, "$.name"),
        ({"name": 5, "platforms": [{"platform": "iOS"}]}, "$.name"),
        ({"name": "A"}, "$.platforms"),
        ({"name": "A", "platforms": []}, "$.platforms"),
        ({"name": "A", "platforms": [{"platform": "iOS"}, {"platform": "Android"}]}, "$.platforms"),
        ({"name": "A", "platforms": ["iOS"]}, "$.platforms[0]"),
        ({"name": "A", "platforms": [{}]}, "$.platforms[0].platform"),
        ({"name": "A", "platforms": [{"platform": " "}]}, "$.platforms[0].platform"),
        ({"name": "", "platforms": [{"platform": "iOS"}]}, "$.name"),
        ({"name": "A", "platforms": [{"platform": "iOS", "colour": "red"}]}, "$.platforms[0].colour"),
        ({"name": "A", "platforms": [{"platform": "iOS"}], "extra": 1}, "$.extra"),
    ],
)
def test_a_bad_app_body_is_refused_naming_its_field(body: Any, path: str):
    with pytest.raises(BadRequest) as refused:
        r.app_request(body)
    assert refused.value.path == path


def test_a_refusal_of_the_changes_module_is_renamed_to_the_bodys_field():
    config = config_with()
    change = r.new_app(r.app_request({"name": "A", "platforms": [{"platform": "${HOME}"}]}), "k" * 32, "h")
    with pytest.raises(BadRequest) as refused:
        applied(config, change)
    renamed = r.renamed(refused.value, r.APP_PATHS)
    assert renamed.path == "$.platforms[0].platform" and renamed.message.endswith("- at `$.platforms[0].platform`")
    assert r.renamed(BadRequest("x", "$.kind.sub"), r.OUTPUT_PATHS).path == "$.service.sub"
    assert r.renamed(BadRequest("x", "$.kindness"), r.OUTPUT_PATHS).path == "$.kindness"


def test_a_new_access_key_drops_the_clear_secret_and_raises_the_revision():
    config = config_with()
    item = config.inputs[0]
    assert item.secret is not None
    r.check_platform_update({"regenerate_access_key": True}, item)
    for body, path in (({}, "$.regenerate_access_key"), ({"platform": "web", "regenerate_access_key": True},
                                                          "$.platform"), ({"name": "x"}, "$.name")):  # fmt: skip
        with pytest.raises(BadRequest) as refused:
            r.check_platform_update(body, item)
        assert refused.value.path == path
    issued = keys.issue()
    after = applied(config, r.new_access_key(item, issued)).inputs[0]
    assert (after.key, after.secret_hash, after.key_revision) == (issued.key, issued.secret_hash, item.key_revision + 1)
    assert after.secret is not None and after.secret.get_secret_value() == issued.secret.reveal()  # signed requests
    unsigned = item.model_copy(update={"signed_requests": False})
    after = applied(config.model_copy(update={"inputs": [unsigned]}), r.new_access_key(unsigned, issued)).inputs[0]
    assert (after.key, after.secret, after.secret_hash) == (issued.key, None, issued.secret_hash)


def test_apps_are_platform_inputs_found_by_id_and_platform_in_any_case():
    config = config_with()
    item = config.inputs[0]
    assert r.platform_input(config, item.id, item.platform.upper()) == item
    with pytest.raises(NotFound):
        r.platform_input(config, item.id, "roku")
    with pytest.raises(NotFound):
        r.app_input(config, 999)


# ---- services, outputs and connections ------------------------------------------------------------------------


def test_every_service_has_its_settings_schema_with_secrets_write_only():
    listed = r.services()
    assert {s["name"] for s in listed} >= {"webhook", "mixpanel", "braze", "facebook_audience"}
    webhook = r.service("Webhook")
    assert webhook["settings_schema"]["properties"]["auth_header"]["anyOf"][0]["writeOnly"] is True
    assert r.service("facebook_audience")["takes_events"] is False
    with pytest.raises(NotFound):
        r.service("nosuch")


def test_an_outputs_secret_is_masked_and_the_mask_sent_back_keeps_it():
    config = config_with()
    settings = {"url": "http://127.0.0.1:9/a", "auth_header": "Bearer s3cret"}
    change = r.new_output({"name": "Hook", "service": "webhook", "settings": settings})
    config = applied(config, change)
    output = config.outputs[-1]
    shown = r.output_document(output)
    assert shown["settings"]["auth_header"] == MASK and "s3cret" not in str(shown)
    edit = {**shown, "settings": {**shown["settings"], "url": "http://127.0.0.1:9/b"}}
    del edit["id"]
    config = applied(config, r.changed_output(edit, output))
    kept = config.outputs[-1].settings
    assert kept.url == "http://127.0.0.1:9/b" and kept.auth_header.get_secret_value() == "Bearer s3cret"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"service": "webhook", "settings": {"url": "http://x"}}, "$.name"),
        ({"name": "a", "settings": {"url": "http://x"}}, "$.service"),
        ({"name": "a", "service": "nosuch", "settings": {}}, "$.service"),
        ({"name": "a", "service": "webhook", "settings": {"url": "ftp://x"}}, "$.settings.url"),
        ({"name": "a", "service": "webhook", "settings": {}}, "$.settings.url"),
        ({"name": "a", "service": "webhook", "kind": "webhook"}, "$.kind"),
    ],
)
def test_a_bad_output_is_refused_naming_its_field(body: Any, path: str):
    assert refusal(lambda: r.new_output(body), r.OUTPUT_PATHS).path == path


def refusal(make_change: Any, paths: dict[str, str], config: WorkspaceConfig | None = None) -> BadRequest:
    """The refusal as the app answers it: the body's own checks name its fields; the changes module's refusal (in
    the control actor) is renamed to them."""
    try:
        change = make_change()
    except BadRequest as error:
        return error
    try:
        applied(config or config_with(), change)
    except BadRequest as error:
        return r.renamed(error, paths)
    raise AssertionError("not refused")


def test_connections_take_the_workspace_files_fields():
    config = config_with()
    body = {"name": "c", "input": 1, "output": 1, "sample_percent": 50}
    after = applied(config, r.new_connection(body))
    assert r.connection_document(after.connections[-1])["sample_percent"] == 50
    for bad, path in (({**body, "input": 99}, "$.input"), ({**body, "sample_percent": 101}, "$.sample_percent"),
                      ({**body, "id": "x"}, "$.id")):  # fmt: skip
        with pytest.raises(BadRequest) as refused:
            applied(config, r.new_connection(bad))
        assert refused.value.path == path
    services = r.platform_services(after, after.inputs[0])
    assert {s["id"] for s in services} == {c.id for c in after.connections}


# ---- console users --------------------------------------------------------------------------------------------


def test_a_user_is_added_with_a_hash_changed_and_removed():
    config = config_with()
    fields, password = r.user_body({"name": "ada", "role": "support", "password": "a-long-enough-password"}, True)
    assert fields == {"name": "ada", "role": "support"} and password == "a-long-enough-password"
    config = applied(config, r.new_user(fields, PASSWORD_HASH))
    ada = r.user_of(config, "ada")
    assert (ada.role, ada.password, ada.password_hash) == (Role.SUPPORT, None, PASSWORD_HASH)
    assert r.user_document(ada) == {"id": "ada", "name": "ada", "role": "support"}
    config = applied(config, r.changed_user("ada", {"role": "read_only"}, None))
    assert r.user_of(config, "ada").role is Role.READ_ONLY
    admin_hash = hash_password(Password("another-long-password"))
    config = applied(config, r.changed_user("admin", {}, admin_hash))  # replaces the seed file's password
    admin = r.user_of(config, "admin")
    assert admin.password is None and verify_password(admin.password_hash or "", Password("another-long-password"))
    config = applied(config, RemoveUser(name="ada"))
    with pytest.raises(NotFound):
        r.user_of(config, "ada")


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (AddUser(fields={"name": "admin", "role": "user", "password_hash": "h"}), "$.name"),
        (AddUser(fields={"name": "b", "role": "owner", "password_hash": "h"}), "$.role"),
        (AddUser(fields={"name": "", "role": "user", "password_hash": "h"}), "$.name"),
        (AddUser(fields={"name": "b", "role": "user", "password": "in-clear-password"}), "$.password"),
        (UpdateUser(name="admin", fields={"role": "user"}), "$.role"),  # the last admin
        (UpdateUser(name="admin", fields={"name": "root"}), "$.name"),
        (RemoveUser(name="admin"), "$.role"),
    ],
)
def test_a_bad_user_change_is_refused_naming_its_field(change: Any, path: str):
    with pytest.raises(BadRequest) as refused:
        applied(config_with(), change)
    assert r.renamed(refused.value, r.USER_PATHS).path == path


def test_a_user_body_needs_its_fields_and_a_password_policy_applies():
    for body, path in (({"role": "user", "password": "x" * 12}, "$.name"), ({"name": "a", "password": "x" * 12},
                       "$.role"), ({"name": "a", "role": "user"}, "$.password"), ({"name": "a", "role": "user",
                       "password": "x" * 12, "password_hash": "h"}, "$.password_hash")):  # fmt: skip
        with pytest.raises(BadRequest) as refused:
            r.user_body(body, creating=True)
        assert refused.value.path == path
    with pytest.raises(BadRequest, match=r"\$\.password"):
        hash_password(Password("short"))
    with pytest.raises(BadRequest) as refused:
        r.user_body({"name": "renamed"}, creating=False)
    assert refused.value.path == "$.name"
    with pytest.raises(BadRequest):
        r.changed_user("admin", {}, None)


def test_no_user_change_repr_shows_a_hash():
    change = AddUser(fields={"name": "a", "role": "user", "password_hash": PASSWORD_HASH})
    assert PASSWORD_HASH not in repr(change) and PASSWORD_HASH not in repr(UpdateUser(name="a", fields=change.fields))


# ---- envelope, account, versions, CORS ------------------------------------------------------------------------


def test_the_envelope_and_the_account_parameter():
    config = config_with()
    assert envelope([{"id": 1}]) == {"data": [{"id": 1}], "errors": []}
    check_account(str(config.workspace.account_id), config.workspace)
    for given in (None, "", "one"):
        with pytest.raises(BadRequest) as refused:
            check_account(given, config.workspace)
        assert refused.value.path == "accountId"
    with pytest.raises(NotFound):
        check_account(str(config.workspace.account_id + 1), config.workspace)


def test_if_match_names_a_version():
    assert [expected_version(v) for v in (None, "", "*", "7", '"7"', 'W/"7"')] == [None, None, None, 7, 7, 7]
    with pytest.raises(BadRequest, match="If-Match"):
        expected_version('"abc"')


def test_cors_allows_any_origin_without_credentials():
    assert cors_headers(None) == {}
    answer = cors_headers("https://console.example")
    assert answer["Access-Control-Allow-Origin"] == "*" and "Access-Control-Allow-Credentials" not in answer
    assert "Retry-After" in answer["Access-Control-Expose-Headers"]
    assert is_preflight("OPTIONS", {"access-control-request-method": "PUT"}) and not is_preflight("OPTIONS", {})
    preflight = preflight_headers("https://console.example", "PUT")
    assert "PUT" in preflight["Access-Control-Allow-Methods"] and "Authorization" in preflight[
        "Access-Control-Allow-Headers"]  # fmt: skip
    assert "Access-Control-Allow-Credentials" not in preflight
    assert "Access-Control-Allow-Methods" not in preflight_headers("https://console.example", "PATCH")


def test_a_users_hash_in_the_configuration_wins_over_the_data_directorys():
    from serve_apps.access import directory_of

    config = applied(config_with(), r.changed_user("admin", {}, PASSWORD_HASH))
    config = applied(config, r.new_user({"name": "ada", "role": "user"}, PASSWORD_HASH))
    directory = directory_of(config, {"admin": "file-hash", "gone": "file-hash"})
    assert directory.password_hashes["admin"] == PASSWORD_HASH and directory.password_hashes["ada"] == PASSWORD_HASH
    assert directory.roles == {"admin": Role.ADMIN, "ada": Role.USER}
    assert set(directory.clients) == set(directory.key_versions) == {"demo-admin", "demo-client"}
