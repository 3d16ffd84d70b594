"""Tumbling event-time windows: pure arithmetic and per-batch aggregation.

Windows are keyed by the log's own timestamp (event time), so a replay of a 2005 log
lands in 2005 windows. One implementation of window counts serves ``/api/stats``: the store's
(the embedded store counts with :func:`count_windows` in each batch's transaction;
Elasticsearch aggregates the stored events), exact by construction after any crash. Counts are aggregated in memory per batch and written once per
key per batch (one upsert per (window, dimension, key)), never once per line.

>>> window_start(125.0, 60)
120.0
>>> counts = count_windows([{"ts": 61.0, "host": "a", "component": "sshd", "level": "INFO",
...                          "template_id": "T1", "anomaly": True}], 60)
>>> counts[(60.0, "host", "a")], counts[(60.0, "anomaly", "*")], counts[(60.0, "total", "*")]
(1, 1, 1)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

__all__ = ["DIMENSIONS", "count_windows", "window_start"]

DIMENSIONS = ("total", "host", "component", "level", "template", "anomaly")


def window_start(ts: float, size: int) -> float:
    return float(int(ts // size) * size)


def count_windows(events: Iterable[dict], size: int) -> Counter:
    """(window_start, dimension, key) → count for a batch of processed events."""
    counts: Counter = Counter()
    for e in events:
        w = window_start(e["ts"], size)
        counts[(w, "total", "*")] += 1
        counts[(w, "host", e.get("host") or "-")] += 1
        counts[(w, "component", e.get("component") or "-")] += 1
        counts[(w, "level", e.get("level") or "-")] += 1
        counts[(w, "template", e["template_id"])] += 1
        if e.get("anomaly"):
            counts[(w, "anomaly", "*")] += 1
    return counts
