"""The write after the pipeline, one piece of code for both runtimes (streams.runtime.stage.Sink,
issue 18 "One stage, written once"): the batch (events and catalog, then incidents), retried
under one policy until the store takes it, then the template merges; one sink state for health.

The store here is a fake (pure logic); the stores' own ``write_batch`` is tested on SQLite in
tests/component/test_runner.py and on Elasticsearch in tests/integration.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from types import SimpleNamespace

import pytest

from streams.pipeline import PipelineConfig
from streams.runtime.stage import Batch, RetryPolicy, Sink, SinkState


class FakeStore:
    """Records what it is asked, in order; ``fail`` writes and ``merge_fail`` merges raise
    first. Idempotent by event id, as both real stores are; new events get a ``seq``."""

    partitions = 1

    def __init__(self, fail: int = 0, merge_fail: int = 0):
        self.fail, self.merge_fail = fail, merge_fail
        self.calls: list[tuple] = []
        self.ids: set[str] = set()
        self.threads: set[str] = set()

    def write_batch(self, batch, *, window_seconds):
        self.threads.add(threading.current_thread().name)
        self.calls.append(("write_batch", [e["id"] for e in batch.events],
                           [i["id"] for i in batch.incidents]))
        if self.fail:
            self.fail -= 1
            raise OSError("disk on fire")
        new = 0
        for e in batch.events:
            if e["id"] not in self.ids:
                self.ids.add(e["id"])
                e["seq"] = len(self.ids)
                new += 1
        return new

    def merge_templates(self, merges):
        self.calls.append(("merge_templates", dict(merges)))
        if self.merge_fail:
            self.merge_fail -= 1
            raise OSError("merge hiccup")
        return 1

    # what an EmbeddedRunner reads when it starts
    def cursors(self):
        return {}

    def template_aliases(self):
        return {}

    def template_marks(self):
        return {}

    def spool_backlog(self):
        return 0


class Waits(threading.Event):
    """A stopping flag that records the waits asked of it and returns at once."""

    def __init__(self):
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return self.is_set()


def _event(i: str) -> dict:
    return {"id": i, "anomaly": False}


def _batch(ids=("a", "b"), merges=None) -> Batch:
    return Batch([_event(i) for i in ids], [], merges, [], [{"id": "inc-1", "rev": 1}])


def _worker_module(monkeypatch, tmp_path):
    """The Kafka worker module, its data directory ``tmp_path`` (it builds a Faust app at
    import: only the tests that need it import it)."""
    monkeypatch.setenv("SMARTLOGS_DATA_DIR", str(tmp_path))
    from streams.runtime import worker

    return worker


def _part(worker, p: int = 0, writer=None):
    """A fresh partition of the worker: a new pipeline, no offset, no state writer."""
    from streams.pipeline import Pipeline
    from streams.runtime.state_records import Book

    return worker.Part(p, Pipeline(PipelineConfig()), None, Book(), writer=writer)


def _sink_of(worker, store, monkeypatch, **kwargs) -> Sink:
    """The worker's sink, writing to ``store``."""
    sink = Sink(store, name="elasticsearch", window_seconds=60, **kwargs)
    monkeypatch.setattr(worker, "_sink", sink)
    return sink


class Acks:
    """The agent's stream as the worker's writer sees it: records the messages it acks."""

    def __init__(self):
        self.acked: list = []

    async def ack(self, event):
        self.acked.append(event)


def test_the_retry_policy_doubles_up_to_its_cap_and_comes_from_the_settings(monkeypatch):
    from itertools import islice

    assert list(islice(RetryPolicy(first=1.0, cap=5.0).delays(), 5)) == [1.0, 2.0, 4.0, 5.0, 5.0]
    monkeypatch.setenv("SMARTLOGS_SINK_RETRY_FIRST_SECONDS", "0.25")
    monkeypatch.setenv("SMARTLOGS_SINK_RETRY_CAP_SECONDS", "2")
    from smartlogs.settings import Settings

    assert RetryPolicy.from_settings(Settings()) == RetryPolicy(first=0.25, cap=2.0)


def test_the_batch_is_written_then_merged_and_what_was_new_returned():
    store = FakeStore()
    store.ids.add("a")  # stored by an earlier delivery
    stored = Sink(store, name="test", window_seconds=60).write(_batch(merges={"T2": "T1"}))
    assert store.calls == [("write_batch", ["a", "b"], ["inc-1"]),
                           ("merge_templates", {"T2": "T1"})]
    assert [e["id"] for e in stored.events] == ["b"] and stored.merged


def test_a_failing_store_is_retried_with_the_policy_until_it_takes_the_batch():
    store = FakeStore(fail=3)
    sink = Sink(store, name="test", window_seconds=60, policy=RetryPolicy(first=0.5, cap=1.5))
    stopping = Waits()
    stored = sink.write_until_taken(_batch(merges={"T2": "T1"}), stopping=stopping)
    assert stopping.waits == [0.5, 1.0, 1.5]
    # four attempts of the whole write, the merge once, after the attempt that went through
    assert [c[0] for c in store.calls] == ["write_batch"] * 4 + ["merge_templates"]
    assert [e["id"] for e in stored.events] == ["a", "b"]
    assert sink.state.ok and sink.state.failures == 3 and sink.state.error is None
    assert "disk on fire" in sink.state.last_error


def test_the_sink_state_says_since_when_writes_fail():
    store = FakeStore(fail=1)
    sink = Sink(store, name="test", window_seconds=60)
    with pytest.raises(OSError):
        sink.write(_batch())
    state = sink.state
    assert not state.ok and state.failing_since is not None and "disk on fire" in state.error
    assert state.describe()["ok"] is False and state.describe()["failures"] == 1
    sink.write(_batch())
    assert state.ok and state.describe() == {"ok": True, "failures": 1}


def test_a_failed_merge_holds_nothing_and_is_reported_for_the_next_batch():
    store = FakeStore(merge_fail=1)
    sink = Sink(store, name="test", window_seconds=60)
    stored = sink.write_until_taken(_batch(merges={"T2": "T1"}), stopping=Waits())
    assert not stored.merged and [e["id"] for e in stored.events] == ["a", "b"]
    assert [c[0] for c in store.calls] == ["write_batch", "merge_templates"]  # not retried here
    assert sink.state.ok


def test_a_stopping_runtime_gives_up_a_batch_the_store_does_not_take():
    store = FakeStore(fail=10)
    stopping = Waits()
    stopping.set()
    assert Sink(store, name="test", window_seconds=60).write_until_taken(
        _batch(merges={"T2": "T1"}), stopping=stopping) is None
    assert [c[0] for c in store.calls] == ["write_batch"]  # no merge for an unstored batch


# -- both runtimes call it: the same order, the same retries, the same state -------------------
def _embedded(store, batch, policy, monkeypatch, tmp_path):
    from streams.runtime.embedded import EmbeddedRunner

    runner = EmbeddedRunner(store, PipelineConfig(), retry=policy)
    stopping = Waits()
    retried = []
    for notices in runner._merges.values():
        monkeypatch.setattr(notices, "retry", lambda: retried.append(True))
    assert runner._write(batch, stopping=stopping)  # what its writer thread runs
    return runner.sink, stopping.waits, bool(retried), runner.processed


def _worker(store, batch, policy, monkeypatch, tmp_path):
    worker = _worker_module(monkeypatch, tmp_path)

    sink = _sink_of(worker, store, monkeypatch, policy=policy)
    waits: list[float] = []
    # the stopping flag it hands the sink's thread (set if the write is cancelled)
    monkeypatch.setattr(worker, "threading", SimpleNamespace(Event=lambda: _recording(waits)))
    part = _part(worker)
    part.unstored = 1
    retried = []
    monkeypatch.setattr(part.merges, "retry", lambda: retried.append(True))
    ticks = []

    async def run():
        async def ticker():  # runs while the write waits: the event loop is not blocked
            while True:
                ticks.append(1)
                await asyncio.sleep(0)

        t = asyncio.ensure_future(ticker())
        await worker._store_batch(asyncio.get_running_loop(), None, None, part,
                                  [{"id": e["id"]} for e in batch.events], batch, 0)
        t.cancel()

    asyncio.run(run())
    assert part.unstored == 0 and ticks
    assert store.threads and threading.main_thread().name not in store.threads
    return sink, waits, bool(retried), len(store.ids)


def _recording(waits):
    event = Waits()
    event.waits = waits
    return event


@pytest.mark.parametrize("runtime", [_embedded, _worker], ids=["embedded", "kafka-worker"])
def test_both_runtimes_write_retry_and_merge_alike(runtime, monkeypatch, tmp_path):
    store = FakeStore(fail=2, merge_fail=1)
    policy = RetryPolicy(first=0.5, cap=0.75)
    sink, waits, merge_retried, stored = runtime(store, _batch(merges={"T2": "T1"}), policy,
                                                 monkeypatch, tmp_path)
    assert isinstance(sink, Sink) and sink.policy == policy
    assert waits == [0.5, 0.75]
    assert store.calls == [("write_batch", ["a", "b"], ["inc-1"])] * 3 + [
        ("merge_templates", {"T2": "T1"})]
    assert merge_retried  # the failed merge is asked again with the next batch
    assert stored == 2
    assert sink.state.failures == 2 and sink.state.ok


def test_the_sink_state_is_what_health_reads(monkeypatch, tmp_path):
    """The embedded status and the worker's /healthz both read the sink's state."""
    from streams.runtime.embedded import EmbeddedRunner

    runner = EmbeddedRunner(FakeStore(), PipelineConfig())
    runner.sink.state = SinkState(failing_since=123.0, error="OSError: disk on fire",
                                  last_error="OSError: disk on fire", failures=4)
    st = runner.status()
    assert st["failing_since"] == 123.0 and st["last_error"] == "OSError: disk on fire"
    assert st["errors"] == 4 and st["sink"]["ok"] is False

    worker = _worker_module(monkeypatch, tmp_path)
    sink = _sink_of(worker, FakeStore(), monkeypatch)
    sink.state = runner.sink.state

    class Es:
        def health(self):
            return {"status": "green"}

    monkeypatch.setattr(worker, "store", lambda: Es())
    ok, detail = worker.health()
    assert not ok
    assert detail["sink"] == {"waiting_for_elasticsearch_since": 123.0,
                              "error": "OSError: disk on fire"}


def test_the_workers_incident_tick_writes_through_the_sink(monkeypatch, tmp_path):
    """Resolved incidents (the worker's timer) take the same write: a failure shows in the sink
    state that /healthz reads and the snapshots are kept for the next tick, as in embedded mode
    (where ticks go through the writer thread)."""
    worker = _worker_module(monkeypatch, tmp_path)

    store = FakeStore(fail=1)
    sink = _sink_of(worker, store, monkeypatch)
    monkeypatch.setattr(worker, "_lagging", lambda: False)
    monkeypatch.setattr(worker, "_unwritten_ticks", [])
    part = _part(worker)
    snaps = iter([[{"id": "inc-9", "rev": 3}], []])
    monkeypatch.setattr(part.pipeline.incidents, "tick", lambda now: next(snaps))
    monkeypatch.setattr(worker, "parts", {0: part})
    tick = inspect.unwrap(worker.incidents_tick)  # the function under Faust's timer
    asyncio.run(tick())
    assert not sink.state.ok and worker._unwritten_ticks == [{"id": "inc-9", "rev": 3}]
    asyncio.run(tick())
    assert sink.state.ok and worker._unwritten_ticks == []
    assert store.calls == [("write_batch", [], ["inc-9"])] * 2


def test_batches_joined_keep_their_order_and_the_latest_merges():
    a = Batch([_event("a")], [{"item": 1}], {"T2": "T1"}, ["c1"], [{"id": "inc-1", "rev": 1}],
              {0: 5})
    b = Batch([_event("b"), _event("c")], [], {"T2": "T1", "T3": "T1"}, ["c2"],
              [{"id": "inc-1", "rev": 2}], {0: 9, 1: 2})
    j = Batch.join([a, b])
    assert [e["id"] for e in j.events] == ["a", "b", "c"]
    assert j.dead_letters == [{"item": 1}] and j.catalog == ["c1", "c2"]
    assert j.merges == {"T2": "T1", "T3": "T1"}
    assert j.incidents == [{"id": "inc-1", "rev": 1}, {"id": "inc-1", "rev": 2}]
    assert j.cursors == {0: 9, 1: 2}
    assert Batch.join([a]) is a
    assert Batch.join([Batch([], [], None, [], []), Batch([], [], None, [], [])]).merges is None


class SlowStore(FakeStore):
    """A FakeStore whose first write waits until the test lets it go."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def write_batch(self, batch, *, window_seconds):
        if not self.calls:
            self.release.wait(10)
        return super().write_batch(batch, window_seconds=window_seconds)


def test_the_worker_writes_the_batches_processed_during_a_write_as_one(monkeypatch, tmp_path):
    """Issue 18 (CPU per line): each Kafka message used to be its own bulk request. Batches
    that are processed while a write is in flight wait for it and then go to the store
    together, in their order, each message acked after its events were taken, in order; with
    the writer idle, a batch is written at once, alone."""
    worker = _worker_module(monkeypatch, tmp_path)

    store = SlowStore()
    _sink_of(worker, store, monkeypatch)
    parts = [_part(worker, p) for p in (0, 1)]
    stream = Acks()
    acked = stream.acked

    async def run():
        loop = asyncio.get_running_loop()
        writes = worker._Writes(loop, stream, limit=5)
        for n, (ids, part) in enumerate([(("a", "b"), parts[0]), (("c",), parts[1]),
                                         (("d", "e"), parts[0])]):
            part.unstored += 1
            writes.add(f"m{n}", part, [{"id": i} for i in ids], _batch(ids), n)
            await writes.room()
            await asyncio.sleep(0.05)  # the first write is in flight meanwhile
        assert acked == []
        store.release.set()
        await writes.drain()
        part = parts[1]
        part.unstored += 1
        writes.add("m3", part, [{"id": "f"}], _batch(("f",)), 3)
        await writes.drain()

    asyncio.run(run())
    assert [c[1] for c in store.calls] == [["a", "b"], ["c", "d", "e"], ["f"]]
    assert store.calls[1][2] == ["inc-1", "inc-1"]  # each batch's snapshots
    assert acked == ["m0", "m1", "m2", "m3"]
    assert [p.unstored for p in parts] == [0, 0]


def test_the_worker_waits_for_the_writer_beyond_a_bulk_of_events(monkeypatch, tmp_path):
    """The batches waiting for a write are bounded: at ``limit`` events the agent waits until
    the writer took them."""
    worker = _worker_module(monkeypatch, tmp_path)

    store = SlowStore()
    _sink_of(worker, store, monkeypatch)
    part = _part(worker)

    async def run():
        writes = worker._Writes(asyncio.get_running_loop(), Acks(), limit=3)
        part.unstored += 2
        writes.add("m0", part, [], _batch(("a",)), 0)
        await writes.room()
        await asyncio.sleep(0.05)  # the first write is in flight
        writes.add("m1", part, [], _batch(("b", "c", "d")), 1)
        waiting = asyncio.ensure_future(writes.room())
        await asyncio.sleep(0.05)
        assert not waiting.done() and writes.events == 3
        store.release.set()
        await asyncio.wait_for(waiting, 10)
        await writes.drain()

    asyncio.run(run())
    assert [c[1] for c in store.calls] == [["a"], ["b", "c", "d"]]


def test_small_batches_that_follow_a_small_write_are_gathered_into_one(monkeypatch, tmp_path):
    """Issue 18 (small requests): with clients posting a line each, every Kafka message held a
    few lines and, the writer being idle, each was its own bulk request. After a small write
    the writer waits (``WRITE_GATHER_SECONDS``) and the batches processed meanwhile go as one;
    the first batch after a pause is written at once, and every message is acked in order."""
    worker = _worker_module(monkeypatch, tmp_path)

    store = FakeStore()
    _sink_of(worker, store, monkeypatch)
    monkeypatch.setattr(worker, "WRITE_GATHER_SECONDS", 1.0)
    part = _part(worker)
    stream = Acks()
    acked = stream.acked

    async def run():
        writes = worker._Writes(asyncio.get_running_loop(), stream, limit=100)
        for n, i in enumerate("abcd"):
            part.unstored += 1
            writes.add(f"m{n}", part, [{"id": i}], _batch((i,)), n)
            await writes.room()
            await asyncio.sleep(0.02)  # one message after the other, the writer idle
        await asyncio.wait_for(writes.drain(), 10)

    asyncio.run(run())
    assert [c[1] for c in store.calls] == [["a"], ["b", "c", "d"]]
    assert acked == ["m0", "m1", "m2", "m3"] and part.unstored == 0


def test_a_save_that_waited_for_a_write_is_taken_when_the_writes_are_done(monkeypatch, tmp_path):
    """A checkpoint that found a batch in flight used to wait for the next message (or the
    next tick): after the last batch of a replay a stop could come first, and the next worker
    found no state. The writer takes it once its queue is written."""
    worker = _worker_module(monkeypatch, tmp_path)

    _sink_of(worker, FakeStore(), monkeypatch)
    part = _part(worker)
    saved = []

    async def save_parts(only=None):
        saved.append(part.unstored)
        return True

    monkeypatch.setattr(worker, "_save_parts", save_parts)
    monkeypatch.setattr(worker, "_save_due", True)

    async def run():
        writes = worker._Writes(asyncio.get_running_loop(), Acks(), limit=100)
        part.unstored += 1
        writes.add("m0", part, [], _batch(("a",)), 0)
        await writes.drain()

    asyncio.run(run())
    assert saved == [0]  # after the write: the save covers the stored batch


def test_batches_added_while_the_writer_saves_are_written_by_it(monkeypatch, tmp_path):
    """The save the writer takes yields to the event loop (a Kafka transaction): batches the
    agent adds meanwhile are written by the same task, none is left behind unwritten."""
    worker = _worker_module(monkeypatch, tmp_path)

    store = FakeStore()
    _sink_of(worker, store, monkeypatch)
    part = _part(worker)
    release = asyncio.Event()

    async def save_parts(only=None):
        worker._save_due = False
        await release.wait()
        return True

    monkeypatch.setattr(worker, "_save_parts", save_parts)
    monkeypatch.setattr(worker, "_save_due", True)
    stream = Acks()
    acked = stream.acked

    async def run():
        writes = worker._Writes(asyncio.get_running_loop(), stream, limit=100)
        part.unstored += 2
        writes.add("m0", part, [], _batch(("a",)), 0)
        await asyncio.sleep(0.01)  # written; the save waits
        writes.add("m1", part, [], _batch(("b",)), 1)
        release.set()
        await asyncio.wait_for(writes.drain(), 10)

    asyncio.run(run())
    assert acked == ["m0", "m1"] and [c[1] for c in store.calls] == [["a"], ["b"]]


def test_a_clean_stop_saves_the_partitions_state(monkeypatch, tmp_path):
    """SIGTERM: Faust stops without revoking the partitions; the state they learned since the
    last checkpoint tick is saved all the same (a stop right after a replay, before the first
    tick, used to leave the next worker a fresh model). A partition with a batch not stored
    is not saved (a save covers stored batches only)."""
    worker = _worker_module(monkeypatch, tmp_path)

    class Writer:
        def __init__(self):
            self.saves = []

        async def write(self, records, **kwargs):
            self.saves.append(len(records))

    done = _part(worker, 0, Writer())
    busy = _part(worker, 1, Writer())
    done.applied, busy.applied, busy.unstored = 3, 7, 1
    monkeypatch.setattr(worker, "parts", {0: done, 1: busy})
    asyncio.run(worker._save_on_stop(None))
    assert done.saved_offset == 3 and len(done.writer.saves) == 1
    assert busy.saved_offset is None and busy.writer.saves == []
