"""Run or attach `strace` and read its output: did a process make its writes durable before it answered?

`kill -9` keeps the page cache, so a durability test that kills processes passes with syncing turned off.
These helpers check the order of system calls instead: every write to the data file made for an answer is
synced (an `fdatasync`/`fsync` of that file starting after the write ended, or the write went through a
descriptor opened with O_DSYNC/O_SYNC, as LMDB's meta page does) before the answer is written.

Timestamps are strace's (`-ttt -T`): the call was executing inside [start, end], since the traced thread
stops at entry and exit until strace has recorded them; so `a.end <= b.start` means a finished before b began.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STRACE = shutil.which("strace") or "/usr/bin/strace"
WRITES = frozenset({"write", "writev", "pwrite64", "pwritev", "pwritev2"})
SYNCS = frozenset({"fdatasync", "fsync"})
SENDS = frozenset({"sendmsg", "sendto", "sendmmsg", "write", "writev"})
TRACED = sorted(WRITES | SYNCS | SENDS | {"openat", "msync", "sync_file_range"})
O_DSYNC = 0o10000  # Linux x86-64; O_SYNC includes this bit

_LINE = re.compile(r"^(\d+) +(\d+\.\d+) (?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")
_FD = re.compile(r"^(\d+)<(.*?)>(?=,|\)| )")
_DURATION = re.compile(r"<(\d+\.\d+)>$")
_OPENED = re.compile(r'"([^"]*)", ([A-Z_|]+).*\) = (\d+)<')


@dataclass(frozen=True)
class Call:
    pid: int
    name: str
    start: float
    end: float
    fd: int | None
    target: str  # what strace -y says the descriptor is: a path, `TCP:[a:p->b:q]`, `pipe:[n]`
    text: str  # the arguments and result, as strace printed them


def strace_command(output: Path, *, attach_to: int | None = None) -> list[str]:
    where = ["-p", str(attach_to)] if attach_to else []
    return [STRACE, "-f", "-ttt", "-T", "-yy", "-s", "16", "-e", f"trace={','.join(TRACED)}", "-o", str(output), *where]


def parse(trace: str) -> list[Call]:
    """Completed calls (an `<unfinished ...>` line joined with its `resumed` line), in start order."""
    calls, pending = [], {}
    for line in trace.splitlines():
        match = _LINE.match(line)
        if not match:
            continue  # signals, exits
        pid, at, resumed, name, rest = int(match[1]), float(match[2]), match[3], match[4], match[5]
        if resumed:
            started = pending.pop((pid, resumed), None)
            if started is not None:
                calls.append(_call(pid, resumed, started[0], started[1], rest))
        elif rest.endswith("<unfinished ...>"):
            pending[(pid, name)] = (at, rest)
        else:
            calls.append(_call(pid, name, at, rest, rest))
    return sorted(calls, key=lambda c: c.start)


def _call(pid: int, name: str, start: float, first: str, last: str) -> Call:
    duration = _DURATION.search(last.rstrip())
    fd = _FD.match(first)
    text = first if first is last else f"{first} ... {last}"
    return Call(
        pid,
        name,
        start,
        start + (float(duration[1]) if duration else 0.0),
        int(fd[1]) if fd else None,
        fd[2] if fd else "",
        text,
    )


def dsync_descriptors_opened(calls: list[Call], path: str) -> set[int]:
    """Descriptors of `path` that an `openat` in the trace opened with O_DSYNC or O_SYNC."""
    found = set()
    for call in calls:
        opened = _OPENED.search(call.text) if call.name == "openat" else None
        if opened and opened[1] == path and ("O_DSYNC" in opened[2] or "O_SYNC" in opened[2]):
            found.add(int(opened[3]))
    return found


def dsync_descriptors_of(pid: int, path: str) -> set[int]:
    """Descriptors of `path` that process `pid` holds open with O_DSYNC (or O_SYNC), from /proc."""
    found = set()
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(entry) != path:
                continue
            flags = next(
                line
                for line in Path(f"/proc/{pid}/fdinfo/{entry.name}").read_text().splitlines()
                if line.startswith("flags:")
            )
        except OSError:
            continue
        if int(flags.split()[1], 8) & O_DSYNC:
            found.add(int(entry.name))
    return found


def unsynced_writes(calls: list[Call], path: str, dsync_fds: set[int], since: float, answer: Call) -> list[str]:
    """Why the writes to `path` starting in [since, answer.start] were not all durable when `answer` began
    (empty: they were). No write at all is a reason too: the answer then promised nothing was written."""
    writes = [c for c in calls if c.name in WRITES and c.target == path and since <= c.start <= answer.start]
    if not writes:
        return [f"no write to {path} before the answer at {answer.start:.6f}"]
    syncs = [c for c in calls if c.name in SYNCS and c.target == path and c.end <= answer.start]
    problems = []
    for write in writes:
        if write.end > answer.start:
            problems.append(f"{write.name} at {write.start:.6f} still running when the answer began")
        elif write.fd not in dsync_fds and not any(sync.start >= write.end for sync in syncs):
            problems.append(
                f"{write.name} at {write.start:.6f} (fd {write.fd}) not synced before the answer at {answer.start:.6f}"
            )
    return problems


def first_after(calls: list[Call], at: float, is_answer: Callable[[Call], bool]) -> Call | None:
    return next((c for c in calls if c.start >= at and is_answer(c)), None)


def run_traced(command: list[str], output: Path, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([*strace_command(output), *command], capture_output=True, text=True, timeout=timeout)


def local_port(target: str) -> int | None:
    """The local port of a TCP socket as strace -yy shows it, `TCP:[127.0.0.1:5000->127.0.0.1:6000]`."""
    match = re.match(r"^TCP(?:v6)?:\[(.*):(\d+)->", target)
    return int(match[2]) if match else None


def traced_threads(pid: int) -> set[int]:
    """The threads of `pid` whose tracer is attached (/proc/<pid>/task/*/status TracerPid)."""
    traced = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue
        if int(re.search(r"^TracerPid:\s+(\d+)", status, re.MULTILINE)[1]):
            traced.add(int(task.name))
    return traced


def all_threads(pid: int) -> set[int]:
    return {int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()}
