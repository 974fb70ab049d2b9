"""Output kinds and the module implementing each (one integration, one module, imported on use)."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel

from cdp_actors.integrations.base import Adapter

MODULES = {
    kind: f"cdp_actors.integrations.{kind}"
    for kind in (
        "webhook", "firehose", "mixpanel", "amplitude", "braze", "facebook_capi", "appsflyer",  # event outputs
        "facebook_audience", "snapchat_audience", "twitter_audience", "braze_audience", "pinterest_audience",
    )
}  # fmt: skip


def module_of(kind: str) -> Any:
    if kind not in MODULES:
        raise ValueError(f"unknown output kind {kind!r}; known: {', '.join(sorted(MODULES))}")
    return importlib.import_module(MODULES[kind])


def settings_model(kind: str) -> type[BaseModel]:
    return module_of(kind).Settings


def build_adapter(kind: str, settings: BaseModel) -> Adapter:
    return module_of(kind).Adapter(settings)
