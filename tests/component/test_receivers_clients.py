"""The shipper receivers over HTTP, driven by the real client libraries people run.

* TestClient: answer shapes (Elasticsearch error documents and product header, Loki 204, OTLP
  Status), malformed bodies stored nowhere, the retry-later answers when the queue is full.
* uvicorn on a free loopback port, with: the official ``elasticsearch`` client (``helpers.bulk``,
  its product check), ``python-logging-loki`` (JSON push, both payload versions), a snappy
  protobuf push written from Loki's ``push.proto``, and the OpenTelemetry SDK's OTLP/HTTP
  protobuf exporter with gzip on and off. Each asserts what landed in the store, and that a
  client retrying after an error answer causes no duplicate.
"""

from __future__ import annotations

import gzip
import logging
import socket
import threading
import time
import uuid
from types import SimpleNamespace

import cramjam
import httpx
import orjson
import pytest

from ingest_api.decode import IngestError
from ingest_api.receivers import es_bulk, loki, otlp
from tests.unit.test_receivers_decode import loki_push_bytes

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def build_app(settings):
    """The embedded app with the three receivers, wired as in production: the Elasticsearch
    router ahead of the console's so ``GET /`` answers Elasticsearch clients (browsers, which ask
    for text/html, still get the console)."""
    from ingest_api.app import create_app

    app = create_app(settings)
    before = list(app.router.routes)
    for r in (es_bulk.router, loki.router, otlp.router):
        app.include_router(r)
    added = [r for r in app.router.routes if r not in before]
    app.router.routes[:] = added + before
    return app


def _settings(path, **kw):
    from smartlogs.settings import Settings

    return Settings(data_dir=path, max_body_bytes=1_000_000, checkpoint_seconds=0.5, **kw)


def stored(get, q: str, n: int, timeout: float = 10.0) -> list[dict]:
    """Poll /api/events?q=... until n events match (then a little longer, to catch extras)."""
    deadline = time.monotonic() + timeout
    while True:
        res = get("/api/events", params={"q": q, "limit": 1000}).json()
        if res["total"] >= n:
            time.sleep(0.3)  # anything that would be a duplicate has been processed by now
            return get("/api/events", params={"q": q, "limit": 1000}).json()["events"]
        if time.monotonic() > deadline:
            return res["events"]
        time.sleep(0.05)


def _total(get) -> int:
    return get("/api/events", params={"limit": 1}).json()["total"]


class FailFirstAccepts:
    """Wrap a transport: the first ``n`` batches are durably taken, then refused anyway (503).

    That is the worst case for duplicates: the client sees an error for a batch that was stored,
    and sends it again."""

    def __init__(self, transport, n: int = 1):
        self.inner, self.left, self.calls = transport, n, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def accept(self, items, batch_id):
        self.calls += 1
        await self.inner.accept(items, batch_id)
        if self.left > 0:
            self.left -= 1
            raise IngestError(503, "queue_unavailable", "simulated lost confirm", retry_after=1)


# -- TestClient: answer shapes -----------------------------------------------------------------
@pytest.fixture
def client(tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(build_app(_settings(tmp_path))) as c:
        yield c


def test_root_answers_elasticsearch_clients_and_leaves_browsers_to_the_console(client):
    r = client.get("/", headers={"Accept": "application/vnd.elasticsearch+json; compatible-with=8"})
    assert r.status_code == 200 and r.headers["x-elastic-product"] == "Elasticsearch"
    assert r.json()["version"]["number"] == "8.19.3" and r.json()["tagline"] == "You Know, for Search"
    assert client.get("/").json()["version"]["build_flavor"] == "default"  # no Accept (Go, curl)
    h = client.head("/")
    assert h.status_code == 200 and h.headers["x-elastic-product"] == "Elasticsearch"
    page = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    h = client.head("/", headers={"Accept": "text/html"})  # a browser's HEAD: the console's
    assert h.status_code == 200 and h.headers["content-type"].startswith("text/html")
    for path in ("/_license", "/_xpack", "/_cluster/health"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["x-elastic-product"] == "Elasticsearch", path
    assert client.get("/_license").json()["license"]["status"] == "active"
    assert client.get("/_xpack").json()["features"]["ilm"]["available"] is False
    assert client.get("/_cluster/health").json()["status"] == "green"


def test_bulk_answers_like_elasticsearch(client):
    tag = "bulkshape" + uuid.uuid4().hex[:8]
    body = (orjson.dumps({"index": {"_id": f"{tag}-1"}}) + b"\n"
            + orjson.dumps({"message": f"{tag} one", "host": {"name": "w1"}, "log.level": "error",
                            "@timestamp": "2024-05-01T10:00:00Z", "http": {"status": 502}}) + b"\n\n"
            + b'{"create": {}}\n{broken json\n'
            + b'{"delete": {"_id": "x"}}\n'
            + orjson.dumps({"create": {"_index": "other"}}) + b"\n"
            + orjson.dumps({"message": f"{tag} two"}) + b"\n")
    r = client.put("/app-logs/_bulk", content=gzip.compress(body),
                   headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["x-elastic-product"] == "Elasticsearch"
    res = r.json()
    assert res["errors"] is True and isinstance(res["took"], int)
    assert [(next(iter(i)), next(iter(i.values()))["status"]) for i in res["items"]] == [
        ("index", 201), ("create", 400), ("delete", 400), ("create", 201)]
    assert res["items"][0]["index"] == {**res["items"][0]["index"], "_index": "app-logs",
                                        "_id": f"{tag}-1", "result": "created"}
    assert res["items"][1]["create"]["error"]["type"] == "document_parsing_exception"
    events = {e["message"]: e for e in stored(client.get, tag, 2)}
    assert set(events) == {f"{tag} one", f"{tag} two"}
    one = events[f"{tag} one"]
    assert (one["id"], one["host"], one["level"], one["receiver"]) == (
        f"es:app-logs:{tag}-1", "w1", "ERROR", "es_bulk")
    assert one["timestamp"] == "2024-05-01T10:00:00.000Z"
    assert one["fields"] == {"http": {"status": 502}, "_index": "app-logs"}
    assert events[f"{tag} two"]["fields"] == {"_index": "other"}


def test_bulk_same_id_in_two_indices_is_two_documents_and_a_resend_is_one(client):
    tag = "bulkids" + uuid.uuid4().hex[:8]
    body = _ndjson({"index": {"_index": "idxA", "_id": "1"}}, {"message": f"{tag} in A"},
                   {"index": {"_index": "idxB", "_id": "1"}}, {"message": f"{tag} in B"})
    for _ in range(2):  # the second time: a shipper resending after a lost answer
        r = client.post("/_bulk", content=body, headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 200 and r.json()["errors"] is False
        assert [(i["index"]["_index"], i["index"]["_id"], i["index"]["status"])
                for i in r.json()["items"]] == [("idxA", "1", 201), ("idxB", "1", 201)]
    # an /ingest event whose own id is "1" is yet another event
    r = client.post("/ingest", json={"id": "1", "message": f"{tag} from ingest"})
    assert r.status_code == 202
    events = stored(client.get, tag, 3)
    assert sorted(e["message"] for e in events) == [f"{tag} from ingest", f"{tag} in A", f"{tag} in B"]
    assert sorted(e["id"] for e in events) == ["1", "es:idxA:1", "es:idxB:1"]


def _ndjson(*objs) -> bytes:
    return b"".join(orjson.dumps(o) + b"\n" for o in objs)


def test_dedup_semantics_documented_in_receivers_md(client):
    """Content-derived ids: an identical body is stored once (even a timeless heartbeat, even
    gzipped the second time); /ingest without ids stores a repeated body twice."""
    tag = "dedup" + uuid.uuid4().hex[:8]
    otlp_json = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": f"{tag} otlp heartbeat"}}]}]}]}
    loki_json = orjson.dumps({"streams": [{"stream": {"job": "hb"},
                                           "values": [["1714557600000000000", f"{tag} loki"]]}]})
    bulk = _ndjson({"index": {"_index": "hb"}}, {"message": f"{tag} bulk heartbeat"})
    for gz in (False, True):
        enc = {"Content-Encoding": "gzip"} if gz else {}
        def body(b):
            return gzip.compress(b) if gz else b
        assert client.post("/v1/logs", content=body(orjson.dumps(otlp_json)),
                           headers={"Content-Type": "application/json", **enc}).status_code == 200
        assert client.post("/loki/api/v1/push", content=body(loki_json),
                           headers={"Content-Type": "application/json", **enc}).status_code == 204
        assert client.post("/hb/_bulk", content=body(bulk),
                           headers={"Content-Type": "application/x-ndjson", **enc}).status_code == 200
        assert client.post("/ingest", json={"message": f"{tag} ingest heartbeat"}).status_code == 202
    assert client.post("/other/_bulk", content=bulk,  # the same body to another index: another event
                       headers={"Content-Type": "application/x-ndjson"}).status_code == 200
    events = stored(client.get, tag, 6)
    assert sorted(e["message"] for e in events) == sorted([
        f"{tag} otlp heartbeat", f"{tag} loki", f"{tag} bulk heartbeat", f"{tag} bulk heartbeat",
        f"{tag} ingest heartbeat", f"{tag} ingest heartbeat"])


@pytest.mark.parametrize("content_type", [None, "application/xml", "text/plain",
                                          "application/x-www-form-urlencoded"])
def test_bulk_refuses_other_content_types_with_415(client, content_type):
    body = _ndjson({"index": {"_index": "a"}}, {"message": "typed wrong"})
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/_bulk", content=body, headers=headers)
    assert r.status_code == 415 and r.headers["x-elastic-product"] == "Elasticsearch"
    err = r.json()
    assert err["error"] == "unsupported_media_type" and err["status"] == 415
    assert "application/x-ndjson" in err["detail"] and "application/json" in err["accepted"]
    assert ("no Content-Type" in err["detail"]) is (content_type is None)
    time.sleep(0.2)
    assert _total(client.get) == 0
    for ok in ("application/json; charset=UTF-8",
               "application/vnd.elasticsearch+x-ndjson; compatible-with=8"):
        r = client.post("/_bulk", content=body, headers={"Content-Type": ok})
        assert r.status_code == 200 and r.json()["errors"] is False, ok


@pytest.mark.parametrize("body,headers,status,kind", [
    (b"", {}, 400, "action_request_validation_exception"),
    (b'{"index": {}\n{"message": "m"}\n', {}, 400, "x_content_parse_exception"),
    (b'{"index": {"_index": "a"}}\n', {}, 400, "illegal_argument_exception"),
    (b"\x1f\x8b not really gzip", {"Content-Encoding": "gzip"}, 400, "parse_exception"),
    (b"x" * 1_000_001, {}, 413, "content_too_long_exception"),
])
def test_bulk_request_errors_store_nothing(client, body, headers, status, kind):
    r = client.post("/_bulk", content=body, headers={"Content-Type": "application/json", **headers})
    assert r.status_code == status and r.headers["x-elastic-product"] == "Elasticsearch"
    err = r.json()
    assert err["status"] == status and err["error"]["type"] == kind
    assert err["error"]["root_cause"][0]["type"] == kind
    time.sleep(0.2)
    assert _total(client.get) == 0


def test_loki_and_otlp_malformed_bodies_get_their_protocol_errors(client):
    from google.rpc import status_pb2
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    p = "/loki/api/v1/push"
    r = client.post(p, content=b'{"streams": [{"stream": {}, "values": [["x", "y"]]}]}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_loki_push"
    r = client.post(p, content=b"\x0a\x03abc", headers=PROTOBUF)  # protobuf without snappy
    assert r.status_code == 400 and "snappy" in r.json()["detail"]
    assert client.post(p, content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post(p, content=b"", headers=PROTOBUF).status_code == 400

    r = client.post("/v1/logs", content=b"\xff\xff\xff", headers=PROTOBUF)
    assert r.status_code == 400 and r.headers["content-type"] == "application/x-protobuf"
    st = status_pb2.Status.FromString(r.content)
    assert st.code == 3 and "ExportLogsServiceRequest" in st.message
    r = client.post("/v1/logs", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == 3 and r.json()["error"] == "invalid_otlp"
    for record, field in (({"traceId": "zz"}, "traceId"), ({"severityNumber": "x"}, "severityNumber")):
        r = client.post("/v1/logs", json={"resourceLogs": [{"scopeLogs": [{"logRecords": [
            {"body": {"stringValue": "otlp bad field"}, **record}]}]}]})
        assert r.status_code == 400 and r.json()["error"] == "invalid_otlp"
        assert f"resourceLogs[0].scopeLogs[0].logRecords[0].{field}" in r.json()["detail"]
    r = client.post("/v1/logs", content=b"a", headers={"Content-Type": "text/xml"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type" and r.json()["detail"]
    r = client.post("/v1/logs", content=b"\x00junk", headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert r.status_code == 400
    # an empty export is fine, in both encodings
    r = client.post("/v1/logs", content=b"", headers=PROTOBUF)
    assert r.status_code == 200 and ExportLogsServiceResponse.FromString(r.content) is not None
    r = client.post("/v1/logs", json={"resourceLogs": []})
    assert r.status_code == 200 and r.json() == {}
    time.sleep(0.2)
    assert _total(client.get) == 0


def test_full_queue_answers_retry_later_in_each_protocol(tmp_path):
    from fastapi.testclient import TestClient
    from google.rpc import status_pb2

    with TestClient(build_app(_settings(tmp_path, max_backlog_events=0))) as c:
        r = c.post("/_bulk", content=b'{"index": {"_index": "a"}}\n{"message": "m"}\n',
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert r.headers["x-elastic-product"] == "Elasticsearch"
        assert r.json()["error"]["type"] == "es_rejected_execution_exception"
        r = c.post("/loki/api/v1/push",
                   json={"streams": [{"stream": {"a": "b"}, "values": [["1", "m"]]}]})
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        req = _otlp_bytes("m")
        r = c.post("/v1/logs", content=req, headers=PROTOBUF)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert status_pb2.Status.FromString(r.content).code == 14  # UNAVAILABLE
        metrics = c.get("/metrics").text
        for source in ("es_bulk", "loki", "otlp"):
            assert f'smartlogs_events_received_total{{source="{source}"}}' in metrics
        assert 'smartlogs_requests_rejected_total{reason="otlp_backlog_full"}' in metrics


def _otlp_bytes(message: str) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add().body.string_value = message
    return req.SerializeToString()


# -- real clients against a real server ----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SeenHeaders:
    """ASGI middleware recording (path, content-type, content-encoding) of each request."""

    def __init__(self, app, seen: list):
        self.app, self.seen = app, seen

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            h = dict(scope["headers"])
            self.seen.append((scope["path"], h.get(b"content-type", b"").decode(),
                              h.get(b"content-encoding", b"").decode()))
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    app = build_app(_settings(tmp_path_factory.mktemp("receivers")))
    seen: list = []
    app.add_middleware(SeenHeaders, seen=seen)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        lifespan="on"))
    thread = threading.Thread(target=srv.run, name="uvicorn-receivers", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the API did not start")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=10) as http:
        yield SimpleNamespace(url=url, app=app, get=http.get, post=http.post, seen=seen)
    srv.should_exit = True
    thread.join(15)


@pytest.fixture
def flaky(server):
    """Make the next batch be stored but answered with an error (a lost confirm)."""
    state = server.app.state
    original = state.transport
    state.transport = FailFirstAccepts(original)
    yield state.transport
    state.transport = original


def test_official_elasticsearch_client_helpers_bulk(server):
    from elasticsearch import Elasticsearch, helpers

    tag = "esclient" + uuid.uuid4().hex[:8]
    server.seen.clear()
    with Elasticsearch(server.url, request_timeout=10) as es:
        info = es.info()  # the product check runs on this first answer
        assert info["version"]["number"] == "8.19.3"
        assert es.cluster.health()["status"] == "green"
        docs = [{"_index": "app-logs", "_id": f"{tag}-{i}", "_source": {
            "@timestamp": f"2024-05-01T10:00:0{i}Z", "message": f"{tag} order {i} shipped",
            "host": {"name": "shop-1"}, "log": {"level": "info"}, "service": {"name": "orders"},
            "order": {"id": i}}} for i in range(5)]
        docs.append({"_index": "app-logs", "message": f"{tag} no id", "level": "warning"})
        ok, errors = helpers.bulk(es, docs)
        assert ok == 6 and errors == []
        # a document the mapping cannot take is that item's 400; the others are stored
        ok, errors = helpers.bulk(es, [{"_index": "app-logs", "message": f"{tag} bad",
                                        "@timestamp": "not a date"},
                                       {"_index": "app-logs", "message": f"{tag} late"}],
                                  raise_on_error=False)
        assert ok == 1 and errors[0]["index"]["status"] == 400
        assert errors[0]["index"]["error"]["type"] == "document_parsing_exception"
    # what the client sends on _bulk (it must stay accepted)
    assert {h[1] for h in server.seen if h[0] == "/_bulk"} == {
        "application/vnd.elasticsearch+x-ndjson; compatible-with=8"}
    events = {e["message"]: e for e in stored(server.get, tag, 7)}
    assert len(events) == 7 and f"{tag} bad" not in events
    e = events[f"{tag} order 3 shipped"]
    assert (e["id"], e["host"], e["level"], e["component"], e["receiver"]) == (
        f"es:app-logs:{tag}-3", "shop-1", "INFO", "orders", "es_bulk")
    assert e["timestamp"] == "2024-05-01T10:00:03.000Z"
    assert e["fields"] == {"order": {"id": 3}, "_index": "app-logs"}
    assert events[f"{tag} no id"]["level"] == "WARNING"


def test_elasticsearch_client_retry_after_error_stores_once(server, flaky):
    from elasticsearch import Elasticsearch, helpers

    tag = "esretry" + uuid.uuid4().hex[:8]
    with Elasticsearch(server.url, request_timeout=10, max_retries=3) as es:
        ok, _ = helpers.bulk(es, [{"_index": "a", "message": f"{tag} {i}"} for i in range(4)])
    assert ok == 4 and flaky.calls == 2  # refused once (429), retried once
    assert len(stored(server.get, tag, 4)) == 4


def test_python_logging_loki_json_push(server):
    import logging_loki

    tag = "lokiclient" + uuid.uuid4().hex[:8]
    failures = []
    handlers = []
    for version in ("1", "0"):  # "1": {stream, values} with ns strings; "0": {labels, entries}
        h = logging_loki.LokiHandler(url=f"{server.url}/loki/api/v1/push", version=version,
                                     tags={"application": "shop", "host": "web7"})
        h.handleError = lambda record, v=version: failures.append((v, record.getMessage()))
        h.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(h)
    logger = logging.getLogger(f"shop.checkout.{tag}")
    logger.propagate, logger.level = False, logging.DEBUG
    try:
        for version, h in zip(("1", "0"), handlers):
            logger.addHandler(h)
            logger.warning("%s v%s payment slow", tag, version)
            logger.error("%s v%s payment failed", tag, version, extra={"tags": {"order_id": "A-17"}})
            logger.removeHandler(h)
    finally:
        for h in handlers:
            h.close()
    assert failures == []  # the handler raises on anything but 204
    events = {e["message"]: e for e in stored(server.get, tag, 4)}
    assert len(events) == 4
    for version in ("1", "0"):
        slow, failed = events[f"{tag} v{version} payment slow"], events[f"{tag} v{version} payment failed"]
        assert (slow["level"], slow["host"], slow["component"], slow["receiver"]) == (
            "WARNING", "web7", "shop", "loki")
        assert slow["fields"] == {"application": "shop", "host": "web7", "severity": "warning",
                                  "logger": f"shop.checkout.{tag}"}
        assert failed["level"] == "ERROR" and failed["fields"]["order_id"] == "A-17"
        assert abs(time.time() - _epoch(slow["timestamp"])) < 60


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_loki_protobuf_snappy_push_and_resend_is_not_duplicated(server):
    tag = "lokiproto" + uuid.uuid4().hex[:8]
    now = time.time_ns()
    raw = loki_push_bytes([
        (f'{{job="promtail", hostname="node-9", filename="/var/log/{tag}.log"}}',
         [(now, f"{tag} first line", {}), (now + 1, f"{tag} second line", {"trace_id": "t-1"})]),
        ('{service_name="billing", level="error"}', [(now + 2, f"{tag} third line", {})]),
    ])
    body = bytes(cramjam.snappy.compress_raw(raw))
    for _ in range(2):  # Promtail resends a batch whose answer it did not get
        r = server.post("/loki/api/v1/push", content=body, headers=PROTOBUF)
        assert r.status_code == 204 and r.content == b""
    events = {e["message"]: e for e in stored(server.get, tag, 3)}
    assert len(events) == 3
    first = events[f"{tag} first line"]
    assert (first["host"], first["component"], first["receiver"]) == ("node-9", "promtail", "loki")
    assert first["fields"] == {"job": "promtail", "hostname": "node-9", "filename": f"/var/log/{tag}.log"}
    assert abs(_epoch(first["timestamp"]) - now / 1e9) < 0.002
    assert events[f"{tag} second line"]["fields"]["trace_id"] == "t-1"
    third = events[f"{tag} third line"]
    assert (third["component"], third["level"]) == ("billing", "ERROR")


def test_protobuf_pushes_with_a_line_that_is_not_utf8_are_taken(server):
    """One Latin-1 line used to make the whole batch a 400 (and clients do not retry a 400)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    tag = "badutf8" + uuid.uuid4().hex[:8]
    now = time.time_ns()
    raw = loki_push_bytes([('{job="latin"}', [(now, f"{tag} loki good", {}),
                                              (now + 1, f"{tag} loki caf".encode() + b"\xe9", {})])])
    r = server.post("/loki/api/v1/push", content=bytes(cramjam.snappy.compress_raw(raw)),
                    headers=PROTOBUF)
    assert r.status_code == 204, r.text
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for line in (f"{tag} otlp good", f"{tag} otlp caf\u00e9"):
        sl.log_records.add(time_unix_nano=now).body.string_value = line
    r = server.post("/v1/logs", content=req.SerializeToString().replace("\u00e9".encode(), b"\xe9!"),
                    headers=PROTOBUF)
    assert r.status_code == 200, r.content
    messages = sorted(e["message"] for e in stored(server.get, tag, 4))
    assert messages == [f"{tag} loki caf\ufffd", f"{tag} loki good",
                        f"{tag} otlp caf\ufffd!", f"{tag} otlp good"]


def _otel_logger(server, compression, tag):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    results = []

    class Recording(OTLPLogExporter):
        def export(self, batch):
            res = super().export(batch)
            results.append(res)
            return res

    exporter = Recording(endpoint=f"{server.url}/v1/logs", timeout=10,
                         compression=Compression.Gzip if compression else Compression.NoCompression)
    provider = LoggerProvider(resource=Resource.create(
        {"service.name": "checkout", "host.name": "otel-host", "deployment.environment": "test"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"otel.{tag}")
    logger.propagate, logger.level = False, logging.DEBUG
    logger.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))
    return logger, provider, results


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
@pytest.mark.parametrize("gzip_on", [False, True], ids=["plain", "gzip"])
def test_opentelemetry_sdk_otlp_http_exporter(server, gzip_on):
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    tag = "otelsdk" + uuid.uuid4().hex[:8]
    logger, provider, results = _otel_logger(server, gzip_on, tag)
    server.seen.clear()
    try:
        logger.info("%s cart created", tag, extra={"cart.items": 3, "customer": "c-9"})
        logger.warning("%s payment retry", tag)
        logger.critical("%s payment down", tag)
        provider.force_flush()
    finally:
        provider.shutdown()
    assert results == [LogRecordExportResult.SUCCESS] * 3
    assert [h for h in server.seen if h[0] == "/v1/logs"] == [
        ("/v1/logs", "application/x-protobuf", "gzip" if gzip_on else "")] * 3
    events = {e["message"]: e for e in stored(server.get, tag, 3)}
    assert len(events) == 3
    created = events[f"{tag} cart created"]
    assert (created["level"], created["component"], created["host"], created["receiver"]) == (
        "INFO", "checkout", "otel-host", "otlp")
    f = created["fields"]
    assert f["cart.items"] == 3 and f["customer"] == "c-9" and f["deployment.environment"] == "test"
    assert f["service.name"] == "checkout" and f["otel.scope.name"] == f"otel.{tag}"
    assert abs(time.time() - _epoch(created["timestamp"])) < 60
    assert events[f"{tag} payment retry"]["level"] == "WARNING"
    assert events[f"{tag} payment down"]["level"] == "FATAL"  # the SDK's severity_text for CRITICAL


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
def test_opentelemetry_exporter_retries_503_without_duplicates(server, flaky):
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    tag = "otelretry" + uuid.uuid4().hex[:8]
    logger, provider, results = _otel_logger(server, True, tag)
    try:
        logger.error("%s once only", tag)
        provider.force_flush()
    finally:
        provider.shutdown()
    assert results == [LogRecordExportResult.SUCCESS] and flaky.calls == 2  # 503, Retry-After, 200
    assert len(stored(server.get, tag, 1)) == 1


def test_bulk_document_nested_too_deep_is_a_per_item_400_not_a_500(client):
    tag = "bulkdeep" + uuid.uuid4().hex[:8]
    deep = b'{"message": "' + tag.encode() + b' deep", "f": ' + b'{"a": ' * 260 + b'1' + b'}' * 261
    body = (b'{"index": {}}\n' + deep + b"\n"
            + b'{"index": {}}\n' + orjson.dumps({"message": f"{tag} flat"}) + b"\n")
    r = client.post("/app-logs/_bulk", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["index"]["status"] for i in items] == [400, 201]
    assert "more than 100 levels" in items[0]["index"]["error"]["reason"]
    assert [e["message"] for e in stored(client.get, tag, 1)] == [f"{tag} flat"]


def _two_members(body: bytes) -> bytes:
    """The body as two concatenated gzip members, cut mid-body (``cat a.gz b.gz``)."""
    cut = len(body) // 2
    return gzip.compress(body[:cut]) + gzip.compress(body[cut:])


def test_every_receiver_decodes_every_member_of_a_multi_member_gzip_body(client):
    """Concatenated gzip members are valid gzip: the second one used to be dropped silently."""
    tag = "gzmembers" + uuid.uuid4().hex[:8]
    gz = {"Content-Encoding": "gzip"}
    text = "".join(f"{tag} ingest line {i}\n" for i in range(4)).encode()
    r = client.post("/ingest", content=_two_members(text), headers={"Content-Type": "text/plain", **gz})
    assert r.status_code == 202 and r.json()["accepted"] == 4
    bulk = b"".join(b'{"index":{}}\n' + orjson.dumps({"message": f"{tag} bulk {i}"}) + b"\n"
                    for i in range(4))
    r = client.post("/idx/_bulk", content=_two_members(bulk),
                    headers={"Content-Type": "application/x-ndjson", **gz})
    assert r.status_code == 200 and r.json()["errors"] is False and len(r.json()["items"]) == 4
    push = orjson.dumps({"streams": [{"stream": {"job": "gz"}, "values": [
        [str(1714557600000000000 + i), f"{tag} loki {i}"] for i in range(4)]}]})
    r = client.post("/loki/api/v1/push", content=_two_members(push),
                    headers={"Content-Type": "application/json", **gz})
    assert r.status_code == 204
    otlp_body = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": f"{tag} otlp {i}"}} for i in range(4)]}]}]})
    r = client.post("/v1/logs", content=_two_members(otlp_body),
                    headers={"Content-Type": "application/json", **gz})
    assert r.status_code == 200
    messages = {e["message"] for e in stored(client.get, tag, 16)}
    assert len(messages) == 16 and {m.split()[1] for m in messages} == {"ingest", "bulk", "loki", "otlp"}
