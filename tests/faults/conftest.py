"""Fixtures for fault tests: a flapping partner, a seed printed for replay, and the scenario runner."""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from cdp_actors.config import WorkspaceConfig, parse_workspace
from tests.conftest import ROOT, Platforms
from tests.faults.ledger import AUDIENCE_PATH, FAULT_CA, GOLD_AUDIENCE, Ledger
from tests.faults.load import Load
from tests.faults.partner import Flapping, FlappingPartner
from tests.support import Api, wait_for

# Patient enough that flapping never spends a batch's retries; a hang outlasts request_timeout_s.
FAULT_RETRY = {"max_attempts": 1000, "base_delay_s": 0.05, "max_delay_s": 0.2, "request_timeout_s": 0.5}
FAULT_RUNTIME = {"shards": 2, "forwarders": 2, "ingest_replicas": 2}
WORKERS = 4  # load workers, each with its own users and at most one request in flight
FLAPPING = Flapping(unavailable=0.3, hang=0.1, taken_then_hang=0.03, refuse=0.02, hang_s=0.75)


PATHS = {1: "/webhook", 2: "/coalesced"}  # connection id -> the partner path of its output
COALESCE = 10
AUDIENCE_OUTPUT = 3  # a third webhook on the partner, at AUDIENCE_PATH: membership changes only
DERIVED = {
    "calculated_attributes": [
        {
            "id": 1,
            "name": FAULT_CA,
            "generation": 1,
            # no time period: the load's events are stamped in 2023, outside any window
            "active_definition": {
                "data_point": {"type": "event", "event_type": "custom_event", "event_name": "fault-1"},
                "calculation_type": "count",
            },
        }
    ],
    "audiences": [
        {
            "id": GOLD_AUDIENCE,
            "name": "Gold plan",
            "kind": "real_time",
            "criteria": {"user_attribute": "plan", "type": "string", "operator": "equals", "value": "gold"},
            "connected_outputs": [AUDIENCE_OUTPUT],
        }
    ],
}


def fault_workspace(partner_base: str, runtime: dict[str, int] = FAULT_RUNTIME) -> dict[str, Any]:
    """The demo workspace with its input connected to two webhooks on the partner: the plain one (a POST per
    batch, as mParticle sends) and one that coalesces up to COALESCE ready batches into one POST; plus one
    calculated attribute and one real-time audience (DERIVED), the audience connected to a third webhook on the
    partner (AUDIENCE_PATH) that receives its membership changes."""
    data = yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text())
    data["outputs"][0]["settings"]["url"] = partner_base + PATHS[1]
    data["outputs"].append(
        {
            "id": 2,
            "name": "coalescing-webhook",
            "kind": "webhook",
            "settings": {"url": partner_base + PATHS[2], "max_batches_per_request": COALESCE},
        }
    )
    data["connections"].append(
        {"id": 2, "name": "demo-server → coalescing-webhook", "input": 1, "output": 2, "active": True}
    )
    data["outputs"].append(
        {
            "id": AUDIENCE_OUTPUT,
            "name": "audience-webhook",
            "kind": "webhook",
            "settings": {"url": partner_base + AUDIENCE_PATH, "audience_max_age_s": 0.2},
        }
    )
    data.update(copy.deepcopy(DERIVED))
    data["retry"], data["runtime"] = FAULT_RETRY, runtime
    return data


def fault_config(partner_base: str) -> WorkspaceConfig:
    return parse_workspace(fault_workspace(partner_base))


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    if outcome.get_result().failed:  # type: ignore[attr-defined]
        item.stash[FAILED] = True


@pytest.fixture
def platform(platforms: Platforms, request: pytest.FixtureRequest) -> Iterator[Platforms]:
    """The shared platform, stopped after a failed test: a load cut short leaves batches and membership changes
    on their way to the partner, which the next test's ledger would find and count as sent by nobody."""
    yield platforms
    if request.node.stash.get(FAILED, False):
        platforms.stop()


@pytest.fixture(scope="session")
def partner_server() -> Iterator[FlappingPartner]:
    server = FlappingPartner().start()
    yield server
    server.stop()


@pytest.fixture
def partner(partner_server: FlappingPartner) -> FlappingPartner:
    partner_server.reset()
    return partner_server


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """Random per run unless CDP_FAULT_SEED is set; printed (shown with a failure) so the run can be replayed."""
    value = int(os.environ.get("CDP_FAULT_SEED") or random.SystemRandom().randrange(2**31))
    print(f"\n{request.node.name}: fault seed {value} (replay: CDP_FAULT_SEED={value} pytest {request.node.nodeid})")
    return value


def eventually(predicate: Callable[[], Any], timeout: float) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` passes (False)."""
    try:
        wait_for(predicate, timeout=timeout, interval=0.1)
    except AssertionError:
        return False
    return True


def fatal_alerts(api: Api) -> dict[str, int]:
    """Fatal alerts so far, per output path."""
    connections = {c["connection_id"]: c for c in api.get("/cdp/alerts").json()["connections"]}
    return {
        path: sum(t["count"] for t in connections.get(connection, {}).get("types", []) if t["severity"] == "Fatal")
        for connection, path in PATHS.items()
    }


def run_under_load(
    api: Api,
    partner: FlappingPartner,
    seed: int,
    tag: str,
    inject: Callable[[random.Random], Any],
    allowed: frozenset[str] = frozenset(),
    give_up_after_s: float = 120.0,
    flapping: Flapping = FLAPPING,
    pad: int = 0,
    inject_between: tuple[float, float] = (0.1, 0.7),
    rounds: int = 15,
    load_may_end_first: bool = False,
    on_start: Callable[[Ledger, Load], Any] | None = None,
) -> dict[str, Any]:
    """Load with a flapping partner, `inject` the fault once at a seeded random point of it (within the
    `inject_between` shares of the load), let the pipeline recover and settle, then prove invariants 1-3 with
    the ledger (`on_start` is given the ledger and the load as they start). Clients may see, besides 202, only the
    answers in `allowed` (and have to send those requests again). `load_may_end_first`: the fault hits what the
    pipeline holds, not requests in flight, so the last requests may be acknowledged before it. Returns the
    ledger's summary."""
    rng = random.Random(seed)
    started = time.monotonic()
    partner.flap(seed, flapping)
    fatal_before = fatal_alerts(api)
    ledger = Ledger(f"{tag}-{seed}", seed, pad)
    load = Load(api.base, ledger, WORKERS, users_per_worker=6, rounds=rounds, give_up_after_s=give_up_after_s).start()
    if on_start is not None:
        on_start(ledger, load)
    try:
        first, last = (int(load.planned_requests * share) for share in inject_between)
        inject_at = rng.randint(first, last)
        print(f"injecting the fault after {inject_at} of {load.planned_requests} bulk requests")
        wait_for(lambda: load.acked_requests >= inject_at or load.done(), timeout=180, what="the injection point")
        assert load_may_end_first or not load.done(), "the load ended before the fault was injected"
        print(f"injected: {inject(rng)}")
        wait_for(load.done, timeout=give_up_after_s + 180, what="the load to finish")
        loaded = time.monotonic()
    finally:
        load.stop()
    assert not load.errors, load.errors
    paths = list(PATHS.values())
    # Wait for the pipeline to finish, but let the ledger report precisely what is wrong if it does not.
    delivered = eventually(lambda: ledger.delivered_or_refused(partner, paths, api), timeout=90)
    settled = delivered and eventually(api.settled, timeout=60)
    acked = {s.srid for s in ledger.batches("acked")}

    def raised() -> dict[str, int]:
        return {path: n - fatal_before[path] for path, n in fatal_alerts(api).items()}

    eventually(lambda: all(raised()[path] >= len(acked & partner.refused[path]) for path in paths), timeout=30)
    summary = ledger.verify(api, partner, raised())
    assert delivered and settled, f"not every acknowledged batch delivered or dropped, or outboxes left (seed {seed})"
    summary["partner"] = dict(partner.answers)
    summary["first_bodies"] = load.first_bodies
    summary["seconds"] = {"load": round(loaded - started, 1), "recovery": round(time.monotonic() - loaded, 1)}
    print(summary)
    unexpected = {answer: n for answer, n in ledger.statuses.items() if answer != "202" and answer not in allowed}
    assert not unexpected, f"clients were answered {unexpected} (seed {seed})"
    assert partner.answers.get("503") and partner.answers.get("200"), "the partner did not flap"
    return summary
