"""A data subject request as the runtime stores it, whatever API version submitted it.

The three API versions (v1 `opengdpr_requests`, v2 and v3 `requests`) differ only at the door: their identities
(v1/v2 an array of `{identity_type, identity_value, identity_format}`, v3 a dict keyed by type) are mapped to
mParticle's canonical identity types (`cdp_actors/schema/identity_types.py`) and MPIDs here, once.
"""

from __future__ import annotations

import msgspec

REQUEST_TYPES = ("erasure", "access", "portability")
STATUSES = ("pending", "in_progress", "completed", "cancelled")
PARTNER_STATUSES = ("pending", "skipped", "sent", "failed")


class SubjectIdentity(msgspec.Struct, frozen=True):
    identity_type: str
    """mParticle's canonical identity type (`customer_id`, `email`, `ios_idfv`, `other2`, ...)."""
    value: str


class PartnerStatus(msgspec.Struct):
    """The request's forwarding to one output that supports deletion (the status `extensions` entries)."""

    domain: str
    name: str
    status: str  # PARTNER_STATUSES
    status_message: str = ""


class DsrRequest(msgspec.Struct, kw_only=True):
    subject_request_id: str
    """Lowercase UUID v4, the client's."""
    subject_request_type: str  # REQUEST_TYPES
    api_version: str
    """"1.0", "2.0" or "3.0": the version that submitted it (and answers its status)."""
    regulation: str | None = None  # "gdpr" | "ccpa" (v1 has none)
    submitted_time: str
    """As the client sent it (RFC 3339)."""
    received_ms: int
    input_id: int
    """The input whose key and secret submitted it (its workspace is the `controller_id`)."""
    identities: list[SubjectIdentity] = []
    mpids: list[int] = []
    """MPIDs named in the request itself (the `mpid` extension identity; v1/v2 `extensions.mpids`)."""
    group_id: str | None = None
    status_callback_urls: list[str] = []
    skip_waiting_period: bool = False
    status: str = "pending"  # STATUSES
    due_ms: int
    """When the waiting period ends and processing may start."""
    expected_completion_ms: int
    started_ms: int | None = None
    completed_ms: int | None = None
    results_count: int | None = None
    """Access and portability: the profiles in the results file (0: no records, the results URL is then a 404)."""
    results_expire_ms: int | None = None
    """Access and portability: the results URL answers 410 Gone from then on (7 days after completion)."""
    partners: list[PartnerStatus] = []
