from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cdp_actors.config import ConfigError, load_workspace, parse_workspace

DEMO = Path(__file__).resolve().parents[2] / "configs" / "workspace.yaml"


def demo() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_the_demo_workspace_is_valid() -> None:
    config = load_workspace(DEMO)
    source = config.input_by_key("demo-key")
    assert source is not None and source.credentials_match("demo-key", "demo-secret")
    assert not source.credentials_match("demo-key", "wrong")
    assert [c.output for c in config.active_connections(source.id)] == [1]
    assert config.outputs[0].settings.url == "http://127.0.0.1:9999/webhook"
    assert (config.workspace.org_id, config.workspace.account_id, config.workspace.workspace_id) == (1, 1, 1)
    assert "demo-secret" not in repr(config)


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (lambda d: d["outputs"][0]["settings"].update(url="ftp://x"), "outputs[0].settings.url"),
        (lambda d: d["connections"][0].update(output=99), "connections[0].output"),
        (lambda d: d["inputs"][0].pop("key"), "inputs[0].key"),
        (lambda d: d["retry"].update(max_attempts=0), "retry.max_attempts"),
        (lambda d: d.update(unexpected=1), "unexpected"),
        (lambda d: d["identity"].update(strategy="guess"), "identity.strategy"),
    ],
)
def test_invalid_fields_are_named(change, names: str) -> None:
    data = demo()
    change(data)
    with pytest.raises(ConfigError) as info:
        parse_workspace(data)
    assert names in str(info.value)


def test_secrets_come_from_the_environment(monkeypatch) -> None:
    data = demo()
    data["inputs"][0]["secret"] = "${CDP_TEST_SECRET}"
    monkeypatch.setenv("CDP_TEST_SECRET", "from-env")
    assert parse_workspace(data).inputs[0].credentials_match("demo-key", "from-env")
    monkeypatch.delenv("CDP_TEST_SECRET")
    with pytest.raises(ConfigError, match="CDP_TEST_SECRET"):
        parse_workspace(data)


def test_cdp_serve_exits_non_zero_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "cdp_actors.cli", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    reason = "inputs: List should have at least 1 item after validation, not 0"
    assert result.stderr == f"cdp: {bad} is invalid:\n{reason}\n"
