"""What erasing one profile costs on a store of many: the removal and the compaction of each store, without Ray.

`python -m benchmarks.dsr_erasure --profiles 100000` fills a profile shard (each profile a few batches of events,
its history, activity and derived state), the identity index and the intake log as the runtime would, then
erases one profile from each and times the removal and the compaction apart. The shard and the identity index
run every call in turn, so their figures are how long that store's other work (applying chunks, IDSync calls)
waits; the intake's is how long appends wait (the Events API still answers, a little later).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cdp_actors.config import parse_workspace
from cdp_actors.identity import strategy
from cdp_actors.identity.index import IdentityCore, erase_profiles
from cdp_actors.intake.log import IntakeLogCore, _Pending
from cdp_actors.profiles.shard import ShardCore
from cdp_actors.schema.records import ShardRecord

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_760_000_000_000
BATCHES_EACH = 3  # per profile
EVENTS_EACH = 4  # per batch
CHUNK = 1000  # batches per shard transaction, about the dispatcher's


def user_batch(n: int, b: int) -> bytes:
    events = [
        {"event_type": "custom_event", "data": {"event_name": "viewed", "custom_event_type": "navigation",
         "timestamp_unixtime_ms": T0 + b * 10 + e, "custom_attributes": {"item": f"item-{n}-{e}"}}}
        for e in range(EVENTS_EACH)
    ]  # fmt: skip
    identities = {"customer_id": f"cust-{n}", "email": f"user-{n}@example.com"}
    return json.dumps({"environment": "production", "user_identities": identities, "events": events}).encode()


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def shard_figures(directory: Path, profiles: int) -> dict[str, float]:
    config = parse_workspace(yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text()))
    core = ShardCore(directory, 0, config)
    seq = 0
    for b in range(BATCHES_EACH):
        for start in range(0, profiles, CHUNK):
            records = []
            for n in range(start, min(start + CHUNK, profiles)):
                seq += 1
                records.append(ShardRecord(seq, seq, n + 1, 1, T0 + b, user_batch(n, b)))
            core.apply(records, None)
    with core.store.write() as txn:  # the outbox as if partners had acknowledged everything
        txn.drop(core.store.db("outbox"), delete=False)
    before = size_mb(directory)
    compact = core.store.compact
    removal = timed(lambda: setattr(core.store, "compact", lambda: None) or core.erase([profiles // 2], T0 + 99))
    core.store.compact = compact  # type: ignore[method-assign]
    compaction = timed(core.store.compact)
    return {"shard_mb": before, "shard_removal_s": removal, "shard_compaction_s": compaction,
            "shard_mb_after": size_mb(directory)}  # fmt: skip


def identity_figures(directory: Path, profiles: int) -> dict[str, float]:
    core = IdentityCore(directory, strategy.Policy())
    policy = core.policy
    for start in range(0, profiles, CHUNK):
        core.run([
            lambda s, n=n: strategy.identify(s, policy, {"customer_id": f"cust-{n}", "email": f"user-{n}@example.com"},
                                             T0, new_mpid=n + 1)
            for n in range(start, min(start + CHUNK, profiles))
        ])  # fmt: skip
    before = size_mb(directory)
    removal = timed(lambda: core.run([lambda s: erase_profiles(s, [profiles // 2 + 1])]))
    compaction = timed(core.store.compact)
    return {"identity_mb": before, "identity_removal_s": removal, "identity_compaction_s": compaction}


def intake_figures(directory: Path, kept: int) -> dict[str, float]:
    log = IntakeLogCore(directory, max_lag=10**9)
    loop = asyncio.new_event_loop()
    for start in range(0, kept, CHUNK):
        batches: list[tuple[str | None, bytes]] = [
            (None, user_batch(n, 0)) for n in range(start, min(start + CHUNK, kept))
        ]
        log.write([_Pending(1, T0, batches, loop.create_future())])
    erase = timed(lambda: log.erase({"email": [f"user-{kept // 2}@example.com"]}, []))
    return {"intake_kept_batches": kept, "intake_mb": size_mb(directory), "intake_erase_s": erase}


def main() -> None:
    parser = argparse.ArgumentParser(description="What erasing one profile costs on a store of many.")
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--kept", type=int, default=10_000, help="batches the intake log keeps (not dispatched)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        figures: dict[str, float] = {"profiles": args.profiles}
        figures |= shard_figures(Path(scratch) / "shard", args.profiles)
        figures |= identity_figures(Path(scratch) / "identity", args.profiles)
        figures |= intake_figures(Path(scratch) / "intake", args.kept)
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}, indent=1))


if __name__ == "__main__":
    main()
