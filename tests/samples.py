"""Valid Events API payloads: one event of every type, and batch builders."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from cdp_actors.dsr.model import DsrRequest, SubjectIdentity

_ids = itertools.count(1)
PRODUCT = {
    "id": "sku-1",
    "name": "Boots",
    "brand": "Acme",
    "category": "shoes",
    "variant": "red",
    "position": 1,
    "price": 49.5,
    "quantity": 2,
    "total_product_amount": 99.0,
    "custom_attributes": {"size": "42"},
}

EVENT_DATA: dict[str, dict[str, Any]] = {
    "session_start": {"session_uuid": "5c3b2a1e-0000-4000-8000-000000000001"},
    "session_end": {"session_duration_ms": 120000, "custom_attributes": {"reason": "idle"}},
    "screen_view": {"screen_name": "Home", "activity_type": "activity_started", "custom_flags": {"f": "v"}},
    "custom_event": {"event_name": "Played", "custom_event_type": "media", "custom_attributes": {"song": "x", "n": 3}},
    "crash_report": {
        "class_name": "Boom",
        "severity": "fatal",
        "message": "oops",
        "stack_trace": "at x",
        "exception_handled": False,
        "session_number": 3,
    },
    "opt_out": {"is_opted_out": False},  # true would stop the user's forwarding (tests/integration/test_opt_out.py)
    "first_run": {},
    "pre_attribution": {},
    "push_registration": {"register": True, "registration_token": "tok-1"},
    "application_state_transition": {
        "application_transition_type": "application_initialized",
        "is_first_run": True,
        "is_upgrade": False,
    },
    "push_message": {
        "push_message_token": "tok-1",
        "push_message_type": "received",
        "push_notification_payload": "{}",
        "network": "apn",
        "application_state": "background",
    },
    "network_performance": {
        "http_verb": "GET",
        "url": "https://x.io",
        "time_elapsed": 120,
        "bytes_in": 10,
        "bytes_out": 5,
        "response_code": 200,
    },
    "breadcrumb": {"label": "tapped", "session_number": 1},
    "profile": {"previous_mpid": 1, "current_mpid": 2, "profile_event_type": "login"},
    "push_reaction": {},
    "commerce_event": {
        "product_action": {
            "action": "purchase",
            "transaction_id": "t-1",
            "total_amount": 99.0,
            "tax_amount": 1.0,
            "shipping_amount": 2.0,
            "products": [PRODUCT],
        },
        "currency_code": "EUR",
        "shopping_cart": {"products": [PRODUCT]},
    },
    "user_attribute_change": {
        "user_attribute_name": "plan",
        "new": "gold",
        "old": "silver",
        "deleted": False,
        "is_new_attribute": False,
    },
    "user_identity_change": {
        "new": {"identity_type": "email", "identity": "n@x.io", "timestamp_unixtime_ms": 1},
        "old": {"identity_type": "email", "identity": "o@x.io", "timestamp_unixtime_ms": 1},
    },
    "uninstall": {},
}
COMMERCE_VARIANTS = {
    "promotion": {
        "promotion_action": {
            "action": "click",
            "promotions": [{"id": "p1", "name": "Spring", "creative": "banner", "position": "top"}],
        }
    },
    "impression": {"product_impressions": [{"product_impression_list": "search", "products": [PRODUCT]}]},
}


def event(event_type: str, ts: int | None = None, **data: Any) -> dict[str, Any]:
    body = {**EVENT_DATA[event_type], **data, "source_message_id": str(uuid.uuid4())}
    if ts is not None:
        body["timestamp_unixtime_ms"] = ts
    return {"event_type": event_type, "data": body}


def custom(name: str, ts: int, **attributes: Any) -> dict[str, Any]:
    return event("custom_event", ts, event_name=name, custom_event_type="navigation", custom_attributes=attributes)


def batch(customer_id: str | None = None, events: list | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "environment": "production",
        "source_request_id": f"req-{uuid.uuid4()}",
        "events": events if events is not None else [],
    }
    if customer_id:
        body["user_identities"] = {"customer_id": customer_id}
    body.update(fields)
    return body


def dsr_request(request_id: str, kind: str, customer_id: str, received_ms: int) -> DsrRequest:
    """A stored data subject request for one customer id, due at once (as the DSR actor hands it to its steps)."""
    return DsrRequest(
        subject_request_id=request_id,
        subject_request_type=kind,
        api_version="3.0",
        regulation="gdpr",
        submitted_time="2021-11-01T15:00:00Z",
        received_ms=received_ms,
        input_id=1,
        due_ms=received_ms,
        expected_completion_ms=received_ms,
        identities=[SubjectIdentity("customer_id", customer_id)],
    )
