"""Outbox windows travel to forwarders in the rows' stored msgpack encoding."""

import msgspec

from cdp_actors.schema.records import OutboxRow, Window, decode_window


def row(n: int) -> OutboxRow:
    return OutboxRow(
        key=n.to_bytes(8, "big"),
        shard=1,
        connection_id=2,
        input_id=3,
        output_id=4,
        environment="production",
        mpid=-n,
        event_count=n,
        payload=b'{"n":%d}' % n,
        received_ms=n,
    )


def test_a_window_decodes_to_the_stored_rows_in_order_and_keeps_their_keys() -> None:
    rows = [row(n) for n in range(1, 4)]
    window = Window()
    for r in rows:
        window.add(r.key, msgspec.msgpack.encode(r))
    assert window.keys == [r.key for r in rows]
    assert decode_window(window.encoded()) == rows


def test_an_empty_window_decodes_to_no_rows() -> None:
    assert decode_window(Window().encoded()) == []
