"""Erasure: the bodies of `fulfil.resolve` and `fulfil.erase`.

Order of `erase`, and why: the dispatcher is paused first (it finishes the part in flight, then closes the
intake's store), so no batch of the subject is resolved or applied while its records go. Then the profiles'
identities are gathered (from the identity index and the profiles themselves, so a re-run after a crash still
finds them in whichever store kept them), the identity index forgets them (a batch for the same identities
afterwards creates a new profile, a new MPID), the shards remove the profiles' records (their outbox rows too),
every forwarder discards the rows of theirs it holds in memory (and returns once none is held: `Delivery.forget`
says what is guaranteed of a request on the wire at that moment), and the intake removes
the subject's batches not dispatched yet, last: a batch accepted until then is removed with the rest. Each store
compacts its environment after its removal, so no file keeps the bytes. Every step is idempotent.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import ray

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.dsr.model import DsrRequest
from cdp_actors.partition import partition_of

PAUSE_LEASE_S = 600.0
"""How long the dispatcher stays paused at most if this process dies before resuming it (an erasure of a few
profiles takes seconds: compacting a 100k-profile shard is well under that)."""


def resolve(request: DsrRequest, config: WorkspaceConfig) -> list[int]:
    """The MPIDs the request names, then every profile that holds one of its identities, by the identity index's
    exact lookup (`holders`, as `/cdp/users/search`): an IDSync search would hide a known profile from a request
    naming only a non-login identity (its email, say). An identity nobody holds resolves to nothing."""
    identity = handles.identity()
    lookups = [identity.holders.remote(i.identity_type, i.value) for i in request.identities]
    found = [mpid for holders in ray.get(lookups) for mpid, _ in holders]
    return list(dict.fromkeys([*request.mpids, *found]))


def erase(mpids: list[int], config: WorkspaceConfig) -> None:
    """See the module's docstring."""
    if not mpids:
        return
    shards = config.runtime.shards
    dispatcher = handles.dispatcher()
    ray.get(dispatcher.pause.remote(PAUSE_LEASE_S))
    try:
        identities = _identities_of(mpids, shards)
        held: dict[str, list[str]] = ray.get(handles.identity().erase.remote(mpids))
        for identity_type, values in held.items():
            identities[identity_type] = sorted({*identities.get(identity_type, ()), *values})
        ray.get([handles.shard(shard).erase.remote(owned) for shard, owned in by_shard(mpids, shards).items()])
        ray.get([forwarder.forget.remote(mpids) for forwarder in handles.forwarders(config.runtime.forwarders)])
        ray.get(handles.intake().erase.remote(identities, mpids))
    finally:
        ray.get(dispatcher.resume.remote())


def by_shard(mpids: list[int], shards: int) -> dict[int, list[int]]:
    owned: dict[int, list[int]] = defaultdict(list)
    for mpid in mpids:
        owned[partition_of(mpid, shards)].append(mpid)
    return dict(owned)


def _identities_of(mpids: list[int], shards: int) -> dict[str, list[str]]:
    """The user and device identities the profiles hold, as the identity index and their shards record them."""
    identity = handles.identity()
    records = ray.get([identity.record.remote(mpid) for mpid in mpids])
    profiles = ray.get([handles.shard_for(mpid, shards).profile.remote(mpid) for mpid in mpids])
    found: dict[str, set[str]] = defaultdict(set)
    for record in records:
        for identity_type, values in (record.identities if record else {}).items():
            found[identity_type].update(values)
    for profile in profiles:
        for identity_type, stamped in _stored_identities(profile):
            found[identity_type].add(stamped)
    return {identity_type: sorted(values) for identity_type, values in found.items()}


def _stored_identities(profile: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A shard's profile view (`ShardCore.profile`): identities are `Stamped`, [value, ts] pairs; None removed."""
    if profile is None:
        return []
    stored = {**profile.get("user_identities", {}), **profile.get("device_identities", {})}
    return [(identity_type, stamped[0]) for identity_type, stamped in stored.items() if stamped[0] is not None]
