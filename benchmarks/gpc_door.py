"""What the GPC signal costs the Events API's door: `python -m benchmarks.gpc_door`.

In one process, no Ray, one 10-event batch of about 2.6 kB (best of 40 runs of 5,000 calls):
- `validate_us`: `validate_batches` without the header, the path every request takes (compare with the same command
  on a commit before GPC: the only new work on it is the `gpc` field in the decoder's struct);
- `header_check_us`: `gpc_signalled` on a request's headers without `Sec-GPC` (once per request, not per batch);
- `validate_marked_us`: `validate_batches` with `Sec-GPC: 1`, each batch marked (`mark_gpc`: one copy of its bytes).
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable

from starlette.datastructures import Headers

from serve_apps.events import gpc_signalled, validate_batches

CALLS = 5_000
RUNS = 40
MAX_BATCH_BYTES = 200_000


def sample_batch() -> bytes:
    events = [
        {
            "event_type": "custom_event",
            "data": {
                "event_name": "Played",
                "custom_event_type": "navigation",
                "timestamp_unixtime_ms": 1_700_000_000_000 + n,
                "custom_attributes": {"song": "x", "n": n},
            },
        }
        for n in range(10)
    ]
    body = {"environment": "production", "user_identities": {"customer_id": "bench-user"}, "events": events}
    return json.dumps({**body, "user_attributes": {"plan": "gold"}}).encode()


def best_us(call: Callable[[], object]) -> float:
    return round(min(timeit.repeat(call, number=CALLS, repeat=RUNS)) / CALLS * 1e6, 2)


def main() -> None:
    raw = sample_batch()
    headers = Headers({"content-type": "application/json", "authorization": "Basic eA==", "user-agent": "bench"})
    print(
        json.dumps(
            {
                "batch_bytes": len(raw),
                "validate_us": best_us(lambda: validate_batches([raw], MAX_BATCH_BYTES)),
                "header_check_us": best_us(lambda: gpc_signalled(headers)),
                "validate_marked_us": best_us(lambda: validate_batches([raw], MAX_BATCH_BYTES, gpc=True)),
            }
        )
    )


if __name__ == "__main__":
    main()
