"""The data subject requests' book: every request, its progress and its callbacks, durable in one LMDB environment.

A request is `pending` from its creation until its waiting period is over (`due_ms`), then `in_progress` while the
steps of `fulfil.py` run (resolve, then forward and erase for an erasure, export and forward for access and
portability), then `completed`; only a pending request can be `cancelled`. Each step done is recorded in the same
transaction as its outcome, so after a `kill -9` the request resumes at the first step not recorded. A step that
raises leaves the request in progress; it is tried again after a backoff.

Every status change (creation included) queues one callback per `status_callback_urls` entry in the outbox, in the
same transaction as the change; `deliver_callbacks` posts them and retries failures with backoff.

Ray-free: the actor (`actor.py`) gives it the clock (`now_ms` arguments), the steps and an HTTP poster.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from cdp_actors.dsr.model import DsrRequest, PartnerStatus
from cdp_actors.dsr.wire import DAY_MS, callback_body, same_subject
from cdp_actors.errors import BadRequest, Conflict, Gone, NotFound, RateLimited
from cdp_actors.storage.lmdb_env import Store, Txn, from_u64, iter_prefix, u64

log = logging.getLogger(__name__)

RESULTS_VALID_MS = 7 * DAY_MS
"""A results URL answers for 7 days after completion, then 410 Gone (mParticle's DSR API v3)."""
STEP_RETRY_BASE_MS = 1_000
STEP_RETRY_MAX_MS = 600_000
"""A failed step is tried again after 1 s, doubling up to 10 minutes: a partner or shard that is down for a while
is not hammered, and one back within minutes is not waited on for long."""
CALLBACK_RETRY_BASE_MS = 1_000
CALLBACK_RETRY_MAX_MS = 900_000
"""Callback retries double from 1 s up to mParticle's 15-minute callback cycle."""
CALLBACK_MAX_ATTEMPTS = 30
"""About 5 hours of attempts at the longest interval: a controller endpoint down longer misses that status."""
CALLBACKS_PER_ROUND = 100
CREATED_ON_PREFIX = b"created-on:"
"""`meta` key of the count of requests created on one UTC day (`created-on:<day number>`), in the same
transaction as each creation: the daily limit holds across restarts and however many API replicas there are."""
ACTIVE = ("pending", "in_progress")


class Progress(msgspec.Struct):
    """What is done of a request in progress, and where its answers are published."""

    base_url: str
    steps_done: list[str] = []
    mpids: list[int] = []
    attempts: int = 0
    next_try_ms: int = 0
    last_error: str = ""


class Callback(msgspec.Struct):
    url: str
    body: bytes
    api_version: str
    attempts: int = 0


@dataclass
class Steps:
    """The fulfilment steps, bound to the configuration (the actor's: `fulfil.*`; tests inject their own)."""

    resolve: Callable[[DsrRequest], list[int]]
    forward: Callable[[DsrRequest, list[int]], list[PartnerStatus]]
    erase: Callable[[list[int]], None]
    export: Callable[[DsrRequest, list[int]], bytes | None]


def steps_of(request_type: str) -> tuple[str, ...]:
    """The steps of a request type, in order (the order `fulfil.py` documents)."""
    if request_type == "erasure":
        return ("resolve", "forward", "erase")
    return ("resolve", "export", "forward")


def subject_key(request: DsrRequest) -> bytes:
    """The 409 index key: the request type and its identities, whatever their order."""
    parts = sorted(f"{i.identity_type}={i.value}" for i in request.identities) + sorted(
        f"mpid={m}" for m in request.mpids
    )
    return hashlib.sha256("\n".join([request.subject_request_type, *parts]).encode()).digest()


def results_url(base_url: str, request: DsrRequest) -> str | None:
    if request.subject_request_type == "erasure" or request.status != "completed":
        return None
    return f"{base_url}/v3/requests/{request.subject_request_id}/results"


_request_decoder = msgspec.msgpack.Decoder(DsrRequest)
_progress_decoder = msgspec.msgpack.Decoder(Progress)
_callback_decoder = msgspec.msgpack.Decoder(Callback)
_encode = msgspec.msgpack.encode
_json = msgspec.json.encode


class DsrBook:
    def __init__(self, path: str | Path, controller_id: int) -> None:
        self.store = Store(path, ("requests", "progress", "groups", "active", "results", "outbox", "meta"))
        self.controller_id = controller_id

    # --- the API's calls

    def create(self, request: DsrRequest, base_url: str, requests_per_day: int | None = None) -> DsrRequest:
        """Store a new pending request and queue its `pending` callbacks; BadRequest for a known id, Conflict for an
        identical request pending or in progress, RateLimited past `requests_per_day` created this UTC day (a
        refused request is not counted)."""
        key = request.subject_request_id.encode()
        with self.store.write() as txn:
            self._count_creation(txn, request.received_ms, requests_per_day)
            if txn.get(key, db=self.store.db("requests")) is not None:
                raise BadRequest("Subject request already exists.", "$.subject_request_id")
            for _, other_id in iter_prefix(txn, self.store.db("active"), subject_key(request)):
                other = self._request(txn, other_id)
                if other is not None and same_subject(other, request):
                    raise Conflict(
                        f"An identical request ({other.subject_request_id}) is {other.status.replace('_', ' ')}."
                    )
            txn.put(subject_key(request) + key, key, db=self.store.db("active"))
            if request.group_id is not None:
                txn.put(request.group_id.encode() + b"\0" + key, key, db=self.store.db("groups"))
            txn.put(key, _encode(Progress(base_url, next_try_ms=request.due_ms)), db=self.store.db("progress"))
            self._save(txn, request, base_url)
        return request

    def created_on(self, at_ms: int) -> int:
        """Requests created on the UTC day of `at_ms`."""
        with self.store.read() as txn:
            raw = txn.get(CREATED_ON_PREFIX + u64(at_ms // DAY_MS), db=self.store.db("meta"))
        return from_u64(raw) if raw else 0

    def _count_creation(self, txn: Txn, at_ms: int, limit: int | None) -> None:
        """One more request created on `at_ms`'s UTC day, or RateLimited (until the next day) past `limit`; earlier
        days' counts are dropped. A refusal raised later in the same transaction undoes the count."""
        day = at_ms // DAY_MS
        meta = self.store.db("meta")
        raw = txn.get(CREATED_ON_PREFIX + u64(day), db=meta)
        created = from_u64(raw) if raw else 0
        if limit is not None and created >= limit:
            retry_after_s = -(-((day + 1) * DAY_MS - at_ms) // 1000)
            raise RateLimited(f"Rate limit exceeded: at most {limit} new requests per day.", retry_after_s, "workspace")
        for old in [bytes(k) for k, _ in iter_prefix(txn, meta, CREATED_ON_PREFIX)]:
            if old != CREATED_ON_PREFIX + u64(day):
                txn.delete(old, db=meta)
        txn.put(CREATED_ON_PREFIX + u64(day), u64(created + 1), db=meta)

    def get(self, request_id: str) -> DsrRequest:
        with self.store.read() as txn:
            request = self._request(txn, request_id.encode())
        if request is None:
            raise NotFound(f"No subject request {request_id}.")
        return request

    def progress(self, request_id: str) -> Progress:
        with self.store.read() as txn:
            raw = txn.get(request_id.encode(), db=self.store.db("progress"))
        if raw is None:
            raise NotFound(f"No subject request {request_id}.")
        return _progress_decoder.decode(raw)

    def in_group(self, group_id: str) -> list[DsrRequest]:
        with self.store.read() as txn:
            found = [
                self._request(txn, k) for _, k in iter_prefix(txn, self.store.db("groups"), group_id.encode() + b"\0")
            ]
        return [r for r in found if r is not None]

    def listing(self, limit: int) -> list[DsrRequest]:
        """The newest `limit` requests, newest first (the console's list)."""
        with self.store.read() as txn:
            found = [_request_decoder.decode(v) for _, v in txn.cursor(self.store.db("requests")).iternext()]
        return sorted(found, key=lambda r: -r.received_ms)[:limit]

    def cancel(self, request_id: str) -> DsrRequest:
        """Cancel a pending request; BadRequest once it has started or ended, NotFound for an unknown id."""
        key = request_id.encode()
        with self.store.write() as txn:
            request = self._request(txn, key)
            if request is None:
                raise NotFound(f"No subject request {request_id}.")
            if request.status != "pending":
                raise BadRequest(f"Only a pending request can be cancelled; this one is {request.status}.", "$")
            request.status = "cancelled"
            self._end(txn, request)
            self._save(txn, request, self._progress(txn, key).base_url)
        return request

    def results(self, request_id: str, now_ms: int) -> tuple[DsrRequest, bytes]:
        """An access or portability request's results: NotFound while there are none (or no records: count 0),
        Gone from `results_expire_ms` on."""
        with self.store.read() as txn:
            request = self._request(txn, request_id.encode())
            data = txn.get(request_id.encode(), db=self.store.db("results"))
        if request is None or request.status != "completed" or request.subject_request_type == "erasure":
            raise NotFound(f"No results for subject request {request_id}.")
        if request.results_expire_ms is not None and now_ms >= request.results_expire_ms:
            raise Gone(f"The results of subject request {request_id} expired.")
        if not request.results_count or data is None:
            raise NotFound(f"Subject request {request_id} found no records.")
        return request, data

    # --- the lifecycle, driven by the actor's clock

    def start_due(self, now_ms: int) -> list[str]:
        """Pending requests whose waiting period is over become in progress; returns their ids."""
        started = []
        with self.store.write() as txn:
            for request in self._all(txn):
                if request.status == "pending" and request.due_ms <= now_ms:
                    request.status, request.started_ms = "in_progress", now_ms
                    self._save(txn, request, self._progress(txn, request.subject_request_id.encode()).base_url)
                    started.append(request.subject_request_id)
        return started

    def due_work(self, now_ms: int) -> list[str]:
        """Requests in progress whose next try is due."""
        with self.store.read() as txn:
            return [
                r.subject_request_id
                for r in self._all(txn)
                if r.status == "in_progress"
                and self._progress(txn, r.subject_request_id.encode()).next_try_ms <= now_ms
            ]

    def work_on(self, request_id: str, steps: Steps, now: Callable[[], int]) -> None:
        """Run the request's steps not yet done, each recorded as done with its outcome; a step that raises is
        logged and tried again after a backoff (the request stays in progress)."""
        request, progress = self.get(request_id), self.progress(request_id)
        for step in steps_of(request.subject_request_type):
            if step in progress.steps_done:
                continue
            try:
                outcome = self._run(step, request, progress, steps)
            except Exception as error:  # any failure of a step: retried later, never lost
                self._failed(request_id, step, error, now())
                return
            self._step_done(request_id, step, outcome, now())
            request, progress = self.get(request_id), self.progress(request_id)

    def expire_results(self, now_ms: int) -> None:
        """Drop the bytes of results past their 7 days (the request keeps answering 410)."""
        with self.store.write() as txn:
            for request in self._all(txn):
                expire = request.results_expire_ms
                if expire is not None and now_ms >= expire:
                    txn.delete(request.subject_request_id.encode(), db=self.store.db("results"))

    # --- callbacks

    def due_callbacks(self, now_ms: int) -> list[tuple[bytes, Callback]]:
        with self.store.read() as txn:
            rows = []
            for key, value in txn.cursor(self.store.db("outbox")).iternext():
                if from_u64(key[:8]) > now_ms or len(rows) >= CALLBACKS_PER_ROUND:
                    break
                rows.append((bytes(key), _callback_decoder.decode(value)))
        return rows

    def callback_sent(self, key: bytes) -> None:
        with self.store.write() as txn:
            txn.delete(key, db=self.store.db("outbox"))

    def callback_failed(self, key: bytes, callback: Callback, now_ms: int) -> None:
        callback.attempts += 1
        with self.store.write() as txn:
            txn.delete(key, db=self.store.db("outbox"))
            if callback.attempts >= CALLBACK_MAX_ATTEMPTS:
                log.warning("DSR callback to %s given up after %d attempts", callback.url, callback.attempts)
                return
            delay = min(CALLBACK_RETRY_BASE_MS << callback.attempts, CALLBACK_RETRY_MAX_MS)
            txn.put(u64(now_ms + delay) + key[8:], _encode(callback), db=self.store.db("outbox"))

    def pending_callbacks(self) -> int:
        with self.store.read() as txn:
            return txn.stat(self.store.db("outbox"))["entries"]

    def close(self) -> None:
        self.store.close()

    # --- inside

    def _run(self, step: str, request: DsrRequest, progress: Progress, steps: Steps) -> object:
        if step == "resolve":
            return steps.resolve(request)
        if step == "forward":
            return steps.forward(request, progress.mpids)
        if step == "erase":
            return steps.erase(progress.mpids)
        return steps.export(request, progress.mpids)

    def _step_done(self, request_id: str, step: str, outcome: object, now_ms: int) -> None:
        key = request_id.encode()
        with self.store.write() as txn:
            request, progress = self._request(txn, key), self._progress(txn, key)
            assert request is not None
            if step == "resolve":
                progress.mpids = list(outcome)  # type: ignore[call-overload]
            elif step == "forward":
                request.partners = list(outcome)  # type: ignore[call-overload]
            elif step == "export":
                self._store_results(txn, request, outcome)
            progress.steps_done.append(step)
            progress.attempts, progress.last_error = 0, ""
            txn.put(key, _encode(progress), db=self.store.db("progress"))
            if len(progress.steps_done) == len(steps_of(request.subject_request_type)):
                request.status, request.completed_ms = "completed", now_ms
                if request.subject_request_type != "erasure":
                    request.results_expire_ms = now_ms + RESULTS_VALID_MS
                self._end(txn, request)
                self._save(txn, request, progress.base_url)
            else:
                txn.put(key, _encode(request), db=self.store.db("requests"))

    def _store_results(self, txn: Txn, request: DsrRequest, data: object) -> None:
        if data is None:
            request.results_count = 0
            return
        assert isinstance(data, bytes)
        request.results_count = max(1, len(self._progress(txn, request.subject_request_id.encode()).mpids))
        txn.put(request.subject_request_id.encode(), data, db=self.store.db("results"))

    def _failed(self, request_id: str, step: str, error: Exception, now_ms: int) -> None:
        key = request_id.encode()
        with self.store.write() as txn:
            progress = self._progress(txn, key)
            progress.attempts += 1
            progress.next_try_ms = now_ms + min(STEP_RETRY_BASE_MS << min(progress.attempts, 30), STEP_RETRY_MAX_MS)
            progress.last_error = f"{step}: {type(error).__name__}: {error}"[:500]
            txn.put(key, _encode(progress), db=self.store.db("progress"))
        log.warning("DSR request %s: step %s failed (attempt %d), retried later: %r", request_id, step,
                    progress.attempts, error)  # fmt: skip

    def _end(self, txn: Txn, request: DsrRequest) -> None:
        key = request.subject_request_id.encode()
        txn.delete(subject_key(request) + key, db=self.store.db("active"))

    def _save(self, txn: Txn, request: DsrRequest, base_url: str) -> None:
        """Store the request at its new status and queue its callbacks."""
        key = request.subject_request_id.encode()
        txn.put(key, _encode(request), db=self.store.db("requests"))
        for url in request.status_callback_urls:
            body = _json(callback_body(request, self.controller_id, url, results_url(base_url, request)))
            row = Callback(url, body, request.api_version)
            txn.put(u64(0) + u64(self._next_seq(txn)), _encode(row), db=self.store.db("outbox"))  # due at once

    def _next_seq(self, txn: Txn) -> int:
        raw = txn.get(b"callback_seq", db=self.store.db("meta"))
        seq = from_u64(raw) + 1 if raw else 1
        txn.put(b"callback_seq", u64(seq), db=self.store.db("meta"))
        return seq

    def _request(self, txn: Txn, key: bytes) -> DsrRequest | None:
        raw = txn.get(key, db=self.store.db("requests"))
        return None if raw is None else _request_decoder.decode(raw)

    def _progress(self, txn: Txn, key: bytes) -> Progress:
        raw = txn.get(key, db=self.store.db("progress"))
        assert raw is not None, key  # written with its request, in the same transaction
        return _progress_decoder.decode(raw)

    def _all(self, txn: Txn) -> list[DsrRequest]:
        return [_request_decoder.decode(v) for _, v in txn.cursor(self.store.db("requests")).iternext()]
