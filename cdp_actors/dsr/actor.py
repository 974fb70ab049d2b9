"""The DSR actor: the one owner of the requests' book (`requests.py`), on the head with the data directory.

A background thread ticks every TICK_S with the wall clock: pending requests whose waiting period is over start,
requests in progress run their next steps (`fulfil.*`, blocking Ray calls, so in this thread and never in a call
the API waits on), expired results are dropped and queued callbacks are posted, signed. `tick(now_ms)` does the
same at a given time, for tests and demos that do not wait days. After a restart (a `kill -9`) the first tick picks
up every request where its recorded steps left it.
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import ray

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from cdp_actors.dsr import fulfil
from cdp_actors.dsr.model import DsrRequest
from cdp_actors.dsr.requests import Callback, DsrBook, Progress, Steps
from cdp_actors.dsr.signing import Signer

log = logging.getLogger(__name__)

TICK_S = 1.0
"""How often the actor looks for due work: a waiting period ends, a step or callback retry falls due."""
CALLBACK_TIMEOUT_S = 10.0


def now_ms() -> int:
    return int(time.time() * 1000)


def signed_headers(signer: Signer, domain: str, api_version: str, body: bytes) -> dict[str, str]:
    """The processor headers of a signed body; v1 (OpenGDPR) names them `X-OpenGDPR-*`."""
    prefix = "X-OpenGDPR" if api_version == "1.0" else "X-OpenDSR"
    return {f"{prefix}-Processor-Domain": domain, f"{prefix}-Signature": signer.sign(body)}


def post_callback(url: str, body: bytes, headers: dict[str, str]) -> bool:
    """POST a callback; True on a 2xx. http.client keeps the header names' case (urllib would send
    `X-opendsr-signature`)."""
    target = urllib.parse.urlsplit(url)
    connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    connection = connection_class(target.netloc, timeout=CALLBACK_TIMEOUT_S)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json", **headers})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as error:
        log.info("DSR callback to %s failed: %r", url, error)
        return False
    finally:
        connection.close()
    return 200 <= status < 300


class DsrCore:
    def __init__(self, data_dir: str, config: WorkspaceConfig) -> None:
        directory = Path(data_dir) / "dsr"
        self.book = DsrBook(directory, config.workspace.workspace_id)
        self.domain = config.dsr.processor_domain
        """The processor domain of the configuration version last read (the certificate keeps the name it was
        issued to: a new key would break the controllers that pinned the published certificate)."""
        self.signer = Signer(directory, self.domain)
        self.work_lock = threading.Lock()
        self.callback_lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._tick_forever, name="dsr-tick", daemon=True)
        self.thread.start()

    # --- the API's calls

    def create(self, request: DsrRequest, base_url: str, requests_per_day: int | None = None) -> DsrRequest:
        """Store a new request (`DsrBook.create`); `requests_per_day`: the live configuration's daily limit."""
        created = self.book.create(request, base_url, requests_per_day)
        threading.Thread(target=self._deliver, args=(now_ms(),), daemon=True).start()  # its `pending` callbacks now
        return created

    def get(self, request_id: str) -> tuple[DsrRequest, str]:
        """The request and the base URL its results are published under."""
        return self.book.get(request_id), self.book.progress(request_id).base_url

    def in_group(self, group_id: str) -> list[tuple[DsrRequest, str]]:
        return [(r, self.book.progress(r.subject_request_id).base_url) for r in self.book.in_group(group_id)]

    def listing(self, limit: int) -> list[tuple[DsrRequest, Progress]]:
        return [(r, self.book.progress(r.subject_request_id)) for r in self.book.listing(limit)]

    def cancel(self, request_id: str) -> DsrRequest:
        cancelled = self.book.cancel(request_id)
        threading.Thread(target=self._deliver, args=(now_ms(),), daemon=True).start()
        return cancelled

    def results(self, request_id: str) -> tuple[DsrRequest, bytes]:
        return self.book.results(request_id, now_ms())

    def certificate(self) -> bytes:
        return self.signer.certificate_pem

    def sign(self, body: bytes, api_version: str, domain: str | None = None) -> dict[str, str]:
        """The processor headers of an answer; `domain`: the caller's live configuration's processor domain."""
        return signed_headers(self.signer, domain or self.domain, api_version, body)

    # --- the lifecycle

    def tick(self, at_ms: int) -> None:
        """Everything due at `at_ms`: start requests, run their steps, drop expired results, post callbacks."""
        with self.work_lock:
            self.book.start_due(at_ms)
            for request_id in self.book.due_work(at_ms):
                self.book.work_on(request_id, self._steps(), lambda: at_ms)
            self.book.expire_results(at_ms)
        self._deliver(at_ms)

    def progress(self, request_id: str) -> Progress:
        return self.book.progress(request_id)

    def pending_callbacks(self) -> int:
        return self.book.pending_callbacks()

    def pid(self) -> int:
        return os.getpid()

    def _steps(self) -> Steps:
        config = self._config()
        return Steps(
            resolve=lambda request: fulfil.resolve(request, config),
            forward=lambda request, mpids: fulfil.forward(request, mpids, config),
            erase=lambda mpids: fulfil.erase(mpids, config),
            export=lambda request, mpids: fulfil.export(request, mpids, config),
        )

    def _config(self) -> WorkspaceConfig:
        _, config = ray.get(handles.control().current.remote())
        return config

    def _deliver(self, at_ms: int) -> None:
        with self.callback_lock:
            due = self.book.due_callbacks(at_ms)
            if due:  # the live configuration's processor domain signs them (`dsr.processor_domain` may change)
                self.domain = self._config().dsr.processor_domain
            for key, callback in due:
                if self._post(callback):
                    self.book.callback_sent(key)
                else:
                    self.book.callback_failed(key, callback, at_ms)

    def _post(self, callback: Callback) -> bool:
        headers = signed_headers(self.signer, self.domain, callback.api_version, callback.body)
        return post_callback(callback.url, callback.body, headers)

    def _tick_forever(self) -> None:
        while not self.stopped.wait(TICK_S):
            try:
                self.tick(now_ms())
            except Exception:  # the loop must outlive any one failure; it is logged and the next tick tries again
                log.exception("DSR tick failed")


DsrActor: Any = ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=8)(DsrCore)  # pyright: ignore[reportCallIssue]
"""Restarted if it dies (its state is in LMDB). Calls are not retried: a create retried after it committed would
be refused as a duplicate. Threaded: the tick thread's steps never hold the API's calls."""
