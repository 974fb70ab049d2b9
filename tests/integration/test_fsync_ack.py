"""A 202 leaves the IntakeLog actor only after the batch's write is synced: its system calls, under strace.

`kill -9` keeps the page cache, so the kill tests pass with syncing turned off; this test does not. strace
attaches to the running actor's process (every thread), the test sends batches one at a time over HTTP, and
for each 202 it finds the actor's first answer on its Ray RPC server after the batch's data write (a send on a
connection accepted on the actor's listening port: the reply to the Events API replica) and checks that every
write to the intake's data file before that answer was synced when it began. tests/unit/test_intake_fsync.py
does the same for IntakeLogCore alone.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
import ray

from cdp_actors import handles
from cdp_actors.partition import INTAKE_NAME
from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.strace import (
    SENDS,
    WRITES,
    Call,
    all_threads,
    dsync_descriptors_of,
    first_after,
    local_port,
    parse,
    strace_command,
    traced_threads,
    unsynced_writes,
)
from tests.support import wait_for

REQUESTS = 6


def pid_of(handle: object) -> int:
    return ray.get(handle.__ray_call__.remote(lambda _self: os.getpid()), timeout=30)


def listening_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def test_each_202_is_sent_after_the_intake_synced_the_batch(platform, platforms, receiver, tmp_path: Path) -> None:
    api = platform(demo_config(receiver.url))
    assert api.post("/v2/events", batch("warm-up")).status_code == 202  # connections to the actor exist already
    pid = pid_of(handles.intake())
    data_file = os.path.realpath(Path(platforms.data_dir) / INTAKE_NAME / "data.mdb")
    dsync_fds = dsync_descriptors_of(pid, data_file)
    assert dsync_fds, "LMDB writes its meta page through a descriptor opened with O_DSYNC (metasync)"
    server_ports = listening_ports(pid)
    trace = tmp_path / "intake.trace"
    with open(tmp_path / "strace.err", "w") as errors:
        strace = subprocess.Popen(strace_command(trace, attach_to=pid), stderr=errors)
    windows = []
    try:
        wait_for(lambda: traced_threads(pid) >= all_threads(pid), timeout=30, what="strace attached to every thread")
        for n in range(REQUESTS):
            sent = time.time()
            status = api.post("/v2/events", batch(f"durable-{n}", [custom("Saved", 1_700_000_000_000 + n)]))
            windows.append((sent, time.time()))
            assert status.status_code == 202, status.text
    finally:
        strace.terminate()
        strace.wait(timeout=30)
    calls = parse(trace.read_text())

    def is_reply(call: Call) -> bool:
        return call.name in SENDS and local_port(call.target) in server_ports

    for sent, answered in windows:
        first_write = next((c for c in calls if c.name in WRITES and c.target == data_file and c.start >= sent), None)
        assert first_write is not None and first_write.start <= answered, f"no intake write in {sent}-{answered}"
        reply = first_after(calls, first_write.start, is_reply)
        assert reply is not None and reply.start <= answered, "no reply from the actor before the 202 arrived"
        assert unsynced_writes(calls, data_file, dsync_fds, sent, reply) == []
