"""The steps that fulfil a data subject request, called by the DSR actor once the request's waiting period is
over, in this order: `resolve`, then for an erasure `forward` (while the profiles still exist: partners are sent
the subject's identities) and `erase`; for access and portability `export` (and `forward` too: partners are told
of every request type they accept). Each step is idempotent: after a `kill -9` the actor runs the request's steps
again from the first one not recorded as done.

They run in the DSR actor's process and call the runtime's actors through `cdp_actors.handles`.
"""

from __future__ import annotations

import asyncio
import time

from cdp_actors.config import WorkspaceConfig
from cdp_actors.dsr import erasure
from cdp_actors.dsr.export import export_results, stored_subjects
from cdp_actors.dsr.forward import forward_to_outputs
from cdp_actors.dsr.model import DsrRequest, PartnerStatus


def _now_ms() -> int:
    return int(time.time() * 1000)


def resolve(request: DsrRequest, config: WorkspaceConfig) -> list[int]:
    """The MPIDs of the request's subject: the `mpids` it names, and the profiles its identities resolve to
    (each identity through the identity index; a subject nobody knows: [])."""
    return erasure.resolve(request, config)


def erase(mpids: list[int], config: WorkspaceConfig) -> None:
    """Remove every trace of the profiles: the profile, its identity index entries, its event history, its
    calculated-attribute and audience state (drops sent to connected audience outputs), its pending outbox rows,
    and its raw copies in the intake log; then compact what LMDB kept in freed pages, so that no file in the data
    directory still contains the subject's identifiers. New data for the same identities afterwards creates a new
    profile."""
    erasure.erase(mpids, config)


def export(request: DsrRequest, mpids: list[int], config: WorkspaceConfig) -> bytes | None:
    """Access: the profiles (identities, attributes, consent and its history, calculated attributes, audience
    memberships) and their events as one JSON document; portability: the same as a zip archive holding it. None
    when there are no records."""
    return export_results(request, stored_subjects(mpids, config), config, _now_ms())


def forward(request: DsrRequest, mpids: list[int], config: WorkspaceConfig) -> list[PartnerStatus]:
    """Send the request to every output that supports deletion requests (Firehose `DsrProcessingRequest`, the
    partners' own deletion APIs: Braze, Amplitude, Mixpanel); one status per such output connected to the request's
    input (`skipped` for request types a partner does not take). Runs its own event loop: call it from a thread
    that has none (the DSR actor's worker thread)."""
    return asyncio.run(forward_to_outputs(request, stored_subjects(mpids, config), config, _now_ms()))
