"""The pipeline processes' garbage-collector settings (streams/runtime/gc_tuning.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streams.runtime.gc_tuning import GEN0, GEN1, GEN2

# run in a child process: freezing and re-tuning this test session's collector would change
# when its full collections fall (timed tests elsewhere measure single calls)
_CHILD = r"""
import gc, json, time
from streams.pipeline import Pipeline, PipelineConfig
from streams.runtime.gc_tuning import tune_gc

def passes(lines):
    pipe = Pipeline(PipelineConfig())
    items = [{"id": f"b:{i}", "raw": f"Jun 14 15:16:{i % 60:02d} combo sshd[{i}]: session opened "
              f"for user u{i % 7} by (uid={i % 3})", "received": time.time(), "source": "http"}
             for i in range(lines)]
    seen = []
    cb = lambda phase, info: seen.append(info["generation"]) if phase == "start" else None
    gc.callbacks.append(cb)
    for k in range(0, lines, 1000):
        pipe.process(items[k:k + 1000])
    gc.callbacks.remove(cb)
    return len(seen)

default = passes(5000)
frozen = gc.get_freeze_count()
old = tune_gc()
print(json.dumps({"default": default, "old": old, "threshold": gc.get_threshold(),
                  "frozen": gc.get_freeze_count() - frozen, "tuned": passes(5000)}))
"""


def test_after_tuning_a_batch_sets_off_a_handful_of_collector_passes_not_hundreds():
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _CHILD], cwd=root, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["old"] == [700, 10, 10]  # CPython's defaults before
    assert got["threshold"] == [GEN0, GEN1, GEN2]
    assert got["frozen"] > 0  # what start-up loaded is out of the collector's view
    assert got["default"] >= 30, got  # the defaults: a pass every 700 allocations
    assert got["tuned"] <= 3, got
