"""The synthetic population: its laws checked against plain recomputations from the batches it sends."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from cdp_actors.predict.goal import DAY_MS
from cdp_actors.predict.synth import (
    LAPSED_SHARE,
    snapshot_frames,
    synthesize,
    synthesize_blocks,
    synthesize_frame_blocks,
    synthesize_frames,
)

AS_OF = 1_790_000_000_000


def events_by_user(batches: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for batch in batches:
        found.setdefault(batch["user_identities"]["customer_id"], []).extend(batch["events"])
    return found


def stamps(events: list[dict]) -> list[int]:
    return [event["data"]["timestamp_unixtime_ms"] for event in events]


def test_sessions_follow_engagement_over_the_active_days() -> None:
    users, history, window = 3000, 90, 14
    generated = synthesize(users, seed=11, history_days=history, window_days=window)
    starts = sum(1 for batch in generated.batches for e in batch["events"] if e["event_type"] == "session_start")
    # engagement 0.05 + Gamma(2, 0.25) has mean 0.55 a day; a lapsed user is active a uniform [0, cutoff) days
    active_days = (1 - LAPSED_SHARE) * history + LAPSED_SHARE * (history - window - 1) / 2
    assert abs(starts / users - 0.55 * active_days) < 0.05 * 0.55 * active_days


def test_session_rate_scales_the_events_and_keeps_the_truth() -> None:
    full, light = synthesize(2000, seed=4), synthesize(2000, seed=4, session_rate=0.1)
    assert light.true_probability == full.true_probability
    assert light.purchased == full.purchased
    count = lambda synthetic: sum(len(batch["events"]) for batch in synthetic.batches)  # noqa: E731
    assert 0.08 < count(light) / count(full) < 0.12


def test_the_goal_purchase_is_in_the_window_exactly_for_the_users_drawn_to_buy() -> None:
    generated = synthesize(1500, seed=8, history_days=30, session_rate=0.3)
    cutoff = AS_OF - generated.window_days * DAY_MS
    start = AS_OF - generated.history_days * DAY_MS
    for customer_id, events in events_by_user(generated.batches).items():
        in_window = [e for e in events if e["event_type"] == "commerce_event" and stamps([e])[0] > cutoff]
        assert len(in_window) == int(generated.purchased[customer_id])
        assert stamps(events) == sorted(stamps(events))
        assert all(start <= at <= AS_OF for at in stamps(events))
    rate = np.mean(list(generated.purchased.values()))
    assert abs(rate - np.mean(list(generated.true_probability.values()))) < 0.03


def test_sessions_hold_their_steps_within_the_day() -> None:
    generated = synthesize(300, seed=2)
    per_session = Counter()
    for batch in generated.batches:
        for event in batch["events"]:
            data = event["data"]
            if event["event_type"] == "custom_event":
                per_session[data["session_id"]] += 1
                assert data["timestamp_unixtime_ms"] // 1000 - data["session_id"] < DAY_MS // 1000
    assert 2.3 < np.mean(list(per_session.values())) < 2.7  # 1 + Poisson(1.5) navigation steps a session


def test_blocks_are_the_same_users_as_one_call() -> None:
    whole = synthesize(250, seed=3, session_rate=0.2)
    assert [b for block in synthesize_blocks(250, seed=3, session_rate=0.2) for b in block.batches] == whole.batches
    blocks = list(synthesize_blocks(250, seed=3, session_rate=0.2, block_users=100))
    assert [len(block.true_probability) for block in blocks] == [100, 100, 50]
    ids = [customer_id for block in blocks for customer_id in block.true_probability]
    assert ids == [f"synth-3-{number:07d}" for number in range(250)]


def test_frames_are_the_snapshot_of_the_batches() -> None:
    batches = synthesize(400, seed=5, history_days=30, session_rate=0.3).batches
    profiles, events = snapshot_frames(batches)
    direct = synthesize_frames(400, seed=5, history_days=30, session_rate=0.3)
    pd.testing.assert_frame_equal(direct.profiles, profiles.reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(direct.events, events.reset_index(drop=True), check_dtype=False)
    blocks = list(synthesize_frame_blocks(400, seed=5, history_days=30, session_rate=0.3))
    assert sum(len(block.events) for block in blocks) == len(events)
