"""When a shard's threads wait: state changes with monotonic timestamps (issue 18).

A shard has two busy threads: the runner (reads the spool, runs the pipelines, hands batches
to the writer) and the writer (takes the store's one writer turn, writes). Their counters
(``waited_s`` in ``/healthz``) say how long each waited over a run, not when; a
:class:`Timeline` records every state change of both, so a benchmark can show, per slice of
the run, what each thread of each shard was doing. ``time.monotonic()`` is the system's
monotonic clock (CLOCK_MONOTONIC on Linux), the same in every process, so the shards'
timelines and the benchmark's own timestamps line up.

Cheap enough to stay on (an append to a bounded deque, ~10 per batch of thousands of lines);
the shards write it out only when asked (``SMARTLOGS_SHARD_TIMELINE``, the benchmark's
``--timeline``).
"""

from __future__ import annotations

import time
from collections import deque

__all__ = ["Timeline", "busy_share"]


class Timeline:
    """State changes ``(monotonic seconds, thread, state)``; the newest ``maxlen`` kept."""

    def __init__(self, maxlen: int = 50_000):
        self.marks: deque = deque(maxlen=maxlen)

    def mark(self, thread: str, state: str) -> None:
        self.marks.append((time.monotonic(), thread, state))

    def hook(self, thread: str):
        """``state → mark(thread, state)``: what a store calls around its writer turn."""
        return lambda state: self.mark(thread, state)

    def dump(self) -> list[list]:
        return [list(m) for m in list(self.marks)]


def busy_share(marks: list, start: float, end: float, step: float) -> list[dict]:
    """Per slice of ``step`` seconds from ``start`` to ``end``: for each thread, the seconds
    spent in each state (a state lasts from its mark to the thread's next mark).

    >>> m = [[0.0, "r", "idle"], [0.5, "r", "pipeline"], [0.8, "r", "idle"]]
    >>> [{k: round(v, 2) for k, v in s["r"].items()} for s in busy_share(m, 0.0, 1.0, 0.5)]
    [{'idle': 0.5}, {'pipeline': 0.3, 'idle': 0.2}]
    """
    n = max(1, int(-(-(end - start) // step)))
    out: list[dict] = [{} for _ in range(n)]
    by_thread: dict[str, list] = {}
    for t, thread, state in sorted(marks):
        by_thread.setdefault(thread, []).append((t, state))
    for thread, seq in by_thread.items():
        for (t0, state), (t1, _) in zip(seq, seq[1:] + [(end, None)]):
            a, b = max(t0, start), min(t1, end)
            while a < b:
                k = min(int((a - start) // step), n - 1)
                edge = min(b, start + (k + 1) * step)
                if edge <= a:  # the last slice
                    edge = b
                slot = out[k].setdefault(thread, {})
                slot[state] = slot.get(state, 0.0) + edge - a
                a = edge
    return out
