"""The request book's lifecycle with injected steps and clock: pending → in_progress → completed / cancelled, the
409 and duplicate refusals, steps recorded durably (a reopened book resumes at the first step not done), failed
steps retried with backoff, results served 7 days then Gone, callbacks queued per status change; and the signing
key's signatures verify with its certificate, not over a tampered body."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cdp_actors.dsr.model import DsrRequest, PartnerStatus, SubjectIdentity
from cdp_actors.dsr.requests import RESULTS_VALID_MS, DsrBook, Steps
from cdp_actors.dsr.signing import KEY_FILE, Signer, verify
from cdp_actors.errors import BadRequest, Conflict, Gone, NotFound

T0 = 1_700_000_000_000
WAIT_MS = 1_000
BASE = "http://cdp.example"


def request(n: int = 1, kind: str = "erasure", email: str = "jane@example.com", **fields: object) -> DsrRequest:
    values: dict[str, object] = dict(
        subject_request_id=f"00000000-0000-4000-8000-{n:012d}", subject_request_type=kind, api_version="3.0",
        regulation="gdpr", submitted_time="2021-11-01T15:00:00Z", received_ms=T0, input_id=1,
        identities=[SubjectIdentity("email", email)], status_callback_urls=["http://controller/cb"],
        due_ms=T0 + WAIT_MS, expected_completion_ms=T0 + 14 * 86_400_000,
    )  # fmt: skip
    values.update(fields)
    return DsrRequest(**values)  # type: ignore[arg-type]


class Recorded:
    """Steps that record their calls; `fail` names a step that raises (until cleared)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: str | None = None
        self.export_data: bytes | None = b'{"profiles": [1]}'

    def _call(self, step: str) -> None:
        self.calls.append(step)
        if self.fail == step:
            raise NotImplementedError(step)

    def steps(self) -> Steps:
        def resolve(r: DsrRequest) -> list[int]:
            self._call("resolve")
            return [11, 12]

        def forward(r: DsrRequest, mpids: list[int]) -> list[PartnerStatus]:
            self._call("forward")
            return [PartnerStatus("braze.com", "Braze", "sent")]

        def erase(mpids: list[int]) -> None:
            self._call("erase")

        def export(r: DsrRequest, mpids: list[int]) -> bytes | None:
            self._call("export")
            return self.export_data

        return Steps(resolve, forward, erase, export)


@pytest.fixture
def book(tmp_path: Path):
    opened = DsrBook(tmp_path / "dsr", controller_id=1)
    yield opened
    opened.close()


def run(book: DsrBook, steps: Steps, at: int) -> None:
    book.start_due(at)
    for request_id in book.due_work(at):
        book.work_on(request_id, steps, lambda: at)


def statuses(book: DsrBook) -> list[str]:
    return [json.loads(cb.body)["request_status"] for _, cb in book.due_callbacks(T0 * 2)]


def test_an_erasure_waits_then_runs_resolve_forward_erase_in_order(book: DsrBook):
    recorded = Recorded()
    book.create(request(), BASE)
    run(book, recorded.steps(), T0 + WAIT_MS - 1)
    assert book.get(request().subject_request_id).status == "pending" and recorded.calls == []
    run(book, recorded.steps(), T0 + WAIT_MS)
    done = book.get(request().subject_request_id)
    assert recorded.calls == ["resolve", "forward", "erase"]
    assert done.status == "completed" and done.completed_ms == T0 + WAIT_MS
    assert done.partners == [PartnerStatus("braze.com", "Braze", "sent")]
    assert statuses(book) == ["pending", "in_progress", "completed"]


def test_access_exports_after_resolving_and_serves_results_for_seven_days(book: DsrBook):
    recorded = Recorded()
    book.create(request(kind="access"), BASE)
    run(book, recorded.steps(), T0 + WAIT_MS)
    assert recorded.calls == ["resolve", "export", "forward"]
    rid = request().subject_request_id
    done, data = book.results(rid, T0 + WAIT_MS + 1)
    assert data == b'{"profiles": [1]}' and done.results_count == 2
    callbacks = [json.loads(cb.body) for _, cb in book.due_callbacks(T0 * 2)]
    assert callbacks[-1]["results_url"] == f"{BASE}/v3/requests/{rid}/results"
    with pytest.raises(Gone):
        book.results(rid, T0 + WAIT_MS + RESULTS_VALID_MS)
    book.expire_results(T0 + WAIT_MS + RESULTS_VALID_MS)
    with pytest.raises(Gone):  # still Gone, not a 404, once the bytes are dropped
        book.results(rid, T0 + WAIT_MS + RESULTS_VALID_MS + 1)


def test_no_records_completes_with_count_zero_and_a_404(book: DsrBook):
    recorded = Recorded()
    recorded.export_data = None
    book.create(request(kind="portability"), BASE)
    run(book, recorded.steps(), T0 + WAIT_MS)
    assert book.get(request().subject_request_id).results_count == 0
    with pytest.raises(NotFound) as raised:
        book.results(request().subject_request_id, T0 + WAIT_MS)
    assert not isinstance(raised.value, Gone)


def test_cancel_only_while_pending(book: DsrBook):
    book.create(request(1), BASE)
    book.create(request(2, email="other@example.com"), BASE)
    assert book.cancel(request(1).subject_request_id).status == "cancelled"
    run(book, Recorded().steps(), T0 + WAIT_MS)
    assert book.get(request(1).subject_request_id).status == "cancelled"  # never started
    with pytest.raises(BadRequest):
        book.cancel(request(1).subject_request_id)
    with pytest.raises(BadRequest):
        book.cancel(request(2).subject_request_id)  # completed
    with pytest.raises(NotFound):
        book.cancel("00000000-0000-4000-8000-999999999999")


def test_duplicate_id_is_refused_and_an_identical_active_request_conflicts(book: DsrBook):
    book.create(request(1), BASE)
    with pytest.raises(BadRequest, match="Subject request already exists"):
        book.create(request(1, email="someone@else"), BASE)
    with pytest.raises(Conflict):
        book.create(request(2), BASE)
    book.create(request(3, kind="access"), BASE)  # another type: not identical
    book.cancel(request(1).subject_request_id)
    book.create(request(4), BASE)  # the identical one ended: a new one is taken
    with pytest.raises(NotFound):
        book.get("00000000-0000-4000-8000-999999999999")


def test_a_failing_step_stays_in_progress_and_is_retried_with_backoff(book: DsrBook):
    recorded = Recorded()
    recorded.fail = "forward"
    book.create(request(), BASE)
    run(book, recorded.steps(), T0 + WAIT_MS)
    rid = request().subject_request_id
    progress = book.progress(rid)
    assert book.get(rid).status == "in_progress" and progress.steps_done == ["resolve"]
    assert progress.attempts == 1 and "NotImplementedError" in progress.last_error
    first_retry = progress.next_try_ms
    assert book.due_work(first_retry - 1) == [] and book.due_work(first_retry) == [rid]
    run(book, recorded.steps(), first_retry)
    assert book.progress(rid).next_try_ms - first_retry > first_retry - (T0 + WAIT_MS)  # the wait grew
    recorded.fail = None
    run(book, recorded.steps(), book.progress(rid).next_try_ms)
    assert recorded.calls == ["resolve", "forward", "forward", "forward", "erase"]  # resolve ran once
    assert book.get(rid).status == "completed"


def test_a_reopened_book_resumes_at_the_first_step_not_done(tmp_path: Path):
    first = DsrBook(tmp_path / "dsr", controller_id=1)
    recorded = Recorded()
    recorded.fail = "erase"
    first.create(request(), BASE)
    run(first, recorded.steps(), T0 + WAIT_MS)
    first.close()  # as after a kill -9: only what was committed is left
    again = DsrBook(tmp_path / "dsr", controller_id=1)
    resumed = Recorded()
    rid = request().subject_request_id
    run(again, resumed.steps(), again.progress(rid).next_try_ms)
    assert resumed.calls == ["erase"] and again.get(rid).status == "completed"
    again.close()


def test_groups_list_their_requests(book: DsrBook):
    book.create(request(1, group_id="g"), BASE)
    book.create(request(2, email="b@x", group_id="g"), BASE)
    book.create(request(3, email="c@x", group_id="gg"), BASE)
    assert sorted(r.subject_request_id[-1] for r in book.in_group("g")) == ["1", "2"]
    assert book.in_group("nobody") == []


def test_failed_callbacks_are_retried_later_and_sent_ones_removed(book: DsrBook):
    book.create(request(), BASE)
    [(key, callback)] = book.due_callbacks(T0)
    book.callback_failed(key, callback, T0)
    assert book.due_callbacks(T0) == []
    [(key2, again)] = book.due_callbacks(T0 + 2_000)
    assert again.attempts == 1 and again.body == callback.body
    book.callback_sent(key2)
    assert book.pending_callbacks() == 0


def test_signatures_verify_with_the_certificate_and_not_over_a_tampered_body(tmp_path: Path):
    signer = Signer(tmp_path, "opendsr.example.com")
    body = b'{"request_status":"pending"}'
    signature = signer.sign(body)
    assert verify(signer.certificate_pem, body, signature)
    assert not verify(signer.certificate_pem, body.replace(b"pending", b"completed"), signature)
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    assert Signer(tmp_path, "opendsr.example.com").certificate_pem == signer.certificate_pem  # made once
