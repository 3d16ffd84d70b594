"""Tumbling event-time windows: pure arithmetic and per-batch aggregation.

Windows are keyed by the log's own timestamp (event time), so a replay of a 2005 log
lands in 2005 windows. Counts are aggregated in memory per batch and written once per
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

__all__ = ["DIMENSIONS", "count_windows", "fold_window_counts", "summarize_windows", "window_start"]

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


def fold_window_counts(table, counts: dict, scope: str = "") -> None:
    """Add ``count_windows`` output to ``table`` (a mapping: ``scope`` + window start →
    ``{"dimension|key": count}``, missing windows read as ``{}``), with ONE assignment per
    window start. The Kafka worker's table is such a mapping: each assignment is one changelog
    record, and a dict value must be replaced, not mutated, for the change to be recorded.
    The worker scopes keys by source partition (``"3|"``) so that every key has exactly one
    writer, the owner of that partition, and one changelog partition; totals sum over scopes."""
    by_window: dict[str, dict[str, int]] = {}
    for (start, dim, key), n in counts.items():
        cell = by_window.setdefault(f"{scope}{int(start)}", {})
        cell[f"{dim}|{key}"] = cell.get(f"{dim}|{key}", 0) + n
    for start, add in by_window.items():
        merged = dict(table[start])
        for k, n in add.items():
            merged[k] = merged.get(k, 0) + n
        table[start] = merged


def summarize_windows(windows: Iterable[dict]) -> tuple[int, int]:
    """(number of (window, dimension, key) counters, events counted) over such window values."""
    keys = total = 0
    for counts in windows:
        keys += len(counts)
        total += sum(n for k, n in counts.items() if k.startswith("total|"))
    return keys, total
