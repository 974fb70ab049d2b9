"""Background tasks go through `cdp_actors.tasks`: kept until done, an unexpected exception logged with where it
was raised, and a long-lived loop run again after it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cdp_actors.tasks import Tasks


def test_a_loop_that_raises_is_logged_with_its_location_and_runs_again(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) < 3:  # the first two runs meet an unexpected fault; the third ends normally
            raise KeyError("lost https://h/x?token=SECRET-TOKEN-3")

    async def main() -> Tasks:
        tasks = Tasks("owner")
        task = tasks.keep_running(loop, "poll", first_delay_s=0.001)
        assert task in tasks.running and task.get_name() == "poll"
        await asyncio.wait_for(task, timeout=5)
        return tasks

    with caplog.at_level(logging.ERROR):
        tasks = asyncio.run(main())
    assert runs == [0, 1, 2] and tasks.restarts == 2 and len(tasks) == 0
    failures = [r.getMessage() for r in caplog.records if "owner loop poll failed" in r.getMessage()]
    assert len(failures) == 2
    assert "KeyError: 'lost https://h/x?token=***'" in failures[0]
    assert "test_supervised_tasks.py" in failures[0] and "in loop" in failures[0]  # where it was raised
    assert "SECRET-TOKEN-3" not in caplog.text


def test_a_restarted_loop_keeps_serving_and_a_cancelled_one_stops(caplog: pytest.LogCaptureFixture) -> None:
    """The shape of the actors' loops: wait for work, handle it; a fault handling one item must not stop the
    items after it from being handled."""
    handled: list[str] = []

    async def main() -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def serve() -> None:
            while True:
                item = await queue.get()
                if item == "poison":
                    raise RuntimeError("cannot handle this one")
                handled.append(item)

        tasks = Tasks("owner")
        task = tasks.keep_running(serve, "serve", first_delay_s=0.001)
        for item in ("a", "poison", "b"):
            queue.put_nowait(item)
        async with asyncio.timeout(5):
            while handled != ["a", "b"]:
                await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert tasks.restarts == 1 and tasks.failed == 1 and len(tasks) == 0

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "owner loop serve failed, restarting in 0.0 s: RuntimeError: cannot handle this one" in caplog.text
