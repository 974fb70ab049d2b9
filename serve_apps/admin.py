"""Our own additions under `/cdp`: system alerts, pipeline status, profile lookup."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import ray
from fastapi import FastAPI, Query
from ray import serve
from starlette.responses import Response

from cdp_actors.config import WorkspaceConfig
from cdp_actors.partition import ALERTS_NAME, DISPATCHER_NAME, INTAKE_NAME, NAMESPACE, partition_of
from cdp_actors.runtime import actor
from cdp_actors.telemetry import now_ms
from serve_apps.errors import bad_request, error_response, json_response

DEFAULT_ALERT_WINDOW_MS = 12 * 3600 * 1000
app = FastAPI(title="cdp admin", docs_url=None, redoc_url=None)


def parse_time_ms(value: str) -> int:
    """Epoch milliseconds, or an ISO-8601 timestamp (UTC unless it says otherwise)."""
    if value.isdigit():
        return int(value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        from datetime import timezone

        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=32,
    graceful_shutdown_timeout_s=5,  # requests are short; a stop should not wait Serve's default 20 s
    graceful_shutdown_wait_loop_s=1,
)
@serve.ingress(app)
class AdminApi:
    def __init__(self, config: WorkspaceConfig, data_dir: str) -> None:
        self.config = config

    @app.get("/alerts")
    async def alerts(
        self, since: str | None = None, until: str | None = None, environment: str | None = Query(None)
    ) -> Response:
        now = now_ms()
        try:
            until_ms = parse_time_ms(until) if until else now
            since_ms = parse_time_ms(since) if since else until_ms - DEFAULT_ALERT_WINDOW_MS
        except ValueError:
            return bad_request("since/until must be epoch milliseconds or ISO-8601 timestamps")
        if environment not in (None, "production", "development"):
            return bad_request("environment must be production or development")
        connections = await actor(ALERTS_NAME).summary.remote(since_ms, until_ms, environment)
        for entry in connections:
            self._name_connection(entry)
        return json_response(
            200,
            {"since_ms": since_ms, "until_ms": until_ms, "environment": environment, "connections": connections},
        )

    def _name_connection(self, entry: dict[str, Any]) -> None:
        connection = next((c for c in self.config.connections if c.id == entry["connection_id"]), None)
        entry["connection"] = connection.name if connection else ""
        output = next((o for o in self.config.outputs if o.id == entry["output_id"]), None)
        entry["output"] = output.name if output else ""
        for kind in entry["types"]:
            for item in kind["inputs"]:
                source = next((i for i in self.config.inputs if i.id == item["input_id"]), None)
                item["input"] = source.name if source else ""

    @app.get("/status")
    async def status(self) -> Response:
        runtime = self.config.runtime
        intake, dispatcher, shards, forwarders = await asyncio.gather(
            actor(INTAKE_NAME).status.remote(),
            actor(DISPATCHER_NAME).status.remote(),
            asyncio.gather(*(actor(f"shard-{i}").stats.remote() for i in range(runtime.shards))),
            asyncio.gather(*(actor(f"forwarder-{i}").status.remote() for i in range(runtime.forwarders))),
        )
        return json_response(
            200, {"intake": intake, "dispatcher": dispatcher, "shards": shards, "forwarders": forwarders}
        )

    @app.get("/users/{mpid}")
    async def user(self, mpid: str) -> Response:
        try:
            value = int(mpid)
        except ValueError:
            return bad_request(f"mpid must be a 64-bit integer, got {mpid!r}")
        shard = ray.get_actor(f"shard-{partition_of(value, self.config.runtime.shards)}", namespace=NAMESPACE)
        profile = await shard.profile.remote(value)
        if profile is None:
            return error_response(404, "NOT_FOUND", f"No profile with mpid {value}")
        return json_response(200, profile)
