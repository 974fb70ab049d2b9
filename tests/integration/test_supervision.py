"""A runtime loop that meets an unexpected exception is logged and runs again (`cdp_actors/tasks.py`): here the
forwarders' flush loop, which acknowledges delivered rows to their shards. Without the restart that loop would
end for good and no outbox row would ever be acknowledged again."""

from __future__ import annotations

from collections import Counter
from typing import Any

import ray

from cdp_actors import handles
from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import wait_for


def fail_next_flush(forwarder: Any) -> None:
    """Runs inside a Forwarder: the next pass of its flush loop raises (once: the loop swaps the counter out)."""

    class FailsWhenRead(Counter):
        def items(self) -> Any:
            raise RuntimeError("injected into the flush loop")

    forwarder.delivery.forwarded_events = FailsWhenRead(forwarder.delivery.forwarded_events)


def loop_restarts(_actor: Any) -> int:
    from cdp_actors import tasks

    return tasks.restarts()


def test_a_loop_that_raises_runs_again_and_the_pipeline_goes_on(platform, receiver) -> None:
    api = platform(demo_config(receiver.url))
    config_forwarders = len(api.status()["forwarders"])
    forwarders = handles.forwarders(config_forwarders)
    before = ray.get([f.__ray_call__.remote(loop_restarts) for f in forwarders])
    ray.get([f.__ray_call__.remote(fail_next_flush) for f in forwarders])
    wait_for(
        lambda: ray.get([f.__ray_call__.remote(loop_restarts) for f in forwarders]) == [n + 1 for n in before],
        what="each forwarder's flush loop to fail once and run again",
    )
    for n in range(4):
        assert api.post("/v2/events", batch(f"after-{n}", [custom("x", n)])).status_code == 202
    wait_for(lambda: len(receiver.received) == 4 and api.settled(), what="delivered and acknowledged after the restart")
    assert ray.get([f.__ray_call__.remote(loop_restarts) for f in forwarders]) == [n + 1 for n in before]
