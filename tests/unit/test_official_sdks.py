"""What the official Python server SDK (PyPI `mparticle`) can send, our decoder takes and keeps.

Walks the SDK's own models: every allowed value of every enum is accepted and survives re-encoding (outputs
receive the batch re-encoded from our Structs, which drop fields they do not declare), and every field of
every model is one our Structs declare.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable
from typing import Any

import mparticle.models
import msgspec
import pytest
from mparticle import (
    AppEvent,
    ApplicationStateTransitionEvent,
    Batch,
    CommerceEvent,
    DeviceCurrentState,
    DeviceInformation,
    MediaInfo,
    ProductAction,
    ProfileEvent,
    PromotionAction,
    PushMessageEvent,
    SourceInformation,
)
from mparticle.api_client import ApiClient
from mparticle.models.event_base import EventBase

from cdp_actors.schema import events as ours
from cdp_actors.schema.events import decode_batch
from tests.samples import EVENT_DATA


def sdk_models() -> dict[str, type]:
    """Every model class of the SDK, by name."""
    found = {}
    for info in pkgutil.iter_modules(mparticle.models.__path__):
        module = importlib.import_module(f"mparticle.models.{info.name}")
        found |= {
            name: cls for name, cls in inspect.getmembers(module, inspect.isclass) if cls.__module__ == module.__name__
        }
    return found


def sdk_enums() -> set[tuple[str, str, str]]:
    """(model, attribute, allowed value) for every enum the SDK's generated setters check."""
    found = set()
    for name, cls in sdk_models().items():
        setters = re.findall(r"def (\w+)\(self, \w+\):[^@]*?allowed_values = (\[.*?\])", inspect.getsource(cls), re.S)
        found |= {(name, attribute, value) for attribute, values in setters for value in ast.literal_eval(values)}
    return found


def sent(*events: Any, **fields: Any) -> dict[str, Any]:
    """A batch as the SDK puts it on the wire (its `events` setter wraps each event with its `event_type`)."""
    batch = Batch(environment="development", **fields)
    batch.events = list(events)
    return ApiClient.sanitize_for_serialization(batch)


def app_event(**data: Any) -> AppEvent:
    return AppEvent("Played", custom_event_type="media", **data)


PLACES: dict[tuple[str, str], Callable[[str], dict[str, Any]]] = {
    ("AppEvent", "custom_event_type"): lambda v: sent(AppEvent("x", custom_event_type=v)),
    ("ApplicationStateTransitionEvent", "application_transition_type"): lambda v: sent(
        ApplicationStateTransitionEvent(application_transition_type=v)
    ),
    ("Batch", "environment"): lambda v: ApiClient.sanitize_for_serialization(Batch(environment=v)),
    ("DeviceCurrentState", "device_orientation"): lambda v: sent(
        app_event(device_current_state=DeviceCurrentState(device_orientation=v))
    ),
    ("DeviceCurrentState", "status_bar_orientation"): lambda v: sent(
        app_event(device_current_state=DeviceCurrentState(status_bar_orientation=v))
    ),
    ("DeviceInformation", "platform"): lambda v: sent(device_info=DeviceInformation(platform=v)),
    ("DeviceInformation", "att_authorization_status"): lambda v: sent(
        device_info=DeviceInformation(att_authorization_status=v)
    ),
    ("EventBase", "event_type"): lambda v: sent(EventBase(event_type=v, data=EVENT_DATA.get(v, {}))),
    ("MediaInfo", "action"): lambda v: sent(app_event(media_info=MediaInfo(action=v))),
    ("MediaInfo", "format"): lambda v: sent(app_event(media_info=MediaInfo(format=v))),
    ("MediaInfo", "quality"): lambda v: sent(app_event(media_info=MediaInfo(quality=v))),
    ("ProductAction", "action"): lambda v: sent(CommerceEvent(ProductAction(v))),
    ("ProfileEvent", "profile_event_type"): lambda v: sent(ProfileEvent(profile_event_type=v)),
    ("PromotionAction", "action"): lambda v: sent(CommerceEvent(promotion_action=PromotionAction(v))),
    ("PushMessageEvent", "push_message_type"): lambda v: sent(PushMessageEvent(push_message_type=v)),
    ("PushMessageEvent", "application_state"): lambda v: sent(PushMessageEvent(application_state=v)),
    # The Python Batch model has no source_info; the Node SDK's and the event models' batches do.
    ("SourceInformation", "channel"): lambda v: {
        **sent(),
        "source_info": ApiClient.sanitize_for_serialization(SourceInformation(channel=v)),
    },
}
ENUMS = sorted(sdk_enums())


def test_every_sdk_enum_has_a_place_in_a_batch() -> None:
    assert {(model, attribute) for model, attribute, _ in ENUMS} == set(PLACES)


@pytest.mark.parametrize(("model", "attribute", "value"), ENUMS, ids=[".".join(e) for e in ENUMS])
def test_every_sdk_enum_value_is_accepted_and_kept(model: str, attribute: str, value: str) -> None:
    batch = decode_batch(msgspec.json.encode(PLACES[model, attribute](value)))
    assert msgspec.json.encode(value) in msgspec.json.encode(batch)


MODELS: dict[str, type] = {
    "Batch": ours.Batch,
    "AppEvent": ours.CustomEventData,
    "CommerceEvent": ours.CommerceEventData,
    "ApplicationStateTransitionEvent": ours.ApplicationStateTransitionData,
    "BreadcrumbEvent": ours.BreadcrumbData,
    "CrashReportEvent": ours.CrashReportData,
    "FirstRunEvent": ours.EventData,
    "SessionStartEvent": ours.EventData,
    "SessionEndEvent": ours.SessionEndData,
    "ScreenViewEvent": ours.ScreenViewData,
    "OptOutEvent": ours.OptOutData,
    "PushRegistrationEvent": ours.PushRegistrationData,
    "PushMessageEvent": ours.PushMessageData,
    "NetworkPerformanceEvent": ours.NetworkPerformanceData,
    "ProfileEvent": ours.ProfileEventData,
    "UserAttributeChangeEvent": ours.UserAttributeChangeData,
    "EventData": ours.EventData,
    "ApplicationInformation": ours.ApplicationInfo,
    "DeviceInformation": ours.DeviceInfo,
    "DeviceCurrentState": ours.DeviceCurrentState,
    "GeoLocation": ours.Location,
    "MediaInfo": ours.MediaInfo,
    "Product": ours.Product,
    "ProductAction": ours.ProductAction,
    "ProductImpression": ours.ProductImpression,
    "Promotion": ours.Promotion,
    "PromotionAction": ours.PromotionAction,
    "ShoppingCart": ours.ShoppingCart,
    "ConsentState": ours.ConsentState,
    "GDPRConsentState": ours.Consent,
    "CCPAConsentState": ours.Consent,
    "BatchContext": ours.BatchContext,
    "DataPlanContext": ours.DataPlan,
    "AttributionInfo": ours.AttributionInfo,
    "SourceInformation": ours.SourceInfo,
    "UserIdentities": ours.UserIdentities,
}
NOT_MODELS = {"ApiResponse", "ApiResponseErrors", "EventBase"}  # responses, and the event envelope (a tagged union)


def sdk_fields(cls: type) -> set[str]:
    """The JSON keys a model serialises to (its `attribute_map`, read from source: some need constructor args)."""
    source = inspect.getsource(cls.__init__)
    return set(ast.literal_eval(re.search(r"self\.attribute_map = (\{.*?\})", source, re.S).group(1)).values())


def test_every_sdk_model_field_is_one_we_keep() -> None:
    models = sdk_models()
    assert set(models) - NOT_MODELS == set(MODELS)
    for name, struct in MODELS.items():
        missing = sdk_fields(models[name]) - set(struct.__struct_fields__)
        assert not missing, f"{name}: {sorted(missing)}"


def test_what_the_node_sdk_and_the_event_models_send() -> None:
    """Shapes the Node SDK (npm `mparticle`, its usage_example.js) and `@mparticle/event-models` allow, which the
    Python SDK does not: numbers, arrays and objects as custom flags, `All` as the channel, numbers as strings in
    a location, and fields only they declare. All accepted, and kept as sent (integers stay integers)."""
    flags = {"foo": "bar", "answer": 42, "arrays": ["foo", "bar", "baz"], "object": {"a": 1}}
    product = {"id": "sku", "price": 9.5, "quantity": 2}
    body = {
        "environment": "development",
        "source_info": {"channel": "All", "is_historical": True},
        "application_info": {"sideloaded_kits_count": 2},
        "consent_state": {"gdpr": {"marketing": {"purpose": "marketing", "consented": True}}},
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "Test App Event",
                    "custom_event_type": "other",
                    "custom_flags": flags,
                    "page_url": "https://x.io/p",
                    "location": {"latitude": "59.9", "longitude": 10.7},
                    "media_info": {"action": "play", "playback_position": 1.5},
                },
            },
            {"event_type": "screen_view", "data": {"screen_name": "Home", "custom_flags": flags}},
            {
                "event_type": "commerce_event",
                "data": {"product_action": {"action": "purchase", "products": [product]}, "custom_flags": flags},
            },
            {"event_type": "user_attribute_change", "data": {"user_attribute_name": "visits", "new": 3, "old": 2}},
            {"event_type": "validation_result", "data": {}},
        ],
    }
    kept = msgspec.to_builtins(decode_batch(msgspec.json.encode(body)))  # what build_outbound starts from
    assert kept["source_info"]["channel"] == "All" and kept["application_info"]["sideloaded_kits_count"] == 2
    custom, screen, commerce, change, _ = (event["data"] for event in kept["events"])
    assert custom["custom_flags"] == flags and screen["custom_flags"] == flags and commerce["custom_flags"] == flags
    assert custom["media_info"] == {"action": "play", "playback_position": 1.5}
    assert custom["page_url"] == "https://x.io/p" and custom["location"]["latitude"] == "59.9"
    quantity = commerce["product_action"]["products"][0]["quantity"]
    assert quantity == 2 and type(quantity) is int
    assert (change["new"], change["old"]) == (3, 2)
    assert kept["consent_state"]["gdpr"]["marketing"]["purpose"] == "marketing"
