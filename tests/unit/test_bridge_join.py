"""The bridge joins the records of the messages it takes together (issue 18, small requests):
a source's items of consecutive messages share a Kafka record within the record limits, in
their order. Against the real engines: tests/integration/test_bridge.py."""

from __future__ import annotations

import orjson

from bridge import Bridge


def _bridge(**kw) -> Bridge:
    return Bridge("amqp://unused", "q", "q.dlq", "127.0.0.1:1", "t", **kw)


def _item(source: str, i: str) -> dict:
    return {"id": i, "stream": source, "raw": f"line {i} " + "x" * 600}


def _records(bridge: Bridge, message: list[tuple[str, str]]) -> list[tuple[bytes, bytes, int]]:
    return bridge._records([_item(s, i) for s, i in message])[0]


def test_a_sources_items_of_consecutive_messages_share_a_record_in_order():
    bridge = _bridge(max_lines_per_record=3)
    messages = [[("a", "1"), ("b", "2")], [("a", "3")], [("b", "4"), ("a", "5"), ("a", "6")]]
    joined = bridge._join([_records(bridge, m) for m in messages])
    got = [(k.decode(), [it["id"] for it in orjson.loads(v)], n) for k, v, n in joined]
    # before, one record per source per message: five records; a record that would pass the
    # line limit starts a new one (the source's order kept)
    assert got == [("a", ["1", "3"], 2), ("b", ["2", "4"], 2), ("a", ["5", "6"], 2)]


def test_a_joined_record_stays_within_the_byte_limit():
    one = len(orjson.dumps([_item("a", "1")]))
    bridge = _bridge(max_record_bytes=2 * one)  # (the bridge's floor is 1,024 bytes)
    assert bridge.max_record_bytes == 2 * one
    joined = bridge._join([_records(bridge, [("a", str(i))]) for i in range(1, 6)])
    assert all(len(v) <= 2 * one for _, v, _ in joined)
    assert [it["id"] for _, v, _ in joined for it in orjson.loads(v)] == ["1", "2", "3", "4", "5"]
    assert len(joined) == 3


def test_one_message_is_sent_as_its_records():
    bridge = _bridge()
    records = _records(bridge, [("a", "1"), ("b", "2")])
    assert bridge._join([records]) is records
