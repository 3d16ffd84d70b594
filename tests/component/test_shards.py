"""Embedded shards (issue 18): per-partition pipelines, checkpoints and spool cursors; K shards
over one store give what one gives; a partition moves between shards with what it learned;
the spool is trimmed only below what every partition's checkpoint covers."""

from __future__ import annotations

import time

import pytest

from smartlogs.store import EventQuery, SqliteStore
from streams.partitions import partition_key, partition_of
from streams.pipeline import PipelineConfig
from streams.runtime.embedded import EmbeddedRunner, partition_checkpoint
from streams.runtime.shards import shard_partitions

CONFIG = PipelineConfig(hst_window=50)
RECEIVED = time.time()
P = 4


def _lines(loghub, system: str) -> list[str]:
    return (loghub / system / f"{system}_2k.log").read_text(errors="replace").splitlines()


def _items(lines: list[str], prefix: str, stream: str) -> list[dict]:
    return [{"id": f"{prefix}:{i}", "raw": line, "received": RECEIVED, "source": "file",
             "stream": stream} for i, line in enumerate(lines)]


def _events(store: SqliteStore) -> dict:
    out, after = {}, 0
    while True:
        got = store.search(EventQuery(limit=1000, after_seq=after)).events
        if not got:
            return out
        after = got[-1]["seq"]
        for e in got:
            assert e["id"] not in out
            out[e["id"]] = (e["template_id"], e["score"], e["anomaly"], e["message"])


def _shards(store: SqliteStore, tmp_path, k_shards: int, **kw) -> list[EmbeddedRunner]:
    return [EmbeddedRunner(store, CONFIG, checkpoint_path=tmp_path / "ckpt", n_partitions=P,
                           partitions=shard_partitions(k, k_shards, P), **kw)
            for k in range(k_shards)]


def _drain(runners: list[EmbeddedRunner]) -> None:
    """Step the shards in turn (as their processes would, in some interleaving)."""
    while any([r.step() for r in runners]):
        pass


def test_shard_partitions_cover_every_partition_once():
    for k_shards in (1, 2, 3, 4):
        owned = [p for k in range(k_shards) for p in shard_partitions(k, k_shards, 8)]
        assert sorted(owned) == list(range(8))


def test_one_and_two_shards_give_the_same_events_for_a_single_source(tmp_path, loghub):
    lines = _lines(loghub, "Linux")
    results = []
    for k_shards in (1, 2):
        store = SqliteStore(tmp_path / f"k{k_shards}.db", partitions=P)
        runners = _shards(store, tmp_path / f"k{k_shards}", k_shards)
        for k in range(0, 2000, 250):
            store.spool_append(_items(lines[k:k + 250], f"b{k}", "one.log"))
        _drain(runners)
        results.append(_events(store))
        assert store.count_events() == 2000
        store.close()
    assert results[0] == results[1]


def test_two_shards_store_every_line_of_every_source_once(tmp_path, loghub):
    sources = {name: _lines(loghub, name)[:1000] for name in ("Linux", "OpenSSH", "HDFS", "Apache")}
    assert len({partition_of(partition_key({"stream": f"{n}.log"}), P) for n in sources}) > 1
    store = SqliteStore(tmp_path / "s.db", partitions=P)
    runners = _shards(store, tmp_path, 2)
    for k in range(0, 1000, 200):  # requests mixing sources, as a shipper would send them
        store.spool_append([it for name, lines in sources.items()
                            for it in _items(lines[k:k + 200], f"{name}{k}", f"{name}.log")])
    _drain(runners)
    assert store.count_events() == 4000 == len(_events(store))
    assert store.stats(windows=100000)["totals"]["events"] == 4000
    # each shard ran only its partitions' lines
    assert {r.parts[0] for r in runners} == {0, 1}
    assert sum(r.lines for r in runners) == 4000


def test_a_request_is_spooled_as_a_row_per_partition_and_a_shard_reads_only_its_own(tmp_path,
                                                                                     loghub):
    """Each shard decoded every spool batch and dropped the other shards' items (a cost per
    line in every shard); a request is now kept as a row per partition, and a shard reads the
    rows of its partitions, each after that partition's own position."""
    lines = _lines(loghub, "Linux")[:400]
    streams = {}
    for i in range(200):  # a stream in each partition
        streams.setdefault(partition_of(f"s{i}", P), f"s{i}")
    store = SqliteStore(tmp_path / "s.db", partitions=P)
    mixed = [it for p in range(P) for it in _items(lines[p * 100:(p + 1) * 100], f"r{p}", streams[p])]
    seq = store.spool_append(mixed[::-1])  # in any order
    rows = store.spool_read(0, 10_000)
    assert len(rows) == P and rows[-1][0] == seq
    got, upto = store.spool_rows(0, 10_000, {0: 0, 2: 0})
    assert [part for _, part, _ in got] == [0, 2] and upto == seq
    for _, part, items in got:  # all of the partition's items, in the request's order
        assert [it["id"] for it in items] == [f"r{part}:{i}" for i in range(99, -1, -1)]
    # a partition that applied the rows up to its own position reads none of them again
    got, upto = store.spool_rows(0, 10_000, {0: seq, 2: 0})
    assert [part for _, part, _ in got] == [2] and upto == seq
    a, b = _shards(store, tmp_path, 2)
    _drain([a, b])
    assert store.count_events() == 400
    pipelines = {p: pl for r in (a, b) for p, pl in r.pipelines.items()}
    assert {p: (pl.lines, sorted(pl.sources)) for p, pl in pipelines.items()} == {
        p: (100, [streams[p]]) for p in range(P)}


def test_a_spool_written_before_rows_had_a_partition_is_read_item_by_item(tmp_path, loghub):
    import sqlite3

    import orjson

    lines = _lines(loghub, "Linux")[:400]
    old = sqlite3.connect(tmp_path / "s-spool.db")
    old.execute("CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, items BLOB NOT NULL, "
                "n INTEGER NOT NULL)")
    batch = [it for k in range(4) for it in _items(lines[k * 100:(k + 1) * 100], f"r{k}", f"s{k}")]
    old.execute("INSERT INTO spool (items, n) VALUES (?, ?)", (orjson.dumps(batch), len(batch)))
    old.commit()
    old.close()
    store = SqliteStore(tmp_path / "s.db", partitions=P)
    assert [part for _, part, _ in store.spool_rows(0, 10_000, {0: 0})[0]] == [None]
    _drain(_shards(store, tmp_path, 2))
    assert store.count_events() == 400 == len(_events(store))


def test_a_partition_moves_to_another_shard_with_what_it_learned(tmp_path, loghub):
    """Two shards checkpoint and stop, the server comes back with one: the partitions resume
    from their checkpoints, and the events equal those of an uninterrupted single shard. (A
    crash between checkpoints: test_runner.py, and tests/e2e/test_shards_durability.py.)"""
    lines = _lines(loghub, "OpenSSH")
    ref_store = SqliteStore(tmp_path / "ref.db", partitions=P)
    ref = _shards(ref_store, tmp_path / "ref", 1)
    for k in range(0, 2000, 250):
        ref_store.spool_append(_items(lines[k:k + 250], f"b{k}", "ssh.log"))
    _drain(ref)
    expected = _events(ref_store)

    store = SqliteStore(tmp_path / "s.db", partitions=P)
    two = _shards(store, tmp_path, 2)
    for k in range(0, 1000, 250):
        store.spool_append(_items(lines[k:k + 250], f"b{k}", "ssh.log"))
    _drain(two)
    for r in two:
        r.checkpoint()
    learned = sum(r.lines for r in two)
    store.close()

    store = SqliteStore(tmp_path / "s.db", partitions=P)
    (one,) = _shards(store, tmp_path, 1)
    assert one.lines == learned == 1000  # from the checkpoints, not a cold model
    for k in range(1000, 2000, 250):
        store.spool_append(_items(lines[k:k + 250], f"b{k}", "ssh.log"))
    _drain([one])
    assert _events(store) == expected
    assert store.count_events() == 2000


def test_the_spool_is_trimmed_only_below_every_partitions_checkpoint(tmp_path, loghub):
    lines = _lines(loghub, "Linux")[:400]
    store = SqliteStore(tmp_path / "s.db", partitions=P)
    a, b = _shards(store, tmp_path, 2)
    store.spool_append(_items(lines[:200], "x", "x.log"))
    store.spool_append(_items(lines[200:], "y", "y.log"))
    _drain([a, b])
    a.checkpoint()
    assert len(store.spool_read(0, 10_000)) == 2  # b's partitions are not covered yet
    b.checkpoint()
    assert store.spool_read(0, 10_000) == []
    for p in range(P):
        assert partition_checkpoint(tmp_path / "ckpt", p, P).exists()


def test_a_store_refuses_another_number_of_partitions(tmp_path):
    SqliteStore(tmp_path / "s.db", partitions=4).close()
    with pytest.raises(ValueError, match="made with 4 partitions"):
        SqliteStore(tmp_path / "s.db", partitions=8)
    assert SqliteStore(tmp_path / "s.db").partitions == 4  # unspecified: as it was made


def test_an_unpartitioned_data_directory_keeps_what_it_learned(tmp_path, loghub):
    """A store and checkpoint from before partitions: every partition starts from the one
    checkpoint and the old cursor, nothing is stored twice."""
    lines = _lines(loghub, "Linux")
    store = SqliteStore(tmp_path / "s.db")
    old = EmbeddedRunner(store, CONFIG, checkpoint_path=tmp_path / "ckpt")
    store.spool_append(_items(lines[:1000], "a", "l.log"))
    old.drain()
    old.checkpoint()
    store.close()
    store = SqliteStore(tmp_path / "s.db")  # made before the partitions row existed
    store._conn().execute("DELETE FROM meta WHERE key = 'partitions'")
    store._conn().execute("DELETE FROM meta WHERE key LIKE '%/%'")
    store._conn().execute("INSERT INTO meta VALUES ('stored_seq', '1')")
    store.close()
    store = SqliteStore(tmp_path / "s.db", partitions=P)
    (new,) = _shards(store, tmp_path, 1)
    assert all(pl.lines == 1000 for pl in new.pipelines.values())
    store.spool_append(_items(lines[1000:1200], "b", "l.log"))
    _drain([new])
    assert store.count_events() == 1200


def test_supervised_shard_processes_feed_the_api_listeners_and_stop_cleanly(tmp_path, loghub):
    """K=2 shard processes behind a supervisor: the lines are stored once, the API process's
    listeners (alerting) see each stored event once, in order, and stop() leaves the spool
    trimmed (each shard wrote its final checkpoints)."""
    from smartlogs.settings import Settings
    from streams.runtime.shards import SWITCH_SECONDS, ShardSupervisor

    settings = Settings(data_dir=tmp_path / "var", partitions=P, shards=2, checkpoint_seconds=0.5)
    store = SqliteStore(settings.db_path, partitions=P)
    sup = ShardSupervisor(settings, store, 2)
    seen: list[dict] = []
    sup.subscribe(seen.extend)
    sup.start()
    try:
        deadline = time.monotonic() + 120
        while not sup.status()["running"]:
            assert time.monotonic() < deadline, sup.status()
            time.sleep(0.1)
        lines = _lines(loghub, "Linux")[:600]
        for name in ("a.log", "b.log", "c.log", "d.log"):
            store.spool_append(_items(lines, name, name))
        sup.wake()
        deadline = time.monotonic() + 60
        while len(seen) < 2400:
            assert time.monotonic() < deadline, len(seen)
            time.sleep(0.05)
        while (st := sup.status())["processed"] < 2400:  # shards report once a second
            assert time.monotonic() < deadline, st
            time.sleep(0.1)
        assert st["processed"] == 2400 and st["lines"] == 2400
        assert sorted(p for s in st["shards"] for p in s["partitions"]) == list(range(P))
        assert {s["restarts"] for s in st["shards"]} == {0}
        # what a shard lost to the one SQLite writer is shown (issue 18): each wrote its
        # batches holding the writer turn, with the GIL switch interval its writer needs
        for s in st["shards"]:
            assert {"store_turn", "store_turn_held", "writer_behind", "idle", "gather"} <= set(
                s["waited_s"]), s
            assert s["switch_interval"] == pytest.approx(SWITCH_SECONDS), s
            if s["processed"]:  # (a shard may own none of these sources' partitions)
                assert s["waited_s"]["store_turn_held"] > 0, s
    finally:
        sup.stop()
    assert not sup.alive
    assert len({e["id"] for e in seen}) == len(seen) == store.count_events() == 2400
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
    assert store.spool_read(0, 10) == []
    store.close()


def test_partitions_at_different_spool_positions_each_resume_from_their_own(tmp_path, loghub):
    """One shard takes over partitions checkpointed at different positions (they come from
    two shards): each re-runs only what its checkpoint does not cover, none goes back."""
    lines = _lines(loghub, "Linux")
    names = {}
    for i in range(100):  # two streams in partitions of different shards of 2
        names.setdefault(partition_of(f"s{i}", P) % 2, f"s{i}")
    ref_store = SqliteStore(tmp_path / "ref.db", partitions=P)
    ref = _shards(ref_store, tmp_path / "ref", 1)
    store = SqliteStore(tmp_path / "s.db", partitions=P)
    a, b = _shards(store, tmp_path, 2)
    at = {}
    for k in range(0, 1600, 200):
        for st in (ref_store, store):
            at[k] = st.spool_append(_items(lines[k:k + 100], f"x{k}", names[0])
                                    + _items(lines[k + 100:k + 200], f"y{k}", names[1]))
        if k == 400:
            _drain([a, b])
            a.checkpoint()  # shard 0's partitions checkpointed at the third request ...
        if k == 1000:
            _drain([a, b])
            b.checkpoint()  # ... shard 1's at the sixth
    _drain([a, b])
    store.close()
    _drain(ref)
    store = SqliteStore(tmp_path / "s.db", partitions=P)
    (one,) = _shards(store, tmp_path, 1, max_batch=50)  # one spool row per step
    positions = {p: pl.applied_seq for p, pl in one.pipelines.items()}
    assert sorted(set(positions.values())) == [at[400], at[1000]]
    assert one.lines == 300 + 600  # what the two checkpoints had learned
    _drain([one])
    assert one.lines == 1600  # each line learned once: 500 + 200 re-run from the checkpoints
    assert _events(store) == _events(ref_store)


def test_a_shard_in_another_process_reads_feedback_marks_from_the_store(tmp_path, loghub):
    """Feedback given through the API process reaches a shard's pipelines through the store."""
    from streams.catalog import TemplateChange

    store = SqliteStore(tmp_path / "s.db", partitions=P)
    (shard,) = _shards(store, tmp_path, 1, reload_marks=0.05)
    store.spool_append(_items(_lines(loghub, "Linux")[:200], "a", "l.log"))
    _drain([shard])
    tid = store.templates(limit=1)[0]["id"]
    api = SqliteStore(tmp_path / "s.db")  # the API process's own connection
    assert api.set_mark(TemplateChange(id=f"feedback/{tid}/1", template_id=tid, kind="feedback",
                                       at=time.time(), mark="expected"))
    shard.start()
    try:
        deadline = time.monotonic() + 10
        while shard.marks() != {tid: "expected"}:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert all(pl.scorer.marks == {tid: "expected"} for pl in shard.pipelines.values())
    finally:
        shard.stop()
        api.close()
        store.close()


def test_a_shard_that_sees_only_other_shards_rows_does_not_read_at_every_commit(tmp_path):
    """Issue 18 (small requests): the API wakes every shard at each commit; a shard whose
    partitions got nothing read the spool each time (a read of the spool and of the marks, for
    nothing). It now reads at the gather's pace while the spool grows with other shards' rows,
    and still takes its own rows, and stores nothing of the others'."""
    store = SqliteStore(tmp_path / "db", partitions=P)
    mine = shard_partitions(1, 2, P)
    theirs = next(s for s in (f"stream-{i}" for i in range(100))
                  if partition_of(partition_key({"stream": s}), P) not in mine)
    own = next(s for s in (f"stream-{i}" for i in range(100))
               if partition_of(partition_key({"stream": s}), P) in mine)
    reads = []
    spool_rows = store.spool_rows

    def counted(*a, **kw):
        reads.append(time.monotonic())
        return spool_rows(*a, **kw)

    store.spool_rows = counted
    shard = EmbeddedRunner(store, CONFIG, n_partitions=P, partitions=mine, gather_seconds=1.0)
    shard.start()
    try:
        time.sleep(0.3)
        reads.clear()
        for i in range(10):  # ten commits of another shard's source, each waking this shard
            store.spool_append(_items([f"other shard line {i}"], f"o{i}", theirs))
            shard.wake()
            time.sleep(0.03)
        assert len(reads) <= 3  # before: one read (at least) per wake-up
        store.spool_append(_items(["a line of its own"], "own", own))
        shard.wake()
        deadline = time.monotonic() + 10
        while store.count_events() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        shard.stop()
    assert [e[3] for e in _events(store).values()] == ["a line of its own"]
