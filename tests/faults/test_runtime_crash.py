"""kill -9 of the whole runtime (a `cdp serve` driver and every Ray process it started) at a seeded random point
during load, then a restart on the same data directory; the ledger proves invariants 1-3 across the crash."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import yaml

from tests.faults.conftest import fault_workspace, run_under_load
from tests.faults.partner import FlappingPartner
from tests.integration.test_recovery import kill_9, start_serve
from tests.support import Api, free_port


def test_kill_9_the_whole_runtime_during_load_then_restart(tmp_path: Path, seed: int) -> None:
    partner = FlappingPartner().start()
    config = fault_workspace(partner.base, runtime={"shards": 2, "forwarders": 2})
    config_path, data_dir, port = tmp_path / "workspace.yaml", tmp_path / "data", free_port()
    config_path.write_text(yaml.safe_dump(config))
    running: list[subprocess.Popen] = [start_serve(config_path, data_dir, port)]

    def crash_and_restart(_rng: random.Random) -> str:
        pid = running[-1].pid
        kill_9(running[-1])  # the load keeps going: connection refused until the restart, then retried
        running.append(start_serve(config_path, data_dir, port))
        return f"cdp serve pid {pid} and every Ray process under it"

    try:
        # Requests cut off by the crash, or sent while nothing listens, fail to connect. While the restarted
        # `cdp serve` has its HTTP proxy up but not yet the Events API app, Serve's proxy answers 404; one that
        # reached the proxy just before the app, on a slow start, may wait past the client's timeout.
        # The load gives a request up after 3 s, well inside the outage: those batches may or may not have been
        # taken before the crash, and the ledger counts each at most once.
        allowed = frozenset({"ConnectionError", "404", "503", "ReadTimeout"})
        summary = run_under_load(Api(port), partner, seed, "runtime", crash_and_restart, allowed, give_up_after_s=3)
        assert summary["answers"].get("ConnectionError"), "no request met the dead runtime"
        assert summary["gave_up"], "no request was given up during the outage"
    finally:
        for process in running:
            if process.poll() is None:
                kill_9(process)
        partner.stop()
