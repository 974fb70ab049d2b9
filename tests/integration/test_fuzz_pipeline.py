"""A fuzzer over the real pipeline: hostile Events API batches, IDSync calls and admin edits against one running
platform, with invariants checked after every example.

Invariants, per example:
1. No 5xx answer, except a 503 with Retry-After; a 429 carries Retry-After; every 4xx has the API's error shape.
2. A canary batch per shard-spread user, sent last, is delivered within `CANARY_TIMEOUT_S` (a stalled dispatcher
   or shard shows here).
3. Every accepted batch (202) and edit is delivered to the webhook, or set aside (dead-lettered: listed by
   `GET /cdp/deadletter`; or failed on the delivery side) with a Fatal alert for it.
4. An edit's own attribute is delivered with the value sent; a batch naming an MPID the platform never gave out
   creates no profile there. Replay users (a customer_id only they use, only plain Events API batches, events
   stamped in send order) have profiles whose attributes and batch and event counts equal a last-write-wins
   replay of their accepted batches.

Profiles: `CDP_FUZZ_EXAMPLES` (default 40, derandomized for CI; more than the default, or `CDP_FUZZ_SEED`, runs
from a seed: random unless `CDP_FUZZ_SEED` gives it); `CDP_FUZZ_SKIP=big_int,nan,...` leaves families of edge
values out (FAMILIES in tests/fuzz_strategies.py). Shrinking is off: the platform keeps its state between examples
(a stalled dispatcher stays stalled), so a smaller example failing would prove nothing. A failure names the example
number, the seed and the request.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.conftest import demo_config
from tests.fuzz_strategies import (
    REPLAY_USERS,
    STEP_MS,
    T0,
    EditOp,
    EventsOp,
    IdSyncOp,
    Op,
    Renderer,
    families_from,
    operations,
)
from tests.samples import batch, custom
from tests.support import Api, Receiver, wait_for

CI_EXAMPLES = 40  # examples in the CI profile: about 15 s of requests and checks on two cores, Ray's start apart
EXAMPLES = int(os.environ.get("CDP_FUZZ_EXAMPLES", CI_EXAMPLES))
SEED = int(os.environ.get("CDP_FUZZ_SEED") or random.randrange(2**32))
DERANDOMIZED = EXAMPLES <= CI_EXAMPLES and not os.environ.get("CDP_FUZZ_SEED")  # a seed overrides derandomize
FAMILIES = families_from(os.environ.get("CDP_FUZZ_SKIP", ""))
CANARY_USERS = 4  # canaries with different customer_ids land on different shards (2 in the demo workspace)
CANARY_TIMEOUT_S = 20  # a healthy pipeline delivers a batch in well under a second
SETTLE_TIMEOUT_S = 30  # after the canaries, what is left is delivery of batches already processed
SHOWN_BYTES = 1500  # of a request body in a failure message
STALL_SHOWN = 4  # batches from the dispatcher's cursor on shown when it is stalled
DUMP_DIR = Path(os.environ.get("CDP_FUZZ_DUMP", Path(tempfile.gettempdir()) / "cdp-fuzz"))  # failing bodies, whole


@dataclass
class Sent:
    """One request and what came of it."""

    method: str
    path: str
    raw: bytes
    status: int = 0
    answer: str = ""

    def describe(self) -> str:
        """The request and answer, its body cut short; the whole body is saved to a file to replay with curl."""
        DUMP_DIR.mkdir(parents=True, exist_ok=True)
        saved = DUMP_DIR / f"{hashlib.sha256(self.raw).hexdigest()[:16]}.json"
        saved.write_bytes(self.raw)
        body = self.raw[:SHOWN_BYTES].decode(errors="replace")
        more = f"... ({len(self.raw)} bytes in all)" if len(self.raw) > SHOWN_BYTES else ""
        return (
            f"{self.method} {self.path} -> {self.status} {self.answer[:300]!r}\n  body: {body}{more}\n"
            f"  replay: curl -u demo-key:demo-secret -H 'Content-Type: application/json' -X {self.method} "
            f"--data-binary @{saved} http://127.0.0.1:PORT{self.path}"
        )


@dataclass
class Accepted:
    """A batch or an edit the platform accepted: `key` is what identifies it in a delivery or the dead-letter list
    (its source_request_id, or an edit's marker attribute name)."""

    key: str
    sent: Sent
    body: Any = None
    replay_user: int | None = None
    seq: int = 0  # its position in the intake log, as counted by the fuzzer
    edited: Any = None  # an edit's marker value, as sent
    planted: int | None = None  # the batch's `mpid`, when it is one the platform never gave out

    def describe(self) -> str:
        """The batch itself (a bulk request's other batches left out), or the edit request."""
        if self.body is None:
            return self.sent.describe()
        text = json.dumps(self.body)
        return f"in {self.sent.method} {self.sent.path}: {text[:SHOWN_BYTES]}{'...' if len(text) > SHOWN_BYTES else ''}"


@dataclass
class Session:
    """State across examples: the platform, the MPIDs it answered with, what it answered."""

    api: Api
    receiver: Receiver
    known_mpids: list[int] = field(default_factory=list)
    examples: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    next_seq: int = 0  # the intake position the next accepted batch gets
    failed_at: int | None = None  # the first example that failed (hypothesis then runs it once more to report it)
    seconds: list[float] = field(default_factory=list)  # each example's duration
    log: list[Accepted] = field(default_factory=list)  # every accepted batch and edit, in intake order

    def __post_init__(self) -> None:
        self.next_seq = self.api.status()["intake"]["next_seq"]

    def took(self, item: Accepted | None = None) -> None:
        """The intake took one more batch (`None`: a canary)."""
        if item is not None:
            item.seq = self.next_seq
            self.log.append(item)
        self.next_seq += 1

    def send(self, method: str, path: str, raw: bytes, extra: dict[str, str] | None = None) -> Sent:
        sent = Sent(method, path, raw)
        headers = {"Content-Type": "application/json", "Authorization": self.api.auth_for(path) or "", **(extra or {})}
        response = self.api.http.request(method, self.api.base + path, data=raw, headers=headers, timeout=60)
        sent.status, sent.answer = response.status_code, response.text
        self.statuses[str(response.status_code)] += 1
        check_answer(sent, response, self.where())
        return sent

    def where(self) -> str:
        again = f" (hypothesis's rerun of #{self.failed_at})" if self.failed_at not in (None, self.examples) else ""
        return f"example #{self.examples}{again}, {seed_text()}"


def seed_text() -> str:
    return "derandomized CI profile" if DERANDOMIZED else f"CDP_FUZZ_SEED={SEED} CDP_FUZZ_EXAMPLES={EXAMPLES}"


def check_answer(sent: Sent, response: requests.Response, where: str) -> None:
    """Invariant 1."""
    status, retry_after = response.status_code, response.headers.get("Retry-After")
    if status >= 500:
        assert status == 503 and retry_after, f"a {status} answer ({where}):\n{sent.describe()}"
    if status == 429:
        assert retry_after, f"a 429 without Retry-After ({where}):\n{sent.describe()}"
    if 400 <= status < 500:
        try:
            errors = response.json()["errors"]
            shaped = bool(errors) and all({"code", "message"} <= set(e) for e in errors)
        except (ValueError, KeyError, TypeError):
            shaped = False
        assert shaped, f"a {status} not in the API's error shape ({where}):\n{sent.describe()}"


@dataclass
class Example:
    """One example: render and send its operations, then check invariants 2-4."""

    session: Session
    prefix: str
    renderer: Renderer
    accepted: list[Accepted] = field(default_factory=list)
    replay_steps: list[int] = field(default_factory=lambda: [0] * REPLAY_USERS)
    counter: int = 0

    def next_key(self, kind: str) -> str:
        self.counter += 1
        return f"{self.prefix}-{kind}{self.counter}"

    def run(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, EventsOp):
                self.events(op)
            elif isinstance(op, IdSyncOp):
                self.idsync(op)
            else:
                self.edit(op)

    def render_batch(self, spec: Any) -> tuple[str, Any, bytes]:
        body = dict(spec.body, source_request_id=self.next_key("b"))
        if spec.replay_user is not None:
            user = spec.replay_user
            ts = T0 + self.replay_steps[user] * STEP_MS
            self.replay_steps[user] += 1
            body["user_identities"] = {"customer_id": f"{self.prefix}-r{user}"}
            body["events"] = [
                {**e, "data": {**e["data"], "timestamp_unixtime_ms": ts + n}} for n, e in enumerate(body["events"])
            ]
        value, raw = self.renderer.encode(body)
        return body["source_request_id"], value, raw

    def events(self, op: EventsOp) -> None:
        rendered = [self.render_batch(spec) for spec in op.batches]
        extra = {"Sec-GPC": op.gpc_header} if op.gpc_header is not None else None
        if op.bulk:
            body = b"[" + b",".join(raw for _, _, raw in rendered) + b"]"
            sent = self.session.send("POST", "/v2/bulkevents", body, extra)
        else:
            sent = self.session.send("POST", "/v2/events", rendered[0][2], extra)
        if sent.status != 202:
            return
        rejected = {r["index"] for r in json.loads(sent.answer).get("rejected", [])} if sent.answer else set()
        for index, ((key, value, _), spec) in enumerate(zip(rendered, op.batches, strict=True)):
            if index not in rejected:
                mpid = spec.body.get("mpid")
                planted = mpid if isinstance(mpid, int) and mpid not in self.session.known_mpids else None
                self.accepted.append(Accepted(key, sent, value, spec.replay_user, planted=planted))
                self.session.took(self.accepted[-1])

    def idsync(self, op: IdSyncOp) -> None:
        if op.operation == "modify":
            mpid = self.renderer.mpid(op.mpid)
            path = f"/v1/{1 if mpid is None else mpid}/modify"
        else:
            path = f"/v1/{op.operation}"
        sent = self.session.send("POST", path, self.renderer.encode(op.body)[1])
        if sent.status == 200 and op.operation != "modify":
            self.session.known_mpids.append(int(json.loads(sent.answer)["mpid"]))

    def edit(self, op: EditOp) -> None:
        mpid = self.renderer.mpid(op.mpid)
        if mpid is None:
            return
        marker = self.next_key("edit")
        body = dict(op.body, user_attributes={**op.body["user_attributes"], marker: op.marker_value})
        value, raw = self.renderer.encode(body)
        sent = self.session.send("POST", f"/cdp/users/{mpid}/edit", raw)
        if sent.status == 202:
            self.accepted.append(Accepted(marker, sent, edited=value["user_attributes"][marker]))
            self.session.took(self.accepted[-1])

    # ---- invariants 2-4 ----------------------------------------------------------------------------------

    def where(self) -> str:
        return self.session.where()

    def delivered(self) -> set[str]:
        """Keys of what the webhook received: source_request_ids, and edit markers among the attributes."""
        keys = set()
        for body in self.session.receiver.bodies():
            if isinstance(body, dict):
                keys.add(body.get("source_request_id"))
                keys.update(name for name in body.get("user_attributes") or {} if name.startswith(self.prefix))
        return keys

    def dead_letters(self) -> str:
        """The dead-letter listing as text, to find keys in whatever its shape; none while it does not exist."""
        response = self.session.api.get("/cdp/deadletter")
        return "" if response.status_code == 404 else response.text

    def check_canaries(self, fatal_before: int) -> None:
        """Invariant 2."""
        canaries = [batch(f"{self.prefix}-canary{n}", [custom("canary", T0)]) for n in range(CANARY_USERS)]
        sent = self.session.send("POST", "/v2/bulkevents", json.dumps(canaries).encode())
        assert sent.status == 202, f"the canaries were refused ({self.where()}):\n{sent.describe()}"
        for _ in canaries:
            self.session.took()
        keys = {c["source_request_id"] for c in canaries}
        try:
            wait_for(lambda: keys <= self.delivered(), timeout=CANARY_TIMEOUT_S, what="the canaries")
        except AssertionError:
            raise AssertionError(
                f"canaries not delivered within {CANARY_TIMEOUT_S} s ({self.where()}): {self.stall_report()}"
            ) from None

    def stall_report(self) -> str:
        """Why: the dispatcher's error, and the batches from its cursor on (the poison is in its first chunk)."""
        status = self.session.api.status()
        cursor = status["intake"]["cursor"]
        waiting = [a for a in self.session.log if a.seq >= cursor]
        shown = "\n".join(f"seq {a.seq} ({a.key}): {a.describe()}" for a in waiting[:STALL_SHOWN])
        return (
            f"dispatcher {json.dumps(status.get('dispatcher'))[:600]}; intake {status['intake']} (the fuzzer "
            f"counted next_seq {self.session.next_seq}); "
            f"{len(waiting)} accepted batches from the cursor on, the first:\n{shown}"
        )

    def undelivered(self) -> list[Accepted]:
        delivered = self.delivered()
        return [a for a in self.accepted if a.key not in delivered]

    def check_accounted(self, fatal_before: int) -> None:
        """Invariant 3: every undelivered accepted batch was set aside (dead-lettered, or failed on the delivery
        side), each with its own Fatal alert (the receiver always answers 200: no other Fatal alert is due)."""

        def accounted() -> bool:
            missing = self.undelivered()
            return not missing or len(missing) <= fatal_alerts(self.session.api) - fatal_before

        try:
            wait_for(accounted, timeout=SETTLE_TIMEOUT_S, what="accepted batches delivered or set aside")
        except AssertionError:
            missing, listed = self.undelivered(), self.dead_letters()
            fatal = fatal_alerts(self.session.api) - fatal_before
            shown = "\n".join(
                f"{a.key} ({'' if a.key in listed else 'not '}in /cdp/deadletter): {a.describe()}"
                for a in missing[:STALL_SHOWN]
            )
            raise AssertionError(
                f"{len(missing)} accepted batches undelivered and {fatal} Fatal alerts ({self.where()}):\n{shown}"
            ) from None

    def check_replay(self) -> None:
        """Invariant 4: last-write-wins over the accepted batches, which are stamped in send order."""
        delivered = self.delivered()
        api = self.session.api
        for user in range(REPLAY_USERS):
            applied = [a for a in self.accepted if a.replay_user == user and a.key in delivered]
            if not applied:
                continue
            customer = f"{self.prefix}-r{user}"
            found = api.get("/cdp/users/search", identity_type="customer_id", value=customer).json()["users"]
            assert len(found) == 1, f"{customer}: {len(found)} profiles ({self.where()})"
            profile = api.get(f"/cdp/users/{found[0]['mpid']}").json()
            expected = replay_attributes([a.body for a in applied])
            stored = {name: (a["value"], a["updated_ms"]) for name, a in profile["attributes"].items()}
            detail = f"({self.where()}); the batches:\n" + "\n".join(a.describe() for a in applied)
            assert stored == expected, f"{customer}: attributes {stored!r}, a replay gives {expected!r} {detail}"
            events = sum(len(a.body["events"]) for a in applied)
            assert (profile["batches"], profile["events"]) == (len(applied), events), f"{customer}: counts {detail}"

    def check_edits(self) -> None:
        """An edit's own attribute reaches the output as it was sent (a NaN must not become a deletion)."""
        seen: dict[str, Any] = {}
        for body in self.session.receiver.bodies():
            for name, value in (body.get("user_attributes") or {}).items() if isinstance(body, dict) else ():
                seen.setdefault(name, value)
        for item in self.accepted:
            if item.body is None and item.key in seen:
                assert seen[item.key] == item.edited, (
                    f"edit delivered {seen[item.key]!r}, sent {item.edited!r} ({self.where()}):\n{item.describe()}"
                )

    def check_unknown_mpids(self) -> None:
        """A batch naming an MPID nobody was given never creates a profile there (issue 13, item 7)."""
        for item in self.accepted:
            if item.planted is not None:
                found = self.session.api.get(f"/cdp/users/{item.planted}").status_code
                assert found != 200, f"a profile at unknown mpid {item.planted} ({self.where()}):\n{item.describe()}"

    def verify(self, fatal_before: int) -> None:
        self.check_canaries(fatal_before)
        self.check_accounted(fatal_before)
        self.check_edits()
        self.check_unknown_mpids()
        self.check_replay()


def replay_attributes(bodies: list[dict[str, Any]]) -> dict[str, tuple[Any, int]]:
    """name -> (value, written at): later batches win; a null value or a deletion removes the attribute."""
    attributes: dict[str, tuple[Any, int]] = {}
    for body in bodies:
        ts = max(e["data"]["timestamp_unixtime_ms"] for e in body["events"])
        for name, value in (body.get("user_attributes") or {}).items():
            if value is None:
                attributes.pop(name, None)
            else:
                attributes[name] = (value, ts)
        for name in body.get("deleted_user_attributes") or []:
            attributes.pop(name, None)
    return attributes


def fatal_alerts(api: Api) -> int:
    """Fatal alerts recorded so far, over every connection."""
    connections = api.get("/cdp/alerts", since="0").json()["connections"]
    return sum(t["count"] for c in connections for t in c["types"] if t["severity"] == "Fatal")


PROFILE = settings(
    max_examples=EXAMPLES,
    derandomize=DERANDOMIZED,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: see the module docstring
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def test_fuzz_pipeline_no_500_no_stall_nothing_lost_profiles_replay(platform, receiver) -> None:
    session = Session(platform(demo_config(receiver.url)), receiver)

    @PROFILE
    @given(ops=operations(FAMILIES))
    def run_example(ops: list[Op]) -> None:
        session.examples += 1
        prefix = f"fz{session.examples}"
        example = Example(session, prefix, Renderer(prefix, session.known_mpids))
        fatal_before = fatal_alerts(session.api)
        started = time.monotonic()
        try:
            example.run(ops)
            example.verify(fatal_before)
        except AssertionError:
            session.failed_at = session.failed_at or session.examples
            raise
        session.seconds.append(time.monotonic() - started)

    (run_example if DERANDOMIZED else seed(SEED)(run_example))()
    print(
        f"fuzz: {session.examples} examples in {sum(session.seconds):.1f} s (longest {max(session.seconds):.1f} s), "
        f"answers {dict(session.statuses)}, families {sorted(FAMILIES)}"
    )
