"""The Kafka worker's saves of per-partition state (streams/runtime/worker.py): the checkpoint timer
saves only the partitions that processed records since their last save (it rewrote the whole
model every few seconds, idle or not), never a partition with a batch not yet stored (a save
covers stored batches only: a restored state never skips a batch Elasticsearch lacks), and
writes no local file. The worker module builds a Faust app at import, so this runs in a
subprocess; the timer's own function is called (inspect.unwrap) with a recording writer in
place of the state topic (tests/integration/test_worker_partitions.py covers the real one)."""

from __future__ import annotations

from tests.unit.worker_probe import run_probe

_PROBE = r"""
import asyncio, inspect, json, os, sys
import streams.runtime.worker as w
from streams.pipeline import Pipeline
from streams.runtime.state_records import Book, decode_state

class Writer:
    def __init__(self):
        self.saves = []
    async def write(self, records, **facts):
        self.saves.append(records)

tick = inspect.unwrap(w.checkpoint)  # the function under Faust's timer
a, b = w.Part(0, Pipeline(w._config), None, Book(), Writer()), w.Part(1, Pipeline(w._config), None, Book(), Writer())
w.parts.update({0: a, 1: b})
out = {}
asyncio.run(tick())
out["idle_fresh"] = [len(a.writer.saves), len(b.writer.saves)]
for part in (a, b):
    part.pipeline.process([{"id": "a", "received": 1.7e9, "raw": "hello world", "source": "t"}])
    part.applied = 5
b.unstored = 1  # b has a batch in flight
asyncio.run(tick())
out["after_lines"] = [len(a.writer.saves), len(b.writer.saves), w._save_due]
asyncio.run(tick())
out["a_idle_again"] = len(a.writer.saves)
b.unstored = 0
asyncio.run(tick())
out["b_after_its_write"] = len(b.writer.saves)
state = decode_state(dict(b.writer.saves[-1]), w._config)
out["b_state"] = [state[1], state[0].lines]
out["files"] = sorted(os.listdir(os.environ["SMARTLOGS_DATA_DIR"]))
out["max_templates"] = a.pipeline.miner.max_templates
out["host_keys"] = a.pipeline.scorer.hosts.max_keys
sys.stdout.write("RESULT " + json.dumps(out) + "\n")
sys.stdout.flush()
os._exit(0)  # Faust's app holds threads; nothing to clean up
"""


def test_the_worker_saves_a_partition_after_new_lines_and_stored_batches_only(tmp_path):
    out = run_probe(_PROBE, tmp_path)
    assert out["idle_fresh"] == [0, 0]  # nothing processed: nothing written
    assert out["after_lines"] == [1, 0, True]  # b waits for its write (the agent is told)
    assert out["a_idle_again"] == 1  # written once, not rewritten while idle
    assert out["b_after_its_write"] == 1
    assert out["b_state"] == [5, 1]  # the offset the state reflects, and the model
    assert "worker.ckpt" not in out["files"]  # the state is in Kafka, not in a local file
    assert out["max_templates"] > 0 and out["host_keys"] is not None
