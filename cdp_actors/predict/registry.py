"""Versioned models in the data directory: `<data_dir>/models/<name>/v<N>/` holds `model.joblib` (the fitted
classifier), `model.json` (its kind, goal, windows, feature list, vocabulary, the snapshot manifest it was trained
on) and `metrics.json`. A version is written to a temporary directory and renamed into place, so a reader never
sees half of one, and a version is never rewritten."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import joblib

from cdp_actors.errors import BadRequest, Conflict, NotFound
from cdp_actors.predict.features import Vocabulary

MODELS_DIR: Final = "models"
NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,47}")
"""Lower-case letters, digits and underscores, starting with a letter, at most 48: the name becomes the user
attributes `predicted_<name>_score` and `predicted_<name>_percentile`, which must stay valid attribute names."""
VERSION_PATTERN: Final = re.compile(r"v([1-9][0-9]*)")


@dataclass(frozen=True)
class Registered:
    """A model as registered: what scoring needs, and what `show` tells."""

    name: str
    version: int
    path: Path
    model: Any
    description: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def feature_names(self) -> list[str]:
        return list(self.description["features"])

    @property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_json(self.description["vocabulary"])


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BadRequest(
            "name must be 1 to 48 lower-case letters, digits or underscores, starting with a letter", "name"
        )
    return name


def models_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / MODELS_DIR


def versions(data_dir: str | Path, name: str) -> list[int]:
    folder = models_dir(data_dir) / check_name(name)
    if not folder.is_dir():
        return []
    found = (VERSION_PATTERN.fullmatch(entry.name) for entry in folder.iterdir() if entry.is_dir())
    return sorted(int(match.group(1)) for match in found if match)


def register(
    data_dir: str | Path, name: str, model: Any, description: dict[str, Any], metrics: dict[str, Any]
) -> Registered:
    """Store a new version (the next number) and return it."""
    folder = models_dir(data_dir) / check_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    version = (versions(data_dir, name) or [0])[-1] + 1
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        joblib.dump(model, staging / "model.joblib")
        _write_json(staging / "model.json", {**description, "name": name, "version": version})
        _write_json(staging / "metrics.json", metrics)
        target = folder / f"v{version}"
        try:
            os.rename(staging, target)  # fails if another job took the number first
        except OSError as error:
            raise Conflict(f"Model {name} version {version} was registered meanwhile; train again") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load(data_dir, name, version)


def load(data_dir: str | Path, name: str, version: int) -> Registered:
    path = models_dir(data_dir) / check_name(name) / f"v{version}"
    if not path.is_dir():
        raise NotFound(f"No model {name} version {version}")
    description = json.loads((path / "model.json").read_text())
    metrics = json.loads((path / "metrics.json").read_text())
    return Registered(name, version, path, joblib.load(path / "model.joblib"), description, metrics)


def latest(data_dir: str | Path, name: str) -> Registered:
    numbers = versions(data_dir, name)
    if not numbers:
        raise NotFound(f"No model named {name}")
    return load(data_dir, name, numbers[-1])


def list_models(data_dir: str | Path) -> list[dict[str, Any]]:
    """Every model name with its versions and its latest version's AUC, by name."""
    root = models_dir(data_dir)
    names = sorted(entry.name for entry in root.iterdir() if entry.is_dir()) if root.is_dir() else []
    listed = []
    for name in names:
        if not NAME_PATTERN.fullmatch(name) or not (numbers := versions(data_dir, name)):
            continue
        metrics = json.loads((root / name / f"v{numbers[-1]}" / "metrics.json").read_text())
        listed.append({"name": name, "versions": numbers, "latest": numbers[-1], "auc": metrics.get("auc")})
    return listed


def show(data_dir: str | Path, name: str, version: int | None = None) -> dict[str, Any]:
    """A model's description and metrics (the latest version unless one is named), without the fitted model."""
    registered = latest(data_dir, name) if version is None else load(data_dir, name, version)
    return {"description": registered.description, "metrics": registered.metrics, "path": str(registered.path)}


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
