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
import zlib
from collections.abc import Iterator
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


SESSION_STEPS_MEAN: Final = 1.5
"""Extra navigation steps per session (Poisson): a session has 1 + this many custom events on average."""
SESSION_LENGTH_MS: Final = DAY_MS - 3_600_000
"""Sessions start in the day's first 23 hours, so a session stays within its day."""
BLOCK_USERS: Final = 10_000
"""Users generated at once (numpy arrays per block): a block's batches are a few hundred MB at most."""


@dataclass(frozen=True)
class Traits:
    engagement: float
    """Sessions per day while active (before `session_rate`)."""
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
    lapsed = np.array([traits.lapsed_day is not None])
    return float(true_probabilities(np.array([traits.engagement]), np.array([traits.spend]), lapsed)[0])


def true_probabilities(engagement: np.ndarray, spend: np.ndarray, lapsed: np.ndarray) -> np.ndarray:
    """`true_probability` for arrays of users."""
    logit = -2.0 + 1.2 * np.log(engagement / 0.5) + 5.0 * (spend - 0.28)
    return 1.0 / (1.0 + np.exp(-logit)) * np.where(lapsed, LAPSED_FACTOR, 1.0)


def synthesize(
    users: int,
    seed: int = 0,
    history_days: int = 90,
    window_days: int = 14,
    as_of_ms: int = 1_790_000_000_000,
    session_rate: float = 1.0,
) -> Synthetic:
    """`users` synthetic users. `session_rate` scales every user's sessions per day (0.1: a tenth of the events,
    the same traits and true probabilities; the behaviour shows them less clearly)."""
    blocks = list(synthesize_blocks(users, seed, history_days, window_days, as_of_ms, session_rate))
    return Synthetic(
        [batch for block in blocks for batch in block.batches],
        {key: value for block in blocks for key, value in block.true_probability.items()},
        {key: value for block in blocks for key, value in block.purchased.items()},
        as_of_ms,
        window_days,
        history_days,
    )


def synthesize_blocks(
    users: int,
    seed: int = 0,
    history_days: int = 90,
    window_days: int = 14,
    as_of_ms: int = 1_790_000_000_000,
    session_rate: float = 1.0,
    block_users: int = BLOCK_USERS,
) -> Iterator[Synthetic]:
    """The same users as `synthesize`, `block_users` at a time (for populations too large to hold at once)."""
    rng = np.random.default_rng(seed)
    shape = _Shape(as_of_ms - history_days * DAY_MS, history_days, window_days, session_rate)
    for first in range(0, users, block_users):
        yield _block(rng, seed, range(first, min(users, first + block_users)), shape, as_of_ms)


@dataclass(frozen=True)
class _Shape:
    start_ms: int
    history_days: int
    window_days: int
    session_rate: float

    @property
    def cutoff_day(self) -> int:
        return self.history_days - self.window_days


# event kinds in the columns of a block, in the order events of the same instant are listed
_START, _SCREEN, _CUSTOM, _PURCHASE = 0, 1, 2, 3


@dataclass(frozen=True)
class _Users:
    """One block's users: ids, truth, draws, attributes, and their events as columns (`_events`)."""

    ids: list[str]
    probability: np.ndarray
    buys: np.ndarray
    attributes: list[dict[str, Any]]
    columns: dict[str, np.ndarray]


def _users(rng: np.random.Generator, seed: int, numbers: range, shape: _Shape) -> _Users:
    count = len(numbers)
    engagement = 0.05 + rng.gamma(2.0, 0.25, count)
    spend = rng.beta(2.0, 5.0, count)
    lapsed = rng.random(count) < LAPSED_SHARE
    last_day = np.where(lapsed, rng.integers(0, shape.cutoff_day, count), shape.history_days)
    probability = true_probabilities(engagement, spend, lapsed)
    buys = rng.random(count) < probability
    columns = _events(rng, shape, engagement, spend, last_day, buys)
    ids = [f"synth-{seed}-{number:07d}" for number in numbers]
    return _Users(ids, probability, buys, _attributes(rng, spend, ids), columns)


def _block(rng: np.random.Generator, seed: int, numbers: range, shape: _Shape, as_of_ms: int) -> Synthetic:
    users = _users(rng, seed, numbers, shape)
    return Synthetic(
        _user_batches(users.ids, users.attributes, users.columns),
        dict(zip(users.ids, users.probability.tolist(), strict=True)),
        dict(zip(users.ids, users.buys.tolist(), strict=True)),
        as_of_ms,
        shape.window_days,
        shape.history_days,
    )


@dataclass(frozen=True)
class SyntheticFrames:
    """`synthesize`'s users as the snapshot's (profiles, events) frames directly, with no batch in between."""

    profiles: pd.DataFrame
    events: pd.DataFrame
    true_probability: dict[str, float]
    as_of_ms: int
    window_days: int
    history_days: int


def synthesize_frames(
    users: int,
    seed: int = 0,
    history_days: int = 90,
    window_days: int = 14,
    as_of_ms: int = 1_790_000_000_000,
    session_rate: float = 1.0,
) -> SyntheticFrames:
    """The frames `snapshot_frames(synthesize(...).batches)` gives, for the same arguments, built from the columns
    with no batch in between."""
    blocks = list(synthesize_frame_blocks(users, seed, history_days, window_days, as_of_ms, session_rate))
    return SyntheticFrames(
        pd.concat([block.profiles for block in blocks], ignore_index=True),
        pd.concat([block.events for block in blocks], ignore_index=True),
        {key: value for block in blocks for key, value in block.true_probability.items()},
        as_of_ms,
        window_days,
        history_days,
    )


def synthesize_frame_blocks(
    users: int,
    seed: int = 0,
    history_days: int = 90,
    window_days: int = 14,
    as_of_ms: int = 1_790_000_000_000,
    session_rate: float = 1.0,
) -> Iterator[SyntheticFrames]:
    """`synthesize_frames`, `BLOCK_USERS` users at a time: populations whose events would not fit in memory at once
    are written block by block (a snapshot shard each)."""
    rng = np.random.default_rng(seed)
    shape = _Shape(as_of_ms - history_days * DAY_MS, history_days, window_days, session_rate)
    for first in range(0, users, BLOCK_USERS):
        block = _users(rng, seed, range(first, min(users, first + BLOCK_USERS)), shape)
        mpids = np.array([_mpid(customer_id) for customer_id in block.ids], dtype=np.int64)
        truth = dict(zip(block.ids, block.probability.tolist(), strict=True))
        events, profiles = _event_frame(mpids, block.columns), _profile_frame(mpids, block)
        yield SyntheticFrames(profiles, events, truth, as_of_ms, window_days, history_days)


_NONE: Final = np.array(None, dtype=object)
_KIND_TYPES: Final = np.array(["session_start", "screen_view", "custom_event", "commerce_event"], dtype=object)


def _event_frame(mpids: np.ndarray, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    kind = columns["kind"]
    names = np.where(kind == _CUSTOM, np.array(EVENT_NAMES, dtype=object)[np.maximum(columns["name"], 0)], _NONE)
    names = np.where(kind == _SCREEN, "home", names)
    purchase = kind == _PURCHASE
    return pd.DataFrame(
        {
            "mpid": mpids[columns["user"]],
            "timestamp_ms": columns["at"].astype(np.int64),
            "event_type": _KIND_TYPES[kind],
            "event_name": names,
            "custom_event_type": np.where(kind == _CUSTOM, "navigation", _NONE),
            "product_action": np.where(purchase, "purchase", _NONE),
            "revenue": np.where(purchase, columns["amount"], np.nan),
            "session_id": columns["session"].astype(np.int64),
            "attributes": "{}",
        }
    )


def _profile_frame(mpids: np.ndarray, users: _Users) -> pd.DataFrame:
    user = users.columns["user"]
    counts = np.bincount(user, minlength=len(mpids))
    at = users.columns["at"]
    ends = np.cumsum(counts)  # a user's events are contiguous and sorted by time
    first = np.where(counts > 0, at[np.minimum(ends - counts, max(len(at) - 1, 0))], 0) if len(at) else counts
    last = np.where(counts > 0, at[np.maximum(ends - 1, 0)], 0) if len(at) else counts
    return pd.DataFrame(
        {
            "mpid": mpids,
            "first_seen_ms": first.astype(np.int64),
            "last_seen_ms": last.astype(np.int64),
            "user_attributes": [json.dumps(attributes) for attributes in users.attributes],
            "identity_types": [["customer_id", "email"] for _ in mpids],
            "gdpr_consent": "{}",
            "ccpa_data_sale_opt_out": None,
            "calculated_attributes": "{}",
            "audience_ids": [[] for _ in mpids],
        }
    )


def _events(
    rng: np.random.Generator,
    shape: _Shape,
    engagement: np.ndarray,
    spend: np.ndarray,
    last_day: np.ndarray,
    buys: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every event of a block as columns (user, at_ms, kind, name, session_id, amount), sorted by user then time.

    Sessions are a Poisson process over each user's active days (the same law as a Poisson count per day)."""
    sessions = rng.poisson(engagement * shape.session_rate * last_day)
    session_user = np.repeat(np.arange(len(engagement)), sessions)
    session_day = (rng.random(len(session_user)) * last_day[session_user]).astype(np.int64)
    session_at = shape.start_ms + session_day * DAY_MS + rng.integers(0, SESSION_LENGTH_MS, len(session_user))
    session_id = session_at // 1000
    steps = 1 + rng.poisson(SESSION_STEPS_MEAN, len(session_user))
    step_session = np.repeat(np.arange(len(session_user)), steps)
    first_step = np.cumsum(steps) - steps
    step_index = np.arange(len(step_session)) - first_step[step_session]
    gaps = rng.integers(5_000, 120_000, len(step_session))  # each step comes this long after the previous one
    elapsed = np.cumsum(gaps)
    before_session = elapsed[first_step] - gaps[first_step]
    step_at = session_at[step_session] + elapsed - before_session[step_session]
    names = _event_names(rng, spend[session_user[step_session]])
    session_end = step_at[first_step + steps - 1]
    buys_in_session = (session_day < shape.cutoff_day) & (rng.random(len(session_user)) < 0.5 * spend[session_user])
    goal_at = shape.start_ms + shape.cutoff_day * DAY_MS + rng.integers(1, shape.window_days * DAY_MS, len(buys))
    screens = step_index % 2 == 0
    step_user = session_user[step_session]
    parts = [
        (session_user, session_at, _START, -1, session_id),
        (step_user[screens], step_at[screens], _SCREEN, -1, session_id[step_session][screens]),
        (step_user, step_at, _CUSTOM, names, session_id[step_session]),
        (session_user[buys_in_session], session_end[buys_in_session] + 60_000, _PURCHASE, -1,
         session_id[buys_in_session]),
        (np.flatnonzero(buys), goal_at[buys], _PURCHASE, -1, goal_at[buys] // 1000),
    ]  # fmt: skip
    user = np.concatenate([part[0] for part in parts])
    at = np.concatenate([part[1] for part in parts])
    kind = np.concatenate([np.full(len(part[0]), part[2]) for part in parts])
    name = np.concatenate([np.broadcast_to(part[3], len(part[0])) for part in parts])
    session = np.concatenate([part[4] for part in parts])
    buyer_spend = spend[user]
    amount = np.round(rng.lognormal(np.log(15.0 + 80.0 * buyer_spend), 0.4), 2)
    order = np.lexsort((kind, at, user))
    return {
        "user": user[order],
        "at": at[order],
        "kind": kind[order],
        "name": name[order],
        "session": session[order],
        "amount": amount[order],
    }


def _event_names(rng: np.random.Generator, spend: np.ndarray) -> np.ndarray:
    """A custom event name per step: browsing and wishlists weigh more for users who spend more."""
    weights = np.stack(
        [2.0 + 6.0 * spend, np.full_like(spend, 2.0), 1.0 + 2.0 * spend]
        + [np.full_like(spend, value) for value in (0.5, 1.0, 1.0)],
        axis=1,
    )
    cumulative = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    draws = rng.random(len(spend))
    return np.minimum((draws[:, None] > cumulative).sum(axis=1), len(EVENT_NAMES) - 1)


def _attributes(rng: np.random.Generator, spend: np.ndarray, ids: list[str]) -> list[dict[str, Any]]:
    pro = rng.random(len(ids)) < np.minimum(1.0, 1.6 * spend)
    city = rng.integers(0, len(CITIES), len(ids))
    age = (18 + rng.gamma(4.0, 5.0, len(ids))).astype(np.int64)
    return [
        {"plan": "pro" if p else "free", "city": CITIES[c], "age": a, SYNTH_ID_ATTRIBUTE: customer_id}
        for p, c, a, customer_id in zip(pro.tolist(), city.tolist(), age.tolist(), ids, strict=True)
    ]


def _user_batches(
    ids: list[str], attributes: list[dict[str, Any]], columns: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
    ends = np.searchsorted(columns["user"], np.arange(len(ids)), side="right").tolist()
    values = [columns[key].tolist() for key in ("at", "kind", "name", "session", "amount")]
    events = [_event_dict(*row) for row in zip(*values, strict=True)]
    batches: list[dict[str, Any]] = []
    begin = 0
    for customer_id, user_attributes, end in zip(ids, attributes, ends, strict=True):
        batches += _batches(customer_id, user_attributes, events[begin:end])
        begin = end
    return batches


def _event_dict(at_ms: int, kind: int, name: int, session_id: int, amount: float) -> dict[str, Any]:
    if kind == _START:
        return _event("session_start", at_ms, session_id)
    if kind == _SCREEN:
        return _event("screen_view", at_ms, session_id, screen_name="home")
    if kind == _CUSTOM:
        return _event("custom_event", at_ms, session_id, event_name=EVENT_NAMES[name], custom_event_type="navigation")
    action = {"action": "purchase", "transaction_id": f"t{at_ms}", "total_amount": amount}
    return _event("commerce_event", at_ms, session_id, product_action=action)


def _event(event_type: str, at_ms: int, session_id: int, **data: Any) -> dict[str, Any]:
    return {"event_type": event_type, "data": {"timestamp_unixtime_ms": at_ms, "session_id": session_id, **data}}


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
