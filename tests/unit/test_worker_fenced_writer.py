"""A partition whose state writer was fenced (streams/runtime/worker.py; issue 20, the alert
stall after the facts-in-transaction change): a worker frozen past the session timeout (a
loaded box, a GC pause, SIGSTOP) is put out of the consumer group; the other worker takes its
partitions, initialises their transactional ids (fencing its producers) and saves newer
states. When the frozen worker comes back and the group hands it a partition it held before,
the old code kept that partition's state in memory with its fenced writer: every later
transaction of it failed (``ProducerFenced``, then "Invalid state transition FATAL_ERROR ->
IN_TRANSACTION"), so that partition's alert facts never reached the judge and its state was
never saved again, until a restart (observed on the real engines: bench/RELIABILITY.md).

Now the worker reads such a partition back from the state topic: at once when it sees it
missed a generation of the group, and at the partition's next message when a transaction
found its writer fenced. The worker module builds a Faust app at import, so this runs in a
subprocess with fake writers (no Kafka)."""

from __future__ import annotations

from tests.unit.worker_probe import FINISH, run_probe

_PROBE = r"""
import asyncio, json, os, sys
from types import SimpleNamespace
from faust.types import TP
import streams.runtime.worker as w
from streams.pipeline import Pipeline
from streams.runtime.state_records import Book

TOPIC = w.settings.kafka_topic

class Writer:
    def __init__(self, fenced=False):
        self.is_fenced, self.stopped, self.writes = fenced, False, 0
    async def write(self, records, *, facts=(), facts_topic=None):
        if self.is_fenced:
            raise RuntimeError("ProducerFenced: there is a newer producer using the same "
                               "transactional_id")
        self.writes += 1
    def fenced(self):
        return self.is_fenced or self.stopped
    async def stop(self):
        self.stopped = True

def part(p, writer):
    return w.Part(p, Pipeline(w._config), 7, Book(), writer)

class Consumer:
    def assignment(self):
        return {TP(TOPIC, 1), TP(TOPIC, 2)}

async def main():
    out = {}
    w.app.consumer = Consumer()
    assigned = {TP(TOPIC, 1), TP(TOPIC, 2)}
    retakes = []  # what the alert engine is told after each assignment
    alerting, w._alerting = w._alerting, SimpleNamespace(
        assigned=lambda retake=False: retakes.append(retake))
    # generation 2: this worker holds partitions 1 and 2
    one, two = part(1, Writer()), part(2, Writer())
    w.parts.update({1: one, 2: two})
    w.app.consumer_generation_id = 2
    await w._on_assigned(None, assigned)
    out["kept_in_order"] = [w.parts.get(1) is one, w.parts.get(2) is two]
    w.app.consumer_generation_id = 3  # the next rebalance, with this worker in it
    await w._on_assigned(None, assigned)
    out["kept_next"] = [w.parts.get(1) is one, w.parts.get(2) is two]
    # frozen past the session timeout: generation 4 went on without it; 5 gives it the same
    # partitions back, after another worker held them
    w.app.consumer_generation_id = 5
    await w._on_assigned(None, assigned)
    out["kept_after_missed"] = [w.parts.get(1) is one, w.parts.get(2) is two]
    out["writers_stopped"] = [one.writer.stopped, two.writer.stopped]
    out["alert_parts_read_back"] = retakes
    w._alerting = alerting

    # a transaction that finds the writer fenced: the partition is taken up again at its
    # next message (here without a missed generation, e.g. the fencing came first)
    three = part(1, Writer(fenced=True))
    w.parts.clear()
    w.parts[1] = three
    three.outbox.add(8, b"{}")
    w._facts_topic_ready.set()  # the facts topic "exists": no Kafka admin call from a unit test
    try:
        await w._commit(three)
        out["commit"] = "committed"
    except Exception as exc:
        out["commit"] = type(exc).__name__
    taken = []
    async def take(tp):
        taken.append(tp.partition)
        return part(tp.partition, Writer())
    w._take_partition = take
    event = SimpleNamespace(message=SimpleNamespace(tp=TP(TOPIC, 1), offset=8, generation_id=5))
    got = await w._part_of(event)
    out["retaken"] = [got is not three, taken, three.writer.stopped, w.parts.get(1) is got]
    again = await w._part_of(event)
    out["then_kept"] = [again is got, taken]
    return out
""" + FINISH


def test_a_partition_kept_after_the_worker_missed_a_rebalance_or_found_fenced_is_read_back(tmp_path):
    out = run_probe(_PROBE, tmp_path)
    assert out["kept_in_order"] == [True, True]  # a first assignment keeps what it has
    assert out["kept_next"] == [True, True]  # consecutive generations: nobody else held them
    assert out["kept_after_missed"] == [False, False]  # read back from the state topic
    assert out["writers_stopped"] == [True, True]
    # and the alert engine's parts too, only after the missed generation
    assert out["alert_parts_read_back"] == [False, False, True]
    assert out["commit"] == "RuntimeError"  # the failure is still the caller's to log
    assert out["retaken"] == [True, [1], True, True]
    assert out["then_kept"] == [True, [1]]  # once


def test_the_missed_generation_doctest(tmp_path):
    code = ("import doctest, json, os, sys, streams.runtime.worker as w\n"
            "runner = doctest.DocTestRunner()\n"
            "for t in doctest.DocTestFinder().find(w._missed_generation, globs=vars(w)):\n"
            "    runner.run(t)\n"
            "r = runner.summarize(verbose=False)\n"
            "print('RESULT ' + json.dumps([r.attempted, r.failed])); sys.stdout.flush()\n"
            "os._exit(0)\n")
    assert run_probe(code, tmp_path) == [1, 0]
