"""A calculated attribute's value recomputed from the whole list of batches: the oracle the engine is checked against.

Written from the semantics in `cdp_actors/calculated/engine.py`'s docstring, not from its code: no buckets, no
incremental state. It lists every contribution in arrival order, keeps those visible at `now_ms`, caps distinct
values per UTC day (per all time without a window), and computes the value directly.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

from cdp_actors.calculated.conditions import attribute_matches
from cdp_actors.calculated.definition import Definition
from cdp_actors.schema.events import CalculatedAttributeSeed

DAY = 24 * 60 * 60 * 1000


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _name(event: dict[str, Any]) -> str | None:
    data = event.get("data") or {}
    if event.get("event_type") == "screen_view":
        return data.get("screen_name")
    if "event_name" in data and data["event_name"] is not None:
        return data["event_name"]
    if event.get("event_type") == "commerce_event":
        for key in ("product_action", "promotion_action"):
            if data.get(key) and data[key].get("action") is not None:
                return str(data[key]["action"])
    return None


def _selected(definition: Definition, event: dict[str, Any], test_conditions: bool) -> bool:
    point = definition.data_point
    kind = event.get("event_type")
    data = event.get("data") or {}
    if point.event_type is not None and kind != point.event_type:
        return False
    wanted_type = point.custom_event_type.lower() if point.custom_event_type else None
    by_action = point.event_type == "commerce_event" and wanted_type is not None  # the action names the event
    if point.event_name is not None and not by_action and _name(event) != point.event_name:
        return False
    if wanted_type is not None:
        if kind == "commerce_event":
            actions = [str(data[k]["action"]).lower() for k in ("product_action", "promotion_action") if data.get(k)]
            if wanted_type not in actions:
                return False
        elif str(data.get("custom_event_type", "")).lower() != wanted_type:
            return False
    if test_conditions:
        attributes = data.get("custom_attributes") or {}
        for condition in definition.conditions:
            if not attribute_matches(condition, attributes):
                return False
    return True


def contributions(definition: Definition, batch: Any) -> list[tuple[int, str, float | None, float]]:
    """What one batch yields: (time, text, number, weight) in arrival order."""
    point = definition.data_point
    found = []
    if point.type == "user_attribute":
        attributes = batch.user_attributes
        raw = attributes.get(point.attribute_name)
        values = raw if isinstance(raw, list) else [raw]
        if all(attribute_matches(c, attributes) for c in definition.conditions):
            for value in values:
                if value is not None:
                    found.append((batch.batch_ms, _text(value), _number(value), 1.0))
        return found
    on_items = point.type == "event_attribute" and point.attribute_category != "event_attribute"
    for event in batch.events:
        if not _selected(definition, event, not on_items):
            continue
        data = event.get("data") or {}
        if event.get("event_type") == "commerce_event" or data.get("timestamp_unixtime_ms") is None:
            at = batch.batch_ms
        else:
            at = min(max(data["timestamp_unixtime_ms"], 0), batch.batch_ms)
        if point.type == "event":
            found.append((at, str(_name(event) or ""), None, 1.0))
        elif not on_items:
            raw = (data.get("custom_attributes") or {}).get(point.attribute_name)
            if raw is not None:
                found.append((at, _text(raw), _number(raw), 1.0))
        else:
            is_product = point.attribute_category == "product_attribute"
            holder = data.get("product_action" if is_product else "promotion_action") or {}
            fields = (
                ("id", "name", "brand", "category", "variant", "price", "quantity", "coupon_code", "position",
                 "total_product_amount")
                if is_product
                else ("id", "name", "creative", "position")
            )  # fmt: skip
            for item in holder.get("products" if is_product else "promotions") or []:
                attributes = dict(item.get("custom_attributes") or {})
                attributes.update({f: item[f] for f in fields if item.get(f) is not None})
                raw = attributes.get(point.attribute_name)
                if raw is None or not all(attribute_matches(c, attributes) for c in definition.conditions):
                    continue
                weight = 1.0
                if is_product and point.use_product_quantity:
                    quantity = _number(item.get("quantity"))
                    weight = 1.0 if quantity is None else max(quantity, 0.0)
                found.append((at, _text(raw), _number(raw), weight))
    return found


def _format_number(number: float) -> str:
    rounded = float(f"{number:.15g}")
    if rounded == 0:
        return "0"
    if rounded == int(rounded) and abs(rounded) < 2**53:
        return str(int(rounded))
    return repr(rounded)


def _format_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def oracle_value(
    definition: Definition, batches: list[Any], seed: CalculatedAttributeSeed | None, now_ms: int, cap: int = 100
) -> str | None:
    """The value at `now_ms` (no earlier than any batch's time) of `definition` over `batches` (in arrival order)
    and the last `seed` given."""
    kind = definition.calculation_type
    period = definition.time_period
    window = None
    if period is not None and period.type == "within":
        assert period.within is not None
        window = period.within * (7 if period.within_unit == "weeks" else 1)
    start = None
    if period is not None and period.type == "since" and period.date is not None:
        start = _ms(period.date)
    if definition.seeding is not None and definition.seeding.cutoff_date is not None:
        cutoff = _ms(definition.seeding.cutoff_date)
        start = cutoff if start is None else max(start, cutoff)

    def visible_day(at: int) -> bool:
        return window is None or at // DAY > now_ms // DAY - window

    # every contribution, with its arrival number, the seed's first
    items: list[tuple[int, str, float | None, float, int]] = []  # (time, text, number, weight, day)
    for batch in batches:
        for at, text, number, weight in contributions(definition, batch):
            if start is not None and at < start:
                continue
            if visible_day(at):
                items.append((at, text, number, weight, at // DAY if window else 0))
    seed_day = None
    if seed is not None:
        seed_day = (seed.cutoff_ms - 1) // DAY if window else 0
        if window is not None and not visible_day(seed.cutoff_ms - 1):
            seed = None

    if kind == "count":
        seeded = _number(seed.value) if seed is not None and seed.value is not None else None
        return _format_number(len(items) + (seeded or 0))
    if kind == "sum":
        numbers = [n for _, _, n, _, _ in items if n is not None]
        if seed is not None and _number(seed.value) is not None:
            numbers.insert(0, _number(seed.value))  # type: ignore[arg-type]
        return _format_number(math.fsum(numbers))
    if kind in ("min", "max"):
        numbers = [n for _, _, n, _, _ in items if n is not None]
        if seed is not None and _number(seed.value) is not None:
            numbers.append(_number(seed.value))  # type: ignore[arg-type]
        if not numbers:
            return None
        return _format_number(min(numbers) if kind == "min" else max(numbers))
    if kind == "average":
        weighted = [(n * w, w) for _, _, n, w, _ in items if n is not None]
        if seed is not None and seed.key_value_pairs:
            weighted.append((seed.key_value_pairs["sum"], seed.key_value_pairs["count"]))
        weight = math.fsum(w for _, w in weighted)
        if weight <= 0:
            return None
        return _format_number(math.fsum(x for x, _ in weighted) / weight)
    if kind in ("first_occurrence", "last_occurrence", "first_occurrence_timestamp", "last_occurrence_timestamp"):
        timed = [(at, text) for at, text, _, _, _ in items]
        if seed is not None and seed.value is not None:
            if kind.endswith("timestamp"):
                number = _number(seed.value)
                if number is not None:
                    timed.insert(0, (int(number), ""))
            else:
                timed.insert(0, (seed.cutoff_ms - 1, seed.value))
        if not timed:
            return None
        if kind.startswith("first"):
            earliest = min(at for at, _ in timed)
            chosen = next((at, text) for at, text in timed if at == earliest)  # the first to arrive
        else:
            latest = max(at for at, _ in timed)
            chosen = [(at, text) for at, text in timed if at == latest][-1]  # the last to arrive
        return _format_time(chosen[0]) if kind.endswith("timestamp") else chosen[1]

    # unique list, unique values count, most frequent: per day, the first `cap` distinct values are admitted
    admitted: dict[int, list[str]] = {}
    counts: dict[str, float] = {}
    first_arrival: dict[str, int] = {}
    arrival = 0
    if seed is not None:
        if kind == "most_frequent" and seed.key_value_pairs:
            pairs = [(text, count) for text, count in seed.key_value_pairs.items() if count > 0][:cap]
        elif kind != "most_frequent" and seed.values:
            pairs = [(text, 1.0) for text in dict.fromkeys(seed.values)][:cap]
        else:
            pairs = []
        for text, count in pairs:
            counts[text] = counts.get(text, 0.0) + count
            first_arrival.setdefault(text, arrival - len(pairs) - 1_000_000)
            arrival += 1
        assert seed_day is not None
    for _, text, number, weight, day in items:
        day_values = admitted.setdefault(day, [])
        if text not in day_values:
            if len(day_values) >= cap:
                continue
            day_values.append(text)
        counts[text] = counts.get(text, 0.0) + (weight if number is None and kind == "most_frequent" else 1.0)
        first_arrival.setdefault(text, arrival)
        arrival += 1
    kept = sorted(first_arrival, key=first_arrival.__getitem__)[:cap]
    if kind == "unique_values_count":
        return str(len(kept))
    if not kept:
        return None
    if kind == "unique_list":
        return ",".join(json.dumps(text, ensure_ascii=False) for text in sorted(kept))
    best = max(counts[text] for text in kept)
    return min(text for text in kept if counts[text] == best)
