"""Everything the platform writes under its data directory is the owner's alone: directories 0700, files 0600,
whatever the process umask. tests/integration/test_exposure.py checks a running platform's data directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from cdp_actors.intake.log import IntakeLogCore
from cdp_actors.runtime import settle_placement
from cdp_actors.storage.lmdb_env import Store, make_private_dir
from cdp_actors.telemetry import JsonLinesSpanExporter


def others_can_reach(root: Path) -> dict[str, str]:
    """Every path under `root` (itself included) with a group or other permission bit, and its mode."""
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root)): oct(p.stat().st_mode & 0o777) for p in paths if p.stat().st_mode & 0o077}


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: only the modes the code asks for protect the files."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_the_data_directory_and_every_file_in_it_are_owner_only(tmp_path: Path, permissive_umask: None) -> None:
    data_dir = tmp_path / "deep" / "data"  # parents that do not exist yet are created owner-only too
    Store(data_dir / "alerts", ("one", "two")).close()
    IntakeLogCore(data_dir / "intake-0", max_lag=10).store.close()
    assert settle_placement(str(data_dir), 2, ["head"]) == {0: "head", 1: "head"}
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(data_dir / "spans.jsonl")))
    with provider.get_tracer("test").start_as_current_span("one span"):
        pass
    written = {str(p.relative_to(data_dir)) for p in data_dir.rglob("*")}
    assert {
        "alerts/data.mdb",
        "alerts/lock.mdb",
        "intake-0/data.mdb",
        "placement.json",
        "placement.json.lock",
        "spans.jsonl",
    } <= written
    assert others_can_reach(tmp_path / "deep") == {}
    assert stat.S_IMODE((data_dir / "alerts" / "data.mdb").stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_a_data_directory_an_earlier_version_left_readable_is_tightened_when_opened(tmp_path: Path) -> None:
    data_dir, shard = tmp_path / "data", tmp_path / "data" / "shard-0"
    Store(shard, ("profiles",)).close()
    for path, mode in ((data_dir, 0o755), (shard, 0o755), (shard / "data.mdb", 0o644), (shard / "lock.mdb", 0o644)):
        path.chmod(mode)  # as created before the data directory was made private
    make_private_dir(data_dir)
    Store(shard, ("profiles",)).close()
    assert others_can_reach(data_dir) == {}
