"""The enriched outbound batch: what raw-JSON outputs (webhook, later Firehose) receive.

Every id in it derives from the intake position, so a replay produces byte-identical output and
partners can dedupe on `batch_id` / event `message_id`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cdp_actors.ids import EVENT, MESSAGE, id_run
from cdp_actors.profiles.model import Profile
from cdp_actors.schema.events import Batch
from cdp_actors.schema.records import ShardRecord

_INPUT_ONLY = ("api_key", "api_keys", "mpid", "batch_id", "timestamp_unixtime_ms", "gpc")  # GPC: in consent_state


def outbound_consent(profile: Profile) -> dict[str, Any] | None:
    if not profile.consent:
        return None
    return {regulation: msgspec.to_builtins(purposes) for regulation, purposes in profile.consent.items()}


def identity_change_events(record: ShardRecord) -> list[dict[str, Any]]:
    """One outbound `user_identity_change` event per identity that resolving the batch added or replaced."""

    def identity(name: str, value: str | None, created: bool) -> dict[str, Any] | None:
        if value is None:
            return None
        return {
            "identity_type": name,
            "identity": value,
            "timestamp_unixtime_ms": record.received_ms,
            "created_this_batch": created,
        }

    return [
        {
            "event_type": "user_identity_change",
            "data": {
                "new": identity(c.identity_type, c.new, c.created),
                "old": identity(c.identity_type, c.old, False),
            },
        }
        for c in record.identity_changes
    ]


def build_outbound(
    batch: Batch, profile: Profile, record: ShardRecord, notifications: list[dict[str, Any]], created: set[str]
) -> dict[str, Any]:
    out = msgspec.to_builtins(batch)
    for name in _INPUT_ONLY:
        out.pop(name, None)
    events = out.setdefault("events", [])
    events += identity_change_events(record)
    event_ids = id_run(EVENT, record.batch_id, len(events))
    message_ids = id_run(MESSAGE, record.batch_id, len(events))
    for event, event_id, message_id in zip(events, event_ids, message_ids, strict=True):
        data = event.setdefault("data", {})
        data.setdefault("timestamp_unixtime_ms", record.received_ms)
        data.setdefault("event_id", event_id)
        data["message_id"] = message_id
    out.update(
        mpid=profile.mpid,
        batch_id=record.batch_id,
        timestamp_unixtime_ms=record.received_ms,
        schema_version=2,
        environment=batch.environment or "production",
        user_identities=[
            {
                "identity_type": name,
                "identity": item.value,
                "timestamp_unixtime_ms": item.ts,
                "created_this_batch": name in created,
            }
            for name, item in profile.user_identities.items()
        ],
        user_attributes=profile.live_attributes(),
    )
    consent = outbound_consent(profile)
    if consent:
        out["consent_state"] = consent
    if notifications:
        out["system_notifications"] = notifications
    return out
