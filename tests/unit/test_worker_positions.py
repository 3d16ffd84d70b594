"""Kafka mode, exact state across a kill -9 (streams/worker.py): the checkpoint holds each
partition's next offset and only batches whose events are stored; a restarted worker expects
each partition's first message where its checkpointed state stops. The worker module builds a
Faust app at import, so this runs in a subprocess; no engine is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = r"""
import inspect, json, os, sys
from collections import namedtuple
from types import SimpleNamespace as NS
import streams.worker as w
TP = namedtuple("TP", "topic partition")

tick = inspect.unwrap(w.checkpoint)

def run():
    try:
        tick().send(None)
    except StopIteration:
        pass

out = {}
items, events, dead = w._decode_and_process(
    b'[{"id": "a", "received": 1.7e9, "raw": "hello world", "source": "t"}]')
tp = TP("raw", 3)
w._applied(tp, 41)
run()  # the batch is processed, not stored yet: no checkpoint, one is due
out["while_unwritten"] = [os.path.exists(w._ckpt), w._checkpoint_due]
w._unwritten -= 1  # what _write_until_taken does once Elasticsearch took the events
run()
out["after_write"] = [os.path.exists(w._ckpt), w._checkpoint_due]
from streams.checkpoints import load_checkpoint
out["positions"] = load_checkpoint(w._ckpt, w._config).positions

def first(offset, committed):
    w._expected.clear()
    ev = NS(message=NS(tp=tp, offset=offset, generation_id=1))
    return w._continuity(ev, committed)

out["behind_commit"] = first(50, 50)      # state stops at 42, commit at 50: catch 42..49 up
out["ahead_of_commit"] = first(40, 40)    # 40, 41 are in the state already: repeats
out["at_commit"] = first(42, 42)
w.pipeline.positions[f"{tp.topic}:{tp.partition}"] = 42
out["far_behind"] = first(50_000, 50_000)  # another worker's partition meanwhile: from the commit
sys.stdout.write("RESULT " + json.dumps(out) + "\n")
sys.stdout.flush()
os._exit(0)
"""


def test_checkpoints_cover_stored_batches_and_restarts_start_where_the_state_stops(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "SMARTLOGS_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["while_unwritten"] == [False, True]
    assert out["after_write"] == [True, False]
    assert out["positions"] == {"raw:3": 42}
    assert out["behind_commit"] == [42, 50]
    assert out["ahead_of_commit"] == [40, 40]  # (x, x): delivered again, acked, not processed
    assert out["at_commit"] is None
    assert out["far_behind"] is None
