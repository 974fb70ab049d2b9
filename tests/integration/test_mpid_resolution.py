"""MPIDs over real HTTP: a new user's MPID is a keyed hash under the deployment's secret (not guessable, the
same on replay), a batch `mpid` no one holds never creates a profile there, and an orphan's cached MPID
resolves by the batch's identities without touching the orphan."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import ray

from cdp_actors import handles
from cdp_actors.ids import MPID_SECRET_FILE, derived_id, fresh_mpid, origin_key
from cdp_actors.partition import INTAKE_NAME
from tests.conftest import Platforms, demo_config
from tests.integration.test_identity_api import UNIQUE_EMAIL, idsync, modify, users_holding
from tests.samples import batch, custom
from tests.support import Api, Receiver, wait_for

T0 = 1_700_000_000_000
OLD_MPID_SALT = 2  # the retired scheme, derived_id(2, origin, seq): anyone could compute it
FIRST_SEQ = 1  # the intake log's first position
ORIGIN = origin_key(INTAKE_NAME)


def delivered(receiver: Receiver, sent: dict[str, Any]) -> dict[str, Any]:
    """The outbound batch the sink received for `sent` (by its source_request_id)."""

    def find() -> dict[str, Any] | None:
        return next((b for b in receiver.bodies() if b["source_request_id"] == sent["source_request_id"]), None)

    return wait_for(find, what=f"delivery of {sent['source_request_id']}")


def accepted(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/v2/events", body)
    assert response.status_code == 202, response.text
    return body


def profile(api: Api, mpid: int) -> dict[str, Any]:
    response = api.get(f"/cdp/users/{mpid}")
    assert response.status_code == 200, response.text
    return response.json()


def secret_of(data_dir: Path) -> bytes:
    path = data_dir / MPID_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_bytes()


def restart_on_the_same_data_dir(platforms: Platforms) -> None:
    """Kill every runtime actor and the apps, then start them again over the same data directory."""
    from cdp_actors.runtime import ensure_runtime
    from serve_apps.app import deploy

    config, data_dir = platforms.current, platforms.data_dir
    platforms.stop()
    ensure_runtime(config, data_dir)
    deploy(config, str(data_dir))
    platforms.current = config


def test_new_users_mpids_are_keyed_per_deployment_and_replay_gives_the_same(platforms, receiver) -> None:
    config = demo_config(receiver.url, retry={"max_attempts": 11})  # a config of its own: a fresh data dir
    api = platforms(config)
    for n in range(config.runtime.shards):  # the chunk is resolved, then no shard can take it: a stall
        ray.kill(handles.shard(n), no_restart=True)
    anonymous = accepted(api, batch(None, [custom("first", T0)]))  # nothing identifies its user
    secret = secret_of(platforms.data_dir)
    expected = fresh_mpid(secret, ORIGIN, FIRST_SEQ)
    identity = handles.identity()
    wait_for(lambda: ray.get(identity.record.remote(expected)) is not None, what="the batch resolved once")
    dispatcher = handles.dispatcher()
    wait_for(lambda: ray.get(dispatcher.status.remote()).failing, what="the dispatcher to stall on the shards")

    restart_on_the_same_data_dir(platforms)  # the dispatcher resolves the same chunk again
    assert delivered(receiver, anonymous)["mpid"] == expected
    # The first /cdp/status right after the redeploy answered a plain 500 once here (not this feature): ask again.
    wait_for(lambda: api.get("/cdp/status").status_code == 200, what="the new admin app")
    assert api.status()["identity"]["profiles"] == 1  # the replay did not create a second profile
    assert secret_of(platforms.data_dir) == secret
    assert expected != (derived_id(OLD_MPID_SALT, ORIGIN, FIRST_SEQ) or 1)

    elsewhere = platforms(demo_config(receiver.url, retry={"max_attempts": 7}))  # another deployment, data dir
    other = accepted(elsewhere, batch(None, [custom("first", T0)]))
    other_secret = secret_of(platforms.data_dir)
    assert other_secret != secret
    assert delivered(receiver, other)["mpid"] == fresh_mpid(other_secret, ORIGIN, FIRST_SEQ) != expected


def test_a_batch_mpid_no_one_holds_never_creates_a_profile_there(platform, receiver) -> None:
    api = platform(demo_config(receiver.url))
    owner = int(idsync(api, "identify", customerid="plant-owner")["mpid"])
    planted = [2**62 + 12_345, -(2**63), 2**63 - 1]
    to_owner = accepted(api, batch("plant-owner", [custom("a", T0)], mpid=planted[0]))
    to_new = accepted(api, batch("plant-new", [custom("b", T0)], mpid=planted[1]))
    to_anonymous = accepted(api, batch(None, [custom("c", T0)], mpid=planted[2]))

    assert delivered(receiver, to_owner)["mpid"] == owner  # resolved by its customer ID
    (new,) = users_holding(api, "customer_id", "plant-new")
    assert delivered(receiver, to_new)["mpid"] == new["mpid"] not in planted
    assert delivered(receiver, to_anonymous)["mpid"] not in (*planted, owner, new["mpid"])
    for mpid in planted:
        assert api.get(f"/cdp/users/{mpid}").status_code == 404
    assert profile(api, owner)["batches"] == 1


def test_a_cached_mpid_of_an_orphan_goes_to_the_live_profile_and_leaves_the_orphan_alone(platform, receiver) -> None:
    api = platform(demo_config(receiver.url, identity=UNIQUE_EMAIL))
    feed = accepted(api, batch(None, [custom("x", T0)], user_identities={"email": "cached@x.io"}))
    orphan = delivered(receiver, feed)["mpid"]
    live = idsync(api, "identify", customerid="c-cached")["mpid"]
    modify(api, live, ("email", None, "cached@x.io"))  # the email moves; the feed profile is orphaned
    before = profile(api, orphan)
    assert before["orphaned"] is True

    known = accepted(api, batch("c-cached", [custom("y", T0 + 1)], mpid=orphan, user_attributes={"plan": "gold"}))
    bare = accepted(api, batch(None, [custom("z", T0 + 2)], mpid=orphan, user_attributes={"plan": "tin"}))
    assert delivered(receiver, known)["mpid"] == int(live)
    assert profile(api, int(live))["attributes"]["plan"]["value"] == "gold"
    anonymous = delivered(receiver, bare)["mpid"]
    assert anonymous not in (orphan, int(live)) and profile(api, anonymous)["attributes"]["plan"]["value"] == "tin"
    edit = api.post(f"/cdp/users/{orphan}/edit", {"input_id": 1, "user_attributes": {"plan": "lead"}})
    assert edit.status_code == 404, edit.text
    wait_for(api.settled, what="everything applied")
    assert profile(api, orphan) == before  # the orphan gained no batch, attribute or identity
