"""A host alert forwarded to the holder of partition 0 in the Kafka worker (issue 20): a worker
that shares the partitions forwards its partition-local rules' alerts in its partition's
transaction with the facts mark (``streams.runtime.worker._outbox_alerts``, ``_commit``), and
the partition's part of the alert engine's state is not saved before that transaction
committed (``Alerting.delivered``). The crash window this closes: the part saved after
counting a batch, the worker killed before the batch's forwarded alert was sent; the old code
sent it by a plain send and saved ``raw`` past the batch, so the next owner did not judge the
batch again and the alert was never notified.

Runs in a subprocess (the worker module builds a Faust app at import), with the fakes of
tests/unit/worker_probe.py (``FAKES``): a store idempotent by id, a state topic partition that
records what committed; tests/integration/test_alerts_full_stack.py covers the real engines."""

from __future__ import annotations

from tests.unit.worker_probe import FAKES, FINISH, run_probe

_PROBE = FAKES + r"""
RULES = (AlertRule("flood", "error_flood", group_by="host", threshold=3, level="ERROR"),)
DB = Path(os.environ["SMARTLOGS_DATA_DIR"]) / "alerts.db"  # the parts' store, shared
plain = None

def worker(loop):  # a worker holding raw partition 1 of 4, sharing the topic with others
    alerting = Alerting(AlertEngine(RULES, warmup_lines=0), AlertHistory(DB), [])
    alerting.plan = lambda: assign_rules(RULES, {1}, 4)
    alerting.holds = lambda: scopes_held({1}, 4)
    alerting.shares = lambda: True
    # wired as streams.runtime.worker._start_alerting does
    alerting.forward = lambda record: loop.call_soon_threadsafe(w._outbox_alerts, record, plain)
    w._alerting = alerting
    return alerting

def take(topic):
    part = take_part(topic)
    w.parts.clear(); w.parts[1] = part
    return part

def items(offset, level):
    return orjson.dumps([{"id": f"{offset}-{i}", "received": 1.7e9 + offset, "source": "t",
                          "host": "node-7", "raw": f"{level} disk write failed on sector {i}"}
                         for i in range(3)])

async def batch(part, offset, level):
    await store_batch(part, offset, items(offset, level))

def forwarded(topic):
    return [(a["rule"], a["state"], a["id"]) for f in topic.facts for a in f.get("alerts") or ()]

async def main():
    global plain
    out = {}
    loop = asyncio.get_running_loop()
    plain = asyncio.Queue()
    w._facts_topic_ready.set()
    w._sink = Sink(Store(), name="elasticsearch", window_seconds=60)
    topic = Topic()
    # worker A: a quiet batch at 5, its state saved (mark 6); then an error batch at 6 raises
    # the host alert; the part is saved (it counted the batch), and A dies before the
    # transaction carrying the alert
    a_alerting = worker(loop)
    a = take(topic)
    await batch(a, 5, "INFO")
    await w._save_part(a)
    a_alerting.save(clean=True)
    await batch(a, 6, "ERROR")
    await asyncio.sleep(0)  # (the forward callbacks ran: the loop is FIFO)
    out["a_outbox"] = [len(a.outbox.pending), a.outbox.mark, plain.qsize()]
    a_alerting.save(clean=True)
    blob, _ = AlertHistory(DB).take_state("p1")
    out["saved_raw"] = orjson.loads(zlib.decompress(blob)).get("raw")
    out["before_b"] = forwarded(topic)
    # worker B takes partition 1: batch 6 is processed again and judged again
    b_alerting = worker(loop)
    b = take(topic)
    await batch(b, 6, "ERROR")
    await asyncio.sleep(0)
    await w._commit(b)
    out["after_b"] = forwarded(topic)
    out["mark_after_b"] = topic.state[alert_facts.MARK_KEY].decode()
    b_alerting.save(clean=True)
    blob, _ = AlertHistory(DB).take_state("p1")
    out["saved_raw_b"] = orjson.loads(zlib.decompress(blob)).get("raw")
    # worker C takes it after B committed and saved: batch 6 again is not judged again
    worker(loop)
    c = take(topic)
    await batch(c, 6, "ERROR")
    await asyncio.sleep(0)
    await w._commit(c)
    out["after_c"] = forwarded(topic)
    out["plain"] = plain.qsize()
    return out
""" + FINISH


def test_a_forwarded_host_alert_lost_with_its_worker_is_raised_again_by_the_next_owner(tmp_path):
    out = run_probe(_PROBE, tmp_path)
    # A's alert and batch 6's entry wait in the partition's outbox, nothing sent plainly
    assert out["a_outbox"] == [2, 6, 0]
    # A's part is not saved while its alert waits: the last save is before batch 6
    assert out["saved_raw"] == 6
    assert out["before_b"] == []  # A died before its transaction
    # B judged batch 6 again: the alert went out once, in B's transaction with the mark
    assert [(r, s) for r, s, _ in out["after_b"]] == [("flood", "firing")]
    assert out["mark_after_b"] == "7"
    assert out["saved_raw_b"] == 7
    assert out["after_c"] == out["after_b"]  # C did not judge batch 6 again
    assert out["plain"] == 0
