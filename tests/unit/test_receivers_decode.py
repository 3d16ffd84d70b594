"""Pure decoding of the shipper protocols: Elasticsearch _bulk, Loki push, OTLP/HTTP logs."""

from __future__ import annotations

import gzip
import zlib

import cramjam
import orjson
import pytest

from ingest_api.decode import IngestError, decode_content_encoding, gunzip
from ingest_api.receivers import assign_ids
from ingest_api.receivers.es_bulk import BulkRequestError, parse_bulk, source_to_event
from ingest_api.receivers.loki import (
    decode_push,
    decode_push_json,
    decode_push_protobuf,
    parse_labels,
    snappy_decompress,
)
from ingest_api.receivers.otlp import decode_logs, inflate, severity_level

# -- a protobuf writer for Loki's push.proto, independent of the receiver's own descriptors -------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, payload: bytes | str) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def loki_push_bytes(streams) -> bytes:
    """logproto.PushRequest wire bytes: streams = [(labels, [(ns, line, {metadata})])].

    Field numbers from Loki's pkg/push/push.proto: PushRequest.streams=1; StreamAdapter.labels=1,
    entries=2; EntryAdapter.timestamp=1 (google.protobuf.Timestamp seconds=1, nanos=2), line=2,
    structuredMetadata=3 (LabelPairAdapter name=1, value=2)."""
    req = b""
    for labels, entries in streams:
        stream = _len_field(1, labels)
        for ns, line, meta in entries:
            ts = _int_field(1, ns // 10**9) + _int_field(2, ns % 10**9)
            entry = _len_field(1, ts) + _len_field(2, line)
            for name, value in meta.items():
                entry += _len_field(3, _len_field(1, name) + _len_field(2, value))
            stream += _len_field(2, entry)
        req += _len_field(1, stream)
    return req


# -- decode.py helpers ---------------------------------------------------------------------------
def test_public_gzip_helpers_keep_their_limits():
    assert gunzip(gzip.compress(b"abc"), 10) == b"abc"
    assert decode_content_encoding(b"abc", None, 10) == b"abc"
    assert decode_content_encoding(b"abc", "identity", 10) == b"abc"
    assert decode_content_encoding(gzip.compress(b"abc"), " GZIP ", 10) == b"abc"
    with pytest.raises(IngestError) as e:
        gunzip(gzip.compress(b"x" * 100), 10)
    assert e.value.status == 413
    with pytest.raises(IngestError) as e:
        decode_content_encoding(b"abc", "br", 10)
    assert e.value.status == 415
    with pytest.raises(IngestError) as e:
        gunzip(b"not gzip", 10)
    assert e.value.status == 400


def test_generated_ids_are_stable_per_body_and_keep_given_ones():
    a = assign_ids([{"message": "x"}, {"message": "y", "id": "mine"}], "loki", b"body")
    b = assign_ids([{"message": "x"}, {"message": "y"}], "loki", b"body")
    c = assign_ids([{"message": "x"}], "loki", b"other body")
    assert a[0]["id"] == b[0]["id"] and a[0]["id"].startswith("loki-") and a[0]["id"].endswith("-0")
    assert a[1]["id"] == "mine" and b[1]["id"].endswith("-1")
    assert c[0]["id"] != a[0]["id"]


# -- Elasticsearch _bulk ------------------------------------------------------------------------
def _nd(*objs) -> bytes:
    return b"".join((o if isinstance(o, bytes) else orjson.dumps(o)) + b"\n" for o in objs)


def test_bulk_maps_ecs_nested_and_dotted_fields():
    body = _nd({"index": {"_index": "filebeat-8", "_id": "doc-1"}},
               {"@timestamp": "2024-05-01T10:00:00.250Z", "message": "GET /x 500",
                "host": {"name": "web1", "ip": ["10.0.0.1"]}, "log": {"level": "error",
                "file": {"path": "/var/log/nginx.log"}}, "service": {"name": "nginx"},
                "process": {"pid": 4242}, "http": {"status": 500}},
               {"create": {}},
               {"timestamp": 1714557600123, "msg": "flat", "host.name": "web2", "log.level": "warn",
                "service.name": "api", "pid": "7", "user": "bob"})
    first, second = parse_bulk(body, "app-logs")
    assert (first.action, first.index, first.id, first.status) == ("index", "filebeat-8", "doc-1", 201)
    assert first.event == {
        "message": "GET /x 500", "ts": 1714557600.25, "host": "web1", "level": "error",
        "component": "nginx", "pid": "4242", "id": "es:filebeat-8:doc-1",
        "fields": {"host": {"ip": ["10.0.0.1"]}, "log": {"file": {"path": "/var/log/nginx.log"}},
                   "http": {"status": 500}, "_index": "filebeat-8"}}
    assert second.index == "app-logs" and second.id.startswith("es-") and second.id.endswith("-1")
    assert second.event["ts"] == pytest.approx(1714557600.123)
    assert {k: second.event[k] for k in ("message", "host", "level", "component", "pid")} == {
        "message": "flat", "host": "web2", "level": "warn", "component": "api", "pid": "7"}
    assert second.event["fields"] == {"user": "bob", "_index": "app-logs"}
    # the same body gives the same ids (a resent request is stored once); another body others
    assert parse_bulk(body, "app-logs")[1].id == second.id
    assert parse_bulk(body + b"\n", "app-logs")[1].id != second.id


def test_bulk_ids_are_scoped_per_index_and_stable_for_a_resent_request():
    body = _nd({"index": {"_index": "idxA", "_id": "1"}}, {"message": "a"},
               {"index": {"_index": "idxB", "_id": "1"}}, {"message": "b"},
               {"create": {"_id": 1}}, {"message": "default index, numeric _id"},
               {"index": {"_index": "a:b", "_id": "c"}}, {"message": "odd index"},
               {"index": {"_index": "a", "_id": "b:c"}}, {"message": "odd id"},
               {"index": {"_index": "idxA"}}, {"message": "no id"})
    items = parse_bulk(body, "logs")
    assert [i.status for i in items] == [201] * 6
    # the answer echoes the client's _id; the stored id is namespaced and includes the index
    assert [i.id for i in items[:5]] == ["1", "1", "1", "c", "b:c"]
    ids = [i.event["id"] for i in items]
    assert ids[:5] == ["es:idxA:1", "es:idxB:1", "es:logs:1", "es:a%3Ab:c", "es:a:b:c"]
    assert len(set(ids)) == 6 and ids[5].startswith("es-") and ids[5] == items[5].id
    # a resent request: the same ids, so the store keeps each document once
    assert [i.event["id"] for i in parse_bulk(body, "logs")] == ids
    # the same body sent to another index (URL) is other documents, with or without _id
    other = [i.event["id"] for i in parse_bulk(body, "other")]
    assert other[2] == "es:other:1" and other[5] != ids[5]
    assert parse_bulk(body)[5].event["id"] != ids[5]


def test_bulk_index_of_the_wrong_type_says_so():
    body = _nd({"index": {"_index": 5}}, {"message": "m"},
               {"index": {"_index": ["a"]}}, {"message": "m"},
               {"index": {"_index": None}}, {"message": "null falls back to the URL's index"},
               {"index": {"_index": ""}}, {"message": "m"})
    a, b, c, d = parse_bulk(body, "url-index")
    assert a.status == b.status == 400
    assert "_index must be a string, got a number [5]" in a.error["reason"]
    assert "_index must be a string, got an array" in b.error["reason"]
    assert "missing" not in a.error["reason"]
    assert c.status == 201 and c.index == "url-index"
    assert d.status == 400 and d.error["type"] == "invalid_index_name_exception"
    [e] = parse_bulk(_nd({"index": {}}, {"message": "m"}))
    assert "index is missing" in e.error["reason"]


@pytest.mark.parametrize("content_type,ok", [
    ("application/json", True),
    ("application/json; charset=UTF-8", True),  # Filebeat, rsyslog
    ("application/x-ndjson", True),  # Fluent Bit, Vector
    ("application/vnd.elasticsearch+x-ndjson; compatible-with=8", True),  # elasticsearch-py 8
    ("Application/VND.Elasticsearch+JSON;compatible-with=7", True),
    (None, False), ("", False), ("application/xml", False), ("text/plain", False),
    ("application/x-www-form-urlencoded", False),  # curl -d
])
def test_bulk_content_types(content_type, ok):
    from ingest_api.receivers.es_bulk import content_type_error

    error = content_type_error(content_type)
    assert (error is None) is ok
    if not ok:
        assert "application/x-ndjson" in error and "application/vnd.elasticsearch+x-ndjson" in error


def test_bulk_blank_lines_crlf_type_and_rsyslog_shape():
    body = (b'\r\n{"index":{"_index":"syslog","_type":"events"}}\r\n\r\n'
            b'{"@timestamp":"2024-05-01T10:00:00+02:00","host":"gw","severity":"notice",'
            b'"facility":"daemon","syslogtag":"sshd[12]:","message":"session opened"}\r\n\n')
    [item] = parse_bulk(body)
    assert item.status == 201
    assert item.event["host"] == "gw" and item.event["level"] == "notice"
    assert item.event["ts"] == 1714550400.0
    assert item.event["fields"] == {"facility": "daemon", "syslogtag": "sshd[12]:", "_index": "syslog"}


def test_bulk_rsyslog_default_template_and_syslog_ng_format_json():
    rsyslog = {"message": " session opened", "fromhost": "gw1", "facility": "authpriv",
               "priority": "info", "timereported": "2024-05-01T10:00:00.123456+00:00",
               "timegenerated": "2024-05-01T10:00:01+00:00", "programname": "sshd"}
    syslog_ng = {"MESSAGE": "disk ok", "HOST": "nas", "PROGRAM": "smartd", "PID": "99",
                 "PRIORITY": "notice", "DATE": "May  1 10:00:00", "ISODATE": "2024-05-01T10:00:00+00:00"}
    a = source_to_event(rsyslog)
    assert {k: a.get(k) for k in ("message", "host", "level", "component")} == {
        "message": " session opened", "host": "gw1", "level": "info", "component": "sshd"}
    assert a["ts"] == pytest.approx(1714557600.123456)
    assert a["fields"] == {"facility": "authpriv", "timegenerated": "2024-05-01T10:00:01+00:00"}
    b = source_to_event(syslog_ng)
    assert (b["message"], b["host"], b["component"], b["pid"], b["level"], b["ts"]) == (
        "disk ok", "nas", "smartd", "99", "notice", 1714557600.0)
    assert b["fields"] == {"DATE": "May  1 10:00:00"}
    # only @timestamp must be a date; another time key that does not parse stays a field
    c = source_to_event({"message": "m", "timestamp": "Jun 14 15:16:01", "time": 1714557600})
    assert c["ts"] == 1714557600.0 and c["fields"] == {"timestamp": "Jun 14 15:16:01"}


def test_bulk_document_without_message_is_kept_as_json():
    [item] = parse_bulk(_nd({"index": {"_index": "x"}}, {"status": 200, "path": "/a"}))
    assert orjson.loads(item.event["message"]) == {"status": 200, "path": "/a"}
    assert item.event["fields"] == {"status": 200, "path": "/a", "_index": "x"}
    # a nested "log" object is not a message; the caller's dict is not modified
    doc = {"log": {"level": "info"}, "message": "m"}
    assert source_to_event(doc)["level"] == "info" and doc == {"log": {"level": "info"}, "message": "m"}


def test_bulk_per_item_errors_leave_the_others_intact():
    body = _nd({"index": {"_index": "a"}}, b"{not json",
               {"create": {"_index": "a"}}, b'"a string"',
               {"delete": {"_index": "a", "_id": "1"}},
               {"update": {"_index": "a", "_id": "1"}}, {"doc": {"message": "x"}},
               {"index": {}}, {"message": "no index anywhere"},
               {"index": {"_index": "a", "_id": "x" * 513}}, {"message": "long id"},
               {"index": {"_index": "a", "_id": ""}}, {"message": "empty id"},
               {"index": {"_index": "a"}}, {"message": "bad time", "@timestamp": "yesterday"},
               {"index": {"_index": "a"}}, {"message": "good"})
    items = parse_bulk(body)
    assert [(i.action, i.status) for i in items] == [
        ("index", 400), ("create", 400), ("delete", 400), ("update", 400), ("index", 400),
        ("index", 400), ("index", 400), ("index", 400), ("index", 201)]
    types = [i.error["type"] for i in items if i.error]
    assert types == ["document_parsing_exception", "document_parsing_exception",
                     "illegal_argument_exception", "illegal_argument_exception",
                     "action_request_validation_exception", "action_request_validation_exception",
                     "action_request_validation_exception", "document_parsing_exception"]
    assert "append-only" in items[2].error["reason"] and items[2].id == "1"
    assert items[-1].event["message"] == "good"
    assert all(i.event is None for i in items[:-1])
    result = items[0].result(0)["index"]
    assert result["status"] == 400 and result["error"]["type"] == "document_parsing_exception"
    ok = items[-1].result(8)["index"]
    assert ok["result"] == "created" and ok["status"] == 201 and ok["_id"] == items[-1].id


@pytest.mark.parametrize("body,needle", [
    (b"", "no requests added"),
    (b"\n \n", "no requests added"),
    (b'{"index": {}\n{"message": "x"}\n', "Malformed action/metadata line [1]"),
    (b'{"frobnicate": {}}\n{"message": "x"}\n', "found [frobnicate]"),
    (b'{"index": {}, "create": {}}\n{"message": "x"}\n', "Malformed action/metadata line [1]"),
    (b'{"index": "x"}\n{"message": "x"}\n', "Malformed action/metadata line [1]"),
    (b'{"index": {"_index": "a"}}\n', "has no source line"),
])
def test_bulk_request_level_errors(body, needle):
    with pytest.raises(BulkRequestError) as e:
        parse_bulk(body, "a")
    assert e.value.status == 400 and needle in e.value.reason


# -- Loki push --------------------------------------------------------------------------------
def test_loki_json_streams_labels_and_structured_metadata():
    body = orjson.dumps({"streams": [
        {"stream": {"job": "varlogs", "host": "web1", "level": "warn", "filename": "/var/log/a"},
         "values": [["1714557600123456789", "first line"],
                    ["1714557601000000000", "second", {"trace_id": "abc", "level": "error"}]]},
        {"stream": {"service_name": "checkout", "hostname": "h2"}, "values": [[1714557602000000000, ""]]},
    ]})
    a, b, c = decode_push(body, "application/json; charset=utf-8", max_bytes=10_000)
    assert a == {"message": "first line", "ts": pytest.approx(1714557600.123456789), "host": "web1",
                 "level": "warn", "component": "varlogs",
                 "fields": {"job": "varlogs", "host": "web1", "level": "warn", "filename": "/var/log/a"},
                 # the stream's name: its labels but host and level (issue 19, sources)
                 "stream": '{filename="/var/log/a", job="varlogs"}'}
    assert b["level"] == "error" and b["fields"]["trace_id"] == "abc"  # metadata wins over labels
    assert c["component"] == "checkout" and c["host"] == "h2" and c["message"] == ""
    assert c["stream"] == '{service_name="checkout"}'


def test_loki_legacy_json_push_with_label_string():
    body = orjson.dumps({"streams": [{"labels": '{severity="info", logger="app", application="shop"}',
                                      "entries": [{"ts": "2024-05-01T10:00:00.5Z", "line": "hi"}]}]})
    [item] = decode_push_json(body)
    assert item["ts"] == 1714557600.5 and item["level"] == "info" and item["component"] == "shop"
    assert item["fields"] == {"severity": "info", "logger": "app", "application": "shop"}


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"streams": {}}', b'{"streams": []}', b'{"streams": [5]}',
    b'{"streams": [{"stream": {"a": 1}, "values": [["1", "x"]]}]}',
    b'{"streams": [{"stream": {}, "values": [["12a", "x"]]}]}',
    b'{"streams": [{"stream": {}, "values": [["1", 5]]}]}',
    b'{"streams": [{"stream": {}, "values": [["1"]]}]}',
    b'{"streams": [{"stream": {}, "values": [["99999999999999999999999", "x"]]}]}',
    b'{"streams": [{"stream": {}, "values": [["1", "x", {"k": 1}]]}]}',
    b'{"streams": [{"labels": "job=x", "entries": [{"ts": "2024-01-01T00:00:00Z", "line": "x"}]}]}',
    b'{"streams": [{"labels": "{}", "entries": [{"ts": "soon", "line": "x"}]}]}',
])
def test_loki_malformed_json_is_a_400(body):
    with pytest.raises(IngestError) as e:
        decode_push(body, "application/json", max_bytes=10_000)
    assert e.value.status == 400 and e.value.body["error"] == "invalid_loki_push"


def test_parse_labels():
    assert parse_labels("{}") == {} and parse_labels(" { } ") == {}
    assert parse_labels('{job="a", filename="/var/log/x.log",k8s.ns = "d"}') == {
        "job": "a", "filename": "/var/log/x.log", "k8s.ns": "d"}
    assert parse_labels(r'{msg="say \"hi\"\n", path="C:\\x"}') == {"msg": 'say "hi"\n', "path": "C:\\x"}
    for bad in ('job="a"', '{job=a}', '{job="a" x="b"}', '{="a"}', '{job="a",,}'):
        with pytest.raises(IngestError):
            parse_labels(bad)


def test_loki_protobuf_snappy():
    raw = loki_push_bytes([
        ('{job="promtail", host="node-3", level="info"}',
         [(1714557600123456789, "from promtail", {"traceID": "t1"}),
          (1714557601000000000, "ünïcode line", {})]),
        ("{}", [(1714557602000000000, "no labels", {})]),
    ])
    body = bytes(cramjam.snappy.compress_raw(raw))
    a, b, c = decode_push(body, "application/x-protobuf", max_bytes=10_000)
    assert a == {"message": "from promtail", "ts": pytest.approx(1714557600.123456789),
                 "host": "node-3", "level": "info", "component": "promtail",
                 "fields": {"job": "promtail", "host": "node-3", "level": "info", "traceID": "t1"},
                 "stream": '{job="promtail"}'}
    assert b["message"] == "ünïcode line" and "traceID" not in b["fields"]
    assert c == {"message": "no labels", "ts": 1714557602.0}
    assert decode_push_protobuf(raw) == [a, b, c]
    assert decode_push(body, None, max_bytes=10_000) == [a, b, c]  # no Content-Type: protobuf, as Loki


def test_loki_protobuf_invalid_utf8_is_replaced_not_a_400():
    """Loki (Go) takes a line that is not UTF-8; the python runtime refused the whole push."""
    raw = loki_push_bytes([
        ('{job="latin"}', [(1714557600000000000, "good line", {}),
                           (1714557601000000000, b"caf\xe9 au lait", {"k": b"v\xff"})]),
        (b'{job="l\xe9"}', [(1714557602000000000, "other stream", {})]),
    ])
    body = bytes(cramjam.snappy.compress_raw(raw))
    a, b, c = decode_push(body, "application/x-protobuf", max_bytes=10_000)
    assert a == {"message": "good line", "ts": 1714557600.0, "component": "latin",
                 "fields": {"job": "latin"}, "stream": '{job="latin"}'}
    assert b["message"] == "caf\ufffd au lait" and b["fields"] == {"job": "latin", "k": "v\ufffd"}
    assert c["message"] == "other stream" and c["fields"] == {"job": "l\ufffd"}
    # bad UTF-8 and a truncated field: still not a PushRequest, still a 400
    with pytest.raises(IngestError) as e:
        decode_push_protobuf(raw + b"\x0a\x05ab")
    assert e.value.status == 400 and "not a Loki PushRequest" in e.value.body["detail"]


def test_loki_protobuf_errors():
    with pytest.raises(IngestError) as e:  # protobuf that was not snappy-compressed
        decode_push(b"\x0a\x05hello", "application/x-protobuf", max_bytes=10_000)
    assert e.value.status == 400
    with pytest.raises(IngestError) as e:  # a snappy bomb: refused from its length header
        snappy_decompress(bytes(cramjam.snappy.compress_raw(b"\0" * 50_000)), 10_000)
    assert e.value.status == 413
    with pytest.raises(IngestError) as e:  # snappy of something that is not a PushRequest
        decode_push(bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff")), "application/x-protobuf",
                    max_bytes=10_000)
    assert e.value.status == 400
    with pytest.raises(IngestError) as e:
        decode_push(b"{}", "text/plain", max_bytes=10_000)
    assert e.value.status == 415


# -- OTLP ---------------------------------------------------------------------------------------
def _otlp_request():
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(k, **v):
        return KeyValue(key=k, value=AnyValue(**v))

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([kv("service.name", string_value="checkout"),
                                   kv("host.name", string_value="pod-1"),
                                   kv("process.pid", int_value=321),
                                   kv("deployment.environment", string_value="prod")])
    sl = rl.scope_logs.add()
    sl.scope.name, sl.scope.version = "app.payments", "1.2"
    r1 = sl.log_records.add(time_unix_nano=1714557600123456789, severity_number=13,
                            severity_text="WARN", trace_id=bytes(range(16)), span_id=bytes(range(8)))
    r1.body.string_value = "card declined"
    r1.attributes.extend([kv("order.id", int_value=42), kv("retry", bool_value=True),
                          kv("host.name", string_value="override-host")])
    r2 = sl.log_records.add(observed_time_unix_nano=1714557601000000000, severity_number=17)
    kvl = r2.body.kvlist_value.values
    kvl.add(key="event", value=AnyValue(string_value="refund"))
    kvl.add(key="amount", value=AnyValue(double_value=9.5))
    r3 = sl.log_records.add(event_name="app.started")
    r3.attributes.extend([kv("blob", bytes_value=b"\x00\x01"),
                          KeyValue(key="tags", value=AnyValue(array_value={"values": [
                              AnyValue(string_value="a"), AnyValue(int_value=2)]}))])
    return req


def test_otlp_protobuf_records_to_events():
    data = _otlp_request().SerializeToString()
    r1, r2, r3 = decode_logs(data, "application/x-protobuf")
    resource = {"service.name": "checkout", "host.name": "pod-1", "process.pid": 321,
                "deployment.environment": "prod", "otel.scope.name": "app.payments",
                "otel.scope.version": "1.2"}
    assert r1 == {"message": "card declined", "ts": pytest.approx(1714557600.123456789),
                  "level": "WARN", "host": "override-host", "component": "checkout", "pid": "321",
                  "fields": {**resource, "order.id": 42, "retry": True, "host.name": "override-host",
                             "trace_id": bytes(range(16)).hex(), "span_id": bytes(range(8)).hex()},
                  "stream": "checkout"}  # the resource's service.name (issue 19, sources)
    assert r2["ts"] == 1714557601.0 and r2["level"] == "ERROR" and r2["host"] == "pod-1"
    assert orjson.loads(r2["message"]) == {"event": "refund", "amount": 9.5}
    assert "ts" not in r3 and "level" not in r3 and r3["message"] == ""
    assert r3["fields"]["event.name"] == "app.started"
    assert r3["fields"]["blob"] == "AAE=" and r3["fields"]["tags"] == ["a", 2]
    assert decode_logs(b"", "application/x-protobuf") == []  # an empty export is valid


def test_otlp_json_with_hex_ids():
    body = orjson.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
        "scopeLogs": [{"scope": {"name": "s"}, "logRecords": [{
            "timeUnixNano": "1714557600000000000", "severityNumber": 9, "severityText": "",
            "body": {"stringValue": "hello json"},
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "attributes": [{"key": "n", "value": {"intValue": "7"}}],
            "someFutureField": 1}]}]}]})
    [item] = decode_logs(body, "application/json")
    assert item["message"] == "hello json" and item["level"] == "INFO" and item["ts"] == 1714557600.0
    assert item["component"] == "web"
    assert item["fields"]["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert item["fields"]["span_id"] == "eee19b7ec3c1b174" and item["fields"]["n"] == 7


def _otlp_json(*records) -> bytes:
    return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": list(records)}]}]})


@pytest.mark.parametrize("record,where,needle", [
    ({"traceId": "zz"}, "logRecords[1].traceId", "32 hex digits"),  # was stored as "cf"
    ({"traceId": "5b8efff798038103d269b633813fc60"}, "logRecords[1].traceId", "32 hex digits"),
    ({"traceId": "W47/95gDgQPSabYzgT/GDA=="}, "logRecords[1].traceId", "32 hex digits"),  # base64
    ({"traceId": "5b 8efff798038103d269b633813fc60c"[:32]}, "logRecords[1].traceId", "hex"),
    ({"spanId": "eee19b7ec3c1b17g"}, "logRecords[1].spanId", "16 hex digits"),
    ({"span_id": 7}, "logRecords[1].span_id", "16 hex digits"),
    ({"severityNumber": "x"}, "logRecords[1].severityNumber", "SeverityNumber"),  # was ignored
    ({"severityNumber": True}, "logRecords[1].severityNumber", "SeverityNumber"),
    ({"body": {"stringValue": 5}}, "stringValue", "string"),
    ({"severityText": ["WARN"]}, "severityText", ""),
])
def test_otlp_json_invalid_known_fields_are_a_400_naming_them(record, where, needle):
    with pytest.raises(IngestError) as e:
        decode_logs(_otlp_json({"body": {"stringValue": "good"}}, record), "application/json")
    assert e.value.status == 400 and e.value.body["error"] == "invalid_otlp"
    assert where in e.value.body["detail"] and needle in e.value.body["detail"]


def test_otlp_json_valid_ids_enums_and_unknown_fields():
    a, b, c = decode_logs(_otlp_json(
        {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
         "severityNumber": "SEVERITY_NUMBER_WARN"},
        {"traceId": "", "spanId": "", "severityNumber": 17},
        {"body": {"stringValue": "m", "futureValueKind": 1}, "futureField": {"x": [1]},
         "attributes": [{"key": "k", "value": {"stringValue": "v"}, "futureKey": True}]}),
        "application/json")
    assert a["fields"] == {"trace_id": "5b8efff798038103d269b633813fc60c",
                           "span_id": "eee19b7ec3c1b174"} and a["level"] == "WARNING"
    assert "fields" not in b and b["level"] == "ERROR"
    assert c["message"] == "m" and c["fields"] == {"k": "v"}


def test_otlp_protobuf_invalid_utf8_is_replaced_not_a_400():
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="svc")))
    sl = rl.scope_logs.add()
    sl.log_records.add(severity_number=9).body.string_value = "good record"
    bad = sl.log_records.add(severity_text="WARN", trace_id=bytes(range(16)))
    bad.body.string_value = "caf\u00e9 XX"
    bad.attributes.append(KeyValue(key="user", value=AnyValue(string_value="J\u00e9r\u00f4me")))
    sl.log_records.add().body.kvlist_value.SetInParent()  # an empty map body stays a map
    # same lengths: U+00E9 is 2 bytes in UTF-8, replaced by a Latin-1 é and a space
    raw = req.SerializeToString().replace("\u00e9".encode(), b"\xe9 ").replace(
        "\u00f4".encode(), b"\xf4 ")
    with pytest.raises(Exception, match="UTF-8"):
        ExportLogsServiceRequest.FromString(raw)  # what the receiver got before
    good, b, c = decode_logs(raw, "application/x-protobuf")
    assert good["message"] == "good record" and good["level"] == "INFO"
    assert b["message"] == "caf\ufffd  XX" and b["level"] == "WARN" and b["component"] == "svc"
    assert b["fields"]["user"] == "J\ufffd r\ufffd me" and b["fields"]["trace_id"] == bytes(range(16)).hex()
    assert c["message"] == "{}"
    assert decode_logs(req.SerializeToString(), "application/x-protobuf")[1]["message"] == "caf\u00e9 XX"


def test_otlp_protobuf_id_of_the_wrong_length_is_a_400():
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    sl.log_records.add(trace_id=bytes(16), span_id=bytes(8))
    sl.log_records.add(span_id=b"\x01\x02\x03")
    with pytest.raises(IngestError) as e:
        decode_logs(req.SerializeToString(), "application/x-protobuf")
    assert e.value.status == 400
    assert "resource_logs[0].scope_logs[0].log_records[1].span_id" in e.value.body["detail"]


@pytest.mark.parametrize("body,ct,status", [
    (b"\xff\xff\xff\xff", "application/x-protobuf", 400),
    (b"{", "application/json", 400),
    (b"[]", "application/json", 400),
    (b'{"resourceLogs": 5}', "application/json", 400),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}',
     "application/json", 400),
    (b"", "text/plain", 415),
])
def test_otlp_malformed(body, ct, status):
    with pytest.raises(IngestError) as e:
        decode_logs(body, ct)
    assert e.value.status == status


def test_severity_and_deflate():
    assert severity_level("", 0) is None
    assert [severity_level("", n) for n in (1, 5, 9, 12, 13, 17, 21, 24)] == [
        "TRACE", "DEBUG", "INFO", "INFO", "WARNING", "ERROR", "FATAL", "FATAL"]
    assert severity_level("Information", 9) == "Information"  # the pipeline normalises the text
    assert inflate(zlib.compress(b"abc"), 10) == b"abc"
    with pytest.raises(IngestError) as e:
        inflate(zlib.compress(b"a" * 100), 10)
    assert e.value.status == 413
    with pytest.raises(IngestError) as e:
        inflate(b"nope", 10)
    assert e.value.status == 400
