"""Every process `cdp serve` starts ends with it, however it is stopped.

Ray 2.58 starts its GCS, raylet and agents in the driver's process group, but each worker (every actor, Serve's
controller and HAProxy manager) in a process group of its own, and Serve's HAProxy is a child of its manager's
worker. A signal to the driver's process group (`kill -- -PGID`, `docker stop`, a terminal's Ctrl-C) therefore
killed the raylet at once, the workers then exited one by one, and HAProxy, its parent gone, was re-parented to
init and kept listening on the platform's port.

Two mechanisms close that: the driver is a child subreaper, so an orphan of any process it started stays among
its descendants, where a stop finds and ends it; and HAProxy gets a parent-death signal, so it dies with its
manager's worker even when no driver is left to end it (its process group SIGKILLed). In that last case HAProxy
also ended without the signal when measured (within 3 s), but after the group SIGTERM its worker had exited
without ending it, so nothing relies on the worker doing so.

Imports nothing but the standard library at module level: HAProxy's wrapper imports it at every HAProxy start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when the thread that forked it ends
PR_SET_CHILD_SUBREAPER = 36  # prctl(2): orphans among this process's descendants are re-parented to it
STOP_GRACE_S = 3.0  # seconds an orphan left after a clean stop has between SIGTERM and SIGKILL
KILLED_WAIT_S = 5.0  # seconds to wait for SIGKILLed processes to be gone (the kernel takes milliseconds)


def _prctl(option: int, value: int) -> bool:
    """prctl(2) on Linux; False elsewhere or when the call fails."""
    if not sys.platform.startswith("linux"):
        return False
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl(option, value, 0, 0, 0) == 0


def adopt_orphans() -> bool:
    """Make this process the child subreaper of everything it starts: a descendant whose parent dies (HAProxy,
    when its Ray worker exits first) is re-parented here instead of to init, so `descendants` still finds it."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when its parent ends; kept across exec. If the parent ended
    before the request took effect (this process is already re-parented), exit now."""
    _prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:
        raise SystemExit(1)


def descendants() -> list[psutil.Process]:
    import psutil

    return psutil.Process().children(recursive=True)


def end_processes(processes: list[psutil.Process], grace_s: float) -> list[psutil.Process]:
    """SIGTERM each process and SIGKILL those still running `grace_s` later (all at once if `grace_s` is 0), then
    reap them; returns the SIGKILLed."""
    import psutil

    if grace_s > 0:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.terminate()
        _, processes = psutil.wait_procs(processes, timeout=grace_s)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=KILLED_WAIT_S)
    return processes


def reap_adopted(own: set[int]) -> None:
    """Collect the exit status of adopted orphans that ended (children not in `own`, the ones this process started
    itself and waits for): a subreaper must, or each stays a zombie."""
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess, ChildProcessError):
            if child.pid not in own and child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)


def children() -> set[int]:
    """The pids of this process's children now."""
    import psutil

    return {child.pid for child in psutil.Process().children()}


def all_running(pids: set[int]) -> bool:
    """Whether every process in `pids` is still running (not ended, not a zombie waiting to be reaped)."""
    import psutil

    try:
        return all(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    except psutil.NoSuchProcess:
        return False
