"""The ledger: every batch the load generator sent, whether it was acknowledged, and the proofs after recovery.

1. Every acknowledged batch reached each connected output (a path of the partner) at least once, or that
   output refused it with a non-retryable status and a Fatal alert accounts for it, or the pipeline set it
   aside as a poison batch (listed by `GET /cdp/deadletter`, with a Fatal alert of its own).
2. Each profile equals a replay of its applied batches in send order: the acknowledged ones, plus those
   given up on that the pipeline took anyway (seen by the partner), each counted once.
3. Per user and output, batches are first offered in send order, and first taken in send order (but for a
   refused batch offered again after a crash), each carrying the profile as of that batch.
4. Derived state (the workspace's calculated attribute FAULT_CA and real-time audience GOLD_AUDIENCE, whose
   membership the batches' `plan` flips), per user, against the same replay as 2:
   a. the CA value in `/cdp/users/{mpid}` is the replay's count (a chunk replayed after a crash never counts twice);
   b. the profile's `audiences` hold GOLD_AUDIENCE iff the replay ends with `plan` gold;
   c. the audience output (AUDIENCE_PATH) got the user's last change, and it matches the replay's end: the change
      with the highest change number the partner was offered is an add iff the replay ends in gold (none offered
      if the user never was gold), and it was taken (then the partner, keeping each change_id once, holds the
      replay's final state) or refused with a 400 (dropped for good, as any refused batch);
   d. no change_id is offered with two different contents (mpid, audience, action): a change sent again after a
      crash is the same change, so a receiver may drop it by id;
   e. per user, the changes taken, each change_id once, arrive in change-number order, and their actions are a
      subsequence of the replay's transitions (the add / delete after each batch that flipped membership).
      Not every transition need arrive: a shard applies a chunk's batches of one user together (gold → silver
      → gold in one chunk changes nothing), and an output's bulk queue keeps only a user's latest change, so a
      change still waiting is replaced by the next one (add, delete, add may arrive as add ... add: the
      partner's state is right after each arrival, and at the end). Being a subsequence is what that allows,
      and all it allows: no change is invented, none arrives twice under new ids (a replayed chunk re-deciding a
      membership), none arrives out of order, and the partner never ends in a state the user was not in last.

A user erased during the load (a data subject request: `exclude`) is expected to vanish: its acknowledged batches
need not reach the outputs (a forwarder discards those it holds at the erasure), its profile and membership
changes are not checked; what the partner did get of it must still be in order (3).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.samples import batch, custom
from tests.support import Api

AUDIENCE_PATH = "/audience"  # the partner path of the audience output
GOLD_AUDIENCE = 5  # the real-time audience `plan` equals gold
FAULT_CA = "fault-1 count"  # the calculated attribute: count of the load's `fault-1` events
T0 = 1_700_000_000_000
STEP_MS = 1_000  # a user's batch n has events stamped from T0 + n * STEP_MS: send order is time order
RECENT = 20  # events `GET /cdp/users/{mpid}` shows


class Partner(Protocol):
    """Per output path: the batches taken, in arrival order; the source_request_ids of every delivery attempt
    whatever the answer (`seen`, and `offered` in order), and of those refused with a non-retryable status, a Fatal
    drop (`refused`)."""

    seen: dict[str, set[str]]
    offered: dict[str, list[str]]  # the same, in the order of their first offer
    refused: dict[str, set[str]]

    def bodies_at(self, path: str) -> list[dict[str, Any]]: ...

    def history(self, path: str, prefix: str) -> list[tuple[str, str]]: ...

    def taken_changes(self, path: str) -> list[tuple[str, tuple[int, int, str]]]: ...

    changes: dict[str, list[tuple[str, tuple[int, int, str]]]]  # every membership change offered, in order


@dataclass
class Sent:
    customer: str
    step: int  # the batch's position in its user's send order
    body: dict[str, Any]
    state: str = "pending"  # pending → acked | gave_up

    @property
    def srid(self) -> str:
        return self.body["source_request_id"]

    @property
    def ts(self) -> int:
        return max(e["data"]["timestamp_unixtime_ms"] for e in self.body["events"])


@dataclass
class Expected:
    """A profile as the replay of its batches implies it."""

    batches: int = 0
    events: int = 0
    attributes: dict[str, tuple[Any, int]] = field(default_factory=dict)  # name -> (value, written at)
    consent: dict[str, bool] = field(default_factory=dict)  # gdpr purpose -> consented
    first_seen_ms: int | None = None
    last_seen_ms: int | None = None
    recent_event_ids: list[str] = field(default_factory=list)


def replay(applied: list[Sent]) -> Expected:
    """Apply batches one after another; their times increase, so this is also what last-write-wins gives."""
    expected = Expected()
    event_ids: list[str] = []
    for sent in applied:
        body, ts = sent.body, sent.ts
        expected.batches += 1
        expected.events += len(body["events"])
        for name, value in body.get("user_attributes", {}).items():
            expected.attributes[name] = (value, ts)
        for name in body.get("deleted_user_attributes", []):
            expected.attributes.pop(name, None)
        for purpose, state in body.get("consent_state", {}).get("gdpr", {}).items():
            expected.consent[purpose] = state["consented"]
        stamps = [e["data"]["timestamp_unixtime_ms"] for e in body["events"]]
        expected.first_seen_ms = min(stamps) if expected.first_seen_ms is None else expected.first_seen_ms
        expected.last_seen_ms = max(stamps)
        event_ids += [e["data"]["source_message_id"] for e in body["events"]]
    expected.recent_event_ids = event_ids[-RECENT:]
    return expected


def membership_transitions(applied: list[Sent]) -> list[str]:
    """The gold audience's add / delete after each batch that flipped the user's `plan` in or out of gold."""
    plan: Any = None
    member, transitions = False, []
    for sent in applied:
        plan = sent.body.get("user_attributes", {}).get("plan", plan)
        if "plan" in sent.body.get("deleted_user_attributes", []):
            plan = None
        if (plan == "gold") != member:
            member = not member
            transitions.append("add" if member else "delete")
    return transitions


def counted(applied: list[Sent], event_name: str) -> int:
    return sum(e["data"]["event_name"] == event_name for sent in applied for e in sent.body["events"])


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    remaining = iter(whole)
    return all(any(item == candidate for candidate in remaining) for item in part)


def change_number(change_id: str) -> int:
    """`<shard>-<change number>`: a user lives on one shard, so the number orders the user's changes."""
    return int(change_id.split("-")[1])


def dead_lettered(api: Api) -> set[str]:
    """The source_request_ids of every batch the pipeline set aside (`GET /cdp/deadletter`, every page)."""
    found: set[str] = set()
    after: int | None = 0
    while after is not None:
        page = api.get("/cdp/deadletter", include_body="true", limit=1000, after=after).json()
        for entry in page["entries"]:
            with contextlib.suppress(ValueError, AttributeError):  # a body that is not a JSON object has no id
                found.add(json.loads(entry["body"]).get("source_request_id"))
        after = page["next_after"]
    found.discard(None)
    return found


class Ledger:
    """Thread-safe: load workers record, the test verifies once the load is over and the pipeline settled."""

    def __init__(self, tag: str, seed: int, pad: int = 0) -> None:
        self.tag, self.seed = tag, seed
        self.pad = pad  # bytes of filler per batch (a `pad` attribute), to make outbox windows large
        self.users: dict[str, list[Sent]] = defaultdict(list)
        self.by_srid: dict[str, Sent] = {}
        self.statuses: Counter[str] = Counter()  # answers to load requests: "202", "503", "ConnectionError", ...
        self.mpids: dict[str, int] = {}  # customer -> the mpid its deliveries carried
        self.erased: dict[str, int] = {}  # customer -> mpid of users erased during the load (`exclude`)
        self.lock = threading.Lock()

    def exclude(self, customer: str, mpid: int) -> None:
        """The user (its profile `mpid`) is erased: its entries are expected to vanish (see the module's doc)."""
        with self.lock:
            self.erased[customer] = mpid

    def new_batch(self, customer: str, rng: random.Random) -> Sent:
        """The user's next batch: 1-3 events, a `step` attribute, sometimes a plan change or removal, sometimes
        a consent change."""
        with self.lock:
            step = len(self.users[customer])
        ts = T0 + step * STEP_MS
        events = [custom(f"fault-{k}", ts + k, step=step) for k in range(rng.randint(1, 3))]
        fields: dict[str, Any] = {"source_request_id": f"{customer}-{step}", "user_attributes": {"step": step}}
        if self.pad:
            fields["user_attributes"]["pad"] = f"{step}:".ljust(self.pad, "x")
        plan = rng.choice(["gold", "silver", "delete", "keep"])
        if plan == "delete":
            fields["deleted_user_attributes"] = ["plan"]
        elif plan != "keep":
            fields["user_attributes"]["plan"] = plan
        if rng.random() < 0.3:
            fields["consent_state"] = {
                "gdpr": {"marketing": {"consented": rng.random() < 0.5, "timestamp_unixtime_ms": ts}}
            }
        sent = Sent(customer, step, batch(customer, events, **fields))
        with self.lock:
            self.users[customer].append(sent)
            self.by_srid[sent.srid] = sent
        return sent

    def attempt(self, outcome: str) -> None:
        with self.lock:
            self.statuses[outcome] += 1

    def settle(self, sent: list[Sent], state: str) -> None:
        with self.lock:
            for item in sent:
                item.state = state

    def batches(self, state: str | None = None) -> list[Sent]:
        with self.lock:
            return [s for sends in self.users.values() for s in sends if state is None or s.state == state]

    def delivered_or_refused(self, partner: Partner, paths: list[str], api: Api | None = None) -> bool:
        """The wait condition before verifying: every acknowledged batch reached each output path or was refused
        there, or (given the `api`) was dead-lettered."""
        acked = [s for s in self.batches("acked") if s.customer not in self.erased]
        dead = dead_lettered(api) if api else set()
        for path in paths:
            delivered = {b["source_request_id"] for b in partner.bodies_at(path)} | partner.refused[path] | dead
            if not all(s.srid in delivered for s in acked):
                return False
        return True

    def verify(self, api: Api, partner: Partner, fatal_alerts: dict[str, int]) -> dict[str, Any]:
        """Check invariants 1-3 for every output path; `fatal_alerts`: per path, the Fatal alerts raised for its
        connection during the test."""
        seed = f"(seed {self.seed})"
        assert not self.batches("pending"), f"the load left batches neither acknowledged nor given up {seed}"
        assert self.batches("acked"), f"nothing was acknowledged {seed}"
        summary: dict[str, Any] = {
            "seed": self.seed,
            "users": len(self.users),
            "sent": len(self.by_srid),
            "acked": len(self.batches("acked")),
            "gave_up": len(self.batches("gave_up")),
            "erased_users": len(self.erased),
        }
        dead = dead_lettered(api) & self.by_srid.keys()
        summary["dead_lettered"] = len(dead)
        for path, fatal in fatal_alerts.items():
            summary[path] = self._verify_output(partner, path, fatal, dead)
        summary[AUDIENCE_PATH] = self._verify_profiles(api, partner, list(fatal_alerts), dead)
        summary["answers"] = dict(self.statuses)
        return summary

    def _verify_output(self, partner: Partner, path: str, fatal_alerts: int, dead: set[str]) -> dict[str, int]:
        """1. at least once, or refused and Fatal-alerted, or dead-lettered; 3. per user, first deliveries in send
        order, each carrying the profile as of that batch."""
        seed = f"({path}, seed {self.seed})"
        deliveries = partner.bodies_at(path)
        unknown = {b.get("source_request_id") for b in deliveries} - self.by_srid.keys()
        assert not unknown, f"the partner got batches nobody sent: {sorted(unknown)[:5]} {seed}"
        delivered = {b["source_request_id"] for b in deliveries}
        missing = [
            s
            for s in self.batches("acked")
            if s.srid not in delivered and s.srid not in dead and s.customer not in self.erased
        ]
        unexplained = [s.srid for s in missing if s.srid not in partner.refused[path]]
        assert not unexplained, f"{len(unexplained)} acknowledged batches lost, e.g. {unexplained[:5]} {seed}"
        assert len(missing) <= fatal_alerts, f"{len(missing)} batches dropped, {fatal_alerts} Fatal alerts {seed}"

        first_delivery: dict[str, int] = {}
        for position, body in enumerate(deliveries):
            first_delivery.setdefault(body["source_request_id"], position)
        mpids: dict[str, set[int]] = defaultdict(set)
        for body in deliveries:
            mpids[self.by_srid[body["source_request_id"]].customer].add(body["mpid"])
        first_offer = {srid: position for position, srid in enumerate(partner.offered[path])}
        for customer, sends in self.users.items():
            assert len(mpids[customer]) <= 1, f"{customer}: delivered under several mpids {seed}"
            offers = [step for _, step in sorted((first_offer[s.srid], s.step) for s in sends if s.srid in first_offer)]
            history = f"{customer}: {partner.history(path, customer + '-')} {seed}"
            assert offers == sorted(offers), f"{customer}: offered out of order: steps {offers}; {history}"
            # A batch refused (dropped with a Fatal alert) and offered again after a crash, because the drop was
            # not yet acknowledged to its shard, may be taken after later ones: that is a re-send, like a
            # duplicate, so only batches never refused must be first taken in order.
            order = sorted(
                (first_delivery[s.srid], s.step)
                for s in sends
                if s.srid in first_delivery and s.srid not in partner.refused[path]
            )
            steps = [step for _, step in order]
            assert steps == sorted(steps), f"{customer}: delivered out of order: steps {steps}; {history}"
            for position, step in order:
                assert deliveries[position]["user_attributes"]["step"] == step, f"{customer}: stale profile {seed}"
        for customer, found in mpids.items():
            if not found:
                continue
            mpid = found.pop()
            assert self.mpids.setdefault(customer, mpid) == mpid, f"{customer}: another mpid than elsewhere {seed}"
        return {"delivered": len(delivered), "duplicates": len(deliveries) - len(delivered), "refused": len(missing)}

    def _verify_profiles(self, api: Api, partner: Partner, paths: list[str], dead: set[str]) -> dict[str, int]:
        """2. each profile equals the replay of its applied batches: the acknowledged ones but those dead-lettered,
        and those given up on that the pipeline took anyway (an output was offered them), each once; 4. so does
        its derived state, at the profile and at the audience output."""
        seed = f"(seed {self.seed})"
        offered = set().union(*(partner.seen[path] for path in paths))
        changes = self._changes_by_mpid(partner)
        for mpid in self.erased.values():
            changes.pop(mpid, None)
        audience = Counter[str]()
        for customer, sends in self.users.items():
            if customer in self.erased:
                continue
            applied = [s for s in sends if (s.state == "acked" and s.srid not in dead) or s.srid in offered]
            if not applied:
                continue
            found = api.get("/cdp/users/search", identity_type="customer_id", value=customer).json()["users"]
            assert len(found) == 1, f"{customer}: {len(found)} profiles {seed}"
            mpid = found[0]["mpid"]
            assert self.mpids.get(customer, mpid) == mpid, f"{customer}: delivered under another mpid {seed}"
            profile = api.get(f"/cdp/users/{mpid}").json()
            expected = replay(applied)
            assert (profile["batches"], profile["events"]) == (expected.batches, expected.events), (
                f"{customer}: applied {profile['batches']} batches / {profile['events']} events, the ledger "
                f"implies {expected.batches} / {expected.events} {seed}"
            )
            attributes = {name: (a["value"], a["updated_ms"]) for name, a in profile["attributes"].items()}
            assert attributes == expected.attributes, f"{customer}: attributes {attributes} {seed}"
            consent = {p: c["consented"] for p, c in profile["consent"].get("gdpr", {}).items()}
            assert consent == expected.consent, f"{customer}: consent {consent} {seed}"
            assert (profile["first_seen_ms"], profile["last_seen_ms"]) == (
                expected.first_seen_ms,
                expected.last_seen_ms,
            ), customer
            recent = [e["data"]["source_message_id"] for e in profile["recent_events"]]
            assert recent == expected.recent_event_ids, f"{customer}: event history differs from the replay {seed}"
            audience += self._verify_derived(customer, profile, applied, changes.pop(mpid, ([], [])), partner)
        assert not changes, f"membership changes for users nobody sent: {sorted(changes)[:5]} {seed}"
        return dict(audience)

    def _changes_by_mpid(self, partner: Partner) -> dict[int, tuple[list, list]]:
        """Per mpid: (changes offered, changes taken) at AUDIENCE_PATH; 4d checked over all of them."""
        contents: dict[str, tuple[int, int, str]] = {}
        by_mpid: dict[int, tuple[list, list]] = defaultdict(lambda: ([], []))
        for change_id, change in partner.changes[AUDIENCE_PATH]:
            known = contents.setdefault(change_id, change)
            assert known == change, f"change {change_id} offered as {known} and as {change} (seed {self.seed})"
            assert change[1] == GOLD_AUDIENCE, f"a change of audience {change[1]} (seed {self.seed})"
            by_mpid[change[0]][0].append((change_id, change))
        for change_id, change in partner.taken_changes(AUDIENCE_PATH):
            by_mpid[change[0]][1].append((change_id, change))
        return dict(by_mpid)

    def _verify_derived(
        self, customer: str, profile: dict[str, Any], applied: list[Sent], changes: tuple[list, list], partner: Partner
    ) -> Counter[str]:
        """4a-c, e for one user (4d: `_changes_by_mpid`)."""
        seed = f"{customer}, seed {self.seed}"
        count = counted(applied, "fault-1")
        value = profile["calculated"].get(FAULT_CA)
        # a count reads "0" with no matching event (the engine's reading), on the live path as after a backfill
        assert value == str(count), f"{customer}: {FAULT_CA} is {value}, replay {count} ({seed})"
        transitions = membership_transitions(applied)
        gold = bool(transitions) and transitions[-1] == "add"
        assert (str(GOLD_AUDIENCE) in profile["audiences"]) == gold, f"audiences {profile['audiences']} ({seed})"

        offered, taken = changes
        if not transitions:
            assert not offered, f"changes {offered} for a user never gold ({seed})"
            return Counter()
        history = f"replay {transitions}, offered {offered}, taken {taken} ({seed})"
        last_id, (_, _, last_action) = max(offered, key=lambda c: change_number(c[0]))
        assert last_action == transitions[-1], f"the last change offered is not the replay's last: {history}"
        firsts = list({change_id: change for change_id, change in taken}.items())  # each id at its first arrival
        numbers = [change_number(change_id) for change_id, _ in firsts]
        assert numbers == sorted(numbers), f"changes taken out of order: {history}"
        refused = last_id in partner.refused[AUDIENCE_PATH]
        assert refused or (firsts and firsts[-1][0] == last_id), f"the last change never arrived: {history}"
        actions = [action for _, (_, _, action) in firsts]
        assert is_subsequence(actions, transitions), f"changes taken that the replay does not make: {history}"
        return Counter(changes=len(firsts), duplicates=len(taken) - len(firsts), skipped=len(transitions) - len(firsts))
