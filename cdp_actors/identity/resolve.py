"""Batch identity resolution for the core pipeline: the batch's MPID, else a known identity, else a new MPID.

Pure functions over plain values; `IdentityIndex` (LMDB) holds identity → MPID. The full IDSync
strategies replace `resolve` later; the index and the determinism rules stay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from cdp_actors.storage.lmdb_env import Store, mpid_from_key, mpid_key

USER_IDENTITY_PRIORITY = (
    "customer_id", "mobile_number", "email", "other",
    *(f"other_id_{n}" for n in range(2, 11)),
    "facebook", "google", "twitter", "microsoft", "yahoo",
    "phone_number_2", "phone_number_3", "alias", "facebook_custom_audience_id",
)  # fmt: skip
DEVICE_IDENTITY_PRIORITY = (
    "ios_advertising_id", "ios_idfv", "android_advertising_id", "android_uuid",
    "roku_advertising_id", "roku_publisher_id", "microsoft_publisher_id", "microsoft_advertising_id",
    "fire_advertising_id", "amp_id", "push_token", "device_application_stamp",
)  # fmt: skip
_RANK = {name: n for n, name in enumerate(USER_IDENTITY_PRIORITY + DEVICE_IDENTITY_PRIORITY)}


class BatchHead(msgspec.Struct):
    """Just the parts of a batch that identify its user; decoding skips everything else."""

    mpid: int | None = None
    user_identities: dict[str, Any] | None = None
    device_info: dict[str, Any] | None = None
    mp_deviceid: str | None = None


_head_decoder = msgspec.json.Decoder(BatchHead)


def decode_head(raw: bytes) -> BatchHead:
    return _head_decoder.decode(raw)


def identity_pairs(head: BatchHead) -> list[tuple[str, str]]:
    """(type, value) of every user and device identity in the batch, highest priority first."""
    pairs: dict[str, str] = {}
    for name, value in (head.user_identities or {}).items():
        if isinstance(value, str) and value:
            pairs["customer_id" if name == "customerid" else name] = value
    for name in DEVICE_IDENTITY_PRIORITY:
        value = (head.device_info or {}).get(name)
        if isinstance(value, str) and value:
            pairs[name] = value
    if head.mp_deviceid:
        pairs["device_application_stamp"] = head.mp_deviceid
    return sorted(pairs.items(), key=lambda item: _RANK.get(item[0], len(_RANK)))


def identity_key(identity_type: str, value: str) -> bytes:
    return f"{identity_type}\x00{value}".encode()


def resolve(keys: list[bytes], batch_mpid: int | None, known: Mapping[bytes, int], new_mpid: int) -> int:
    """The batch's MPID if given, else the MPID of its highest-priority known identity, else `new_mpid`."""
    if batch_mpid:
        return batch_mpid
    return next((known[key] for key in keys if key in known), new_mpid)


class IdentityIndex:
    """identity (type, value) → MPID, in its own LMDB environment; one writer (the dispatcher)."""

    def __init__(self, path: str) -> None:
        self.store = Store(path, ("identity",))
        self.db = self.store.db("identity")

    def lookup(self, keys: set[bytes]) -> dict[bytes, int]:
        with self.store.read() as txn:
            found = {key: txn.get(key, db=self.db) for key in keys}
        return {key: mpid_from_key(value) for key, value in found.items() if value}

    def claim(self, claims: dict[bytes, int]) -> None:
        """Map identities that had no MPID yet; an existing mapping is never overwritten."""
        if not claims:
            return
        with self.store.write() as txn:
            for key, mpid in claims.items():
                txn.put(key, mpid_key(mpid), db=self.db, overwrite=False)
