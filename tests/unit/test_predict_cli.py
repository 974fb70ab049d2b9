"""`cdp predict train` refuses a bad goal before it attaches to anything: a clear message naming the flag, exit
code 2, nothing registered (and the platform never attached to: the refusal comes before the export)."""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

import pytest

from cdp_actors.cli import main, parser
from cdp_actors.predict import api, registry
from cdp_actors.predict import cli as predict_cli
from cdp_actors.predict.cli import refusal_text


@pytest.fixture(autouse=True)
def attached(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The data directories a command attached to (none may be: the suite's own Ray may be running)."""
    calls: list[str] = []

    def attach(args: argparse.Namespace) -> str:
        calls.append(args.data_dir)
        raise AssertionError("attached to the platform before refusing")

    monkeypatch.setattr(predict_cli, "attach", attach)
    return calls


NUMBER_OVER_100 = '{"type": "number", "operator": "greater_than", "attribute_name": "amount", "value": "100"}'


def train(data_dir: Path, *extra: str) -> int:
    return main(
        ["predict", "train", "--name", "buyers", "--goal-event", "checkout", "--data-dir", str(data_dir), *extra]
    )


@pytest.mark.parametrize(
    ("condition", "said"),
    [
        ("{not json", "--goal-condition: not JSON"),
        ('["a list"]', "--goal-condition: must be a JSON object"),
    ],
)
def test_a_goal_condition_that_is_not_a_json_object_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], attached: list[str], condition: str, said: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        train(tmp_path, "--goal-condition", condition)
    assert exited.value.code == 2
    assert said in capsys.readouterr().err
    assert registry.list_models(tmp_path) == [] and attached == []


@pytest.mark.parametrize(
    ("condition", "said"),
    [
        (
            '{"type": "number", "operator": "contains", "attribute_name": "amount"}',
            "--goal-condition (operator): Operator 'contains' is not supported for type 'number'",
        ),
        ('{"type": "number", "operator": "greater_than", "value": "100"}', "--goal-condition (attribute_name): "),
        (NUMBER_OVER_100.replace('"100"', '"lots"'), "--goal-condition (value): 'lots' is not a number"),
        ('{"type": "colour", "operator": "equals"}', "--goal-condition (type): "),
    ],
)
def test_a_bad_goal_condition_is_refused_naming_its_field_and_nothing_is_registered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], attached: list[str], condition: str, said: str
) -> None:
    assert train(tmp_path, "--goal-condition", condition) == 2
    err = capsys.readouterr().err
    assert err.startswith("cdp predict train: ") and said in err, err
    assert registry.list_models(tmp_path) == [] and attached == []


def test_churn_takes_no_condition_and_other_bad_flags_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], attached: list[str]
) -> None:
    churn = ["predict", "train", "--name", "gone", "--goal-event", "churn", "--goal-condition", NUMBER_OVER_100]
    assert main([*churn, "--data-dir", str(tmp_path)]) == 2
    assert "--goal-condition: churn takes no condition" in capsys.readouterr().err
    assert train(tmp_path, "--window-days", "0") == 2
    assert "--window-days: window_days must be" in capsys.readouterr().err
    assert train(tmp_path, "--lookback-days", "5000") == 2
    assert "--lookback-days: lookback_days must be" in capsys.readouterr().err
    assert main(["predict", "train", "--name", "x" * 49, "--goal-event", "e", "--data-dir", str(tmp_path)]) == 2
    assert "--name: name must be 1 to 48" in capsys.readouterr().err
    assert main(["predict", "score", "--name", "Bad-Name", "--data-dir", str(tmp_path)]) == 2
    assert "--name: name must be 1 to 48" in capsys.readouterr().err
    assert registry.list_models(tmp_path) == [] and attached == []


COMMANDS = {
    ("predict", "train", "--name", "n", "--goal-event", "e"): api.train,
    ("predict", "score", "--name", "n"): api.score,
    ("predict", "synth", "--users", "1", "--out", "o"): api.synth,
    ("export", "all", "--out", "o"): api.export,
}
NOT_ARGUMENTS = {"command", "action", "run", "join"}
PLURAL = {"exclude_attribute": "exclude_attributes"}  # a repeatable flag is one list argument


@pytest.mark.parametrize("argv", list(COMMANDS))
def test_the_python_api_takes_the_same_arguments_as_the_command_line(argv: tuple[str, ...]) -> None:
    function = COMMANDS[argv]
    flags = {PLURAL.get(dest, dest): value for dest, value in vars(parser().parse_args(argv)).items()}
    parameters = inspect.signature(function).parameters
    for dest, value in flags.items():
        if dest in NOT_ARGUMENTS:
            continue
        assert dest in parameters, f"{function.__name__} has no argument {dest}"
        default = parameters[dest].default
        if default is not inspect.Parameter.empty and not isinstance(value, list):
            assert default == value, f"{function.__name__}({dest}={default!r}), but the command's default is {value!r}"


def test_the_python_api_refuses_a_bad_condition_as_the_command_line_does() -> None:
    api.check_train("buyers", "checkout", "custom_event", 30, 90, json.loads(NUMBER_OVER_100), "sklearn")
    contains = {"type": "number", "operator": "contains", "attribute_name": "amount"}
    with pytest.raises(ValueError, match="condition.operator"):
        api.check_train("buyers", "checkout", "custom_event", 30, 90, contains, "sklearn")


def test_a_refusal_names_the_flag_not_the_api_argument() -> None:
    assert refusal_text("bad - at `condition.operator`", "condition.operator") == "--goal-condition (operator): bad"
    assert refusal_text("bad - at `window_days`", "window_days") == "--window-days: bad"
    assert refusal_text("no model", None) == "no model"
