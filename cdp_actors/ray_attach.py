"""Finding and joining a running platform's Ray from another process (`cdp deadletter`, `cdp export`, `cdp predict`
and the predictive-attributes Python API), and starting Ray on a loopback address. Below the command line, so the
commands and the Python API share it without importing each other."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
from collections.abc import Iterator
from pathlib import Path


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


@contextlib.contextmanager
def node_ip_on_loopback(enabled: bool) -> Iterator[None]:
    """While Ray starts, make it take 127.0.0.1 as this node's address, as it does on macOS and Windows.

    Ray 2.58 binds its GCS, raylet, object manager, worker, agent and metrics ports to every interface unless
    the node's address is a loopback one, and turns any loopback address given to `ray.init(_node_ip_address=)`
    into the machine's network address, unless `ray_constants.ENABLE_RAY_CLUSTER` (env
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, read once at import) is off. Set for the start only: Ray's own processes
    get the address as an argument, and the flag means nothing else on Linux."""
    if not enabled:
        yield
        return
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def platform_ray_address(args: argparse.Namespace) -> str:
    """--address, else the address the platform on --data-dir wrote (its dispatcher does at start), else auto."""
    from cdp_actors.intake.dispatcher import RAY_ADDRESS_FILE

    if args.address:
        return args.address
    noted = Path(args.data_dir) / RAY_ADDRESS_FILE
    return noted.read_text().strip() if noted.exists() else "auto"


def join_platform_ray(args: argparse.Namespace) -> None:
    """Join the Ray of the platform on --data-dir (or --address), unless this process already is in one."""
    import ray

    from cdp_actors.partition import NAMESPACE

    if not ray.is_initialized():
        address = platform_ray_address(args)
        with node_ip_on_loopback(is_loopback(address.rpartition(":")[0])):  # else Ray looks on the LAN address
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
