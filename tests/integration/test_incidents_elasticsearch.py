"""Incidents in ElasticsearchStore (the real Elasticsearch) agree with SqliteStore."""

from __future__ import annotations

import copy
import time
import uuid

import pytest
from elasticsearch import Elasticsearch

from smartlogs.store import EventQuery, SqliteStore
from smartlogs.store.elasticsearch import ElasticsearchStore
from streams.pipeline import Pipeline, PipelineConfig
from streams.runtime.stage import Batch
from tests.component.test_incidents_api import TS0, burst, normal

pytestmark = pytest.mark.engines
WINDOW = 60


def _items() -> list[dict]:
    # web3 quiet for 20 minutes in the middle: a silence incident (streams.silence) as well
    events = [e for e in normal() if not (e["host"] == "web3"
                                          and TS0 + 1200 <= e["timestamp"] < TS0 + 2400)]
    events += burst()
    return [{"id": f"x:{i}", "message": e["message"], "host": e["host"], "level": e["level"],
             "ts": e["timestamp"], "received": 1.8e9 + i, "source": "http"}
            for i, e in enumerate(events)]


@pytest.fixture(scope="module")
def stores(elasticsearch, tmp_path_factory):
    """Both stores fed the same events and incident snapshots, batch by batch."""
    p = Pipeline(PipelineConfig())
    items = _items()
    sql = SqliteStore(tmp_path_factory.mktemp("inc") / "ref.db")
    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    es_store = ElasticsearchStore(elasticsearch, index_prefix=prefix, refresh="wait_for",
                                  window_seconds=WINDOW)
    for k in range(0, len(items), 200):
        events = p.process(items[k:k + 200])
        # through the one interface both runtimes' sink calls (streams.runtime.stage.Sink)
        batch = Batch(events, [], None, [], p.take_incidents())
        sql.write_batch(copy.deepcopy(batch), window_seconds=WINDOW)
        es_store.write_batch(copy.deepcopy(batch), window_seconds=WINDOW)
    # a batch written again (the sink's retry after a lost answer) is absorbed whole
    assert batch.incidents and es_store.write_batch(copy.deepcopy(batch), window_seconds=WINDOW) == 0
    yield sql, es_store
    sql.close()
    es_store.close()
    client = Elasticsearch(elasticsearch, request_timeout=30)
    names = client.indices.get(index=f"{prefix}-*", ignore_unavailable=True,
                               allow_no_indices=True).body
    for name in [*names, es_store.incidents_index]:
        client.indices.delete(index=name, ignore_unavailable=True)
    client.options(ignore_status=404).indices.delete_index_template(name=prefix)
    client.close()


@pytest.mark.parametrize("kw", [{}, {"status": "open"}, {"status": "resolved"},
                                {"source": "web1"}, {"since": 1_700_003_010.0},
                                {"limit": 1}, {"template": "of the first incident"},
                                {"basis": "arrival"}, {"since": 1.8e9 + 1000, "basis": "arrival"}])
def test_incident_lists_match_sqlite(stores, kw):
    sql, es_store = stores
    if kw.get("template"):  # ids come from the templates' text: the first incident's
        kw = {"template": sql.incidents()[-1]["template_id"]}
        assert kw["template"]
    want = sql.incidents(**kw)
    assert es_store.incidents(**kw) == want
    if not kw:
        assert max(i["count"] for i in want) >= 30


def test_one_incident_and_its_events_match_sqlite(stores):
    sql, es_store = stores
    for inc in sql.incidents():
        assert es_store.incident(inc["id"]) == inc
        q = EventQuery(incident=inc["id"], limit=100)
        got, want = es_store.search(q), sql.search(q)
        assert got.total == want.total == inc["count"]
        assert [e["id"] for e in got.events] == [e["id"] for e in want.events]
        assert all(e["incident_id"] == inc["id"] for e in got.events)
    assert es_store.incident("Inope") is None and sql.incident("Inope") is None


def test_an_older_snapshot_never_overwrites_a_newer_one(stores):
    sql, es_store = stores
    inc = max(sql.incidents(), key=lambda i: i["count"])
    old = {**inc, "count": 3, "rev": 6, "status": "open"}
    es_store.write_incidents([old])  # refused by version (409), not an error
    sql.write_incidents([old])
    assert es_store.incident(inc["id"]) == sql.incident(inc["id"]) == inc
    es_store.write_incidents([inc])  # the same snapshot again (a re-run): accepted, unchanged
    assert es_store.incident(inc["id"]) == inc


def test_no_incident_yet_is_an_empty_list(elasticsearch):
    store = ElasticsearchStore(elasticsearch, index_prefix=f"slt-{uuid.uuid4().hex[:10]}")
    try:
        assert store.incidents() == [] and store.incident("I0") is None
    finally:
        store.close()


def _drop(es_url: str, store: ElasticsearchStore) -> None:
    client = Elasticsearch(es_url, request_timeout=30)
    client.indices.delete(index=store.incidents_index, ignore_unavailable=True)
    client.close()


def test_incidents_in_arrival_time_match_sqlite(elasticsearch, tmp_path):
    """A future-dated replay's incident and a later live one: event time puts the future one
    first, arrival time the live one, in both stores."""
    from tests.component.test_incidents_store import FUTURE, LIVE

    sql = SqliteStore(tmp_path / "ref.db")
    es_store = ElasticsearchStore(elasticsearch, index_prefix=f"slt-{uuid.uuid4().hex[:10]}",
                                  refresh="wait_for")
    try:
        for store in (sql, es_store):
            store.write_incidents([copy.deepcopy(FUTURE), copy.deepcopy(LIVE)])
        for kw in ({}, {"basis": "arrival"}, {"basis": "arrival", "since": 1.8e9 + 60},
                   {"since": 1.8e9 + 60}):
            assert es_store.incidents(**kw) == sql.incidents(**kw), kw
        assert [i["id"] for i in es_store.incidents(basis="arrival")] == ["Ilive", "Ifuture"]
    finally:
        sql.close()
        _drop(elasticsearch, es_store)
        es_store.close()


def test_an_incidents_index_made_before_arrival_listing_is_mapped_and_reindexed(elasticsearch):
    """The incidents index's mapping is not dynamic: one made before ``last_received`` was
    mapped could not sort by it. The first write maps it and re-indexes the stored snapshots."""
    from smartlogs.store.elasticsearch import incidents_index_body
    from tests.component.test_incidents_store import FUTURE, LIVE

    es_store = ElasticsearchStore(elasticsearch, index_prefix=f"slt-{uuid.uuid4().hex[:10]}",
                                  refresh="wait_for")
    client = Elasticsearch(elasticsearch, request_timeout=30)
    try:
        old = incidents_index_body()
        del old["mappings"]["properties"]["last_received"]
        client.indices.create(index=es_store.incidents_index, **old)
        for inc in (FUTURE, LIVE):  # stored by the old version
            client.index(index=es_store.incidents_index, id=inc["id"], document=inc,
                         version=inc["rev"], version_type="external_gte", refresh="wait_for")
        es_store.write_incidents([{**copy.deepcopy(FUTURE), "rev": 2, "count": 2}])
        deadline = time.monotonic() + 30
        while [i["id"] for i in es_store.incidents(basis="arrival")] != ["Ilive", "Ifuture"]:
            assert time.monotonic() < deadline, es_store.incidents(basis="arrival")
            time.sleep(0.2)
        assert es_store.incident("Ifuture")["count"] == 2
    finally:
        client.close()
        _drop(elasticsearch, es_store)
        es_store.close()


def test_a_silence_incident_is_stored_and_read_back_alike(stores):
    sql, es_store = stores
    (want,) = [i for i in sql.incidents(limit=100) if i["kind"] == "source_silence"]
    assert want["source"] == "web3" and want["status"] == "resolved" and want["count"] == 0
    assert es_store.incident(want["id"]) == want
    assert want["id"] in [i["id"] for i in es_store.incidents(source="web3", limit=100)]


def test_parts_of_a_shared_incident_written_concurrently_are_merged_exactly(elasticsearch,
                                                                            tmp_path):
    """A severe pattern over partitions (streams.incidents "Shared incidents"): two trackers'
    parts written by several stores at once, again and out of order, give one record whose
    count is the sum of the parts' latest counts, as SQLite's."""
    import threading

    from streams.incidents import IncidentTracker

    key = ("severity", "T9")
    trackers = [IncidentTracker(), IncidentTracker()]
    snaps: list[list[dict]] = [[], []]
    for i in range(12):
        t = trackers[i % 2]
        t.observe({"id": f"p:{i}", "ts": TS0 + i, "received": TS0 + i, "host": f"web-{i}",
                   "level": "CRITICAL", "message": "Kernel panic", "template_id": "T9",
                   "template": "Kernel panic", "score": 0.9, "reason": "first CRITICAL"}, key)
        snaps[i % 2].extend(t.take())
    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    stores = [ElasticsearchStore(elasticsearch, index_prefix=prefix, refresh="wait_for")
              for _ in range(4)]
    sql = SqliteStore(tmp_path / "ref.db")
    try:
        runs = [threading.Thread(target=s.write_incidents, args=(order,)) for s, order in zip(
            stores, (snaps[0], snaps[1], snaps[1][::-1], snaps[0][:3]))]
        for r in runs:
            r.start()
        for r in runs:
            r.join(60)
        for order in (snaps[1][::-1], snaps[0]):
            sql.write_incidents(order)
        (inc_id,) = {s["id"] for s in snaps[0] + snaps[1]}
        got, ref = stores[0].incident(inc_id), sql.incident(inc_id)
        assert got["count"] == ref["count"] == 12
        assert got["first_event_id"] == ref["first_event_id"] == "p:0"
        assert got["last_event_id"] == ref["last_event_id"] == "p:11"
        assert len(got["parts"]) == 2
    finally:
        for s in stores:
            s.close()
        sql.close()
        client = Elasticsearch(elasticsearch, request_timeout=30)
        client.indices.delete(index=stores[0].incidents_index, ignore_unavailable=True)
        client.close()
