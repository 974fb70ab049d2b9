"""HandOff: which outbox rows a shard has handed to its forwarders, and which rows to hand next. No Ray.

Outbox rows are grouped in lanes, one per (forwarder, output); a lane's rows sort in acceptance order. A
forwarder holds at most the lane's window of rows at a time (`lane_window`: an audience-only output's membership
changes wait in the forwarder's bulk queue, unacknowledged, until an upload of up to 10,000, so its lanes get
`runtime.max_buffered_audience_changes`; other lanes `runtime.forwarder_window`): a lane's rows are handed in key
order, each once, after the last one handed, as acknowledgements make room; the rest wait in the outbox.
When a forwarder (re)starts it holds nothing, and every unacknowledged row of its lanes is handed again from the start.

The shard actor does the I/O around it: reading the outbox (`OutboxReader`), calling the forwarders.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, KeysView
from typing import TYPE_CHECKING

import msgspec

from cdp_actors.integrations.base import MembershipChange
from cdp_actors.integrations.registry import AUDIENCE_ONLY
from cdp_actors.schema.records import OutboxRow, Window
from cdp_actors.storage.lmdb_env import from_u64, u64

if TYPE_CHECKING:
    from cdp_actors.config import WorkspaceConfig

LANE_BYTES = 6  # 2 bytes of forwarder, 4 of output id
LaneWindow = Callable[[bytes], int]
"""lane -> how many of its rows its forwarder may hold at a time."""
OutboxReader = Callable[[bytes, bytes | None, int], Window]
"""(lane, the key after which to read or None for the lane's start, most rows) -> the lane's rows, in key order."""


def outbox_lane(forwarder: int, output_id: int) -> bytes:
    """Outbox rows are grouped per (forwarder, output): each group has its own delivery window, so an
    output that is down fills only its own window and never holds up the others."""
    return forwarder.to_bytes(2, "big") + output_id.to_bytes(4, "big")


def outbox_key(forwarder: int, output_id: int, seq: int, connection_id: int) -> bytes:
    return outbox_lane(forwarder, output_id) + u64(seq) + connection_id.to_bytes(4, "big")


AUDIENCE_MARK = 0x8000_0000
"""Set in the connection-id part of a membership row's key, so it never equals an event connection's row key."""


def membership_key(forwarder: int, output_id: int, seq: int, audience_id: int, change_no: int) -> bytes:
    """A membership row's outbox key: after the rows of batches up to `seq` in its lane; `change_no` (the shard's
    count of membership changes, kept in its meta) is its first change's number, which makes it unique and orders
    rows of the same `seq`. `audience_id` is 0 since a row carries several audiences' changes (rows of the same
    `seq` then order by change number, so a user's changes of one audience stay in order); a row stored before
    carried its one change's audience there."""
    return (
        outbox_lane(forwarder, output_id) + u64(seq) + (AUDIENCE_MARK | audience_id).to_bytes(4, "big") + u64(change_no)
    )


class MembershipChanges(msgspec.Struct, array_like=True, frozen=True):
    """A membership row's payload: what one batch (or one sweep or sync step) changed of one user's memberships of
    the audiences connected to one output, in evaluation order. One row per (user, batch, output), not per change:
    rows are what the outbox stores, the shard hands over and the forwarder acknowledges."""

    mpid: int
    identities: dict[str, str]
    timestamp_ms: int
    changes: list[tuple[int, str, str]]
    """(audience id, audience name, "add" | "delete")."""


_membership_payload = msgspec.msgpack.Decoder(MembershipChanges)
_one_change = msgspec.msgpack.Decoder(MembershipChange)


def membership_changes(row: OutboxRow) -> list[MembershipChange]:
    """A membership row's changes, each with a change id stable across resends: `<shard>-<number>`, the row key's
    last 8 bytes numbering its first change and the next numbers the others. A row stored before rows carried
    several changes holds one `MembershipChange` (a msgpack map, where `MembershipChanges` is an array)."""
    first = from_u64(row.key[-8:])
    try:
        payload = _membership_payload.decode(row.payload)
    except msgspec.ValidationError:
        change = _one_change.decode(row.payload)
        return [change if change.change_id else msgspec.structs.replace(change, change_id=f"{row.shard}-{first}")]
    mpid, identities, ts = payload.mpid, payload.identities, payload.timestamp_ms
    return [
        MembershipChange(audience_id, name, mpid, action, identities, ts, f"{row.shard}-{first + n}")
        for n, (audience_id, name, action) in enumerate(payload.changes)
    ]


def forwarder_of(lane: bytes) -> int:
    return int.from_bytes(lane[:2], "big")


def output_of(lane: bytes) -> int:
    return int.from_bytes(lane[2:LANE_BYTES], "big")


def lane_window(config: WorkspaceConfig) -> LaneWindow:
    """The window of each lane under `config`: `max_buffered_audience_changes` for an audience-only output (its
    bulk queue uploads at 10,000 changes or by age, and a window of 500 would hold it at 500 until the age),
    `forwarder_window` for the others (a lane of an output not in `config`, being removed, included)."""
    audience_only = {o.id for o in config.outputs if o.kind in AUDIENCE_ONLY}
    runtime = config.runtime
    return lambda lane: (
        runtime.max_buffered_audience_changes if output_of(lane) in audience_only else runtime.forwarder_window
    )


class HandOff:
    def __init__(self, lanes: Iterable[bytes], window: int | LaneWindow) -> None:
        self.window: LaneWindow = (lambda _lane: window) if isinstance(window, int) else window
        self.held: dict[bytes, set[bytes]] = {}  # handed, not acknowledged yet
        self.handed_upto: dict[bytes, bytes | None] = {}  # the last key handed
        self.add_lanes(lanes)

    def add_lanes(self, lanes: Iterable[bytes], window: LaneWindow | None = None) -> None:
        """Lanes of outputs added live: empty, handed from their start. Lanes already here keep their state.
        `window`: the lane windows from now on (of the configuration that added them)."""
        if window is not None:
            self.window = window
        for lane in lanes:
            if lane not in self.held:
                self.held[lane] = set()
                self.handed_upto[lane] = None

    @property
    def lanes(self) -> KeysView[bytes]:
        return self.held.keys()

    def next_windows(
        self, lanes: Iterable[bytes], read: OutboxReader, reachable: Callable[[int], bool]
    ) -> dict[int, list[Window]]:
        """Each lane's next rows, up to the room in its window, by forwarder (one call each), now held.
        A lane whose forwarder is not `reachable` is left as it is: that forwarder asks for a resend when it starts."""
        windows: dict[int, list[Window]] = defaultdict(list)
        for lane in lanes:
            room = self.window(lane) - len(self.held[lane])
            if room <= 0 or not reachable(forwarder_of(lane)):
                continue
            window = read(lane, self.handed_upto[lane], room)
            if window.keys:
                windows[forwarder_of(lane)].append(window)
                self.held[lane].update(window.keys)
                self.handed_upto[lane] = window.keys[-1]
        return windows

    def acknowledged(self, keys: list[bytes]) -> set[bytes]:
        """The forwarder delivered (or dropped) these rows: they leave its window. Returns the lanes that may
        have room now. A key held by no lane (acknowledged twice, or of a lane not handed from here) is ignored."""
        touched = {key[:LANE_BYTES] for key in keys} & self.held.keys()
        for lane in touched:
            self.held[lane].difference_update(keys)
        return touched

    def resend(self, forwarder: int, read: OutboxReader) -> list[Window]:
        """The forwarder (re)started and holds nothing: each of its lanes' first window of unacknowledged rows,
        from the lane's start, now held."""
        windows = []
        for lane in self.held:
            if forwarder_of(lane) == forwarder:
                window = read(lane, None, self.window(lane))
                self.held[lane] = set(window.keys)
                self.handed_upto[lane] = window.keys[-1] if window.keys else None
                windows.append(window)
        return windows

    def holding(self) -> int:
        """Rows handed to forwarders and not acknowledged yet."""
        return sum(len(keys) for keys in self.held.values())
