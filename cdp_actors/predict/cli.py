"""`cdp export` and `cdp predict`: attach to the running platform (its Ray, found as `cdp deadletter` finds it:
`--address`, else the address its dispatcher noted in `--data-dir`, else auto) and run the jobs. The platform keeps
running; nothing here needs it stopped. The prediction core (train, registry, synthetic data, scoring) is imported
inside each command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from cdp_actors.predict.api import DEFAULT_DATA_DIR, DEFAULT_EVENTS_URL, DEMO_KEY
from cdp_actors.predict.api import TRUTH_FILE as TRUTH_FILE
from cdp_actors.predict.api import loopback_url as loopback_url
from cdp_actors.predict.snapshot import EVENTS_DIR, PROFILES_DIR

Join = Callable[[argparse.Namespace], None]
"""Joins the Ray of the platform that `--data-dir` / `--address` name (`cdp_actors.ray_attach.join_platform_ray`)."""
Command = Callable[[argparse.Namespace], int]
USAGE_ERROR: Final = 2
"""The exit code of a refused command (argparse's own for a bad flag): nothing was registered or written."""
FLAGS: Final = {
    "condition": "--goal-condition",
    "goal_event": "--goal-event",
    "goal_event_type": "--goal-event-type",
    "window_days": "--window-days",
    "lookback_days": "--lookback-days",
    "name": "--name",
    "model": "--model",
    "run_id": "--run-id",
    "data_dir": "--data-dir",
    "url": "--url",
    "since/until": "--since/--until",
    "what": "what",
}
"""The API's argument (a refusal's path) -> the flag the command line user typed."""


def add_commands(commands: Any, join: Join) -> None:
    """Register `export` and `predict` on the `cdp` parser's subcommands; `join` attaches to the platform."""
    export = commands.add_parser("export", help="write profiles or events as Parquet, one file per shard")
    export.add_argument("what", choices=(PROFILES_DIR, EVENTS_DIR, "all"))
    export.add_argument("--out", required=True, help="the snapshot directory (shared by every node on a cluster)")
    export.add_argument("--since", default=None, help="events at or after: ISO date/time (UTC) or epoch ms")
    export.add_argument("--until", default=None, help="events before: ISO date/time (UTC) or epoch ms")
    attach_arguments(export, join)
    export.set_defaults(run=refusing(cmd_export))

    predict = commands.add_parser("predict", help="predictive attributes: train, score, list, show, synth")
    actions = predict.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train a propensity model on a fresh snapshot")
    train.add_argument("--name", required=True)
    train.add_argument("--goal-event", required=True, help="an event name, or the preset purchase or churn")
    train.add_argument("--goal-event-type", default="custom_event")
    train.add_argument(
        "--goal-condition",
        default=None,
        type=json_object,
        help="a calculated attribute condition on the goal event's custom attributes, as JSON: "
        '\'{"type": "number", "operator": "greater_than", "attribute_name": "amount", "value": "100"}\'',
    )
    train.add_argument("--window-days", type=int, default=30)
    train.add_argument("--lookback-days", type=int, default=90)
    leaks = "a user attribute never used as a feature (one that leaks the goal); repeatable"
    train.add_argument("--exclude-attribute", action="append", default=[], metavar="NAME", help=leaks)
    train.add_argument("--out", default=None, help="the run's report directory")
    train.add_argument("--model", default="sklearn", choices=("sklearn", "lightgbm"))
    train.add_argument("--truth", default=None, help="synth's --out: adds the oracle's AUC to the metrics")
    snapshot_argument(train)
    attach_arguments(train, join)
    train.set_defaults(run=refusing(cmd_train))

    score = actions.add_parser("score", help="score every profile now and write the scores back as attributes")
    score.add_argument("--name", required=True)
    score.add_argument("--run-id", default=None, help="resume this run (default: the name's unfinished run, if any)")
    snapshot_argument(score)
    attach_arguments(score, join)
    score.set_defaults(run=refusing(cmd_score))

    listing = actions.add_parser("list", help="the models in the registry")
    listing.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    listing.set_defaults(run=refusing(cmd_list))
    show = actions.add_parser("show", help="one model: its goal, windows, metrics, features")
    show.add_argument("name")
    show.add_argument("--version", type=int, default=None, help="default: the latest")
    show.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    show.set_defaults(run=refusing(cmd_show))

    synth = actions.add_parser("synth", help="send synthetic users with known true probabilities to the Events API")
    synth.add_argument("--users", type=int, required=True)
    synth.add_argument("--out", required=True, help="where the true probabilities file goes")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--history-days", type=int, default=90, help="days of history per user")
    synth.add_argument("--window-days", type=int, default=14, help="the purchase goal's window, ending the history")
    synth.add_argument("--as-of", default=None, help="the history's end: ISO date/time or epoch ms (default: fixed)")
    synth.add_argument("--url", default=DEFAULT_EVENTS_URL, help="the platform's Events API (loopback only)")
    synth.add_argument("--key", default=os.environ.get("CDP_SYNTH_KEY", DEMO_KEY[0]))
    synth.add_argument("--secret", default=os.environ.get("CDP_SYNTH_SECRET", DEMO_KEY[1]))
    synth.set_defaults(run=refusing(cmd_synth))


def attach_arguments(parser: argparse.ArgumentParser, join: Join) -> None:
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the running platform's data dir")
    parser.add_argument("--address", default=None, help="the platform's Ray (default: the one noted in --data-dir)")
    parser.set_defaults(join=join)


def snapshot_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--snapshot-dir",
        default=None,
        help="where the job's snapshot goes (default: DATA_DIR/predict/snapshots); on a cluster, a directory every "
        "node sees (NFS, or any path every node mounts)",
    )


def json_object(text: str) -> dict[str, Any]:
    """`--goal-condition`'s value: a JSON object (argparse reports a ValueError as a bad value for the flag)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error.msg} at character {error.pos}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object (a calculated attribute condition)")
    return value


def refusing(command: Command) -> Command:
    """`command`, with a refusal (bad arguments, an unknown model, too few examples) told on stderr naming the flag
    at fault, and exit code 2 instead of a traceback."""
    from cdp_actors.errors import BadRequest, RequestFailed

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except RequestFailed as error:
            where = getattr(error, "path", None) if isinstance(error, BadRequest) else None
            print(f"cdp {command_name(args)}: {refusal_text(error.message, where)}", file=sys.stderr, flush=True)
            return USAGE_ERROR

    return run


def command_name(args: argparse.Namespace) -> str:
    action = getattr(args, "action", None)
    return f"predict {action}" if action else "export"


def refusal_text(message: str, path: str | None) -> str:
    """`message` with its path as the command line's flag: `--goal-condition (operator): ...`."""
    if not path:
        return message
    text = message.removesuffix(f" - at `{path}`")
    field, _, inner = path.partition(".")
    flag = FLAGS.get(field, field)
    return f"{flag} ({inner}): {text}" if inner else f"{flag}: {text}"


def attach(args: argparse.Namespace) -> str:
    """Join the running platform's Ray (unless this process already is in it); its data directory, checked to be
    the one `--data-dir` names."""
    import ray

    from cdp_actors.predict import api

    if not ray.is_initialized():
        args.join(args)
    return api.attach(args.data_dir, args.address)


def cmd_export(args: argparse.Namespace) -> int:
    from cdp_actors.predict import api

    attach(args)
    manifest = api.export(args.what, args.out, args.since, args.until, data_dir=args.data_dir, address=args.address)
    print(f"cdp export: {manifest.profiles} profiles, {manifest.events} events in {args.out}", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cdp_actors.predict import api

    api.check_train(args.name, args.goal_event, args.goal_event_type, args.window_days, args.lookback_days,
                    args.goal_condition, args.model)  # fmt: skip
    attach(args)
    progress = PhaseBars()
    try:
        result = api.train(
            args.name,
            args.goal_event,
            args.goal_event_type,
            args.window_days,
            args.lookback_days,
            goal_condition=args.goal_condition,
            exclude_attributes=args.exclude_attribute,
            out=args.out,
            model=args.model,
            truth=args.truth,
            data_dir=args.data_dir,
            address=args.address,
            snapshot_dir=args.snapshot_dir,
            progress=progress,
        )
    finally:
        progress.end()
    print(json.dumps(train_summary(result, progress.seconds)), flush=True)
    return 0


def train_summary(result: Any, seconds: dict[str, float]) -> dict[str, Any]:
    """What `train` prints: the version registered and its headline metrics (`show` has the rest)."""
    metrics = result.metrics
    return {
        "name": result.registered.name,
        "version": result.registered.version,
        "auc": metrics.get("auc"),
        "oracle_auc": metrics.get("oracle_auc"),
        "log_loss": metrics.get("log_loss"),
        "base_rate": metrics.get("base_rate"),
        "holdout_users": metrics.get("holdout_users"),
        "model": metrics.get("model"),
        "report": str(result.report) if result.report else None,
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
    }


class PhaseBars:
    """A job's progress callback: a heading and a bar per phase on stderr, and each phase's seconds. A phase is
    told of as its steps finish, so its time runs from the previous phase's last step to its own last."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.last_step = time.monotonic()
        self.began = self.last_step
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if name != self.current:
            self.end()
            self.current, self.began = name, self.last_step
            phase(name)
        if done:  # a phase's start only heads it: the export draws its own bars under the heading
            bar(done, total)
        self.seconds[name] = now - self.began
        self.last_step = now

    def end(self) -> None:
        if self.current is not None:
            print(file=sys.stderr)
        self.current = None


def cmd_score(args: argparse.Namespace) -> int:
    from cdp_actors.predict import api, registry

    registry.check_name(args.name)
    attach(args)
    progress = PhaseBars()
    try:
        run = api.score(args.name, run_id=args.run_id, data_dir=args.data_dir, address=args.address,
                        snapshot_dir=args.snapshot_dir, progress=progress)  # fmt: skip
    finally:
        progress.end()
    print(json.dumps({"run_id": run.run_id, "users": run.users, "accepted": run.accepted,
                      "duplicates": run.duplicates}), flush=True)  # fmt: skip
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from cdp_actors.predict import registry

    for model in registry.list_models(args.data_dir):
        print(json.dumps(model), flush=True)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from cdp_actors.predict import registry

    shown = registry.show(args.data_dir, args.name, args.version)
    shown["description"].pop("vocabulary", None)  # long, and the feature list says the same
    for bulky in ("roc", "score_histogram", "calibration"):  # the report's charts; metrics.json keeps them
        shown["metrics"].pop(bulky, None)
    print(json.dumps(shown, indent=2), flush=True)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from cdp_actors.predict import api

    base = api.loopback_url(args.url)
    phase(f"send {args.users} users to {base}/v2/bulkevents")
    sent = api.synth(args.users, args.out, args.seed, history_days=args.history_days, window_days=args.window_days,
                     as_of=args.as_of, url=base, key=args.key, secret=args.secret,
                     progress=lambda _, done, total: bar(done, total))  # fmt: skip
    print(f"\ncdp predict synth: {sent} batches accepted; true probabilities in {Path(args.out) / TRUTH_FILE}",
          file=sys.stderr)  # fmt: skip
    return 0


def phase(name: str) -> None:
    print(f"== {name}", file=sys.stderr, flush=True)


BAR_WIDTH: Final = 30


def bar(done: int, total: int) -> None:
    filled = min(BAR_WIDTH, BAR_WIDTH * done // total) if total else BAR_WIDTH
    print(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)
