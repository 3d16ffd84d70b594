"""Issue 22, item 5, in Kafka mode: the worker's checkpoint timer writes only when lines were
processed since the last checkpoint (it rewrote the whole model every few seconds, idle or
not). The worker module builds a Faust app at import, so this runs in a subprocess; the
timer's own function is called (inspect.unwrap), no engine is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = r"""
import inspect, json, os, sys
import streams.worker as w

tick = inspect.unwrap(w.checkpoint)  # the function under Faust's timer

def run():
    try:
        tick().send(None)
    except StopIteration:
        pass

def written():
    st = os.stat(w._ckpt)
    return [st.st_ino, st.st_mtime_ns]

out = {}
run()
out["idle_fresh"] = os.path.exists(w._ckpt)
w.pipeline.process([{"id": "a", "received": 1.7e9, "raw": "hello world", "source": "t"}])
run()
out["after_lines"] = written()
run()
out["idle_again"] = written()
# the same bounded core as the embedded mode
out["max_templates"] = w.pipeline.miner.max_templates
out["host_keys"] = w.pipeline.scorer.hosts.max_keys
sys.stdout.write("RESULT " + json.dumps(out) + "\n")
sys.stdout.flush()
os._exit(0)  # Faust's app holds threads; nothing to clean up
"""


def test_the_worker_checkpoints_only_after_new_lines(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "SMARTLOGS_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["idle_fresh"] is False  # nothing processed: nothing written
    assert out["idle_again"] == out["after_lines"]  # written once, not rewritten while idle
    assert out["max_templates"] > 0 and out["host_keys"] is not None
