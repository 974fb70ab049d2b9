"""Access and portability results: a shard's stored user read in one transaction, as the JSON document and the
zip archive (no Ray: a ShardCore on a temporary directory)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from cdp_actors.dsr.export import DOCUMENT_NAME, EVENTS_NAME, export_results
from cdp_actors.dsr.model import DsrRequest
from cdp_actors.profiles.model import SubjectRecord
from cdp_actors.profiles.shard import ShardCore, read_subject
from tests import samples
from tests.unit.test_shard_derived import T0, bought, played, record, workspace

REQUEST_ID = "a7551968-d5d6-44b2-9831-815ac9017798"
NOW_MS = T0 + 60_000
CONSENT = {"gdpr": {"marketing": {"consented": True, "timestamp_unixtime_ms": T0, "document": "v2"}}}


def dsr_request(kind: str) -> DsrRequest:
    return samples.dsr_request(REQUEST_ID, kind, "user-7", T0)


def stored_user(tmp_path: Path) -> tuple[ShardCore, SubjectRecord]:
    """User 7 played twice (the `players` audience) and bought for 5 (`spent`); user 8 exists beside it."""
    core = ShardCore(tmp_path, 0, workspace(), version=1)
    fields = {"user_attributes": {"plan": "gold", "$FirstName": "Ada"}, "consent_state": CONSENT}
    core.apply([record(1, 7, [played(T0), played(T0 + 1), bought(T0 + 2, 5)], T0 + 10, **fields)], None)
    core.apply([record(2, 8, [played(T0)], T0 + 20)], 1)
    core.apply([record(3, 7, [bought(T0 + 30, 1)], T0 + 40)], 2)
    found = read_subject(core.store, 7)
    assert found is not None
    return core, found


def test_the_access_document_holds_the_users_profile_consent_derived_state_and_events(tmp_path: Path) -> None:
    core, found = stored_user(tmp_path)
    results = export_results(dsr_request("access"), [found], workspace(), NOW_MS)
    assert results is not None
    document = json.loads(results)
    assert {k: v for k, v in document.items() if k != "profiles"} == {
        "subject_request_id": REQUEST_ID,
        "subject_request_type": "access",
        "regulation": "gdpr",
        "controller_id": "1",
        "generated_time": "2025-10-09T12:01:00.000Z",
    }
    (profile,) = document["profiles"]
    assert profile["mpid"] == 7
    assert profile["user_identities"] == {"customer_id": "user-7"}
    assert profile["user_attributes"] == {"plan": "gold", "$FirstName": "Ada"}
    assert profile["consent_state"] == CONSENT
    assert profile["calculated_attributes"] == {"plays": "2", "spent": "6"}
    (membership,) = profile["audience_memberships"]  # played twice within a day; spent 6, not over 10
    assert (membership["audience_id"], membership["audience_name"]) == (1, "players")
    names = [e["data"]["event_name"] for e in profile["events"]]
    assert names == ["Played", "Played", "Bought", "Bought"]  # both batches, oldest first; user 8's not among them
    assert profile["first_seen_time"] is not None and profile["inputs"] == [1]
    assert read_subject(core.store, 99) is None


def test_portability_is_a_zip_of_the_document_and_the_events_as_json_lines(tmp_path: Path) -> None:
    _, found = stored_user(tmp_path)
    results = export_results(dsr_request("portability"), [found], workspace(), NOW_MS)
    assert results is not None
    with zipfile.ZipFile(io.BytesIO(results)) as archive:
        assert archive.namelist() == [DOCUMENT_NAME, EVENTS_NAME]
        document = json.loads(archive.read(DOCUMENT_NAME))
        lines = archive.read(EVENTS_NAME).decode().splitlines()
    access = export_results(dsr_request("access"), [found], workspace(), NOW_MS)
    assert access is not None
    assert document == {**json.loads(access), "subject_request_type": "portability"}
    events = [json.loads(line) for line in lines]
    assert [(e["mpid"], e["data"]["event_name"]) for e in events] == [(7, "Played"), (7, "Played"), (7, "Bought"),
                                                                      (7, "Bought")]  # fmt: skip


def test_no_records_no_results() -> None:
    assert export_results(dsr_request("access"), [], workspace(), NOW_MS) is None
    assert export_results(dsr_request("portability"), [], workspace(), NOW_MS) is None
