"""Application builders: every HTTP app on one Serve port.

`cdp serve` calls `deploy`; `serve run configs/serve.yaml` calls the builders with
`args: {config: ..., data_dir: ...}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from cdp_actors.config import WorkspaceConfig, load_workspace
from serve_apps.admin import AdminApi
from serve_apps.dsr import DsrApi
from serve_apps.events import RETRY_AFTER_S, EventsApi
from serve_apps.identity import IdentityApi
from serve_apps.platform import PlatformApi
from serve_apps.profile import ProfileApi


def _args(args: dict[str, Any]) -> tuple[WorkspaceConfig, str]:
    config = load_workspace(args.get("config", "configs/workspace.yaml"))
    return config, str(Path(args.get("data_dir", ".cdp-data")).resolve())


def bounded_queue(config: WorkspaceConfig) -> dict[str, Any]:
    """Serve's own backpressure: past `limits.max_queued_requests` waiting requests, 429 with Retry-After."""
    return {
        "max_queued_requests": config.limits.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=429, retry_after_s=RETRY_AFTER_S),
    }


def events_app(config: WorkspaceConfig, data_dir: str, static_keys: bool = False) -> Application:
    """`static_keys`: the clear-text check of `config`'s secrets, no live configuration (the ingest benchmark's
    same-run comparison; see serve_apps/events.py)."""
    runtime = config.runtime
    return EventsApi.options(
        num_replicas=runtime.ingest_replicas,
        max_ongoing_requests=runtime.ingest_max_ongoing_requests,
        **bounded_queue(config),
    ).bind(config, data_dir, static_keys)


def admin_app(config: WorkspaceConfig, data_dir: str) -> Application:
    return AdminApi.bind(config, data_dir)


def identity_app(config: WorkspaceConfig, data_dir: str) -> Application:
    return IdentityApi.options(**bounded_queue(config)).bind(config, data_dir)


def profile_app(config: WorkspaceConfig, data_dir: str) -> Application:
    return ProfileApi.bind(config, data_dir)


def dsr_app(config: WorkspaceConfig, data_dir: str) -> Application:
    return DsrApi.bind(config, data_dir)


def platform_app(config: WorkspaceConfig, data_dir: str) -> Application:
    return PlatformApi.bind(config, data_dir)


APPS = {  # name: (route prefix, builder)
    "events": ("/v2", events_app),
    "identity": ("/v1", identity_app),
    "cdp": ("/cdp", admin_app),
    "platform": ("/platform", platform_app),
    "profile": ("/", profile_app),
    "dsr": ("/v3", dsr_app),
}
"""The DSR app answers its v1/v2 paths too, relayed by the Events and Identity apps (serve_apps/dsr.py)."""


def build_events_app(args: dict[str, Any]) -> Application:
    return events_app(*_args(args))


def build_admin_app(args: dict[str, Any]) -> Application:
    return admin_app(*_args(args))


def build_identity_app(args: dict[str, Any]) -> Application:
    return identity_app(*_args(args))


def build_profile_app(args: dict[str, Any]) -> Application:
    return profile_app(*_args(args))


def build_platform_app(args: dict[str, Any]) -> Application:
    return platform_app(*_args(args))


def build_dsr_app(args: dict[str, Any]) -> Application:
    return dsr_app(*_args(args))


def deploy(config: WorkspaceConfig, data_dir: str) -> None:
    for name, (prefix, build) in APPS.items():
        serve.run(build(config, data_dir), name=name, route_prefix=prefix)
