"""Goal, labels and features: the cutoff is exact to the millisecond, labels come from (C, T] only."""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_actors.errors import BadRequest
from cdp_actors.predict.features import Vocabulary, columns, features, vocabulary
from cdp_actors.predict.goal import DAY_MS, goal
from cdp_actors.predict.labels import labels, split

T = 1_790_000_000_000
WINDOW = 14
AT = split(T, WINDOW, 90)
C = AT.cutoff_ms


def event(mpid: int, at_ms: int, name: str = "view_item", kind: str = "custom_event", **more: object) -> dict:
    return {
        "mpid": mpid,
        "timestamp_ms": at_ms,
        "event_type": kind,
        "event_name": name if kind == "custom_event" else None,
        "custom_event_type": None,
        "product_action": None,
        "revenue": None,
        "session_id": None,
        "attributes": "{}",
        **more,
    }


def purchase(mpid: int, at_ms: int, amount: float = 1.0) -> dict:
    return event(mpid, at_ms, kind="commerce_event", product_action="purchase", revenue=amount)


def profile(mpid: int, **attributes: object) -> dict:
    return {
        "mpid": mpid,
        "first_seen_ms": 0,
        "last_seen_ms": 0,
        "user_attributes": json.dumps(attributes),
        "identity_types": ["customer_id"],
        "gdpr_consent": json.dumps({"marketing": True}) if mpid == 1 else "{}",
        "ccpa_data_sale_opt_out": None,
        "calculated_attributes": json.dumps({"visits": "12"}),
        "audience_ids": [],
    }


def frames(events: list[dict], users: tuple[int, ...] = (1, 2)) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.DataFrame([profile(mpid, plan="pro") for mpid in users]), pd.DataFrame(events)


def test_cutoff_is_inclusive_and_a_day_later_is_not_seen() -> None:
    profiles, events = frames([event(1, C), event(1, C + DAY_MS), purchase(2, C, 10.0), purchase(2, C + DAY_MS, 99.0)])
    vocab = vocabulary([(profiles, events)], C)
    seen = features(profiles, events, vocab, C, 90)
    assert seen.loc[1, "events_7d"] == 1
    assert seen.loc[1, "name_7d:view_item"] == 1
    assert seen.loc[1, "recency_days"] == 0
    assert seen.loc[2, "purchases_90d"] == 1
    assert seen.loc[2, "revenue_90d"] == 10.0


def test_windows_count_back_from_the_cutoff() -> None:
    inside_7, outside_7 = C - 7 * DAY_MS + 1, C - 7 * DAY_MS
    profiles, events = frames([event(1, inside_7), event(1, outside_7), event(1, C - 89 * DAY_MS)])
    seen = features(profiles, events, vocabulary([(profiles, events)], C), C, 90)
    assert seen.loc[1, ["events_7d", "events_30d", "events_90d"]].tolist() == [1, 2, 3]
    assert seen.loc[1, "tenure_days"] == 89
    assert seen.loc[2, "events_90d"] == 0


def test_label_window_is_after_the_cutoff_up_to_as_of() -> None:
    history = [event(mpid, C - DAY_MS) for mpid in (1, 2, 3, 4)]
    goal_at = [purchase(1, C), purchase(2, C + 1), purchase(3, T), purchase(4, T + 1)]
    _, events = frames(history + goal_at, (1, 2, 3, 4))
    assert labels(goal("purchase", window_days=WINDOW), events, AT).to_dict() == {1: 0, 2: 1, 3: 1, 4: 0}


def test_churn_is_no_event_at_all_in_the_window_and_the_population_needs_history() -> None:
    _, events = frames([event(1, C - DAY_MS), event(2, C - DAY_MS), event(2, C + DAY_MS), event(3, C + DAY_MS)])
    assert labels(goal("churn", window_days=WINDOW), events, AT).to_dict() == {1: 1, 2: 0}


def test_goal_event_with_an_attribute_condition_reuses_ca_conditions() -> None:
    over = {"type": "number", "operator": "greater_than", "attribute_name": "amount", "value": "50"}
    target = goal("signup", "custom_event", WINDOW, over)
    big, small = json.dumps({"amount": 80}), json.dumps({"amount": 20})
    rows = [event(1, C - DAY_MS), event(2, C - DAY_MS)]
    rows += [event(1, C + DAY_MS, "signup", attributes=big), event(2, C + DAY_MS, "signup", attributes=small)]
    assert labels(target, pd.DataFrame(rows), AT).to_dict() == {1: 1, 2: 0}


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"goal_event": ""}, "goal_event"),
        ({"goal_event": "x", "goal_event_type": "nope"}, "goal_event_type"),
        ({"goal_event": "x", "window_days": 0}, "window_days"),
        (
            {"goal_event": "x", "condition": {"type": "number", "operator": "contains", "attribute_name": "a"}},
            "condition",
        ),
        (
            {"goal_event": "churn", "condition": {"type": "string", "operator": "exists", "attribute_name": "a"}},
            "condition",
        ),
    ],
)
def test_goal_refusals_name_the_field(arguments: dict, field: str) -> None:
    with pytest.raises(BadRequest) as refused:
        goal(**arguments)
    assert refused.value.path is not None and refused.value.path.startswith(field)


def test_vocabulary_is_the_same_whatever_the_shard_order_and_columns_are_stable() -> None:
    one = frames([event(1, C, "a"), event(1, C, "b")], (1,))
    two = (pd.DataFrame([profile(2, plan="free", predicted_x_score=0.4)]), pd.DataFrame([event(2, C, "b")]))
    forward, backward = vocabulary([one, two], C), vocabulary([two, one], C)
    assert forward == backward
    assert forward.event_names == ["b", "a"]
    assert forward.categorical_levels == {"plan": ["free", "pro"]}
    assert (
        list(features(*one, forward, C, 90).columns) == columns(forward) == list(features(*two, forward, C, 90).columns)
    )
    assert not any("predicted_" in column for column in columns(forward))


def test_profile_state_features() -> None:
    profiles, events = frames([event(1, C), event(2, C)])
    profiles.loc[1, "user_attributes"] = json.dumps({"plan": "free", "age": "41"})
    profiles.loc[0, "user_attributes"] = json.dumps({"plan": "pro", "age": 30})
    seen = features(profiles, events, vocabulary([(profiles, events)], C), C, 90)
    assert seen.loc[1, "attr_num:age"] == 30 and seen.loc[2, "attr_num:age"] == 41
    assert seen.loc[1, "attr_cat:plan=pro"] == 1 and seen.loc[2, "attr_cat:plan=pro"] == 0
    assert seen.loc[1, "consent:marketing"] == 1 and pd.isna(seen.loc[2, "consent:marketing"])
    assert seen.loc[1, "ca:visits"] == 12 and seen.loc[1, "identity:customer_id"] == 1


def row_by_row(profiles: pd.DataFrame, vocab: Vocabulary) -> pd.DataFrame:
    """The profile-state columns recomputed one profile at a time, from the table in `features`' docstring."""
    rows = {}
    for row in profiles.to_dict("records"):
        row = argparse.Namespace(**row)
        attributes = json.loads(row.user_attributes or "{}")
        consent, calculated = json.loads(row.gdpr_consent or "{}"), json.loads(row.calculated_attributes or "{}")
        values = {f"attr_num:{name}": as_float(attributes.get(name)) for name in vocab.numeric_attributes}
        for name, levels in vocab.categorical_levels.items():
            given = attributes.get(name)
            text = None if given is None else ("true" if given is True else "false" if given is False else str(given))
            values |= {f"attr_cat:{name}={level}": float(text == level) for level in levels}
        values |= {
            f"consent:{purpose}": float(bool(consent[purpose])) if purpose in consent else math.nan
            for purpose in vocab.consent_purposes
        }
        opt_out = row.ccpa_data_sale_opt_out
        values["ccpa_data_sale_opt_out"] = math.nan if opt_out is None else float(opt_out)
        values |= {f"ca:{name}": as_float(calculated.get(name)) for name in vocab.calculated_attributes}
        values |= {f"identity:{kind}": float(kind in row.identity_types) for kind in vocab.identity_types}
        rows[row.mpid] = values
    return pd.DataFrame.from_dict(rows, orient="index")


def as_float(value: object) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        number = float(value)  # type: ignore[arg-type]
    except ValueError:
        return math.nan
    return number if math.isfinite(number) else math.nan


attribute_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["a", "b", "7", " 2.5", "x y"]), st.floats(0, 3)
)
profile_rows = st.fixed_dictionaries(
    {
        "user_attributes": st.dictionaries(st.sampled_from(["plan", "age", "tier"]), attribute_values, max_size=3),
        "gdpr_consent": st.dictionaries(st.sampled_from(["marketing", "ads"]), st.booleans(), max_size=2),
        "calculated_attributes": st.dictionaries(st.sampled_from(["visits", "label"]), attribute_values, max_size=2),
        "ccpa_data_sale_opt_out": st.sampled_from([None, True, False]),
        "identity_types": st.lists(st.sampled_from(["customer_id", "email", "other_id_2"]), unique=True),
    }
)


@settings(max_examples=60, deadline=None)
@given(st.lists(profile_rows, min_size=1, max_size=12))
def test_profile_state_columns_match_a_row_by_row_recomputation(rows: list[dict]) -> None:
    profiles = pd.DataFrame(
        [
            {
                **profile(mpid),
                **{key: json.dumps(row[key]) for key in ("user_attributes", "gdpr_consent", "calculated_attributes")},
                "ccpa_data_sale_opt_out": row["ccpa_data_sale_opt_out"],
                "identity_types": row["identity_types"],
            }
            for mpid, row in enumerate(rows, start=1)
        ]
    )
    events = pd.DataFrame([event(1, C)])
    vocab = vocabulary([(profiles, events)], C)
    seen = features(profiles, events, vocab, C, 90)
    expected = row_by_row(profiles, vocab)
    pd.testing.assert_frame_equal(
        seen.loc[:, list(expected.columns)], expected, check_names=False, check_index_type=False
    )
