"""Every event's source and receiver, and ``source=``, answer the same from both stores
(SqliteStore and ElasticsearchStore on the real Elasticsearch; issue 19)."""

from __future__ import annotations

import copy

import pytest

from smartlogs.store import SqliteStore
from smartlogs.store.base import EventQuery
from streams.pipeline import Pipeline, PipelineConfig
from tests.integration.test_elasticsearch_store import WINDOW, es, make_store  # noqa: F401

pytestmark = pytest.mark.engines
RECEIVED = 1_781_000_000.0


def _items() -> list[dict]:
    out = []
    for i in range(4):  # a replayed file without hosts, a shipped one, a service, a host, a key
        out.append({"id": f"r:{i}", "raw": f"order {i} accepted for checkout",
                    "stream": "orders_2k.log", "source": "http", "received": RECEIVED + i})
        out.append({"id": f"f:{i}", "raw": f"invoice {i} sent to customer",
                    "stream": "/var/log/billing/current.log", "source": "file",
                    "received": RECEIVED + i})
        out.append({"id": f"s:{i}", "message": f"cart {i} emptied", "component": "cart",
                    "ts": 1_781_000_000.0 + i, "source": "otlp", "received": RECEIVED + i})
        out.append({"id": f"h:{i}", "message": f"payment {i} refused", "host": "web-1",
                    "component": "cart", "ts": 1_781_000_000.0 + i, "source": "http",
                    "received": RECEIVED + i})
        out.append({"id": f"k:{i}", "raw": f"heartbeat {i} from edge", "key": "edge-shipper",
                    "source": "http", "received": RECEIVED + i})
    return out


def test_source_and_receiver_and_the_source_filter_match_in_both_stores(make_store, tmp_path):  # noqa: F811
    es_store, lite = make_store(refresh="wait_for"), SqliteStore(tmp_path / "db")
    events = Pipeline(PipelineConfig()).process(_items())
    for store in (es_store, lite):
        store.write(copy.deepcopy(events), window_seconds=WINDOW)
    es_store.refresh()

    def answer(store, **kw):
        res = store.search(EventQuery(limit=100, **kw))
        return res.total, sorted((e["id"], e["source"], e["receiver"], e["host"])
                                 for e in res.events)

    everything = answer(lite)
    assert everything == answer(es_store) and everything[0] == 20
    by_source = {src: sorted(i for i, s, _, _ in everything[1] if s == src)
                 for src in ("orders_2k.log", "/var/log/billing/current.log", "cart", "web-1",
                             "edge-shipper")}
    assert all(len(ids) == 4 for ids in by_source.values()), by_source
    for src, ids in by_source.items():
        want = answer(lite, source=src)
        assert [i for i, *_ in want[1]] == ids
        assert answer(es_store, source=src) == want, src
    assert answer(es_store, source="cart", host="web-1") == answer(lite, source="cart", host="web-1") \
        == (0, [])
    assert answer(es_store, source="http") == answer(lite, source="http") == (0, [])
    # receivers are kept apart
    assert {r for _, _, r, _ in everything[1]} == {"http", "file", "otlp"}


def test_a_document_written_before_sources_reads_and_filters_by_its_host(make_store, es):  # noqa: F811
    """Elasticsearch documents written before ``receiver``: ``source`` held the receiver."""
    store = make_store(refresh="wait_for")
    old = Pipeline(PipelineConfig()).process([
        {"id": "o:1", "message": "old line", "host": "db-1", "source": "syslog_tcp",
         "ts": 1_781_000_000.0, "received": RECEIVED}])
    for e in old:  # as the pipeline made them before
        e["source"] = e.pop("receiver")
    store.write(old, window_seconds=WINDOW)
    store.refresh()
    got = store.search(EventQuery(source="db-1")).events
    assert [(e["id"], e["source"], e["receiver"]) for e in got] == [("o:1", "db-1", "syslog_tcp")]
