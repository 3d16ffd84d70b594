"""Issue 22: what one request (or many at once) may cost the API, on every receiver.

Lines per request are bounded (413 naming the limit, refused before the body is split), a batch
that can never fit the backlog is a 413 (not a 503 forever), concurrent large bodies are decoded
a few at a time, and the memory a refused body costs stays small.
"""

from __future__ import annotations

import gc
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from fastapi.testclient import TestClient

from ingest_api.app import create_app
from ingest_api.decode import IngestError, decode_body
from ingest_api.receivers import es_bulk, loki, otlp
from smartlogs.settings import Settings

LIMIT = 1000


@pytest.fixture
def bounded(tmp_path):
    settings = Settings(data_dir=tmp_path, max_lines_per_request=LIMIT, syslog_port=0,
                        checkpoint_seconds=0.5)
    with TestClient(create_app(settings)) as client:
        yield client


def _text(n: int) -> bytes:
    return b"".join(b"line %d\n" % i for i in range(n))


def _bulk(n: int) -> bytes:
    return b'{"index":{}}\n{"message":"x"}\n' * n


def _loki(n: int) -> bytes:
    return orjson.dumps({"streams": [{"stream": {"job": "t"},
                                      "values": [["1714557600000000000", f"l{i}"] for i in range(n)]}]})


def _otlp(n: int) -> bytes:
    return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": f"r{i}"}} for i in range(n)]}]}]})


def test_a_request_over_the_line_limit_is_a_413_naming_it_on_every_receiver(bounded):
    cases = [  # (path, content type, body over the limit, body at the limit)
        ("/ingest", "text/plain", _text(LIMIT + 1), _text(LIMIT)),
        ("/ingest", "application/x-ndjson", b'{"message":"m"}\n' * (LIMIT + 1), b'{"message":"m"}\n' * LIMIT),
        ("/ingest", "application/json", orjson.dumps([{"message": "m"}] * (LIMIT + 1)),
         orjson.dumps([{"message": "m"}] * LIMIT)),
        ("/_bulk", "application/x-ndjson", _bulk(LIMIT // 2 + 1), _bulk(LIMIT // 2)),
        ("/idx/_bulk", "application/x-ndjson", _bulk(LIMIT // 2 + 1), _bulk(LIMIT // 2)),
        ("/loki/api/v1/push", "application/json", _loki(LIMIT + 1), _loki(LIMIT)),
        ("/v1/logs", "application/json", _otlp(LIMIT + 1), _otlp(LIMIT)),
    ]
    for path, ctype, over, at in cases:
        r = bounded.post(path, content=over, headers={"Content-Type": ctype})
        assert r.status_code == 413, (path, ctype, r.status_code, r.text[:200])
        assert str(LIMIT) in r.text and "SMARTLOGS_MAX_LINES_PER_REQUEST" in r.text, (path, r.text)
        if path == "/ingest":
            assert r.json()["error"] == "too_many_lines" and r.json()["limit"] == LIMIT
        r = bounded.post(path, content=at, headers={"Content-Type": ctype})
        assert r.status_code < 300, (path, ctype, r.status_code, r.text[:200])


def test_the_limit_holds_for_protobuf_and_gzip_bodies(bounded):
    import gzip

    from tests.unit.test_receivers_decode import loki_push_bytes

    r = bounded.post("/ingest", content=gzip.compress(b"a\n" * (LIMIT + 1)),
                     headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["limit"] == LIMIT
    import cramjam

    raw = loki_push_bytes([('{job="t"}', [(1714557600 * 10**9, f"l{i}", {}) for i in range(LIMIT + 1)])])
    r = bounded.post("/loki/api/v1/push", content=bytes(cramjam.snappy.compress_raw(raw)),
                     headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 413, r.text
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    for i in range(LIMIT + 1):
        records.add().body.string_value = f"r{i}"
    r = bounded.post("/v1/logs", content=req.SerializeToString(),
                     headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 413


def test_tiny_lines_with_the_default_limit_are_refused_not_decoded(app_client):
    """The report's body: ``a\\n`` × 450,000 (900 KB) took 1.6 GB; now a 413 with the limit."""
    r = app_client.post("/ingest", content=b"a\n" * 450_000, headers={"Content-Type": "text/plain"})
    assert r.status_code == 413, r.text[:200]
    assert r.json()["limit"] == Settings().max_lines_per_request == 100_000


@pytest.mark.parametrize("decode", [
    lambda body: decode_body(body, content_type="text/plain", max_bytes=10**7, max_lines=100_000),
    lambda body: decode_body(body, content_type="application/x-ndjson", max_bytes=10**7,
                             max_lines=100_000),
    lambda body: es_bulk.parse_bulk(body, max_lines=100_000),
], ids=["text", "ndjson", "bulk"])
def test_a_refused_body_costs_next_to_nothing(decode):
    """Refused before splitting: no per-line object is ever built (a bound, not a timing)."""
    body = b"a\n" * 450_000
    gc.collect()
    tracemalloc.start()
    try:
        with pytest.raises(IngestError) as exc:
            decode(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc.value.status == 413
    assert peak < 1_000_000, f"refusing a 900 KB body allocated {peak} bytes"  # ~100 MB before


def test_loki_and_otlp_count_entries_before_building_items():
    with pytest.raises(IngestError) as exc:
        loki.decode_push(_loki(LIMIT + 1), "application/json", max_bytes=10**7, max_lines=LIMIT)
    assert exc.value.status == 413 and exc.value.body["limit"] == LIMIT
    with pytest.raises(IngestError) as exc:
        otlp.decode_logs(_otlp(LIMIT + 1), "application/json", max_lines=LIMIT)
    assert exc.value.status == 413 and exc.value.body["limit"] == LIMIT


def test_concurrent_large_bodies_do_not_multiply_the_memory_peak(tmp_path):
    """Eight bodies posted at once peak near what one does (they are decoded in turn), not 8×.

    With a backlog limit of 1 the transport refuses every batch once it is decoded, so the
    pipeline stays idle and only what the API holds is measured."""
    settings = Settings(data_dir=tmp_path, syslog_port=0, ingest_concurrency=1,
                        max_lines_per_request=30_000, max_backlog_events=1)
    body = b"a\n" * 30_000
    with TestClient(create_app(settings)) as client:
        post = lambda _: client.post("/ingest", content=body,  # noqa: E731
                                     headers={"Content-Type": "text/plain"}).status_code
        post(0)  # warm up (imports)
        gc.collect()
        tracemalloc.start()
        try:
            post(0)
            one = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            barrier = threading.Barrier(8)

            def together(i):
                barrier.wait()
                return post(i)

            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(together, range(8)))
            eight = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert set(codes) == {413}  # decoded, then refused by the transport (backlog limit 1)
    # generous: one decoded body at a time plus seven raw ones waiting; 8 decoded would be ~8×
    assert eight < 3 * one, f"one body peaked at {one} bytes, eight at once at {eight}"


def test_a_batch_larger_than_the_backlog_limit_is_a_413_not_a_503_forever(tmp_path):
    settings = Settings(data_dir=tmp_path, syslog_port=0, max_backlog_events=50)
    with TestClient(create_app(settings)) as client:
        for _ in range(2):  # retrying never helps: the same answer every time
            r = client.post("/ingest", content=_text(51), headers={"Content-Type": "text/plain"})
            assert r.status_code == 413, r.text
            assert r.json()["error"] == "batch_too_large" and r.json()["limit"] == 50
            assert "Retry-After" not in r.headers
        r = client.post("/idx/_bulk", content=_bulk(51), headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 413 and r.json()["error"]["type"] == "content_too_long_exception"
        assert "50" in r.json()["error"]["reason"]
        assert client.post("/loki/api/v1/push", content=_loki(51),
                           headers={"Content-Type": "application/json"}).status_code == 413
        assert client.post("/v1/logs", content=_otlp(51),
                           headers={"Content-Type": "application/json"}).status_code == 413
        # a batch that fits is taken
        assert client.post("/ingest", content=_text(50),
                           headers={"Content-Type": "text/plain"}).status_code == 202


def test_otlp_json_records_are_counted_before_protobuf_objects_are_built():
    """The count comes first: a body over the limit is a 413 even where protobuf's parser
    (which builds an object per record) would have failed on a later record."""
    doc = orjson.loads(_otlp(LIMIT + 1))
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][-1]["severityNumber"] = "not a number"
    with pytest.raises(IngestError) as exc:
        otlp.decode_logs(orjson.dumps(doc), "application/json", max_lines=LIMIT)
    assert exc.value.status == 413
