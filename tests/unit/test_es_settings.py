"""SMARTLOGS_ES_REFRESH_INTERVAL: how often Elasticsearch makes new events searchable."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from smartlogs.settings import Settings
from smartlogs.store.elasticsearch import DEFAULT_REFRESH_INTERVAL, ElasticsearchStore, index_template


def test_refresh_interval_default_is_under_the_latency_target(monkeypatch):
    monkeypatch.delenv("SMARTLOGS_ES_REFRESH_INTERVAL", raising=False)
    # an event waits up to one interval: the p99 ingest->searchable target is 1 s
    assert Settings().es_refresh_interval == DEFAULT_REFRESH_INTERVAL == "500ms"
    monkeypatch.setenv("SMARTLOGS_ES_REFRESH_INTERVAL", "5s")
    assert Settings().es_refresh_interval == "5s"
    body = index_template("p", "5s")
    assert body["template"]["settings"]["index"]["refresh_interval"] == "5s"


@pytest.mark.parametrize("bad", ["", "soon", "0s", "-1", "1m", "500 ms", "1.5s"])
def test_refresh_interval_refused_when_malformed(bad):
    with pytest.raises(ValidationError, match="es_refresh_interval"):
        Settings(es_refresh_interval=bad)
    with pytest.raises(ValueError, match="refresh_interval"):
        ElasticsearchStore("http://127.0.0.1:1", index_prefix="p", refresh_interval=bad)


def test_fields_nothing_searches_are_not_indexed():
    props = index_template("p")["template"]["mappings"]["properties"]
    for name in ("message", "raw", "params", "timestamp", "stored_at"):
        assert props[name]["index"] is False and "fields" not in props[name], name
    # what the API filters, sorts and aggregates on stays indexed
    for name in ("words", "host", "level", "template_id", "source", "receiver", "anomaly",
                 "incident_id", "ts", "seq", "received", "@timestamp", "component", "id"):
        assert props[name].get("index", True) is not False, name
    assert index_template("p")["template"]["settings"]["index"]["query"]["default_field"] == ["words"]


def test_documents_are_stored_as_written_schema_5():
    """Schema 5: no ``_source`` excludes (with ``words`` left out, Elasticsearch filtered and
    re-serialised every document and kept the original beside it: bench/RESULTS.md)."""
    from smartlogs.store.elasticsearch import SCHEMA_VERSION

    body = index_template("p")
    assert SCHEMA_VERSION == 5 and body["version"] == 5
    assert body["template"]["mappings"]["_meta"]["schema_version"] == 5
    assert "excludes" not in body["template"]["mappings"].get("_source", {})


class _FakeBulkClient:
    """Stands in for the Elasticsearch client: records each _bulk request's lines."""

    def __init__(self, answer=None):
        self.requests: list[list[bytes]] = []
        self.answer = answer  # None: every document 201; else a callable(lines) -> body or raise
        self.indices = self

    def options(self, **kw):
        return self

    def put_index_template(self, **kw):
        pass

    put_mapping = put_settings = put_index_template

    def bulk(self, operations, **kw):
        if isinstance(operations, bytes):  # one NDJSON body: a line each, a final newline
            assert operations.endswith(b"\n")
            operations = operations.split(b"\n")[:-1]
        self.requests.append(list(operations))
        if self.answer is not None:
            return self.answer(operations)
        n = len(operations) // 2
        return type("R", (), {"body": {"items": [{"create": {"status": 201}}] * n}})()


def _events(n: int, size: int = 10) -> list[dict]:
    return [{"id": f"e{i}", "ts": 1.7e9 + i, "message": "x" * size, "received": 1.7e9}
            for i in range(n)]


def test_bulk_chunks_by_count_and_bytes_and_keeps_the_order():
    fake = _FakeBulkClient()
    store = ElasticsearchStore("http://es", index_prefix="p", client=fake, chunk_size=3,
                               index_period="month")
    events = _events(7)
    assert store._write_events(events) == 7  # the events path (no catalog records here)
    assert [len(r) // 2 for r in fake.requests] == [3, 3, 1]  # header + body per document
    ids = [orjson.loads(h)["create"]["_id"] for r in fake.requests for h in r[::2]]
    assert ids == [f"e{i}" for i in range(7)]
    assert all("seq" in e for e in events)
    fake.requests.clear()  # three documents of ~4 MiB (message + words): at most 10 MiB a request
    big = _events(3, size=2 * 1024 * 1024)
    assert store._write_events(big) == 3
    assert [len(r) // 2 for r in fake.requests] == [2, 1]


def test_bulk_refused_whole_answers_each_document_with_its_status():
    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
    from elasticsearch import ApiError

    calls = []

    def refuse_first(lines):
        calls.append(len(lines))
        if len(calls) == 1:  # the whole request refused (429): its documents are retried
            meta = ApiResponseMeta(status=429, http_version="1.1", headers=HttpHeaders(),
                                   duration=0.0, node=NodeConfig("http", "es", 9200))
            raise ApiError("too many requests", meta=meta, body={})
        return type("R", (), {"body": {"items": [{"create": {"status": 201}}] * (len(lines) // 2)}})()

    store = ElasticsearchStore("http://es", index_prefix="p", client=_FakeBulkClient(refuse_first),
                               backoff=0.0, max_backoff=0.0)
    events = _events(4)
    assert store._write_events(events) == 4 and calls == [8, 8] and store.dead_lettered == 0
