"""The embedded runtime: a shard's loop that drains the spool through the pipelines of its
partitions into a store (``streams/runtime/shards.py`` runs K of them; with K=1, in the API process).

Why not Faust here: architecture.md records that Faust without Kafka needs either a
disabled-Kafka boot (tables never start) or a ~240-line custom transport that reaches into
Faust internals, and that Faust's per-message cost (~200 µs) dominates unless lines are
batched. The embedded mode therefore runs the *same* pure ``Pipeline`` object the Kafka
worker runs, driven by this small loop; what the loop owns (ordering, exactly-once and
recovery) is tested directly in tests/component/test_runner.py.

Exactly-once, without a broker (per partition: each has its own pipeline, checkpoint
``<checkpoint>-p<N>`` and spool cursor; items go to the partition of their source,
``streams.partitions``):
  * the API commits each accepted request to the spool before answering 202;
  * the loop processes spool batches in order and commits the resulting events, their
    window counts and the spool cursor (``stored_seq``) in one SQLite transaction;
  * model state is checkpointed atomically every few seconds with the spool position it
    reflects, after the stored events are synced to disk; spool batches are trimmed only
    after a checkpoint covers them. A checkpoint is written only when lines were processed
    since the last one (an idle server writes nothing), and at most every ten times as long
    as the last one took to write (a large model costs a bounded share of a core);
  * after a crash the last checkpoint is restored and the batches after its position are
    processed again: processing is deterministic, so they produce the same events, and the
    store ignores ids it already has.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from smartlogs import metrics
from smartlogs.logs import correlation_ids
from smartlogs.store.sqlite import SqliteStore
from streams.runtime.checkpoints import load_checkpoint, save_checkpoint
from streams.partitions import partition_key, partition_of
from streams.pipeline import Pipeline, PipelineConfig
from streams.runtime.stage import Batch, RetryPolicy, Sink, run_stage, unprocessable_event
from streams.runtime.timeline import Timeline
from streams.templates import MergeNotices

__all__ = ["EmbeddedRunner", "partition_checkpoint", "unprocessable_event"]  # the latter: streams.runtime.stage's

log = logging.getLogger(__name__)

IDLE_CURSOR_SECONDS = 0.5  # how often a shard with nothing to store moves its spool cursors
# Small batches: a step that found fewer than GATHER_ITEMS items waits GATHER_SECONDS before
# the next read, so what arrives meanwhile is processed and stored as one batch. Every step and
# its write cost a fixed ~1 ms of CPU whatever their size (the transaction, its commit, the
# hand-off to the writer thread), against ~40 µs a line on big batches: many clients posting a
# line each made batches of a few dozen lines at ~150 µs a line (bench/RESULTS.md, issue 18).
# The first item after a pause is read at once (a lone request is not held); the wait adds at
# most GATHER_SECONDS to ingest → searchable, far below the 1 s p99 target, and never applies
# while the shard is behind (its reads are then full, max_batch items).
GATHER_SECONDS = 0.02
GATHER_ITEMS = 500
# ``yield_to_writer``: while this runner's writer thread holds the store's one writer turn
# (which every other shard waits for), the runner thread pauses between chunks of
# YIELD_ITEMS items of the pipeline, so that the writer has the GIL at once after each SQLite
# call and a core, and the other shard's pipeline the other core: the turn was held ~twice
# its CPU time, most of the run, while three busy threads shared two cores (bench/RESULTS.md,
# issue 18). On in the shards (``streams.runtime.shards.YIELD_TO_WRITER``). The
# pipeline's results do not depend on how items are chunked (it already processes whatever
# each spool read returns).
YIELD_ITEMS = 500


def partition_checkpoint(path: Path, partition: int, partitions: int) -> Path:
    """Where partition ``partition``'s checkpoint lives: ``path`` itself with one partition
    (the layout of a store made before partitions), else ``<stem>-p<partition><suffix>``."""
    if partitions <= 1:
        return path
    return path.with_name(f"{path.stem}-p{partition}{path.suffix}")


class EmbeddedRunner:
    """One shard: the pipelines of the partitions it owns (``partitions``, of
    ``n_partitions``; default: the one partition of an unpartitioned store), fed from the
    spool, written to the store. ``streams.runtime.shards`` runs K of them, each in its own process,
    or one in the API process (K=1)."""

    def __init__(
        self,
        store: SqliteStore,
        config: PipelineConfig,
        *,
        checkpoint_path: Path | None = None,
        checkpoint_seconds: float = 5.0,
        max_batch: int = 5000,
        partitions: list[int] | None = None,
        n_partitions: int | None = None,
        wake_event=None,
        reload_marks: float | None = None,
        retry: RetryPolicy | None = None,
        gather_seconds: float = 0.0,
        gather_items: int = GATHER_ITEMS,
        yield_to_writer: bool = False,
    ):
        self.store = store
        self.config = config
        self.checkpoint_path = checkpoint_path
        self.checkpoint_seconds = checkpoint_seconds
        self.max_batch = max_batch
        # small batches wait this long for more (0: never; the shards use GATHER_SECONDS)
        self.gather_seconds = gather_seconds
        self.gather_items = min(gather_items, max_batch)
        self.n_partitions = n_partitions or store.partitions
        self.parts = sorted(partitions) if partitions is not None else list(range(self.n_partitions))
        if not self.parts or not all(0 <= p < self.n_partitions for p in self.parts):
            raise ValueError(f"partitions {self.parts} are not a non-empty subset of "
                             f"0..{self.n_partitions - 1}")
        # the write, its retries and merges, shared with the Kafka worker (streams.runtime.stage)
        self.sink = Sink(store, name="sqlite", window_seconds=config.window_seconds, policy=retry)
        self._saved: dict[int, tuple] = {}
        self._merges: dict[int, MergeNotices] = {}
        self.pipelines: dict[int, Pipeline] = {p: self._restore(p) for p in self.parts}
        # another process's wake (a multiprocessing.Event) when the API is not in this one
        self._wake = wake_event if wake_event is not None else threading.Event()
        self._stop = threading.Event()
        self._abandon = threading.Event()  # stop() gave up on a store that keeps failing
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        # processed batches waiting for the writer thread; SQLite releases the GIL while it
        # writes, so storing batch k overlaps with processing batch k+1
        self._pending: queue.Queue = queue.Queue(maxsize=2)
        self._moved = False  # the last step's read found the spool grown
        self._listeners: list = []
        self._last_ckpt = time.monotonic()
        self._last_tick = 0.0  # monotonic time of the last incident tick
        self._cursor_written = 0.0  # monotonic time of the last write
        self._ckpt_cost = 0.0  # seconds the last checkpoint took
        # feedback marks given through another process (the API): read from the store
        self._reload_marks = reload_marks
        self._marks_version = -1  # the store's marks version the pipelines' marks reflect
        self.checkpoints = 0  # written by this runner
        # seconds the processing thread waited: for the writer thread to take a batch (the
        # store is the bottleneck: its turn, its write), for work (nothing in the spool), and
        # for a small read to grow (the gather)
        self.waited = {"writer_behind": 0.0, "idle": 0.0, "gather": 0.0, "yield": 0.0}
        # when: each state change of the runner and writer threads (streams.runtime.timeline)
        self.timeline = Timeline()
        self._mark = self.timeline.mark
        # set unless this runner's writer holds the store's writer turn (``yield_to_writer``:
        # the runner thread waits for it between chunks of the pipeline; see YIELD_ITEMS)
        self._turn_free = threading.Event()
        self._turn_free.set()
        self.yield_to_writer = yield_to_writer
        store.turn_hook = self._on_turn
        self.processed = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_event_at: float | None = None
        # since when processing (a whole step) keeps failing (storing: self.sink.state)
        self._failing: dict[str, float] = {}

    def _on_turn(self, state: str) -> None:
        """The store's writer turn: ``turn wait``, ``turn held``, ``turn done`` (the runner
        thread takes it too, to checkpoint: marked as ``checkpoint: ...``)."""
        if threading.current_thread() is not self._writer:
            self._mark("runner", f"checkpoint: {state}")
            return
        self._mark("writer", state)
        if state == "turn held":
            self._turn_free.clear()
        elif state == "turn done":
            self._turn_free.set()

    def _chunks(self, items: list[dict]):
        """``items`` in chunks of YIELD_ITEMS (whole unless ``yield_to_writer``), the runner
        waiting before each while its writer thread holds the store's writer turn."""
        size = YIELD_ITEMS if self.yield_to_writer else len(items)
        for k in range(0, len(items), size):
            self._yield_to_writer()
            yield items[k:k + size]

    def _yield_to_writer(self) -> None:
        if not self.yield_to_writer or self._turn_free.is_set():
            return
        self._mark("runner", "yield")
        t = time.monotonic()
        # bounded: the turn's end always sets it (the store's ``finally``)
        self._turn_free.wait(1.0)
        self.waited["yield"] += time.monotonic() - t
        self._mark("runner", "pipeline")

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline of a runner with one partition (tests, tools)."""
        if len(self.pipelines) != 1:
            raise AttributeError("this runner runs several partitions: see .pipelines")
        return next(iter(self.pipelines.values()))

    def _checkpoint_path(self, p: int) -> Path | None:
        if self.checkpoint_path is None:
            return None
        return partition_checkpoint(self.checkpoint_path, p, self.n_partitions)

    def _restore(self, p: int) -> Pipeline:
        path = self._checkpoint_path(p)
        pipeline = load_checkpoint(path, self.config) if path else None
        if (pipeline is None and path is not None and path != self.checkpoint_path
                and self.checkpoint_path.exists()):
            # a data directory from before partitions: every partition starts from a copy
            # of what the one pipeline had learned (and re-runs the spool after its position)
            pipeline = load_checkpoint(self.checkpoint_path, self.config)
            if pipeline is not None:
                log.info("partition %d starts from the unpartitioned checkpoint", p)
        if pipeline is None:
            pipeline = Pipeline(self.config)
            if self.store.cursors().get(p):
                log.warning("partition %d: no usable checkpoint; its model starts fresh, stored "
                            "events are kept", p)
        # what the checkpoint on disk holds (spool position, lines): with nothing processed
        # since, there is nothing to write (a fresh model that processed nothing neither)
        self._saved[p] = (pipeline.applied_seq, pipeline.lines)
        # the catalog's names for templates that other pipelines met too (streams.catalog):
        # other partitions' pipelines, in this shard or another
        self._adopt_aliases([pipeline])
        # feedback on templates: the store holds the marks (a mark given after the checkpoint
        # was written is not lost)
        pipeline.scorer.marks = self.store.template_marks()
        # template merges the store may not have applied yet (a crash between the write of a
        # batch and its merge): applying them again is harmless
        self._merges[p] = notices = MergeNotices()
        merges = notices.news(pipeline.miner)
        if merges and not self.sink.merge(merges):
            notices.retry()
        return pipeline

    def _adopt_aliases(self, pipelines: list[Pipeline], every: float = 0.0) -> None:
        """Hand the pipelines' miners the catalog's aliases (ids another pipeline's template
        text made aliases: ``streams.catalog``), at most every ``every`` seconds; the store
        maps ids meanwhile. A failure is logged; the next call reads them again."""
        now = time.monotonic()
        if now - getattr(self, "_aliases_at", -every) < every:
            return
        self._aliases_at = now
        try:
            aliases = self.store.template_aliases()
            for pipeline in pipelines:
                pipeline.adopt_aliases(aliases)
        except Exception:  # noqa: BLE001 - names only: the store maps ids when it writes
            log.exception("reading the template catalog's aliases failed; retried later")

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="smartlogs-writer", daemon=True)
        self._writer.start()
        self._thread = threading.Thread(target=self._run, name="smartlogs-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._thread:  # (it may be waiting for the writer, to checkpoint)
            self._thread.join(timeout)
        if not self._writes_done(max(deadline - time.monotonic(), 0.0)):
            # never hang a shutdown on a store that keeps refusing: nothing is lost, the spool
            # keeps every batch since the last checkpoint and a restart processes them again
            log.error("stopping with store writes still failing (%s); no final checkpoint: "
                      "the batches since the last one stay in the spool", self.last_error)
            self._abandon.set()
            return
        if self._writer:
            self._pending.put(None)
            self._writer.join(timeout)
        self.checkpoint()

    def _writes_done(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._pending.unfinished_tasks:
            if time.monotonic() > deadline or not (self._writer and self._writer.is_alive()):
                return not self._pending.unfinished_tasks
            time.sleep(0.02)
        return True

    def set_mark(self, change) -> bool:
        """Feedback on a template (``streams.catalog.TemplateChange``): stored with the
        template's history, then applied to scoring, from the next line scored. False: the
        catalog has no such template."""
        if not self.store.set_mark(change):
            return False
        for pipeline in self.pipelines.values():
            marks = pipeline.scorer.marks
            if change.mark is None:
                marks.pop(change.template_id, None)
            else:
                marks[change.template_id] = change.mark
        return True

    def marks(self) -> dict:
        """The feedback marks scoring applies (the same in every partition)."""
        return next(iter(self.pipelines.values())).scorer.marks

    @property
    def lines(self) -> int:
        """Lines every partition's model has learned from."""
        return sum(p.lines for p in self.pipelines.values())

    def describe_sources(self) -> list[dict]:
        """Each source's learned layout (each source lives in one partition)."""
        out = [d for p in self.pipelines.values() for d in p.describe_sources()]
        return sorted(out, key=lambda d: d["source"])

    def wake(self) -> None:
        self._wake.set()

    def subscribe(self, callback) -> None:
        """Call ``callback(events)`` (in the runner thread) after each stored batch."""
        self._listeners.append(callback)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        mark = self._mark
        while not self._stop.is_set():
            try:
                did = self.step()
            except Exception as exc:  # noqa: BLE001 - keep the data in the spool, retry later
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._failing.setdefault("step", time.time())
                log.exception("processing failed; the batch stays in the spool and is retried")
                self._stop.wait(1.0)
                continue
            self._failing.pop("step", None)
            if (time.monotonic() - self._last_ckpt
                    >= max(self.checkpoint_seconds, 10.0 * self._ckpt_cost)):
                mark("runner", "checkpoint")
                self.checkpoint()
            if not did and time.monotonic() - self._last_tick >= 1.0:
                self._last_tick = time.monotonic()
                mark("runner", "tick")
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - retried at the next idle second
                    log.exception("incident tick failed")
            if (did < self.gather_items and self.gather_seconds > 0
                    and (did or self._moved)):
                # a small batch, or only other shards' rows: let the next read grow (the
                # wake-ups meanwhile are not needed, the next read follows the wait)
                mark("runner", "gather")
                t = time.monotonic()
                self._stop.wait(self.gather_seconds)
                self._wake.clear()
                self.waited["gather"] += time.monotonic() - t
            elif not did:
                mark("runner", "idle")
                t = time.monotonic()
                self._wake.wait(0.25)
                self._wake.clear()
                self.waited["idle"] += time.monotonic() - t

    def _refresh_marks(self) -> None:
        """Feedback given through the API process (shards in processes of their own): re-read
        when the store's marks version moved, before a batch is processed, so a mark applies
        from the next line processed."""
        try:
            version = self.store.marks_version()
            if version == self._marks_version:
                return
            marks = self.store.template_marks()
            self._marks_version = version
        except Exception:  # noqa: BLE001 - the marks in use stay; read again next time
            log.exception("reading the feedback marks failed")
            return
        for pipeline in self.pipelines.values():
            pipeline.scorer.marks = dict(marks)

    def step(self) -> int:
        """Process one group of spool batches; returns the number of input items of this
        runner's partitions.

        The spool holds requests as accepted, a row per partition of each
        (``streams.partitions``: keyed by source); this runner reads the rows of the partitions
        it owns (rows of other partitions are not decoded) and each row goes to the pipeline of
        its partition. Every partition has its own position in the spool (its pipeline's
        ``applied_seq``), stored as its cursor in the same transaction as its events. With the
        threads running, the events go to the writer thread; without them (tests, tools),
        they are written here.
        """
        if self._reload_marks is not None:  # a shard process: feedback given since
            self._refresh_marks()
        self._mark("runner", "read")
        seqs = {p: pl.applied_seq for p, pl in self.pipelines.items()}
        low = min(seqs.values())
        # only the spool rows of this runner's partitions (the API keeps a row per partition)
        batches, last_seq = self.store.spool_rows(low, self.max_batch, self._positions(seqs))
        self._moved = last_seq > low  # the spool grew (maybe with other shards' rows only)
        if last_seq <= low:
            return 0
        if batches:
            self._adopt_aliases(list(self.pipelines.values()), every=self.checkpoint_seconds)
        self._mark("runner", "pipeline")
        per = self._split(batches, seqs)
        events: list[dict] = []
        merges: dict = {}
        catalog: list = []
        incidents: list[dict] = []
        cids: dict[str, None] = {}  # the requests' correlation ids (the pipeline's events lack them)
        logged = log.isEnabledFor(logging.INFO)
        n = 0
        for p, pipeline in self.pipelines.items():
            items = per.get(p)
            if items:
                n += len(items)
                if logged:
                    cids.update(dict.fromkeys(filter(None, correlation_ids(items).split(","))))
                first, chunks = len(incidents), 0
                for chunk in self._chunks(items):
                    batch = run_stage(pipeline, self._merges[p], chunk)  # shared with the Kafka worker
                    self._dead_letters(batch.dead_letters)
                    events.extend(batch.events)
                    merges.update(batch.merges or {})
                    catalog.extend(batch.catalog)  # templates generalised or merged
                    incidents.extend(batch.incidents)  # stored in the batch's transaction
                    chunks += 1
                if chunks > 1:  # each incident's last snapshot, as one call over all gives
                    incidents[first:] = {i["id"]: i for i in incidents[first:]}.values()
            else:  # a merge adopted from the catalog since, say
                merges.update(self._merges[p].news(pipeline.miner) or {})
                catalog.extend(pipeline.take_catalog())
                incidents.extend(pipeline.take_incidents())
        # partitions ahead of the read (restored from a later checkpoint: one that moved
        # here from another shard) keep their position
        ahead = {p for p, seq in seqs.items() if seq >= last_seq}
        cursors = {p: last_seq for p in self.pipelines if p not in ahead}
        if events or merges or catalog or incidents:
            self._submit(events, cursors, merges or None, catalog or None, incidents,
                         ",".join(cids))
            self._cursor_written = time.monotonic()
        elif time.monotonic() - self._cursor_written >= IDLE_CURSOR_SECONDS:
            # only other shards' batches since: its cursors (read only for the backlog; a
            # restart resumes from the checkpoints) move at most this often, instead of a
            # write that would make the busy shards wait their turn
            self._submit([], cursors, None, None, [])
            self._cursor_written = time.monotonic()
        for p, pipeline in self.pipelines.items():
            if p not in ahead:
                pipeline.applied_seq = last_seq
        return n

    def _positions(self, seqs: dict[int, int]) -> dict[int, int] | None:
        """What to read of the spool: each owned partition's rows after its own position
        (None: every row; the rows' partitions are the store's, which a runner made with
        another number of partitions does not use)."""
        return seqs if self.n_partitions == self.store.partitions else None

    def _split(self, batches: list, seqs: dict[int, int]) -> dict[int, list[dict]]:
        """Items of the spool rows → the partitions of this runner that have not applied them
        (a row of one partition as a whole; a row of several, made before rows had one,
        item by item)."""
        if self.n_partitions == 1:
            return {0: [item for seq, _, group in batches if seq > seqs[0] for item in group]}
        per: dict[int, list[dict]] = {}
        n = self.n_partitions
        tagged = n == self.store.partitions
        for seq, part, group in batches:
            if part is not None and tagged:
                if seq > seqs.get(part, seq):
                    per.setdefault(part, []).extend(group)
                continue
            for item in group:
                p = partition_of(partition_key(item), n)
                if seq > seqs.get(p, seq):
                    per.setdefault(p, []).append(item)
        return per

    def _submit(self, events: list[dict], cursors: dict[int, int], merges: dict | None,
                catalog: list | None, incidents: list[dict], correlation: str = "") -> None:
        batch = Batch(events, [], merges, catalog or [], incidents, cursors=cursors,
                      correlation=correlation)
        if self._writer is not None and self._writer.is_alive():
            self._mark("runner", "hand-off")
            t = time.monotonic()
            self._pending.put(batch)
            self.waited["writer_behind"] += time.monotonic() - t
            self._mark("runner", "pipeline")  # what is left of the step: its cursors
        else:
            self._write(batch)

    def tick(self, now: float | None = None) -> int:
        """Resolve incidents that went quiet (``streams.incidents``), when nothing waits in
        the spool: a line accepted before ``now`` is then processed already. Returns how many
        snapshots changed (stored through the writer, in order with the batches)."""
        seqs = {p: pl.applied_seq for p, pl in self.pipelines.items()}
        if self.store.spool_rows(min(seqs.values()), 1, self._positions(seqs))[0]:
            return 0
        now = time.time() if now is None else now
        changed = [s for pl in self.pipelines.values() for s in pl.incidents.tick(now)]
        if changed:
            self._submit([], seqs, None, None, changed)
        return len(changed)

    def _dead_letters(self, dead_letters: list[dict]) -> None:
        """Items the pipeline could not process (isolated by ``streams.runtime.stage``): counted."""
        for dead in dead_letters:
            self.errors += 1
            self.last_error = dead["error"]
            metrics.DEAD_LETTERED.labels("pipeline").inc()

    def _write(self, batch: Batch, stopping: threading.Event | None = None) -> bool:
        """Store ``batch`` through the sink shared with the Kafka worker: once (no writer
        thread: a failure raises), or until the store takes it (``stopping``: the writer
        thread, which gives up only once stop() gave up). False: given up, not stored."""
        stored = (self.sink.write(batch) if stopping is None
                  else self.sink.write_until_taken(batch, stopping=stopping))
        if stored is None:
            return False
        if not stored.merged:  # the next batch asks again
            for notices in self._merges.values():
                notices.retry()
        new = stored.events
        self.processed += len(new)
        if new:
            self.last_event_at = time.time()
            log.info("stored %d events", len(new), extra={"correlation_id": batch.correlation})
            for cb in self._listeners:
                try:
                    cb(new)
                except Exception:  # noqa: BLE001 - a listener must never stop the pipeline
                    log.exception("event listener failed")
        return True

    def _write_loop(self) -> None:
        mark = self._mark
        while True:
            mark("writer", "idle")
            batch = self._pending.get()
            mark("writer", "prepare")  # the rows made before the store's writer turn
            try:
                # already processed: stored, never dropped; stop() may give up waiting (the
                # batch then stays in the spool)
                if batch is None or not self._write(batch, stopping=self._abandon):
                    return
            finally:
                self._pending.task_done()

    def _behind(self) -> bool:
        seqs = {p: pl.applied_seq for p, pl in self.pipelines.items()}
        return bool(self.store.spool_rows(min(seqs.values()), 1, self._positions(seqs))[0])

    def drain(self, timeout: float = 30.0) -> None:
        """Process until the spool is empty (used by tests and the benchmark)."""
        deadline = time.monotonic() + timeout
        while self._behind() or self._pending.unfinished_tasks:
            if time.monotonic() > deadline:
                raise TimeoutError("spool not drained in time")
            if not self.alive:
                self.step()
            else:
                time.sleep(0.01)

    def checkpoint(self) -> None:
        if self.checkpoint_path is None:
            return
        # the checkpoint may only cover what is stored: wait for the writer to catch up
        self._pending.join()
        now = {p: (pl.applied_seq, pl.lines) for p, pl in self.pipelines.items()}
        changed = [p for p in self.parts if now[p] != self._saved[p]]
        if not changed:  # nothing processed since the last one: nothing to write
            self._last_ckpt = time.monotonic()
            return
        start = time.monotonic()
        self.store.sync()  # what the checkpoint covers must outlive a power cut before the trim
        for p in changed:
            save_checkpoint(self.pipelines[p], self._checkpoint_path(p))
            self._saved[p] = now[p]
        # the spool is trimmed below what every partition's checkpoint covers
        self.store.checkpointed({p: now[p][0] for p in changed})
        self.checkpoints += 1
        self._last_ckpt = time.monotonic()
        self._ckpt_cost = self._last_ckpt - start

    def status(self) -> dict:
        backlog = self.store.spool_backlog()
        metrics.BACKLOG.set(backlog)
        models = [pl.status() for pl in self.pipelines.values()]
        sink = self.sink.state  # the store's writes (streams.runtime.stage.Sink)
        failing = [*self._failing.values(), *([] if sink.ok else [sink.failing_since])]
        return {
            "running": self.alive and self._writer is not None and self._writer.is_alive(),
            "failing_since": min(failing, default=None),
            "processed": self.processed,
            "backlog": backlog,
            "errors": self.errors + sink.failures,
            "last_error": sink.error or self.last_error or sink.last_error,
            "sink": sink.describe(),
            "last_event_at": self.last_event_at,
            "partitions": self.parts,
            "lines": sum(m["lines"] for m in models),
            "templates": sum(m["templates"] for m in models),
            "model_warmed_up": all(m["model_warmed_up"] for m in models),
            "threshold": models[0]["threshold"] if len(models) == 1 else
            {p: m["threshold"] for p, m in zip(self.pipelines, models)},
            "open_incidents": sum(m["open_incidents"] for m in models),
            # seconds since start: the store's turn waited for (another shard writing) and
            # held, this shard waiting for its writer thread, and for work
            "waited_s": {"store_turn": round(getattr(self.store, "turn_waited", 0.0), 3),
                         "store_turn_held": round(getattr(self.store, "turn_held", 0.0), 3),
                         **{k: round(v, 3) for k, v in self.waited.items()}},
            "counts": COUNTS_EXPLAINED,
        }


# why /healthz shows two different numbers (they answer different questions)
COUNTS_EXPLAINED = (
    "processed: new events this server stored since it started (ids already stored are "
    "skipped, not counted); lines: every line the model has learned from over its whole "
    "life, restored from the checkpoint across restarts (re-runs after a crash included)")
