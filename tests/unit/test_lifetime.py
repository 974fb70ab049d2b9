"""What `cdp serve` relies on to end every process it started (cdp_actors/lifetime.py), on real processes. Each
runs in a child Python, so the test session itself never becomes a subreaper."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from cdp_actors.haproxy_wrapper import wrapper_script
from cdp_actors.lifetime import end_processes
from tests.support import wait_for

SLEEP = "/bin/sleep"


def python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_end_processes_sigkills_only_what_outlives_its_sigterm() -> None:
    stubborn = python("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """)
    assert stubborn.stdout.readline() == "ready\n"
    polite = subprocess.Popen([SLEEP, "60"])
    killed = end_processes([psutil.Process(stubborn.pid), psutil.Process(polite.pid)], grace_s=0.5)
    assert [process.pid for process in killed] == [stubborn.pid]
    assert gone(stubborn.pid) and gone(polite.pid)  # and reaped (so Popen.wait finds no status left)


def test_an_orphan_of_a_process_that_adopts_orphans_is_re_parented_to_it() -> None:
    subreaper = python("""
        import os, subprocess, sys, time
        from cdp_actors.lifetime import adopt_orphans, descendants
        assert adopt_orphans()
        middle = subprocess.Popen([sys.executable, "-c",
            "import subprocess; print(subprocess.Popen(['/bin/sleep', '60']).pid, flush=True)"],
            stdout=subprocess.PIPE, text=True)
        orphan = int(middle.stdout.readline())
        middle.wait()
        print(orphan, [p.pid for p in descendants()], flush=True)
        time.sleep(60)
    """)
    orphan, adopted = subreaper.stdout.readline().split(" ", 1)
    try:
        assert psutil.Process(int(orphan)).ppid() == subreaper.pid
        assert adopted.strip() == f"[{orphan}]"  # found by a stop, though its own parent is gone
    finally:
        psutil.Process(int(orphan)).kill()
        subreaper.kill()
        subreaper.wait(5)


def test_haproxy_started_through_the_wrapper_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    wrapper = tmp_path / "haproxy"
    wrapper.write_text(wrapper_script(sys.executable, SLEEP))  # `sleep 60` stands for HAProxy: exec'd the same way
    wrapper.chmod(0o700)
    parent = python(f"""
        import os, subprocess, time, psutil
        child = subprocess.Popen([{str(wrapper)!r}, "60"])
        while psutil.Process(child.pid).exe() != os.path.realpath({SLEEP!r}):  # the wrapper has exec'd it
            time.sleep(0.01)
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    child = int(parent.stdout.readline())
    assert psutil.Process(child).ppid() == parent.pid
    parent.kill()  # SIGKILL: nothing of the parent's own runs
    parent.wait(5)
    try:
        wait_for(lambda: gone(child), timeout=5, what="the wrapped process ended with its parent")
    finally:
        if not gone(child):
            psutil.Process(child).kill()


def test_reap_adopted_collects_ended_orphans_but_leaves_its_own_children_to_their_popen() -> None:
    subreaper = python("""
        import os, subprocess, sys, time, psutil
        from cdp_actors.lifetime import adopt_orphans, reap_adopted
        assert adopt_orphans()
        own = subprocess.Popen(["/bin/true"])
        held, hold = os.pipe()  # the orphan, `cat`, runs until `hold` is closed: it outlives its parent
        middle = subprocess.run([sys.executable, "-c", "import subprocess as s; "
            "print(s.Popen(['/bin/cat'], stdout=s.DEVNULL, stderr=s.DEVNULL).pid)"],
            stdin=held, capture_output=True, text=True)
        orphan = int(middle.stdout)
        while psutil.Process(orphan).ppid() != os.getpid():
            time.sleep(0.01)
        os.close(hold)
        def zombie(pid):
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        while not (zombie(own.pid) and zombie(orphan)):
            time.sleep(0.01)
        reap_adopted({own.pid})
        print(psutil.pid_exists(orphan), zombie(own.pid), own.wait(), flush=True)
    """)
    assert subreaper.stdout.readline() == "False True 0\n"
    assert subreaper.wait(10) == 0
