"""Fixtures: one real Ray + Serve for the session; a platform per test with its own config and data dir."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from cdp_actors.config import WorkspaceConfig, parse_workspace
from tests.support import Api, Receiver, free_port

ROOT = Path(__file__).resolve().parents[1]


def demo_config(webhook_url: str, **overrides: dict) -> WorkspaceConfig:
    data = yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text())
    data["outputs"][0]["settings"]["url"] = webhook_url
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_workspace(data)


@pytest.fixture(scope="session")
def serve_port() -> Iterator[int]:
    import ray
    from ray import serve

    from cdp_actors.cli import start_ray

    port = free_port()
    start_ray(None, num_cpus=2)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def platform(serve_port: int, tmp_path: Path) -> Iterator[Callable[[WorkspaceConfig], Api]]:
    """Call with a config to deploy the runtime and apps on a fresh data dir; torn down after the test."""
    from ray import serve

    from cdp_actors.runtime import ensure_runtime, stop_runtime
    from serve_apps.app import APPS, deploy

    started: list[WorkspaceConfig] = []

    def start(config: WorkspaceConfig, data_dir: Path | None = None) -> Api:
        directory = str(data_dir or tmp_path / "data")
        ensure_runtime(config, directory)
        deploy(config, directory)
        started.append(config)
        return Api(serve_port)

    yield start
    for name, _ in APPS:
        with contextlib.suppress(Exception):
            serve.delete(name)
    for config in started:
        stop_runtime(config)
