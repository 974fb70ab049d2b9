"""What checking an input's key costs per request: `python -m benchmarks.input_keys [--inputs N]`.

In one process, no Ray, the demo workspace grown to `--inputs` inputs, credentials of the last one:
- `clear_text_us`: the check the Events API had before the configuration store (`serve_apps.auth.authenticate`:
  Basic header parsed, the key looked up, key and secret compared in constant time with the file's secret);
- `hashed_cached_us`: today's hot path (`basic_credentials` + `KeyVerifier.cached`: one keyed BLAKE2b, dict lookups);
- `miss_ms`: a cache miss, one scrypt verification against the stored hash (run in a thread by the replica);
- `new_version_us`: `InputKeys` given a new configuration version (the key table rebuilt, caches kept).
`cdp bench ingest` reports the first two beside its end-to-end comparison.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdp_actors.access.keys import InputKeys, hashed_inputs
from cdp_actors.config import Input, WorkspaceConfig, load_workspace
from serve_apps.auth import authenticate, basic_credentials

DEMO = Path(__file__).resolve().parents[1] / "configs" / "workspace.yaml"
CALLS = 100_000
"""Calls per timing run: ~0.1–0.3 s each, enough to average out the timer."""


def per_call_us(call: Callable[[], Any], number: int = CALLS) -> float:
    """The best of five runs of `number` calls, in microseconds per call."""
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def grown(config: WorkspaceConfig, inputs: int) -> WorkspaceConfig:
    """The configuration with inputs `bench-1`… added (clear secrets, as a file gives them)."""
    extra = [Input(id=100 + n, name=f"bench-{n}", key=f"bench-key-{n}", secret=f"bench-secret-{n}")  # type: ignore[arg-type]
             for n in range(1, inputs)]  # fmt: skip
    return config.model_copy(update={"inputs": [*config.inputs, *extra]})


def verification_costs(config: WorkspaceConfig) -> dict[str, float]:
    """Per-request costs of the clear-text check and of the hashed keys' cache hit, with the last input's
    credentials (the clear-text check walks the inputs to find its key)."""
    source = config.inputs[-1]
    header = "Basic " + base64.b64encode(f"{source.key}:{source.clear_secret()}".encode()).decode()
    verifier = InputKeys()(hashed_inputs(config))
    verifier.verify(*basic_credentials(header))  # warm: the hot path is a cache hit

    def hashed() -> int | None:
        return verifier.cached(*basic_credentials(header))

    return {
        "clear_text_us": round(per_call_us(lambda: authenticate(config, header)), 2),
        "hashed_cached_us": round(per_call_us(hashed), 2),
    }


def run(inputs: int) -> dict[str, Any]:
    config = grown(load_workspace(DEMO), inputs)
    figures: dict[str, Any] = {"inputs": len(config.inputs), **verification_costs(config)}
    stored = hashed_inputs(config)
    derive = InputKeys()
    verifier = derive(stored)
    source = config.inputs[-1]
    started = time.perf_counter()
    verifier.verify(source.key, source.clear_secret())
    figures["miss_ms"] = round((time.perf_counter() - started) * 1e3, 1)
    renamed = stored.model_copy(update={"workspace": stored.workspace.model_copy(update={"name": "v2"})})
    figures["new_version_us"] = round(per_call_us(lambda: derive(renamed), 1_000), 1)
    assert verifier.cached(source.key, source.clear_secret()) == source.id  # the new versions kept the cache
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="What checking an input's key costs per request.")
    parser.add_argument("--inputs", type=int, default=20, help="inputs in the workspace (the demo's first)")
    print(json.dumps(run(parser.parse_args().inputs), indent=2))


if __name__ == "__main__":
    main()
