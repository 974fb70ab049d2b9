"""Internal knobs: the environment overrides operators may set, and the breaker thresholds in the `retry`
section of the workspace config."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from cdp_actors.config import ConfigError, parse_workspace
from cdp_actors.constants import env_float, env_int
from cdp_actors.forwarding.breaker import OPEN
from cdp_actors.forwarding.delivery import Delivery
from tests.conftest import ROOT


def test_an_unset_or_empty_variable_gives_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDP_TEST_KNOB", raising=False)
    assert (env_float("CDP_TEST_KNOB", 0.25), env_int("CDP_TEST_KNOB", 7)) == (0.25, 7)
    monkeypatch.setenv("CDP_TEST_KNOB", " ")
    assert (env_float("CDP_TEST_KNOB", 0.25), env_int("CDP_TEST_KNOB", 7)) == (0.25, 7)


def test_a_set_variable_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_TEST_KNOB", "12")
    assert (env_float("CDP_TEST_KNOB", 0.25), env_int("CDP_TEST_KNOB", 7)) == (12.0, 12)
    monkeypatch.setenv("CDP_TEST_KNOB", "0.5")
    assert env_float("CDP_TEST_KNOB", 0.25) == 0.5


@pytest.mark.parametrize(
    ("raw", "parse", "message"),
    [
        ("fast", env_float, "CDP_TEST_KNOB='fast': not a number"),
        ("0", env_float, "CDP_TEST_KNOB='0': must be a positive number"),
        ("nan", env_float, "CDP_TEST_KNOB='nan': must be a positive number"),
        ("1.5", env_int, "CDP_TEST_KNOB='1.5': not an integer"),
        ("-3", env_int, "CDP_TEST_KNOB='-3': must be a positive integer"),
    ],
)
def test_a_bad_value_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, raw: str, parse: Any, message: str) -> None:
    monkeypatch.setenv("CDP_TEST_KNOB", raw)
    with pytest.raises(ValueError) as info:
        parse("CDP_TEST_KNOB", 1)
    assert str(info.value) == message


def test_the_documented_variables_set_the_knobs_of_a_new_process() -> None:
    env = {**os.environ, "CDP_NODE_WAIT_S": "300", "CDP_FLUSH_INTERVAL_S": "0.2", "CDP_MAX_BUFFERED_ALERTS": "50"}
    code = "from cdp_actors import constants as c; print(c.NODE_WAIT_S, c.FLUSH_INTERVAL_S, c.MAX_BUFFERED_ALERTS)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["300.0", "0.2", "50"]
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in ("CDP_NODE_WAIT_S", "CDP_FLUSH_INTERVAL_S", "CDP_MAX_BUFFERED_ALERTS"))


def workspace(**retry: object) -> dict:
    data = yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text())
    data["retry"].update(retry)
    return data


def test_the_breaker_thresholds_default_to_10_failures_and_1_to_10_seconds_open() -> None:
    retry = parse_workspace(workspace()).retry
    assert (retry.breaker_failures, retry.breaker_open_s, retry.breaker_max_open_s) == (10, 1.0, 10.0)


def test_each_output_breaker_takes_its_thresholds_from_the_retry_config() -> None:
    config = parse_workspace(workspace(breaker_failures=2, breaker_open_s=0.5, breaker_max_open_s=4))

    async def main() -> list[str]:
        delivery = Delivery(config)
        breaker = delivery.breakers[config.outputs[0].id]
        states = []
        for _ in range(2):
            breaker.record(False)
            states.append(breaker.state)
        await delivery.close()
        return [*states, str(breaker.open_s), str(breaker.max_open_s)]

    assert asyncio.run(main()) == ["closed", OPEN, "0.5", "4.0"]


@pytest.mark.parametrize(
    ("retry", "names"),
    [
        ({"breaker_failures": 0}, "retry.breaker_failures"),
        ({"breaker_open_s": 0}, "retry.breaker_open_s"),
        ({"breaker_open_s": 5, "breaker_max_open_s": 2}, "breaker_max_open_s must be at least breaker_open_s"),
    ],
)
def test_bad_breaker_thresholds_are_named(retry: dict, names: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_workspace(workspace(**retry))
    assert names in str(info.value)
