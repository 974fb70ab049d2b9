"""Test helpers: a real local HTTP receiver that records and fails on demand, polling, HTTP clients."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from aiohttp import web

DEMO_AUTH = "Basic " + base64.b64encode(b"demo-key:demo-secret").decode()
DEMO_ADMIN_CLIENT = ("demo-admin", "demo-admin-secret")
"""configs/workspace.yaml's Platform API client, admin role."""
PLATFORM_AUDIENCE = "https://api.mparticle.com"


def token_of(base: str, client_id: str, client_secret: str) -> str:
    """A bearer token from `POST /oauth/token` (client credentials, as mParticle's Platform API)."""
    body = {"client_id": client_id, "client_secret": client_secret, "grant_type": "client_credentials",
            "audience": PLATFORM_AUDIENCE}  # fmt: skip
    answer = requests.post(base + "/oauth/token", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Received:
    body: Any
    headers: dict[str, str]
    at: float
    path: str = "/webhook"
    method: str = "POST"
    query: str = ""


@dataclass
class Receiver:
    """An aiohttp server on its own thread. `script` holds the statuses to answer next (then 200); a 3xx answer
    carries `Location: redirect_to`; a body `refuse_when` holds for is answered 503 and kept in `refused`."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    attempt_times: list[float] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    retry_after: str | None = None
    always: int | None = None
    delay_s: float = 0.0
    redirect_to: str | None = None
    refuse_when: Callable[[Any], bool] | None = None
    refused: list[Any] = field(default_factory=list)

    def reset(self) -> None:
        self.received.clear()
        self.attempt_times.clear()
        self.script.clear()
        self.refused.clear()
        self.always = self.retry_after = self.redirect_to = self.refuse_when = None
        self.delay_s = 0.0

    @property
    def url(self) -> str:
        return f"{self.base}/webhook"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in list(self.received)]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempt_times.append(time.monotonic())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = self.script.pop(0) if self.script else (self.always or 200)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body.decode(errors="replace")
        if self.refuse_when is not None and self.refuse_when(parsed):
            status = 503
            self.refused.append(parsed)
        if status == 200:
            self.received.append(
                Received(parsed, dict(request.headers), time.time(), request.path, request.method, request.query_string)
            )
        headers = {"Retry-After": self.retry_after} if status != 200 and self.retry_after else {}
        if 300 <= status < 400 and self.redirect_to:
            headers["Location"] = self.redirect_to
        return web.Response(status=status, headers=headers)

    @property
    def attempts(self) -> int:
        return len(self.attempt_times)

    def start(self) -> Receiver:
        ready = threading.Event()
        self.loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application(client_max_size=16 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)  # any partner path
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Api:
    """The platform's HTTP surface, as a client sees it. Admin paths (`/cdp/...`) are called with a bearer token of
    the demo's Platform API client `demo-admin` (admin role), fetched once per `Api`."""

    def __init__(self, port: int, client: tuple[str, str] = DEMO_ADMIN_CLIENT) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.http = requests.Session()
        self.client = client
        self._bearer: str | None = None

    def bearer(self) -> str:
        """`Bearer <token>` of the client."""
        if self._bearer is None:
            self._bearer = "Bearer " + token_of(self.base, *self.client)
        return self._bearer

    def auth_for(self, path: str, auth: str | None = DEMO_AUTH) -> str | None:
        """The Authorization a path takes: an input's key and secret for the Events and Identity APIs, the admin
        client's token for `/cdp/...` (its open health check needs none)."""
        if path.startswith("/cdp/") and auth == DEMO_AUTH:
            return self.bearer()
        return auth

    def post(self, path: str, body: Any, auth: str | None = DEMO_AUTH, raw: bytes | None = None) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        authorization = self.auth_for(path, auth)
        if authorization:
            headers["Authorization"] = authorization
        data = raw if raw is not None else json.dumps(body).encode()
        return self.http.post(self.base + path, data=data, headers=headers, timeout=30)

    def get(self, path: str, **params: Any) -> requests.Response:
        headers = {"Authorization": self.bearer()} if path.startswith("/cdp/") else {}
        return self.http.get(self.base + path, params=params, headers=headers, timeout=30)

    def status(self) -> dict[str, Any]:
        return self.get("/cdp/status").json()

    def accepted_batches(self) -> int:
        return self.status()["intake"]["next_seq"] - 1

    def settled(self) -> bool:
        """Everything accepted has been applied and handed over, and no outbox row is left."""
        state = self.status()
        return state["intake"]["lag"] == 0 and all(s["outbox"] == 0 for s in state["shards"])


def ray_task_error(function: str, cause: Exception) -> Any:
    """The exception a failed actor call raises in its caller, built as Ray builds it (`RayTaskError(<cause>)`)."""
    import ray

    return ray.exceptions.RayTaskError(function, "traceback", cause).as_instanceof_cause()
