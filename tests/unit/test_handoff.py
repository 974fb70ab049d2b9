"""The shard's hand-off of outbox rows to forwarders, without Ray: an in-memory outbox and forwarders that
record what they were handed stand in for LMDB and the forwarder actors."""

from __future__ import annotations

import bisect

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cdp_actors.profiles.handoff import LANE_BYTES, HandOff, forwarder_of, outbox_key, outbox_lane
from cdp_actors.schema.records import Window

LANES = [outbox_lane(forwarder, output) for forwarder in (0, 1) for output in (7, 9)]
FORWARDERS = (0, 1)


class Outbox:
    """Rows in key order, as the shard's LMDB outbox keeps them."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def write(self, key: bytes) -> None:
        bisect.insort(self.keys, key)

    def delete(self, keys: list[bytes]) -> None:
        self.keys = [key for key in self.keys if key not in set(keys)]

    def read(self, lane: bytes, after: bytes | None, limit: int) -> Window:
        window = Window()
        start = bisect.bisect_right(self.keys, after) if after else bisect.bisect_left(self.keys, lane)
        for key in self.keys[start:]:
            if key[:LANE_BYTES] != lane or len(window.keys) == limit:
                break
            window.add(key, b"\x90")
        return window

    def lane(self, lane: bytes) -> list[bytes]:
        return [key for key in self.keys if key[:LANE_BYTES] == lane]


def always(_: int) -> bool:
    return True


def rows(outbox: Outbox, lane: bytes, seqs: range) -> list[bytes]:
    forwarder, output = int.from_bytes(lane[:2], "big"), int.from_bytes(lane[2:], "big")
    keys = [outbox_key(forwarder, output, seq, 3) for seq in seqs]
    for key in keys:
        outbox.write(key)
    return keys


def handed_keys(windows: dict[int, list[Window]]) -> dict[int, list[bytes]]:
    return {forwarder: [key for window in handed for key in window.keys] for forwarder, handed in windows.items()}


def test_a_lane_hands_at_most_its_window_and_the_rest_as_acknowledgements_make_room() -> None:
    outbox, handoff = Outbox(), HandOff(LANES, window=3)
    keys = rows(outbox, LANES[0], range(1, 6))
    assert handed_keys(handoff.next_windows(handoff.lanes, outbox.read, always)) == {0: keys[:3]}
    assert handoff.next_windows(handoff.lanes, outbox.read, always) == {}  # the window is full
    outbox.delete(keys[:2])
    touched = handoff.acknowledged(keys[:2])
    assert touched == {LANES[0]}
    assert handed_keys(handoff.next_windows(touched, outbox.read, always)) == {0: keys[3:5]}
    assert handoff.holding() == 3


def test_each_forwarder_gets_its_own_lanes_in_one_call() -> None:
    outbox, handoff = Outbox(), HandOff(LANES, window=10)
    first = rows(outbox, LANES[1], range(1, 3))
    second = rows(outbox, LANES[2], range(1, 2))
    windows = handoff.next_windows(handoff.lanes, outbox.read, always)
    assert handed_keys(windows) == {0: first, 1: second}
    assert [len(handed) for handed in windows.values()] == [1, 1]


def test_a_forwarder_not_reachable_is_handed_nothing_and_its_rows_wait() -> None:
    outbox, handoff = Outbox(), HandOff(LANES, window=10)
    keys = rows(outbox, LANES[2], range(1, 3))
    assert handoff.next_windows(handoff.lanes, outbox.read, lambda forwarder: forwarder != 1) == {}
    assert handoff.holding() == 0
    assert handed_keys(handoff.next_windows(handoff.lanes, outbox.read, always)) == {1: keys}


def test_a_resend_hands_every_unacknowledged_row_again_from_the_lane_start_and_then_goes_on() -> None:
    outbox, handoff = Outbox(), HandOff(LANES, window=3)
    keys = rows(outbox, LANES[0], range(1, 8))
    other = rows(outbox, LANES[2], range(1, 2))
    handoff.next_windows(handoff.lanes, outbox.read, always)
    outbox.delete([keys[1]])
    handoff.acknowledged([keys[1]])
    resent = handoff.resend(0, outbox.read)
    assert [window.keys for window in resent] == [[keys[0], keys[2], keys[3]], []]  # lanes 0 and 1 of forwarder 0
    assert handoff.held[LANES[2]] == set(other)  # another forwarder's lanes are left as they are
    outbox.delete(keys[:4])
    assert handed_keys(handoff.next_windows(handoff.acknowledged(keys[:4]), outbox.read, always)) == {0: keys[4:7]}


def test_acknowledging_unknown_or_repeated_keys_changes_nothing() -> None:
    outbox, handoff = Outbox(), HandOff(LANES, window=2)
    keys = rows(outbox, LANES[0], range(1, 4))
    handoff.next_windows(handoff.lanes, outbox.read, always)
    unknown_lane = outbox_key(5, 7, 1, 3)
    never_handed = keys[2]
    assert handoff.acknowledged([unknown_lane]) == set()
    handoff.acknowledged([never_handed])
    assert handoff.held[LANES[0]] == set(keys[:2])
    outbox.delete([keys[0]])
    handoff.acknowledged([keys[0]])
    handoff.acknowledged([keys[0]])
    assert handed_keys(handoff.next_windows(handoff.lanes, outbox.read, always)) == {0: [keys[2]]}
    assert handoff.held[LANES[0]] == {keys[1], keys[2]}


class HandOffModel(RuleBasedStateMachine):
    """Rows written, windows handed, rows acknowledged in any order and forwarders restarted in any
    interleaving: each forwarder (since its last start) receives each lane's rows once each, in key order,
    never more than the window at a time, and every row is handed once the forwarder has room."""

    WINDOW = 3

    def __init__(self) -> None:
        super().__init__()
        self.outbox = Outbox()
        self.handoff = HandOff(LANES, self.WINDOW)
        self.seq = 0
        self.received: dict[bytes, list[bytes]] = {lane: [] for lane in LANES}  # since its forwarder's start
        self.reachable = set(FORWARDERS)

    def _take(self, windows: dict[int, list[Window]]) -> None:
        for forwarder, handed in windows.items():
            assert forwarder in self.reachable
            for window in filter(lambda window: window.keys, handed):  # a resend returns empty windows too
                lane = window.keys[0][:LANE_BYTES]
                assert all(key[:LANE_BYTES] == lane for key in window.keys)
                self.received[lane].extend(window.keys)

    @rule(lane=st.sampled_from(LANES), n=st.integers(1, 5))
    def write(self, lane: bytes, n: int) -> None:
        rows(self.outbox, lane, range(self.seq + 1, self.seq + 1 + n))
        self.seq += n

    @rule(lanes=st.sets(st.sampled_from(LANES)))
    def pump(self, lanes: set[bytes]) -> None:
        self._take(self.handoff.next_windows(lanes, self.outbox.read, lambda f: f in self.reachable))

    @rule(forwarder=st.sampled_from(FORWARDERS), up=st.booleans())
    def reach(self, forwarder: int, up: bool) -> None:
        (self.reachable.add if up else self.reachable.discard)(forwarder)

    @precondition(lambda self: self.handoff.holding() > 0)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        held = sorted(key for keys in self.handoff.held.values() for key in keys)
        keys = data.draw(st.lists(st.sampled_from(held), min_size=1, unique=True))
        self.outbox.delete(keys)
        touched = self.handoff.acknowledged(keys)
        self._take(self.handoff.next_windows(touched, self.outbox.read, self.reachable.__contains__))

    @rule(forwarder=st.sampled_from(FORWARDERS))
    def restart(self, forwarder: int) -> None:
        self.reachable.add(forwarder)
        for lane in LANES:
            if forwarder_of(lane) == forwarder:
                self.received[lane] = []
        resent = self.handoff.resend(forwarder, self.outbox.read)
        for window in resent:
            if window.keys:
                lane = window.keys[0][:LANE_BYTES]
                assert window.keys == self.outbox.lane(lane)[: self.WINDOW]  # from the lane's start, in order
        self._take({forwarder: resent})

    @rule(seq=st.integers(0, 50), forwarder=st.integers(0, 3))
    def acknowledge_unknown(self, seq: int, forwarder: int) -> None:
        before = {lane: set(keys) for lane, keys in self.handoff.held.items()}
        unknown = outbox_key(forwarder, 8, seq, 3)  # output 8 has no lane here
        assert self.handoff.acknowledged([unknown]) == set()
        assert self.handoff.held == before

    @invariant()
    def each_lane_is_handed_in_key_order_once_and_within_its_window(self) -> None:
        for lane, received in self.received.items():
            assert received == sorted(set(received)), "a row handed twice or out of order"
            held = self.handoff.held[lane]
            assert len(held) <= self.WINDOW
            assert held <= set(received) and held <= set(self.outbox.keys)

    @rule()
    def pump_every_lane(self) -> None:
        """What a reachable forwarder has not received yet is handed, in key order, up to the room in its window."""
        for lane in LANES:
            if forwarder_of(lane) not in self.reachable:
                continue
            received = set(self.received[lane])
            pending = [key for key in self.outbox.lane(lane) if key not in received]
            room = self.WINDOW - len(self.handoff.held[lane])
            windows = self.handoff.next_windows([lane], self.outbox.read, always)
            self._take(windows)
            assert [key for handed in windows.values() for window in handed for key in window.keys] == pending[:room]


TestHandOffModel = HandOffModel.TestCase
TestHandOffModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
