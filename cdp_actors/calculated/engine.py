"""The per-(user, CA) state and its arithmetic: fold a batch in, age it by the clock, read the value.

SKELETON (the interface the shards, the backfill and the audience criteria rely on); the engine's author fills
in the bodies and this docstring (semantics per calculation type, the state's layout, the per-day buckets of
`within` windows).
"""

from __future__ import annotations

from typing import Any

import msgspec

from cdp_actors.calculated.definition import Definition
from cdp_actors.schema.events import CalculatedAttributeSeed


class Observed(msgspec.Struct, frozen=True):
    """What a CA sees of one batch."""

    events: list[dict[str, Any]]
    """The batch's events in their Events API JSON form (`{"event_type", "data": {...}}`), as the history keeps them."""
    user_attributes: dict[str, Any]
    """The user attributes the batch sets (for `user_attribute` data points)."""
    batch_ms: int
    """The batch's time: what events without `timestamp_unixtime_ms` are stamped with, and commerce timestamps."""


class CAState(msgspec.Struct, array_like=True):
    """Opaque to callers: encoded with `encode_state`, kept by the shard per (user, CA)."""


class Calculation:
    """One active definition, compiled once per configuration version."""

    def __init__(self, definition: Definition) -> None:
        self.definition = definition

    def observe(self, state: CAState | None, batch: Observed) -> CAState | None:
        """The state with the batch folded in; `state` None is the empty state. Returns None when the state was
        None and nothing in the batch concerns this CA (the shard then stores nothing)."""
        raise NotImplementedError

    def seeded(self, state: CAState | None, seed: CalculatedAttributeSeed) -> CAState:
        """The state with `seed` as what happened before the seed's cutoff (a later seed replaces an earlier one)."""
        raise NotImplementedError

    def value(self, state: CAState | None, now_ms: int) -> str | None:
        """The CA's value as of `now_ms`, as a string (all CA values are strings), None when it has none."""
        raise NotImplementedError

    def aged(self, state: CAState, now_ms: int) -> CAState | None:
        """The state without what fell out of the window by `now_ms` (None if nothing is left)."""
        raise NotImplementedError

    def next_change_ms(self, state: CAState) -> int | None:
        """The earliest time the value may change with no new data (a bucket leaving the window), None if never."""
        raise NotImplementedError


def encode_state(state: CAState) -> bytes:
    raise NotImplementedError


def decode_state(data: bytes) -> CAState:
    raise NotImplementedError
