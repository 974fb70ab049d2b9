"""Every bound the Events API checks at the door: exactly at the limit accepted, one past refused naming the path.

And the property behind them: whatever `decode_batch` accepts, the pipeline can store (its identity keys and
de-duplication key fit LMDB, its integers fit msgpack's signed 64 bits) and re-decode.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp_actors.identity.index import identity_key
from cdp_actors.intake.log import srid_key
from cdp_actors.schema.events import (
    INT64_MAX,
    INT64_MIN,
    MAX_AMOUNT,
    MAX_CONSENT_PURPOSES,
    MAX_EVENT_ATTRIBUTES,
    MAX_EVENTS,
    MAX_IDENTITY_BYTES,
    MAX_MAP_ENTRIES,
    MAX_NAME_CHARS,
    MAX_SOURCE_REQUEST_ID_CHARS,
    MAX_USER_ATTRIBUTES,
    MAX_VALUE_CHARS,
    NESTED_TOO_DEEPLY,
    BatchError,
    batch_identities,
    decode_batch,
    decode_head,
    decode_raw_list,
    decode_valid_batch,
    user_identities_of,
)
from cdp_actors.schema.identity_types import DEVICE_TYPES, IDSYNC_TO_CANONICAL, USER_TYPES, canonical
from tests.samples import batch, custom, event

LMDB_MAX_KEY_BYTES = 511
"""py-lmdb's default `max_key_size`: what every identity, de-duplication and counter key must fit."""


def purchase(total: float, action: str = "purchase") -> dict[str, Any]:
    return event("commerce_event", 1, product_action={"action": action, "total_amount": total})


def with_event_data(**data: Any) -> dict[str, Any]:
    return batch("u", [custom("x", 1) | {"data": {"event_name": "x", "custom_event_type": "other", **data}}])


def names(count: int, length: int = 8) -> list[str]:
    return [f"{n:0{length}d}" for n in range(count)]


# (case, build(value), the value at the limit, the value one past it, the path the refusal names)
LIMITS: list[tuple[str, Callable[[Any], dict[str, Any]], Any, Any, str]] = [
    ("mpid max", lambda v: batch("u", mpid=v), INT64_MAX, INT64_MAX + 1, "$.mpid"),
    ("mpid min", lambda v: batch("u", mpid=v), INT64_MIN, INT64_MIN - 1, "$.mpid"),
    ("origin_mpid", lambda v: batch("u", origin_mpid=v), INT64_MAX, INT64_MAX + 1, "$.origin_mpid"),
    ("batch_id", lambda v: batch("u", batch_id=v), INT64_MAX, INT64_MAX + 1, "$.batch_id"),
    ("batch timestamp", lambda v: batch("u", timestamp_unixtime_ms=v), INT64_MAX, 2**64, "$.timestamp_unixtime_ms"),
    (
        "event timestamp",
        lambda v: batch("u", [custom("x", v)]),
        INT64_MAX,
        INT64_MAX + 1,
        "$.events[0].data.timestamp_unixtime_ms",
    ),
    ("session id", lambda v: with_event_data(session_id=v), INT64_MIN, INT64_MIN - 1, "$.events[0].data.session_id"),
    (
        "user attribute integer",
        lambda v: batch("u", user_attributes={"n": v}),
        INT64_MAX,
        2**64,
        "$.user_attributes[...]",
    ),
    (
        "event attribute integer",
        lambda v: with_event_data(custom_attributes={"n": v}),
        INT64_MIN,
        -(2**64),
        "$.events[0].data.custom_attributes[...]",
    ),
    (
        "product quantity",
        lambda v: batch(
            "u",
            [
                event(
                    "commerce_event",
                    1,
                    product_action={"action": "add_to_cart", "products": [{"id": "a", "quantity": v}]},
                )
            ],
        ),
        INT64_MAX,
        INT64_MAX + 1,
        "$.events[0].data.product_action.products[0].quantity",
    ),
    (
        "custom flag integer",
        lambda v: with_event_data(custom_flags={"n": v}),
        INT64_MAX,
        INT64_MAX + 1,
        "$.events[0].data.custom_flags[...]",
    ),
    (
        "email",
        lambda v: batch(None, user_identities={"email": v}),
        "a" * MAX_IDENTITY_BYTES,
        "a" * (MAX_IDENTITY_BYTES + 1),
        "$.user_identities.email",
    ),
    (
        "customer id in UTF-8 bytes",
        lambda v: batch(None, user_identities={"customer_id": v}),
        "é" * (MAX_IDENTITY_BYTES // 2),
        "é" * (MAX_IDENTITY_BYTES // 2) + "a",
        "$.user_identities.customer_id",
    ),
    (
        "IDSync spelling",
        lambda v: batch(None, user_identities={"other2": v}),
        "😀" * (MAX_IDENTITY_BYTES // 4),
        "😀" * (MAX_IDENTITY_BYTES // 4) + "a",
        "$.user_identities.other2",
    ),
    (
        "device id",
        lambda v: batch(None, device_info={"push_token": v}),
        "t" * MAX_IDENTITY_BYTES,
        "t" * (MAX_IDENTITY_BYTES + 1),
        "$.device_info.push_token",
    ),
    (
        "device_application_stamp",
        lambda v: batch(None, device_info={"device_application_stamp": v}),
        "ø" * (MAX_IDENTITY_BYTES // 2),
        "ø" * (MAX_IDENTITY_BYTES // 2 + 1),
        "$.device_info.device_application_stamp",
    ),
    (
        "mp_deviceid",
        lambda v: batch(None, mp_deviceid=v),
        "d" * MAX_IDENTITY_BYTES,
        "d" * (MAX_IDENTITY_BYTES + 1),
        "$.mp_deviceid",
    ),
    (
        "source_request_id",
        lambda v: batch("u", source_request_id=v),
        "r" * MAX_SOURCE_REQUEST_ID_CHARS,
        "r" * (MAX_SOURCE_REQUEST_ID_CHARS + 1),
        "$.source_request_id",
    ),
    (
        "deleted attributes",
        lambda v: batch("u", deleted_user_attributes=v),
        names(MAX_USER_ATTRIBUTES),
        names(MAX_USER_ATTRIBUTES + 1),
        "$.deleted_user_attributes",
    ),
    (
        "deleted attribute name",
        lambda v: batch("u", deleted_user_attributes=["a", v]),
        "n" * MAX_NAME_CHARS,
        "n" * (MAX_NAME_CHARS + 1),
        "$.deleted_user_attributes[1]",
    ),
    (
        "consent purposes",
        lambda v: batch("u", consent_state={"gdpr": {p: {"consented": True} for p in v}}),
        names(MAX_CONSENT_PURPOSES),
        names(MAX_CONSENT_PURPOSES + 1),
        "$.consent_state.gdpr",
    ),
    (
        "consent purpose name",
        lambda v: batch("u", consent_state={"gdpr": {v: {"consented": True}}}),
        "p" * MAX_NAME_CHARS,
        "p" * (MAX_NAME_CHARS + 1),
        '$.consent_state.gdpr["pppp',
    ),
    ("events", lambda v: batch("u", [{"event_type": "session_start"}] * v), MAX_EVENTS, MAX_EVENTS + 1, "$.events"),
    (
        "custom flags",
        lambda v: with_event_data(custom_flags=dict.fromkeys(v, "x")),
        names(MAX_EVENT_ATTRIBUTES),
        names(MAX_EVENT_ATTRIBUTES + 1),
        "$.events[0].data.custom_flags",
    ),
    (
        "integrations",
        lambda v: batch("u", integration_attributes={k: {"a": "b"} for k in v}),
        names(MAX_MAP_ENTRIES),
        names(MAX_MAP_ENTRIES + 1),
        "$.integration_attributes",
    ),
    (
        "integration attributes",
        lambda v: batch("u", integration_attributes={"braze": dict.fromkeys(v, "x")}),
        names(MAX_MAP_ENTRIES),
        names(MAX_MAP_ENTRIES + 1),
        '$.integration_attributes["braze"]',
    ),
    (
        "integration attribute key",
        lambda v: batch("u", integration_attributes={"braze": {v: "x"}}),
        "k" * MAX_NAME_CHARS,
        "k" * (MAX_NAME_CHARS + 1),
        '$.integration_attributes["braze"]["kkkk',
    ),
    (
        "integration attribute value",
        lambda v: batch("u", integration_attributes={"braze": {"k": v}}),
        "v" * MAX_VALUE_CHARS,
        "v" * (MAX_VALUE_CHARS + 1),
        '$.integration_attributes["braze"]["k"]',
    ),
    (
        "partner identities",
        lambda v: batch("u", partner_identities=dict.fromkeys(v, "x")),
        names(MAX_MAP_ENTRIES),
        names(MAX_MAP_ENTRIES + 1),
        "$.partner_identities",
    ),
    (
        "purchase total",
        lambda v: batch("u", [purchase(v)]),
        MAX_AMOUNT,
        MAX_AMOUNT * 1.000001,
        "$.events[0].data.product_action.total_amount",
    ),
    (
        "negative purchase",
        lambda v: batch("u", [purchase(v)]),
        0.0,
        -0.01,
        "$.events[0].data.product_action.total_amount",
    ),
    (
        "refund",
        lambda v: batch("u", [purchase(v, "refund")]),
        -MAX_AMOUNT,
        -MAX_AMOUNT * 1.000001,
        "$.events[0].data.product_action.total_amount",
    ),
]


def encodings(body: dict[str, Any]) -> list[bytes]:
    """The batch as UTF-8 JSON and as ASCII JSON with \\u escapes: both paths of the byte-length check."""
    return [msgspec.json.encode(body), json.dumps(body).encode()]


@pytest.mark.parametrize(("case", "build", "at_limit", "past", "path"), LIMITS, ids=[c[0] for c in LIMITS])
def test_at_the_limit_accepted_one_past_refused(
    case: str, build: Callable, at_limit: Any, past: Any, path: str
) -> None:
    for raw in encodings(build(at_limit)):
        decode_batch(raw)
    for raw in encodings(build(past)):
        with pytest.raises(BatchError) as refused:
            decode_batch(raw)
        assert f"- at `{path}" in refused.value.message, refused.value.message


def test_identity_refusals_say_identifier_too_long() -> None:
    for body in (batch(None, user_identities={"email": "a" * 481}), batch(None, user_identities={"email": "é" * 241})):
        with pytest.raises(BatchError, match="^Identifier Too Long: identity values are at most 480 bytes"):
            decode_batch(msgspec.json.encode(body))


def test_every_identity_spelling_the_index_reads_is_bounded() -> None:
    """The identity index reads any IDSync spelling of a user identity, and every device type, off a batch; each
    must be a validated field, or a long value would reach an LMDB key unchecked."""
    spellings = [n for n in (*USER_TYPES, *IDSYNC_TO_CANONICAL) if canonical(n) in USER_TYPES]
    for name in spellings:
        raw = msgspec.json.encode(batch(None, user_identities={name: "x" * (MAX_IDENTITY_BYTES + 1)}))
        with pytest.raises(BatchError, match="Identifier Too Long"):
            decode_batch(raw)
    for name in DEVICE_TYPES:
        raw = msgspec.json.encode(batch(None, device_info={name: "x" * (MAX_IDENTITY_BYTES + 1)}))
        with pytest.raises(BatchError, match="Identifier Too Long"):
            decode_batch(raw)


def test_identity_spellings_reach_the_profile_as_the_index_sees_them() -> None:
    raw = msgspec.json.encode(
        batch(
            None,
            user_identities={"other2": "o2", "customerid": "c", "other_id_3": "o3"},
            device_info={"device_application_stamp": "das"},
        )
    )
    assert user_identities_of(decode_batch(raw)) == {"other_id_2": "o2", "customer_id": "c", "other_id_3": "o3"}
    assert batch_identities(decode_head(raw)) == {
        "other_id_2": "o2",
        "customer_id": "c",
        "other_id_3": "o3",
        "device_application_stamp": "das",
    }


def nested(depth: int) -> bytes:
    return b'{"environment": "production", "unknown": ' + b"[" * depth + b"]" * depth + b"}"


def test_deep_nesting_is_a_400_not_a_recursion_error() -> None:
    decode_batch(nested(200))  # skipped: an unknown field, nested well past anything a batch needs
    with pytest.raises(BatchError) as refused:
        decode_batch(nested(100_000))
    assert refused.value.message == NESTED_TOO_DEEPLY
    with pytest.raises(BatchError, match="nested deeper"):
        decode_raw_list(b"[" + nested(100_000) + b"]")


def test_breadcrumbs_are_typed_so_they_cannot_nest() -> None:
    crumbs = ["tapped", {"label": "opened", "timestamp_unixtime_ms": 5, "session_number": 2}]
    decode_batch(msgspec.json.encode(batch("u", [event("crash_report", 1, breadcrumbs=crumbs)])))
    with pytest.raises(BatchError, match=r"breadcrumbs\[0\]"):
        decode_batch(msgspec.json.encode(batch("u", [event("crash_report", 1, breadcrumbs=[[["deep"]]])])))


# ---- the property: what the door accepts, the pipeline can keep -----------------------------------------

_texts = st.one_of(st.text(max_size=8), st.text(min_size=100, max_size=700), st.just("é" * 241))
_ints = st.one_of(
    st.integers(INT64_MIN - 5, INT64_MIN + 5),
    st.integers(INT64_MAX - 5, INT64_MAX + 5),
    st.integers(-(2**70), 2**70),
    st.integers(-5, 5),
)
_scalars = st.one_of(_ints, _texts, st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none())
_identity_names = st.sampled_from(["customer_id", "customerid", "email", "other2", "other_id_5", "mobile_number"])


@st.composite
def hostile_batches(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"environment": "production"}
    if draw(st.booleans()):
        body["source_request_id"] = draw(_texts)
    if draw(st.booleans()):
        body["mpid"] = draw(_ints)
    body["user_identities"] = draw(st.dictionaries(_identity_names, _texts, max_size=3))
    body["device_info"] = draw(st.dictionaries(st.sampled_from(DEVICE_TYPES), _texts, max_size=2))
    if draw(st.booleans()):
        body["mp_deviceid"] = draw(_texts)
    body["user_attributes"] = draw(st.dictionaries(st.text(max_size=5), _scalars, max_size=3))
    stamps = draw(st.lists(_ints, max_size=3))
    body["events"] = [
        {
            "event_type": "custom_event",
            "data": {
                "event_name": "e",
                "custom_event_type": "other",
                "timestamp_unixtime_ms": ts,
                "custom_attributes": {"v": draw(_scalars)},
            },
        }
        for ts in stamps
    ]
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_batches(), st.booleans())
def test_what_the_door_accepts_fits_the_stores(body: dict[str, Any], ascii_json: bool) -> None:
    raw = json.dumps(body).encode() if ascii_json else msgspec.json.encode(body)
    try:
        accepted = decode_batch(raw)
    except BatchError:
        return
    assert decode_valid_batch(raw) == accepted
    msgspec.msgpack.encode(accepted)  # the shard's encoding: every integer within signed 64 bits
    assert msgspec.json.decode(msgspec.json.encode(accepted), type=type(accepted)) == accepted
    for identity_type, value in batch_identities(decode_head(raw)).items():
        assert len(identity_key(identity_type, value)) <= LMDB_MAX_KEY_BYTES
    if accepted.source_request_id:
        age_key = 8 + len(srid_key(2**31, accepted.source_request_id))
        assert age_key <= LMDB_MAX_KEY_BYTES
