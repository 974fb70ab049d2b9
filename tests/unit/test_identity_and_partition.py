from __future__ import annotations

from collections import Counter

from cdp_actors.identity.resolve import BatchHead, identity_key, identity_pairs, resolve
from cdp_actors.ids import EVENT, MESSAGE, batch_id, fresh_mpid, id_run, origin_key
from cdp_actors.partition import partition_of


def test_identity_pairs_are_in_priority_order_and_fold_customerid() -> None:
    head = BatchHead(
        user_identities={"email": "a@x.io", "customerid": "c1", "other_id_3": "o3", "twitter": None},
        device_info={"ios_idfv": "idfv-1", "brand": "Apple"},
        mp_deviceid="das-1",
    )
    assert identity_pairs(head) == [
        ("customer_id", "c1"), ("email", "a@x.io"), ("other_id_3", "o3"),
        ("ios_idfv", "idfv-1"), ("device_application_stamp", "das-1"),
    ]  # fmt: skip


def test_resolve_prefers_the_batch_mpid_then_the_highest_priority_known_identity() -> None:
    keys = [identity_key("customer_id", "c1"), identity_key("email", "a@x.io")]
    assert resolve(keys, 42, {keys[0]: 7}, 99) == 42
    assert resolve(keys, None, {keys[1]: 8, keys[0]: 7}, 99) == 7
    assert resolve(keys, None, {keys[1]: 8}, 99) == 8
    assert resolve(keys, None, {}, 99) == 99


def test_fresh_mpids_are_deterministic_and_distinct() -> None:
    origin = origin_key("intake-0")
    assert fresh_mpid(origin, 5) == fresh_mpid(origin, 5) != fresh_mpid(origin_key("intake-1"), 5)
    assert len({fresh_mpid(origin, n) for n in range(10_000)}) == 10_000
    batches = [batch_id(origin, n) for n in range(1000)]
    ids = {i for b in batches for kind in (EVENT, MESSAGE) for i in id_run(kind, b, 10)}
    assert id_run(EVENT, batches[0], 10) == id_run(EVENT, batches[0], 10)
    assert len(ids) == 20_000 and all(-(2**63) <= i < 2**63 for i in ids)


def test_partitioning_is_stable_and_balanced() -> None:
    assert partition_of(123456789, 4) == partition_of(123456789, 4)
    spread = Counter(partition_of(fresh_mpid(origin_key("x"), n), 4) for n in range(20_000))
    assert min(spread.values()) > 4_500
    sequential = Counter(partition_of(n, 2) for n in range(1, 1001))
    assert min(sequential.values()) > 400
