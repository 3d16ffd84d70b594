"""The template catalog answers the same from both stores (SqliteStore and ElasticsearchStore,
the real Elasticsearch): list (each sort, since, limit), one template (history, examples),
feedback marks (set, cleared, carried over a merge), unknown ids."""

from __future__ import annotations

import copy

import pytest

from smartlogs.store import SqliteStore
from streams.catalog import TemplateChange
from streams.pipeline import Pipeline, PipelineConfig
from tests.integration.test_elasticsearch_store import AUTH, WINDOW, es, make_store  # noqa: F401

pytestmark = pytest.mark.engines
RECEIVED = 1_781_000_000.0


def _feed(stores, pipeline, items):
    events = pipeline.process(items)
    catalog = pipeline.take_catalog()
    merges = pipeline.miner.merges()
    for store in stores:
        store.write(copy.deepcopy(events), window_seconds=WINDOW, catalog=catalog)
        if merges:
            store.merge_templates(merges)
    return events, catalog


def _feedback(tid: str, mark: str | None, at: float, note: str | None = None) -> TemplateChange:
    return TemplateChange(id=f"feedback/{tid}/{int(at * 1e9)}", template_id=tid, kind="feedback",
                          at=at, mark=mark, note=note, by="ops")


def test_the_catalog_answers_the_same_from_both_stores(make_store, tmp_path):  # noqa: F811
    es_store, lite = make_store(refresh="wait_for"), SqliteStore(tmp_path / "db")
    stores = (es_store, lite)
    pipeline = Pipeline(PipelineConfig())
    items = [{"id": f"c:{i}", "message": f"cache warmed in region r{i % 5} after {i} ms", "host": "h",
              "ts": 1_700_000_000.0 + i, "received": RECEIVED} for i in range(12)]
    items += [{"id": f"q:{i}", "message": "replica lagging behind primary", "host": "h",
               "ts": 1_700_000_500.0 + i, "received": RECEIVED} for i in range(3)]
    _feed(stores, pipeline, items)
    # an enumeration (user=...) that outgrows four values in the second batch: a merge
    users = ["root", "ftp", "git", "mysql"]
    _feed(stores, pipeline, [
        {"id": f"a:{i}", "raw": AUTH.format(i, 100 + i, i, u), "received": RECEIVED}
        for i, u in enumerate(users)])
    events, catalog = _feed(stores, pipeline, [
        {"id": f"b:{i}", "raw": AUTH.format(10 + i, 200 + i, i, u), "received": RECEIVED}
        for i, u in enumerate(["uucp", "sshd"])])
    assert [c.kind for c in catalog].count("merged") == 3
    survivor = events[0]["template_id"]
    es_store.refresh()

    # feedback: set on one, set and cleared on another, on a merged-away id, on an unknown id
    cache = next(t["id"] for t in lite.templates() if t["template"].startswith("cache"))
    replica = next(t["id"] for t in lite.templates() if t["template"].startswith("replica"))
    for store in stores:
        assert store.set_mark(_feedback(cache, "always_alert", 1_800_000_000.0, "page"))
        assert store.set_mark(_feedback(replica, "expected", 1_800_000_001.0))
        assert store.set_mark(_feedback(replica, None, 1_800_000_002.0))
        assert store.set_mark(_feedback(survivor, "expected", 1_800_000_003.0))
        assert not store.set_mark(_feedback("T99999", "expected", 1_800_000_004.0))
    es_store.refresh()

    assert lite.template_marks() == es_store.template_marks() == {cache: "always_alert",
                                                                  survivor: "expected"}
    for sort in ("count", "first_seen", "last_seen"):
        for since in (None, 1_700_000_400.0):
            for limit in (1, 3, 100):
                want = lite.templates(sort=sort, since=since, limit=limit)
                assert es_store.templates(sort=sort, since=since, limit=limit) == want, (sort, since, limit)
    listed = lite.templates(limit=100)
    assert len(listed) == 3 and {t["mark"] for t in listed} == {"always_alert", "expected", None}
    for t in listed:
        want = lite.template(t["id"])
        assert es_store.template(t["id"]) == want, t["id"]
        assert es_store.template(t["id"], history=2) == lite.template(t["id"], history=2)
    detail = lite.template(survivor)
    kinds = [h["kind"] for h in detail["history"]]
    assert kinds[0] == "created" and kinds.count("merged") == 3 and kinds[-1] == "feedback"
    cache_detail = lite.template(cache)
    assert cache_detail["examples"][0] == "cache warmed in region r0 after 0 ms"
    assert cache_detail["examples"][-1] == "cache warmed in region r1 after 11 ms"
    assert len(cache_detail["examples"]) <= 5
    assert es_store.template("T99999") is None and lite.template("T99999") is None
    merged = [c.template_id for c in catalog if c.kind == "merged"]
    for old in merged:
        assert es_store.template(old) is None and lite.template(old) is None
        assert es_store.merged_into(old) == lite.merged_into(old) == survivor
    assert es_store.merged_into(cache) is None and lite.merged_into(cache) is None


def _one_id_per_text(store) -> dict[str, set[str]]:
    from collections import defaultdict

    from smartlogs.store.base import EventQuery

    by_text = defaultdict(set)
    for e in store.search(EventQuery(limit=1000)).events:
        by_text[e["template"]].add(e["template_id"])
    assert by_text and all(len(ids) == 1 for ids in by_text.values()), {
        t: ids for t, ids in by_text.items() if len(ids) > 1}
    rows = store.templates(limit=1000)
    assert len({r["template"] for r in rows}) == len(rows), "a template text listed twice"
    assert {r["id"] for r in rows} == {i for ids in by_text.values() for i in ids}
    return by_text


def test_two_workers_on_one_elasticsearch_converge_to_one_id_per_text(make_store):  # noqa: F811
    """Issue 18 on the real Elasticsearch: two pipelines, each with its own store client (two
    worker processes), meet the same patterns through different first lines; after the
    aliases are applied every template text is under one id across all stored events, the
    template list names it once, and a pipeline restarted from its checkpoint keeps the ids."""
    import pickle
    import uuid

    from tests.component.test_catalog_shards import Shard, _lines

    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    one = make_store(index_prefix=prefix, refresh="wait_for")
    two = make_store(index_prefix=prefix, refresh="wait_for")
    a, b = Shard("a", one), Shard("b", two)
    first_a, first_b = a.send(_lines(0, 3)), b.send(_lines(1, 3))
    assert first_a[0]["template_id"] != first_b[0]["template_id"]
    for k in range(3, 30, 3):
        a.send(_lines(0, 3, k))
        b.send(_lines(1, 3, k))
    aliases = two.template_aliases()
    assert aliases == one.template_aliases()
    assert aliases and all(new < old for old, new in aliases.items())
    one.refresh()
    _one_id_per_text(one)
    a.adopt()
    b.adopt()
    after_a, after_b = a.send(_lines(0, 3, 40)), b.send(_lines(1, 3, 40))
    assert [e["template_id"] for e in after_a] == [e["template_id"] for e in after_b]
    one.refresh()
    _one_id_per_text(one)
    # a restart from the checkpoint (the pickled pipeline) with a new store client
    three = make_store(index_prefix=prefix, refresh="wait_for")
    restarted = Shard("b2", three, pickle.loads(pickle.dumps(b.pipeline)))
    restarted.adopt()
    again = restarted.send(_lines(1, 3, 60))
    assert [e["template_id"] for e in again] == [e["template_id"] for e in after_b]
    three.refresh()
    by_text = _one_id_per_text(three)
    assert {i for ids in by_text.values() for i in ids} == {e["template_id"] for e in after_a}


def test_templates_stored_with_numbered_ids_join_the_text_ids_in_elasticsearch(make_store,  # noqa: F811
                                                                                es):  # noqa: F811
    """Events stored before the catalog recorded texts (ids T1, T2, ...): the first write of
    a process records their texts once, so a model that names the pattern by its text joins
    the stored id."""
    import uuid

    from smartlogs.store.base import EventQuery
    from tests.component.test_catalog_shards import Shard

    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    old = make_store(index_prefix=prefix, refresh="wait_for")
    events = Pipeline(PipelineConfig()).process(
        [{"id": f"o{k}", "raw": f"job {k} finished on node{k} in 5 ms", "received": RECEIVED + k}
         for k in range(5)])
    for e in events:  # as the release before named them
        e["template_id"] = "T1"
    old.write(events, window_seconds=WINDOW)
    # as that release left the catalog: no text records, no mark (no history either, here)
    es.indices.delete(index=old.catalog_index)
    new = make_store(index_prefix=prefix, refresh="wait_for")
    fresh = Shard("n", new)
    fresh.send([f"job {k} finished on node{k} in 5 ms" for k in range(7, 12)])
    new.template_aliases()
    new.refresh()
    ids = {e["template_id"] for e in new.search(EventQuery(limit=100)).events}
    assert len(ids) == 1 and len(new.templates()) == 1
    assert new.count_events() == 10
