from __future__ import annotations

import os
import stat
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cdp_actors.ids import (
    EVENT,
    MESSAGE,
    MPID_SECRET_FILE,
    _create_secret,
    batch_id,
    derived_id,
    fresh_mpid,
    id_run,
    load_mpid_secret,
    origin_key,
)
from cdp_actors.partition import partition_of
from cdp_actors.schema.events import BatchHead, DeviceInfo, UserIdentities, batch_identities
from cdp_actors.schema.identity_types import CANONICAL_TO_IDSYNC, IDSYNC_TO_CANONICAL, canonical


def test_batch_identities_use_canonical_names_and_skip_empty_values() -> None:
    head = BatchHead(
        user_identities=UserIdentities(email="a@x.io", customerid="c1", other_id_3="o3", twitter=None),
        device_info=DeviceInfo(ios_idfv="idfv-1", brand="Apple"),
        mp_deviceid="das-1",
    )
    assert batch_identities(head) == {
        "customer_id": "c1",
        "email": "a@x.io",
        "other_id_3": "o3",
        "ios_idfv": "idfv-1",
        "device_application_stamp": "das-1",
    }


def test_every_idsync_spelling_maps_to_a_canonical_type_and_back() -> None:
    for idsync, name in IDSYNC_TO_CANONICAL.items():
        assert canonical(idsync) == name and CANONICAL_TO_IDSYNC[name] == idsync
    assert canonical("other7") == "other_id_7" and canonical("ios_idfa") == "ios_advertising_id"
    assert canonical("google_advertising_id") == "android_advertising_id" and canonical("nope") is None


SECRET, OTHER_SECRET = bytes(range(32)), bytes(range(1, 33))
OLD_MPID_SALT = 2  # the retired scheme: derived_id(2, origin, seq), computable by anyone


def test_fresh_mpids_are_deterministic_distinct_positive_and_keyed() -> None:
    origin = origin_key("intake-0")
    assert fresh_mpid(SECRET, origin, 5) == fresh_mpid(SECRET, origin, 5) != fresh_mpid(SECRET, origin_key("x"), 5)
    mpids = [fresh_mpid(SECRET, origin, n) for n in range(10_000)]
    assert len(set(mpids)) == 10_000 and all(0 < m < 2**63 for m in mpids)
    assert not set(mpids) & {fresh_mpid(OTHER_SECRET, origin, n) for n in range(10_000)}  # another deployment
    assert not set(mpids) & {derived_id(OLD_MPID_SALT, origin, n) or 1 for n in range(10_000)}


def test_ids_derived_from_batch_ids_are_deterministic_and_distinct() -> None:
    origin = origin_key("intake-0")
    batches = [batch_id(origin, n) for n in range(1000)]
    ids = {i for b in batches for kind in (EVENT, MESSAGE) for i in id_run(kind, b, 10)}
    assert id_run(EVENT, batches[0], 10) == id_run(EVENT, batches[0], 10)
    assert len(ids) == 20_000 and all(-(2**63) <= i < 2**63 for i in ids)


def test_the_mpid_secret_is_created_once_private_and_kept(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:  # concurrent first starts agree on one secret
        secrets = set(pool.map(lambda _: load_mpid_secret(tmp_path), range(16)))
    (secret,) = secrets
    path = tmp_path / MPID_SECRET_FILE
    assert len(secret) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    _create_secret(path)  # a concurrent first start that looked before this one's secret was in place
    assert load_mpid_secret(tmp_path) == secret and os.listdir(tmp_path) == [MPID_SECRET_FILE]  # no temporaries
    other = tmp_path / "other"
    other.mkdir()
    assert load_mpid_secret(other) != secret


def test_a_damaged_mpid_secret_stops_the_start_instead_of_being_replaced(tmp_path: Path) -> None:
    (tmp_path / MPID_SECRET_FILE).write_bytes(b"short")
    with pytest.raises(RuntimeError, match="holds 5 bytes") as raised:
        load_mpid_secret(tmp_path)
    assert "short" not in str(raised.value)
    assert (tmp_path / MPID_SECRET_FILE).read_bytes() == b"short"


def test_partitioning_is_stable_and_balanced() -> None:
    assert partition_of(123456789, 4) == partition_of(123456789, 4)
    spread = Counter(partition_of(fresh_mpid(SECRET, origin_key("x"), n), 4) for n in range(20_000))
    assert min(spread.values()) > 4_500
    sequential = Counter(partition_of(n, 2) for n in range(1, 1001))
    assert min(sequential.values()) > 400
