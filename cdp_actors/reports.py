"""Counters behind the Event Forwarding report and the Activity overview, as pure functions.

Counts are kept per UTC hour under text keys `<hour>|<kind>|<environment>|<input>|<name>`, summed in
LMDB in the same transaction as the data they count (inbound by the shards, outbound and alerts by the
alert store), so a report reads a key range per hour whatever the traffic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from cdp_actors.schema.events import Batch, event_type_of

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
LATE_MS = 72 * HOUR_MS
"""Events stamped this long before their receipt are left out of the reports, as the product does."""
REVENUE_SCALE = 100  # revenue is counted in hundredths, so counters stay integers


def counter_key(hour: int, kind: str, environment: str, input_id: int, name: str = "") -> str:
    return f"{hour:010d}|{kind}|{environment}|{input_id}|{name}"


def parse_key(key: str) -> tuple[int, str, str, int, str]:
    hour, kind, environment, input_id, name = key.split("|", 4)
    return int(hour), kind, environment, int(input_id), name


MAX_COUNTED_NAME_BYTES = 400
"""An event name in a counter key, in UTF-8 bytes: the key (`counter_key`, about 50 bytes besides the name) must
stay under LMDB's 511-byte limit. mParticle truncates event names too (256 characters for S2S)."""


def counted_name(name: str) -> str:
    """The name as counted: cut to MAX_COUNTED_NAME_BYTES, on a character boundary."""
    if len(name) * 4 <= MAX_COUNTED_NAME_BYTES:
        return name
    return name.encode()[:MAX_COUNTED_NAME_BYTES].decode(errors="ignore")


def event_name(event: Any) -> str | None:
    data = event.data
    return getattr(data, "event_name", None) or getattr(data, "screen_name", None)


def inbound_counts(batch: Batch, input_id: int, received_ms: int, counts: Counter[tuple]) -> None:
    """Add the batch's report counts to `counts`, keyed by `counter_key`'s parts (formatted once per chunk,
    by `formatted`, because this runs for every batch a shard applies)."""
    hour, environment = received_ms // HOUR_MS, batch.environment or "production"
    earliest = received_ms - LATE_MS
    for event in batch.events:
        stamped = getattr(event.data, "timestamp_unixtime_ms", None)
        if stamped is not None and stamped < earliest:
            continue
        event_type = event_type_of(event)
        counts[(hour, "events", environment, input_id, "")] += 1
        counts[(hour, "type", environment, input_id, event_type)] += 1
        name = event_name(event)
        if name:
            counts[(hour, "name", environment, input_id, counted_name(name))] += 1
        if event_type == "session_start":
            counts[(hour, "sessions", environment, input_id, "")] += 1
        action = getattr(event.data, "product_action", None)
        if action is not None and action.action == "purchase" and action.total_amount:
            counts[(hour, "revenue", environment, input_id, "")] += round(action.total_amount * REVENUE_SCALE)


def formatted(counts: Counter[tuple]) -> dict[str, int]:
    return {counter_key(*parts): n for parts, n in counts.items()}


OPTED_OUT = "opted_out"
"""The counter kind of events not forwarded to an output because their user had opted out (per output id)."""


def outbound_key(received_ms: int, environment: str, input_id: int, output_id: int) -> str:
    return counter_key(received_ms // HOUR_MS, "forwarded", environment, input_id, str(output_id))


def day_text(day: int) -> str:
    """A UTC day number (days since the epoch) as YYYY-MM-DD."""
    return datetime.fromtimestamp(day * 86_400, tz=timezone.utc).date().isoformat()


def parse_day(text: str) -> int:
    """YYYY-MM-DD (UTC) as a day number; ValueError when it is not a date."""
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000) // DAY_MS


def day_range(since: str | None, until: str | None, now_ms: int, default_days: int = 7) -> tuple[int, int]:
    """The first and last day of a report: `until` defaults to today, `since` to `default_days` back."""
    last = parse_day(until) if until else now_ms // DAY_MS
    return (parse_day(since) if since else last - default_days + 1), last


def day_of(hour: int) -> str:
    return day_text(hour // 24)


def forwarding_report(counts: Iterable[tuple[str, int]], output_names: dict[int, tuple[str, str]]) -> dict[str, Any]:
    """Inbound counts per message type and event name, outbound counts per output, and per output the events
    withheld because their user had opted out."""
    types: Counter[str] = Counter()
    names: Counter[str] = Counter()
    outbound: Counter[int] = Counter()
    opted_out: Counter[int] = Counter()
    events = 0
    for key, n in counts:
        _hour, kind, _environment, _input, name = parse_key(key)
        if kind == "events":
            events += n
        elif kind == "type":
            types[name] += n
        elif kind == "name":
            names[name] += n
        elif kind == "forwarded":
            outbound[int(name)] += n
        elif kind == OPTED_OUT:
            opted_out[int(name)] += n
    return {
        "inbound": {
            "events": events,
            "message_types": dict(types.most_common()),
            "event_names": dict(names.most_common()),
        },
        "outbound": [
            {
                "output_id": output,
                "output": output_names.get(output, ("", ""))[0],
                "kind": output_names.get(output, ("", ""))[1],
                "events": n,
            }
            for output, n in sorted(outbound.items())
        ],
        "withheld_opted_out": [
            {"output_id": output, "output": output_names.get(output, ("", ""))[0], "events": n}
            for output, n in sorted(opted_out.items())
        ],
    }


def activity_rows(
    counts: Iterable[tuple[str, int]],
    active_users: dict[str, int],
    fatal_alerts: dict[str, int],
    environment: str | None,
    input_id: int | None,
) -> list[dict[str, Any]]:
    """Per UTC day: events received and forwarded, Fatal alerts, active users, sessions, revenue."""
    days: dict[str, Counter[str]] = {}
    for key, n in counts:
        hour, kind, env, source, _name = parse_key(key)
        if (environment and env != environment) or (input_id is not None and source != input_id):
            continue
        days.setdefault(day_of(hour), Counter())[kind] += n
    for day in {*active_users, *fatal_alerts}:
        days.setdefault(day, Counter())
    return [
        {
            "date": day,
            "events_received": c["events"],
            "events_forwarded": c["forwarded"],
            "fatal_alerts": fatal_alerts.get(day, 0),
            "active_users": active_users.get(day, 0),
            "sessions": c["sessions"],
            "revenue": c["revenue"] / REVENUE_SCALE,
        }
        for day, c in sorted(days.items())
    ]
