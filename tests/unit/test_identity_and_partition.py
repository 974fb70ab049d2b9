from __future__ import annotations

from collections import Counter

from cdp_actors.identity.resolve import BatchHead, batch_identities
from cdp_actors.identity.types import CANONICAL_TO_IDSYNC, IDSYNC_TO_CANONICAL, canonical
from cdp_actors.ids import EVENT, MESSAGE, batch_id, fresh_mpid, id_run, origin_key
from cdp_actors.partition import partition_of


def test_batch_identities_use_canonical_names_and_skip_empty_values() -> None:
    head = BatchHead(
        user_identities={"email": "a@x.io", "customerid": "c1", "other_id_3": "o3", "twitter": None},
        device_info={"ios_idfv": "idfv-1", "brand": "Apple"},
        mp_deviceid="das-1",
    )
    assert batch_identities(head) == {
        "customer_id": "c1", "email": "a@x.io", "other_id_3": "o3",
        "ios_idfv": "idfv-1", "device_application_stamp": "das-1",
    }  # fmt: skip


def test_every_idsync_spelling_maps_to_a_canonical_type_and_back() -> None:
    for idsync, name in IDSYNC_TO_CANONICAL.items():
        assert canonical(idsync) == name and CANONICAL_TO_IDSYNC[name] == idsync
    assert canonical("other7") == "other_id_7" and canonical("ios_idfa") == "ios_advertising_id"
    assert canonical("google_advertising_id") == "android_advertising_id" and canonical("nope") is None


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
