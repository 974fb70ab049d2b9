"""Access and portability: what the platform stores of a data subject, as one JSON document (access) or a zip
archive holding it and the events as JSON Lines (portability).

The document: the request (`subject_request_id`, `subject_request_type`, `regulation`, `controller_id`,
`generated_time`) and, per profile, its MPID, user and device identities, user attributes, consent state (the
latest decision per purpose, with its time: what the profile keeps), calculated attributes, audience
memberships (with the time the user entered each), first and last seen times, the inputs it came from, and its
stored events (the shard's history, oldest first). The building is pure; `stored_subjects` reads each profile in
one read transaction on its shard.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import msgspec
import ray

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.dsr.model import DsrRequest
from cdp_actors.profiles.model import SubjectRecord

DOCUMENT_NAME = "subject_data.json"
EVENTS_NAME = "events.jsonl"
"""The portability archive's members: the access document, and every event as one JSON line (with its MPID)."""


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stored_subjects(mpids: list[int], config: WorkspaceConfig) -> list[SubjectRecord]:
    """The stored records of the MPIDs that have a profile, in the order given (each from its own shard)."""
    calls = [handles.shard_for(mpid, config.runtime.shards).subject.remote(mpid) for mpid in dict.fromkeys(mpids)]
    return [record for record in ray.get(calls) if record is not None]


def profile_document(record: SubjectRecord, audience_names: Mapping[int, str]) -> dict[str, Any]:
    profile = record.profile

    def values(stamped: Mapping[str, Any]) -> dict[str, Any]:
        return {name: item.value for name, item in stamped.items() if item.value is not None}

    memberships = [
        {"audience_id": audience_id, "audience_name": audience_names.get(audience_id, ""), "entered_time": rfc3339(ms)}
        for audience_id, ms in sorted(profile.audiences.items())
    ]
    return {
        "mpid": profile.mpid,
        "user_identities": values(profile.user_identities),
        "device_identities": values(profile.device_identities),
        "user_attributes": values(profile.attributes),
        "consent_state": {
            regulation: msgspec.to_builtins(purposes) for regulation, purposes in profile.consent.items() if purposes
        },
        "calculated_attributes": dict(profile.calculated),
        "audience_memberships": memberships,
        "first_seen_time": rfc3339(profile.first_seen_ms) if profile.first_seen_ms else None,
        "last_seen_time": rfc3339(profile.last_seen_ms) if profile.last_seen_ms else None,
        "inputs": list(profile.inputs),
        "events": record.events,
    }


def access_document(
    request: DsrRequest, records: list[SubjectRecord], config: WorkspaceConfig, now_ms: int
) -> dict[str, Any]:
    names = {audience.id: audience.name for audience in config.audiences}
    return {
        "subject_request_id": request.subject_request_id,
        "subject_request_type": request.subject_request_type,
        "regulation": request.regulation,
        "controller_id": str(config.workspace.workspace_id),
        "generated_time": rfc3339(now_ms),
        "profiles": [profile_document(record, names) for record in records],
    }


def portability_archive(document: dict[str, Any], now_ms: int) -> bytes:
    """A zip of the document and its events as JSON Lines; members dated `now_ms` (zip times have no zone: UTC)."""
    stamp = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).timetuple()[:6]
    lines = [
        msgspec.json.encode({"mpid": profile["mpid"], **event}) + b"\n"
        for profile in document["profiles"]
        for event in profile["events"]
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in ((DOCUMENT_NAME, msgspec.json.encode(document)), (EVENTS_NAME, b"".join(lines))):
            archive.writestr(zipfile.ZipInfo(name, stamp), content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def export_results(
    request: DsrRequest, records: list[SubjectRecord], config: WorkspaceConfig, now_ms: int
) -> bytes | None:
    """The results file of an access (JSON) or portability (zip) request; None when there are no records."""
    if not records:
        return None
    document = access_document(request, records, config, now_ms)
    if request.subject_request_type == "portability":
        return portability_archive(document, now_ms)
    return msgspec.json.encode(document)
