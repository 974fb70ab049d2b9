"""The pipeline's side of live configuration, without Ray: what changed between two versions, a shard turning
chunks into outbox rows under the version it was handed, and `Delivery` taking a new version between prepared
requests (an added output gets its resources, a changed one a new adapter with its session and breaker kept, a
removed one's rows dropped with an alert, a row of a version not held yet waiting for it). Real local partners."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from cdp_actors.config import WorkspaceConfig
from cdp_actors.control.changes import (
    AddConnection,
    AddOutput,
    Change,
    RemoveConnection,
    RemoveOutput,
    UpdateConnection,
    UpdateOutput,
    apply_change,
    first_next_ids,
)
from cdp_actors.control.diff import is_newer_item, output_changes
from cdp_actors.forwarding.delivery import CONNECTION_REMOVED, OUTPUT_REMOVED, Delivery
from cdp_actors.forwarding.retry import FATAL
from cdp_actors.intake.isolation import is_transient
from cdp_actors.profiles.handoff import HandOff, outbox_lane
from cdp_actors.profiles.shard import ConfigVersionGap, ShardCore, output_lanes
from cdp_actors.schema.records import OutboxRow, ShardRecord
from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import Receiver
from tests.unit.test_delivery_faults import FAST_RETRY, row


def changed(config: WorkspaceConfig, *changes: Change) -> WorkspaceConfig:
    next_ids = first_next_ids(config)
    for change in changes:
        applied = apply_change(config, change, next_ids)
        config, next_ids = applied.config, applied.next_ids
    return config


def webhook(url: str, header: str | None = None) -> AddOutput:
    settings: dict[str, Any] = {"url": url} | ({"auth_header": header} if header else {})
    return AddOutput(fields={"name": "new", "kind": "webhook", "settings": settings})


def base(url: str) -> WorkspaceConfig:
    return demo_config(url, retry=FAST_RETRY)


# ---- what changed between two versions -----------------------------------------------------------------------


def test_output_changes_name_the_outputs_added_changed_and_removed() -> None:
    v1 = changed(base("http://127.0.0.1:1/a"), webhook("http://127.0.0.1:1/b"))  # outputs 1 and 2
    v2 = changed(
        v1,
        UpdateOutput(id=1, fields={"settings": {"url": "http://127.0.0.1:1/moved"}}),
        UpdateOutput(id=2, fields={"name": "renamed", "new_data_points": "block"}),  # no new adapter for these
        webhook("http://127.0.0.1:1/c"),
    )
    changes = output_changes(v1, v2)
    assert (changes.added, changes.changed, changes.removed) == ({3}, {1}, set())
    v3 = changed(v2, UpdateOutput(id=3, fields={"settings": {"auth_header": "Bearer other"}}), RemoveOutput(id=2))
    changes = output_changes(v2, v3)
    assert (changes.added, changes.changed, changes.removed) == (set(), {3}, {2})  # a secret's value counts
    assert output_changes(v3, v3).unchanged and not changes.unchanged


def test_an_id_above_every_id_seen_belongs_to_a_later_version_and_one_below_was_removed() -> None:
    assert is_newer_item(4, largest_seen=3) and not is_newer_item(3, largest_seen=3)
    assert not is_newer_item(1, largest_seen=3)


# ---- the shard: rows under the version it was handed; lanes ----------------------------------------------------


def record(seq: int, customer: str) -> ShardRecord:
    raw = json.dumps(batch(customer, [custom("Played", int(time.time() * 1000))])).encode()
    return ShardRecord(seq, seq, 1000 + seq, 1, int(time.time() * 1000), raw)


def outbox_keys(core: ShardCore) -> list[bytes]:
    with core.store.read() as txn:
        return [bytes(key) for key, _ in txn.cursor(core.store.db("outbox"))]


def outbox_outputs(core: ShardCore) -> list[tuple[int, int]]:
    """(seq, output) of every outbox row, in key order."""
    return [(int.from_bytes(key[6:14], "big"), int.from_bytes(key[2:6], "big")) for key in outbox_keys(core)]


def test_a_shard_writes_outbox_rows_for_the_connections_of_the_version_it_holds(tmp_path: Any) -> None:
    v1 = base("http://127.0.0.1:1/a")
    v2 = changed(v1, webhook("http://127.0.0.1:1/b"), AddConnection(fields={"name": "c2", "input": 1, "output": 2}))
    core = ShardCore(tmp_path / "shard", 0, v1, version=1)
    core.apply([record(1, "ada")], None)
    core.use(2, v2)
    core.apply([record(2, "bob")], 1)
    core.use(3, changed(v2, UpdateConnection(id=1, fields={"active": False})))
    core.apply([record(3, "cy")], 2)
    assert sorted(outbox_outputs(core)) == [(1, 1), (2, 1), (2, 2), (3, 2)]
    assert core.version == 3
    assert sorted(core.outbox_lanes()) == [outbox_lane(0, 1), outbox_lane(0, 2)]  # one lookup per lane
    core.delete_outbox(outbox_keys(core))
    assert core.outbox_lanes() == []


def test_lanes_added_live_start_empty_and_lanes_held_keep_their_state() -> None:
    v1 = base("http://127.0.0.1:1/a")
    handoff = HandOff(output_lanes(v1), window=5)
    lane = outbox_lane(0, 1)
    handoff.held[lane].add(b"held")
    handoff.handed_upto[lane] = b"held"
    handoff.add_lanes(output_lanes(changed(v1, webhook("http://127.0.0.1:1/b"))))
    assert set(handoff.lanes) == {outbox_lane(f, o) for f in range(v1.runtime.forwarders) for o in (1, 2)}
    assert handoff.held[lane] == {b"held"} and handoff.handed_upto[lane] == b"held"
    assert handoff.held[outbox_lane(0, 2)] == set() and handoff.handed_upto[outbox_lane(0, 2)] is None


# ---- Delivery across versions ------------------------------------------------------------------------------


@pytest.fixture
def partners() -> Any:
    servers = [Receiver().start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def to(output: int, connection: int, key: int, mpid: int) -> OutboxRow:
    base_row = row(key, mpid)
    return OutboxRow(**{**{f: getattr(base_row, f) for f in base_row.__struct_fields__},
                        "output_id": output, "connection_id": connection})  # fmt: skip


async def until(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_a_row_of_a_version_not_held_yet_waits_for_it_and_then_goes(partners: list[Receiver]) -> None:
    old, new = partners
    v1 = base(old.url)
    v2 = changed(v1, webhook(new.url), AddConnection(fields={"name": "c2", "input": 1, "output": 2}))

    async def main() -> Delivery:
        delivery = Delivery(v1)
        delivery.queue([to(2, 2, 1, mpid=5), to(1, 1, 2, mpid=5)])
        await until(lambda: len(old.received) == 1, "the known output's row")
        assert delivery.parked and delivery.version_wanted.is_set() and not new.received
        delivery.use(v2)
        await until(lambda: not delivery.lanes, "the waiting row delivered")
        await delivery.close()
        return delivery

    delivery = asyncio.run(main())
    assert [r.body["n"] for r in new.received] == [1] and delivery.alerts == []
    assert sorted(delivery.take_pending().acks[0]) == sorted([(1).to_bytes(8, "big"), (2).to_bytes(8, "big")])


def test_a_changed_output_gets_a_new_adapter_and_keeps_its_session_and_breaker(partners: list[Receiver]) -> None:
    old, new = partners
    v1 = changed(base(old.url), UpdateOutput(id=1, fields={"settings": {"auth_header": "Bearer v1"}}))
    v2 = changed(v1, UpdateOutput(id=1, fields={"settings": {"url": new.url, "auth_header": "Bearer v2"}}))

    async def main() -> None:
        delivery = Delivery(v1)
        session, breaker, adapter = delivery.sessions[1], delivery.breakers[1], delivery.adapters[1]
        delivery.queue([row(1, mpid=1)])
        await until(lambda: not delivery.lanes, "the first row")
        assert delivery.use(v1).adapters[1] is adapter  # the same settings again: nothing rebuilt
        delivery.use(v2)
        assert delivery.adapters[1] is not adapter
        assert delivery.sessions[1] is session and delivery.breakers[1] is breaker
        delivery.queue([row(2, mpid=1)])
        await until(lambda: not delivery.lanes, "the second row")
        await delivery.close()

    asyncio.run(main())
    assert [(r.body["n"], r.headers["Authorization"]) for r in old.received] == [(1, "Bearer v1")]
    assert [(r.body["n"], r.headers["Authorization"]) for r in new.received] == [(2, "Bearer v2")]


def test_an_added_output_gets_its_resources_and_a_removed_ones_rows_are_dropped_with_an_alert(
    partners: list[Receiver],
) -> None:
    old, new = partners
    v1 = base(old.url)
    v2 = changed(v1, webhook(new.url, "Bearer n"), AddConnection(fields={"name": "c2", "input": 1, "output": 2}))
    v3 = changed(v2, RemoveConnection(id=2), RemoveOutput(id=2), RemoveConnection(id=1))

    async def main() -> Delivery:
        delivery = Delivery(v1)
        delivery.use(v2)
        assert {2} <= delivery.sessions.keys() & delivery.breakers.keys() & delivery.slots.keys()
        delivery.queue([to(2, 2, 1, mpid=1)])
        await until(lambda: not delivery.lanes, "the added output's row")
        delivery.use(v3)
        delivery.queue([to(2, 2, 2, mpid=1), to(1, 1, 3, mpid=1)])
        await until(lambda: not delivery.lanes, "the removed output's and connection's rows dropped")
        await delivery.close()
        return delivery

    delivery = asyncio.run(main())
    assert [r.body["n"] for r in new.received] == [1]
    pending = delivery.take_pending()
    assert sorted((a.type, a.severity, a.output_id) for a in pending.alerts) == [
        (CONNECTION_REMOVED, FATAL, 1),
        (OUTPUT_REMOVED, FATAL, 2),
    ]
    assert {(2).to_bytes(8, "big"), (3).to_bytes(8, "big")} <= set(pending.acks[0])
    assert delivery.dropped == 2 and not delivery.parked and [r.body["n"] for r in old.received] == []


def test_a_coalesced_group_is_prepared_and_combined_by_one_version(partners: list[Receiver]) -> None:
    old, new = partners
    settings = {"max_batches_per_request": 10, "auth_header": "Bearer v1"}
    v1 = changed(base(old.url), UpdateOutput(id=1, fields={"settings": settings}))
    v2 = changed(v1, UpdateOutput(id=1, fields={"settings": {"url": new.url, "auth_header": "Bearer v2"}}))

    async def main() -> None:
        delivery = Delivery(v1)
        for n in range(1, 41):
            delivery.queue([row(n, mpid=n)])
            if n == 20:
                for _ in range(3):  # the first rows' groups are prepared under v1 ...
                    await asyncio.sleep(0)
                delivery.use(v2)  # ... the rest are prepared under v2
        await until(lambda: not delivery.lanes, "every row")
        await delivery.close()

    asyncio.run(main())
    sent = {server.port: [(r.headers["Authorization"], len(r.body)) for r in server.received] for server in partners}
    assert all(header == "Bearer v1" for header, _ in sent[old.port]) and sent[old.port]
    assert all(header == "Bearer v2" for header, _ in sent[new.port]) and sent[new.port]
    bodies = [b for server in partners for r in server.received for b in r.body]
    assert sorted(b["n"] for b in bodies) == list(range(1, 41))


def test_a_shard_refusing_a_version_it_does_not_hold_is_waited_out_not_dead_lettered() -> None:
    assert is_transient(ConfigVersionGap("shard 0 holds version 5, not 4"))
