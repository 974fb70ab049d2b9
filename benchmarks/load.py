"""Load generation shared by the scenarios: closed loop (to the maximum) and open loop (at a target rate).

The open loop schedules request n at `start + n × interval` whatever the server does, and measures
latency from that scheduled time, so a stalled server shows up in the percentiles instead of silently
slowing the generator (coordinated omission).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

from benchmarks.workload import Workload
from cdp_actors.config import WorkspaceConfig

MAX_IN_FLIGHT = 512
"""Open loop: requests outstanding at once; past it the generator counts a send as `not_sent` (it is the
server's latency that is too high, and unbounded client memory would spoil the RSS figures)."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class LoadResult:
    seconds: float
    acked_events: int = 0
    acked_batches: int = 0
    statuses: Counter = field(default_factory=Counter)
    ack_latencies_ms: list[float] = field(default_factory=list)
    acked_per_second: Counter = field(default_factory=Counter)
    retry_after: Counter = field(default_factory=Counter)

    @property
    def events_per_s(self) -> float:
        return self.acked_events / self.seconds

    def record(self, status: int, events: int, batches: int, second: int, latency_ms: float) -> None:
        self.statuses[status] += 1
        if status == 202:
            self.acked_events += events
            self.acked_batches += batches
            self.acked_per_second[second] += events
            self.ack_latencies_ms.append(latency_ms)


def rss_mb(exclude: set[int]) -> tuple[float, float]:
    """Private and total RSS of every process this one started (Ray and the platform), minus `exclude`.

    This process is left out: it is the load generator, whose buffers are the client's memory, not the
    platform's. Private RSS leaves out file-backed and shared pages (LMDB's memory map, Ray's shared-memory
    object store), which the total counts once per process that maps them.
    """
    private = total = 0
    for process in psutil.Process().children(recursive=True):
        if process.pid in exclude:
            continue
        with contextlib.suppress(psutil.Error):
            info = process.memory_info()
            private += info.rss - info.shared
            total += info.rss
    return private / 2**20, total / 2**20


class Load:
    """One phase of load against `url`: `run()` drives it closed-loop, or open-loop when `rate` is set.

    Before a phase, everything the generator holds (the workload's users, earlier results) is moved out of the
    garbage collector's sight (`gc.freeze`). Without that, a full collection walked it all every few seconds
    and paused the event loop for up to 150 ms; the requests due meanwhile went late, and as latency counts
    from when a request was due, those pauses were the measured p99 (136 ms at half the maximum; 47 ms frozen).
    """

    def __init__(
        self,
        url: str,
        auth: str,
        workload: Workload,
        duration: float,
        label: str,
        concurrency: int = 8,
        rate: float | None = None,
        probe: Any = None,
    ) -> None:
        self.url, self.workload, self.duration, self.label = url, workload, duration, label
        self.concurrency, self.rate, self.probe = concurrency, rate, probe
        self.headers = {"Authorization": auth, "Content-Type": "application/json"}
        self.result = LoadResult(seconds=duration)
        self.start = 0.0

    async def run(self) -> LoadResult:
        gc.collect()
        gc.freeze()  # see below
        self.start = time.monotonic()
        limit = MAX_IN_FLIGHT if self.rate else self.concurrency
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=limit)) as session:
            reporter = asyncio.create_task(self._progress())
            await (self._open(session) if self.rate else self._closed(session))
            reporter.cancel()
        self.result.seconds = time.monotonic() - self.start
        return self.result

    def _elapsed(self) -> float:
        return time.monotonic() - self.start

    async def _send(self, session: aiohttp.ClientSession, scheduled: float) -> int:
        body, events, batches = self.workload.request()
        try:
            async with session.post(self.url, data=body, headers=self.headers) as reply:
                await reply.read()
                status = reply.status
                if status == 429:
                    self.result.retry_after[reply.headers.get("Retry-After", "none")] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = 0  # no answer: counted apart, never as acknowledged
        latency_ms = (time.monotonic() - scheduled) * 1000
        self.result.record(status, events, batches, int(self._elapsed()), latency_ms)
        return status

    async def _closed(self, session: aiohttp.ClientSession) -> None:
        async def client() -> None:
            while self._elapsed() < self.duration:
                if await self._send(session, time.monotonic()) == 429:
                    await asyncio.sleep(1)  # back off as the server asks, as the mParticle SDKs do

        await asyncio.gather(*(client() for _ in range(self.concurrency)))

    async def _open(self, session: aiohttp.ClientSession) -> None:
        assert self.rate is not None  # run() opens the loop only with a rate
        interval = self.workload.events_per_request / self.rate
        in_flight: set[asyncio.Task] = set()
        n = 0
        while (due := self.start + n * interval) < self.start + self.duration:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            n += 1
            if len(in_flight) >= MAX_IN_FLIGHT:
                self.result.statuses["not_sent"] += 1
                continue
            task = asyncio.create_task(self._send(session, due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(1)
            second = int(self._elapsed())
            extra = await self.probe() if self.probe else ""
            refused = self.result.statuses[429]
            say(
                f"[{self.label} {second:>4}s] acked {self.result.acked_per_second[second - 1]:>8,} ev/s"
                f"  429s so far {refused:>6,} {extra}"
            )


async def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as reply:
                    if reply.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not come up")
            await asyncio.sleep(0.2)


async def get_json(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        return await reply.json()


async def admin_bearer(base: str, config: WorkspaceConfig) -> dict[str, str]:
    """The Authorization header of the config's first Platform API client (admin endpoints need one)."""
    client = next(c for c in config.api_clients if c.api.value == "platform")
    body = {"client_id": client.client_id, "client_secret": client.client_secret.get_secret_value(),
            "grant_type": "client_credentials"}  # fmt: skip
    async with aiohttp.ClientSession() as session, session.post(f"{base}/oauth/token", json=body) as reply:
        return {"Authorization": "Bearer " + (await reply.json())["access_token"]}


def basic_auth(config: WorkspaceConfig) -> str:
    source = config.inputs[0]
    pair = f"{source.key}:{source.clear_secret()}"
    return "Basic " + base64.b64encode(pair.encode()).decode()
