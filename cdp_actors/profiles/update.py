"""Pure profile updates: apply one batch to one profile.

Writes are ordered by (timestamp, value) rather than by arrival, so batches applied in any order
converge to the same profile: the later timestamp wins, and on a tie the larger encoded value.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from cdp_actors.config import Gpc
from cdp_actors.profiles.model import ConsentRecord, Profile, Stamped
from cdp_actors.profiles.privacy import gpc_consent, merged_opt_out, with_gpc
from cdp_actors.schema.events import Batch, batch_time_ms, device_identities_of, user_identities_of

REGULATIONS = ("gdpr", "ccpa")
_encode = msgspec.json.encode


class Applied(NamedTuple):
    profile: Profile
    notifications: list[dict[str, Any]]


def _order(item: Stamped) -> tuple[int, bytes]:
    return item.ts, _encode(item.value)


def merge_stamped(current: Stamped | None, incoming: Stamped) -> Stamped:
    """Last write wins by timestamp; ties go to the larger encoded value, so order never matters."""
    if current is None or _order(incoming) > _order(current):
        return incoming
    return current


def merge_attributes(
    attributes: dict[str, Stamped], updates: dict[str, Any], deleted: list[str], ts: int
) -> dict[str, Stamped]:
    merged = dict(attributes)
    for name, value in updates.items():
        merged[name] = merge_stamped(merged.get(name), Stamped(value, ts))
    for name in deleted:
        merged[name] = merge_stamped(merged.get(name), Stamped(None, ts))
    return merged


def _consent_order(record: ConsentRecord) -> tuple[int, bytes]:
    return record.timestamp_unixtime_ms, _encode(record)


def merge_consent(
    consent: dict[str, dict[str, ConsentRecord]], incoming: dict[str, dict[str, ConsentRecord]]
) -> dict[str, dict[str, ConsentRecord]]:
    merged = {regulation: dict(purposes) for regulation, purposes in consent.items()}
    for regulation, purposes in incoming.items():
        target = merged.setdefault(regulation, {})
        for purpose, record in purposes.items():
            old = target.get(purpose)
            if old is None or _consent_order(record) > _consent_order(old):
                target[purpose] = record
    return merged


def _consent_view(regulation: str, record: ConsentRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "regulation": regulation,
        "document": record.document,
        "consented": record.consented,
        "timestamp_unixtime_ms": record.timestamp_unixtime_ms,
        "location": record.location,
        "hardware_id": record.hardware_id,
    }


def consent_notifications(
    old: dict[str, dict[str, ConsentRecord]], new: dict[str, dict[str, ConsentRecord]]
) -> list[dict[str, Any]]:
    """One `system_notifications` entry per purpose whose consent state changed."""
    notes = []
    for regulation in REGULATIONS:
        before, after = old.get(regulation, {}), new.get(regulation, {})
        for purpose in sorted(after):
            if before.get(purpose) != after[purpose]:
                notes.append(
                    {
                        "type": f"{regulation}_change",
                        "data": {
                            "purpose": purpose,
                            "old": _consent_view(regulation, before.get(purpose)),
                            "current": _consent_view(regulation, after[purpose]),
                        },
                    }
                )
    return notes


def incoming_consent(batch: Batch, ts: int) -> dict[str, dict[str, ConsentRecord]]:
    state = batch.consent_state
    if state is None:
        return {}
    incoming = {}
    for regulation in REGULATIONS:
        purposes = getattr(state, regulation, None) or {}
        incoming[regulation] = {
            purpose: ConsentRecord(
                consented=consent.consented,
                timestamp_unixtime_ms=consent.timestamp_unixtime_ms or ts,
                document=consent.document,
                location=consent.location,
                hardware_id=consent.hardware_id,
            )
            for purpose, consent in purposes.items()
        }
    return incoming


def _merge_identities(current: dict[str, Stamped], seen: dict[str, str], ts: int, keep: str) -> dict[str, Stamped]:
    """User identities keep the time they were first seen; device identities the time last seen."""
    merged = dict(current)
    for name, value in seen.items():
        old = merged.get(name)
        if old is None or old.value != value:
            merged[name] = Stamped(value, ts)
        elif keep == "last":
            merged[name] = Stamped(value, max(old.ts, ts))
    return merged


def _seen_range(batch: Batch, batch_ms: int) -> tuple[int, int]:
    stamps = [e.data.timestamp_unixtime_ms for e in batch.events if e.data.timestamp_unixtime_ms]
    return min(stamps, default=batch_ms), max(stamps, default=batch_ms)


def apply_batch(profile: Profile, batch: Batch, input_id: int, received_ms: int, gpc: Gpc | None = None) -> Applied:
    """`gpc`: what a GPC signal means in this workspace (`privacy.gpc`; None: ignored)."""
    batch_ms = batch_time_ms(batch, received_ms)
    first, last = _seen_range(batch, batch_ms)
    incoming = incoming_consent(batch, batch_ms)
    if batch.gpc:
        incoming = with_gpc(incoming, gpc_consent(gpc, batch_ms))
    consent = merge_consent(profile.consent, incoming)
    updated = msgspec.structs.replace(
        profile,
        user_identities=_merge_identities(profile.user_identities, user_identities_of(batch), batch_ms, "first"),
        device_identities=_merge_identities(profile.device_identities, device_identities_of(batch), batch_ms, "last"),
        attributes=merge_attributes(
            profile.attributes, batch.user_attributes or {}, batch.deleted_user_attributes or [], batch_ms
        ),
        consent=consent,
        first_seen_ms=min(profile.first_seen_ms or first, first),
        last_seen_ms=max(profile.last_seen_ms, last),
        inputs=profile.inputs if input_id in profile.inputs else [*profile.inputs, input_id],
        batches=profile.batches + 1,
        events=profile.events + len(batch.events),
        opt_out=merged_opt_out(profile.opt_out, batch, batch_ms),
    )
    return Applied(updated, consent_notifications(profile.consent, consent))
