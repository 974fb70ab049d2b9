"""IDSync request bodies (identify, search, login, logout, modify, alias) as msgspec Structs, and their validation.

The bodies: https://docs.mparticle.com/developers/idsync/http-api/
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

from cdp_actors.errors import BadRequest
from cdp_actors.schema.events import (
    INT64_MAX,
    INT64_MIN,
    NESTED_TOO_DEEPLY,
    Int64,
    identifier_too_long,
    identity_too_long,
)
from cdp_actors.schema.identity_types import canonical
from cdp_actors.schema.records import IdentityChange

Environment = Literal["production", "development"]
Platform = Literal["ios", "android", "web", "tvos", "roku", "alexa", "smart_tv", "fire", "xbox", "other"]


class ClientSdk(msgspec.Struct):
    platform: Platform | None = None
    sdk_vendor: str | None = None
    sdk_version: str | None = None


class IdentityRequest(msgspec.Struct):
    environment: Environment
    known_identities: dict[str, str | None]
    client_sdk: ClientSdk | None = None
    context: str | None = None
    request_id: str | None = None
    request_timestamp_ms: Int64 | None = None
    previous_mpid: str | int | None = None  # parse_mpid checks the range


class Change(msgspec.Struct):
    identity_type: str
    old_value: str | None
    new_value: str | None


class ModifyRequest(msgspec.Struct):
    identity_changes: list[Change]
    environment: Environment | None = None
    client_sdk: ClientSdk | None = None
    request_id: str | None = None
    request_timestamp_ms: Int64 | None = None


class AliasData(msgspec.Struct):
    source_mpid: int | str
    destination_mpid: int | str
    start_unixtime_ms: Int64 | None = None
    end_unixtime_ms: Int64 | None = None
    scope: Literal["device", "mpid"] | None = None
    device_application_stamp: str | None = None


class AliasRequest(msgspec.Struct):
    data: AliasData
    environment: Environment | None = None
    request_id: str | None = None
    request_type: str | None = None
    api_key: str | None = None


class RequestError(BadRequest):
    """An IDSync or edit request body that is not valid; `message` names the JSON path."""


T = TypeVar("T")


def decode_request(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as error:
        text = str(error)
        raise RequestError(text if " - at `" in text else f"{text} - at `$`") from None
    except RecursionError:  # msgspec recurses through nested JSON, unknown fields included
        raise RequestError(NESTED_TOO_DEEPLY) from None


def parse_mpid(value: int | str | None, field: str) -> int | None:
    if value is None or value == "":
        return None
    message = f"{field} must be a signed 64-bit integer, got {value!r:.40} - at `{mpid_path(field)}`"
    try:
        mpid = int(value)
    except ValueError:
        raise RequestError(message) from None
    if not INT64_MIN <= mpid <= INT64_MAX:
        raise RequestError(message)
    return mpid


def required_mpid(value: int | str | None, field: str) -> int:
    """An MPID the request cannot do without (a path segment, say)."""
    mpid = parse_mpid(value, field)
    if mpid is None:
        raise RequestError(f"{field} is required - at `{mpid_path(field)}`")
    return mpid


def mpid_path(field: str) -> str:
    """A field's path for an error message: the body's fields as `$.…`; `mpid` is the URL's."""
    return "mpid in the path" if field == "mpid" else f"$.{field}"


def check_identity_value(value: str, where: str) -> None:
    """An identity value the identity index can key: at most MAX_IDENTITY_BYTES of UTF-8. Python's JSON parser
    (the FastAPI apps) lets lone surrogates through, which have no UTF-8 at all."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise RequestError(f"Identity values must be valid Unicode (no lone surrogates) - at `{where}`") from None
    if identity_too_long(value):
        raise RequestError(identifier_too_long(value, where))


def known_identities(request: IdentityRequest) -> dict[str, str]:
    """The request's identities under canonical names; at least one is required."""
    found = {}
    for name, value in request.known_identities.items():
        identity_type = canonical(name)
        if identity_type is None:
            raise RequestError(f"Unknown identity type `{name}` - at `$.known_identities`")
        if value:
            check_identity_value(value, f"$.known_identities.{name}")
            found[identity_type] = value
    if not found:
        raise RequestError("known_identities must contain at least one identifier - at `$.known_identities`")
    return found


def identity_changes(request: ModifyRequest) -> list[IdentityChange]:
    if not request.identity_changes:
        raise RequestError("identity_changes must hold at least one change - at `$.identity_changes`")
    changes = []
    for n, change in enumerate(request.identity_changes):
        identity_type = canonical(change.identity_type)
        if identity_type is None:
            raise RequestError(f"Unknown identity type `{change.identity_type}` - at `$.identity_changes[{n}]`")
        if change.old_value is None and change.new_value is None:
            raise RequestError(f"old_value and new_value are both null - at `$.identity_changes[{n}]`")
        for field, value in (("old_value", change.old_value), ("new_value", change.new_value)):
            if value:
                check_identity_value(value, f"$.identity_changes[{n}].{field}")
        changes.append(IdentityChange(identity_type, change.old_value or None, change.new_value or None))
    return changes
