"""Start (or find) the runtime's named actors: intake log, dispatcher, profile shards, forwarders, alerts.

Actors are detached and created with `get_if_exists`, so whoever needs them first creates them: the
`cdp serve` driver, or a Serve replica when the apps are deployed with `serve run configs/serve.yaml`.

On a cluster, the actors that own LMDB files are pinned to a machine (`cdp_actors/placement.py` says how
and why): the intake log, dispatcher, identity index and alert store to the head node, which holds the data
directory; each profile shard to the node recorded for it in the head's `placement.json`. Forwarders keep
no local state and go wherever Ray puts them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

import ray

from cdp_actors import handles
from cdp_actors.access.passwords import Password
from cdp_actors.access.session_store import SessionStore
from cdp_actors.access.setup import load_access_key, prepare_users
from cdp_actors.config import WorkspaceConfig
from cdp_actors.constants import NODE_WAIT_S
from cdp_actors.control.owner import ControlCore
from cdp_actors.dsr.actor import DsrActor
from cdp_actors.forwarding.alerts import AlertStore
from cdp_actors.forwarding.forwarder import Forwarder
from cdp_actors.identity.index import IdentityIndex
from cdp_actors.intake.dispatcher import Dispatcher
from cdp_actors.intake.log import IntakeLog
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
    shard_name,
)
from cdp_actors.placement import (
    HEAD,
    HEAD_RESOURCE,
    PIN_AMOUNT,
    PLACEMENT_FILE,
    NodeInfo,
    NodeKey,
    assign_shards,
    decode_record,
    describe,
    encode_record,
    missing_nodes,
    pin_options,
    shard_order,
)
from cdp_actors.profiles.shard import ProfileShard
from cdp_actors.secrets import ensure_key_file, key_file_to_use, load_keyring
from cdp_actors.storage.lmdb_env import make_private_dir, open_private

_log = logging.getLogger(__name__)


def _named(actor_class: Any, name: str, pin: NodeKey | None = None) -> Any:
    return actor_class.options(
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        # Ray records every actor call for its dashboard by default; at thousands of calls a second that
        # buffer is what grew (GCS memory), and the runtime's calls are traced by our own spans instead.
        enable_task_events=False,
        **(pin_options(pin) if pin else {}),
    )


def _ready(*handles: Any) -> None:
    ray.get([handle.__ray_ready__.remote() for handle in handles])


def ensure_runtime(
    config: WorkspaceConfig,
    data_dir: str | Path,
    announce_passwords: bool = False,
    secrets_key_file: str | Path | None = None,
) -> WorkspaceConfig:
    """Create whichever runtime actors do not exist yet, in dependency order, wait until all are up, and return the
    configuration they run (the store's: `config` only seeds an empty one). The process that starts the platform
    from a terminal (`cdp serve`) sets `announce_passwords`: a console user without a password then gets one,
    printed once, and so is the path of a secrets key made at this start; a Serve replica, whose output is a log
    file, never prints either."""
    data_dir = str(Path(data_dir).resolve())
    make_private_dir(data_dir)
    key_file = prepare_secrets_key(secrets_key_file, data_dir, announce_passwords)
    control = _named(ControlActor, CONTROL_NAME, HEAD).remote(data_dir, None if key_file is None else str(key_file))
    ray.get(control.seed.remote(config))  # the file seeds an empty store; a seeded store is the configuration
    _, config = ray.get(control.current.remote())
    runtime, limits = config.runtime, config.limits
    placement = shard_placement(data_dir, runtime.shards)
    alerts = _named(AlertStore, ALERTS_NAME, HEAD).remote(data_dir)
    intake = _named(IntakeLog, INTAKE_NAME, HEAD).remote(
        data_dir, INTAKE_NAME, limits.max_intake_lag_batches, limits.dedupe_retention_days
    )
    identity = _named(IdentityIndex, IDENTITY_NAME, HEAD).remote(data_dir, config)
    shards = [
        _named(ProfileShard, shard_name(i), placement.get(i)).remote(data_dir, i, config) for i in range(runtime.shards)
    ]
    load_access_key(os.environ, data_dir)  # created here, once, before replicas race for it
    prepare_users(config.users, data_dir, announce_password if announce_passwords else None)
    sessions = _named(SessionsActor, SESSIONS_NAME, HEAD).remote(data_dir)
    _ready(alerts, intake, identity, sessions, *shards)
    forwarders = [_named(Forwarder, forwarder_name(i)).remote(data_dir, i, config) for i in range(runtime.forwarders)]
    dispatcher = _named(Dispatcher, DISPATCHER_NAME, HEAD).remote(  # it reads the intake log's LMDB
        data_dir, INTAKE_NAME, runtime.shards, runtime.max_chunk_batches, config
    )
    dsr = _named(DsrActor, DSR_NAME, HEAD).remote(data_dir, config)
    _ready(*forwarders, dispatcher, dsr)
    return config


def prepare_secrets_key(given: str | Path | None, data_dir: str, announce: bool) -> Path | None:
    """The key file the control actor loads (None: `CDP_SECRETS_KEY` holds the keys), made at the first start when
    neither is given (`~/.config/cdp/secrets.key`), and checked here so that a bad key stops the start with its
    message rather than in the actor."""
    key_file = key_file_to_use(os.environ, given)
    if key_file is not None and given is None and ensure_key_file(key_file):
        message = (
            f"cdp: made the secrets key {key_file} (it encrypts the stored credentials; keep it, and back it up "
            "apart from the data directory)"
        )
        if announce:
            print(message, flush=True)
        else:
            _log.warning(message)
    load_keyring(os.environ, key_file, data_dir)
    return key_file


ControlActor = ray.remote(max_restarts=-1, max_task_retries=-1)(ControlCore)
"""Restarted if it dies (its state is in LMDB). A retried `apply` may apply a change twice: the Platform API sends
changes with the version they were made against, so a repeat is refused as a Conflict."""

SessionsActor = ray.remote(max_restarts=-1, max_task_retries=0)(SessionStore)
"""Restarted if it dies (everybody logs in again); a call is never retried: a login must not start two sessions."""


def announce_password(user: str, password: Password) -> None:
    """A generated first password, shown once on the terminal that started the platform (never in a log)."""
    print(
        f"cdp: console user {user!r} has the generated password {password.reveal()} (shown once; only its hash is "
        "kept; set CDP_ADMIN_PASSWORD to choose one)",
        flush=True,
    )


def shard_placement(data_dir: str, shards: int) -> dict[int, NodeKey]:
    """The node each shard is pinned to, settled in the head's `placement.json` (empty when every shard
    actor exists already: their options were fixed when they were created). Waits up to NODE_WAIT_S for
    nodes that hold a shard's data and have not joined yet."""
    if all(handles.exists(shard_name(i)) for i in range(shards)):
        return {}
    order = shard_order(alive_nodes())
    if _on_head():
        placement = settle_placement(data_dir, shards, order)
    else:
        on_head = ray.remote(settle_placement).options(num_cpus=0, resources={HEAD_RESOURCE: PIN_AMOUNT})
        placement = ray.get(on_head.remote(data_dir, shards, order))
    deadline = time.monotonic() + NODE_WAIT_S
    while missing := missing_nodes(placement, shard_order(alive_nodes())):
        if time.monotonic() > deadline:
            absent = "; ".join(f"shard {shard}: {describe(key)}" for shard, key in sorted(missing.items()))
            raise RuntimeError(
                f"profile shards wait for the nodes holding their data, not in the cluster after "
                f"{NODE_WAIT_S:.0f}s: {absent} (recorded in {PLACEMENT_FILE} in the head's data directory)"
            )
        time.sleep(0.5)
    return placement


def settle_placement(data_dir: str, shards: int, order: list[NodeKey]) -> dict[int, NodeKey]:
    """Read the recorded assignment, place shards not in it yet, record them (synced) and return the
    assignment for shards 0..shards-1. Runs on the head; a file lock serialises concurrent starts, so every
    caller sees the first decision."""
    directory = make_private_dir(data_dir)
    path = directory / PLACEMENT_FILE
    with open(open_private(directory / f"{PLACEMENT_FILE}.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        recorded = decode_record(path.read_text()) if path.exists() else {}
        assignment = assign_shards(shards, order, recorded)
        if not assignment.keys() <= recorded.keys():
            temporary = path.with_suffix(".tmp")
            with open(open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as out:
                out.write(encode_record({**recorded, **assignment}))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
            directory_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(directory_fd)
            finally:
                os.close(directory_fd)
    return assignment


def alive_nodes() -> list[NodeInfo]:
    return [NodeInfo.from_ray(entry) for entry in ray.nodes() if entry["Alive"]]


def _on_head() -> bool:
    here = ray.get_runtime_context().get_node_id()
    return any(node.is_head and node.node_id == here for node in alive_nodes())


def runtime_actor_names(config: WorkspaceConfig) -> list[str]:
    return [
        DISPATCHER_NAME,
        INTAKE_NAME,
        IDENTITY_NAME,
        *(forwarder_name(i) for i in range(config.runtime.forwarders)),
        *(shard_name(i) for i in range(config.runtime.shards)),
        ALERTS_NAME,
        SESSIONS_NAME,
        DSR_NAME,
        CONTROL_NAME,
    ]


def stop_runtime(config: WorkspaceConfig, timeout_s: float = 30.0) -> None:
    """Kill the runtime's actors (they are detached, so nothing else would) and wait until their names are free."""
    names = runtime_actor_names(config)
    for name in names:
        with contextlib.suppress(ValueError):
            ray.kill(handles.named(name), no_restart=True)
    deadline = time.monotonic() + timeout_s
    while any(handles.exists(name) for name in names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"runtime actors still registered after {timeout_s}s")
        time.sleep(0.05)
