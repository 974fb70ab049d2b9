"""Internal records that travel between actors and live in LMDB (msgpack, array-like for compactness)."""

from __future__ import annotations

from typing import Any

import msgspec


class IdentityChange(msgspec.Struct):
    """One change to a profile's identities that resolving a batch or an IDSync request made."""

    identity_type: str
    old: str | None
    new: str | None
    created: bool = False
    """The identity was new to the workspace (outbound `created_this_batch`)."""


class LogRecord(msgspec.Struct, array_like=True, frozen=True):
    """One accepted batch in the intake log; `raw` is the batch JSON exactly as validated."""

    input_id: int
    received_ms: int
    raw: bytes


class ShardRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A resolved batch on its way to the profile shard that owns `mpid`."""

    seq: int
    batch_id: int
    mpid: int
    input_id: int
    received_ms: int
    raw: bytes
    identity_changes: list[IdentityChange] = []
    """What resolving the batch changed in its profile's identities (outbound `user_identity_change`)."""


class OutboxRow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One outbound batch for one connection, or one audience membership change for one audience output, waiting
    for delivery."""

    key: bytes
    shard: int
    connection_id: int
    input_id: int
    output_id: int
    environment: str
    mpid: int
    event_count: int
    payload: bytes
    received_ms: int = 0
    audience_id: int = 0
    """Non-zero: a membership change of this audience (`payload` is a msgpack `MembershipChange`, `connection_id`
    0); zero: an outbound batch (`payload` is its JSON)."""


class AliasExport(msgspec.Struct, array_like=True):
    """What an alias job copies from the source profile's shard to the destination's."""

    events: list[dict[str, Any]]
    """The source's events stamped inside the job's window."""
    first_seen_ms: int


class DayActivity(msgspec.Struct):
    """One day's profiles seen through one input, on one shard (the identity and activity reports add them up)."""

    active: int = 0
    known: int = 0
    """Of the active ones, those holding a login identity."""
    coverage: dict[str, int] = {}
    """How many of the active ones held each identity type."""


class Alert(msgspec.Struct, array_like=True, frozen=True):
    ts_ms: int
    connection_id: int
    input_id: int
    output_id: int
    environment: str
    type: str
    severity: str
    message: str


LOG_CODEC = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(LogRecord))


def encode_log_record(record: LogRecord) -> bytes:
    return LOG_CODEC[0].encode(record)


def decode_log_record(data: bytes) -> LogRecord:
    return LOG_CODEC[1].decode(data)


class Window:
    """Outbox rows on their way to a forwarder, kept in their stored msgpack encoding: the hand-off is then
    one bytes object (`encoded`, a msgpack array the forwarder decodes with `decode_window`) instead of
    thousands of structs for Ray to pickle."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.rows: list[msgspec.Raw] = []

    def add(self, key: bytes, row: bytes) -> None:
        self.keys.append(key)
        self.rows.append(msgspec.Raw(row))

    def encoded(self) -> bytes:
        return _window_encoder.encode(self.rows)


_window_encoder = msgspec.msgpack.Encoder()
_window_decoder = msgspec.msgpack.Decoder(list[OutboxRow])


def decode_window(encoded: bytes) -> list[OutboxRow]:
    return _window_decoder.decode(encoded)
