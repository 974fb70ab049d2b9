"""The calculated-attribute engine's cost per batch, the shard's way. No Ray, no storage: `python -m
benchmarks.ca_engine`.

1. A batch of 10 custom events folded into the states of 20 CAs (a mix of every calculation type, half with
   `within` windows), when the events match the CAs and when they match none: microseconds per batch for
   `observe` alone, and for decode + observe + encode of each state that changed (what the shard does around it).
2. The shard's mix (`shard mix`): `benchmarks.audiences`' 20 CAs and the event counts of its 20 real-time
   audiences over `benchmarks.workload`'s batches (screen views, purchases, custom events; 2,000 users), each
   batch folded into the calculations `CalculationIndex` finds for it (each state decoded, and encoded when it
   changed), then the value of each state that changed read, as `DerivedState.on_batch` does: microseconds per
   batch for the engine's part of a shard's batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.audiences import derived_workspace
from benchmarks.workload import Workload
from cdp_actors.calculated.definition import CALCULATION_TYPES, Definition
from cdp_actors.calculated.engine import Calculation, CAState, Observed, decode_state, encode_state
from cdp_actors.config import load_workspace
from cdp_actors.profiles.derived import Derivations, batch_observed
from cdp_actors.schema.events import decode_valid_batch

T0 = 1_700_000_000_000
CAS = 20
EVENTS_PER_BATCH = 10
ROUNDS = 400
REPEATS = 7
"""The figure is the best of 7 runs of 400 batches: on a shared machine the minimum is the engine's own cost."""
WORKSPACE = Path(__file__).resolve().parent.parent / "configs" / "workspace.yaml"
MIX_USERS = 2_000
MIX_BATCHES = 2_000
MIX_REPEATS = 5
"""The shard mix: the best of 5 runs of 2,000 batches over 2,000 users, from empty states."""


def definitions() -> list[Definition]:
    found = []
    for n in range(CAS):
        kind = CALCULATION_TYPES[n % len(CALCULATION_TYPES)]
        point: dict[str, Any] = {"type": "event_attribute", "event_type": "custom_event", "event_name": f"E{n % 5}"}
        point["attribute_name"] = "amount" if kind in ("sum", "min", "max", "average") else "genre"
        fields: dict[str, Any] = {"data_point": point, "calculation_type": kind}
        if n % 2:
            fields["time_period"] = {"type": "within", "within": 7, "within_unit": "days"}
        if n % 3 == 0:
            fields["conditions"] = [
                {"type": "number", "operator": "greater_than", "attribute_name": "amount", "value": "1"}
            ]
        found.append(Definition.model_validate(fields))
    return found


def batch(n: int, matching: bool) -> Observed:
    events = [
        {
            "event_type": "custom_event",
            "data": {
                "event_name": f"E{(n + k) % 5}" if matching else "Other",
                "custom_event_type": "navigation",
                "timestamp_unixtime_ms": T0 + n * 60_000 + k,
                "custom_attributes": {"amount": str((n + k) % 17), "genre": f"g{(n * k) % 30}"},
            },
        }
        for k in range(EVENTS_PER_BATCH)
    ]
    return Observed(events, {}, T0 + n * 60_000 + EVENTS_PER_BATCH)


def measure(calculations: list[Calculation], states: list[CAState | None], matching: bool) -> tuple[float, float]:
    """(µs per batch for `observe` of every CA, the same with each state decoded first and encoded if changed)."""
    batches = [batch(1000 + n, matching) for n in range(ROUNDS)]
    observe_us = stored_us = float("inf")
    for _ in range(REPEATS):
        current = list(states)
        started = time.perf_counter()
        for observed in batches:
            for position, calculation in enumerate(calculations):
                current[position] = calculation.observe(current[position], observed)
        observe_us = min(observe_us, (time.perf_counter() - started) / ROUNDS * 1e6)
        stored = [encode_state(s) if s is not None else None for s in states]
        started = time.perf_counter()
        for observed in batches:
            for position, calculation in enumerate(calculations):
                data = stored[position]
                if data is None or not calculation.may_concern(observed):
                    continue  # the shard reads a state only for a CA the batch may concern
                state = decode_state(data)
                after = calculation.observe(state, observed)
                if after is not state and after is not None:
                    stored[position] = encode_state(after)
        stored_us = min(stored_us, (time.perf_counter() - started) / ROUNDS * 1e6)
    return observe_us, stored_us


def shard_mix() -> tuple[list[tuple[str, Observed]], Derivations]:
    """The workload's batches (user, what the CAs see) and the derivations of the audiences benchmark."""
    derivations = Derivations(derived_workspace(load_workspace(WORKSPACE), "http://127.0.0.1:9/m"))
    workload = Workload(MIX_USERS, seed=3)
    batches = []
    for _ in range(MIX_BATCHES):
        body = workload.batch(T0)
        batch = decode_valid_batch(msgspec.json.encode(body))
        batches.append((body["user_identities"]["customer_id"], batch_observed(batch, T0)))
    return batches, derivations


def measure_mix(batches: list[tuple[str, Observed]], derivations: Derivations) -> float:
    """µs per batch: decode the state of each concerned calculation, observe, read the value and encode the state
    of each that changed (states kept encoded between batches, as the shard keeps them)."""
    best = float("inf")
    calculations = derivations.calculations
    for _ in range(MIX_REPEATS):
        stored: dict[tuple[str, str], bytes] = {}
        started = time.perf_counter()
        for user, observed in batches:
            for key in derivations.index.concerned(observed):
                calculation = calculations[key]
                data = stored.get((user, key))
                before = decode_state(data) if data is not None else None
                after = calculation.observe(before, observed)
                if after is not before and after is not None:
                    stored[(user, key)] = encode_state(after)
                    calculation.value(after, observed.batch_ms)
        best = min(best, (time.perf_counter() - started) / len(batches) * 1e6)
    return best


def main() -> None:
    calculations = [Calculation(definition) for definition in definitions()]
    states: list[CAState | None] = [None] * CAS
    for n in range(200):  # some history first
        for position, calculation in enumerate(calculations):
            states[position] = calculation.observe(states[position], batch(n, True))
    for matching in (False, True):
        observe_us, stored_us = measure(calculations, states, matching)
        label = "matching" if matching else "no match"
        print(f"{label}: observe {observe_us:.1f} us/batch; with decode+encode {stored_us:.1f} us/batch")
    print(f"shard mix: decode + observe + encode + value {measure_mix(*shard_mix()):.1f} us/batch")


if __name__ == "__main__":
    main()
