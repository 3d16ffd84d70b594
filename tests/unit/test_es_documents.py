"""The Elasticsearch store's documents and bulk headers, byte for byte.

``ElasticsearchStore._prepare`` is per-line work of the worker, made cheaper (issue 18): it must
still produce exactly the bytes the store wrote before. ``_reference`` is the code before that
change, kept here verbatim as the definition of the stored document; the events below cover
what the pipeline emits and the odd cases (ids that are not strings, long and non-ASCII ids,
missing fields, flags given as other values, ``fields``, numpy scalars, both index periods).
The same documents as stored by the real Elasticsearch: tests/integration/test_elasticsearch_store.py
(``test_stored_documents_are_the_reference_documents``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import orjson
import pytest

from smartlogs.store.base import search_words
from smartlogs.store.elasticsearch import ElasticsearchStore
from streams.pipeline import Pipeline, PipelineConfig, _iso

_PASSTHROUGH = ("timestamp", "source", "receiver", "host", "component", "pid", "level", "message",
                "raw", "template_id", "template", "params", "score", "reason", "format",
                "incident_id")
_FLAGS = ("anomaly", "warming_up", "parse_ok", "truncated")
_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj):
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(type(obj).__name__)


def _reference(prefix: str, suffix_len: int, e: dict, seq: int, stored_at: int):
    """(index, _id, header bytes, document bytes) as the store made them before issue 18's
    worker changes."""
    event_id = e["id"]
    if not isinstance(event_id, str):
        event_id = str(event_id)
    ts = float(e["ts"])
    iso = _iso(ts)
    doc: dict = {"@timestamp": iso, "id": event_id, "ts": ts}
    for k in _PASSTHROUGH:
        v = e.get(k)
        if v is not None:
            doc[k] = v
    message = e.get("message")
    if isinstance(message, str):
        doc["words"] = " ".join(search_words(message))
    if "timestamp" not in doc:
        doc["timestamp"] = iso
    received = e.get("received")
    if received is not None:
        doc["received"] = received
    for k in _FLAGS:
        doc[k] = bool(e.get(k))
    fields = e.get("fields")
    if fields:
        doc["fields"] = fields
    doc["stored_at"] = stored_at
    doc["seq"] = seq
    index = f"{prefix}-{iso[:suffix_len].replace('-', '.')}"
    raw_id = event_id.encode("utf-8", "surrogatepass")
    doc_id = event_id if len(raw_id) <= 512 else "sha256:" + hashlib.sha256(raw_id).hexdigest()
    header = orjson.dumps({"create": {"_index": index, "_id": doc_id}})
    return index, doc_id, header, orjson.dumps(doc, default=_default, option=_OPTS)


def pipeline_events(n: int = 600) -> list[dict]:
    lines = [
        "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 "
        "euid=0 tty=NODEVssh ruser= rhost=218.188.2.4",
        "2024-03-01T10:00:00.123Z web-1 nginx[12]: GET /index.html 200 0.003",
        '{"ts": "2024-03-02T11:22:33Z", "level": "error", "msg": "disk full", "user": "ann"}',
        "kernel: Out of memory: Kill process 4242 (java) score 900",
        "Ünïcödé line with émojis 🚀 and tabs\there",
        "",
    ]
    items = [{"id": f"run:{k}", "raw": lines[k % len(lines)], "received": 1.8e9 + k * 0.37}
             for k in range(n)]
    pipe = Pipeline(PipelineConfig())
    return [e for k in range(0, n, 200) for e in pipe.process(items[k:k + 200])]


def odd_events() -> list[dict]:
    base = {"id": "x", "ts": 1.7e9, "message": "hello_world foo-bar 42", "template_id": "T1",
            "template": "hello <*>", "params": ["a"], "score": 0.5, "anomaly": True}
    return [
        base,
        {**base, "id": 12345},                                   # an id that is not a string
        {**base, "id": "é" * 128},                                # 128 chars, 256 bytes
        {**base, "id": "€" * 171},                                # 513 bytes: hashed
        {**base, "id": "a" * 512},                                # exactly the limit
        {**base, "id": "a" * 513},                                # one byte over: hashed
        {**base, "id": 'quote"back\\slash\ncontrol\x01'},          # escaped in the header
        {"id": "bare", "ts": 0},                                  # nearly nothing
        {**base, "ts": "1700000000.5", "received": 1700000001},  # ts as text, received int
        {**base, "message": None, "raw": "raw only", "timestamp": "given"},
        {**base, "message": 17},                                  # not a string: no words
        {**base, "anomaly": "yes", "warming_up": 0, "parse_ok": [], "truncated": 1},
        {**base, "fields": {"user": "ann", "n": 3, "nested": {"a": [1, 2]}, 7: "int key"}},
        {**base, "fields": {}},                                   # empty: left out
        {**base, "score": np.float32(0.25), "params": ("t", "u"), "pid": 99},
        {**base, "ts": 1.7e9 + 86400 * 40.5},                     # another day, another month
        {**base, "ts": -1.5},                                     # before 1970
        {**base, "incident_id": "I1", "reason": "rare template", "level": "error",
         "host": "h", "component": "c", "source": "s", "receiver": "syslog", "format": "json"},
    ]


@pytest.mark.parametrize("period, suffix_len", [("day", 10), ("month", 7)])
def test_documents_and_headers_are_the_reference_bytes(period, suffix_len):
    store = ElasticsearchStore("http://127.0.0.1:1", index_prefix="docs-test", index_period=period)
    events = pipeline_events() + odd_events()
    for k, e in enumerate(events * 2):  # the second pass: from the caches
        p = store._prepare(e, 1_000_000 + k, 1_700_000_000_123)
        index, doc_id, header, body = _reference("docs-test", suffix_len, e, 1_000_000 + k,
                                                 1_700_000_000_123)
        assert (p.index, p.id, p.header, p.body) == (index, doc_id, header, body), e
        assert p.seq == 1_000_000 + k and p.event is e


def test_a_surrogate_in_an_id_is_still_refused_as_before():
    """orjson refuses lone surrogates: the event is dead-lettered by ``_write_events`` (the
    exception type is what it catches), as before."""
    store = ElasticsearchStore("http://127.0.0.1:1", index_prefix="docs-test")
    with pytest.raises(TypeError):
        store._prepare({"id": "bad\udc80", "ts": 1.7e9, "message": "m"}, 1, 2)
    with pytest.raises(TypeError):
        _reference("docs-test", 10, {"id": "bad\udc80", "ts": 1.7e9, "message": "m"}, 1, 2)


def test_the_header_cache_is_bounded(monkeypatch):
    import smartlogs.store.elasticsearch as es_store

    monkeypatch.setattr(es_store, "_HEADS_MAX", 3)
    store = ElasticsearchStore("http://127.0.0.1:1", index_prefix="docs-test")
    for day in range(10):
        e = {"id": f"d{day}", "ts": 1.7e9 + day * 86400, "message": "m"}
        p = store._prepare(e, 1, 2)
        assert p.header == _reference("docs-test", 10, e, 1, 2)[2]
        assert len(store._heads) <= 3
