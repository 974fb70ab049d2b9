"""The intake acknowledges a batch only after its write is synced: checked on the system calls, under strace.

`kill -9` keeps the page cache, so the kill tests (tests/faults) pass with syncing turned off; this one does
not. tests/integration/test_fsync_ack.py checks the same on the running IntakeLog actor, over HTTP.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.strace import dsync_descriptors_opened, parse, run_traced, unsynced_writes

COMMITS = 5
ACK = b"ACK\n"
# One process: open the intake log, then per commit write a group of two requests and print ACK (fd 1),
# as the actor answers its callers once `IntakeLogCore.write` returned.
COMMITTER = f"""
import asyncio, os, sys
from cdp_actors.intake.log import IntakeLogCore, _Pending
core = IntakeLogCore(sys.argv[1], max_lag=1_000_000)
for n in range({COMMITS}):
    group = [_Pending(1, 1_700_000_000_000, [(f"req-{{n}}-{{i}}", b'{{"events": []}}')], None) for i in range(2)]
    assert [r.accepted for r in core.write(group)] == [1, 1]
    os.write(1, {ACK!r})
"""


def test_every_intake_commit_is_synced_before_it_is_acknowledged(tmp_path: Path) -> None:
    log_dir, trace = tmp_path / "intake", tmp_path / "trace.txt"
    done = run_traced([sys.executable, "-c", COMMITTER, str(log_dir)], trace)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.encode() == ACK * COMMITS
    calls = parse(trace.read_text())
    data_file = str(log_dir / "data.mdb")
    acks = [c for c in calls if c.name == "write" and c.fd == 1 and c.text.startswith("1<") and "ACK" in c.text]
    assert len(acks) == COMMITS, [c.text for c in calls if c.fd == 1]
    dsync_fds = dsync_descriptors_opened(calls, data_file)
    since = 0.0
    for ack in acks:
        assert unsynced_writes(calls, data_file, dsync_fds, since, ack) == []
        since = ack.end
