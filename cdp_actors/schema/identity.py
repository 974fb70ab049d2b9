"""IDSync request bodies (reference §2.2, §2.4, §2.6) as msgspec Structs, and their validation."""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

from cdp_actors.identity.strategy import IdentityChange
from cdp_actors.identity.types import canonical

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
    request_timestamp_ms: int | None = None
    previous_mpid: str | int | None = None


class Change(msgspec.Struct):
    identity_type: str
    old_value: str | None
    new_value: str | None


class ModifyRequest(msgspec.Struct):
    identity_changes: list[Change]
    environment: Environment | None = None
    client_sdk: ClientSdk | None = None
    request_id: str | None = None
    request_timestamp_ms: int | None = None


class AliasData(msgspec.Struct):
    source_mpid: int | str
    destination_mpid: int | str
    start_unixtime_ms: int | None = None
    end_unixtime_ms: int | None = None
    scope: Literal["device", "mpid"] | None = None
    device_application_stamp: str | None = None


class AliasRequest(msgspec.Struct):
    data: AliasData
    environment: Environment | None = None
    request_id: str | None = None
    request_type: str | None = None
    api_key: str | None = None


class RequestError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


T = TypeVar("T")


def decode_request(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as error:
        raise RequestError(str(error)) from None


def parse_mpid(value: int | str | None, field: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        mpid = int(value)
    except ValueError:
        raise RequestError(f"{field} must be a 64-bit integer, got {value!r}") from None
    if not -(2**63) <= mpid < 2**63:
        raise RequestError(f"{field} must be a 64-bit integer, got {value!r}")
    return mpid


def known_identities(request: IdentityRequest) -> dict[str, str]:
    """The request's identities under canonical names; at least one is required."""
    found = {}
    for name, value in request.known_identities.items():
        identity_type = canonical(name)
        if identity_type is None:
            raise RequestError(f"Unknown identity type `{name}` - at `$.known_identities`")
        if value:
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
        changes.append(IdentityChange(identity_type, change.old_value or None, change.new_value or None))
    return changes
