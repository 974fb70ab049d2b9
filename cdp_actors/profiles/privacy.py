"""Opt-out and the Global Privacy Control signal, as pure functions the shard applies to each batch.

Opt-out: an `opt_out` event (https://docs.mparticle.com/developers/server/json-reference/, `is_opted_out`) is the
server-side form of the SDKs' `setOptOut` (https://docs.mparticle.com/developers/sdk/web/data-privacy-controls/):
an opted-out user's data is not forwarded. The profile keeps the latest one by event time (`Profile.opt_out`, last
write wins like attributes, ties to opted out), so batches applied in any order agree on the state.

GPC (https://globalprivacycontrol.github.io/gpc-spec/): a batch marked `"gpc": true` records the consent state the
workspace maps GPC to (`privacy.gpc`), stamped at the batch time with the document `gpc`; consent forwarding rules
and audience criteria then act on it as on any consent state.
"""

from __future__ import annotations

import msgspec

from cdp_actors.config import Gpc
from cdp_actors.profiles.model import ConsentRecord, Profile, Stamped
from cdp_actors.schema.events import Batch, OptOutEvent

GPC_DOCUMENT = "gpc"
"""The consent record's `document` for a state GPC set: says where it came from in the profile and outbound."""
CCPA_PURPOSE = "data_sale_opt_out"


def _later(current: Stamped | None, incoming: Stamped) -> Stamped:
    """Last write wins by event time; on a tie opted out (True) wins, so the order of arrival never matters."""
    if current is None or (incoming.ts, incoming.value is True) > (current.ts, current.value is True):
        return incoming
    return current


def opt_out_of(batch: Batch, batch_ms: int) -> Stamped | None:
    """The batch's deciding `opt_out` event as (is_opted_out, event time); None when it has none. An event without a
    time is at the batch time (`batch_time_ms`), as the shard stamps every event."""
    found: Stamped | None = None
    for event in batch.events:
        if isinstance(event, OptOutEvent):
            found = _later(found, Stamped(event.data.is_opted_out, event.data.timestamp_unixtime_ms or batch_ms))
    return found


def merged_opt_out(current: Stamped | None, batch: Batch, batch_ms: int) -> Stamped | None:
    incoming = opt_out_of(batch, batch_ms)
    return current if incoming is None else _later(current, incoming)


def is_opted_out(profile: Profile) -> bool:
    """Nothing of this user is forwarded: no event batches, no audience membership changes."""
    return profile.opt_out is not None and profile.opt_out.value is True


def opted_in(profile: Profile) -> Profile:
    """The profile as if never opted out (an erasure's membership drops still reach partners)."""
    return profile if profile.opt_out is None else msgspec.structs.replace(profile, opt_out=None)


def gpc_consent(setting: Gpc | None, batch_ms: int) -> dict[str, dict[str, ConsentRecord]]:
    """The consent state a GPC signal records under the workspace's mapping; empty when GPC is off."""
    if setting is None:
        return {}
    if setting.gdpr_purpose is not None:
        record = ConsentRecord(consented=False, timestamp_unixtime_ms=batch_ms, document=GPC_DOCUMENT)
        return {"gdpr": {setting.gdpr_purpose: record}}
    record = ConsentRecord(consented=True, timestamp_unixtime_ms=batch_ms, document=GPC_DOCUMENT)
    return {"ccpa": {CCPA_PURPOSE: record}}


def with_gpc(
    incoming: dict[str, dict[str, ConsentRecord]], gpc: dict[str, dict[str, ConsentRecord]]
) -> dict[str, dict[str, ConsentRecord]]:
    """The batch's own consent state with GPC's over it: the signal came with the batch and wins within it."""
    merged = {regulation: dict(purposes) for regulation, purposes in incoming.items()}
    for regulation, purposes in gpc.items():
        merged.setdefault(regulation, {}).update(purposes)
    return merged
