"""The data volume fills up during load, and space comes back a few seconds later. Clients get 503s that name
the full disk and send again; the ledger proves invariants 1-3 as in the other fault scenarios: every
acknowledged batch delivered (or Fatal-alerted), profiles equal to a replay, per-user order kept.

A script, not a test: it mounts a small tmpfs as the data volume, which needs root (CAP_SYS_ADMIN), and CI
does not promise that. Run it alone, on a quiet machine:

    sudo .venv/bin/python -m tests.faults.disk_full [--seed N] [--hold 5]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.faults.conftest import fault_workspace, run_under_load
from tests.faults.partner import FlappingPartner
from tests.integration.test_recovery import kill_9, start_serve
from tests.support import Api, free_port

VOLUME_BYTES = 64 * 1024 * 1024
CHUNK = 1024 * 1024
PAD_BYTES = 4000
ROUNDS = 80


def fill(volume: Path) -> Path:
    """Write a file that takes every free byte of `volume`."""
    filler = volume / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):  # unbuffered: the last write is
        while True:  # partial, the next one raises ENOSPC
            out.write(bytes(CHUNK))
    return filler


@contextlib.contextmanager
def watching_stalls(api: Api) -> Iterator[set[str]]:
    """The reasons `/cdp/status` gives for stalled processing, polled while the block runs."""
    stalls: set[str] = set()
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.2):
            failing = api.status()["dispatcher"]["failing"]
            if failing:
                stalls.add(failing["error"])

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield stalls
    finally:
        done.set()
        poller.join()


def run(seed: int, hold_s: float, workdir: Path) -> dict:
    volume = workdir / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME_BYTES}", "tmpfs", str(volume)], check=True)
    partner = FlappingPartner().start()
    process = None
    try:
        config_path, port = workdir / "workspace.yaml", free_port()
        config_path.write_text(yaml.safe_dump(fault_workspace(partner.base, runtime={"shards": 2, "forwarders": 2})))
        process = start_serve(config_path, volume / "data", port)

        def fill_then_free(_rng: random.Random) -> str:
            filler = fill(volume)
            threading.Timer(hold_s, filler.unlink).start()
            return f"the data volume filled ({filler.stat().st_size:,} bytes of filler) for {hold_s} s"

        api = Api(port)
        with watching_stalls(Api(port)) as stalls:  # its own HTTP session: the poller is another thread
            # Large batches and a longer load: the stores reuse their own free pages, so small writes get
            # through a full disk for a while.
            summary = run_under_load(
                api,
                partner,
                seed,
                "disk-full",
                fill_then_free,
                allowed=frozenset({"503"}),
                pad=PAD_BYTES,
                rounds=ROUNDS,
                inject_between=(0.2, 0.4),
            )
        assert summary["answers"].get("503"), "no request met the full disk"
        assert "No space left on device" in summary["first_bodies"]["503"], summary["first_bodies"]
        assert any("No space left on device" in stall for stall in stalls), stalls  # /cdp/status said why
        assert api.status()["dispatcher"]["failing"] is None
        return {**summary, "stalls": sorted(stalls)}
    finally:
        if process is not None and process.poll() is None:
            kill_9(process)
        partner.stop()
        subprocess.run(["umount", str(volume)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(2**31))
    parser.add_argument("--hold", type=float, default=5.0, help="seconds the volume stays full")
    args = parser.parse_args()
    print(f"disk-full scenario, seed {args.seed}")
    with tempfile.TemporaryDirectory(prefix="cdp-disk-full-") as workdir:
        summary = run(args.seed, args.hold, Path(workdir))
    print(f"passed: {summary}")


if __name__ == "__main__":
    main()
