"""The fault ledger counts a dead-lettered batch as accounted for, and only that one: a batch neither delivered,
refused nor dead-lettered is still reported lost."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

import pytest

from tests.faults.ledger import Ledger


class Page:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def json(self) -> dict[str, Any]:
        return self.body


class FakeApi:
    """`GET /cdp/deadletter` in pages of one, as the dispatcher serves it."""

    def __init__(self, dead: list[dict[str, Any]]) -> None:
        self.dead = dead

    def get(self, path: str, **params: Any) -> Page:
        assert path == "/cdp/deadletter" and params["include_body"] == "true"
        after = int(params["after"])
        entries = [{"seq": n + 1, "body": json.dumps(b)} for n, b in enumerate(self.dead) if n + 1 > after][:1]
        more = entries and entries[0]["seq"] < len(self.dead)
        return Page({"entries": entries, "next_after": entries[0]["seq"] if more else None})


class FakePartner:
    def __init__(self, bodies: list[dict[str, Any]]) -> None:
        self.bodies = bodies
        self.seen: dict[str, set[str]] = defaultdict(set, {"/w": {b["source_request_id"] for b in bodies}})
        self.offered: dict[str, list[str]] = defaultdict(list, {"/w": [b["source_request_id"] for b in bodies]})
        self.refused: dict[str, set[str]] = defaultdict(set)

    def bodies_at(self, path: str) -> list[dict[str, Any]]:
        return self.bodies

    def history(self, path: str, prefix: str) -> list[tuple[str, str]]:
        return []


def sent_batches(ledger: Ledger) -> list[Any]:
    rng = random.Random(1)
    sent = [ledger.new_batch("c1", rng) for _ in range(3)] + [ledger.new_batch("c2", rng)]
    ledger.settle(sent, "acked")
    return sent


def delivered(body: dict[str, Any], step: int) -> dict[str, Any]:
    return {**body, "mpid": 5, "user_attributes": {"step": step}}


def test_a_dead_lettered_batch_is_accounted_for() -> None:
    ledger = Ledger("t", 1)
    sent = sent_batches(ledger)
    partner = FakePartner([delivered(sent[0].body, 0), delivered(sent[2].body, 2), delivered(sent[3].body, 0)])
    api = FakeApi([{"mpid": 2**63}, sent[1].body])  # a poison batch the ledger did not send, and its own
    assert ledger.delivered_or_refused(partner, ["/w"], api)  # type: ignore[arg-type]
    assert not ledger.delivered_or_refused(partner, ["/w"]), "without the dead letters, one is missing"
    summary = ledger._verify_output(partner, "/w", 0, {sent[1].srid})  # type: ignore[arg-type]
    assert summary["delivered"] == 3


def test_a_batch_neither_delivered_nor_dead_lettered_is_lost() -> None:
    ledger = Ledger("t", 1)
    sent = sent_batches(ledger)
    partner = FakePartner([delivered(sent[0].body, 0), delivered(sent[3].body, 0)])
    api = FakeApi([sent[1].body])
    assert not ledger.delivered_or_refused(partner, ["/w"], api)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="1 acknowledged batches lost"):
        ledger._verify_output(partner, "/w", 0, {sent[1].srid})  # type: ignore[arg-type]
