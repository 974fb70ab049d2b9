"""A calculated attribute activated over stored history is backfilled by a resumable job: `kill -9` of a profile
shard in the middle of it, and the restarted shard carries on from its recorded cursor to the end, every user's
value equal to a recomputation from the events sent (none counted twice, none missed), `/cdp/status` showing the
progress meanwhile."""

from __future__ import annotations

import contextlib
import random
import threading
from typing import Any

import ray
import requests
import yaml

from cdp_actors.config import WorkspaceConfig, parse_workspace
from cdp_actors.constants import BACKFILL_USERS_PER_STEP
from cdp_actors.partition import NAMESPACE
from cdp_actors.profiles.model import decode_profile
from cdp_actors.storage.lmdb_env import iter_from
from tests.conftest import ROOT
from tests.faults.kill import kill_9_actor
from tests.integration.test_ca_api import activate, create
from tests.samples import batch, custom
from tests.support import Api, wait_for

USERS = 3_000  # ~1,500 a shard: several backfill steps of BACKFILL_USERS_PER_STEP each, so a kill lands mid-job
BATCHES_PER_REQUEST = 100
EVENTS_PER_USER = (1, 12)
T0 = 1_690_000_000_000  # the history is old: no time period, so its age does not matter
PLAYED = {"datapoint": {"type": "event", "event_type": "custom_event", "event_name": "Played"},
          "conditions": [], "calculation_type": "count"}  # fmt: skip
CA_NAME = "plays ever"


def workspace(webhook_url: str) -> WorkspaceConfig:
    """The demo workspace with a shorter history per user (still all of this test's): a platform of its own, so
    the profiles are this test's alone."""
    data = yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text())
    data["outputs"][0]["settings"]["url"] = webhook_url
    data["runtime"]["history_per_user"] = 2 * EVENTS_PER_USER[1]
    return parse_workspace(data)


def send_history(api: Api, seed: int) -> dict[str, int]:
    """Each user's events, Played among others; returns the oracle: customer id -> Played events sent."""
    rng = random.Random(seed)
    played: dict[str, int] = {}
    batches = []
    for n in range(USERS):
        customer = f"backfill-{n}"
        names = [rng.choice(["Played", "Played", "Browsed"]) for _ in range(rng.randint(*EVENTS_PER_USER))]
        played[customer] = names.count("Played")
        batches.append(batch(customer, [custom(name, T0 + k) for k, name in enumerate(names)]))
    for start in range(0, len(batches), BATCHES_PER_REQUEST):
        answer = api.post("/v2/bulkevents", batches[start : start + BATCHES_PER_REQUEST])
        assert answer.status_code == 202, answer.text
    return played


def shard_backfill(shard: int, ca_id: int) -> dict[str, Any] | None:
    """The CA's backfill on one shard (`ProfileShard.backfill_status`), None before the shard follows it."""
    handle = ray.get_actor(f"shard-{shard}", namespace=NAMESPACE)
    status: dict[int, dict[str, Any]] = ray.get(handle.backfill_status.remote(), timeout=60)
    return status.get(ca_id)


def stored_values(shards: int) -> dict[str, str | None]:
    """Customer id -> the CA's value, read from every shard's profiles in its own process."""

    def read(actor: Any) -> dict[str, str | None]:
        store = actor.core.store
        with store.read() as txn:
            profiles = [decode_profile(value) for _, value in iter_from(txn, store.db("profiles"), b"", 10**9)]
        return {
            p.user_identities["customer_id"].value: p.calculated.get(CA_NAME)
            for p in profiles
            if "customer_id" in p.user_identities
        }

    values: dict[str, str | None] = {}
    for shard in range(shards):
        handle = ray.get_actor(f"shard-{shard}", namespace=NAMESPACE)
        values.update(ray.get(handle.__ray_call__.remote(read), timeout=120))
    return values


def watch_status(api: Api, ca_id: int, progress: list[dict[str, Any]], stop: threading.Event) -> None:
    """Record the CA's backfill summary in `/cdp/status` until `stop` (a shard restarting: try again)."""
    while not stop.is_set():
        with contextlib.suppress(requests.RequestException, KeyError, ValueError):
            answer = requests.get(api.base + "/cdp/status", headers={"Authorization": api.bearer()}, timeout=10)
            summary = answer.json()["calculated_attributes"].get(str(ca_id))
            if summary:
                progress.append(summary)


def test_a_backfill_killed_midway_resumes_and_every_value_is_right(platform, receiver) -> None:
    api = platform(workspace(receiver.url))
    admin = {"Authorization": api.bearer()}
    played = send_history(api, seed=16)
    wait_for(api.settled, timeout=300, what="the history applied")
    shards = len(api.status()["shards"])
    assert USERS // shards > 3 * BACKFILL_USERS_PER_STEP  # the job takes several steps on each shard

    ca_id = create(api, admin, CA_NAME, PLAYED)
    progress: list[dict[str, Any]] = []  # what `/cdp/status` showed of the backfill, while it ran
    watching = threading.Event()
    watcher = threading.Thread(target=watch_status, args=(api, ca_id, progress, watching), daemon=True)
    watcher.start()
    activate(api, admin, ca_id)
    # the first step on shard 0 done, the job not finished: kill it there
    midway = wait_for(
        lambda: (s := shard_backfill(0, ca_id)) and 0 < s["done"] < s["total"] and not s["finished"] and s,
        timeout=120,
        interval=0.005,
        what="shard 0's backfill under way",
    )
    kill_9_actor("shard-0")
    after_restart = shard_backfill(0, ca_id)
    print(f"shard 0's backfill at the kill: {midway}; after the restart: {after_restart}")
    assert after_restart is not None
    # resumed from the cursor it recorded, not started again: what was done before the kill stays done
    assert after_restart["done"] >= midway["done"], (midway, after_restart)

    def finished() -> dict[str, Any] | None:
        summary = api.status()["calculated_attributes"][str(ca_id)]
        return summary if summary["finished"] else None

    done = wait_for(finished, timeout=300, what="the backfill finished on every shard")
    watching.set()
    watcher.join(30)
    under_way = [p for p in progress if 0 < p["done"] < p["total"] and not p["finished"] and p["eta_s"] is not None]
    assert under_way, f"/cdp/status never showed the backfill under way: {progress[-5:]}"
    assert done["done"] == done["total"] == USERS, done  # every user visited once, none again after the restart
    values = stored_values(shards)
    # a user without a Played event has no value, or "0" (the backfill stores the count's empty value)
    wrong = {c: (values.get(c), n) for c, n in played.items() if values.get(c) not in ({str(n)} if n else {None, "0"})}
    assert not wrong, f"{len(wrong)} users' values differ from the recomputation, e.g. {list(wrong.items())[:5]}"
    # and the API shows them: one user through `/cdp/users/{mpid}`
    customer = max(played, key=lambda c: played[c])
    found = api.get("/cdp/users/search", identity_type="customer_id", value=customer).json()["users"]
    detail = api.get(f"/cdp/users/{found[0]['mpid']}").json()
    assert detail["calculated"][CA_NAME] == str(played[customer])
