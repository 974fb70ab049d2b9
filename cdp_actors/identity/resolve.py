"""What identifies the user of an Events API batch: its MPID and its user and device identities.

Decoding reads only those fields; the IdentityIndex resolves them per the workspace's strategy.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cdp_actors.identity.types import DEVICE_TYPES, USER_TYPES, canonical


class BatchHead(msgspec.Struct):
    """Just the parts of a batch that identify its user; decoding skips everything else."""

    mpid: int | None = None
    user_identities: dict[str, Any] | None = None
    device_info: dict[str, Any] | None = None
    mp_deviceid: str | None = None


_head_decoder = msgspec.json.Decoder(BatchHead)


def decode_head(raw: bytes) -> BatchHead:
    return _head_decoder.decode(raw)


def batch_identities(head: BatchHead) -> dict[str, str]:
    """Canonical identity type → value for every non-empty user and device identity of the batch."""
    found: dict[str, str] = {}
    for name, value in (head.user_identities or {}).items():
        identity_type = canonical(name)
        if identity_type in USER_TYPES and isinstance(value, str) and value:
            found[identity_type] = value
    for name in DEVICE_TYPES:
        value = (head.device_info or {}).get(name)
        if isinstance(value, str) and value:
            found[name] = value
    if head.mp_deviceid:
        found["device_application_stamp"] = head.mp_deviceid
    return found
