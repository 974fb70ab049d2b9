"""Fixtures: one real Ray + Serve for the session, and the platform deployed on it, shared between tests.

How platforms are shared (read this before asserting on counts or state):
- `serve_port` (session): one embedded Ray and one Serve HTTP proxy for the whole run, sized small (2 CPUs).
- `platforms` / `platform` (session): the runtime actors and the Serve apps for one `WorkspaceConfig`. A test
  asking for a config equal to the one running gets the running platform as it is: its intake log, identity
  index, profiles, outbox, alert store, dead letters and report counters keep what earlier tests wrote. A test
  asking for a different config stops that platform and starts a new one on a new data directory
  (`platforms.data_dir`), so it starts empty. Tests sharing a config therefore use their own user names and
  measure deltas (`before = ...`; `new_alerts` in test_delivery.py); a test that needs empty state gives
  itself a config of its own, and says so.
- `shared_receiver` (session) / `receiver` (per test): one local partner server; each test gets it emptied
  and answering 200. Batches an earlier test left undelivered can still arrive at it, so tests wait for
  `api.settled()` or filter what they read by their own users.
- Tests under tests/integration/ and tests/faults/ start real Ray and Serve: they are marked `integration`
  by path (below), so `pytest -m "not integration"` runs the fast, Ray-free part.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from cdp_actors.config import WorkspaceConfig, parse_workspace
from tests.support import Api, Receiver, free_port

ROOT = Path(__file__).resolve().parents[1]
TEST_ADMIN_PASSWORD = "test-admin-password"
"""The demo's console user `admin` takes its password from CDP_ADMIN_PASSWORD: the tests choose it, so they can log
in (an unset variable would make the first start generate one)."""
os.environ.setdefault("CDP_ADMIN_PASSWORD", TEST_ADMIN_PASSWORD)
TEST_SECRETS_KEY = "dGVzdC1zZWNyZXRzLWtleS0zMi1ieXRlcy1sb25nISE="
"""The secrets key (base64 of 32 bytes) of every platform the tests start and of the Ray workers they start (which
inherit this process's environment): no key file is made in the user's home by a test run."""
os.environ.setdefault("CDP_SECRETS_KEY", TEST_SECRETS_KEY)
INTEGRATION_DIRS = (ROOT / "tests" / "integration", ROOT / "tests" / "faults")
"""Tests under these start real Ray and Serve (about a minute to start; minutes to run)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test under INTEGRATION_DIRS `integration`, so `-m "not integration"` is the fast loop."""
    for item in items:
        if any(item.path.is_relative_to(directory) for directory in INTEGRATION_DIRS):
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture(scope="session")
def shared_receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    """The session's receiver, emptied and answering 200 again."""
    shared_receiver.reset()
    return shared_receiver


class Platforms:
    """Deploys the runtime and apps for a config; a test asking for the running config reuses it."""

    def __init__(self, port: int, base_dir: Path) -> None:
        self.port, self.base_dir = port, base_dir
        self.current: WorkspaceConfig | None = None
        self.data_dir = base_dir
        self.started = 0

    def __call__(self, config: WorkspaceConfig) -> Api:
        from cdp_actors.runtime import ensure_runtime
        from serve_apps.app import deploy

        if config != self.current:
            self.stop()
            self.started += 1
            self.data_dir = self.base_dir / f"data-{self.started}"
            ensure_runtime(config, self.data_dir)
            deploy(config, str(self.data_dir))
            self.current = config
        return Api(self.port)

    def stop(self) -> None:
        from ray import serve

        from cdp_actors.runtime import stop_runtime
        from serve_apps.app import APPS

        if self.current is None:
            return
        for name in APPS:
            with contextlib.suppress(Exception):
                serve.delete(name)
        stop_runtime(self.current)
        self.current = None


@pytest.fixture(scope="session")
def platforms(serve_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platforms]:
    deployed = Platforms(serve_port, tmp_path_factory.mktemp("platform"))
    yield deployed
    deployed.stop()


@pytest.fixture
def platform(platforms: Platforms) -> Callable[[WorkspaceConfig], Api]:
    return platforms
