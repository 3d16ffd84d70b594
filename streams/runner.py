"""The embedded runtime: one thread that drains the spool through the pipeline into a store.

Why not Faust here: architecture.md records that Faust without Kafka needs either a
disabled-Kafka boot (tables never start) or a ~240-line custom transport that reaches into
Faust internals, and that Faust's per-message cost (~200 µs) dominates unless lines are
batched. The embedded mode therefore runs the *same* pure ``Pipeline`` object the Kafka
worker runs, driven by this small loop; what the loop owns (ordering, exactly-once and
recovery) is tested directly in tests/component/test_runner.py.

Exactly-once, without a broker:
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
from streams.checkpoints import load_checkpoint, save_checkpoint
from streams.pipeline import Pipeline, PipelineConfig
from streams.stage import count_stored, run_stage, unprocessable_event
from streams.templates import MergeNotices

__all__ = ["EmbeddedRunner", "unprocessable_event"]  # the latter: streams.stage's

log = logging.getLogger(__name__)


class EmbeddedRunner:
    def __init__(
        self,
        store: SqliteStore,
        config: PipelineConfig,
        *,
        checkpoint_path: Path | None = None,
        checkpoint_seconds: float = 5.0,
        max_batch: int = 5000,
    ):
        self.store = store
        self.config = config
        self.checkpoint_path = checkpoint_path
        self.checkpoint_seconds = checkpoint_seconds
        self.max_batch = max_batch
        self.pipeline = self._restore()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._abandon = threading.Event()  # stop() gave up on a store that keeps failing
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        # processed batches waiting for the writer thread; SQLite releases the GIL while it
        # writes, so storing batch k overlaps with processing batch k+1
        self._pending: queue.Queue = queue.Queue(maxsize=2)
        self._listeners: list = []
        self._last_ckpt = time.monotonic()
        self._last_tick = 0.0  # monotonic time of the last incident tick
        self._ckpt_cost = 0.0  # seconds the last checkpoint took
        self.checkpoints = 0  # written by this runner
        self.processed = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_event_at: float | None = None
        # since when processing (a whole step) or storing (the writer) keeps failing
        self._failing: dict[str, float] = {}

    def _restore(self) -> Pipeline:
        pipeline = load_checkpoint(self.checkpoint_path, self.config) if self.checkpoint_path else None
        if pipeline is None:
            pipeline = Pipeline(self.config)
            if self.store.stored_seq():
                log.warning("no usable checkpoint; the model starts fresh, stored events are kept")
        # what the checkpoint on disk holds (spool position, lines): with nothing processed
        # since, there is nothing to write (a fresh model that processed nothing neither)
        self._saved = (pipeline.applied_seq, pipeline.lines)
        # the catalog's names for templates that other pipelines met too (streams.catalog)
        self._adopt_aliases(pipeline)
        # feedback on templates: the store holds the marks (a mark given after the checkpoint
        # was written is not lost)
        pipeline.scorer.marks = self.store.template_marks()
        # template merges the store may not have applied yet (a crash between the write of a
        # batch and its merge): applying them again is harmless
        self._merges = MergeNotices()
        merges = self._merges.news(pipeline.miner)
        if merges and not self._merge(merges):
            self._merges.retry()
        return pipeline

    def _adopt_aliases(self, pipeline: Pipeline, every: float = 0.0) -> None:
        """Hand the pipeline's miner the catalog's aliases (ids another pipeline's template
        text made aliases: ``streams.catalog``), at most every ``every`` seconds; the store
        maps ids meanwhile. A failure is logged; the next call reads them again."""
        now = time.monotonic()
        if now - getattr(self, "_aliases_at", -every) < every:
            return
        self._aliases_at = now
        try:
            pipeline.adopt_aliases(self.store.template_aliases())
        except Exception:  # noqa: BLE001 - names only: the store maps ids when it writes
            log.exception("reading the template catalog's aliases failed; retried later")

    def _merge(self, merges: dict) -> bool:
        """Have the store rewrite ids merged away. A failure does not stop the pipeline (the
        events are stored; only their grouping by the old id is stale): logged, and the next
        batch asks again."""
        try:
            n = self.store.merge_templates(merges)
        except Exception:  # noqa: BLE001
            log.exception("template merge failed; retried with the next batch")
            return False
        log.info("template merge: %d stored events now carry the surviving id", n)
        return True

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
        marks = self.pipeline.scorer.marks
        if change.mark is None:
            marks.pop(change.template_id, None)
        else:
            marks[change.template_id] = change.mark
        return True

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
                self.checkpoint()
            if not did:
                if time.monotonic() - self._last_tick >= 1.0:
                    self._last_tick = time.monotonic()
                    try:
                        self.tick()
                    except Exception:  # noqa: BLE001 - retried at the next idle second
                        log.exception("incident tick failed")
                self._wake.wait(0.25)
                self._wake.clear()

    def step(self) -> int:
        """Process one group of spool batches; returns the number of input items.

        With the threads running, the events go to the writer thread; without them (tests,
        tools), they are written here.
        """
        batches = self.store.spool_read(self.pipeline.applied_seq, self.max_batch)
        if not batches:
            return 0
        self._adopt_aliases(self.pipeline, every=self.checkpoint_seconds)
        items = [item for _, group in batches for item in group]
        batch = run_stage(self.pipeline, self._merges, items)  # shared with the Kafka worker
        self._dead_letters(batch.dead_letters)
        last_seq = batches[-1][0]
        # the incident snapshots are stored with the batch, in its transaction
        self._submit(batch.events, last_seq, batch.merges, batch.catalog, batch.incidents)
        self.pipeline.applied_seq = last_seq
        return len(items)

    def _submit(self, events: list[dict], last_seq: int, merges: dict | None,
                catalog: list | None, incidents: list[dict]) -> None:
        if self._writer is not None and self._writer.is_alive():
            self._pending.put((events, last_seq, merges, catalog, incidents))
        else:
            self._write(events, last_seq, merges, catalog, incidents)

    def tick(self, now: float | None = None) -> int:
        """Resolve incidents that went quiet (``streams.incidents``), when nothing waits in
        the spool: a line accepted before ``now`` is then processed already. Returns how many
        snapshots changed (stored through the writer, in order with the batches)."""
        if self.store.spool_read(self.pipeline.applied_seq, 1):
            return 0
        changed = self.pipeline.incidents.tick(time.time() if now is None else now)
        if changed:
            self._submit([], self.pipeline.applied_seq, None, None, changed)
        return len(changed)

    def _dead_letters(self, dead_letters: list[dict]) -> None:
        """Items the pipeline could not process (isolated by ``streams.stage``): counted."""
        for dead in dead_letters:
            self.errors += 1
            self.last_error = dead["error"]
            metrics.DEAD_LETTERED.labels("pipeline").inc()

    def _write(self, events: list[dict], last_seq: int, merges: dict | None = None,
               catalog: list | None = None, incidents: list[dict] | None = None) -> None:
        with metrics.SINK_SECONDS.labels("sqlite").time():
            new = self.store.write(events, window_seconds=self.config.window_seconds,
                                   applied_seq=last_seq, catalog=catalog, incidents=incidents)
        if merges and not self._merge(merges):  # after the batch: it may carry merged ids
            self._merges.retry()
        self.processed += new
        if new:
            self.last_event_at = time.time()
            stored = count_stored(events)  # shared with the Kafka worker
            log.info("stored %d events", new, extra={"correlation_id": correlation_ids(events)})
            for cb in self._listeners:
                try:
                    cb(stored)
                except Exception:  # noqa: BLE001 - a listener must never stop the pipeline
                    log.exception("event listener failed")

    def _write_loop(self) -> None:
        while True:
            job = self._pending.get()
            try:
                if job is None:
                    return
                delay = 0.5
                while True:  # already processed: must be stored, never dropped
                    try:
                        self._write(*job)
                        self._failing.pop("store", None)
                        break
                    except Exception as exc:  # noqa: BLE001
                        metrics.SINK_FAILURES.labels("sqlite").inc()
                        self.errors += 1
                        self.last_error = f"store: {type(exc).__name__}: {exc}"
                        self._failing.setdefault("store", time.time())
                        if self._stop.is_set() and self._abandon.is_set():
                            return  # stop() gave up waiting; the batch stays in the spool
                        log.exception("store write failed; retrying in %.1fs", delay)
                        time.sleep(delay)
                        delay = min(delay * 2, 10.0)
            finally:
                self._pending.task_done()

    def drain(self, timeout: float = 30.0) -> None:
        """Process until the spool is empty (used by tests and the benchmark)."""
        deadline = time.monotonic() + timeout
        while self.store.spool_read(self.pipeline.applied_seq, 1) or self._pending.unfinished_tasks:
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
        seq = self.pipeline.applied_seq
        now = (seq, self.pipeline.lines)
        if now == self._saved:  # nothing processed since the last one: nothing to write
            self._last_ckpt = time.monotonic()
            return
        start = time.monotonic()
        self.store.sync()  # what the checkpoint covers must outlive a power cut before the trim
        save_checkpoint(self.pipeline, self.checkpoint_path)
        self.store.spool_trim(seq)
        self._saved = now
        self.checkpoints += 1
        self._last_ckpt = time.monotonic()
        self._ckpt_cost = self._last_ckpt - start

    def status(self) -> dict:
        backlog = self.store.spool_backlog()
        metrics.BACKLOG.set(backlog)
        return {
            "running": self.alive and self._writer is not None and self._writer.is_alive(),
            "failing_since": min(self._failing.values(), default=None),
            "processed": self.processed,
            "backlog": backlog,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_event_at": self.last_event_at,
            **self.pipeline.status(),
            "counts": COUNTS_EXPLAINED,
        }


# why /healthz shows two different numbers (they answer different questions)
COUNTS_EXPLAINED = (
    "processed: new events this server stored since it started (ids already stored are "
    "skipped, not counted); lines: every line the model has learned from over its whole "
    "life, restored from the checkpoint across restarts (re-runs after a crash included)")
