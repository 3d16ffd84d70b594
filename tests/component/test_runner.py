"""The embedded runner's guarantees: order, exactly-once, recovery from a crash or a bad checkpoint."""

from __future__ import annotations

import time

from smartlogs.store import EventQuery, SqliteStore
from streams.pipeline import PipelineConfig
from streams.runtime.embedded import EmbeddedRunner

CONFIG = PipelineConfig(hst_window=50)
RECEIVED = time.time()  # one arrival time for every run of a test: reprocessing must match


def _items(lines: list[str], prefix: str) -> list[dict]:
    return [{"id": f"{prefix}:{i}", "raw": line, "received": RECEIVED, "source": "test"}
            for i, line in enumerate(lines)]


def _linux(loghub) -> list[str]:
    return (loghub / "Linux" / "Linux_2k.log").read_text(errors="replace").splitlines()


def _window_total(store: SqliteStore) -> int:
    return store.stats(windows=100000)["totals"]["events"]


def _opened(tmp_path, *, checkpoint: bool = False,
            **kwargs) -> tuple[SqliteStore, EmbeddedRunner]:
    """The store ``tmp_path/db`` and a runner over it (``checkpoint``: with its checkpoint
    file ``tmp_path/ckpt``); opened again after a stop or a crash, the same files."""
    store = SqliteStore(tmp_path / "db")
    if checkpoint:
        kwargs["checkpoint_path"] = tmp_path / "ckpt"
    return store, EmbeddedRunner(store, CONFIG, **kwargs)


def test_every_line_stored_once_in_order(tmp_path, loghub):
    lines = _linux(loghub)
    store, runner = _opened(tmp_path, checkpoint=True)
    for k in range(0, 2000, 300):
        store.spool_append(_items(lines[k:k + 300], f"b{k}"))
    runner.drain()
    assert store.count_events() == 2000
    assert _window_total(store) == 2000
    first = store.search(EventQuery(after_seq=0, limit=3)).events
    assert [e["id"] for e in first] == ["b0:0", "b0:1", "b0:2"]
    # replaying the same ids (a client retry) stores nothing new
    store.spool_append(_items(lines[:300], "b0"))
    runner.drain()
    assert store.count_events() == 2000 and _window_total(store) == 2000


def test_crash_between_checkpoints_recovers_exactly(tmp_path, loghub):
    """A crash after some batches were stored but before the checkpoint covered them."""
    lines = _linux(loghub)
    # reference: one uninterrupted run
    ref_store = SqliteStore(tmp_path / "ref.db")
    ref = EmbeddedRunner(ref_store, CONFIG)
    for k in range(0, 2000, 250):
        ref_store.spool_append(_items(lines[k:k + 250], f"b{k}"))
    ref.drain()
    expected = {e["id"]: (e["template_id"], e["score"], e["anomaly"])
                for e in ref_store.search(EventQuery(limit=1000, after_seq=0)).events}

    store, runner = _opened(tmp_path, checkpoint=True)
    for k in range(0, 1000, 250):
        store.spool_append(_items(lines[k:k + 250], f"b{k}"))
    runner.step()            # first 1000 lines stored
    runner.checkpoint()      # ... and covered by a checkpoint
    for k in range(1000, 1500, 250):
        store.spool_append(_items(lines[k:k + 250], f"b{k}"))
    runner.step()            # 500 more stored, NOT checkpointed: then the process dies
    store.close()

    store2, runner2 = _opened(tmp_path, checkpoint=True)
    assert runner2.pipeline.applied_seq < store2.stored_seq()  # it must re-run those batches
    for k in range(1500, 2000, 250):  # the client goes on sending (and retries one batch)
        store2.spool_append(_items(lines[k:k + 250], f"b{k}"))
    store2.spool_append(_items(lines[1250:1500], "b1250"))
    runner2.drain()
    assert store2.count_events() == 2000
    assert _window_total(store2) == 2000
    got = {e["id"]: (e["template_id"], e["score"], e["anomaly"])
           for e in store2.search(EventQuery(limit=1000, after_seq=0)).events}
    # deterministic re-processing: same templates and scores as the uninterrupted run
    assert got == expected


def test_corrupt_checkpoint_starts_fresh_and_names_known_patterns_as_before(tmp_path, loghub,
                                                                           caplog):
    """Ids come from the templates' text: a model that starts fresh (its checkpoint lost)
    names a pattern's first line as the lost model did, and a new kind gets an id of its own."""
    lines = _linux(loghub)
    store, runner = _opened(tmp_path, checkpoint=True)
    store.spool_append(_items(lines[:1000], "a"))
    runner.drain()
    runner.checkpoint()
    stored = {t["id"] for t in store.templates(limit=10_000)}
    first_id = store.search(EventQuery(limit=2000, arrival=True)).events[-1]["template_id"]
    data = (tmp_path / "ckpt").read_bytes()
    (tmp_path / "ckpt").write_bytes(data[: len(data) // 2])  # truncated
    store.close()

    store2, runner2 = _opened(tmp_path, checkpoint=True)
    assert "unusable" in caplog.text
    store2.spool_append(_items([lines[0], "a line of a brand new kind xyz"], "b"))
    runner2.drain()
    again = store2.search(EventQuery(q="xyz")).events[0]
    assert again["template_id"] not in stored
    assert [e["template_id"] for e in store2.search(
        EventQuery(limit=3, arrival=True)).events if e["id"] == "b:0"] == [first_id]


def test_runner_thread_processes_and_notifies(tmp_path):
    store, runner = _opened(tmp_path, checkpoint=True, checkpoint_seconds=0.1)
    seen = []
    runner.subscribe(seen.extend)
    runner.start()
    try:
        store.spool_append(_items(["hello world", "second line"], "x"))
        runner.wake()
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e["id"] for e in seen] == ["x:0", "x:1"]
        assert runner.status()["running"] is True
    finally:
        runner.stop()
    assert (tmp_path / "ckpt").exists()
    assert store.spool_read(0, 10) == []  # trimmed: the checkpoint covers everything


def test_a_poison_item_is_stored_flagged_and_does_not_block_the_rest(tmp_path, monkeypatch):
    store, runner = _opened(tmp_path)
    real = runner.pipeline.process

    def fragile(items):
        if any("POISON" in (i.get("raw") or "") for i in items):
            raise RuntimeError("boom")
        return real(items)

    monkeypatch.setattr(runner.pipeline, "process", fragile)
    store.spool_append(_items(["fine one", "POISON line", "fine two"], "p"))
    store.spool_append(_items(["after it"], "q"))
    runner.drain()
    events = {e["id"]: e for e in store.search(EventQuery(limit=10, after_seq=0)).events}
    assert set(events) == {"p:0", "p:1", "p:2", "q:0"}
    bad = events["p:1"]
    assert bad["format"] == "unprocessable" and bad["raw"] == "POISON line"
    assert "boom" in bad["fields"]["processing_error"]
    assert runner.errors == 1


AUTH = ("Jun 14 15:16:0{} combo sshd(pam_unix)[{}]: authentication failure; logname= uid=0 "
        "euid=0 tty=NODEVssh ruser= rhost=10.0.0.{} user={}")
USERS = ["root", "ftp", "git", "mysql", "uucp", "sshd"]


def _auth_items(users: list[str], prefix: str) -> list[dict]:
    return _items([AUTH.format(i % 10, 100 + i, i, u) for i, u in enumerate(users)], prefix)


def test_a_template_merge_rewrites_the_events_stored_before_it(tmp_path):
    """An enumeration (user=root, user=ftp, ...) outgrows its handful of values and merges into
    its first group: the lines stored under the sibling ids before the merge are found by the
    surviving id, and the counts follow."""
    store, runner = _opened(tmp_path, checkpoint=True)
    store.spool_append(_auth_items(USERS[:4] * 2, "a"))  # four values: four sibling groups
    runner.drain()
    before = {e["template_id"] for e in store.search(EventQuery(limit=100)).events}
    assert len(before) == 4
    store.spool_append(_auth_items(USERS[4:], "b"))  # the fifth value merges them
    runner.drain()
    events = store.search(EventQuery(limit=100, after_seq=0)).events  # in stored order
    assert len(events) == 10 and len({e["template_id"] for e in events}) == 1
    survivor = events[0]["template_id"]
    newest = events[-1]["template"]  # the text of the last line stored: after the merge
    assert newest.endswith("user=<*>")
    assert store.search(EventQuery(template=survivor)).total == 10
    for old in before - {survivor}:
        assert store.search(EventQuery(template=old)).total == 0
    [row] = store.templates()
    assert {k: row[k] for k in ("id", "template", "count", "first_ts", "last_ts")} == {
        "id": survivor, "template": newest, "count": 10,
        "first_ts": min(e["ts"] for e in events), "last_ts": max(e["ts"] for e in events)}
    # the catalog's history of the survivor names the ids merged into it, and its generalisation
    history = store.template(survivor)["history"]
    merged = [h for h in history if h["kind"] == "merged"]
    assert sorted(h["template_id"] for h in merged) == sorted(before - {survivor})
    assert {h["into"] for h in merged} == {survivor}
    assert history[-1]["kind"] == "generalised" and history[-1]["template"] == newest
    stats = store.stats(windows=100000)
    assert stats["totals"]["templates"] == 1
    assert stats["top_templates"] == [{"key": survivor, "count": 10, "template": newest}]
    # idempotent: nothing left to rewrite
    assert store.merge_templates(runner.pipeline.miner.merges()) == 0
    assert store.search(EventQuery(template=survivor)).total == 10


def test_a_merge_lost_in_a_crash_is_applied_on_restart(tmp_path):
    """A crash after a batch was stored but before its merge was applied: the restarted runner
    applies the merges its checkpoint knows of."""
    store, runner = _opened(tmp_path, checkpoint=True)
    store.spool_append(_auth_items(USERS[:4], "a"))
    store.spool_append(_auth_items(USERS[4:], "b"))
    store.merge_templates = lambda merges: 0  # the crash: the merge never reaches the store
    runner.drain()
    runner.checkpoint()
    # (the batch's own records may have linked one of them already: the text of the group
    # that took the others over, before and after)
    assert len({e["template_id"] for e in store.search(EventQuery(limit=100)).events}) > 1
    store.close()

    store = SqliteStore(tmp_path / "db")
    EmbeddedRunner(store, CONFIG, checkpoint_path=tmp_path / "ckpt")
    assert len({e["template_id"] for e in store.search(EventQuery(limit=100)).events}) == 1
    assert store.stats(windows=100000)["totals"]["templates"] == 1


def test_a_failed_merge_does_not_stop_the_pipeline_and_is_asked_again(tmp_path):
    store, runner = _opened(tmp_path)
    real, calls = store.merge_templates, []

    def flaky(merges):
        calls.append(merges)
        if len(calls) == 1:
            raise OSError("disk hiccup")
        return real(merges)

    store.merge_templates = flaky
    store.spool_append(_auth_items(USERS[:4], "a"))
    store.spool_append(_auth_items(USERS[4:], "b"))
    runner.drain()
    assert store.count_events() == 6 and len(calls) == 1  # stored all the same
    assert len({e["template_id"] for e in store.search(EventQuery(limit=100)).events}) > 1
    store.spool_append(_auth_items(["root"], "c"))  # the next batch asks again
    runner.drain()
    assert len(calls) == 2
    assert len({e["template_id"] for e in store.search(EventQuery(limit=100)).events}) == 1


def test_a_store_that_keeps_failing_makes_health_down_and_stop_does_not_hang(tmp_path):
    store = SqliteStore(tmp_path / "db")
    runner = EmbeddedRunner(store, CONFIG, checkpoint_path=tmp_path / "ckpt",
                            checkpoint_seconds=3600)

    def broken(*a, **kw):
        raise OSError("disk on fire")

    store.write = broken
    runner.start()
    store.spool_append(_auth_items(USERS, "a"))
    runner.wake()
    deadline = time.monotonic() + 10
    while runner.status()["failing_since"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    st = runner.status()
    assert st["failing_since"] is not None and "disk on fire" in st["last_error"]
    t0 = time.monotonic()
    runner.stop(timeout=2.0)
    assert time.monotonic() - t0 < 5.0
    assert not (tmp_path / "ckpt").exists()  # no checkpoint past what was never stored
    # a restart with a working store stores everything from the spool
    store2 = SqliteStore(tmp_path / "db")
    EmbeddedRunner(store2, CONFIG, checkpoint_path=tmp_path / "ckpt").drain()
    assert store2.count_events() == len(USERS)


def test_the_runner_takes_the_catalogs_aliases_at_start_and_as_it_runs(tmp_path):
    """Issue 18: an alias the store holds (another shard met the template under a smaller
    id) is handed to the runner's miner as it runs and when it starts, so its new lines
    carry the canonical id from the pipeline on (not only once the store maps them)."""
    store = SqliteStore(tmp_path / "db")
    runner = EmbeddedRunner(store, CONFIG, checkpoint_path=tmp_path / "ckpt",
                            checkpoint_seconds=0.0)
    store.spool_append(_items([f"job {k} finished in {k} ms" for k in range(5)], "a"))
    runner.drain()
    mine = store.search(EventQuery(limit=1)).events[0]["template_id"]
    canonical = "T000000000000"  # smaller than any id: the catalog's name for it
    store.merge_templates({mine: canonical})
    store.spool_append(_items([f"job {k} finished in {k} ms" for k in range(5, 9)], "b"))
    runner.drain()
    assert runner.pipeline.miner.resolve(mine) == canonical
    assert runner.pipeline.miner._live(canonical) is not None
    assert {e["template_id"] for e in store.search(EventQuery(limit=100)).events} == {canonical}
    runner.checkpoint()
    store.close()

    # a runner whose checkpoint predates an alias takes it when it starts
    store = SqliteStore(tmp_path / "db")
    smaller = "T00000000000"  # sorts before T000000000000
    store.merge_templates({canonical: smaller})
    restarted = EmbeddedRunner(store, CONFIG, checkpoint_path=tmp_path / "ckpt")
    assert restarted.pipeline.miner.resolve(mine) == smaller
    assert restarted.pipeline.miner._live(smaller) is not None


def test_the_writer_retries_a_failing_store_under_the_policy_and_stores_each_event_once(tmp_path):
    """Issue 18 (one stage): the writer thread stores through streams.runtime.stage.Sink, the
    write the Kafka worker uses too: the whole batch (events, catalog, incidents and the spool
    cursors, one transaction) is tried again under the runner's retry policy until SQLite takes
    it; the failures count in the status while they last, and nothing is stored twice."""
    from streams.runtime.stage import RetryPolicy

    store = SqliteStore(tmp_path / "db")
    real, attempts = store.write_batch, []

    def flaky(batch, **kw):
        attempts.append((len(batch.events), dict(batch.cursors or {})))
        if len(attempts) <= 2:
            raise OSError("disk hiccup")
        return real(batch, **kw)

    store.write_batch = flaky
    runner = EmbeddedRunner(store, CONFIG, retry=RetryPolicy(first=0.05, cap=0.1))
    runner.start()
    try:
        seq = store.spool_append(_auth_items(USERS, "a"))
        runner.wake()
        runner.drain(timeout=20)
        st = runner.status()
    finally:
        runner.stop()
    assert attempts[:3] == [(len(USERS), {0: seq})] * 3  # the same batch, whole, three times
    assert store.count_events() == len(USERS) == _window_total(store)
    assert store.cursors() == {0: seq}
    assert st["errors"] == 2 and st["failing_since"] is None and st["sink"]["ok"]
    assert "disk hiccup" in st["last_error"]
    assert runner.processed == len(USERS)


def test_the_stored_log_line_names_the_requests_correlation_ids(tmp_path, caplog):
    """The README: one batch can be followed by its correlation id from the API to the sink.
    The embedded "stored N events" line logged an empty id (it read the pipeline's events,
    which do not carry the request's ``cid``)."""
    import logging

    store, runner = _opened(tmp_path)
    items = _items(["alpha one", "beta two"], "r")
    items[0]["cid"], items[1]["cid"] = "req-1", "req-2"
    store.spool_append(items)
    with caplog.at_level(logging.INFO, logger="streams.runtime.embedded"):
        runner.drain()
    stored = [r for r in caplog.records if r.getMessage().startswith("stored ")]
    assert stored and stored[0].correlation_id == "req-1,req-2"


def _counting_writes(store: SqliteStore) -> list[int]:
    """The number of events of each batch the store is handed, in order."""
    sizes: list[int] = []
    write = store.write_batch

    def counted(batch, **kw):
        if batch.events:
            sizes.append(len(batch.events))
        return write(batch, **kw)

    store.write_batch = counted
    return sizes


def _wait_for(cond, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


def test_small_batches_arriving_one_after_another_are_gathered_into_one_write(tmp_path):
    """Clients posting a line each (issue 18): every read and write of the runner costs a
    fixed ~1 ms of CPU, so a read that found a few items waits (``gather_seconds``) for what
    follows instead of storing each commit of the API as its own batch. Before, each of these
    five requests was a batch of its own."""
    store = SqliteStore(tmp_path / "db")
    sizes = _counting_writes(store)
    runner = EmbeddedRunner(store, CONFIG, gather_seconds=1.0)
    runner.start()
    try:
        store.spool_append(_items(["first line after a pause"], "a"))
        runner.wake()
        assert _wait_for(lambda: sizes == [1], 5)  # read at once: not held
        for i in range(5):  # within the gather that the first small read started
            store.spool_append(_items([f"request {i} of a client"], f"r{i}"))
            runner.wake()
            time.sleep(0.02)
        assert _wait_for(lambda: sum(sizes) == 6, 10)
        assert sizes == [1, 5]
    finally:
        runner.stop()
    assert store.count_events() == 6 == _window_total(store)


def test_the_gather_never_holds_a_lone_request_a_runner_behind_or_a_stop(tmp_path):
    """Bounded (the gather here is 30 s): the first item after a pause is read at once, full
    reads (a backlog) follow each other without waiting, and stop() ends a wait."""
    store = SqliteStore(tmp_path / "lone.db")
    sizes = _counting_writes(store)
    runner = EmbeddedRunner(store, CONFIG, gather_seconds=30.0)
    runner.start()
    try:
        store.spool_append(_items(["a lone request"], "lone"))
        runner.wake()
        assert _wait_for(lambda: sizes == [1], 10)
    finally:
        started = time.monotonic()
        runner.stop()  # it waits in its gather now: stop ends the wait
    assert time.monotonic() - started < 15

    store = SqliteStore(tmp_path / "backlog.db")
    sizes = _counting_writes(store)
    for k in range(4):  # a backlog of full reads (20 items each)
        store.spool_append(_items([f"backlog {k}.{i}" for i in range(20)], f"b{k}"))
    runner = EmbeddedRunner(store, CONFIG, gather_seconds=30.0, gather_items=10, max_batch=20)
    runner.start()
    try:
        assert _wait_for(lambda: store.count_events() == 80, 15)
    finally:
        runner.stop()
    assert sizes == [20, 20, 20, 20]


def test_the_runner_records_when_its_threads_read_process_hand_off_and_hold_the_writer_turn(tmp_path):
    """Issue 18: the shards' counters say how long they waited, the timeline says when
    (``bench/bench_embedded.py --timeline``): the runner thread's spool reads, pipeline,
    hand-offs and idle waits, and the writer thread's turns in the store, in order."""
    store = SqliteStore(tmp_path / "db")
    runner = EmbeddedRunner(store, CONFIG)
    runner.start()
    try:
        store.spool_append(_items([f"line {i} of a test" for i in range(50)], "t"))
        runner.wake()
        assert _wait_for(lambda: store.count_events() == 50, 10)
        assert _wait_for(lambda: [m[2] for m in runner.timeline.dump()
                                  if m[1] == "writer"][-1] == "idle", 10)  # written
    finally:
        runner.stop()
    marks = runner.timeline.dump()
    assert [m[0] for m in marks] == sorted(m[0] for m in marks)  # monotonic time, in order
    runner_states = [s for _, thread, s in marks if thread == "runner"]
    writer_states = [s for _, thread, s in marks if thread == "writer"]
    at = runner_states.index("pipeline")
    assert runner_states[at - 1] == "read" and "hand-off" in runner_states[at:]
    assert "idle" in runner_states
    i = writer_states.index("prepare")
    assert writer_states[i:i + 4] == ["prepare", "turn wait", "turn held", "turn done"]


def test_a_shard_runner_pauses_its_pipeline_while_its_writer_holds_the_store_turn(tmp_path,
                                                                                  monkeypatch):
    """Issue 18: the store's one writer turn is what every other shard waits for; a shard's
    pipeline thread running beside its writer in the turn (the GIL, a core) made the turn last
    about twice its CPU. With ``yield_to_writer`` (the shards') the runner starts no chunk of
    the pipeline while its writer holds the turn; without it (before) it went on."""
    import streams.runtime.embedded as embedded

    monkeypatch.setattr(embedded, "YIELD_ITEMS", 20)

    def run(yield_to_writer: bool, name: str) -> tuple[int, int]:
        store = SqliteStore(tmp_path / name)
        write = store._write

        def slow_write(*a, **kw):  # inside the turn
            time.sleep(0.2)
            return write(*a, **kw)

        store._write = slow_write
        for k in range(6):
            store.spool_append(_items([f"line {k}.{i} of a test" for i in range(100)], f"{name}{k}"))
        runner = EmbeddedRunner(store, CONFIG, max_batch=100, yield_to_writer=yield_to_writer)
        started = {"in_turn": 0, "all": 0}
        for pipeline in runner.pipelines.values():
            process = pipeline.process

            def counted(items, process=process):
                started["all"] += 1
                started["in_turn"] += not runner._turn_free.is_set()
                return process(items)

            pipeline.process = counted
        runner.start()
        try:
            assert _wait_for(lambda: store.count_events() == 600, 30)
        finally:
            runner.stop()
        return started["in_turn"], started["all"]

    in_turn, chunks = run(True, "yield.db")
    assert chunks >= 30 and in_turn <= 1, (in_turn, chunks)  # (one may race the turn's start)
    in_turn, chunks = run(False, "no-yield.db")
    assert in_turn >= 2, (in_turn, chunks)  # the runner ran ahead of its writer


def test_a_runner_that_yields_to_its_writer_stores_the_same_events(tmp_path, loghub, monkeypatch):
    """The pipeline run in chunks (``YIELD_ITEMS``) between the writer's turns gives the same
    stored events, window counts and templates as whole spool reads."""
    import streams.runtime.embedded as embedded

    monkeypatch.setattr(embedded, "YIELD_ITEMS", 70)
    lines = _linux(loghub)

    def stored(yield_to_writer: bool, name: str):
        store = SqliteStore(tmp_path / name)
        for k in range(0, 2000, 400):
            store.spool_append(_items(lines[k:k + 400], f"b{k}"))
        runner = EmbeddedRunner(store, CONFIG, yield_to_writer=yield_to_writer)
        runner.start()
        try:
            assert _wait_for(lambda: store.count_events() == 2000, 60)
        finally:
            runner.stop()
        events = store.search(EventQuery(after_seq=0, limit=2000)).events
        return (events, store.stats(windows=100000)["totals"],
                [(t["id"], t["count"]) for t in store.templates(limit=1000)])

    assert stored(True, "yield.db") == stored(False, "whole.db")
