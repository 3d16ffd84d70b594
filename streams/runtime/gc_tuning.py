"""Garbage-collector settings for the processes that run pipelines (shards, the embedded server).

CPython's cyclic collector runs a pass over its youngest generation every 700 container
objects allocated and not yet freed. Processing a batch allocates a few dozen containers per
line (items, parsed fields, features, events) that stay alive until the batch is stored, so
with the default every batch of a few thousand lines set off hundreds of passes, each scanning
and promoting what it found alive, and the promoted objects made the older generations'
passes longer: 10-13 µs of CPU per line, a fifth of a shard's work (bench/RESULTS.md, issue
18). What the pipeline drops is freed by reference counting; the collector is only needed for
reference cycles, which are rare here.

:func:`tune_gc` therefore (1) moves everything alive after start-up (modules, settings, the
models restored from checkpoints) out of the collector's view (``gc.freeze``: never scanned
again), and (2) runs the youngest pass every ``GEN0`` allocations instead of 700. Cycles are
still collected, later: at most ``GEN0`` objects wait for a pass (a few MB).
"""

from __future__ import annotations

import gc

__all__ = ["GEN0", "GEN1", "GEN2", "tune_gc"]

GEN0 = 50_000  # container allocations between two passes over the youngest generation
GEN1 = 20      # youngest passes between two passes over the middle generation
GEN2 = 100     # middle passes between two full passes (CPython also waits for 25% growth)


def tune_gc() -> tuple[int, int, int]:
    """Freeze what is alive now and raise the collection thresholds; returns the old ones.
    Call it once a process has loaded what it keeps (after restoring its models)."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0, GEN1, GEN2)
    return old
