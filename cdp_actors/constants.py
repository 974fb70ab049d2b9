"""Internal knobs: the intervals, bounds and limits the actors work with, each with its unit and why it has
its value. What a workspace decides (retries, the breaker, windows, concurrency) is in the configuration
(`config.py`); the Events API's wire-format limits are its contract (`schema/events.py`), not knobs.

The few an operator may need to change read a `CDP_...` environment variable when this module is first
imported, in every process: set it where `cdp serve` runs (an embedded Ray's actors inherit it) and, on a
cluster, for `ray start` on each node. README's Configuration section lists them.
"""

from __future__ import annotations

import math
import os


def env_float(name: str, default: float) -> float:
    """The positive number in the environment variable `name`, or `default` when it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={raw!r}: must be a positive number")
    return value


def env_int(name: str, default: int) -> int:
    """The positive integer in the environment variable `name`, or `default` when it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: not an integer") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: must be a positive integer")
    return value


# --- Start-up (the `cdp serve` process) ---

# Seconds a start waits for a node that holds a shard's data to (re)join before it gives up: a rebooting
# machine is back within two minutes. Raise it for nodes that take longer.
NODE_WAIT_S = env_float("CDP_NODE_WAIT_S", 120.0)

# --- Background loops (`tasks.py`) ---

# Seconds before a loop that failed unexpectedly runs again: a restarting actor it talks to is back in ~1 s.
RESTART_DELAY_S = 0.5
# Longest pause between restarts of a loop that keeps failing, in seconds: one log line per pause, not a spin.
MAX_RESTART_DELAY_S = 30.0

# --- Intake and dispatch ---

# Seconds the dispatcher waits when the intake log has nothing new: adds at most 5 ms to a batch's way to its
# profile, for ~200 reads of the cursor per second when idle.
IDLE_POLL_S = 0.005
# Seconds between tries of a failing part of the log: a restarting actor is back in ~1 s.
RETRY_DELAY_S = 0.5
# Seconds a dead-letter alert waits for a restarting alert store; then it is logged only (the dead letter
# itself is stored already).
ALERT_TIMEOUT_S = 10.0
# Seconds between prunes of the intake log's `source_request_id` records past `limits.dedupe_retention_days`:
# retention is counted in days, so hourly keeps it within 1/24 of a day.
DEDUPE_PRUNE_INTERVAL_S = 3600.0

# --- Derived state in the profile shards (calculated attributes, real-time audiences) ---

# Seconds between a shard's ticks when it has nothing left to do: a `within` window is at most this late in
# dropping a value, and a new configuration's backfill starts at most this late.
DERIVED_TICK_S = 1.0
# Users one backfill / initial-sync step visits, in one transaction: ~50 ms of history folding, so a chunk
# waits at most that long behind it; steps follow each other at once while a job has users left.
BACKFILL_USERS_PER_STEP = 200
# Users one sweep step refreshes (a window passed), in one transaction: cheaper per user than a backfill.
SWEEP_USERS_PER_STEP = 1000

# --- Identity ---

# Seconds before a failed alias job (a shard restarting) is tried again.
ALIAS_RETRY_DELAY_S = 1.0

# --- Forwarding ---

# Seconds between a forwarder's flushes of acks (each frees room in a shard's window), alerts and report
# counts: a window refills ~20 times a second, and one ack call carries many rows' keys.
FLUSH_INTERVAL_S = env_float("CDP_FLUSH_INTERVAL_S", 0.05)
# Seconds before a (re)started forwarder asks a restarting shard again for its undelivered rows: a restarting
# actor is back in ~1 s.
RESEND_RETRY_S = 0.5
# Combined requests (groups of batches) out at once per coalescing output: 8 of up to 100 batches each is
# what two shards' windows of 500 rows keep ready (`runtime.forwarder_window`); more only queues at the partner.
COALESCED_IN_FLIGHT = 8
# Alerts a forwarder holds while the alert store does not take them (restarting); past it new alerts are
# counted (`cdp_alerts`) and logged but not stored. 100,000 alerts with typical messages measured 25 MB.
MAX_BUFFERED_ALERTS = env_int("CDP_MAX_BUFFERED_ALERTS", 100_000)
# Longest a forwarder's audience upload loop sleeps between looks at its queues, in seconds: new changes
# and due groups wake it before; this only bounds a missed wake-up.
BULK_MAX_SLEEP_S = 1.0
