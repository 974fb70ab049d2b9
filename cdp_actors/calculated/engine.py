"""The per-(user, CA) state and its arithmetic: fold a batch in, age it by the clock, read the value.

Semantics follow the Calculated Attributes Reference (https://docs.mparticle.com/guides/platform-guide/
calculated-attributes/reference/); where it is silent, this module decides, once:

What a CA sees. A *contribution* is one value the data point yields, with its time:
- `event`: each matching event; its value is the event's name (custom events' `event_name`, screen views'
  `screen_name`, commerce events' `event_name` or else their product action).
- `event_attribute`: `data.custom_attributes[attribute_name]` of each matching event; with `attribute_category`
  `product_attribute` the attribute of each product of `product_action.products` (its fields `id`, `name`,
  `brand`, `category`, `variant`, `price`, `quantity`, `coupon_code`, `position`, `total_product_amount`, else
  its `custom_attributes`), with `promotion_attribute` of each promotion of `promotion_action.promotions`.
  An absent or null attribute yields nothing.
- `user_attribute`: the value the batch sets (each element of a list value), at the batch's time.
Matching: `event_type` equals the Events API type; `event_name` the event's name (for commerce events with a
`custom_event_type` the product action identifies the event and the name is not tested); `custom_event_type`
custom events' `custom_event_type`, commerce events' product (or promotion) action, case-insensitively. The
conditions are ANDed, on the event's `custom_attributes` (for product and promotion categories, on each
product's or promotion's attributes; for user attributes, on the batch's user attributes).

Time. An event's time is its `timestamp_unixtime_ms` (the batch's time when absent); a commerce event's is the
batch's time (the reference: "First/last timestamp is the batch timestamp"); a time after the batch's time (a
client clock ahead) counts as the batch's time, and one before 1970 as 1970. Events before `seeding.cutoff_date`
(the seed covers them) or before a `since` date are ignored.

`within` N days (weeks: 7N days) keeps a bucket per UTC day (`day = time_ms // DAY_MS`). At `now_ms`, the
buckets with `day > now_ms // DAY_MS - N` count: "within 1 day" is today (UTC), "within 7 days" today and the six
days before. A bucket leaves the window at `(day + N) * DAY_MS`; `next_change_ms` is when the oldest leaves.
Folding a batch drops the buckets (and skips the contributions) already out of the window at the latest time the
state has seen (the batch's, or its newest bucket's day), so a state holds at most N buckets; values are read at a
`now_ms` no earlier than any batch's time.
Without a window the state has one bucket (`day` 0) and never changes by itself.

Values, all strings (numbers: at most 15 significant digits, integral ones without `.0`; timestamps ISO 8601
UTC with milliseconds and `Z`):
- count: the number of contributions ("0" with none); sum: of the numeric ones (numeric strings converted,
  others ignored; "0" with none); min, max, average: of the numeric ones (None with none). With
  `use_product_quantity` an average weighs each product's value by its quantity (absent: 1); a sum does not
  multiply (the reference names quantity only for average and most frequent; a product's own
  `total_product_amount` is its price times quantity, and can be summed).
- first/last occurrence (value) and timestamp: the earliest/latest contribution; ties (same time) go to the
  first/last to arrive, so a commerce event's first product is its first value and its last product its last.
- unique list, unique values count, most frequent: each bucket admits the first 100 distinct values to arrive
  (`MAX_DISTINCT_VALUES`; later new values are not collected, the reference: "collect only the first 100
  distinct values"); the value reads the union of the visible buckets' admitted values, the first 100 by first
  arrival. A unique list is sorted alphabetically, each value JSON-quoted, comma-joined: `"Item 1","Item 2"`
  (the reference shows `"Item 1","Item 2","Item 3"`); unique values count is its length ("0" with none); most
  frequent the value with the highest count (admitted occurrences in the visible buckets; with
  `use_product_quantity` a non-numeric product value counts its quantity), ties to the alphabetically first.
  Without a window there is one bucket, so this is exactly "the first 100 distinct values".

Seeds (the CA Seeding API: `seeded`): a seed is what happened before its `cutoff_ms` and combines with the live
state as its type needs: count and sum add, min/max compare, average adds `sum` and `count`, first/last values
compare as if at `cutoff_ms - 1` (and first/last timestamps at their own time) with the seed first on ties,
unique lists and most frequent put the seed's values before the live ones (cap 100) and add counts. A later seed
replaces an earlier one. With a `within` window the seed is a bucket of the day before its cutoff.

State layout (`CAState`, msgpack, array-like): `buckets` (day ascending), `seed`, `seq` (the arrival counter of
distinct values). A `Bucket` has the fields every type may use (`count`, `total`, `extreme`, `at_ms`, `text`,
`values`: value -> [first arrival, weight]); each type fills the ones it needs. States are never changed in place:
`observe` returns the very same object when the batch changes nothing (the shard skips the write by identity).

Speed (`python -m benchmarks.ca_engine`, best of several runs on the shared 2-core machine at load average ~4, so
upper bounds). A batch of 10 custom events folded into 20 CAs (a mix of every type, half `within` windows): one
that concerns no CA 14 µs (`may_concern`: one look-up per CA in the batch's index, built once per batch); one whose
events match (2 events per CA) 130 µs for `observe` (162 before the per-batch view), 164 µs with each changed state
decoded and encoded. The shard's mix (the audiences benchmark's 20 CAs and 20 audiences' event counts over the
load's screen views, purchases and custom events; decode, observe, encode and value of each concerned state) 96 µs
a batch, against 146 µs before the per-batch view (1.5 times fewer interpreter instructions, counted with
callgrind). What pays: each batch's `BatchView` (built once: event names, the index; each data point's
contributions computed once and shared by the calculations that read them), a one-bucket path in `observe` for the
common batch (its events of one day, nothing leaving the window), values read from the state's own bucket list,
numbers of texts remembered. Matchers are compiled once per configuration version (`Calculation.__init__`). The
shard calls `CalculationIndex.concerned` before decoding a state: a batch that concerns no CA then costs no decode
either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import msgspec

from cdp_actors.calculated.conditions import MISSING, as_number, as_text, compiled_attribute_test
from cdp_actors.calculated.definition import Condition, Definition, instant_ms
from cdp_actors.calculated.seed import seed_fields
from cdp_actors.schema.events import CalculatedAttributeSeed

DAY_MS = 86_400_000
MAX_DISTINCT_VALUES = 100
"""Unique lists and most frequent collect the first 100 distinct values (the reference); per bucket."""
SIGNIFICANT_DIGITS = 15
"""Numbers are written with at most 15 significant digits, all a double holds exactly: a sum folded per day reads
the same as one added up in order (0.1 + 0.2 is "0.3")."""
PRODUCT_FIELDS = (
    "id",
    "name",
    "brand",
    "category",
    "variant",
    "price",
    "quantity",
    "coupon_code",
    "position",
    "total_product_amount",
)
PROMOTION_FIELDS = ("id", "name", "creative", "position")
ANY = "*"
"""The name part of an index key that matches events of a type whatever their name."""


class Observed(msgspec.Struct, frozen=True):
    """What a CA sees of one batch."""

    events: list[dict[str, Any]]
    """The batch's events in their Events API JSON form (`{"event_type", "data": {...}}`), as the history keeps them."""
    user_attributes: dict[str, Any]
    """The user attributes the batch sets (for `user_attribute` data points)."""
    batch_ms: int
    """The batch's time: what events without `timestamp_unixtime_ms` are stamped with, and commerce timestamps."""


class Bucket(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """What one UTC day (or, without a window, all time; or a seed) contributed."""

    day: int
    count: float = 0.0
    """count: contributions; average: the weight (quantities) of the numeric ones."""
    total: float = 0.0
    """sum: the numeric values; average: their weighted sum."""
    extreme: float | None = None
    """min or max."""
    at_ms: int | None = None
    """first/last occurrence (timestamp): its time."""
    text: str | None = None
    """first/last occurrence: its value."""
    values: dict[str, tuple[int, float]] | None = None
    """unique list, unique values count, most frequent: value -> (first arrival, weight), at most 100."""


class CAState(msgspec.Struct, array_like=True, gc=False):
    """Opaque to callers: encoded with `encode_state`, kept by the shard per (user, CA). Neither it nor `Bucket` is
    tracked by the garbage collector (`gc=False`): they hold no reference back to themselves, so they are in no
    cycle, and the shard creates and drops thousands a second (fewer collections)."""

    buckets: list[Bucket] = []
    seed: Bucket | None = None
    seq: int = 0
    """The arrival number the next new distinct value gets."""


Contribution = tuple[int, str, float | None, float]
"""(time ms, value as text, value as a number or None, weight)."""


# ---- matching events ------------------------------------------------------------------------------------------


def _name_of(kind: Any, data: dict[str, Any]) -> Any:
    if kind == "screen_view":
        return data.get("screen_name")
    name = data.get("event_name")
    if name is None and kind == "commerce_event":
        action = (data.get("product_action") or data.get("promotion_action") or {}).get("action")
        return str(action) if action is not None else None
    return name


def event_name(event: dict[str, Any]) -> str | None:
    """The name an event is matched and listed by."""
    return _name_of(event.get("event_type"), event.get("data") or {})


def commerce_actions(data: dict[str, Any]) -> list[str]:
    """A commerce event's product and promotion actions, case-folded."""
    actions = []
    for key in ("product_action", "promotion_action"):
        action = (data.get(key) or {}).get("action")
        if action is not None:
            actions.append(str(action).casefold())
    return actions


def index_keys(event: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The keys an event is found under: (type, ANY), (type, name), (None, name), and for commerce events
    (type, "action:" + each action)."""
    data = event.get("data") or {}
    kind = event.get("event_type")
    name = _name_of(kind, data)
    keys: list[tuple[Any, Any]] = [(kind, ANY), (kind, name), (None, name)]
    if kind == "commerce_event":
        keys.extend((kind, "action:" + action) for action in commerce_actions(data))
    return keys


def _time_of(kind: Any, data: dict[str, Any], batch_ms: int) -> int:
    if kind == "commerce_event":
        return batch_ms
    stamp = data.get("timestamp_unixtime_ms")
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):  # a tuple: see `as_number`
        return batch_ms
    return max(0, min(int(stamp), batch_ms))


def event_time(event: dict[str, Any], batch_ms: int) -> int:
    return _time_of(event.get("event_type"), event.get("data") or {}, batch_ms)


class BatchView:
    """What the CAs read of one batch, worked out once for all of them (the shard folds one batch into each
    concerned calculation in turn): each event's name and time, the positions of the events under each of their
    index keys, and each data point's contributions (several calculations often read the same ones: a sum and an
    average of the purchased products' price, an audience's event count and a CA counting the same events)."""

    __slots__ = ("batch", "index", "names", "contributions")

    def __init__(self, batch: Observed) -> None:
        self.batch = batch
        self.index: dict[tuple[Any, Any], list[int]] = {}
        """The positions of the batch's events under each of their keys (`index_keys`)."""
        self.names: list[Any] = []
        """`event_name` of each event (None for an item that is not an event)."""
        self.contributions: dict[tuple[Any, ...], list[Contribution]] = {}
        """What each data point (`Calculation.source`) yields from this batch, filled as calculations ask."""
        index = self.index
        for position, event in enumerate(batch.events):
            if not isinstance(event, dict):
                self.names.append(None)
                continue
            kind = event.get("event_type")
            data = event.get("data") or {}
            name = _name_of(kind, data)
            self.names.append(name)
            keys = {(kind, ANY), (kind, name), (None, name)}  # a set: keys may coincide (an event with no type)
            if kind == "commerce_event":
                keys.update((kind, "action:" + action) for action in commerce_actions(data))
            for key in keys:
                index.setdefault(key, []).append(position)

    def time(self, position: int) -> int:
        """`event_time` of the event at `position`."""
        event = self.batch.events[position]
        return _time_of(event.get("event_type"), event.get("data") or {}, self.batch.batch_ms)


def index_events(events: list[dict[str, Any]]) -> dict[tuple[Any, Any], list[int]]:
    """The positions of the batch's events under each of their keys."""
    return BatchView(Observed(events, {}, 0)).index


_view_cache: BatchView | None = None


def batch_view(batch: Observed) -> BatchView:
    """The batch's `BatchView`, built once for all the CAs that look at it: the last batch's view is kept (it holds
    the batch, so a new batch is never mistaken for it; one reference, so a thread switch cannot mix two)."""
    global _view_cache
    view = _view_cache
    if view is None or view.batch is not batch:
        view = _view_cache = BatchView(batch)
    return view


def batch_index(batch: Observed) -> dict[tuple[Any, Any], list[int]]:
    """`index_events` of the batch, built once for all the CAs that look at it."""
    return batch_view(batch).index


class EventMatcher:
    """Which events a data point's `event_type`, `event_name`, `custom_event_type` and conditions select (also
    what an audience's "performed event" criterion selects)."""

    def __init__(
        self,
        event_type: str | None,
        event_name: str | None,
        custom_event_type: str | None,
        conditions: Iterable[Condition] = (),
        *,
        event_conditions: bool = True,
    ) -> None:
        self.event_type = event_type
        self.custom_event_type = custom_event_type.casefold() if custom_event_type else None
        by_action = event_type == "commerce_event" and self.custom_event_type is not None
        self.by_action = by_action
        self.event_name = None if by_action else event_name
        self.conditions = tuple(conditions) if event_conditions else ()
        self.condition_tests = tuple(compiled_attribute_test(condition) for condition in self.conditions)
        if by_action:
            self.keys: tuple[tuple[Any, Any], ...] | None = ((event_type, "action:" + (self.custom_event_type or "")),)
        elif self.event_name is not None:
            self.keys = ((event_type, self.event_name),)
        elif event_type is not None:
            self.keys = ((event_type, ANY),)
        else:
            self.keys = None  # every event is a candidate
        self.by_key_alone = (self.custom_event_type is None or by_action) and not self.conditions
        """The events found under `keys` are exactly the matching ones (`refines` has nothing left to test)."""

    def positions(self, view: BatchView) -> list[int]:
        """The positions of the batch's events this matcher selects, in batch order (do not change the list: it may
        be the view's own)."""
        events = view.batch.events
        if self.keys is None:
            return [p for p, event in enumerate(events) if isinstance(event, dict) and self.selects(event)]
        if len(self.keys) == 1:
            found = view.index.get(self.keys[0])
            if not found:
                return []
        else:
            found = sorted({p for key in self.keys for p in view.index.get(key, ())})
        if self.by_key_alone:
            return found
        return [p for p in found if self.refines(events[p])]

    def selects(self, event: dict[str, Any]) -> bool:
        """Whether the event matches (type, name, custom event type, conditions)."""
        kind = event.get("event_type")
        if self.event_type is not None and kind != self.event_type:
            return False
        if self.event_name is not None and event_name(event) != self.event_name:
            return False
        return self.refines(event)

    def refines(self, event: dict[str, Any]) -> bool:
        """Whether a candidate found under `keys` (which tell its type and name, or action) matches the rest."""
        kind = event.get("event_type")
        data = event.get("data") or {}
        if self.custom_event_type is not None and not self.by_action:
            if kind == "commerce_event":
                if self.custom_event_type not in commerce_actions(data):
                    return False
            elif str(data.get("custom_event_type", "")).casefold() != self.custom_event_type:
                return False
        return self.meets_conditions(data)

    def meets_conditions(self, data: dict[str, Any]) -> bool:
        if self.condition_tests:
            attributes = data.get("custom_attributes") or {}
            return all(test(attributes) for test in self.condition_tests)
        return True

    def matching(self, batch: Observed) -> list[dict[str, Any]]:
        """The batch's events this matcher selects, in batch order."""
        events = batch.events
        return [events[p] for p in self.positions(batch_view(batch))]


def item_attributes(item: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A product's (or promotion's) attributes: its custom attributes, then its own fields over them."""
    attributes = dict(item.get("custom_attributes") or {})
    for field in fields:
        value = item.get(field)
        if value is not None:
            attributes[field] = value
    return attributes


def item_attribute(item: dict[str, Any], name: str, is_field: bool) -> Any:
    """`item_attributes(item, fields).get(name)` without building the dict (`is_field`: `name in fields`)."""
    if is_field:
        value = item.get(name)
        if value is not None:
            return value
    return (item.get("custom_attributes") or {}).get(name)


def quantity_of(product: dict[str, Any]) -> float:
    quantity = as_number(product.get("quantity"))
    return 1.0 if quantity is None else max(quantity, 0.0)


def _scalar_values(raw: Any) -> list[Any]:
    if raw is None or raw is MISSING:
        return []
    if isinstance(raw, list):
        return [item for item in raw if item is not None]
    return [raw]


# ---- the calculation -------------------------------------------------------------------------------------------


class Calculation:
    """One active definition, compiled once per configuration version."""

    def __init__(self, definition: Definition) -> None:
        self.definition = definition
        point = definition.data_point
        self.kind = definition.calculation_type
        period = definition.time_period
        self.window_days = period.window_days() if period is not None else None
        since = instant_ms(period.date) if period is not None and period.type == "since" and period.date else None
        cutoff = definition.seeding.cutoff_date if definition.seeding is not None else None
        starts = [t for t in (since, instant_ms(cutoff) if cutoff else None) if t is not None]
        self.start_ms = max(starts) if starts else None
        """Contributions before this time are ignored (the `since` date, the seeding cutoff)."""
        self.attribute = point.attribute_name or ""
        self.category = point.attribute_category
        self.use_quantity = point.use_product_quantity
        self.conditions = tuple(definition.conditions)
        self.condition_tests = tuple(compiled_attribute_test(condition) for condition in self.conditions)
        on_items = point.type == "event_attribute" and self.category != "event_attribute"
        self.matcher = EventMatcher(
            point.event_type, point.event_name, point.custom_event_type, self.conditions, event_conditions=not on_items
        )
        self.is_user_attribute = point.type == "user_attribute"
        self.needs_number = self.kind in ("sum", "min", "max", "average", "most_frequent")
        """Only these read a contribution's number: the others' contributions leave it None (no `as_number`)."""
        self.source = (
            point.type,
            self.category,
            self.attribute,
            self.use_quantity,
            self.needs_number,
            self.matcher.event_type,
            self.matcher.event_name,
            self.matcher.custom_event_type,
            tuple(condition.model_dump_json() for condition in self.conditions),
        )
        """What decides the contributions a batch yields: calculations with the same source share them
        (`BatchView.contributions`)."""
        self.read_batch: Callable[[BatchView], list[Contribution]]
        if point.type == "user_attribute":
            self.read_batch = self._user_attribute_values
        elif point.type == "event":
            self.read_batch = self._events
        elif self.category == "product_attribute":
            self.read_batch = self._item_values
            self.items = ("product_action", "products", PRODUCT_FIELDS)
        elif self.category == "promotion_attribute":
            self.read_batch = self._item_values
            self.items = ("promotion_action", "promotions", PROMOTION_FIELDS)
        else:
            self.read_batch = self._event_attribute_values
        self.fold: Callable[[Bucket, Contribution, CAState], bool] = _FOLDS[self.kind]

    # -- what a batch contributes (lists: one call per batch, no generator per CA)

    def contributions(self, batch: Observed) -> list[Contribution]:
        """What the batch yields for this data point, in arrival order (shared: do not change the list)."""
        return self._contributions(batch_view(batch))

    def _contributions(self, view: BatchView) -> list[Contribution]:
        found = view.contributions.get(self.source)
        if found is None:
            found = view.contributions[self.source] = self.read_batch(view)
        return found

    def _events(self, view: BatchView) -> list[Contribution]:
        names = view.names
        return [(view.time(p), str(names[p] or ""), None, 1.0) for p in self.matcher.positions(view)]

    def _event_attribute_values(self, view: BatchView) -> list[Contribution]:
        found: list[Contribution] = []
        name, numeric = self.attribute, self.needs_number
        events = view.batch.events
        for p in self.matcher.positions(view):
            raw = ((events[p].get("data") or {}).get("custom_attributes") or {}).get(name)
            if raw is not None:
                found.append((view.time(p), as_text(raw), as_number(raw) if numeric else None, 1.0))
        return found

    def _item_values(self, view: BatchView) -> list[Contribution]:
        action_key, list_key, fields = self.items
        name, numeric, conditions = self.attribute, self.needs_number, self.condition_tests
        is_field = name in fields
        weighed = self.use_quantity and list_key == "products"
        found: list[Contribution] = []
        events = view.batch.events
        for p in self.matcher.positions(view):
            items = ((events[p].get("data") or {}).get(action_key) or {}).get(list_key) or []
            at = view.time(p)
            for item in items:
                if not isinstance(item, dict):
                    continue
                if conditions:
                    attributes = item_attributes(item, fields)
                    raw = attributes.get(name)
                    if raw is None or not all(test(attributes) for test in conditions):
                        continue
                else:
                    raw = item_attribute(item, name, is_field)
                    if raw is None:
                        continue
                weight = quantity_of(item) if weighed else 1.0
                found.append((at, as_text(raw), as_number(raw) if numeric else None, weight))
        return found

    def _user_attribute_values(self, view: BatchView) -> list[Contribution]:
        batch = view.batch
        attributes = batch.user_attributes
        values = _scalar_values(attributes.get(self.attribute, MISSING))
        if not values or not all(test(attributes) for test in self.condition_tests):
            return []
        numeric = self.needs_number
        return [(batch.batch_ms, as_text(value), as_number(value) if numeric else None, 1.0) for value in values]

    # -- the interface

    def observe(self, state: CAState | None, batch: Observed) -> CAState | None:
        """The state with the batch folded in; `state` None is the empty state. Returns None when the state was
        None and nothing in the batch concerns this CA (the shard then stores nothing), or when the batch's time
        leaves nothing of the state in the window."""
        view = batch_view(batch)
        if not self._may_concern(view):  # one look-up: what a backfill, folding every CA, meets most
            return state
        items = self._contributions(view)
        if not items:
            return state
        before = state if state is not None else _EMPTY
        if self.window_days is None and (
            not before.buckets or (len(before.buckets) == 1 and before.buckets[0].day == 0)
        ):
            return self._observe_all_time(state, before, items)
        return self._observe_by_day(state, before, items, batch.batch_ms)

    def _observe_all_time(self, state: CAState | None, before: CAState, items: list[Contribution]) -> CAState | None:
        """`observe` without a window: one bucket (day 0), nothing ever leaves."""
        start_ms = self.start_ms
        original = before.buckets[0] if before.buckets else None
        bucket = _copy(original) if original is not None else Bucket(0)
        after = CAState([bucket], before.seed, before.seq)  # `seq` advances on it while folding
        fold = self.fold
        changed = False
        for item in items:
            if (start_ms is None or item[0] >= start_ms) and fold(bucket, item, after):
                changed = True
        return after if changed and bucket != original else state  # changes may undo each other (last: B, then A)

    def _observe_by_day(
        self, state: CAState | None, before: CAState, items: list[Contribution], batch_ms: int
    ) -> CAState | None:
        """`observe` with a window of `window_days`: a bucket per UTC day (also any state not of one bucket of day 0
        when there is no window: every contribution then goes to day 0, as `_observe_all_time` does)."""
        window = self.window_days
        oldest_day = None
        if window is not None:  # values are read no earlier than the latest batch: not before its day either
            today = max(batch_ms // DAY_MS, before.buckets[-1].day if before.buckets else 0)
            oldest_day = today - window + 1
            day = items[0][0] // DAY_MS
            if self.start_ms is None and self._one_day(before, items, day, oldest_day):
                return self._observe_one_day(state, before, items, day)
        work = CAState(before.buckets, before.seed, before.seq)  # `seq` advances on this copy while folding
        touched: dict[int, Bucket] = {}
        changed: set[int] = set()
        start_ms, fold = self.start_ms, self.fold
        for item in items:
            if start_ms is not None and item[0] < start_ms:
                continue
            day = 0 if oldest_day is None else item[0] // DAY_MS
            if oldest_day is not None and day < oldest_day:
                continue
            bucket = touched.get(day)
            if bucket is None:
                original = _bucket_of(before.buckets, day)
                bucket = touched[day] = _copy(original) if original is not None else Bucket(day)
            if fold(bucket, item, work):
                changed.add(day)
        changed = {day for day in changed if touched[day] != _bucket_of(before.buckets, day)}  # may undo each other
        pruned = oldest_day is not None and (
            (before.buckets and before.buckets[0].day < oldest_day)
            or (before.seed is not None and before.seed.day < oldest_day)
        )
        if not changed and not pruned:
            return state
        seed = before.seed if before.seed is None or oldest_day is None or before.seed.day >= oldest_day else None
        buckets = [b for b in before.buckets if b.day not in changed and (oldest_day is None or b.day >= oldest_day)]
        if changed:
            latest_kept = buckets[-1].day if buckets else None
            buckets.extend(touched[day] for day in sorted(changed))
            if latest_kept is not None and latest_kept > min(changed):  # else already by day (the state is)
                buckets.sort(key=_day)
        if not buckets and seed is None:
            return None  # all aged out: nothing to keep
        work.buckets, work.seed = buckets, seed
        return work

    @staticmethod
    def _one_day(before: CAState, items: list[Contribution], day: int, oldest_day: int) -> bool:
        """Whether every contribution falls on `day`, in the window, not before the state's latest day, and nothing
        of the state leaves the window: a batch's common case (its events are of one day)."""
        buckets, seed = before.buckets, before.seed
        return (
            day >= oldest_day
            and (not buckets or (buckets[-1].day <= day and buckets[0].day >= oldest_day))
            and (seed is None or seed.day >= oldest_day)
            and all(item[0] // DAY_MS == day for item in items)
        )

    def _observe_one_day(
        self, state: CAState | None, before: CAState, items: list[Contribution], day: int
    ) -> CAState | None:
        """`_observe_by_day` when `_one_day` holds: one bucket to change (the latest or a new one after it), the
        others kept as they are."""
        buckets = before.buckets
        original = buckets[-1] if buckets and buckets[-1].day == day else None
        if original is not None:
            bucket, others = _copy(original), buckets[:-1]
        else:
            bucket, others = Bucket(day), buckets
        after = CAState(others, before.seed, before.seq)  # `seq` advances on it while folding
        fold = self.fold
        changed = False
        for item in items:
            if fold(bucket, item, after):
                changed = True
        if not changed or bucket == original:  # changes may undo each other (last: B, then A)
            return state
        after.buckets = [*others, bucket]
        return after

    def may_concern(self, batch: Observed) -> bool:
        """False when no event of the batch can match (one dict lookup), or the batch sets no such attribute."""
        return self._may_concern(batch_view(batch))

    def _may_concern(self, view: BatchView) -> bool:
        if self.is_user_attribute:
            return self.attribute in view.batch.user_attributes
        keys = self.matcher.keys
        if keys is None:
            return bool(view.batch.events)
        return not view.index.keys().isdisjoint(keys)

    def seeded(self, state: CAState | None, seed: CalculatedAttributeSeed) -> CAState:
        """The state with `seed` as what happened before the seed's cutoff (a later seed replaces an earlier one)."""
        day = 0 if self.window_days is None else (seed.cutoff_ms - 1) // DAY_MS
        bucket = Bucket(day, **seed_fields(self.kind, seed, MAX_DISTINCT_VALUES))
        before = state if state is not None else _EMPTY
        return CAState(list(before.buckets), bucket, before.seq)

    def visible(self, state: CAState, now_ms: int) -> list[Bucket]:
        """The seed and the buckets that count at `now_ms`, seed first, then by day. Often the state's own list
        (no copy per read): do not change it."""
        buckets = state.buckets
        if self.window_days is None:
            return buckets if state.seed is None else [state.seed, *buckets]
        oldest_day = now_ms // DAY_MS - self.window_days + 1
        if state.seed is None and (not buckets or buckets[0].day >= oldest_day):  # by day: all count
            return buckets
        parts = [] if state.seed is None else [state.seed]
        parts.extend(buckets)
        return [bucket for bucket in parts if bucket.day >= oldest_day]

    def value(self, state: CAState | None, now_ms: int) -> str | None:
        """The CA's value as of `now_ms`, as a string (all CA values are strings), None when it has none ("0" for
        count, sum and unique values count)."""
        return _READS[self.kind](self.visible(state, now_ms) if state is not None else [])

    def aged(self, state: CAState, now_ms: int) -> CAState | None:
        """The state without what fell out of the window by `now_ms` (None if nothing is left)."""
        if self.window_days is None:
            return state if state.buckets or state.seed is not None else None
        oldest_day = now_ms // DAY_MS - self.window_days + 1
        kept = [bucket for bucket in state.buckets if bucket.day >= oldest_day]
        seed = state.seed if state.seed is not None and state.seed.day >= oldest_day else None
        if not kept and seed is None:
            return None
        if len(kept) == len(state.buckets) and seed is state.seed:
            return state
        return CAState(kept, seed, state.seq)

    def next_change_ms(self, state: CAState) -> int | None:
        """The earliest time the value may change with no new data (a bucket leaving the window), None if never."""
        if self.window_days is None:
            return None
        days = [bucket.day for bucket in state.buckets]
        if state.seed is not None:
            days.append(state.seed.day)
        return (min(days) + self.window_days) * DAY_MS if days else None


class CalculationIndex:
    """Which of many calculations a batch may concern, found from the batch's own index keys and attribute names
    (a handful of look-ups per batch, not one `may_concern` per calculation). A superset: each found one still
    decides in `observe`."""

    def __init__(self, calculations: dict[str, Calculation]) -> None:
        self.by_event_key: dict[tuple[Any, Any], list[str]] = {}
        self.by_attribute: dict[str, list[str]] = {}
        self.every_event: list[str] = []
        for name, calculation in calculations.items():
            if calculation.is_user_attribute:
                self.by_attribute.setdefault(calculation.attribute, []).append(name)
            elif calculation.matcher.keys is None:
                self.every_event.append(name)
            else:
                for key in calculation.matcher.keys:
                    self.by_event_key.setdefault(key, []).append(name)

    def concerned(self, batch: Observed) -> set[str]:
        found: set[str] = set()
        if batch.events:
            found.update(self.every_event)
            for key in self.by_event_key.keys() & batch_view(batch).index.keys():  # one set operation, in C
                found.update(self.by_event_key[key])
        for attribute in batch.user_attributes:
            found.update(self.by_attribute.get(attribute, ()))
        return found


_EMPTY = CAState()


def _day(bucket: Bucket) -> int:
    return bucket.day


def _bucket_of(buckets: list[Bucket], day: int) -> Bucket | None:
    for bucket in reversed(buckets):  # a batch's day is most often the last
        if bucket.day == day:
            return bucket
        if bucket.day < day:
            return None
    return None


def _copy(bucket: Bucket) -> Bucket:
    """A bucket the batch may change in place (its `values` too) without touching the stored state's."""
    values = dict(bucket.values) if bucket.values is not None else None
    return msgspec.structs.replace(bucket, values=values)


# ---- folding one contribution into a bucket (in place: the bucket is the batch's own copy); True if it changed ----


def _fold_count(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    bucket.count += 1
    return True


def _fold_sum(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    if not item[2]:  # None (not a number) or 0
        return False
    bucket.total += item[2]
    return True


def _fold_min(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    number = item[2]
    if number is not None and (bucket.extreme is None or number < bucket.extreme):
        bucket.extreme = number
        return True
    return False


def _fold_max(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    number = item[2]
    if number is not None and (bucket.extreme is None or number > bucket.extreme):
        bucket.extreme = number
        return True
    return False


def _fold_average(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    number, weight = item[2], item[3]
    if number is None or not weight:
        return False
    bucket.total += number * weight
    bucket.count += weight
    return True


def _fold_first(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    if bucket.at_ms is None or item[0] < bucket.at_ms:  # strict: a tie keeps the first to arrive
        bucket.at_ms, bucket.text = item[0], item[1]
        return True
    return False


def _fold_last(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    if bucket.at_ms is None or item[0] >= bucket.at_ms:  # a tie goes to the last to arrive
        changed = bucket.at_ms != item[0] or bucket.text != item[1]
        bucket.at_ms, bucket.text = item[0], item[1]
        return changed
    return False


def _fold_first_time(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    if bucket.at_ms is None or item[0] < bucket.at_ms:
        bucket.at_ms = item[0]
        return True
    return False


def _fold_last_time(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    if bucket.at_ms is None or item[0] > bucket.at_ms:
        bucket.at_ms = item[0]
        return True
    return False


def _fold_distinct(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    values = bucket.values
    if values is not None and (item[1] in values or len(values) >= MAX_DISTINCT_VALUES):
        return False  # known (a list counts no occurrences), or not collected past the cap
    return _admit(bucket, item[1], 1.0, state)


def _fold_frequency(bucket: Bucket, item: Contribution, state: CAState) -> bool:
    weight = item[3] if item[2] is None else 1.0  # quantity counts for non-numeric values only (the reference)
    return _admit(bucket, item[1], weight, state)


def _admit(bucket: Bucket, text: str, weight: float, state: CAState) -> bool:
    if bucket.values is None:
        bucket.values = {}
    values = bucket.values
    known = values.get(text)
    if known is not None:
        values[text] = (known[0], known[1] + weight)
        return weight != 0
    if len(values) >= MAX_DISTINCT_VALUES:
        return False
    values[text] = (state.seq, weight)
    state.seq += 1
    return True


_FOLDS: dict[str, Callable[[Bucket, Contribution, CAState], bool]] = {
    "count": _fold_count,
    "sum": _fold_sum,
    "min": _fold_min,
    "max": _fold_max,
    "average": _fold_average,
    "first_occurrence": _fold_first,
    "first_occurrence_timestamp": _fold_first_time,
    "last_occurrence": _fold_last,
    "last_occurrence_timestamp": _fold_last_time,
    "unique_list": _fold_distinct,
    "unique_values_count": _fold_distinct,
    "most_frequent": _fold_frequency,
}


# ---- reading the value of the visible buckets ------------------------------------------------------------------


def number_text(number: float) -> str:
    """A number as CA values write it: 15 significant digits at most, integral ones without `.0`."""
    if -1e15 < number < 1e15 and number == int(number):  # counts, mostly: 15 digits keep them as they are
        return str(int(number))
    rounded = float(f"{number:.{SIGNIFICANT_DIGITS}g}")
    if rounded == 0:
        return "0"  # not "-0"
    return as_text(rounded)


def timestamp_text(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _read_count(parts: list[Bucket]) -> str:
    return number_text(sum([bucket.count for bucket in parts]))


def _read_sum(parts: list[Bucket]) -> str:
    return number_text(math.fsum(bucket.total for bucket in parts))


def _read_min(parts: list[Bucket]) -> str | None:
    found = [bucket.extreme for bucket in parts if bucket.extreme is not None]
    return number_text(min(found)) if found else None


def _read_max(parts: list[Bucket]) -> str | None:
    found = [bucket.extreme for bucket in parts if bucket.extreme is not None]
    return number_text(max(found)) if found else None


def _read_average(parts: list[Bucket]) -> str | None:
    weight = math.fsum(bucket.count for bucket in parts)
    if weight <= 0:
        return None
    return number_text(math.fsum(bucket.total for bucket in parts) / weight)


def _first(parts: list[Bucket]) -> Bucket | None:
    best = None
    for bucket in parts:  # seed first, then by day: a tie keeps the earlier
        if bucket.at_ms is not None and (best is None or bucket.at_ms < (best.at_ms or 0)):
            best = bucket
    return best


def _last(parts: list[Bucket]) -> Bucket | None:
    best = None
    for bucket in parts:
        if bucket.at_ms is not None and (best is None or bucket.at_ms >= (best.at_ms or 0)):
            best = bucket
    return best


def _read_first(parts: list[Bucket]) -> str | None:
    best = _first(parts)
    return best.text if best is not None else None


def _read_last(parts: list[Bucket]) -> str | None:
    best = _last(parts)
    return best.text if best is not None else None


def _read_first_timestamp(parts: list[Bucket]) -> str | None:
    best = _first(parts)
    return timestamp_text(best.at_ms) if best is not None and best.at_ms is not None else None


def _read_last_timestamp(parts: list[Bucket]) -> str | None:
    best = _last(parts)
    return timestamp_text(best.at_ms) if best is not None and best.at_ms is not None else None


def collected(parts: list[Bucket]) -> dict[str, float]:
    """The values kept (the first 100 by first arrival over the visible buckets) and their weights."""
    if len(parts) == 1 and len(parts[0].values or ()) <= MAX_DISTINCT_VALUES:  # one bucket: nothing to merge
        return {text: weight for text, (_, weight) in (parts[0].values or {}).items()}
    merged: dict[str, tuple[int, float]] = {}
    for bucket in parts:
        for text, (arrival, weight) in (bucket.values or {}).items():
            known = merged.get(text)
            merged[text] = (arrival, weight) if known is None else (min(known[0], arrival), known[1] + weight)
    if len(merged) > MAX_DISTINCT_VALUES:
        kept = sorted(merged, key=lambda text: merged[text][0])[:MAX_DISTINCT_VALUES]
        return {text: merged[text][1] for text in kept}
    return {text: weight for text, (_, weight) in merged.items()}


def unique_list_text(values: Iterable[str]) -> str:
    return ",".join(json.dumps(value, ensure_ascii=False) for value in sorted(values))


def _read_unique_list(parts: list[Bucket]) -> str | None:
    values = collected(parts)
    return unique_list_text(values) if values else None


def _read_unique_count(parts: list[Bucket]) -> str:
    return str(len(collected(parts)))


def _read_most_frequent(parts: list[Bucket]) -> str | None:
    values = collected(parts)
    if not values:
        return None
    most = max(values.values())
    return min(text for text, weight in values.items() if weight == most)  # ties to the alphabetically first


_READS: dict[str, Callable[[list[Bucket]], str | None]] = {
    "count": _read_count,
    "sum": _read_sum,
    "min": _read_min,
    "max": _read_max,
    "average": _read_average,
    "first_occurrence": _read_first,
    "first_occurrence_timestamp": _read_first_timestamp,
    "last_occurrence": _read_last,
    "last_occurrence_timestamp": _read_last_timestamp,
    "unique_list": _read_unique_list,
    "unique_values_count": _read_unique_count,
    "most_frequent": _read_most_frequent,
}


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(CAState)


def encode_state(state: CAState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(data: bytes) -> CAState:
    return _state_decoder.decode(data)
