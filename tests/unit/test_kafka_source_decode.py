"""The Kafka source's pure helpers: record value → ingest items (the /ingest decoders), ids."""

from __future__ import annotations

import orjson
import pytest

from ingest_api.receivers.kafka_source import batch_id_for, decode_record, record_id

MAX = 1_000_000


def dec(value, fmt="auto", **kw):
    return decode_record(value, fmt, max_bytes=kw.pop("max_bytes", MAX), **kw)


LINE = b"Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0"


@pytest.mark.parametrize("fmt", ["raw", "auto"])
def test_raw_lines_are_text_plain_items(fmt):
    assert dec(LINE, fmt) == ([{"raw": LINE.decode()}], None)
    assert dec(LINE + b"\r\n", fmt) == ([{"raw": LINE.decode()}], None)
    items, err = dec(b"one\n\ntwo\n", fmt)  # several lines in a record: one event each, as /ingest
    assert items == [{"raw": "one"}, {"raw": "two"}] and err is None


@pytest.mark.parametrize("fmt", ["json", "auto"])
def test_json_events_are_ingest_events(fmt):
    doc = {"message": "disk full", "timestamp": "2024-05-01T10:00:00Z", "host": "db1",
           "service": "pg", "level": "error", "pid": 42, "id": "evt-1", "region": "eu"}
    items, err = dec(orjson.dumps(doc), fmt)
    assert err is None and items == [{
        "id": "evt-1", "message": "disk full", "ts": 1714557600.0, "host": "db1",
        "component": "pg", "level": "error", "pid": "42", "fields": {"region": "eu"}}]
    items, _ = dec(b'[{"message": "a"}, {"raw": "' + LINE + b'"}]', fmt)
    assert items == [{"message": "a"}, {"raw": LINE.decode()}]


def test_auto_takes_lines_that_only_look_like_json_as_lines():
    apache = b"[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/httpd/conf/workers2.properties"
    assert dec(apache) == ([{"raw": apache.decode()}], None)
    assert dec(b'{"no": "message key"}') == ([{"raw": '{"no": "message key"}'}], None)


@pytest.mark.parametrize("value,code", [
    (b"not json at all", "invalid_json"),
    (b'{"message": 5.5e999', "invalid_json"),
    (b'{"message": ["a list"]}', "invalid_event"),
    (b'"a string"', "invalid_event"),
    (b'{"message": "x", "timestamp": "yesterday"}', "invalid_event"),
    (b'{"message": "caf\xe9"}', "invalid_utf8"),
])
def test_json_format_keeps_undecodable_records_as_flagged_text(value, code):
    items, err = dec(value, "json")
    assert err == code and len(items) == 1
    item = items[0]
    assert item["message"] == value.decode("utf-8", errors="replace")
    assert item["fields"]["decode_error"] == code and item["fields"]["decode_detail"]


def test_raw_format_keeps_invalid_utf8_flagged_with_replacement_characters():
    items, err = dec(b"bad \xff byte", "raw")
    assert err == "invalid_utf8" and items[0]["message"] == "bad \ufffd byte"


def test_oversized_record_is_flagged_and_cut_to_the_line_limit():
    items, err = dec(b"x" * 5000, "raw", max_bytes=1000, max_line_length=100)
    assert err == "body_too_large" and items[0]["message"] == "x" * 100


@pytest.mark.parametrize("value", [None, b"", b"  \n", b"\n\n"])
def test_empty_records_and_tombstones_give_nothing(value):
    assert dec(value, "raw") == ([], None) and dec(value, "json") == ([], None)


def test_ids_are_deterministic_and_distinct():
    assert record_id("logs", 3, 1200, 1714557600123) == "kafka:logs:3:1200:1714557600123"
    assert record_id("logs", 3, 1200, 1714557600123, 2) == "kafka:logs:3:1200:1714557600123:2"
    assert record_id("logs", 3, 1200, None) == "kafka:logs:3:1200:-"
    # a re-created topic (offsets from 0 again) does not collide with its earlier records
    assert record_id("logs", 0, 0, 1) != record_id("logs", 0, 0, 2)
    assert batch_id_for({("logs", 1): (10, 19), ("logs", 0): (5, 9)}) == "kafka:logs:0@5-9,logs:1@10-19"
    many = {("t" * 100, p): (0, 1) for p in range(10)}
    bid = batch_id_for(many)
    assert bid.startswith("kafka-") and bid == batch_id_for(dict(reversed(list(many.items()))))


def test_an_unexpected_decoder_error_is_a_flagged_event_not_a_crash(monkeypatch):
    import ingest_api.receivers.kafka_source as ks

    def boom(*a, **kw):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(ks, "decode_body", boom)
    items, err = dec(b'{"message": "poison"}', "json")
    assert err == "decode_failed" and items[0]["message"] == '{"message": "poison"}'
    assert "RecursionError" in items[0]["fields"]["decode_detail"]


def test_a_record_nested_too_deep_is_kept_as_flagged_text():
    value = b'{"message": "m", "fields": ' + b'{"a": ' * 300 + b'1' + b'}' * 301
    items, error = decode_record(value, "json", max_bytes=10**6)
    assert error == "invalid_event" and len(items) == 1
    assert items[0]["fields"]["decode_error"] == "invalid_event" and "levels" in items[0]["fields"]["decode_detail"]
    orjson.dumps(items)  # what the spool will do with it
