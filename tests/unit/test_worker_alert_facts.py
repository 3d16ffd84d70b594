"""The global rules' input in the Kafka worker (streams/runtime/worker.py, alert_facts.py; issue
20): a stored batch's facts are committed in a transaction of its partition's state writer with
the facts mark, a state save carries the facts not committed yet, and a partition's new owner
judges a batch processed again exactly when it lies at or past the mark, from its stored
events (Elasticsearch has them already: the write newly stores none). The crash window this
closes: a batch stored, its worker killed before its facts went out; the old code built the
facts from the events a write newly stored, so the new owner sent none and the global rules
never saw the batch.

The worker module builds a Faust app at import, so this runs in a subprocess; the store is a
fake idempotent by id, the state topic partition a recording writer (what committed), each
"worker" its own Part and Alerting (tests/integration/test_alerts_full_stack.py covers the
real engines and a real kill -9)."""

from __future__ import annotations

from tests.unit.worker_probe import FAKES, FINISH, run_probe

_PROBE = FAKES + r"""
RULES = (AlertRule("new", "new_template"),)
n = [0]
def worker():  # a worker process holding raw partition 1 of 4: global rules judged elsewhere
    n[0] += 1
    alerting = Alerting(AlertEngine(RULES, warmup_lines=0),
                        AlertHistory(Path(os.environ["SMARTLOGS_DATA_DIR"]) / f"a{n[0]}.db"), [])
    alerting.plan = lambda: assign_rules(RULES, {1}, 4)
    alerting.holds = lambda: scopes_held({1}, 4)
    w._alerting = alerting

take = take_part  # a new owner of partition 1

def items(offset, text):
    return orjson.dumps([{"id": f"{offset}-{i}", "received": 1.7e9 + offset, "source": "t",
                          "raw": f"{text} {i}"} for i in range(3)])

async def batch(part, offset, text):
    await store_batch(part, offset, items(offset, text))

def messages(topic):
    return [e["message"] for f in topic.facts for e in f["events"]]

async def main():
    out = {}
    w._facts_topic_ready.set()
    w._sink = Sink(Store(), name="elasticsearch", window_seconds=60)
    topic = Topic()
    # worker A: a batch at offset 5, a state save (its facts and the mark go with it), then
    # the batch at offset 6 is stored and A dies before its facts are committed
    worker()
    a = take(topic)
    await batch(a, 5, "heartbeat ok from unit")
    out["a_outbox_before_save"] = len(a.outbox.pending)
    await w._save_part(a)
    out["after_save"] = [topic.state.get(alert_facts.MARK_KEY).decode(), len(a.outbox.pending),
                         decode_state(topic.state, w._config)[1]]
    await batch(a, 6, "fan tray reported an overheating condition")
    out["a_stored_6"] = sorted(Store.ids) == sorted([f"{o}-{i}" for o in (5, 6) for i in range(3)])
    out["judged_before_b"] = messages(topic)
    # worker B takes partition 1: the state reflects offset 6, the mark says 6: batch 6 is
    # processed again, Elasticsearch has its events (none newly stored), its facts go out
    worker()
    b = take(topic)
    out["b_resumes"] = [b.applied, b.outbox.resume]
    await batch(b, 6, "fan tray reported an overheating condition")
    topic.fail = True  # a failing transaction: logged, the batch is acked, the facts wait
    try:
        await w._commit(b)
    except OSError:
        out["kept_after_failure"] = len(b.outbox.pending)
    topic.fail = False
    await w._commit(b)
    out["judged_after_b"] = messages(topic)
    out["mark_after_b"] = topic.state[alert_facts.MARK_KEY].decode()
    # worker C takes it after B committed batch 6's facts but before a save: 6 again, not
    # judged twice; 7 is
    worker()
    c = take(topic)
    await batch(c, 6, "fan tray reported an overheating condition")
    out["c_outbox_for_6"] = len(c.outbox.pending)
    await batch(c, 7, "fan tray reported an overheating condition again")
    await w._commit(c)
    out["judged_after_c"] = messages(topic)
    out["lines"] = [f["lines"] for f in topic.facts]
    return out
""" + FINISH


def test_a_batch_stored_before_its_worker_died_is_judged_once_by_the_global_rules(tmp_path):
    out = run_probe(_PROBE, tmp_path)
    assert out["a_outbox_before_save"] == 1  # not committed by the batch: by a transaction
    assert out["after_save"] == ["6", 0, 6]  # the save carried the facts and the mark
    assert out["a_stored_6"]
    overheating = [f"fan tray reported an overheating condition {i}" for i in range(3)]
    assert not set(overheating) & set(out["judged_before_b"])  # A died before committing
    assert out["b_resumes"] == [6, 6]
    assert out["kept_after_failure"] == 1
    # B, processing batch 6 again, sent its facts (its first line: a new template)
    assert out["judged_after_b"].count(overheating[0]) == 1
    assert out["mark_after_b"] == "7"
    assert out["c_outbox_for_6"] == 0  # before the mark: seen already
    assert out["judged_after_c"].count(overheating[0]) == 1  # not twice
    assert out["lines"] == [3, 3, 3]  # batches 5, 6 and 7, once each


def test_the_outbox_doctests():
    import doctest

    from streams.runtime import alert_facts

    assert doctest.testmod(alert_facts).failed == 0
