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
_EVENT_DIMS = DIMENSIONS
_ARRIVAL_DIMS = tuple("a:" + d for d in DIMENSIONS)


def window_start(ts: float, size: int) -> float:
    return float(int(ts // size) * size)


def count_windows(events: Iterable[dict], size: int, *, arrival: bool = False) -> Counter:
    """(window_start, dimension, key) → count for a batch of processed events; with
    ``arrival``, also the same counts by arrival time (``received``), as the dimensions
    prefixed ``a:``. A missing or empty host, component or level counts as ``-``.

    A batch at a time: the events are first grouped by what the counts depend on (their
    window, host, component, level, template, flag, arrival), so each count is added once per
    group, not once per event and dimension (a batch of log lines holds far fewer groups than
    lines)."""
    starts: dict = {}  # event time → its window start (many lines share a second)
    groups: dict = {}
    get = groups.get
    for e in events:
        ts = e["ts"]
        w = starts.get(ts)
        if w is None:
            w = starts[ts] = window_start(ts, size)
        key = (w, e["received"] if arrival else None, e.get("host") or "-",
               e.get("component") or "-", e.get("level") or "-", e["template_id"],
               bool(e.get("anomaly")))
        groups[key] = get(key, 0) + 1
    # plain dict updates (``get``): a Counter's ``+=`` on a new key calls its Python-level
    # ``__missing__``, and most keys of a batch are new to it
    counts: Counter = Counter()
    add = counts.get
    arrived: dict = {}
    for (w, received, host, component, level, template, anomaly), n in groups.items():
        at = [(w, _EVENT_DIMS)]  # event-time windows; arrival-time ones as dims prefixed "a:"
        if arrival:
            a = arrived.get(received)
            if a is None:
                a = arrived[received] = window_start(received, size)
            at.append((a, _ARRIVAL_DIMS))
        for start, (d_total, d_host, d_component, d_level, d_template, d_anomaly) in at:
            for k in ((start, d_total, "*"), (start, d_host, host),
                      (start, d_component, component), (start, d_level, level),
                      (start, d_template, template)):
                counts[k] = add(k, 0) + n
            if anomaly:
                k = (start, d_anomaly, "*")
                counts[k] = add(k, 0) + n
    return counts
