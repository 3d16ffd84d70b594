"""Run a probe of the Kafka worker module in a fresh interpreter (importing
``streams.runtime.worker`` builds a Faust app, which must not leak into the test process) and
return the dict it printed as its last ``RESULT {json}`` line.

A probe is Python source: its own part, between ``FAKES`` (the imports and the fakes the
worker's alert-facts probes share: a store idempotent by id, a state topic partition that
records what committed) where it needs them, and ``FINISH`` (runs its ``main()``, prints the
dict it returns)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_probe(probe: str, data_dir: Path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "SMARTLOGS_DATA_DIR": str(data_dir)}
    env.pop("SMARTLOGS_ALERT_RULES", None)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


FAKES = r"""
import asyncio, json, os, sys, zlib
from pathlib import Path
import orjson
import streams.runtime.worker as w
from streams.alerts import AlertEngine, AlertRule, assign_rules, scopes_held
from streams.pipeline import Pipeline
from streams.runtime import alert_facts
from streams.runtime.alerting import Alerting, AlertHistory
from streams.runtime.stage import Sink
from streams.runtime.state_records import Book, decode_state

class Store:  # idempotent by id, as Elasticsearch is; newly stored events get a seq
    ids = set()
    def write_batch(self, batch, *, window_seconds):
        n = 0
        for e in batch.events:
            if e["id"] not in self.ids:
                self.ids.add(e["id"]); e["seq"] = len(self.ids); n += 1
        return n
    def merge_templates(self, merges):
        return 0

class Topic:  # a partition of the state topic, and the facts topic: what committed
    def __init__(self):
        self.state, self.facts, self.fail = {}, [], False
    def writer(self):
        topic = self
        class Writer:
            async def write(self, records, *, facts=(), facts_topic=None):
                if topic.fail:
                    raise OSError("the transaction was refused")
                topic.state.update(records)
                topic.facts += [orjson.loads(f) for f in facts]
            def fenced(self):  # refused, not fenced: the same writer tries again
                return False
        return Writer()

def take_part(topic, p=1):  # a new owner of partition p: its state and facts mark read back
    restored = decode_state(topic.state, w._config)
    pipeline, offset, book = restored if restored else (Pipeline(w._config), None, Book())
    return w.Part(p, pipeline, offset, book, topic.writer(), alert_facts.decode_mark(topic.state))

async def store_batch(part, offset, raw):  # the batch at offset (its items' JSON), stored
    got, b = w._decode_and_process(raw, part)
    part.applied = offset + 1
    part.unstored += 1
    await w._store_batch(asyncio.get_running_loop(), None, None, part, got, b, offset)
"""

FINISH = r"""
out = asyncio.run(main())
sys.stdout.write("RESULT " + json.dumps(out) + "\n")
sys.stdout.flush()
os._exit(0)  # Faust's app holds threads; nothing to clean up
"""
