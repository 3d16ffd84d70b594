import gzip

import pytest

from ingest_api.app import parse_time
from ingest_api.decode import IngestError, decode_body


def dec(body: bytes, ct="application/json", enc=None, max_bytes=10_000):
    return decode_body(body, content_type=ct, content_encoding=enc, max_bytes=max_bytes)


def test_single_event_fields():
    [item] = dec(b'{"message": "m", "timestamp": "2024-01-01T00:00:00Z", "host": "h", '
                 b'"service": "svc", "level": "warn", "pid": 12, "id": "k1", "zone": "eu"}')
    assert item == {"id": "k1", "message": "m", "ts": 1704067200.0, "host": "h", "component": "svc",
                    "level": "warn", "pid": "12", "fields": {"zone": "eu"}}


def test_raw_line_event_and_text_plain():
    assert dec(b'{"raw": "Jun 14 15:16:01 combo x: y"}') == [{"raw": "Jun 14 15:16:01 combo x: y"}]
    assert dec(b"a\r\n\nb\n", ct="text/plain; charset=utf-8") == [{"raw": "a"}, {"raw": "b"}]


def test_gzip_ndjson():
    body = gzip.compress(b'{"message": "a"}\n{"message": "b"}')
    assert [i["message"] for i in dec(body, ct="application/x-ndjson", enc="gzip")] == ["a", "b"]


@pytest.mark.parametrize("ts,expected", [(1700000000, 1700000000.0), (1700000000123, 1700000000.123),
                                         ("2023-11-14T22:13:20+00:00", 1700000000.0),
                                         ("2023-11-14T22:13:20", 1700000000.0)])
def test_timestamp_forms(ts, expected):
    import orjson

    [item] = dec(orjson.dumps({"message": "m", "timestamp": ts}))
    assert item["ts"] == pytest.approx(expected)


def test_error_names_the_position():
    with pytest.raises(IngestError) as exc:
        dec(b'[{"message": "ok"}, {"message": 5.5}, {"nomessage": 1}]')
    assert exc.value.body["detail"] == "event 2: needs a 'message' (or 'raw') string"
    with pytest.raises(IngestError) as exc:
        dec(b'{"message": "a"}\n{"message": [1]}\n', ct="application/x-ndjson")
    assert "line 2" in exc.value.body["detail"]


def test_parse_time_forms():
    assert parse_time("15m", now=1000.0) == 100.0
    assert parse_time("1700000000") == 1700000000.0
    assert parse_time("2023-11-14T22:13:20Z") == 1700000000.0
    assert parse_time(None) is None
    with pytest.raises(IngestError):
        parse_time("soon")


def test_fields_nested_too_deep_are_refused_and_reasonable_nesting_is_kept():
    deep = '{"message": "m", "fields": ' + '{"a": ' * 150 + '1' + '}' * 151
    with pytest.raises(IngestError) as e:
        decode_body(deep.encode(), content_type="application/json", max_bytes=10**6)
    assert e.value.status == 422 and "more than 100 levels" in e.value.body["detail"]
    ok = '{"message": "m", "fields": ' + '{"a": [' * 45 + '1' + ']}' * 45 + '}'
    assert decode_body(ok.encode(), content_type="application/json", max_bytes=10**6)[0]["fields"]


@pytest.mark.parametrize("ct", ["image/png", "application/octet-stream", None])
def test_an_unknown_type_is_a_415_even_when_the_body_is_binary(ct):
    """A PNG sent as image/png was a 400 invalid_utf8: the type is checked first."""
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"
    with pytest.raises(IngestError) as e:
        dec(png, ct=ct)
    assert e.value.status == 415 and e.value.body["error"] == "unsupported_media_type"
    assert (repr(ct) if ct else "no Content-Type") in e.value.body["detail"]


def test_multi_member_gzip_is_decoded_whole_within_the_limit():
    from ingest_api.decode import IngestError, gunzip

    two = gzip.compress(b"one\n") + gzip.compress(b"two\n")
    assert [i["raw"] for i in dec(two, ct="text/plain", enc="gzip")] == ["one", "two"]
    assert gunzip(two + b"\0" * 8, 100) == b"one\ntwo\n"  # zero padding after the last member
    # the limit counts every member together
    with pytest.raises(IngestError) as exc:
        gunzip(gzip.compress(b"a" * 60) + gzip.compress(b"b" * 60), 100)
    assert exc.value.status == 413
    for broken in (two + b"garbage", two[:-3], gzip.compress(b"one\n") + gzip.compress(b"two\n")[:10]):
        with pytest.raises(IngestError) as exc:
            gunzip(broken, 100)
        assert exc.value.status == 400 and exc.value.body["error"] == "invalid_gzip"


def test_a_json_array_over_the_line_limit_is_refused_before_its_events_are_built():
    """650,000 tiny events in a 10 MB array became 650,000 dicts (~135 MB) before the 413."""
    import tracemalloc

    body = b"[" + b",".join([b'{"message":"a"}'] * 650_000) + b"]"
    tracemalloc.start()
    try:
        with pytest.raises(IngestError) as exc:
            decode_body(body, content_type="application/json", max_bytes=20_000_000, max_lines=100_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc.value.status == 413 and exc.value.body["limit"] == 100_000
    assert peak < 3 * len(body), peak  # the body and its text, not an object per event
    ok = b"[" + b",".join([b'{"message":"a"}'] * 90_000) + b"]"
    assert len(decode_body(ok, content_type="application/json", max_bytes=20_000_000,
                           max_lines=100_000)) == 90_000


def _loki_and_otlp_bodies(n: int) -> dict[str, tuple[bytes, str]]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from ingest_api.receivers.proto.loki_push import PushRequest

    push = PushRequest()
    stream = push.streams.add()
    stream.labels = '{job="x"}'
    export = ExportLogsServiceRequest()
    records = export.resource_logs.add().scope_logs.add()
    for _ in range(n):
        stream.entries.add().line = "a"
        records.log_records.add().body.string_value = "a"
    return {
        "loki-json": (b'{"streams":[{"stream":{"job":"x"},"values":['
                      + b",".join([b'["1","a"]'] * n) + b"]}]}", "application/json"),
        "loki-protobuf": (push.SerializeToString(), "application/x-protobuf"),
        "otlp-json": (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":['
                      + b",".join([b'{"body":{"stringValue":"a"}}'] * n) + b"]}]}]}",
                      "application/json"),
        "otlp-protobuf": (export.SerializeToString(), "application/x-protobuf"),
    }


_DECODE_IN_A_CHILD = """
import resource, sys
from ingest_api.decode import IngestError
from ingest_api.receivers.loki import decode_push_json, decode_push_protobuf
from ingest_api.receivers.otlp import decode_logs
kind, path, mime = sys.argv[1:]
body = open(path, "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    if kind.startswith("loki"):
        (decode_push_json if mime.endswith("json") else decode_push_protobuf)(body, 100_000)
    else:
        decode_logs(body, mime, 100_000)
    print("accepted")
except IngestError as exc:
    print(exc.status, exc.body["error"], exc.body["limit"])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_loki_and_otlp_bodies_over_the_line_limit_are_refused_before_they_are_parsed(tmp_path):
    """900,000 one-character entries (4.5–10 MB) took 73–236 MiB of parsed objects (JSON dicts,
    protobuf messages) before the 413 (issue 22 item 7): now counted on the wire first."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for kind, (body, mime) in _loki_and_otlp_bodies(900_000).items():
        path = tmp_path / kind
        path.write_bytes(body)
        out = subprocess.run([sys.executable, "-c", _DECODE_IN_A_CHILD, kind, str(path), mime],
                             capture_output=True, text=True, cwd=root, check=True).stdout.split("\n")
        assert out[0] == "413 too_many_lines 100000", (kind, out)
        assert int(out[1]) < 30, f"{kind}: peak RSS rose {out[1]} MiB to refuse {len(body):,} bytes"


def test_loki_and_otlp_bodies_at_the_line_limit_are_decoded_whole():
    from ingest_api.receivers.loki import decode_push
    from ingest_api.receivers.otlp import decode_logs

    for kind, (body, mime) in _loki_and_otlp_bodies(1_000).items():
        if kind == "loki-protobuf":
            import cramjam

            body = bytes(cramjam.snappy.compress_raw(body))  # Loki's protobuf is snappy'd
        if kind.startswith("loki"):
            items = decode_push(body, mime, max_bytes=2**20, max_lines=1_000)
            with pytest.raises(IngestError) as exc:
                decode_push(body, mime, max_bytes=2**20, max_lines=999)
        else:
            items = decode_logs(body, mime, max_lines=1_000)
            with pytest.raises(IngestError) as exc:
                decode_logs(body, mime, max_lines=999)
        assert len(items) == 1_000 and {i["message"] for i in items} == {"a"}, kind
        assert exc.value.status == 413, kind


def test_the_wire_count_leaves_a_malformed_protobuf_to_the_parser():
    from ingest_api.decode import check_protobuf_elements

    for junk in (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0a\x05ab", b"\x0b" * 40,
                 bytes(range(256)) * 3):
        check_protobuf_elements(junk, 3, (1, 2), "entries")  # no error of its own, no hang
