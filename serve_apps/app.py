"""Application builders: every HTTP app on one Serve port.

`cdp serve` calls `deploy`; `serve run configs/serve.yaml` calls the builders with
`args: {config: ..., data_dir: ...}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from cdp_actors.config import WorkspaceConfig, load_workspace
from serve_apps.admin import AdminApi
from serve_apps.events import EventsApi

APPS = (("events", "/v2"), ("cdp", "/cdp"))


def _args(args: dict[str, Any]) -> tuple[WorkspaceConfig, str]:
    config = load_workspace(args.get("config", "configs/workspace.yaml"))
    return config, str(Path(args.get("data_dir", ".cdp-data")).resolve())


def events_app(config: WorkspaceConfig, data_dir: str) -> Application:
    return EventsApi.options(num_replicas=config.runtime.ingest_replicas).bind(config, data_dir)


def admin_app(config: WorkspaceConfig, data_dir: str) -> Application:
    return AdminApi.bind(config, data_dir)


def build_events_app(args: dict[str, Any]) -> Application:
    return events_app(*_args(args))


def build_admin_app(args: dict[str, Any]) -> Application:
    return admin_app(*_args(args))


def deploy(config: WorkspaceConfig, data_dir: str) -> None:
    builders = {"events": events_app, "cdp": admin_app}
    for name, prefix in APPS:
        serve.run(builders[name](config, data_dir), name=name, route_prefix=prefix)
