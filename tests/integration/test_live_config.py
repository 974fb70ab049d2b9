"""Live configuration under load, over real HTTP: while batches stream in from the demo input, an app (an input,
with its key issued), an output and a connection from the new input to it are created through the Platform API;
the new key works, and every batch the new input sends after the connection's version reached the dispatcher
arrives at the new output exactly once, without a restart; then the output's settings change through the API (a new
URL and header) under load, and every batch goes to exactly one of the two partner servers, in a request built by
one version (the header a request carries matches the server it reached). The demo input's stream meanwhile reaches
its own output, each batch once, and nothing else.

The test changes its platform's configuration, so it runs a platform of its own (its workspace differs from every
other test's), on a new data directory."""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import ray
import requests

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig
from tests.conftest import demo_config
from tests.samples import batch, custom
from tests.support import DEMO_AUTH, Api, Receiver, wait_for

USERS = 8
"""Users the load spreads over: their batches keep their order in per-user lanes, several lanes run at once."""
MAX_BATCHES = 4000
"""The load is bounded: it stops at this many batches if the test has not stopped it earlier."""
PACE_S = 0.004
"""Pause between two batches of the load (pacing, not synchronization): a few hundred batches a second at most,
so the machine's two cores keep up and the test measures correctness, not backpressure."""
ARRIVAL_S = 10.0
"""The promise under test is "within a second" per process; polls, a chunk and one delivery on a busy 2-core
machine fit well inside this."""


class Load:
    """Batches sent one after another from a thread; `accepted[n]` is when batch n was acknowledged (202)."""

    def __init__(self, api: Api, name: str = "Live", auth: str = DEMO_AUTH) -> None:
        self.api, self.name, self.auth = api, name, auth
        self.accepted: dict[int, float] = {}
        self.refused: list[int] = []
        self.next_n = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and self.next_n < MAX_BATCHES:
            n = self.next_n
            body = batch(f"{self.name}-{n % USERS}", [custom(self.name, int(time.time() * 1000), n=n)])
            answer = self.api.post("/v2/events", body, auth=self.auth)
            (self.accepted.__setitem__(n, time.monotonic()) if answer.status_code == 202 else self.refused.append(n))
            self.next_n = n + 1
            self.stop.wait(PACE_S)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(30)


def numbers(server: Receiver, name: str) -> list[int]:
    """The numbers of the batches of the stream `name` a partner received, one per batch (a request holds one)."""
    return [r.body["events"][0]["data"]["custom_attributes"]["n"] for r in list(server.received) if is_of(r.body, name)]


def is_of(body: Any, name: str) -> bool:
    events = body.get("events") or [] if isinstance(body, dict) else []
    return bool(events) and events[0].get("data", {}).get("event_name") == name


def headers(server: Receiver, name: str) -> set[str]:
    return {r.headers.get("Authorization", "") for r in list(server.received) if is_of(r.body, name)}


def platform_call(api: Api, method: str, path: str, body: Any, status: int) -> tuple[int, dict[str, Any]]:
    """A Platform API call as the demo's admin client: the configuration version (ETag) and the entity."""
    answer = requests.request(method, f"{api.base}/platform/v1{path}", params={"accountId": "1"}, json=body,
                              headers={"Authorization": api.bearer()}, timeout=30)  # fmt: skip
    assert answer.status_code == status, answer.text
    return int(answer.headers["ETag"].strip('"')), answer.json()["data"][0]


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def live_config(webhook_url: str) -> WorkspaceConfig:
    config = demo_config(webhook_url)
    output = config.outputs[0].model_copy(update={"name": "live-config-webhook"})  # a workspace of its own
    return config.model_copy(update={"outputs": [output]})


@pytest.fixture
def partners() -> Iterator[tuple[Receiver, Receiver]]:
    servers = Receiver().start(), Receiver().start()
    yield servers
    for server in servers:
        server.stop()


def test_outputs_and_connections_added_and_changed_under_load_take_effect_live(
    platform: Any, receiver: Receiver, partners: tuple[Receiver, Receiver]
) -> None:
    first, second = partners
    api = platform(live_config(receiver.url))
    dispatcher = handles.dispatcher()

    def dispatcher_version() -> int:
        return ray.get(dispatcher.config_version.remote())

    with Load(api) as load:
        wait_for(lambda: len(numbers(receiver, "Live")) >= 20, what="the load reaching the workspace's own output")
        _, app = platform_call(api, "POST", "/apps", {"name": "Live app", "platforms": [{"platform": "iOS"}]}, 201)
        key = app["platforms"][0]["access_keys"][0]
        auth = basic(key["key"], key["secret"])
        eventless = {"environment": "production", "events": []}
        wait_for(lambda: api.post("/v2/events", eventless, auth=auth).status_code == 202, ARRIVAL_S,
                 what="the new app's key working")  # fmt: skip
        with Load(api, "LiveApp", auth) as app_load:
            settings = {"url": first.url, "auth_header": "Bearer v1"}
            output_version, output = platform_call(api, "POST", "/outputs", {"name": "live", "service": "webhook",
                                                                             "settings": settings}, 201)  # fmt: skip
            connection = {"name": "live", "input": app["id"], "output": output["id"]}
            connection_version, _ = platform_call(api, "POST", "/connections", connection, 201)
            assert connection_version > output_version
            wait_for(
                lambda: dispatcher_version() >= connection_version, ARRIVAL_S, what="the version at the dispatcher"
            )
            boundary = app_load.next_n  # batches from here on were sent after the dispatcher held the connection
            added_at = time.monotonic()
            wait_for(lambda: any(n >= boundary for n in numbers(first, "LiveApp")), ARRIVAL_S,
                     what="batches at the new output")  # fmt: skip
            assert time.monotonic() - added_at < ARRIVAL_S

            settings = {"url": second.url, "auth_header": "Bearer v2"}
            update_version, _ = platform_call(api, "PUT", f"/outputs/{output['id']}", {"settings": settings}, 200)
            assert update_version > connection_version
            wait_for(lambda: len(numbers(second, "LiveApp")) >= 50, ARRIVAL_S * 3, what="batches at the new URL")
    for stream in (load, app_load):
        assert stream.refused == [] and len(stream.accepted) == stream.next_n
    assert app_load.next_n > boundary

    everything, sent_by_app = set(load.accepted), set(app_load.accepted)
    after_boundary = {n for n in sent_by_app if n >= boundary}

    def delivered() -> bool:
        new_output = set(numbers(first, "LiveApp") + numbers(second, "LiveApp"))
        return set(numbers(receiver, "Live")) >= everything and new_output >= after_boundary

    wait_for(lambda: delivered() and api.settled(), 120, what="every accepted batch delivered")
    at_first, at_second = Counter(numbers(first, "LiveApp")), Counter(numbers(second, "LiveApp"))
    assert Counter(numbers(receiver, "Live")) == Counter(everything)  # the workspace's own output: each batch once
    assert numbers(receiver, "LiveApp") == [] and numbers(first, "Live") == numbers(second, "Live") == []
    assert all(count == 1 for count in (at_first + at_second).values()), "a batch went twice to the new output"
    assert not at_first.keys() & at_second.keys(), "a batch went to both servers"
    assert after_boundary <= set(at_first + at_second) <= sent_by_app
    assert headers(first, "LiveApp") == {"Bearer v1"} and headers(second, "LiveApp") == {"Bearer v2"}
    assert at_first and at_second
