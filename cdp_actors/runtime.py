"""Start (or find) the runtime's named actors: intake log, dispatcher, profile shards, forwarders, alerts.

Actors are detached and created with `get_if_exists`, so whoever needs them first creates them: the
`cdp serve` driver, or a Serve replica when the apps are deployed with `serve run configs/serve.yaml`.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import ray

from cdp_actors.config import WorkspaceConfig
from cdp_actors.forwarding.alerts import AlertStore
from cdp_actors.forwarding.forwarder import Forwarder
from cdp_actors.identity.index import IdentityIndex
from cdp_actors.intake.dispatcher import Dispatcher
from cdp_actors.intake.log import IntakeLog
from cdp_actors.partition import (
    ALERTS_NAME,
    DISPATCHER_NAME,
    IDENTITY_NAME,
    INTAKE_NAME,
    NAMESPACE,
    forwarder_name,
    partition_of,
    shard_name,
)
from cdp_actors.profiles.shard import ProfileShard


def _named(actor_class: Any, name: str) -> Any:
    return actor_class.options(
        name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0
    )


def _ready(*handles: Any) -> None:
    ray.get([handle.__ray_ready__.remote() for handle in handles])


def ensure_runtime(config: WorkspaceConfig, data_dir: str | Path) -> None:
    """Create whichever runtime actors do not exist yet, in dependency order, and wait until all are up."""
    data_dir = str(Path(data_dir).resolve())
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    runtime, limits = config.runtime, config.limits
    alerts = _named(AlertStore, ALERTS_NAME).remote(data_dir)
    intake = _named(IntakeLog, INTAKE_NAME).remote(
        data_dir, INTAKE_NAME, limits.max_intake_lag_batches, limits.dedupe_retention_days
    )
    identity = _named(IdentityIndex, IDENTITY_NAME).remote(data_dir, config)
    shards = [_named(ProfileShard, shard_name(i)).remote(data_dir, i, config) for i in range(runtime.shards)]
    _ready(alerts, intake, identity, *shards)
    forwarders = [_named(Forwarder, forwarder_name(i)).remote(data_dir, i, config) for i in range(runtime.forwarders)]
    dispatcher = _named(Dispatcher, DISPATCHER_NAME).remote(
        data_dir, INTAKE_NAME, runtime.shards, runtime.max_chunk_batches, config
    )
    _ready(*forwarders, dispatcher)


def runtime_actor_names(config: WorkspaceConfig) -> list[str]:
    return [
        DISPATCHER_NAME,
        INTAKE_NAME,
        IDENTITY_NAME,
        *(forwarder_name(i) for i in range(config.runtime.forwarders)),
        *(shard_name(i) for i in range(config.runtime.shards)),
        ALERTS_NAME,
    ]


def stop_runtime(config: WorkspaceConfig, timeout_s: float = 30.0) -> None:
    """Kill the runtime's actors (they are detached, so nothing else would) and wait until their names are free."""
    names = runtime_actor_names(config)
    for name in names:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    deadline = time.monotonic() + timeout_s
    while any(_exists(name) for name in names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"runtime actors still registered after {timeout_s}s")
        time.sleep(0.05)


def _exists(name: str) -> bool:
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True


def actor(name: str) -> Any:
    return ray.get_actor(name, namespace=NAMESPACE)


def shard_for(mpid: int, shards: int) -> Any:
    """The ProfileShard actor that owns `mpid`."""
    return actor(shard_name(partition_of(mpid, shards)))
