"""The pipeline processes' garbage-collector settings (streams/runtime/gc_tuning.py)."""

from __future__ import annotations

import gc
import time

from streams.pipeline import Pipeline, PipelineConfig
from streams.runtime.gc_tuning import GEN0, GEN1, GEN2, tune_gc


def _passes_while_processing(lines: int) -> int:
    pipe = Pipeline(PipelineConfig())
    items = [{"id": f"b:{i}", "raw": f"Jun 14 15:16:{i % 60:02d} combo sshd[{i}]: session opened "
              f"for user u{i % 7} by (uid={i % 3})", "received": time.time(), "source": "http"}
             for i in range(lines)]
    passes = []

    def count(phase, info):
        if phase == "start":
            passes.append(info["generation"])

    gc.callbacks.append(count)
    try:
        for k in range(0, lines, 1000):
            pipe.process(items[k:k + 1000])
    finally:
        gc.callbacks.remove(count)
    return len(passes)


def test_after_tuning_a_batch_sets_off_a_handful_of_collector_passes_not_hundreds():
    old = gc.get_threshold()
    try:
        default = _passes_while_processing(5000)
        frozen = gc.get_freeze_count()
        assert tune_gc() == old
        assert gc.get_threshold() == (GEN0, GEN1, GEN2)
        assert gc.get_freeze_count() > frozen  # what start-up loaded is out of the collector's view
        tuned = _passes_while_processing(5000)
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
    assert default >= 30, default  # the default thresholds: a pass every 700 allocations
    assert tuned <= 3, tuned
