"""Stopping `cdp serve` by any of the usual routes ends every process it started, within seconds, and frees its
port: SIGTERM or SIGINT to `cdp serve` alone (`kill PID`, Ctrl-C in a terminal's foreground), or SIGTERM to its
whole process group (`kill -- -PGID`, `docker stop` of a container whose entry point it is, systemd's
KillMode=control-group); and after a SIGKILL of the process group, nothing it started stays (HAProxy, in a Ray
worker's process group, used to keep listening). Each variant starts its own `cdp serve` (~40-60 s on 2 cores)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT
from tests.integration.test_recovery import workspace_file
from tests.support import wait_for

STOPPED_WITHIN_S = 20  # seconds from the signal until every process has ended and the port is free
UNREACHABLE_SINK = "http://127.0.0.1:9/"  # nothing is sent: no batch is posted


def start_serve_logged(config_path: Path, data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    """`cdp serve` in a session of its own, once it has deployed every app (it prints `cdp: serving`: the status
    page answers before the last app is deployed)."""
    options = ["--config", str(config_path), "--data-dir", str(data_dir), "--port", str(port)]
    command = [sys.executable, "-m", "cdp_actors.cli", "serve", *options]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        return "cdp: serving" in log.read_text()

    wait_for(up, timeout=240, interval=0.5, what="cdp serve to come up")
    return process


def in_session(session: int) -> list[psutil.Process]:
    """Every running process of `session` (a process that ended and waits to be reaped does not count)."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return found


def port_free(port: int) -> bool:
    """Whether a server could listen on `port` now (with SO_REUSEADDR, as HAProxy and every server here do: the
    connections this test made linger in TIME_WAIT for 60 s)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            continue
    return running


HARD_STOP = "ending every process by signal"  # what `cdp serve` says when it skips the clean stop
# How to stop it; its exit status then; whether Serve and the actors stop cleanly first (None: it cannot tell).
SIGNALS: dict[str, tuple[Callable[[subprocess.Popen], None], int, bool | None]] = {
    "SIGTERM to cdp serve": (lambda process: process.send_signal(signal.SIGTERM), 0, True),
    "SIGINT to cdp serve": (lambda process: process.send_signal(signal.SIGINT), 0, True),
    "SIGTERM to its process group": (lambda process: os.killpg(process.pid, signal.SIGTERM), 0, False),
    "SIGKILL to its process group": (lambda process: os.killpg(process.pid, signal.SIGKILL), -signal.SIGKILL, None),
}


@pytest.mark.parametrize(("send", "status", "clean"), SIGNALS.values(), ids=SIGNALS.keys())
def test_a_stop_ends_every_process_and_frees_the_port(
    tmp_path: Path, send: Callable[[subprocess.Popen], None], status: int, clean: bool | None
) -> None:
    config_path, data_dir, port = workspace_file(tmp_path, UNREACHABLE_SINK)
    process = start_serve_logged(config_path, data_dir, port, tmp_path / "serve.log")
    started = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    haproxy = [p for p in started if p.name() == "haproxy"]
    assert haproxy and not port_free(port)  # what must end: HAProxy, in a Ray worker's process group, on the port
    try:
        sent_at = time.monotonic()
        send(process)

        def stopped() -> bool:
            return process.poll() is not None and not alive(started) and not in_session(process.pid)

        wait_for(lambda: stopped() and port_free(port), timeout=STOPPED_WITHIN_S, interval=0.2, what="a full stop")
        print(f"stopped in {time.monotonic() - sent_at:.1f} s")
        log = (tmp_path / "serve.log").read_text()
        assert process.returncode == status, log
        if clean is not None:
            assert "cdp: stopped" in log and (HARD_STOP not in log) == clean, log
    finally:
        for leftover in {p.pid: p for p in alive(started) + in_session(process.pid)}.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                print(f"left running: {leftover.pid} {leftover.name()}")
                leftover.kill()
