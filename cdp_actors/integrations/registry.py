"""Output kinds and the module implementing each (one integration, one module, imported on use)."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel

from cdp_actors.integrations.base import Adapter

MODULES = {
    kind: f"cdp_actors.integrations.{kind}"
    for kind in (
        "webhook",
        "firehose",
        "mixpanel",
        "amplitude",
        "braze",
        "facebook_capi",
        "appsflyer",  # event outputs
        "facebook_audience",
        "snapchat_audience",
        "twitter_audience",
        "braze_audience",
        "pinterest_audience",
    )
}


AUDIENCE_ONLY = frozenset(kind for kind in MODULES if kind.endswith("_audience"))
"""Outputs that take audience memberships only; Firehose takes both events and memberships."""


TAKES_MEMBERSHIPS = AUDIENCE_ONLY | {"webhook", "firehose"}
"""Outputs an audience can be connected to: they receive its membership changes (webhook and Firehose as
`AudienceMembershipChangeRequest` JSON)."""


def takes_memberships(kind: str) -> bool:
    return kind in TAKES_MEMBERSHIPS


def module_of(kind: str) -> Any:
    if kind not in MODULES:
        raise ValueError(f"unknown output kind {kind!r}; known: {', '.join(sorted(MODULES))}")
    return importlib.import_module(MODULES[kind])


def settings_model(kind: str) -> type[BaseModel]:
    return module_of(kind).Settings


def build_adapter(kind: str, settings: BaseModel) -> Adapter:
    return module_of(kind).Adapter(settings)


def takes_events(kind: str) -> bool:
    return kind not in AUDIENCE_ONLY


def build_audience_adapter(kind: str, settings: BaseModel) -> Any | None:
    """The output's audience side (`AudienceAdapter` of a module that has both sides), or None."""
    module = module_of(kind)
    if hasattr(module, "AudienceAdapter"):
        return module.AudienceAdapter(settings)
    return module.Adapter(settings) if kind in AUDIENCE_ONLY else None
