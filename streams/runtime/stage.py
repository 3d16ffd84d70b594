"""The step after the pure pipeline that both runtimes share.

:func:`run_stage` is what both runtimes do with a batch of items, up to the write: the
pipeline under the poison policy (below), its counters, and what the batch hands the store
beside its events (template merges, catalog changes, incident snapshots, taken from the
pipeline). :func:`count_stored` is what both do once the store took a batch (the events it
newly stored, counted). The write itself, its retries and where dead letters go are the
runtime's (SQLite in the runner's writer thread; Elasticsearch and the dead-letter topic in
the Kafka worker).

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
import time
from dataclasses import dataclass, field

__all__ = ["Batch", "StageResult", "count_stored", "process_isolating", "run_stage",
           "unprocessable_event"]

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
    last batch (``merges``, None when none), catalog changes, changed incident snapshots."""

    events: list[dict]
    dead_letters: list[dict]
    merges: dict | None
    catalog: list
    incidents: list[dict]


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
