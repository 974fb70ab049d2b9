"""Read views of a profile: the Profile API body and the /cdp user detail.

Profile API: https://docs.mparticle.com/developers/profile-api/

Both combine the IdentityIndex's record (the authoritative identities) with the shard's profile view
(`ShardCore.profile`: attributes and consent as `[value, ts]` pairs, history, first/last seen).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cdp_actors.identity.strategy import IdentityRecord
from cdp_actors.reports import day_text
from cdp_actors.schema.identity_types import is_device_type, profile_api_name
from cdp_actors.schema.records import DayActivity

PROFILE_FIELDS = ("device_identities", "user_identities", "user_attributes", "audience_memberships", "attribution")
RESERVED_ATTRIBUTES = (
    "$firstname",
    "$lastname",
    "$age",
    "$gender",
    "$mobile",
    "$address",
    "$city",
    "$state",
    "$zip",
    "$country",
)


def _as_strings(value: Any) -> str | list[str]:
    """The Profile API stores every attribute value as a string, or a list of strings."""
    if isinstance(value, list):
        return [_as_strings(v) for v in value]  # type: ignore[misc]
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def live_attributes(profile: dict[str, Any] | None) -> dict[str, Any]:
    """The user attributes with a value, calculated attribute values included (a CA's name wins, as outbound)."""
    attributes = (profile or {}).get("attributes", {})
    live = {name: value for name, (value, _ts) in attributes.items() if value is not None}
    return {**live, **(profile or {}).get("calculated", {})}


def identity_entries(record: IdentityRecord | None, devices: bool) -> list[dict[str, str]]:
    return [
        {"type": profile_api_name(t), "encoding": "none", "value": value}
        for t, values in (record.identities if record else {}).items()
        if is_device_type(t) == devices
        for value in values
    ]


def audience_memberships(profile: dict[str, Any] | None, names: Mapping[int, str]) -> list[dict[str, Any]]:
    """The real-time audiences the user is a member of now (`Profile.audiences`), named from the configuration; an
    audience removed since is left out. Memberships do not expire here: `expiration_timestamp_ms` is null."""
    entered = {int(audience_id): ms for audience_id, ms in ((profile or {}).get("audiences") or {}).items()}
    return [{"audience_id": audience_id, "audience_name": names[audience_id], "expiration_timestamp_ms": None}
            for audience_id in sorted(entered) if audience_id in names]  # fmt: skip


def profile_opted_out(profile: dict[str, Any] | None) -> bool:
    """Whether the stored profile (as `ShardCore.profile` gives it) is opted out: `opt_out` is [is_opted_out, ms]."""
    opt_out = (profile or {}).get("opt_out")
    return bool(opt_out) and opt_out[0] is True


def opt_out_view(profile: dict[str, Any]) -> dict[str, Any] | None:
    """The user's latest opt_out event: whether it opted out and its time; None when the user never sent one."""
    opt_out = profile.get("opt_out")
    return {"is_opted_out": opt_out[0], "timestamp_unixtime_ms": opt_out[1]} if opt_out else None


def profile_api_body(
    mpid: int,
    record: IdentityRecord | None,
    profile: dict[str, Any] | None,
    fields: list[str],
    audience_names: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "mpid": mpid,
        "created_timestamp_ms": (record.created_ms if record else 0) or (profile or {}).get("first_seen_ms"),
        "last_stored_timestamp_ms": (profile or {}).get("last_seen_ms"),
        "is_opted_out": profile_opted_out(profile),
        "limit_ad_tracking": None,
        "account_userattributes": None,
    }
    if "device_identities" in fields:
        body["device_identities"] = identity_entries(record, devices=True)
    if "user_identities" in fields:
        body["user_identities"] = identity_entries(record, devices=False)
    if "user_attributes" in fields:
        body["user_attributes"] = {name: _as_strings(value) for name, value in live_attributes(profile).items()}
    if "audience_memberships" in fields:
        body["audience_memberships"] = audience_memberships(profile, audience_names or {})
    if "attribution" in fields:
        body["attribution"] = []  # shape undocumented by the Profile API page; install attribution is not stored yet
    return body


def ordered_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Reserved attributes ($firstname, ...) first, in their documented order, then the rest by name."""
    reserved = {name: attributes[name] for name in RESERVED_ATTRIBUTES if name in attributes}
    return {**reserved, **{name: attributes[name] for name in sorted(attributes) if name not in reserved}}


def user_detail(mpid: int, record: IdentityRecord | None, profile: dict[str, Any] | None) -> dict[str, Any]:
    profile = profile or {}
    devices = {
        name: {"value": value, "last_seen_ms": ts} for name, (value, ts) in profile.get("device_identities", {}).items()
    }
    return {
        "mpid": mpid,
        "orphaned": bool(record and record.orphaned),
        "identities": {t: v for t, v in (record.identities if record else {}).items() if not is_device_type(t)},
        "devices": devices,
        "attributes": ordered_attributes(
            {
                name: {"value": value, "updated_ms": ts}
                for name, (value, ts) in profile.get("attributes", {}).items()
                if value is not None
            }
        ),
        "calculated": dict(sorted(profile.get("calculated", {}).items())),
        "audiences": {str(audience): entered for audience, entered in sorted(profile.get("audiences", {}).items())},
        "consent": profile.get("consent", {}),
        "opt_out": opt_out_view(profile),
        "first_seen_ms": profile.get("first_seen_ms"),
        "last_seen_ms": profile.get("last_seen_ms"),
        "inputs": profile.get("inputs", []),
        "batches": profile.get("batches", 0),
        "events": profile.get("events", 0),
        "status_messages": profile.get("status_messages", []),
        "recent_events": profile.get("recent_events", []),
    }


def identity_report(
    shard_reports: list[dict[tuple[int, int], DayActivity]], input_names: dict[int, str]
) -> list[dict[str, Any]]:
    """Merge the shards' per-(day, input) activity into report rows, by day then input."""
    merged: dict[tuple[int, int], dict[str, Any]] = {}
    for report in shard_reports:
        for key, entry in report.items():
            into = merged.setdefault(key, {"active": 0, "known": 0, "coverage": {}})
            into["active"] += entry.active
            into["known"] += entry.known
            for identity_type, n in entry.coverage.items():
                into["coverage"][identity_type] = into["coverage"].get(identity_type, 0) + n
    rows = []
    for (day, input_id), entry in sorted(merged.items()):
        active = entry["active"]
        rows.append(
            {
                "date": day_text(day),
                "input_id": input_id,
                "input": input_names.get(input_id, ""),
                "active_profiles": active,
                "known_profiles": entry["known"],
                "anonymous_profiles": active - entry["known"],
                "identifier_coverage": {t: round(n / active, 4) for t, n in sorted(entry["coverage"].items())},
            }
        )
    return rows


def backfill_summary(shard_statuses: list[dict[int, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per calculated attribute id: its activation backfill over all shards (`ProfileShard.backfill_status`),
    done and total summed, finished when every shard is, the ETA of the slowest shard (None: not known yet)."""
    merged: dict[int, dict[str, Any]] = {}
    for status in shard_statuses:
        for ca_id, job in status.items():
            into = merged.setdefault(
                ca_id, {"generation": job["generation"], "done": 0, "total": 0, "finished": True, "eta_s": 0.0}
            )
            into["generation"] = max(into["generation"], job["generation"])
            into["done"] += job["done"]
            into["total"] += job["total"]
            into["finished"] = into["finished"] and job["finished"]
            eta = job["eta_s"]
            into["eta_s"] = None if eta is None or into["eta_s"] is None else max(into["eta_s"], eta)
    return {str(ca_id): merged[ca_id] for ca_id in sorted(merged)}
