"""Stable partitioning of users over actors, and the names actors are registered under."""

from __future__ import annotations

NAMESPACE = "cdp"
_GOLDEN = 0x9E3779B97F4A7C15


def partition_of(mpid: int, partitions: int) -> int:
    """Which of `partitions` owns `mpid`: a multiplicative hash, the same in every process and run."""
    mixed = ((mpid & 0xFFFFFFFFFFFFFFFF) * _GOLDEN) & 0xFFFFFFFFFFFFFFFF
    return (mixed >> 32) % partitions


def shard_name(index: int) -> str:
    return f"shard-{index}"


def forwarder_name(index: int) -> str:
    return f"forwarder-{index}"


INTAKE_NAME = "intake-0"
DISPATCHER_NAME = "dispatcher-0"
ALERTS_NAME = "alerts"
IDENTITY_NAME = "identity"
SESSIONS_NAME = "sessions"
CONTROL_NAME = "control"
DSR_NAME = "dsr"
