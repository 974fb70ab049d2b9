"""The stored profile of one user (MPID) and its msgpack codec."""

from __future__ import annotations

from typing import Any

import msgspec


class Stamped(msgspec.Struct, array_like=True):
    """A value with the time it was written; `value` None on an attribute means deleted (a tombstone)."""

    value: Any
    ts: int


class ConsentRecord(msgspec.Struct, omit_defaults=True):
    consented: bool
    timestamp_unixtime_ms: int
    document: str | None = None
    location: str | None = None
    hardware_id: str | None = None


class Profile(msgspec.Struct, omit_defaults=True):
    mpid: int
    user_identities: dict[str, Stamped] = {}
    device_identities: dict[str, Stamped] = {}
    attributes: dict[str, Stamped] = {}
    consent: dict[str, dict[str, ConsentRecord]] = {}
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    inputs: list[int] = []
    batches: int = 0
    events: int = 0
    history: int = 0
    status_messages: list[str] = []
    calculated: dict[str, str] = {}
    """Calculated attribute name -> its current value (CA values are strings); shown among the user attributes."""
    audiences: dict[int, int] = {}
    """Audience id -> when the user entered it (epoch ms): the real-time audiences the user is a member of now."""
    opt_out: Stamped | None = None
    """The user's latest `opt_out` event: `is_opted_out` and its event time (last write wins, as attributes). While
    True, nothing of the user is forwarded (`cdp_actors/profiles/privacy.py`); None: the user never sent one."""

    def live_attributes(self) -> dict[str, Any]:
        """The user attributes with a value, calculated attributes included (a CA's name wins over an attribute's)."""
        live = {name: item.value for name, item in self.attributes.items() if item.value is not None}
        return {**live, **self.calculated} if self.calculated else live


class SubjectRecord(msgspec.Struct):
    """Everything a shard stores of one user, read in one transaction: for data subject access requests."""

    profile: Profile
    events: list[dict[str, Any]]
    """The stored event history, oldest first (at most `runtime.history_per_user` events)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Profile)


def encode_profile(profile: Profile) -> bytes:
    return _encoder.encode(profile)


def decode_profile(data: bytes) -> Profile:
    return _decoder.decode(data)
