"""What the session's platform exposes: on 127.0.0.1 (tests/conftest.py starts Ray with start_ray's default
host and Serve on 127.0.0.1), nothing listens on another interface; HAProxy cuts a client that does not finish
its request; the data directory holds nothing another account can read."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil

from cdp_actors.cli import HAPROXY_CLIENT_TIMEOUT_S
from cdp_actors.haproxy_wrapper import HTTP_REQUEST_TIMEOUT_ENV
from cdp_actors.partition import INTAKE_NAME
from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import wait_for
from tests.unit.test_data_at_rest import others_can_reach

# Known exception, one per Serve replica process: Serve's inter-deployment gRPC server, which Ray 2.58 binds to
# "[::]:0" with no setting to change it (ray/serve/_private/replica.py, `_on_initialized`). README: Network exposure.
REPLICA_PROCESS = "ray::ServeReplica"


@dataclass(frozen=True)
class Listener:
    process: str
    pid: int
    ip: str
    port: int


def listeners() -> list[Listener]:
    """Every listening TCP socket of this test process and its descendants: Ray's GCS, raylet, agents, workers
    and actors, Serve's HAProxy."""
    found = []
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            name = process.name()
            sockets = process.net_connections("tcp")
        except psutil.Error:
            continue  # exited meanwhile
        listening = [s.laddr for s in sockets if s.status == psutil.CONN_LISTEN]
        found += [Listener(name, process.pid, address.ip, address.port) for address in listening]
    return found


def on_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, Ray's gRPC servers on an IPv6 socket
    return (mapped or address).is_loopback


def test_nothing_listens_beyond_loopback_but_serves_inter_deployment_grpc(platform, receiver, serve_port) -> None:
    api = platform(demo_config(receiver.url))
    assert api.get("/cdp/status").status_code == 200
    found = listeners()
    processes = {listener.process for listener in found}
    assert {"gcs_server", "raylet", "haproxy"} <= processes, processes  # Ray's node processes are all in view
    assert any(listener.process == "haproxy" and listener.port == serve_port for listener in found)
    exposed = [listener for listener in found if not on_loopback(listener.ip)]
    per_replica = Counter(listener.pid for listener in exposed if listener.process.startswith(REPLICA_PROCESS))
    assert [listener for listener in exposed if not listener.process.startswith(REPLICA_PROCESS)] == []
    assert all(count == 1 for count in per_replica.values()), exposed


def test_haproxy_answers_408_to_a_client_that_does_not_finish_its_request_headers(
    platform, receiver, serve_port
) -> None:
    platform(demo_config(receiver.url))
    limit_s = int(os.environ[HTTP_REQUEST_TIMEOUT_ENV])
    assert limit_s < HAPROXY_CLIENT_TIMEOUT_S / 2  # the answer below comes from the request timeout, not the client one
    with socket.create_connection(("127.0.0.1", serve_port), timeout=HAPROXY_CLIENT_TIMEOUT_S / 2) as client:
        client.sendall(b"POST /v2/events HTTP/1.1\r\nHost: cdp\r\nContent-Type: application/json\r\n")  # no end
        started = time.monotonic()
        answer = client.recv(4096)  # blocks until HAProxy answers (or the socket times out: the test fails)
    waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert limit_s - 1 <= waited < HAPROXY_CLIENT_TIMEOUT_S / 2


def test_the_running_platforms_data_directory_is_owner_only(platform, platforms, receiver) -> None:
    api = platform(demo_config(receiver.url, telemetry={"exporter": "file"}))  # spans go to a file too
    assert api.post("/v2/events", batch("private", [custom("Signed Up", 1_700_000_000_000)])).status_code == 202
    wait_for(lambda: receiver.bodies(), what="the batch delivered")
    data_dir = Path(platforms.data_dir)
    wait_for(lambda: (data_dir / "spans.jsonl").exists(), what="the span file")
    written = {str(path.relative_to(data_dir)) for path in data_dir.rglob("*")}
    assert {
        f"{INTAKE_NAME}/data.mdb",
        "identity/data.mdb",
        "alerts/data.mdb",
        "shard-0/data.mdb",
        "placement.json",
        "spans.jsonl",
    } <= written, written
    assert others_can_reach(data_dir) == {}
