"""Handles of the runtime's named actors: the one place that looks them up by name.

Every actor is registered under a name from `partition` in the runtime's namespace (`runtime.py` creates them);
everyone else, actors and HTTP faces alike, finds them here. This module depends only on Ray and `partition`,
so an actor can look up another without importing the module that creates them all.
A lookup raises ValueError while the actor is not registered (not started yet, or stopped).
"""

from __future__ import annotations

import ray
from ray.actor import ActorHandle

from cdp_actors.partition import (
    ALERTS_NAME,
    CONTROL_NAME,
    DISPATCHER_NAME,
    DSR_NAME,
    IDENTITY_NAME,
    INTAKE_NAME,
    NAMESPACE,
    SESSIONS_NAME,
    forwarder_name,
    partition_of,
    shard_name,
)


def named(name: str) -> ActorHandle:
    return ray.get_actor(name, namespace=NAMESPACE)


def exists(name: str) -> bool:
    try:
        named(name)
    except ValueError:
        return False
    return True


def shard(index: int) -> ActorHandle:
    """The ProfileShard actor number `index`."""
    return named(shard_name(index))


def shard_for(mpid: int, shards: int) -> ActorHandle:
    """The ProfileShard actor that owns `mpid`, of `shards` shards."""
    return shard(partition_of(mpid, shards))


def shards(count: int) -> list[ActorHandle]:
    """The ProfileShard actors 0..count-1."""
    return [shard(i) for i in range(count)]


def forwarder(index: int) -> ActorHandle:
    return named(forwarder_name(index))


def forwarders(count: int) -> list[ActorHandle]:
    return [forwarder(i) for i in range(count)]


def intake() -> ActorHandle:
    return named(INTAKE_NAME)


def dispatcher() -> ActorHandle:
    return named(DISPATCHER_NAME)


def identity() -> ActorHandle:
    return named(IDENTITY_NAME)


def alerts() -> ActorHandle:
    return named(ALERTS_NAME)


def sessions() -> ActorHandle:
    """The console's login sessions (cdp_actors/access/session_store.py)."""
    return named(SESSIONS_NAME)


def control() -> ActorHandle:
    """The owner of the versioned workspace configuration and the audit log (cdp_actors/control/owner.py)."""
    return named(CONTROL_NAME)


def dsr() -> ActorHandle:
    """The owner of the data subject requests (cdp_actors/dsr/actor.py)."""
    return named(DSR_NAME)
