"""The embedded Ray's ingress settings, and the clean-up of a HAProxy a crashed run left on our port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from cdp_actors.cli import haproxy_wrapper, ingress_env, is_loopback, node_ip_on_loopback, stop_orphaned_ingress
from cdp_actors.haproxy_wrapper import (
    HTTP_REQUEST_TIMEOUT_ENV,
    REWRITTEN_SUFFIX,
    UnexpectedConfig,
    harden_config,
    real_haproxy_binary,
)
from tests.support import free_port, wait_for

HAPROXY_PORTS = (
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)


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
    assert proxy == {
        "RAY_SERVE_ENABLE_HA_PROXY": "0",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0",
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_apps.errors.ingress_middlewares",
    }
    # Serve's own errors are rewritten into the API's shape in either ingress
    assert first["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == proxy["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]
    assert not proxy_defaults


def test_the_haproxy_state_directory_is_removed_when_the_process_exits() -> None:
    show_state = (
        "from cdp_actors.cli import ingress_env; "
        "print(ingress_env('haproxy')[0]['RAY_SERVE_HAPROXY_SERVER_STATE_BASE'])"
    )
    state = Path(
        subprocess.run(
            [sys.executable, "-c", show_state],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        ).stdout.strip()
    )
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
    process = subprocess.Popen(
        [real_haproxy_binary(), "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

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


def serve_haproxy_config(directory: Path, host: str, port: int, stats_port: int, metrics_port: int) -> Path:
    """The config Ray 2.58's Serve writes for HAProxy with no applications yet, by Serve's own code."""
    from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig
    from ray.serve.config import HTTPOptions

    config = HAProxyConfig(
        http_options=HTTPOptions(host=host, port=port),
        stats_port=stats_port,
        metrics_port=metrics_port,
        socket_path=str(directory / "admin.sock"),
        server_state_base=str(directory),
        server_state_file=str(directory / "state"),
        metrics_socket_path=str(directory / "metrics.sock"),
    )
    path = directory / "haproxy.cfg"
    HAProxyApi(config, config_file_path=str(path))._generate_config_file_internal()
    return path


def binds(config: str) -> list[str]:
    return re.findall(r"^\s+bind (\S+)", config, re.MULTILINE)


def defaults_section(config: str) -> str:
    return re.search(r"^defaults\n((?:[ \t]+.*\n|\n)*)", config, re.MULTILINE)[1]


def test_the_wrapper_binds_haproxy_stats_and_metrics_where_http_is_served_and_bounds_slow_requests(
    tmp_path: Path,
) -> None:
    port, stats, metrics = free_port(), free_port(), free_port()
    config = serve_haproxy_config(tmp_path, "127.0.0.1", port, stats, metrics)
    original = config.read_text()
    assert set(binds(original)) == {f"127.0.0.1:{port}", f"*:{stats}", f":{metrics}"}  # Ray's template as it is
    assert "timeout http-request" not in original
    wrapper = haproxy_wrapper(str(tmp_path))
    checked = subprocess.run(
        [wrapper, "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, HTTP_REQUEST_TIMEOUT_ENV: "7"},
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr  # the real HAProxy accepted the rewritten config
    hardened = Path(f"{config}{REWRITTEN_SUFFIX}").read_text()
    assert sorted(binds(hardened)) == sorted(f"127.0.0.1:{p}" for p in (port, stats, metrics))
    assert "timeout http-request 7s" in defaults_section(hardened)
    assert config.read_text() == original  # Serve's own file is left as Serve wrote it


def test_the_wrapper_leaves_an_all_interfaces_ingress_alone_and_refuses_a_config_it_does_not_know(
    tmp_path: Path,
) -> None:
    everywhere = serve_haproxy_config(tmp_path, "0.0.0.0", 8000, 8404, 9101).read_text()
    assert binds(harden_config(everywhere, 10)) == binds(everywhere)
    with pytest.raises(UnexpectedConfig):
        harden_config("defaults\n    mode http\nfrontend web\n    bind *:80\n", 10)


def test_haproxy_client_timeouts_are_bounded_by_default() -> None:
    _, defaults = ingress_env("haproxy")
    assert int(defaults["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"]) <= 60  # Ray's own default: 3600
    assert int(defaults[HTTP_REQUEST_TIMEOUT_ENV]) <= 10  # Ray's: none


def test_an_embedded_ray_for_a_loopback_host_is_told_its_address_is_loopback_only_while_it_starts() -> None:
    from ray._private import ray_constants

    assert [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "10.1.2.3", "example.com")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    before = ray_constants.ENABLE_RAY_CLUSTER
    with node_ip_on_loopback(True):
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert ray_constants.ENABLE_RAY_CLUSTER is before


def test_a_process_that_started_an_embedded_ray_still_finds_the_real_haproxy(tmp_path: Path, monkeypatch) -> None:
    """start_ray points RAY_SERVE_HAPROXY_BINARY_PATH at a wrapper for its own process and children (the tests'
    `cdp serve`); a wrapper made there must wrap HAProxy itself, not the parent's wrapper."""
    (tmp_path / "parent").mkdir()
    (tmp_path / "child").mkdir()
    parent_wrapper = haproxy_wrapper(str(tmp_path / "parent"))
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", parent_wrapper)
    real = real_haproxy_binary()
    assert real != parent_wrapper and Path(real).name == "haproxy"
    assert subprocess.run([real, "-v"], capture_output=True, text=True, check=True).stdout.startswith("HAProxy")
    child_wrapper = Path(haproxy_wrapper(str(tmp_path / "child"))).read_text()
    assert repr(real) in child_wrapper and parent_wrapper not in child_wrapper
    assert os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] == parent_wrapper  # the lookup leaves the setting as it was
