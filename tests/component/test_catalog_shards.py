"""Issue 18, one template catalog: two independent pipelines (what two shards or two
partitions' pipelines are) writing to one SqliteStore, with overlapping patterns met through
different first lines. After the catalog's aliases are applied, every template text is under
one id across all stored events, GET /api/templates lists it once, and a restart (a pipeline
from its checkpoint, or a fresh one) keeps the ids."""

from __future__ import annotations

from collections import defaultdict

from smartlogs.store.base import EventQuery
from smartlogs.store.sqlite import SqliteStore
from streams.runtime.checkpoints import load_checkpoint, save_checkpoint
from streams.pipeline import Pipeline, PipelineConfig
from streams.templates import MergeNotices

CONFIG = PipelineConfig(hst_window=50)
T0 = 1_700_000_000.0
USERS = ["root", "ftp", "git", "mysql", "uucp", "sshd"]


def _lines(shard: int, n: int, start: int = 0) -> list[str]:
    """Overlapping patterns, each first met through a line of the shard's own: a job line (its
    node generalises), a transfer line (its size), and an enumeration of user names (which
    merges at its fifth value, the names in another order on each shard)."""
    out = []
    users = USERS if shard == 0 else USERS[::-1]
    for k in range(start, start + n):
        node = f"node{(k + 3 * shard) % 7}"
        out.append(f"job {k} finished on {node} in {k % 13} ms")
        out.append(f"sent {100 + 37 * shard + k} bytes to peer-{shard}{k % 5}x in {k % 9} ms")
        out.append(f"session opened for user={users[(k // 2) % len(users)]} by uid 0")
    return out


class Shard:
    """A pipeline and the writes a runtime makes after each batch (events with the catalog
    records, then the miner's merges)."""

    def __init__(self, name: str, store: SqliteStore, pipeline: Pipeline | None = None):
        self.name, self.store = name, store
        self.pipeline = pipeline or Pipeline(CONFIG)
        self.notices = MergeNotices()
        self.sent = 0

    def send(self, lines: list[str]) -> list[dict]:
        items = [{"id": f"{self.name}:{self.sent + i}", "raw": line, "received": T0 + i,
                  "source": self.name} for i, line in enumerate(lines)]
        self.sent += len(lines)
        events = self.pipeline.process(items)
        self.store.write(events, window_seconds=60, catalog=self.pipeline.take_catalog())
        merges = self.notices.news(self.pipeline.miner)
        if merges:
            self.store.merge_templates(merges)
        return events

    def adopt(self) -> dict:
        return self.pipeline.adopt_aliases(self.store.template_aliases())


def _ids_by_text(store: SqliteStore) -> dict[str, set[str]]:
    by_text = defaultdict(set)
    for e in store.search(EventQuery(limit=100_000, after_seq=0)).events:
        by_text[e["template"]].add(e["template_id"])
    return by_text


def _assert_one_id_per_text(store: SqliteStore) -> None:
    by_text = _ids_by_text(store)
    assert by_text and all(len(ids) == 1 for ids in by_text.values()), {
        t: ids for t, ids in by_text.items() if len(ids) > 1}
    rows = store.templates(limit=10_000)
    texts = [r["template"] for r in rows]
    assert len(texts) == len(set(texts)), "a template text listed twice"
    stored_ids = {i for ids in by_text.values() for i in ids}
    assert {r["id"] for r in rows} == stored_ids


def test_two_pipelines_on_one_store_converge_to_one_id_per_template_text(tmp_path):
    store = SqliteStore(tmp_path / "smartlogs.db")
    a, b = Shard("a", store), Shard("b", store)
    first_a = a.send(_lines(0, 3))
    first_b = b.send(_lines(1, 3))
    # the pipelines named the same pattern differently (different first lines) ...
    assert first_a[0]["template_id"] != first_b[0]["template_id"]
    for k in range(3, 30, 3):
        a.send(_lines(0, 3, k))
        b.send(_lines(1, 3, k))
    # ... and generalised to the same texts: the store made the others aliases
    aliases = store.template_aliases()
    assert aliases and all(new < old for old, new in aliases.items())
    _assert_one_id_per_text(store)
    a.adopt()
    b.adopt()
    after_a = a.send(_lines(0, 3, 40))
    after_b = b.send(_lines(1, 3, 40))
    for x, y in zip(after_a, after_b):  # one id for one pattern, in both pipelines now
        assert x["template_id"] == y["template_id"], (x["template"], y["template"])
    _assert_one_id_per_text(store)
    assert store.template_aliases() == aliases  # nothing new to settle

    # a restart: the pipeline from its checkpoint, and a fresh one (a lost checkpoint, or a
    # shard that starts later): both name the patterns by the catalog's ids
    save_checkpoint(b.pipeline, tmp_path / "b.ckpt")
    store.close()
    store = SqliteStore(tmp_path / "smartlogs.db")
    restored = Shard("b2", store, load_checkpoint(tmp_path / "b.ckpt", CONFIG))
    fresh = Shard("c", store)
    restored.adopt()
    fresh.adopt()
    again = restored.send(_lines(1, 3, 60))
    assert [e["template_id"] for e in again] == [e["template_id"] for e in after_b]
    fresh.send(_lines(0, 6, 70))
    _assert_one_id_per_text(store)
    ids = {e["template_id"] for e in store.search(EventQuery(limit=100_000)).events}
    assert ids == {e["template_id"] for e in after_a}  # three patterns, three ids, everywhere


def test_the_api_lists_one_template_per_text(tmp_path):
    from fastapi.testclient import TestClient

    from ingest_api.app import create_app
    from smartlogs.settings import Settings

    store = SqliteStore(tmp_path / "smartlogs.db")
    a, b = Shard("a", store), Shard("b", store)
    for k in range(0, 30, 3):
        a.send(_lines(0, 3, k))
        b.send(_lines(1, 3, k))
    store.close()
    settings = Settings(data_dir=tmp_path, checkpoint_seconds=0.5, syslog_port=0)
    with TestClient(create_app(settings)) as client:
        rows = client.get("/api/templates", params={"limit": 1000}).json()["templates"]
        assert len(rows) == 3 and len({r["template"] for r in rows}) == 3
        assert sum(r["count"] for r in rows) == 2 * 30 * 3
        one = client.get(f"/api/templates/{rows[0]['id']}").json()
        assert one["id"] == rows[0]["id"]


def test_a_store_made_with_numbered_ids_joins_them_to_the_text_ids(tmp_path):
    """A store from before the catalog recorded texts (ids T1, T2, ...): opened now, its
    template rows' texts are recorded, so a model that names the pattern by its text (a lost
    checkpoint) joins the stored id instead of making a second template."""
    import sqlite3

    store = SqliteStore(tmp_path / "smartlogs.db")
    old = Pipeline(CONFIG)
    events = old.process([{"id": f"o{k}", "raw": f"job {k} finished on node{k} in 5 ms",
                           "received": T0 + k} for k in range(5)])
    for e in events:  # as the release before named them
        e["template_id"] = "T1"
    store.write(events, window_seconds=60)
    store.close()
    with sqlite3.connect(tmp_path / "smartlogs.db") as conn:  # as that release left the file
        conn.execute("DELETE FROM template_texts")
        conn.execute("DELETE FROM meta WHERE key = 'template_texts'")
    store = SqliteStore(tmp_path / "smartlogs.db")
    fresh = Shard("n", store)
    fresh.send([f"job {k} finished on node{k} in 5 ms" for k in range(7, 12)])
    by_text = _ids_by_text(store)
    assert len(set().union(*by_text.values())) == 1  # one id for both models' lines
    assert len(store.templates()) == 1
    assert store.count_events() == 10
