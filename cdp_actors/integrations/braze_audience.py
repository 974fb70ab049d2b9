"""Braze audience output: mirrors audience membership as custom attributes with Braze's ``/users/track``.

Followed: mParticle "Braze Audience" docs (Braze cannot maintain segments through its API, so membership
is set as user attributes that Braze segments filter on; users are matched by the configured External
User ID identity; "Send Segments As" options: one attribute per segment named ``In <audience name>``
set to true, or the array attribute ``SegmentMembershipArray`` of audience ids) and Braze's REST API:
``POST /users/track`` with ``{"attributes": [{"external_id": ..., <attribute>: <value>}]}``, at most
75 attribute objects per request, ``Authorization: Bearer <REST API key>``, and the custom-attribute
array syntax ``{"add": [...]}`` / ``{"remove": [...]}``.

Guessed / simplified: leaving an audience sets ``In <audience name>`` to false (not null); the default
"Single String Attribute" option is not offered, because a comma-separated list of all of a user's
audiences cannot be written from one membership change (the array attribute can, with add/remove);
the audience's name stands in for its "External Name"; changes wait at most a minute by default
(mParticle does not describe bulk forwarding for Braze).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import field_validator

from cdp_actors.integrations.base import (
    PARTNER_STATUS_ALERTS,
    BulkMaxAge,
    HttpRequest,
    MembershipChange,
    PartnerUrl,
    Prepared,
    Secret,
    SettingsModel,
    bearer_json_headers,
    chunks,
    json_body,
    members_by_audience,
    sendable,
)
from cdp_actors.schema.identity_types import USER_TYPES

ARRAY_ATTRIBUTE = "SegmentMembershipArray"
ARRAY_CHANGES = {"add": "add", "delete": "remove"}


class Settings(SettingsModel):
    api_url: PartnerUrl
    """The Braze instance's REST endpoint, e.g. ``https://rest.iad-01.braze.com``."""
    api_key: Secret
    """A REST API key with the ``users.track`` permission."""
    external_id_type: str = "customer_id"
    """The user identity sent as Braze's ``external_id``."""
    send_segments_as: Literal["one_attribute_per_segment", "single_array_attribute", "both"] = (
        "one_attribute_per_segment"
    )
    bulk_max_age_s: BulkMaxAge = 60.0

    @field_validator("external_id_type")
    @classmethod
    def _is_user_identity(cls, value: str) -> str:
        if value not in USER_TYPES:
            raise ValueError(f"not a user identity type: {value!r}")
        return value


class Adapter:
    status_alerts: ClassVar[dict[int, str]] = PARTNER_STATUS_ALERTS
    max_batch: ClassVar[int] = 75

    def __init__(self, settings: Settings) -> None:
        self.url = f"{settings.api_url.rstrip('/')}/users/track"
        self.external_id_type = settings.external_id_type
        self.per_segment = settings.send_segments_as in ("one_attribute_per_segment", "both")
        self.array = settings.send_segments_as in ("single_array_attribute", "both")
        self.max_age_s = settings.bulk_max_age_s
        self.missing_description = f"no {settings.external_id_type} to send as the Braze external_id"
        self.headers = bearer_json_headers(settings.api_key)

    def prepare_memberships(self, changes: list[MembershipChange], now_ms: int) -> Prepared:
        prepared = Prepared()
        objects = [
            self._attributes(change, prepared)
            for members in members_by_audience(changes).values()
            for change in members
        ]
        objects = [attributes for attributes in objects if attributes]
        prepared.requests = [
            HttpRequest(self.url, json_body({"attributes": chunk}), self.headers)
            for chunk in chunks(objects, self.max_batch)
        ]
        return prepared

    def _attributes(self, change: MembershipChange, prepared: Prepared) -> dict[str, Any] | None:
        """The user's attributes object for this change, or None (rejected) without an external id."""
        external_id = change.identities.get(self.external_id_type, "").strip()
        if not sendable(change, ARRAY_CHANGES, bool(external_id), self.missing_description, prepared):
            return None
        attributes: dict[str, Any] = {"external_id": external_id}
        if self.per_segment:
            attributes[f"In {change.audience_name}"] = change.action == "add"
        if self.array:
            attributes[ARRAY_ATTRIBUTE] = {ARRAY_CHANGES[change.action]: [str(change.audience_id)]}
        return attributes
