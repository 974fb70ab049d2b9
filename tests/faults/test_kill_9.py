"""kill -9 of one runtime process at a seeded random point during load, with a flapping partner; the ledger
proves nothing acknowledged was lost, nothing applied twice, and per-user order kept."""

from __future__ import annotations

import random

from ray import serve

from tests.faults.conftest import FLAPPING, PATHS, WORKERS, fault_config, run_under_load
from tests.faults.kill import events_replicas, kill_9_actor, kill_9_events_replica
from tests.faults.partner import Flapping, FlappingPartner
from tests.support import wait_for


def test_flapping_partner_alone_loses_nothing_and_keeps_order(platform, partner: FlappingPartner, seed: int) -> None:
    api = platform(fault_config(partner.base))
    summary = run_under_load(api, partner, seed, "flap", lambda _rng: "nothing but the flapping partner")
    # every failure mode happened: taken-then-hung batches were sent again, refused ones dropped
    outputs = [summary[path] for path in PATHS.values()]
    assert sum(o["duplicates"] for o in outputs) > 0 and sum(o["refused"] for o in outputs) > 0, summary


def test_kill_9_a_profile_shard(platform, partner: FlappingPartner, seed: int) -> None:
    api = platform(fault_config(partner.base))

    def inject(rng: random.Random) -> str:
        name = f"shard-{rng.randrange(2)}"
        return f"{name} (pid {kill_9_actor(name)})"

    run_under_load(api, partner, seed, "shard", inject)


def test_kill_9_a_forwarder(platform, partner: FlappingPartner, seed: int) -> None:
    api = platform(fault_config(partner.base))

    def inject(rng: random.Random) -> str:
        name = f"forwarder-{rng.randrange(2)}"
        return f"{name} (pid {kill_9_actor(name)})"

    run_under_load(api, partner, seed, "forwarder", inject)


def test_kill_9_a_forwarder_holding_a_backlog(platform, partner: FlappingPartner, seed: int) -> None:
    """The partner is down until the kill, so the restarted forwarder is handed a large backlog (windows over
    100 KB travel through Ray's object store) while new batches keep coming in small windows: an async actor may
    run those calls out of order, and no user's newer batch may overtake its backlog."""
    api = platform(fault_config(partner.base))

    def inject(rng: random.Random) -> str:
        name = f"forwarder-{rng.randrange(2)}"
        pid = kill_9_actor(name)
        partner.flap(seed, FLAPPING)  # the partner comes back, flapping
        return f"{name} (pid {pid}) holding a backlog"

    down = Flapping(unavailable=1.0)
    run_under_load(api, partner, seed, "backlog", inject, flapping=down, pad=2000, inject_between=(0.3, 0.5), rounds=40)


def test_kill_9_a_forwarder_holding_membership_changes(platform, partner: FlappingPartner, seed: int) -> None:
    """The partner is down until the kill, near the end of the load, so the killed forwarder holds most users'
    last membership changes (and batches): each must still arrive, from the rows its shard kept (ledger 4c). A
    change lost mid-load is not visible at the partner (a newer change of the user covers it, as coalescing
    does): this is the kill that shows a change acknowledged before its upload was done."""
    api = platform(fault_config(partner.base))

    def inject(rng: random.Random) -> str:
        # the shards apply what was accepted so far first: the changes it makes are then held by the forwarders
        wait_for(lambda: api.status()["intake"]["lag"] == 0, timeout=60, what="the shards caught up")
        name = f"forwarder-{rng.randrange(2)}"
        pid = kill_9_actor(name)
        partner.flap(seed, FLAPPING)
        return f"{name} (pid {pid}) holding membership changes"

    down = Flapping(unavailable=1.0)
    run_under_load(
        api, partner, seed, "changes", inject, flapping=down, inject_between=(0.85, 0.95), load_may_end_first=True
    )


def test_kill_9_the_intake_log(platform, partner: FlappingPartner, seed: int) -> None:
    api = platform(fault_config(partner.base))
    inject = lambda _rng: f"intake-0 (pid {kill_9_actor('intake-0')})"  # noqa: E731
    # requests caught by the restart get 503 with Retry-After (serve_apps/events.py) and are sent again
    run_under_load(api, partner, seed, "intake", inject, allowed=frozenset({"503"}))


def test_kill_9_an_events_api_replica(platform, partner: FlappingPartner, seed: int) -> None:
    api = platform(fault_config(partner.base))
    replicas = len(events_replicas())
    assert replicas == 2

    def inject(rng: random.Random) -> str:
        name, pid = kill_9_events_replica(rng.choice)

        def replaced() -> bool:
            names = events_replicas()
            deployment = serve.status().applications["events"].deployments["EventsApi"]
            return name not in names and deployment.replica_states.get("RUNNING", 0) == replicas

        wait_for(replaced, timeout=120, what="Serve to replace the killed replica")
        return f"{name} (pid {pid})"

    # HAProxy drops the connection of a request in flight on a replica that died (Serve's Python proxy answers
    # 500): not acknowledged, so the client sends it again
    allowed = frozenset({"ConnectionError", "500", "503"})
    summary = run_under_load(api, partner, seed, "replica", inject, allowed=allowed)
    in_flight = summary["answers"].get("ConnectionError", 0) + summary["answers"].get("500", 0)
    assert in_flight <= WORKERS, "a dropped connection or 500 for a request that was not in flight at the kill"
