"""ElasticsearchStore against the real Elasticsearch 8.19 started by scripts/engines.

Every test uses its own index prefix (and so its own index template), removed afterwards by
name (wildcard deletes are refused by Elasticsearch's default ``destructive_requires_name``).
Behaviour is checked against SqliteStore fed the same events: same totals, windows, tops,
templates, filters and order.
"""

from __future__ import annotations

import copy
import http.client
import logging
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from elasticsearch import Elasticsearch

from smartlogs.store import EventQuery, SqliteStore
from smartlogs.store.elasticsearch import (DocumentsRejected, ElasticsearchStore,
                                           StoreUnavailable)
from streams.pipeline import Pipeline, PipelineConfig

# when the test events arrive: now, as for real ones (an event time more than 62 days after
# its arrival is replaced by the arrival time: streams.pipeline.MAX_FUTURE_SECONDS)
RECEIVED = float(int(time.time()))

pytestmark = pytest.mark.engines

WINDOW = 60


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def es(elasticsearch):
    client = Elasticsearch(elasticsearch, request_timeout=30)
    yield client
    client.close()


@pytest.fixture
def make_store(elasticsearch, es):
    """Factory of stores with unique prefixes; their indices and templates are deleted after."""
    prefixes: list[str] = []
    stores: list[ElasticsearchStore] = []

    def make(url: str | None = None, **kw) -> ElasticsearchStore:
        prefix = kw.pop("index_prefix", None) or f"slt-{uuid.uuid4().hex[:10]}"
        prefixes.append(prefix)
        store = ElasticsearchStore(url or elasticsearch, index_prefix=prefix,
                                   window_seconds=kw.pop("window_seconds", WINDOW), **kw)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
    for prefix in prefixes:
        _cleanup(es, prefix)


def _lines(loghub, name: str, n: int) -> list[str]:
    path = loghub / name / f"{name}_2k.log"
    return path.read_text(errors="replace").splitlines()[:n]


def linux_events(loghub, n: int = 500, prefix: str = "t") -> list[dict]:
    items = [{"id": f"{prefix}:{i}", "raw": line, "received": RECEIVED}
             for i, line in enumerate(_lines(loghub, "Linux", n))]
    return Pipeline(PipelineConfig()).process(items)


def mixed_events(loghub) -> list[dict]:
    """Linux (no level), Apache (levels, 2005) and JSON-ish items (hosts, "" level, no component),
    with some anomalies marked so that every stats dimension has something to count."""
    # arrivals spread over ~25 minutes, in an order of their own (whole ms: Elasticsearch
    # keeps dates to the millisecond), for filters and windows in arrival time
    items = [{"id": f"lx:{i}", "raw": line, "received": RECEIVED - 1500 + (i * 7 % 500) * 2.125}
             for i, line in enumerate(_lines(loghub, "Linux", 500))]
    items += [{"id": f"ap:{i}", "raw": line, "received": RECEIVED - 400 + i * 1.5}
              for i, line in enumerate(_lines(loghub, "Apache", 200))]
    for i in range(40):
        items.append({"id": f"js:{i}", "message": f"request {i} failed with (code) \"{i % 3}\"",
                      "ts": 1133672400.0 + 7.25 * i, "host": ("web-1", "web-2", "")[i % 3],
                      "level": ("error", "warn", "")[i % 3], "component": None,
                      "fields": {"path": f"/api/{i % 4}", "user": {"id": str(i)}},
                      "received": RECEIVED - 100 + 2.0 * i})
    events = Pipeline(PipelineConfig()).process(items)
    for i, e in enumerate(events):
        if i % 37 == 5:
            e["anomaly"], e["reason"] = True, "rare template"
    assert any(e["host"] == "" for e in events)  # kept as given: counts as "-" like no host
    return events


def _cleanup(es: Elasticsearch, prefix: str) -> None:
    names = es.indices.get(index=f"{prefix}-*", ignore_unavailable=True,
                           allow_no_indices=True, expand_wildcards="all").body
    for name in names:  # by name: wildcard deletes are refused (destructive_requires_name)
        es.indices.delete(index=name, ignore_unavailable=True)
    es.options(ignore_status=404).indices.delete_index_template(name=prefix)
    es.options(ignore_status=404).indices.delete(index=f"{prefix}.catalog")  # the template catalog


@pytest.fixture(scope="module")
def pair(elasticsearch, loghub, tmp_path_factory):
    """(events, SqliteStore, ElasticsearchStore) fed the same mixed events, for read-only tests."""
    events = mixed_events(loghub)
    sql = SqliteStore(tmp_path_factory.mktemp("ref") / "ref.db")
    assert sql.write(copy.deepcopy(events), window_seconds=WINDOW) == len(events)
    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    store = ElasticsearchStore(elasticsearch, index_prefix=prefix, refresh="wait_for",
                               window_seconds=WINDOW)
    assert store.write(copy.deepcopy(events), window_seconds=WINDOW) == len(events)
    yield events, sql, store
    sql.close()
    store.close()
    client = Elasticsearch(elasticsearch, request_timeout=30)
    _cleanup(client, prefix)
    client.close()


def _wait_count(store: ElasticsearchStore, n: int, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while store.search(EventQuery(limit=0)).total < n:
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"only {store.search(EventQuery(limit=0)).total} of {n} searchable")
        time.sleep(0.05)
    return time.monotonic() - t0


def _strip_seq(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seq"} for e in events]


# -- setup and mapping ----------------------------------------------------------------------
def test_template_mapping_and_empty_store(make_store, es):
    store = make_store()
    # nothing written yet: queries answer empty, they do not fail
    assert store.search(EventQuery(q="x", host="h")).total == 0
    assert store.search(EventQuery()).last_seq == 0
    assert store.stats() == {"totals": {"events": 0, "anomalies": 0, "templates": 0},
                             "windows": [], "top_hosts": [], "top_components": [],
                             "top_levels": [], "top_templates": []}
    assert store.templates() == []
    assert store.count_events() == 0

    store.ensure_setup()
    store.ensure_setup()  # idempotent, also from a second store on the same prefix
    make_store(index_prefix=store.index_prefix).ensure_setup()
    tpl = es.indices.get_index_template(name=store.index_prefix)["index_templates"][0]
    body = tpl["index_template"]
    assert body["index_patterns"] == [f"{store.index_prefix}-*"]
    settings = body["template"]["settings"]["index"]
    assert settings["refresh_interval"] == "500ms"
    assert settings["query"]["default_field"] == ["words"]
    mapping = body["template"]["mappings"]
    assert mapping["dynamic"] is False or mapping["dynamic"] == "false"
    props = mapping["properties"]
    expected = {"@timestamp": "date", "timestamp": "date", "ts": "double", "host": "keyword",
                "component": "keyword", "level": "keyword", "template_id": "keyword",
                "source": "keyword", "format": "keyword", "pid": "keyword", "message": "text",
                "template": "keyword", "params": "keyword", "score": "float",
                "anomaly": "boolean", "reason": "text", "warming_up": "boolean",
                "parse_ok": "boolean", "truncated": "boolean", "received": "date",
                "stored_at": "date", "seq": "long", "raw": "text", "fields": "flattened",
                "words": "text"}
    assert {k: props[k]["type"] for k in expected} == expected
    # kept for display, never searched, sorted or aggregated: not indexed at all (schema 4)
    for name in ("message", "raw", "params", "timestamp", "stored_at"):
        assert props[name].get("index") is False, name
        assert "fields" not in props[name], name
    for name in ("params", "timestamp", "stored_at"):
        assert props[name]["doc_values"] is False, name
    assert "fields" not in props["template"] and props["id"]["doc_values"] is False
    # schema 5: the document is stored as written (no filtered copy beside a recovery source)
    assert "_source" not in mapping or not mapping["_source"].get("excludes"), mapping.get("_source")
    assert props["reason"]["fields"]["keyword"]["type"] == "keyword"


def test_refresh_interval_setting_applies_to_new_and_existing_indices(make_store, es, loghub):
    with pytest.raises(ValueError):
        make_store(refresh_interval="soon")
    old = make_store(refresh_interval="1s")
    events = linux_events(loghub, 20)
    assert old.write(events, window_seconds=WINDOW) == 20
    index = old.indices()[0]

    def interval(name: str) -> str:
        return es.indices.get_settings(index=name).body[name]["settings"]["index"]["refresh_interval"]

    assert interval(index) == "1s"
    # the next start with another interval: the template and the existing index take it
    new = make_store(index_prefix=old.index_prefix, refresh_interval="250ms")
    new.ensure_setup()
    assert interval(index) == "250ms"
    assert es.indices.get_index_template(name=old.index_prefix)["index_templates"][0][
        "index_template"]["template"]["settings"]["index"]["refresh_interval"] == "250ms"


def test_index_made_by_the_previous_schema_keeps_working(make_store, es, loghub, tmp_path):
    """An index created by schema 3 (message and template indexed twice, params indexed, no
    receiver) before an upgrade: the new store writes to it and answers every filter there
    as the embedded store does."""
    store = make_store(refresh="wait_for", index_period="month")
    events = linux_events(loghub, 200)
    month = events[0]["timestamp"][:7]
    events = [e for e in events if e["timestamp"][:7] == month]
    index = f"{store.index_prefix}-{month.replace('-', '.')}"
    kw = {"type": "keyword", "ignore_above": 1024}
    props = {"@timestamp": {"type": "date"}, "timestamp": {"type": "date", "ignore_malformed": True},
             "ts": {"type": "double"}, "id": kw, "received": {"type": "date", "format": "epoch_second"},
             "stored_at": {"type": "date", "format": "epoch_millis"}, "seq": {"type": "long"},
             "source": kw, "host": kw, "component": kw, "pid": kw, "level": kw, "format": kw,
             "message": {"type": "text", "analyzer": "standard", "fields": {"keyword": kw}},
             "words": {"type": "text", "analyzer": "standard", "norms": False,
                       "index_options": "positions"},
             "raw": {"type": "text", "index": False}, "template_id": kw,
             "template": {"type": "keyword", "ignore_above": 4096,
                          "fields": {"text": {"type": "text", "analyzer": "standard"}}},
             "params": kw, "score": {"type": "float"}, "anomaly": {"type": "boolean"},
             "reason": {"type": "text", "analyzer": "standard", "fields": {"keyword": kw}},
             "warming_up": {"type": "boolean"}, "parse_ok": {"type": "boolean"},
             "truncated": {"type": "boolean"}, "fields": {"type": "flattened"},
             "incident_id": kw}
    es.indices.create(index=index, settings={"index": {"number_of_shards": 1,
                                                       "number_of_replicas": 0,
                                                       "refresh_interval": "1s"}},
                      mappings={"dynamic": False, "_source": {"excludes": ["words"]},
                                "properties": props})
    for i, e in enumerate(events):
        e["host"] = e["source"] = f"h{i % 3}"
        if i % 17 == 3:
            e["anomaly"], e["reason"] = True, "rare template"
    assert store.write(copy.deepcopy(events), window_seconds=WINDOW) == len(events) > 100
    assert store.indices() == [index]  # the old index took them
    mapping = es.indices.get_mapping(index=index).body[index]["mappings"]["properties"]
    assert mapping["receiver"]["type"] == "keyword"  # learned on start
    assert "keyword" in mapping["message"]["fields"]  # its own mapping otherwise kept
    sql = SqliteStore(tmp_path / "ref.db")
    sql.write(copy.deepcopy(events), window_seconds=WINDOW)
    word = events[5]["message"].split()[0]
    for q in (EventQuery(limit=500), EventQuery(q=word, limit=500), EventQuery(host="h1", limit=500),
              EventQuery(anomaly=True, limit=500), EventQuery(template=events[0]["template_id"], limit=500),
              EventQuery(source="h2", limit=500)):
        got, want = store.search(q), sql.search(q)
        assert got.total == want.total > 0, q
        diff = [(k, a.get(k), b.get(k)) for a, b in zip(_strip_seq(got.events), _strip_seq(want.events))
                for k in set(a) | set(b) if a.get(k) != b.get(k)]
        assert not diff, (q, diff[:5])
    assert store.stats(top=5)["totals"] == sql.stats(top=5)["totals"]
    sql.close()


def test_daily_indices_by_event_time_get_the_mapping(make_store, es, loghub):
    store = make_store(refresh="wait_for")
    events = linux_events(loghub, 50)
    odd = dict(events[0], id="odd:1", unknown_key={"a": [1, 2]}, host="x" * 5000, pid=1234)
    assert store.write([*events, odd], window_seconds=WINDOW) == 51
    days = sorted({e["timestamp"][:10].replace("-", ".") for e in events})
    assert store.indices() == [f"{store.index_prefix}-{d}" for d in days]
    m = es.indices.get_mapping(index=store.indices()[0]).body
    props = next(iter(m.values()))["mappings"]["properties"]
    assert props["@timestamp"]["type"] == "date" and "unknown_key" not in props
    got = store.search(EventQuery(q=events[0]["message"], limit=100)).events
    oddback = next(e for e in got if e["id"] == "odd:1")
    assert oddback["pid"] == "1234" and len(oddback["host"]) == 5000
    assert "unknown_key" not in oddback


# -- writes ---------------------------------------------------------------------------------
def test_write_is_searchable_within_a_second(make_store, loghub, tmp_path):
    store = make_store()  # no forced refresh: relies on refresh_interval=1s
    events = linux_events(loghub)
    assert store.write(events, window_seconds=WINDOW) == 500
    waited = _wait_count(store, 500)
    assert waited < 1.5, f"searchable only after {waited:.2f}s"
    # every new event got its seq, strictly increasing in batch order
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 500

    sql = SqliteStore(tmp_path / "ref.db")
    sql.write(linux_events(loghub), window_seconds=WINDOW)
    got = store.search(EventQuery(limit=500)).events
    want = sql.search(EventQuery(limit=500)).events
    assert _strip_seq(got) == _strip_seq(want)  # same keys, order, values and types
    assert [list(e) for e in got[:1]] == [list(e) for e in want[:1]]
    for e in got:
        assert isinstance(e["seq"], int) and isinstance(e["ts"], float)
        assert isinstance(e["params"], list) and isinstance(e["fields"], dict)
        assert all(isinstance(e[f], bool)
                   for f in ("anomaly", "warming_up", "parse_ok", "truncated"))


def test_rewrite_is_idempotent(make_store, loghub):
    store = make_store(refresh="wait_for")
    assert store.write(linux_events(loghub), window_seconds=WINDOW) == 500
    last = store.search(EventQuery(limit=1)).last_seq
    again = linux_events(loghub)  # same ids, fresh dicts (a replay after a crash)
    assert store.write(again, window_seconds=WINDOW) == 0
    assert not any("seq" in e for e in again)  # nothing new: no seq, no window counts
    assert store.count_events() == 500
    assert store.search(EventQuery(limit=1)).last_seq == last
    # a batch that repeats an id, mixed with old and new ids
    more = linux_events(loghub, 510)[495:]
    dup = dict(more[-1])
    assert store.write([*more, dup], window_seconds=WINDOW) == 10
    assert "seq" not in dup and store.count_events() == 510
    assert store.search(EventQuery(limit=0)).total == 510


AUTH = ("Jun 14 15:16:{:02d} combo sshd(pam_unix)[{}]: authentication failure; logname= uid=0 "
        "euid=0 tty=NODEVssh ruser= rhost=10.0.0.{} user={}")


def test_a_template_merge_rewrites_stored_events_like_sqlite(make_store, tmp_path):
    """An enumeration (user=root, user=ftp, ...) outgrows its values and merges: the events
    stored under the ids merged away carry the surviving id afterwards, as in SqliteStore."""
    pipeline = Pipeline(PipelineConfig())
    users = ["root", "ftp", "git", "mysql"] * 3 + ["uucp", "sshd"]
    # received: an epoch float with many digits (a re-rendered 1.7E9 is no date for ES)
    items = [{"id": f"m:{i}", "raw": AUTH.format(i, 100 + i, i, u), "received": 1795666376.379201}
             for i, u in enumerate(users)]
    before = pipeline.process(items[:12])
    after = pipeline.process(items[12:])
    merges = pipeline.miner.merges()
    assert len(merges) == 3 and len({e["template_id"] for e in before}) == 4
    es, lite = make_store(refresh="wait_for"), SqliteStore(tmp_path / "db")
    for store in (es, lite):
        store.write(copy.deepcopy(before), window_seconds=WINDOW)
        store.write(copy.deepcopy(after), window_seconds=WINDOW)
    assert es.merge_templates(merges) == lite.merge_templates(merges) == 9
    survivor = after[0]["template_id"]
    for store in (es, lite):
        found = store.search(EventQuery(template=survivor, limit=100))
        assert found.total == 14
        assert {e["id"] for e in found.events} == {i["id"] for i in items}
        assert [t["id"] for t in store.templates()] == [survivor]
        assert store.stats(windows=1000)["top_templates"][0]["count"] == 14
    # events keep everything else (the text they were emitted with, their times, ...)
    stored = {e["id"]: e for e in es.search(EventQuery(limit=100)).events}
    for e in before + after:
        assert stored[e["id"]]["template"] == e["template"]
        assert stored[e["id"]]["received"] == e["received"] and stored[e["id"]]["ts"] == e["ts"]
    assert es.merge_templates(merges) == 0  # idempotent
    assert es.count_events() == 14
    # the rewritten events are still found by their words, as in SqliteStore (schema 4 kept
    # ``words`` out of _source, so an event indexed again from its _source lost them)
    for q, n in (("authentication failure", 14), ("ftp", 3), ('"rhost 10.0.0.3"', 1),
                 ("authen*", 14)):
        got, want = es.search(EventQuery(q=q, limit=100)), lite.search(EventQuery(q=q, limit=100))
        assert got.total == want.total == n, q
        assert {e["id"] for e in got.events} == {e["id"] for e in want.events}, q


def test_rejected_documents_go_to_dead_letter(make_store, loghub):
    got: list[list[dict]] = []
    store = make_store(refresh="wait_for", dead_letter=got.append)
    events = linux_events(loghub, 100)
    bad = dict(events[10], id="bad:1", score="not a number")
    worse = dict(events[11], id="bad:2", received="not a date")
    badts = dict(events[12], id="bad:3", ts="yesterday")
    noid = [{k: v for k, v in events[13].items() if k != "id"} for _ in range(2)]
    assert store.write([*events[:50], bad, *events[50:], worse, badts, *noid],
                       window_seconds=WINDOW) == 100
    assert store.count_events() == 100 and store.dead_lettered == 5
    assert len(got) == 1 and len(got[0]) == 5
    assert sum("id" not in r["event"] for r in got[0]) == 2  # never dropped silently
    rejected = {r["event"]["id"]: r["error"] for r in got[0] if "id" in r["event"]}
    assert set(rejected) == {"bad:1", "bad:2", "bad:3"}
    assert "score" in rejected["bad:1"] and "400" in rejected["bad:1"]
    assert "ts" in rejected["bad:3"] or "yesterday" in rejected["bad:3"]
    assert "received" in rejected["bad:2"]
    assert "seq" not in bad and "seq" not in worse and all("seq" in e for e in events)
    assert store.search(EventQuery(limit=0)).total == 100

    # without a callback the batch still stores the good documents, then raises
    strict = make_store(refresh="wait_for")
    fresh = linux_events(loghub, 20)
    with pytest.raises(DocumentsRejected) as info:
        strict.write([*fresh, dict(fresh[0], id="bad:9", score="NaN-ish")], window_seconds=WINDOW)
    assert info.value.stored == 20 and [r["event"]["id"] for r in info.value.rejected] == ["bad:9"]
    assert strict.count_events() == 20


# -- queries --------------------------------------------------------------------------------
def _ts(events, ident: str) -> float:
    return next(e["ts"] for e in events if e["id"] == ident)


def _tid(events, ident: str) -> str:
    return next(e["template_id"] for e in events if e["id"] == ident)


def _rc(events, ident: str) -> float:
    return next(e["received"] for e in events if e["id"] == ident)


QUERIES = {
    "all": lambda ev: EventQuery(limit=50),
    "words": lambda ev: EventQuery(q="authentication failure", limit=500),
    "no-words": lambda ev: EventQuery(q="((( ))) \"\" ", limit=20),
    # the query language (smartlogs.store.query): both stores translate the same tree
    "phrase": lambda ev: EventQuery(q='"session opened"', limit=500),
    "phrase-reversed": lambda ev: EventQuery(q='"opened session"', limit=500),
    "phrase-in-token": lambda ev: EventQuery(q="rhost=218.188.2.4", limit=500),
    "underscore-phrase": lambda ev: EventQuery(q="jk2_init", limit=500),
    "prefix": lambda ev: EventQuery(q="auth*", limit=500),
    "prefix-upper": lambda ev: EventQuery(q="AUTH* user", limit=500),
    "or": lambda ev: EventQuery(q="failure OR failed", limit=500),
    "not": lambda ev: EventQuery(q="session -opened", limit=500),
    "not-word": lambda ev: EventQuery(q="session NOT closed", limit=500),
    "only-not": lambda ev: EventQuery(q="-session", limit=800),
    "or-not": lambda ev: EventQuery(q="request OR -session", limit=800),
    "groups": lambda ev: EventQuery(q='(sshd* OR "jk2 init") -(closed OR error)', limit=500),
    "repeats": lambda ev: EventQuery(q="user user user root root", limit=500),
    "syntax-chars": lambda ev: EventQuery(q='"for (user" code:*', limit=20),
    "dotted": lambda ev: EventQuery(q="workerEnv", limit=500),      # in "workerEnv.init()"
    "ip-part": lambda ev: EventQuery(q="218 rhost", limit=500),      # in "rhost=218.188.2.4"
    "case": lambda ev: EventQuery(q="AUTHENTICATION", limit=5),
    "host": lambda ev: EventQuery(host="combo", limit=600),
    "host-2": lambda ev: EventQuery(host="web-2", limit=50),
    "level": lambda ev: EventQuery(level="ERROR", limit=500),
    "level-q": lambda ev: EventQuery(level="NOTICE", q="jk2 init", limit=500),
    "template": lambda ev: EventQuery(template=_tid(ev, "lx:0"), limit=500),
    "anomaly": lambda ev: EventQuery(anomaly=True, limit=500),
    "not-anomaly": lambda ev: EventQuery(anomaly=False, host="combo", limit=10),
    "since-until": lambda ev: EventQuery(since=_ts(ev, "lx:100"), until=_ts(ev, "lx:300"),
                                         limit=500),
    "until-exclusive": lambda ev: EventQuery(since=_ts(ev, "js:0"), until=_ts(ev, "js:10"),
                                             limit=500),
    "until-only": lambda ev: EventQuery(until=_ts(ev, "js:0"), limit=500),
    "combined": lambda ev: EventQuery(q="request failed", level="ERROR", host="web-1", limit=500),
    "arrival-since": lambda ev: EventQuery(since=_rc(ev, "lx:100"), until=_rc(ev, "ap:50"),
                                           basis="arrival", limit=1000),
    "arrival-until": lambda ev: EventQuery(until=_rc(ev, "js:3"), basis="arrival", q="request",
                                           limit=1000),
    "arrival-anomalies": lambda ev: EventQuery(since=RECEIVED - 600, basis="arrival",
                                               anomaly=True, limit=1000),
    "arrival": lambda ev: EventQuery(arrival=True, limit=100),  # newest stored first
    "arrival-filtered": lambda ev: EventQuery(arrival=True, host="web-1", limit=50),
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_filters_and_order_match_sqlite(pair, name):
    events, sql, store = pair
    query = QUERIES[name](events)
    want = sql.search(query)
    got = store.search(query)
    assert (got.total, got.total_relation) == (want.total, want.total_relation)
    assert [e["id"] for e in got.events] == [e["id"] for e in want.events]  # newest first
    assert _strip_seq(got.events) == _strip_seq(want.events)
    if name in ("since-until", "until-exclusive"):
        assert 0 < got.total < len(events)
        assert all(query.since <= e["ts"] < query.until for e in got.events)
        assert query.until not in [e["ts"] for e in got.events]


@pytest.mark.parametrize("name", ["all", "words", "prefix", "only-not", "host", "template",
                                  "arrival", "since-until", "level"])
@pytest.mark.parametrize("limit", [1, 100])
def test_bounded_totals_match_sqlite(pair, name, limit):
    """``total`` exact up to ``total_limit``, then the limit with relation gte, in both stores
    (Elasticsearch: track_total_hits=N, hits.total.relation); the pages are unchanged."""
    from dataclasses import replace

    events, sql, store = pair
    query = replace(QUERIES[name](events), total_limit=limit)
    want, got = sql.search(query), store.search(query)
    exact = sql.search(replace(query, total_limit=None))
    assert (want.total, want.total_relation) == ((exact.total, "eq") if exact.total <= limit
                                                 else (limit, "gte"))
    assert (got.total, got.total_relation) == (want.total, want.total_relation)
    assert [e["id"] for e in got.events] == [e["id"] for e in exact.events]
    assert got.more == exact.more


def _pages(store, query: EventQuery) -> list[list[str]]:
    from dataclasses import replace

    from smartlogs.store.base import sort_key

    pages = []
    while True:
        res = store.search(query)
        pages.append([e["id"] for e in res.events])
        if not res.more:
            return pages
        query = replace(query, page_after=sort_key(query, res.events[-1]))


@pytest.mark.parametrize("kw", [{}, {"arrival": True}, {"after_seq": 0}, {"q": "session -closed"},
                                {"host": "combo", "since": 1117800000.0}])
def test_pages_match_sqlite(pair, kw):
    events, sql, store = pair
    query = EventQuery(limit=5 if "q" in kw else 37, **kw)
    if "after_seq" in kw:  # seqs differ between the stores: page each by its own
        want, got = _pages(sql, query), _pages(store, query)
        assert [len(p) for p in got] == [len(p) for p in want]
        assert sorted(i for p in got for i in p) == sorted(i for p in want for i in p)
        return
    want, got = _pages(sql, query), _pages(store, query)
    assert got == want and len(want) > 2
    every = [i for p in want for i in p]
    assert len(every) == len(set(every)) == sql.search(query).total


def test_underscores_separate_words(pair):
    # like FTS5's unicode61 tokenizer, "jk2_init" is the words jk2 and init (as a phrase)
    _, sql, store = pair
    a = store.search(EventQuery(q="jk2_init", limit=500))
    b = store.search(EventQuery(q="init jk2", limit=500))
    assert a.total == b.total > 0 and [e["id"] for e in a.events] == [e["id"] for e in b.events]
    assert a.total == sql.search(EventQuery(q="jk2_init", limit=500)).total


@pytest.mark.parametrize("q", ['session "opened', "(a", "a OR", "rhost=218*"])
def test_both_stores_refuse_the_same_unparseable_queries(pair, q):
    from smartlogs.store.query import QuerySyntaxError

    _, sql, store = pair
    with pytest.raises(QuerySyntaxError):
        sql.search(EventQuery(q=q))
    with pytest.raises(QuerySyntaxError):
        store.search(EventQuery(q=q))


def test_queries_stop_when_the_server_shuts_down(make_store, loghub):
    # (the budget itself is Elasticsearch's search timeout, whose clock ticks every ~200 ms:
    # a few hundred documents cannot run past it, so it is not tested here)
    from smartlogs.store.base import QueryInterrupted

    store = make_store(refresh="wait_for")
    store.write(linux_events(loghub), window_seconds=WINDOW)
    assert store.search(EventQuery(q="-session", limit=10)).total > 0
    store.interrupt_queries()
    with pytest.raises(QueryInterrupted):
        store.search(EventQuery(limit=1))


def test_retention_deletes_whole_old_days(make_store, loghub):
    store = make_store(refresh="wait_for")
    events = linux_events(loghub)
    store.write(events, window_seconds=WINDOW)
    days = store.indices()
    cut = events[250]["ts"]
    cut_day = events[250]["timestamp"][:10].replace("-", ".")
    deleted = store.delete_before(cut)
    assert deleted == [d for d in days if d.rsplit("-", 1)[1] < cut_day] and deleted
    assert store.indices() == [d for d in days if d not in deleted]
    kept = sum(e["timestamp"][:10].replace("-", ".") >= cut_day for e in events)
    assert store.count_events() == kept
    day_start = datetime.strptime(cut_day, "%Y.%m.%d").replace(tzinfo=timezone.utc).timestamp()
    assert store.search(EventQuery(until=day_start)).total == 0
    assert store.search(EventQuery(since=day_start, limit=0)).total == kept


def old_day_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y.%m.%d")


def test_monthly_indices_and_their_retention(make_store, loghub):
    """index_period="month" (the settings' default): one index per month of event time; a
    replay of Linux_2k (44 days) touches two indices, not 44; retention deletes whole months,
    and also the daily indices a store made before the period changed."""
    daily = make_store(refresh="wait_for")
    store = make_store(refresh="wait_for", index_prefix=daily.index_prefix, index_period="month")
    events = linux_events(loghub, 2000)
    assert store.write(events, window_seconds=WINDOW) == 2000
    months = sorted({e["timestamp"][:7].replace("-", ".") for e in events})
    assert store.indices() == [f"{store.index_prefix}-{m}" for m in months] and len(months) == 2
    assert store.search(EventQuery(q="authentication failure", limit=0)).total > 0
    old_day = dict(events[0], id="old-day", ts=events[0]["ts"] - 90 * 86400)
    assert daily.write([old_day], window_seconds=WINDOW) == 1  # a daily index, months earlier
    first_of_july = next(e["ts"] for e in events if e["timestamp"][:7] == months[1].replace(".", "-"))
    old_day_index = f"{store.index_prefix}-{old_day_iso(old_day['ts'])}"
    deleted = store.delete_before(first_of_july)
    assert sorted(deleted) == sorted([old_day_index, f"{store.index_prefix}-{months[0]}"])
    assert store.indices() == [f"{store.index_prefix}-{months[1]}"]
    with pytest.raises(ValueError, match="index_period"):
        ElasticsearchStore("http://127.0.0.1:1", index_prefix="x", index_period="week")


def test_newest_first_and_tail_cursor(make_store, loghub):
    store = make_store(refresh="wait_for")
    first = linux_events(loghub, 300)
    store.write(first[:200], window_seconds=WINDOW)
    res = store.search(EventQuery(limit=500))
    ts = [(e["ts"], e["seq"]) for e in res.events]
    assert ts == sorted(ts, reverse=True) and res.total == 200
    cursor = res.last_seq
    assert cursor == max(e["seq"] for e in first[:200])

    tail = store.search(EventQuery(after_seq=0, limit=3))
    assert [e["id"] for e in tail.events] == ["t:0", "t:1", "t:2"] and tail.total == 200

    store.write(first[200:], window_seconds=WINDOW)
    nxt = store.search(EventQuery(after_seq=cursor, limit=1000))
    assert [e["id"] for e in nxt.events] == [f"t:{i}" for i in range(200, 300)]
    assert nxt.total == 100 and nxt.last_seq > cursor
    assert all(e["seq"] > cursor for e in nxt.events)
    assert store.search(EventQuery(after_seq=nxt.last_seq)).events == []
    # paging through the tail returns every event exactly once, in store order
    seen, cur = [], 0
    while True:
        page = store.search(EventQuery(after_seq=cur, limit=64)).events
        if not page:
            break
        seen += [e["id"] for e in page]
        cur = page[-1]["seq"]
    assert seen == [f"t:{i}" for i in range(300)]


def _norm_top(rows: list[dict]) -> list[tuple]:
    return sorted((-r["count"], r["key"], r.get("template")) for r in rows)


STATS = {
    "defaults": lambda ev: {},
    "few-windows": lambda ev: {"windows": 5, "top": 1000},
    "all-windows": lambda ev: {"windows": 100000, "top": 1000},
    "unaligned-range": lambda ev: {"since": _ts(ev, "lx:100") + 0.5, "until": _ts(ev, "lx:300") + 1,
                                   "windows": 1000, "top": 1000},
    "since": lambda ev: {"since": _ts(ev, "js:0"), "windows": 7, "top": 1000},
    "until": lambda ev: {"until": _ts(ev, "js:0") + 30, "windows": 1000, "top": 1000},
    "empty-range": lambda ev: {"since": 4e9, "top": 5},
    "arrival": lambda ev: {"basis": "arrival", "windows": 1000, "top": 1000},
    "arrival-range": lambda ev: {"basis": "arrival", "since": _rc(ev, "lx:100") + 0.5,
                                 "until": _rc(ev, "ap:50"), "windows": 7, "top": 1000},
}


@pytest.mark.parametrize("name", list(STATS))
def test_stats_match_sqlite(pair, name):
    events, sql, store = pair
    kwargs = STATS[name](events)
    want = sql.stats(**kwargs)
    got = store.stats(**kwargs)
    assert list(got) == list(want)
    assert got["totals"] == want["totals"]
    assert got["windows"] == want["windows"]
    for key in ("top_hosts", "top_components", "top_levels", "top_templates"):
        assert _norm_top(got[key]) == _norm_top(want[key]), key
        assert [r["count"] for r in got[key]] == [r["count"] for r in want[key]], key
    if name == "defaults":
        assert len(got["windows"]) == 60 and got["windows"][0]["start"].endswith(":00.000Z")
        assert got["totals"]["anomalies"] > 0
    if name == "arrival":
        assert sum(w["total"] for w in got["windows"]) == len(events)
        assert 20 <= len(got["windows"]) <= 30  # ~25 minutes of arrivals
    if name == "all-windows":
        assert any("-" in w["levels"] for w in got["windows"])
        assert any("ERROR" in w["levels"] for w in got["windows"])
        assert sum(w["total"] for w in got["windows"]) == len(events)


def test_stats_small_top_and_templates_match_sqlite(pair):
    _, sql, store = pair
    got, want = store.stats(top=3), sql.stats(top=3)
    for key in ("top_hosts", "top_components", "top_levels", "top_templates"):
        assert [r["count"] for r in got[key]] == [r["count"] for r in want[key]], key
        full = {r["key"]: r["count"] for r in sql.stats(top=1000)[key]}
        assert all(full[r["key"]] == r["count"] for r in got[key]), key
    assert {r["key"] for r in got["top_hosts"]} == {"combo", "web-1", "-"}  # "" counts as "-"

    t_es, t_sql = store.templates(), sql.templates()
    assert sorted(t_es, key=lambda t: t["id"]) == sorted(t_sql, key=lambda t: t["id"])
    assert [t["count"] for t in t_es] == [t["count"] for t in t_sql]  # most frequent first
    assert [t["count"] for t in store.templates(limit=3)] == [t["count"] for t in t_sql[:3]]
    assert set(t_es[0]) == {"id", "template", "count", "first_ts", "last_ts", "first_seen",
                            "last_seen", "mark"}


# -- failures and throughput ------------------------------------------------------------------
class _FaultyProxy:
    """A loopback HTTP proxy in front of the real Elasticsearch that spoils chosen _bulk calls:
    "429" answers Too Many Requests without forwarding; "drop" forwards, lets Elasticsearch
    apply the bulk, then closes the connection without an answer (a lost response)."""

    def __init__(self, target: str, faults: list[str]):
        self.faults = list(faults)
        self.seen: list[str] = []
        t = urlsplit(target)
        upstream = (t.hostname, t.port)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = None
                if "/_bulk" in self.path and proxy.faults:
                    fault = proxy.faults.pop(0)
                proxy.seen.append(f"{self.command} {self.path} {fault or ''}".strip())
                if fault == "429":
                    payload = b'{"error":{"type":"es_rejected_execution_exception"},"status":429}'
                    self.send_response(429)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("X-Elastic-Product", "Elasticsearch")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(payload)
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(*upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault == "drop":
                    self.close_connection = True
                    return  # Elasticsearch did the work; the client never hears about it
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_retries_after_429_and_lost_responses_count_exactly(make_store, loghub, elasticsearch):
    events = linux_events(loghub, 500)
    with _FaultyProxy(elasticsearch, ["429", "drop", "drop"]) as proxy:
        store = make_store(proxy.url, refresh="wait_for", chunk_size=200, backoff=0.01)
        # chunk 1: 429 → retried; chunk 1 again: applied but answer lost; chunk 2: lost too
        assert store.write(events, window_seconds=WINDOW) == 500
    bulks = [s for s in proxy.seen if "/_bulk" in s]
    assert [b.split()[-1] for b in bulks[:3]] == ["429", "drop", "drop"] and len(bulks) >= 4
    assert all("seq" in e for e in events)
    direct = make_store(index_prefix=store.index_prefix)
    assert direct.count_events() == 500
    # the seq each event carries is the one stored (the retried ones included)
    stored = {e["id"]: e["seq"] for e in direct.search(EventQuery(limit=500)).events}
    assert stored == {e["id"]: e["seq"] for e in events}


def test_a_write_block_is_retried_then_unavailable_not_dead_lettered(make_store, loghub, es):
    got: list = []
    store = make_store(refresh="wait_for", dead_letter=got.append, max_retries=2, backoff=0.01)
    events = linux_events(loghub, 20)
    assert store.write(events[:1], window_seconds=WINDOW) == 1
    index = store.indices()[0]
    es.indices.put_settings(index=index, settings={"index.blocks.write": True})
    try:
        batch = events[1:5]
        blocked = [e for e in batch if e["timestamp"][:10] == events[0]["timestamp"][:10]]
        assert 0 < len(blocked) < len(batch)
        with pytest.raises(StoreUnavailable) as info:  # 403 cluster_block_exception: not the doc
            store.write(batch, window_seconds=WINDOW)
        assert info.value.pending == len(blocked) and got == [] and store.dead_lettered == 0
        assert info.value.stored == len(batch) - len(blocked)  # the other day's index took them
        assert [("seq" in e) for e in batch] == [e not in blocked for e in batch]
    finally:
        es.indices.put_settings(index=index, settings={"index.blocks.write": None})
    # once unblocked, a retry of everything stores exactly what was missing
    assert store.write(linux_events(loghub, 20), window_seconds=WINDOW) == 20 - 1 - (
        len(batch) - len(blocked))
    assert store.count_events() == 20


def test_unreachable_elasticsearch_raises_store_unavailable(make_store, loghub):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    store = make_store(f"http://127.0.0.1:{port}", max_retries=2, backoff=0.01,
                       request_timeout=2)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.write(linux_events(loghub, 5), window_seconds=WINDOW)
    assert time.monotonic() - t0 < 20


def test_never_requests_root(make_store, loghub, caplog):
    caplog.set_level(logging.INFO, logger="elastic_transport.transport")
    store = make_store(refresh="wait_for")
    store.write(linux_events(loghub, 50), window_seconds=WINDOW)
    store.search(EventQuery(q="session"))
    store.stats()
    store.templates()
    store.count_events()
    assert store.health()["status"] in ("green", "yellow")
    requests = [r.getMessage() for r in caplog.records if r.name == "elastic_transport.transport"]
    assert requests, "expected the transport to log its requests"
    assert not [r for r in requests if re.match(r"^(GET|HEAD) \S+?://[^/\s]+/ \[", r)]


def test_bulk_throughput_20k(make_store, loghub):
    lines = _lines(loghub, "Linux", 2000)
    items = [{"id": f"bulk:{i}", "raw": lines[i % 2000], "received": RECEIVED} for i in range(20000)]
    events = Pipeline(PipelineConfig()).process(items)
    store = make_store()
    store.ensure_setup()
    t0 = time.perf_counter()
    n = store.write(events, window_seconds=WINDOW)
    elapsed = time.perf_counter() - t0
    assert n == 20000
    store.refresh()
    assert store.count_events() == 20000
    print(f"\nElasticsearchStore.write: 20000 events in {elapsed:.2f}s "
          f"= {20000 / elapsed:,.0f} docs/s")


def test_count_ids_by_run_prefix_agrees_with_sqlite(pair):
    """What a resumed replay reports as already stored: ids ``RUN_ID:LINE`` counted by prefix."""
    _, sql, store = pair
    for prefix in ("lx:", "ap:", "js:", "nope:", "l"):
        assert store.count_ids(prefix) == sql.count_ids(prefix), prefix
    assert sql.count_ids("lx:") == 500 and sql.count_ids("nope:") == 0


def test_stored_documents_are_the_reference_documents(make_store, es):
    """What Elasticsearch keeps of each event (``_source``) is the document the store wrote
    before issue 18's cheaper document building (tests/unit/test_es_documents.py's reference;
    ``words`` included since schema 5), for pipeline events and odd ones alike; and each is
    stored under the reference's index and ``_id``."""
    import orjson

    from tests.unit.test_es_documents import _reference, odd_events, pipeline_events

    store = make_store()
    odd = [dict(e, id=f"odd:{k}:{e['id']}") for k, e in enumerate(odd_events())]
    events = pipeline_events(400) + odd
    assert store.write(events) == len(events)
    expected = {}
    for e in events:
        index, doc_id, _, body = _reference(store.index_prefix, 10, e, e["seq"], 0)
        expected[(index, doc_id)] = orjson.loads(body)
    got = es.mget(docs=[{"_index": i, "_id": d} for i, d in expected]).body["docs"]
    assert all(d["found"] for d in got)
    for d in got:
        want = expected[(d["_index"], d["_id"])]
        stored_at = d["_source"].pop("stored_at")
        want.pop("stored_at")
        assert isinstance(stored_at, int) and stored_at > 1.7e12
        assert d["_source"] == want
