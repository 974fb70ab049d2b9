"""Closed-loop load for fault tests: each worker owns a disjoint set of users and sends one bulk request at a
time, one batch per user, so a user's next batch leaves only after the previous one was acknowledged.

A request that is not acknowledged (connection refused or reset, 5xx, 429, a client timeout) is sent again
unchanged, with the same `source_request_id`s, until it is, or until `give_up_after_s`: then its batches are
recorded as given up (they may still be applied, once) and the worker carries on with new users, so nothing
it sends later can overtake them for the same user.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field

import requests

from tests.faults.ledger import Ledger, Sent
from tests.support import DEMO_AUTH, wait_for

HEADERS = {"Content-Type": "application/json", "Authorization": DEMO_AUTH}


@dataclass
class Load:
    base: str  # the platform's http://host:port
    ledger: Ledger
    workers: int = 4
    users_per_worker: int = 8
    rounds: int = 40
    give_up_after_s: float = 120.0
    request_timeout_s: float = 30.0
    acked_requests: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    first_bodies: dict[str, str] = field(default_factory=dict)  # the first body of each refusing status
    lock: threading.Lock = field(default_factory=threading.Lock)
    retired: set[str] = field(default_factory=set)  # users sent nothing more (`retire`)
    rounds_begun: list[int] = field(default_factory=list)  # per worker

    @property
    def planned_requests(self) -> int:
        return self.workers * self.rounds

    def start(self) -> Load:
        self.rounds_begun = [0] * self.workers
        for worker in range(self.workers):
            thread = threading.Thread(target=self._guarded, args=(worker,), daemon=True, name=f"load-{worker}")
            thread.start()
            self.threads.append(thread)
        return self

    def done(self) -> bool:
        return not any(thread.is_alive() for thread in self.threads)

    def retire(self, customer: str) -> None:
        """Send nothing more for this user (about to be erased); returns once none of its batches is in flight:
        its worker began a round after this call (the previous one was acknowledged or given up), or ended."""
        worker = int(customer.split("-w")[-1].split("-")[0])
        with self.lock:
            self.retired.add(customer)
            begun = self.rounds_begun[worker]
        wait_for(lambda: self.rounds_begun[worker] > begun or not self.threads[worker].is_alive(), timeout=120,
                 what=f"{customer}'s batches in flight settled")  # fmt: skip

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(self.request_timeout_s + 5)

    def _guarded(self, worker: int) -> None:
        try:
            self._run(worker)
        except BaseException as error:  # surfaced by the test, not lost in a thread
            self.errors.append(error)

    def _run(self, worker: int) -> None:
        rng = random.Random(f"{self.ledger.seed}-{worker}")
        generation = 0
        users = self._users(worker, generation)
        http = requests.Session()
        for _ in range(self.rounds):
            if self.stopping.is_set():
                return
            with self.lock:
                self.rounds_begun[worker] += 1
                retired = set(self.retired)
            sent = [self.ledger.new_batch(user, rng) for user in users if rng.random() < 0.9 and user not in retired]
            if not sent:
                continue
            if not self._send_until_acknowledged(http, sent):
                self.ledger.settle(sent, "gave_up")
                generation += 1  # these users' order is no longer defined: carry on with new ones
                users = self._users(worker, generation)

    def _users(self, worker: int, generation: int) -> list[str]:
        return [f"{self.ledger.tag}-w{worker}-g{generation}-u{n}" for n in range(self.users_per_worker)]

    def _send_until_acknowledged(self, http: requests.Session, sent: list[Sent]) -> bool:
        data = json.dumps([s.body for s in sent]).encode()
        deadline = time.monotonic() + self.give_up_after_s
        tries = 0
        while True:
            outcome = self._post(http, data)
            self.ledger.attempt(outcome)
            if outcome == "202":
                self.ledger.settle(sent, "acked")
                with self.lock:
                    self.acked_requests += 1
                return True
            tries += 1
            if time.monotonic() > deadline or self.stopping.is_set():
                return False
            self.stopping.wait(min(0.5, 0.02 * 2**tries))  # back off before sending it again

    def _post(self, http: requests.Session, data: bytes) -> str:
        try:
            response = http.post(
                self.base + "/v2/bulkevents", data=data, headers=HEADERS, timeout=self.request_timeout_s
            )
        except requests.RequestException as error:
            return type(error).__name__
        if response.status_code == 202 and response.content:  # every batch is valid: none may be rejected
            return f"202 with {response.text[:200]}"
        if response.status_code != 202:
            self.first_bodies.setdefault(str(response.status_code), response.text[:300])
        return str(response.status_code)
