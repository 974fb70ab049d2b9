"""Features as of a cutoff, per shard, with a vocabulary fixed across shards.

Only events with cutoff − lookback < timestamp ≤ cutoff count. Windows are counted back from the cutoff: "7d" is
(cutoff − 7 days, cutoff].

| column                          | meaning                                                                      |
|---------------------------------|------------------------------------------------------------------------------|
| `events_{w}d`                   | events in the window, w in 7, 30, 90                                         |
| `type_{w}d:{event_type}`        | events of each type seen in the snapshot, per window                         |
| `name_{w}d:{event_name}`        | events of each of the `TOP_EVENT_NAMES` most frequent names, per window      |
| `active_days_{w}d`              | distinct UTC days with an event, per window                                  |
| `sessions_{w}d`                 | distinct session ids, per window                                             |
| `purchases_{w}d`                | commerce events with product action purchase, per window                     |
| `revenue_{w}d`                  | sum of those purchases' total amount, per window                             |
| `mean_order_value`              | revenue / purchases over the whole lookback (NaN without purchases)          |
| `recency_days`                  | days from the last event to the cutoff (NaN: no event in the lookback)       |
| `tenure_days`                   | days from the first event in the lookback to the cutoff                      |
| `attr_num:{name}`               | numeric user attributes (≥ 95% of values parse as numbers)                   |
| `attr_cat:{name}={level}`       | one-hot of low-cardinality text attributes (≤ `MAX_LEVELS` values)           |
| `consent:{purpose}`             | GDPR consent per purpose: 1, 0, NaN (no state)                               |
| `ccpa_data_sale_opt_out`        | 1, 0, NaN                                                                    |
| `ca:{name}`                     | calculated attributes, as numbers when they parse (NaN otherwise)            |
| `identity:{type}`               | 1 when the user has an identity of that type                                 |

Leak risk: the snapshot holds only the current value of user attributes, consents, CAs and identities, not their
value at the cutoff, so an attribute set *because* the user reached the goal after the cutoff (a `last_purchase`
attribute, a CA counting purchases in the last 7 days) leaks the label into the features. Scores we wrote back
(`predicted_*`) are always left out, and callers pass `exclude` for attributes their goal sets. Event features have
no such risk: they are cut at the cutoff. Audience memberships are left out for the same reason as CAs, and because
an audience may be built on a previous score.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, cast

import msgspec
import numpy as np
import pandas as pd

from cdp_actors.calculated.conditions import as_number
from cdp_actors.predict.goal import DAY_MS

WINDOWS_DAYS: Final = (7, 30, 90)
"""A week, a month, a quarter before the cutoff: the recent trend against the longer habit."""
TOP_EVENT_NAMES: Final = 30
"""Event names kept as count features, the most frequent first: names beyond are mostly rare and sparse."""
MAX_LEVELS: Final = 12
"""A text attribute with more distinct values (ids, emails, free text) is not a category."""
NUMERIC_SHARE: Final = 0.95
"""An attribute is numeric when at least this share of its values parse as numbers."""
MAX_ATTRIBUTES: Final = 100
"""User attributes and CAs kept, the most frequent first (the Events API allows 100 user attributes)."""
WRITTEN_BACK_PREFIX: Final = "predicted_"
"""Scores written back as user attributes: never features (a model would learn from its own predictions)."""


@dataclass
class VocabularyCounts:
    """What one shard contributes to the vocabulary; `merged` sums shards."""

    event_names: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    attribute_values: dict[str, Counter[str] | None] = field(default_factory=dict)
    """name -> text values seen (None: more than MAX_LEVELS, so not a category)."""
    attribute_numbers: Counter[str] = field(default_factory=Counter)
    attribute_seen: Counter[str] = field(default_factory=Counter)
    calculated: Counter[str] = field(default_factory=Counter)
    purposes: Counter[str] = field(default_factory=Counter)
    identity_types: Counter[str] = field(default_factory=Counter)

    def merged(self, other: VocabularyCounts) -> VocabularyCounts:
        values: dict[str, Counter[str] | None] = {}
        for name in self.attribute_values.keys() | other.attribute_values.keys():
            mine, theirs = self.attribute_values.get(name, Counter()), other.attribute_values.get(name, Counter())
            both = None if mine is None or theirs is None else mine + theirs
            values[name] = None if both is None or len(both) > MAX_LEVELS else both
        return VocabularyCounts(
            self.event_names + other.event_names,
            self.event_types + other.event_types,
            values,
            self.attribute_numbers + other.attribute_numbers,
            self.attribute_seen + other.attribute_seen,
            self.calculated + other.calculated,
            self.purposes + other.purposes,
            self.identity_types + other.identity_types,
        )


@dataclass(frozen=True)
class Vocabulary:
    """The feature columns' names, fixed before the per-shard pass so every shard yields the same columns."""

    event_names: list[str]
    event_types: list[str]
    numeric_attributes: list[str]
    categorical_levels: dict[str, list[str]]
    calculated_attributes: list[str]
    consent_purposes: list[str]
    identity_types: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Vocabulary:
        return cls(**value)


def shard_counts(
    profiles: pd.DataFrame, events: pd.DataFrame, cutoff_ms: int, exclude: Iterable[str] = ()
) -> VocabularyCounts:
    """One shard's share of the vocabulary: event names and types at or before the cutoff, attribute values."""
    before = _rows(events, events["timestamp_ms"] <= cutoff_ms)
    counts = VocabularyCounts(
        event_names=Counter(_column(before, "event_name").dropna().value_counts().to_dict()),
        event_types=Counter(_column(before, "event_type").dropna().value_counts().to_dict()),
    )
    left_out = set(exclude)
    for attributes in _objects(profiles["user_attributes"]):
        for name, value in attributes.items():
            if name.startswith(WRITTEN_BACK_PREFIX) or name in left_out or isinstance(value, (list, dict)):
                continue
            _count_attribute(counts, name, value)
    codes, calculated = _unique_objects(profiles["calculated_attributes"])
    per_value = np.bincount(codes, minlength=len(calculated))
    for times, value in zip(per_value.tolist(), calculated, strict=True):
        counts.calculated.update(dict.fromkeys((name for name in value if name not in left_out), times))
    codes, consents = _unique_objects(profiles["gdpr_consent"])
    per_value = np.bincount(codes, minlength=len(consents))
    for times, value in zip(per_value.tolist(), consents, strict=True):
        counts.purposes.update(dict.fromkeys(value, times))
    codes, kinds = _unique(profiles["identity_types"].map(_strings_key))
    per_value = np.bincount(codes, minlength=len(kinds))
    for times, key in zip(per_value.tolist(), kinds, strict=True):
        counts.identity_types.update(dict.fromkeys(_key_strings(key), times))
    return counts


def _count_attribute(counts: VocabularyCounts, name: str, value: Any) -> None:
    if value is None:
        return
    counts.attribute_seen[name] += 1
    if as_number(value) is not None:
        counts.attribute_numbers[name] += 1
        return
    levels = counts.attribute_values.setdefault(name, Counter())
    if levels is None:
        return
    levels[_text(value)] += 1
    if len(levels) > MAX_LEVELS:
        counts.attribute_values[name] = None


def vocabulary_from_counts(counts: VocabularyCounts) -> Vocabulary:
    kept = [name for name, _ in _by_frequency(counts.attribute_seen)][:MAX_ATTRIBUTES]
    numeric = [name for name in kept if counts.attribute_numbers[name] >= NUMERIC_SHARE * counts.attribute_seen[name]]
    categorical = {}
    for name in kept:
        levels = counts.attribute_values.get(name)
        if name not in numeric and levels:
            categorical[name] = [level for level, _ in _by_frequency(levels)]
    return Vocabulary(
        event_names=[name for name, _ in _by_frequency(counts.event_names)][:TOP_EVENT_NAMES],
        event_types=sorted(counts.event_types),
        numeric_attributes=sorted(numeric),
        categorical_levels=dict(sorted(categorical.items())),
        calculated_attributes=sorted(name for name, _ in _by_frequency(counts.calculated)[:MAX_ATTRIBUTES]),
        consent_purposes=sorted(counts.purposes),
        identity_types=sorted(counts.identity_types),
    )


def vocabulary(
    shards: Iterable[tuple[pd.DataFrame, pd.DataFrame]], cutoff_ms: int, exclude: Iterable[str] = ()
) -> Vocabulary:
    """The first pass: the vocabulary of all shards' (profiles, events)."""
    total = VocabularyCounts()
    left_out = tuple(exclude)
    for profiles, events in shards:
        total = total.merged(shard_counts(profiles, events, cutoff_ms, left_out))
    return vocabulary_from_counts(total)


def _by_frequency(counter: Counter[str]) -> list[tuple[str, int]]:
    """Most frequent first, ties by name: the same vocabulary whatever order the shards came in."""
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))


def columns(vocab: Vocabulary) -> list[str]:
    """The feature columns, in their stable order."""
    names: list[str] = []
    for days in WINDOWS_DAYS:
        names += [f"events_{days}d", f"active_days_{days}d", f"sessions_{days}d"]
        names += [f"purchases_{days}d", f"revenue_{days}d"]
        names += [f"type_{days}d:{kind}" for kind in vocab.event_types]
        names += [f"name_{days}d:{name}" for name in vocab.event_names]
    names += ["mean_order_value", "recency_days", "tenure_days"]
    names += [f"attr_num:{name}" for name in vocab.numeric_attributes]
    names += [f"attr_cat:{name}={level}" for name, levels in vocab.categorical_levels.items() for level in levels]
    names += [f"consent:{purpose}" for purpose in vocab.consent_purposes]
    names += ["ccpa_data_sale_opt_out"]
    names += [f"ca:{name}" for name in vocab.calculated_attributes]
    names += [f"identity:{kind}" for kind in vocab.identity_types]
    return names


def features(
    profiles: pd.DataFrame, events: pd.DataFrame, vocab: Vocabulary, cutoff_ms: int, lookback_days: int
) -> pd.DataFrame:
    """One shard's features: a float frame indexed by mpid (every profile of the shard, sorted), `columns(vocab)`."""
    users = pd.Index(profiles["mpid"].astype("int64").unique(), name="mpid").sort_values()
    stamps = events["timestamp_ms"]
    history = _rows(events, (stamps <= cutoff_ms) & (stamps > cutoff_ms - lookback_days * DAY_MS))
    parts = [_window_counts(history, vocab, cutoff_ms, days, users) for days in WINDOWS_DAYS]
    parts.append(_history_summary(history, cutoff_ms, users))
    parts.append(_profile_state(profiles, vocab, users))
    frame = pd.concat(parts, axis=1)
    return frame.reindex(columns=columns(vocab)).astype("float64")


def _window_counts(
    history: pd.DataFrame, vocab: Vocabulary, cutoff_ms: int, days: int, users: pd.Index
) -> pd.DataFrame:
    window = _rows(history, history["timestamp_ms"] > cutoff_ms - days * DAY_MS)
    by_user = window.groupby("mpid")
    purchases = _rows(window, _is_purchase(window))
    out = pd.DataFrame(
        {
            f"events_{days}d": by_user.size(),
            f"active_days_{days}d": (_column(window, "timestamp_ms") // DAY_MS).groupby(window["mpid"]).nunique(),
            f"sessions_{days}d": _column(window, "session_id").groupby(window["mpid"]).nunique(),
            f"purchases_{days}d": purchases.groupby("mpid").size(),
            f"revenue_{days}d": _column(purchases, "revenue").fillna(0.0).groupby(purchases["mpid"]).sum(),
        }
    ).reindex(users)
    kinds = _counts_by(window, "event_type", vocab.event_types, f"type_{days}d:")
    names = _counts_by(window, "event_name", vocab.event_names, f"name_{days}d:")
    return pd.concat([out, kinds.reindex(users), names.reindex(users)], axis=1).fillna(0.0)


def _counts_by(window: pd.DataFrame, column: str, kept: list[str], prefix: str) -> pd.DataFrame:
    chosen = _rows(window, window[column].isin(kept))
    table = chosen.groupby(["mpid", column]).size().unstack(fill_value=0)
    return pd.DataFrame(table).reindex(columns=kept, fill_value=0).add_prefix(prefix)


def _is_purchase(events: pd.DataFrame) -> pd.Series:
    return (events["event_type"] == "commerce_event") & (events["product_action"] == "purchase")


def _history_summary(history: pd.DataFrame, cutoff_ms: int, users: pd.Index) -> pd.DataFrame:
    stamps = _column(history, "timestamp_ms").groupby(history["mpid"])
    purchases = _rows(history, _is_purchase(history))
    revenue = _column(purchases, "revenue").fillna(0.0).groupby(purchases["mpid"])
    return pd.DataFrame(
        {
            "mean_order_value": revenue.sum() / revenue.size(),
            "recency_days": (cutoff_ms - _series(stamps.max())) / DAY_MS,
            "tenure_days": (cutoff_ms - _series(stamps.min())) / DAY_MS,
        }
    ).reindex(users)


def _profile_state(profiles: pd.DataFrame, vocab: Vocabulary, users: pd.Index) -> pd.DataFrame:
    """Attributes, consent, CAs and identities as columns. Columns of few distinct values (consent, CAs, identity
    types) are decoded once per distinct value; user attributes (all distinct: ids) once per row."""
    values: dict[str, np.ndarray] = {}
    attributes = _objects(profiles["user_attributes"])
    for name in vocab.numeric_attributes:
        values[f"attr_num:{name}"] = np.array([_number(given.get(name)) for given in attributes], dtype=np.float64)
    for name, levels in vocab.categorical_levels.items():
        texts = np.array([_level(given.get(name)) for given in attributes], dtype=object)
        for level in levels:
            values[f"attr_cat:{name}={level}"] = (texts == level).astype(np.float64)
    codes, consents = _unique_objects(profiles["gdpr_consent"])
    for purpose in vocab.consent_purposes:
        given = [float(bool(value[purpose])) if purpose in value else np.nan for value in consents]
        values[f"consent:{purpose}"] = np.array(given, dtype=np.float64)[codes]
    values["ccpa_data_sale_opt_out"] = _opt_out(profiles["ccpa_data_sale_opt_out"])
    codes, calculated = _unique_objects(profiles["calculated_attributes"])
    for name in vocab.calculated_attributes:
        values[f"ca:{name}"] = np.array([_number(value.get(name)) for value in calculated], dtype=np.float64)[codes]
    codes, kinds = _unique(profiles["identity_types"].map(_strings_key))
    present = [set(_key_strings(key)) for key in kinds]
    for kind in vocab.identity_types:
        values[f"identity:{kind}"] = np.array([float(kind in held) for held in present], dtype=np.float64)[codes]
    frame = pd.DataFrame(values, index=pd.Index(profiles["mpid"].astype("int64"), name="mpid"))
    return _rows(frame, ~frame.index.duplicated(keep="last")).reindex(users)


def _level(value: Any) -> str | None:
    return None if value is None else _text(value)


def _opt_out(column: pd.Series) -> np.ndarray:
    codes, kinds = _unique(column.map(lambda value: None if value is None or pd.isna(value) else bool(value)))
    return np.array([float(kind) if isinstance(kind, bool) else np.nan for kind in kinds], dtype=np.float64)[codes]


def _unique(column: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """Each row's index into the distinct values (None is a value too), and those values."""
    codes, uniques = pd.factorize(column.astype(object), use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64), list(uniques)


def _unique_objects(column: pd.Series) -> tuple[np.ndarray, list[dict[str, Any]]]:
    codes, texts = _unique(column)
    return codes, [_object(text) for text in texts]


def _objects(column: pd.Series) -> list[dict[str, Any]]:
    """Every row's JSON object, each distinct text decoded once."""
    codes, decoded = _unique_objects(column)
    return [decoded[code] for code in codes.tolist()]


_KEY_SEPARATOR: Final = "\x1f"
"""Joins a row's identity types into one hashable key (a control character no identity type name holds)."""


def _strings_key(values: Any) -> str | None:
    return None if values is None or isinstance(values, float) else _KEY_SEPARATOR.join(_strings(values))


def _key_strings(key: str | None) -> list[str]:
    return [] if not key else key.split(_KEY_SEPARATOR)


def _rows(frame: pd.DataFrame, mask: Any) -> pd.DataFrame:
    return cast(pd.DataFrame, frame[mask])


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return cast(pd.Series, frame[name])


def _series(value: Any) -> pd.Series:
    return cast(pd.Series, value)


def _number(value: Any) -> float:
    number = None if value is None else as_number(value)
    return np.nan if number is None else number


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _strings(values: Any) -> list[str]:
    if values is None or isinstance(values, float):  # NaN: no list
        return []
    return [str(value) for value in values]


def _object(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:  # what json.dumps writes and strict JSON refuses (NaN, Infinity)
        value = json.loads(text)
    return value if isinstance(value, dict) else {}
