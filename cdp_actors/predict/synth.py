"""Synthetic users with a known ground truth, for measuring a propensity model against the best possible one.

Each user has latent traits: `engagement` (sessions per day), `spend` (the propensity to buy) and whether they
lapsed (stopped coming) at some day of the history. The traits drive what the platform observes: sessions, screen
views and custom events (how often, how recently), purchases and their amounts, and two user attributes (`plan`
follows spend, `city` is noise). The goal is the `purchase` preset over the last `window_days` of the history: each
user's true probability of a purchase there is a known function of the traits (`true_probability`), and whether they
purchase is drawn from it, so the AUC of the true probabilities (the oracle's) is the ceiling a model can approach.

Output: Events API batches (mParticle's JSON: `user_identities`, `user_attributes`, events with
`timestamp_unixtime_ms`, commerce events with `product_action.action = purchase` and `total_amount`), the true
probability per customer_id, and the history's end (`as_of_ms`). The same seed gives the same output."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from cdp_actors.predict.goal import DAY_MS

MAX_EVENTS_PER_BATCH: Final = 100
"""Events per batch sent: well under the Events API's 1,000, so a batch stays small (tens of kB)."""
SYNTH_ID_ATTRIBUTE: Final = "synth_user_id"
"""A user attribute holding the customer_id, so the oracle's probabilities can be matched to snapshot rows (its
values are all distinct, so it is never a feature)."""
EVENT_NAMES: Final = ("view_item", "search", "add_to_wishlist", "share", "read_review", "open_newsletter")
CITIES: Final = ("Lyon", "Porto", "Leeds", "Graz", "Turku")
LAPSED_SHARE: Final = 0.25
LAPSED_FACTOR: Final = 0.1
"""A lapsed user still buys now and then (a win-back), at a tenth of their odds."""


@dataclass(frozen=True)
class Traits:
    engagement: float
    """Sessions per day while active."""
    spend: float
    """0..1: the chance a session ends in a purchase, doubled."""
    lapsed_day: int | None
    """The day (from the history's start) after which the user stopped coming; None: still active."""


@dataclass(frozen=True)
class Synthetic:
    batches: list[dict[str, Any]]
    true_probability: dict[str, float]
    """customer_id -> probability of the goal (a purchase) within the last `window_days`."""
    purchased: dict[str, bool]
    """customer_id -> whether the draw made them purchase in the window."""
    as_of_ms: int
    window_days: int
    history_days: int


def true_probability(traits: Traits) -> float:
    """The goal's probability from the traits: more sessions and more spend, more likely; lapsed, much less."""
    logit = -2.0 + 1.2 * math.log(traits.engagement / 0.5) + 5.0 * (traits.spend - 0.28)
    probability = 1.0 / (1.0 + math.exp(-logit))
    return probability * (LAPSED_FACTOR if traits.lapsed_day is not None else 1.0)


def synthesize(
    users: int, seed: int = 0, history_days: int = 90, window_days: int = 14, as_of_ms: int = 1_790_000_000_000
) -> Synthetic:
    rng = np.random.default_rng(seed)
    start_ms = as_of_ms - history_days * DAY_MS
    batches: list[dict[str, Any]] = []
    truth: dict[str, float] = {}
    purchased: dict[str, bool] = {}
    for number in range(users):
        traits = _traits(rng, history_days, window_days)
        customer_id = f"synth-{seed}-{number:07d}"
        probability = true_probability(traits)
        buys = bool(rng.random() < probability)
        events = _history(rng, traits, start_ms, history_days, window_days, buys)
        attributes = _attributes(rng, traits, customer_id)
        batches += _batches(customer_id, attributes, events)
        truth[customer_id], purchased[customer_id] = probability, buys
    return Synthetic(batches, truth, purchased, as_of_ms, window_days, history_days)


def _traits(rng: np.random.Generator, history_days: int, window_days: int) -> Traits:
    engagement = 0.05 + float(rng.gamma(2.0, 0.25))
    spend = float(rng.beta(2.0, 5.0))
    lapsed = rng.random() < LAPSED_SHARE
    lapsed_day = int(rng.integers(0, history_days - window_days)) if lapsed else None
    return Traits(engagement, spend, lapsed_day)


def _history(
    rng: np.random.Generator, traits: Traits, start_ms: int, history_days: int, window_days: int, buys: bool
) -> list[dict[str, Any]]:
    cutoff_day = history_days - window_days
    last_day = traits.lapsed_day if traits.lapsed_day is not None else history_days
    events: list[dict[str, Any]] = []
    for day in range(last_day):
        for _ in range(rng.poisson(traits.engagement)):
            at_ms = start_ms + day * DAY_MS + int(rng.integers(0, DAY_MS - 3_600_000))
            events += _session(rng, traits, at_ms, purchase_allowed=day < cutoff_day)
    if buys:  # the goal, drawn from the true probability: one purchase somewhere in the window
        at_ms = start_ms + cutoff_day * DAY_MS + int(rng.integers(1, window_days * DAY_MS))
        events.append(_purchase(rng, traits, at_ms, int(at_ms // 1000)))
    return sorted(events, key=lambda event: event["data"]["timestamp_unixtime_ms"])


def _session(rng: np.random.Generator, traits: Traits, at_ms: int, purchase_allowed: bool) -> list[dict[str, Any]]:
    session_id = int(at_ms // 1000)
    events = [_event("session_start", at_ms, session_id)]
    weights = np.array([2.0 + 6.0 * traits.spend, 2.0, 1.0 + 2.0 * traits.spend, 0.5, 1.0, 1.0])
    for step in range(1 + int(rng.poisson(1.5))):
        at_ms += int(rng.integers(5_000, 120_000))
        if step % 2 == 0:
            events.append(_event("screen_view", at_ms, session_id, screen_name="home"))
        name = EVENT_NAMES[int(rng.choice(len(EVENT_NAMES), p=weights / weights.sum()))]
        events.append(_event("custom_event", at_ms, session_id, event_name=name, custom_event_type="navigation"))
    if purchase_allowed and rng.random() < 0.5 * traits.spend:
        events.append(_purchase(rng, traits, at_ms + 60_000, session_id))
    return events


def _event(event_type: str, at_ms: int, session_id: int, **data: Any) -> dict[str, Any]:
    return {"event_type": event_type, "data": {"timestamp_unixtime_ms": at_ms, "session_id": session_id, **data}}


def _purchase(rng: np.random.Generator, traits: Traits, at_ms: int, session_id: int) -> dict[str, Any]:
    amount = round(float(rng.lognormal(math.log(15.0 + 80.0 * traits.spend), 0.4)), 2)
    action = {"action": "purchase", "transaction_id": f"t{at_ms}", "total_amount": amount}
    return _event("commerce_event", at_ms, session_id, product_action=action)


def _attributes(rng: np.random.Generator, traits: Traits, customer_id: str) -> dict[str, Any]:
    plan = "pro" if rng.random() < min(1.0, 1.6 * traits.spend) else "free"
    return {
        "plan": plan,
        "city": CITIES[int(rng.integers(0, len(CITIES)))],
        "age": int(18 + rng.gamma(4.0, 5.0)),
        SYNTH_ID_ATTRIBUTE: customer_id,
    }


def _batches(customer_id: str, attributes: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    identities = {"customer_id": customer_id, "email": f"{customer_id}@example.com"}
    chunks = [events[at : at + MAX_EVENTS_PER_BATCH] for at in range(0, len(events), MAX_EVENTS_PER_BATCH)] or [[]]
    batches = [{"environment": "production", "user_identities": identities, "events": chunk} for chunk in chunks]
    batches[0]["user_attributes"] = attributes
    return batches


def snapshot_frames(batches: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (profiles, events) a snapshot of these batches would hold (`snapshot.PROFILE_COLUMNS`, `EVENT_COLUMNS`),
    for tests and benchmarks that skip the platform: mpid from the customer_id, one shard."""
    profiles: dict[int, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for batch in batches:
        mpid = _mpid(batch["user_identities"]["customer_id"])
        profile = profiles.setdefault(mpid, {"attributes": {}, "stamps": []})
        profile["attributes"].update(batch.get("user_attributes") or {})
        for event in batch["events"]:
            rows.append(_event_row(mpid, event))
            profile["stamps"].append(event["data"]["timestamp_unixtime_ms"])
    events = pd.DataFrame(rows, columns=list(_EVENT_ROW))
    return _profiles_frame(profiles), events.astype({"mpid": "int64", "timestamp_ms": "int64"})


_EVENT_ROW: Final = (
    "mpid",
    "timestamp_ms",
    "event_type",
    "event_name",
    "custom_event_type",
    "product_action",
    "revenue",
    "session_id",
    "attributes",
)


def _event_row(mpid: int, event: dict[str, Any]) -> dict[str, Any]:
    data = event["data"]
    action = data.get("product_action") or {}
    name = data.get("event_name") or data.get("screen_name")
    return {
        "mpid": mpid,
        "timestamp_ms": data["timestamp_unixtime_ms"],
        "event_type": event["event_type"],
        "event_name": name,
        "custom_event_type": data.get("custom_event_type"),
        "product_action": action.get("action"),
        "revenue": action.get("total_amount") if event["event_type"] == "commerce_event" else None,
        "session_id": data.get("session_id"),
        "attributes": json.dumps(data.get("custom_attributes") or {}),
    }


def _profiles_frame(profiles: dict[int, dict[str, Any]]) -> pd.DataFrame:
    rows = [
        {
            "mpid": mpid,
            "first_seen_ms": min(profile["stamps"], default=0),
            "last_seen_ms": max(profile["stamps"], default=0),
            "user_attributes": json.dumps(profile["attributes"]),
            "identity_types": ["customer_id", "email"],
            "gdpr_consent": "{}",
            "ccpa_data_sale_opt_out": None,
            "calculated_attributes": "{}",
            "audience_ids": [],
        }
        for mpid, profile in profiles.items()
    ]
    return pd.DataFrame(rows).astype({"mpid": "int64"})


def _mpid(customer_id: str) -> int:
    return zlib.crc32(customer_id.encode()) << 16 | (zlib.adler32(customer_id.encode()) & 0xFFFF)
