"""kill -9 of one Ray actor's process: found through the actor itself, never by scanning process names
(other Ray instances may run on the same machine)."""

from __future__ import annotations

import os
import signal
from typing import Any

import psutil
import ray

from cdp_actors.partition import NAMESPACE
from tests.support import wait_for

SERVE_NAMESPACE = "serve"


def pid_of(handle: Any, timeout: float = 60.0) -> int:
    """The pid of the actor's current process (waits while it restarts)."""
    return ray.get(handle.__ray_call__.remote(lambda _self: os.getpid()), timeout=timeout)


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
        timeout=30,
        what=f"process {pid} gone",
    )


def kill_9_actor(name: str, namespace: str = NAMESPACE) -> int:
    """SIGKILL a named actor's process and wait until Ray has restarted it in a new one; returns the old pid."""
    handle = ray.get_actor(name, namespace=namespace)
    pid = pid_of(handle)
    sigkill(pid)

    def restarted() -> bool:
        try:
            return pid_of(handle, timeout=10) != pid
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):  # still restarting
            return False

    wait_for(restarted, timeout=120, interval=0.2, what=f"{name} restarted")
    return pid


def serve_replicas(app: str, deployment: str) -> list[str]:
    """Names of a Serve deployment's replica actors (Serve registers each replica as a named actor)."""
    return sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == SERVE_NAMESPACE and deployment in entry["name"] and app in entry["name"]
    )


def events_replicas() -> list[str]:
    return serve_replicas("events", "EventsApi")


def kill_9_events_replica(rng_choice: Any) -> tuple[str, int]:
    """SIGKILL one Events API replica (chosen by `rng_choice` from the sorted names); returns its name and pid."""
    name = rng_choice(events_replicas())
    pid = pid_of(ray.get_actor(name, namespace=SERVE_NAMESPACE))
    sigkill(pid)
    return name, pid
