"""The step after the pure pipeline that both runtimes share.

:func:`run_stage` is what both runtimes do with a batch of items, up to the write: the
pipeline under the poison policy (below), its counters, and what the batch hands the store
beside its events (template merges, catalog changes, incident snapshots, taken from the
pipeline). :func:`count_stored` is what both do once the store took a batch (the events it
newly stored, counted). :class:`Sink` is the write that follows, the same for both: the
batch handed to the store's ``write_batch`` (its events and catalog records, then its incident
snapshots), retried under one :class:`RetryPolicy` until the store takes it, then the template
merges, with one :class:`SinkState` that ``/healthz`` and ``smartlogs status`` read. The
runtimes only call it from a thread of theirs (the embedded runner's writer thread; the Kafka
worker's executor, so its event loop is never blocked) and say where dead letters go (a counter
and the status in embedded mode, also the dead-letter topic in Kafka mode).

The poison policy:

A batch that makes ``Pipeline.process`` raise must not stop everything behind it, and must not
take its good lines down with it: the batch is processed again item by item, and an item that
still fails is *isolated*: stored as a raw, flagged record (``format="unprocessable"``, the
error in ``fields.processing_error``; never dropped) and reported as a dead letter, alone. The
embedded runner and the Kafka worker both call :func:`process_isolating`; they differ only in
where a dead letter goes (a counter and the status in embedded mode, also the dead-letter topic
in Kafka mode).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Batch", "RetryPolicy", "Sink", "SinkState", "StageResult", "Stored", "count_stored",
           "process_isolating", "run_stage", "unprocessable_event"]

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    events: list[dict]  # one per input item, the isolated ones as flagged raw records
    dead_letters: list[dict] = field(default_factory=list)  # {"error", "item"} per isolated item


def process_isolating(pipeline, items: list[dict]) -> StageResult:
    """``pipeline.process(items)``, isolating the items that make it raise (see the module)."""
    try:
        return StageResult(pipeline.process(items))
    except Exception:  # noqa: BLE001
        log.exception("a batch of %d items failed; processing it item by item", len(items))
    result = StageResult([])
    for item in items:
        try:
            result.events.extend(pipeline.process([item]))
        except Exception as exc:  # noqa: BLE001
            result.events.append(unprocessable_event(item, exc))
            result.dead_letters.append({"error": f"pipeline failed: {type(exc).__name__}: {exc}",
                                        "item": item})
    return result


@dataclass
class Batch:
    """A processed batch, ready for the store: its events (one per item), the dead letters
    (isolated items), and what the store applies with it: template ids merged away since the
    last batch (``merges``, None when none), catalog changes, changed incident snapshots, and
    in embedded mode the spool cursors it covers (``cursors``: partition → spool seq, stored in
    the batch's transaction; None in Kafka mode, where offsets are the transport's)."""

    events: list[dict]
    dead_letters: list[dict]
    merges: dict | None
    catalog: list
    incidents: list[dict]
    cursors: dict[int, int] | None = None
    correlation: str = ""  # embedded mode: the accepted requests' ids, for the "stored" log line

    @classmethod
    def join(cls, batches: list[Batch]) -> Batch:
        """Consecutive batches as one write (one bulk request instead of one per batch: the
        store's cost per request, bench/RESULTS.md, issue 18), in their order: the events,
        dead letters, catalog records and incident snapshots one after the other; the merges
        of the later batch win for an id (each batch carries its miner's whole mapping); the
        highest cursor per partition."""
        if len(batches) == 1:
            return batches[0]
        merges: dict = {}
        cursors: dict[int, int] | None = None
        for b in batches:
            if b.merges:
                merges.update(b.merges)
            if b.cursors is not None:
                cursors = dict(cursors or {})
                for p, seq in b.cursors.items():
                    cursors[p] = max(seq, cursors.get(p, seq))
        return cls([e for b in batches for e in b.events],
                   [d for b in batches for d in b.dead_letters], merges or None,
                   [c for b in batches for c in b.catalog],
                   [i for b in batches for i in b.incidents], cursors)


def run_stage(pipeline, notices, items: list[dict]) -> Batch:
    """``items`` through ``pipeline`` (isolating poison items), counted, with what the store
    applies beside the events. ``notices``: the runtime's ``streams.templates.MergeNotices``
    for this pipeline (which merges the store was told of already)."""
    from smartlogs import metrics

    result = process_isolating(pipeline, items)
    metrics.EVENTS_PROCESSED.labels("pipeline").inc(len(result.events))
    metrics.MODEL_WARMED_UP.set(1 if pipeline.scorer.warmed_up else 0)
    return Batch(result.events, result.dead_letters, notices.news(pipeline.miner),
                 pipeline.take_catalog(), pipeline.take_incidents())


def count_stored(events: list[dict]) -> list[dict]:
    """After the store took a batch: the events it newly stored (those it gave a ``seq``; a
    re-delivered event keeps none), counted; returns them."""
    from smartlogs import metrics

    stored = [e for e in events if "seq" in e]
    if stored:
        metrics.EVENTS_PROCESSED.labels("sink").inc(len(stored))
        metrics.ANOMALIES.inc(sum(1 for e in stored if e["anomaly"]))
        metrics.LAST_EVENT.labels("sink").set(time.time())
    return stored


def unprocessable_event(item: dict, exc: Exception) -> dict:
    """A stored record for an item the pipeline could not process: its text, flagged."""
    from streams.pipeline import _iso

    text = str(item.get("raw") if item.get("raw") is not None else item.get("message", ""))
    ts = item.get("received") or time.time()
    return {
        "id": str(item.get("id")), "ts": ts, "timestamp": _iso(ts), "received": ts,
        "source": item.get("source", "http"), "host": None, "component": None, "pid": None,
        "level": None, "message": text, "raw": text, "template_id": "T0", "template": "(unprocessable)",
        "params": [], "score": 0.0, "anomaly": False, "reason": None, "warming_up": False,
        "incident_id": None,
        "parse_ok": False, "format": "unprocessable", "truncated": False,
        "fields": {"processing_error": f"{type(exc).__name__}: {exc}"[:500]},
    }


# -- the write: one order, one retry policy, one sink state ------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """How long a batch the store did not take waits before the next attempt: ``first``
    seconds, doubling up to ``cap`` (``SMARTLOGS_SINK_RETRY_FIRST_SECONDS`` and
    ``SMARTLOGS_SINK_RETRY_CAP_SECONDS``). Attempts never stop while the runtime runs: an
    accepted batch is stored or stays where it came from (spool, Kafka), never dropped.

    >>> list(zip(range(6), RetryPolicy(first=0.5, cap=3.0).delays()))
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (4, 3.0), (5, 3.0)]
    """

    first: float = 0.5
    cap: float = 10.0

    @classmethod
    def from_settings(cls, settings) -> RetryPolicy:
        return cls(first=settings.sink_retry_first_seconds, cap=settings.sink_retry_cap_seconds)

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield min(delay, self.cap)
            delay = min(delay * 2, self.cap)


@dataclass
class SinkState:
    """What the last writes did, for health: failing since when (None: the last write went
    through), the current error, the last one ever and how many attempts failed."""

    failing_since: float | None = None
    error: str | None = None
    last_error: str | None = None
    failures: int = 0

    @property
    def ok(self) -> bool:
        return self.failing_since is None

    def describe(self) -> dict:
        """For ``/healthz`` and ``smartlogs status``."""
        if self.ok:
            return {"ok": True, "failures": self.failures}
        return {"ok": False, "failing_since": self.failing_since, "error": self.error,
                "failures": self.failures}


@dataclass
class Stored:
    """What a write did: the events the store newly stored (``count_stored``), and whether the
    batch's template merges were applied (False: the runtime asks again with the next batch)."""

    events: list[dict]
    merged: bool = True


class Sink:
    """The write of a processed :class:`Batch`, shared by both runtimes (see the module).

    ``store`` implements ``write_batch(batch, *, window_seconds) -> int`` (events and catalog
    records, then incident snapshots; idempotent: ids already stored are ignored, SQLite with
    the cursors in the same transaction, Elasticsearch with ``op_type=create`` by id) and
    ``merge_templates``. ``name`` labels the metrics (``sqlite``, ``elasticsearch``);
    ``transient``: exception types that mean the store is away or busy (logged as a warning;
    anything else needs a person and is logged as an error, but the batch is held all the
    same: fixing the cause and restarting loses nothing). Blocking: call it from a thread of
    the runtime's, never from an event loop.
    """

    def __init__(self, store, *, name: str, window_seconds: int,
                 policy: RetryPolicy | None = None, transient: tuple[type, ...] = ()):
        self.store = store
        self.name = name
        self.window_seconds = window_seconds
        self.policy = policy or RetryPolicy()
        self.transient = transient
        self.state = SinkState()

    def write(self, batch: Batch) -> Stored:
        """One attempt: the batch to the store (raises what the store raised, counted in the
        state), then its merges (after the batch: its events may carry the ids merged away; a
        failed merge does not hold the stream, the events are stored, only their grouping by
        the old id is stale)."""
        from smartlogs import metrics

        try:
            with metrics.SINK_SECONDS.labels(self.name).time():
                self.store.write_batch(batch, window_seconds=self.window_seconds)
        except Exception as exc:
            metrics.SINK_FAILURES.labels(self.name).inc()
            self._failed(exc)
            raise
        self.state.failing_since = self.state.error = None
        merged = self.merge(batch.merges) if batch.merges else True
        return Stored(count_stored(batch.events), merged)

    def write_until_taken(self, batch: Batch, *,
                          stopping: threading.Event | None = None) -> Stored | None:
        """:meth:`write`, again after each failure (``policy``'s delays) until the store takes
        the batch: the runtime must not move past a batch the store has not taken. None when
        ``stopping`` is set while the batch is still not taken (the runtime gave up waiting: the
        batch stays in the spool or in Kafka, and is processed again after a restart)."""
        delays = self.policy.delays()
        while True:
            try:
                return self.write(batch)
            except Exception as exc:  # noqa: BLE001 - whatever it is, never drop a batch
                delay = next(delays)
                if stopping is not None and stopping.is_set():
                    log.error("%s; stopping: this batch of %d is not stored (it is kept "
                              "upstream)", self.state.error, len(batch.events))
                    return None
                transient = isinstance(exc, self.transient)
                (log.warning if transient else log.error)(
                    "%s write failed (%s); holding this batch of %d events and retrying in "
                    "%.1f s", self.name, self.state.error, len(batch.events), delay,
                    exc_info=not transient)
                if stopping is None:
                    time.sleep(delay)
                elif stopping.wait(delay):
                    log.error("stopping: this batch of %d is not stored (it is kept upstream)",
                              len(batch.events))
                    return None

    def _failed(self, exc: Exception) -> None:
        from smartlogs.security import redact

        state = self.state
        state.failures += 1
        state.error = state.last_error = redact(f"{type(exc).__name__}: {exc}")[:300]
        if state.failing_since is None:
            state.failing_since = time.time()

    def merge(self, merges: dict) -> bool:
        """Have the store rewrite the ids merged away (old id → the id that took it over);
        False when that failed (logged: the runtime asks again with the next batch)."""
        try:
            n = self.store.merge_templates(merges)
        except Exception as exc:  # noqa: BLE001
            from smartlogs.security import redact

            log.error("template merge failed (%s); asked again with the next batch",
                      redact(f"{type(exc).__name__}: {exc}")[:300])
            return False
        log.info("template merge: %d stored events now carry the surviving id", n)
        return True
