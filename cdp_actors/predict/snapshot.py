"""The snapshot `cdp export` writes and the prediction jobs read: two Parquet file sets, one file per shard
(`profiles/shard-NNN.parquet`, `events/shard-NNN.parquet`), each read in one LMDB read transaction. A shard holds
every event of its users, so one shard's two files are a complete, independent unit of work.

Nested values are JSON text (the same JSON the Profile API answers), so pandas, polars and Ray Data read every
column as it is, with no extension types."""

from __future__ import annotations

from typing import Final

import msgspec

PROFILES_DIR: Final = "profiles"
EVENTS_DIR: Final = "events"
MANIFEST: Final = "manifest.json"


def shard_file(shard: int) -> str:
    return f"shard-{shard:03d}.parquet"


PROFILE_COLUMNS: Final = {
    "mpid": "int64",
    "first_seen_ms": "int64",
    "last_seen_ms": "int64",
    "user_attributes": "string: JSON object, name -> value (string, number, bool or list of strings)",
    "identity_types": "list<string>: user and device identity types present (customer_id, email, ios_idfa, ...)",
    "gdpr_consent": "string: JSON object, purpose -> consented (bool)",
    "ccpa_data_sale_opt_out": "bool, null when the user has no CCPA consent state",
    "calculated_attributes": "string: JSON object, CA name -> value (string)",
    "audience_ids": "list<int64>: real-time audiences the user is a member of",
}
"""One row per profile. Column name -> Arrow type and meaning."""

EVENT_COLUMNS: Final = {
    "mpid": "int64",
    "timestamp_ms": "int64: the event's time (its batch's time when the event had none)",
    "event_type": "string: custom_event, commerce_event, screen_view, session_start, ...",
    "event_name": "string, null when the type has none",
    "custom_event_type": "string, null unless a custom event",
    "product_action": "string, null unless a commerce event with a product action (purchase, add_to_cart, ...)",
    "revenue": "float64, null unless a commerce event: product_action.total_amount",
    "session_id": "int64, null when the event has none",
    "attributes": "string: JSON object of the event's custom attributes",
}
"""One row per stored event, in time order within a user. Column name -> Arrow type and meaning."""


class Manifest(msgspec.Struct):
    """`manifest.json` beside the two file sets: what the snapshot holds and as of when."""

    created_ms: int
    since_ms: int | None
    until_ms: int | None
    shards: int
    profiles: int
    events: int
    nodes: dict[str, str] = {}
    """Shard index -> the Ray node id its files were written on (the node holding the shard)."""
