"""Alerts through the embedded platform to a real local webhook receiver (an HTTP server in the
test), and delivery that retries without blocking the pipeline."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from ingest_api.app import create_app
from streams.runtime.alerting import Notifier
from smartlogs.settings import Settings
from streams.alerts import Alert


class Receiver:
    """A real webhook receiver: records JSON posts; can fail or hang on demand."""

    def __init__(self):
        self.posts: list[dict] = []
        self.ids: list[str] = []
        self.fail_next = 0
        self.hang = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.hang.is_set():
                    time.sleep(30)
                if outer.fail_next:
                    outer.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.posts.append(json.loads(body))
                outer.ids.append(self.headers["X-SmartLogs-Alert-Id"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.hang.clear()
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _alert(n=0):
    return Alert(f"burst|web1|{n}", "burst", "anomaly_burst", "web1", "firing", 0.0, 60.0, 7)


def test_a_receiver_that_fails_twice_gets_the_alert_once(receiver):
    receiver.fail_next = 2
    n = Notifier(receiver.url, backoff=0.05)
    assert n.deliver(_alert()) is True
    assert len(receiver.posts) == 1 and receiver.ids == ["burst|web1|0|firing"]
    assert (n.delivered, n.failed) == (1, 0)
    n.stop()


def test_a_hanging_receiver_never_blocks_submit(receiver):
    receiver.hang.set()
    n = Notifier(receiver.url, timeout=0.5, max_attempts=2, backoff=0.05, max_queue=10)
    n.start()
    t = time.perf_counter()
    taken = [n.submit(_alert(i)) for i in range(50)]
    assert time.perf_counter() - t < 0.5  # the caller (the pipeline) never waits
    assert taken.count(True) <= 11 and n.dropped >= 39  # a bounded queue, the rest counted
    n.stop(timeout=1)


RULES = """
warmup_lines: 40
rules:
  - {name: new-pattern, kind: new_template, window: 1s}
  - {name: errors, kind: error_flood, level: ERROR, threshold: 10, window: 1s}
  - {name: oom, kind: match, query: "out of memory", threshold: 1, window: 1s}
  - {name: quiet, kind: silence, windows: 2, window: 1s, group_by: host}
"""


def _post(client, events):
    r = client.post("/ingest", json=events)
    assert r.status_code == 202, r.text


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pred()


def test_one_firing_and_one_resolved_per_kind_and_none_for_normal_lines(tmp_path, receiver):
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES)
    settings = Settings(data_dir=tmp_path / "var", syslog_port=0, alert_rules=rules,
                        alert_webhook_url=receiver.url, console_url="http://console.example")
    normal = [f"user {name} logged in from the office" for name in ("ann", "bob", "eve", "joe")]
    with TestClient(create_app(settings)) as client:
        def beat(k=1, hosts=("web1", "web2")):  # normal, live lines from each host
            for _ in range(k):
                # every host says each normal line (a host's lines are learned by its own
                # partition's model: a line only another host said is new to it)
                _post(client, [{"message": normal[i % 4], "host": h, "timestamp": time.time()}
                               for h in hosts for i in range(5)])
                time.sleep(0.2)

        beat(6)  # warm-up and a normal stretch: every pattern is known, nothing fires
        time.sleep(1.5)
        assert receiver.posts == []
        now = time.time()
        _post(client, [{"message": "disk controller reset on bus 3", "host": "web1", "timestamp": now}])
        _post(client, [{"message": f"write failed on volume {i}", "host": "web2", "level": "error",
                        "timestamp": now} for i in range(12)])
        _post(client, [{"message": "Out of memory: kill process 4711", "host": "web2",
                        "level": "error", "timestamp": now}])
        beat(12, hosts=("web2",))  # web1 falls silent for ~2.4 s
        expected = {("new-pattern", 3), ("errors", 1), ("oom", 1), ("quiet", 1)}

        def done():  # per rule: how many groups got their resolution
            resolved = {(p["rule"], p["group"]) for p in receiver.posts if p["state"] == "resolved"}
            return {(r, sum(1 for rr, _ in resolved if rr == r)) for r, _ in expected} == expected

        for _ in range(40):  # both hosts speak on while windows close and alerts resolve
            if done():
                break
            beat(1)
        assert done(), receiver.posts
        states: dict[tuple[str, str], list[str]] = {}
        for p in receiver.posts:
            states.setdefault((p["rule"], p["group"]), []).append(p["state"])
        assert all(v == ["firing", "resolved"] for v in states.values()), states
        assert sorted({r for r, _ in states}) == ["errors", "new-pattern", "oom", "quiet"]
        assert [g for r, g in states if r == "quiet"] == ["web1"]
        errors = next(p for p in receiver.posts if p["rule"] == "errors")
        assert errors["count"] >= 10 and errors["trigger"]["level"] == "ERROR"
        assert errors["link"].startswith("http://console.example/#search?")
        listed = client.get("/api/alerts", params={"rule": "oom"}).json()["alerts"]
        assert [a["state"] for a in listed] == ["resolved", "firing"] and listed[0]["notified"]
        # a silenced rule is recorded but not notified
        r = client.post("/api/alerts/silences", json={"rule": "oom", "seconds": 60})
        assert r.status_code == 201
        sent = sum(p["rule"] == "oom" for p in receiver.posts)
        _post(client, [{"message": "Out of memory again", "host": "web2", "timestamp": time.time()}])
        assert _wait(lambda: client.get("/api/alerts", params={"rule": "oom"}).json()["alerts"][0]
                     ["notified"] is False, timeout=5)
        assert sum(p["rule"] == "oom" for p in receiver.posts) == sent
        assert client.post("/api/alerts/silences", json={"rule": "nope", "seconds": 5}).status_code == 422


def test_a_bad_rule_file_is_refused_at_start(tmp_path):
    import os
    import subprocess
    import sys

    bad = tmp_path / "alerts.yaml"
    bad.write_text("rules:\n  - {name: burst, kind: anomaly_burst, threshold: 0}\n")
    env = {**os.environ, "SMARTLOGS_DATA_DIR": str(tmp_path), "SMARTLOGS_ALERT_RULES": str(bad),
           "COLUMNS": "400"}
    r = subprocess.run([sys.executable, "-m", "smartlogs.cli", "up"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 2
    assert str(bad) in r.stderr and "rule #1 (burst)" in r.stderr and "threshold" in r.stderr


# -- the engine's state across restarts ---------------------------------------------------------
RESTART_RULES = """
warmup_lines: 0
rules:
  - {name: errors, kind: error_flood, level: ERROR, threshold: 5, window: 60s, group_by: host}
  - {name: quiet, kind: silence, windows: 3, window: 60s, group_by: host}
"""


def _line(i: int, t: float, host: str, level: str = "ERROR") -> dict:
    return {"id": f"{host}:{t}:{i}", "ts": t, "received": t, "timestamp": str(t), "host": host,
            "level": level, "template_id": "T1", "message": f"write failed on volume {i}",
            "anomaly": False, "reason": None, "score": 0.1}


def restart_scenario(make_history, receiver) -> None:
    """An error flood on web1 that lasts across two restarts (a clean stop, then a crash
    without a final save) raises one alert and resolves it once; web2, quiet across the
    restarts, is noticed as silent. ``make_history()`` opens the history's store again."""
    import yaml

    from streams.runtime.alerting import Alerting
    from streams.alerts import AlertEngine, load_rules

    now = [1_800_000_000.0]

    def run():
        rules, warmup = load_rules(yaml.safe_load(RESTART_RULES), "rules.yaml")
        a = Alerting(AlertEngine(rules, warmup_lines=warmup), make_history(),
                     [Notifier(receiver.url, backoff=0.05)], clock=lambda: now[0],
                     tick_seconds=3600)
        a.start()
        return a

    def minutes(a, n, hosts=("web1",), level="ERROR"):  # a line every 10 s from each host
        for _ in range(n * 6):
            now[0] += 10
            a.on_stored([_line(i, now[0], h, level) for i, h in enumerate(hosts)])
            a.tick()

    a = run()
    minutes(a, 1, hosts=("web1", "web2"), level="INFO")
    minutes(a, 2)  # web1's errors: 6 a minute, firing; web2 has fallen quiet
    a.stop()  # a clean stop saves the state
    a = run()
    minutes(a, 1)  # still flooding: nothing new
    a.save()
    minutes(a, 2)
    for n in a.notifiers:  # a crash: no final save, the records after the last one count
        n.stop()
    assert _wait(lambda: len(receiver.posts) >= 2, timeout=5)  # errors firing, web2 quiet
    a = run()
    minutes(a, 1)  # still flooding
    minutes(a, 2, level="INFO")  # over: resolved once
    a.stop()
    assert _wait(lambda: len(receiver.posts) >= 3, timeout=5)
    time.sleep(0.3)
    states = [(p["rule"], p["group"], p["state"]) for p in receiver.posts]
    assert states == [("errors", "web1", "firing"), ("quiet", "web2", "firing"),
                      ("errors", "web1", "resolved")], states
    assert len({p["id"] for p in receiver.posts if p["rule"] == "errors"}) == 1


def test_a_condition_lasting_across_restarts_raises_once_and_resolves_once(tmp_path, receiver):
    from streams.runtime.alerting import AlertHistory

    restart_scenario(lambda: AlertHistory(tmp_path / "alerts.db"), receiver)


def test_the_embedded_platform_keeps_its_open_alerts_across_a_restart(tmp_path, receiver):
    """``smartlogs up`` stopped and started again while a host floods errors: one firing,
    one resolved (without the saved state, the flood raised a second alert after the restart
    and the first was never resolved)."""
    rules = tmp_path / "alerts.yaml"
    rules.write_text("warmup_lines: 0\nrules:\n  - {name: errors, kind: error_flood, "
                     "level: ERROR, threshold: 3, window: 1s, group_by: host}\n")
    settings = Settings(data_dir=tmp_path / "var", syslog_port=0, alert_rules=rules,
                        alert_webhook_url=receiver.url)

    def flood(client, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            _post(client, [{"message": f"write failed on volume {i}", "host": "web1",
                            "level": "error", "timestamp": time.time()} for i in range(4)])
            time.sleep(0.1)

    with TestClient(create_app(settings)) as client:
        flood(client, 2.5)
        assert _wait(lambda: receiver.posts, timeout=5)
    with TestClient(create_app(settings)) as client:
        flood(client, 2.5)  # the flood goes on after the restart: nothing new
        assert _wait(lambda: any(p["state"] == "resolved" for p in receiver.posts), timeout=10)
        time.sleep(1.5)
    assert [(p["rule"], p["state"]) for p in receiver.posts] == [("errors", "firing"),
                                                                 ("errors", "resolved")]
    assert len({p["id"] for p in receiver.posts}) == 1


def test_the_clock_closes_no_window_while_accepted_lines_wait(tmp_path):
    """Lines accepted before a restart (waiting in the spool or in Kafka) still belong to
    their windows: while the runtime says some wait, a tick resolves nothing."""
    import yaml

    from streams.runtime.alerting import AlertHistory, Alerting
    from streams.alerts import AlertEngine, load_rules

    now = [1_800_000_000.0]
    rules, _ = load_rules(yaml.safe_load(RESTART_RULES), "rules.yaml")
    a = Alerting(AlertEngine(rules, warmup_lines=0), AlertHistory(tmp_path / "alerts.db"), [],
                 clock=lambda: now[0], tick_seconds=3600)
    waiting = [True]
    a.busy = lambda: waiting[0]
    a.on_stored([_line(i, now[0] + i, "web1") for i in range(6)])
    now[0] += 600
    a.tick()
    assert [x["state"] for x in a.history.list()] == ["firing"]  # nothing closed
    waiting[0] = False
    a.tick()
    assert [x["state"] for x in a.history.list(rule="errors")] == ["resolved", "firing"]
    a.stop()


def test_the_sqlite_history_keeps_each_records_scope_and_opens_a_db_made_before_scopes(tmp_path):
    """The history's records carry the part of the engine's state they belong to, and a
    restore reads one part's records; an ``alerts.db`` written before records had a scope is
    opened as it is (the column is added)."""
    import sqlite3

    from streams.runtime.alerting import AlertHistory

    old = sqlite3.connect(tmp_path / "alerts.db")
    old.executescript("""CREATE TABLE alerts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, state TEXT NOT NULL,
        rule TEXT NOT NULL, kind TEXT NOT NULL, grp TEXT NOT NULL, at REAL NOT NULL,
        historical INTEGER NOT NULL, notified INTEGER NOT NULL, body BLOB NOT NULL);""")
    old.close()
    history = AlertHistory(tmp_path / "alerts.db")
    try:
        history.record(_alert(1), notified=True, scope="p0")
        start = history.position()
        history.record(_alert(2), notified=True, scope="p1")
        history.record(_alert(3), notified=False, scope="p0")
        assert [r["id"] for r in history.records_after(None, "p0")] == [
            "burst|web1|1", "burst|web1|3"]
        assert [r["id"] for r in history.records_after(start, "p0")] == ["burst|web1|3"]
        assert [r["id"] for r in history.records_after(start)] == ["burst|web1|2", "burst|web1|3"]
    finally:
        history.close()


def test_a_batch_of_a_partition_no_longer_held_is_judged_but_not_kept(tmp_path):
    """With several workers, a batch that finishes after its partition was revoked raises its
    alerts (recorded with the partition's scope, for its new holder), and leaves no group
    here that nobody would save or drop."""
    import yaml

    from streams.runtime.alerting import Alerting, AlertHistory
    from streams.alerts import AlertEngine, load_rules, scopes_held

    rules, _ = load_rules(yaml.safe_load(RESTART_RULES), "rules.yaml")
    held = {0, 1}
    a = Alerting(AlertEngine(rules, warmup_lines=0), AlertHistory(tmp_path / "alerts.db"), [],
                 clock=lambda: 1_800_000_000.0, tick_seconds=3600)
    a.holds = lambda: scopes_held(held, 2)
    a.start()
    a.on_stored([_line(i, 1_800_000_000.0, "web1") for i in range(6)], "p0")
    held.discard(1)
    a.on_stored([_line(i, 1_800_000_000.0, "web2") for i in range(6)], "p1")
    assert sorted((x.group, a.engine.owner_of(x)) for x in a.engine.open_alerts()) == [
        ("web1", "p0")]
    assert [(r["group"], r["state"]) for r in a.history.records_after(None, "p1")] == [
        ("web2", "firing")]
    a.stop()


class _ContestedHistory:
    """alerts.db, with parts another worker takes up behind this one's back (``taken``):
    its writes of them are refused, it owns them no longer (Elasticsearch's conditional
    writes, tests/integration/test_alerts_elasticsearch.py)."""

    def __init__(self, path):
        from streams.runtime.alerting import AlertHistory

        self._db = AlertHistory(path)
        self.taken: set[str] = set()
        self.takes: list[str] = []
        self.unreadable = False

    def __getattr__(self, name):
        return getattr(self._db, name)

    def take_state(self, scope):
        self.takes.append(scope)
        if self.unreadable:
            raise ConnectionError("the store is down")
        self.taken.discard(scope)  # claimed back (as after a new assignment)
        return self._db.load_state(scope)

    def save_state(self, scope, state, position):
        from streams.runtime.alerting import StaleOwner

        if scope in self.taken:
            raise StaleOwner(scope)
        self._db.save_state(scope, state, position)

    def owns(self, scope):
        return scope not in self.taken


def test_a_part_another_worker_took_up_is_dropped_neither_saved_nor_alerted_until_reassigned(
        tmp_path, caplog):
    """A worker whose part was taken up by another (it was frozen): its refused save drops
    the part (logged, no exception, no retry), it neither notifies nor records an alert of
    that part, nor takes it up again before the next assignment; then it does."""
    import yaml

    from streams.runtime.alerting import Alerting
    from streams.alerts import AlertEngine, load_rules, scopes_held

    rules, _ = load_rules(yaml.safe_load(RESTART_RULES), "rules.yaml")
    history = _ContestedHistory(tmp_path / "alerts.db")
    sent = _Sent()
    t = 1_800_000_000.0
    a = Alerting(AlertEngine(rules, warmup_lines=0), history, [sent], clock=lambda: t,
                 tick_seconds=3600)
    a.holds = lambda: scopes_held({0, 1}, 2)
    a.start()
    a.on_stored([_line(i, t, "web1", "INFO") for i in range(3)], "p0")
    a.on_stored([_line(i, t, "web2", "INFO") for i in range(3)], "p1")
    assert a.save(clean=True) and sorted(history.takes) == ["global", "p0", "p1"]

    history.taken.add("p1")  # another worker took partition 1 while this one was frozen
    a.on_stored([_line(i, t, "web2") for i in range(6)], "p1")  # its older state fires
    assert sent.got == [] and list(history.records_after(None)) == []
    assert a.engine.open_alerts() == []  # its groups forgotten
    assert "p1 was taken up by another worker" in caplog.text
    assert sorted(history.takes) == ["global", "p0", "p1"]  # not taken up again

    history.taken.add("p0")
    a.on_stored([_line(i, t, "web1", "INFO") for i in range(3)], "p0")
    assert a.save(clean=True) is False  # p0's refused: dropped, not retried
    assert a.save(clean=True) is True  # the global part only, still this worker's

    a.assigned(retake=True)  # the next assignment: both partitions again, read back
    a.on_stored([_line(i, t, "web2") for i in range(6)], "p1")
    assert sorted(history.takes) == ["global", "global", "p0", "p0", "p1", "p1"]
    assert [state for _, state in sent.got] == ["firing"]
    assert [(r["group"], r["state"]) for r in history.records_after(None, "p1")] == [
        ("web2", "firing")]
    a.stop()


FACT_RULES = """
warmup_lines: 0
rules:
  - {name: burst, kind: anomaly_burst, threshold: 3, window: 60s}
  - {name: new, kind: new_template}
"""


def _judge(tmp_path, held, clock, history=None):
    """An ``Alerting`` of a worker holding ``held`` of 2 partitions (its history: alerts.db)."""
    import yaml

    from streams.runtime.alerting import Alerting, AlertHistory
    from streams.alerts import AlertEngine, assign_rules, load_rules, scopes_held

    rules, _ = load_rules(yaml.safe_load(FACT_RULES), "rules.yaml")
    a = Alerting(AlertEngine(rules, warmup_lines=0),
                 history or AlertHistory(tmp_path / "alerts.db"), [], clock=clock,
                 tick_seconds=3600)
    a.holds = lambda: scopes_held(held, 2)
    a.plan = lambda: assign_rules(rules, held, 2)
    a.start()
    return a


def _flagged(i: int, t: float, host: str, template: str = "T1") -> dict:
    return {**_line(i, t, host), "anomaly": True, "template_id": template}


def test_the_facts_of_two_workers_are_judged_once_and_their_position_moves_with_partition_0(
        tmp_path):
    """Workers A (partitions {0}) and B ({1}) each store flagged lines of a burst over all
    sources: neither raises it; their facts, judged by A, raise it once, and a fact read twice
    (a re-read after a seek) is not counted twice. A saves the global record with the facts'
    position and crashes after judging more facts (a new template fired after the save); C
    takes partition 0 from that record, re-judges the facts after it and raises nothing twice;
    a revocation's save fences A's judging off until the new assignment."""
    from streams.runtime.alerting import AlertHistory

    t = 1_800_000_000.0
    a, b = _judge(tmp_path, {0}, lambda: t), _judge(tmp_path / "b", {1}, lambda: t,
                                                      AlertHistory(tmp_path / "b.db"))
    assert a.facts_position() == -1 and b.facts_position() is None  # A judges; nothing read
    topic = []  # the facts topic: (offset, record)

    def store(worker, events, owner):
        facts = worker.on_stored(events, owner)
        if facts is not None:
            topic.append((len(topic), {"lines": len(events), "events": facts}))
        return facts

    assert len(store(b, [_line(i, t, "web2") for i in range(3)], "p1")) == 1  # T1's first
    # lines the global rules do not count: no fact, but sent all the same (the warm-up)
    assert store(b, [_line(i, t + 1, "web2") for i in range(3)], "p1") == []
    store(a, [_flagged(i, t + i, "web1") for i in range(2)], "p0")
    store(b, [_flagged(i, t + i, "web2") for i in range(2)], "p1")
    assert a.history.list() == [] and b.history.list() == []  # neither sees the burst alone
    a.on_facts(topic[:3])
    a.on_facts(topic[:4])  # the first three again, then the fourth: 4 flagged lines
    assert a.engine.lines == 3 + 3 + 2 + 2  # every worker's lines, once
    assert sorted((r["rule"], r["group"], r["state"]) for r in a.history.list()) == [
        ("burst", "*", "firing"), ("new", "T1", "firing")]  # T1: new to the judge too
    assert a.facts_position() == 4
    assert a.save(clean=False)
    store(b, [_flagged(5, t + 5, "web2", template="T9")], "p1")
    a.on_facts(topic[4:])
    assert sorted((r["rule"], r["group"]) for r in a.history.list()) == [
        ("burst", "*"), ("new", "T1"), ("new", "T9")]
    # A crashes (no final save); C takes partition 0 with A's history (the same store)
    c = _judge(tmp_path, {0}, lambda: t + 10)
    assert c.facts_position() == 4  # from A's save
    c.on_facts(topic)  # offsets 0-3 judged before the save: skipped; 4 judged again
    assert sorted((r["rule"], r["group"], r["state"]) for r in c.history.list()) == [
        ("burst", "*", "firing"), ("new", "T1", "firing"), ("new", "T9", "firing")]  # none twice
    assert c.facts_position() == 5
    # a clean rebalance: partition 0 is being revoked from C: it judges nothing more
    assert c.save(clean=True, scopes={"global", "p0"}, fence=True)
    assert c.facts_position() is None
    c.on_facts([(5, {"lines": 1, "events": [_flagged(9, t + 9, "web3", template="T7")]})])
    assert sorted(r["group"] for r in c.history.list() if r["rule"] == "new") == ["T1", "T9"]
    c.assigned()  # it kept partition 0: it goes on from where it was
    assert c.facts_position() == 5
    # a worker holding every partition judges every rule over its events: nothing to send
    d = _judge(tmp_path / "d", {0, 1}, lambda: t, AlertHistory(tmp_path / "d.db"))
    assert d.on_stored([_flagged(0, t, "web4", template="T5")], "p0") is None
    assert [r["group"] for r in d.history.list()] == ["T5"]  # (burst: 1 of 3)
    for w in (a, b, c, d):
        w.stop()


def test_a_batch_processed_again_is_judged_by_the_global_rules_over_the_events_it_is_given(
        tmp_path):
    """A Kafka worker processing a batch again after a crash (``on_stored(..., seen=...)``,
    streams/runtime/alert_facts.py): the partition-local rules judge the events the store
    newly took, the global ones the batch's stored events when their input was never
    committed, and nothing when it was. A worker holding every partition judges them here; a
    worker sharing them returns the facts of those events."""
    from streams.runtime.alerting import AlertHistory

    t = 1_800_000_000.0
    d = _judge(tmp_path, {0, 1}, lambda: t)
    # the store took none of it anew (stored before the crash): judged from ``seen``
    assert d.on_stored([], "p1", seen=[_flagged(0, t, "web4", template="T5")]) is None
    assert [(r["rule"], r["group"]) for r in d.history.list()] == [("new", "T5")]
    # its input committed before the crash: the global rules see nothing of it
    assert d.on_stored([_flagged(1, t, "web4", template="T6")], "p1", seen=[]) is None
    assert [r["group"] for r in d.history.list()] == ["T5"]
    assert d.engine.lines == 1  # the warm-up counts the lines the global rules saw
    b = _judge(tmp_path / "b", {1}, lambda: t, AlertHistory(tmp_path / "b.db"))
    facts = b.on_stored([], "p1", seen=[_line(i, t, "web2") for i in range(3)])
    assert [f["id"] for f in facts] == ["web2:1800000000.0:0"]  # T1's first line
    assert b.on_stored([_line(5, t, "web2")], "p1", seen=[]) == []
    for w in (d, b):
        w.stop()


_CAPPED_HOST_RULE = ("warmup_lines: 0\nrules:\n  - {name: errs, kind: error_flood, threshold: 1, "
                     "window: 60s, group_by: host, max_per_window: 3}\n")
_T = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the start of a window


def _sharing_worker(held, history, topic, notifiers=(), shares=lambda held: True):
    """An ``Alerting`` of a worker holding partitions ``held`` of 2 that shares them with
    others: the capped host rule, its forwards appended to ``topic`` as (offset, record)."""
    import yaml

    from streams.runtime.alerting import Alerting
    from streams.alerts import AlertEngine, assign_rules, load_rules, scopes_held

    rules, _ = load_rules(yaml.safe_load(_CAPPED_HOST_RULE), "rules.yaml")
    a = Alerting(AlertEngine(rules, warmup_lines=0), history, list(notifiers),
                 clock=lambda: _T + 1, tick_seconds=3600)
    a.holds = lambda: scopes_held(held, 2)
    a.plan = lambda: assign_rules(rules, held, 2)
    a.shares = lambda: shares(held)
    a.forward = lambda record: topic.append((len(topic), record))
    a.start()
    return a


def test_host_alerts_of_several_workers_go_through_the_judge_under_one_cap(tmp_path):
    """Workers A ({0}) and B ({1}) share the partitions: the alerts of their host rule are
    forwarded to the facts (not notified by them), and A, judging the facts, lets 3 through
    (the cap) and one notice, over both workers' firings. A crashes after its save; C takes
    partition 0, reads the facts after the save again and records nothing twice."""
    from streams.runtime.alerting import AlertHistory

    t = _T
    topic: list[tuple[int, dict]] = []

    def worker(name, held, history):
        return _sharing_worker(held, history, topic)

    a = worker("A", {0}, AlertHistory(tmp_path / "alerts.db"))
    b = worker("B", {1}, AlertHistory(tmp_path / "b.db"))
    for w, scope, hosts in ((a, "p0", ("h1", "h2", "h3")), (b, "p1", ("h4", "h5"))):
        for h in hosts:
            w.on_stored([_line(0, t + 1, h)], scope)
    assert a.history.list() == [] and b.history.list() == []  # forwarded, not notified
    assert len(topic) == 5
    a.on_facts(topic[:3])
    assert a.save()
    a.on_facts(topic[3:])
    got = sorted((r["group"], r["state"]) for r in a.history.list())
    assert got == [("*", "suppressed"), ("h1", "firing"), ("h2", "firing"), ("h3", "firing")]
    assert {r["group"]: r for r in a.history.records_after(None, "p0")}.keys() == {
        "h1", "h2", "h3"}  # recorded with their partition's scope (its holder restores them)
    c = worker("C", {0}, AlertHistory(tmp_path / "alerts.db"))  # A crashed: C reads on
    c.on_facts(topic)
    assert sorted((r["group"], r["state"]) for r in c.history.list()) == got
    for w in (a, b, c):
        w.stop()


def test_a_part_whose_saved_state_cannot_be_read_is_taken_up_later_not_started_fresh(
        tmp_path):
    """The store cannot be read when a worker takes a partition's part up: the part is not
    held (nor saved over) and is taken up at a later batch, from its saved state: an alert
    open there stays one alert (the old code started the part fresh: the firing again)."""
    import yaml

    from streams.runtime.alerting import Alerting
    from streams.alerts import AlertEngine, load_rules, scopes_held

    rules, _ = load_rules(yaml.safe_load(RESTART_RULES), "rules.yaml")
    t = 1_800_000_000.0
    history = _ContestedHistory(tmp_path / "alerts.db")
    first = Alerting(AlertEngine(rules, warmup_lines=0), history, [_Sent()], clock=lambda: t,
                     tick_seconds=3600)
    first.holds = lambda: scopes_held({1}, 2)
    first.start()
    first.on_stored([_line(i, t, "web2") for i in range(6)], "p1")  # firing
    assert first.save(clean=True)

    history = _ContestedHistory(tmp_path / "alerts.db")  # its successor, the store down
    history.unreadable = True
    sent = _Sent()
    a = Alerting(AlertEngine(rules, warmup_lines=0), history, [sent], clock=lambda: t + 10,
                 tick_seconds=3600)
    a.holds = lambda: scopes_held({1}, 2)
    a.start()
    assert history.takes == ["p1"] and a.save(clean=True)  # nothing held: nothing saved
    history.unreadable = False
    a.on_stored([_line(i, t + 10, "web2") for i in range(6)], "p1")  # taken up now
    assert history.takes == ["p1", "p1"]
    assert sent.got == [] and [x.group for x in a.engine.open_alerts()] == ["web2"]
    a.stop()


def test_a_worker_whose_part_was_taken_up_forwards_none_of_its_alerts_nor_judges_them(
        tmp_path):
    """Sharing workers: B, whose partition 1 another worker took up while B was frozen,
    forwards none of the host alerts its older state raises there; A, the judge, whose
    global part was taken up, admits none of the forwarded alerts (its successor does)."""
    topic: list[tuple[int, dict]] = []
    a = _sharing_worker({0}, _ContestedHistory(tmp_path / "a.db"), topic)
    b = _sharing_worker({1}, _ContestedHistory(tmp_path / "b.db"), topic)
    b.on_stored([_line(0, _T + 1, "h4")], "p1")
    assert len(topic) == 1  # B owns partition 1: its alert goes to the judge
    b.history.taken.add("p1")
    b.on_stored([_line(0, _T + 2, "h5")], "p1")
    assert len(topic) == 1  # not forwarded: partition 1 is another worker's now
    a.history.taken.add("global")
    a.on_facts(topic)
    assert a.history.list() == []  # the judge's part is another's: nothing notified
    for w in (a, b):
        w.stop()


class _Sent:
    """A notifier that keeps what it is given (``Alerting`` submits to it)."""

    def __init__(self):
        self.got = []

    def submit(self, alert) -> bool:
        self.got.append((alert.id, alert.state))
        return True

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        pass


@pytest.mark.parametrize("facts_first", [False, True])
def test_a_host_alert_forwarded_before_the_judge_crashed_is_not_sent_again_by_its_successor(
        tmp_path, facts_first):
    """Workers A ({0}, the judge) and B ({1}) share the partitions. A raises a host alert on
    partition 0 after its last save, forwards it to the facts and is killed before judging
    it. C takes both partitions from A's save: it processes partition 0's raw lines after the
    save again (the same alert is raised again, now by C, which holds every partition and
    notifies directly) and judges the facts after the save (A's forwarded copy), in either
    order: the alert is notified and recorded once."""
    from streams.runtime.alerting import AlertHistory

    t = _T
    topic: list[tuple[int, dict]] = []

    def worker(held, history, sent):  # a worker holding both partitions shares nothing
        return _sharing_worker(held, history, topic, [sent], shares=lambda h: h != {0, 1})

    sent = _Sent()
    a = worker({0}, AlertHistory(tmp_path / "alerts.db"), sent)
    assert a.save(clean=True)  # its last save: the facts' position and p0 without the alert
    a.on_stored([_line(0, t + 1, "h1")], "p0")
    assert len(topic) == 1 and sent.got == []  # forwarded; A is killed before judging it
    c = worker({0, 1}, AlertHistory(tmp_path / "alerts.db"), sent)  # (B, now holding both)
    again = [_line(0, t + 1, "h1")]  # partition 0's raw lines after A's save, processed again
    if facts_first:
        c.on_facts(topic)
        c.on_stored(again, "p0")
    else:
        c.on_stored(again, "p0")
        c.on_facts(topic)
    assert sent.got == [(f"errs|h1|{t:.0f}", "firing")]
    assert [(r["group"], r["state"]) for r in c.history.list()] == [("h1", "firing")]
    c.stop()


def test_a_batch_stored_before_a_crash_is_judged_once_by_the_host_rules_of_its_next_owner(
        tmp_path):
    """The Kafka worker hands each batch over with its raw offset and stored events
    (``on_stored(..., offset=, batch=)``). A judges offset 10 (one error on h1), saves
    partition 0's part (which covers offsets before 11), and is killed after Elasticsearch
    took offset 11 (one more error), before judging it. C takes the partition from A's save
    and processes 10 and 11 again: its writes newly store nothing. The host rule (3 errors
    a minute) judges 11 from its events (the old code judged the newly stored ones: none, so
    11 was never counted) and not 10 (in the saved part already: counted twice it would fire
    now), so it fires at offset 12, the third error, once. A part saved before the offset was
    recorded judges the newly stored events, as before."""
    import yaml

    from streams.runtime.alerting import Alerting, AlertHistory
    from streams.alerts import AlertEngine, assign_rules, load_rules, scopes_held

    rules, _ = load_rules(yaml.safe_load(
        "warmup_lines: 0\nrules:\n  - {name: errs, kind: error_flood, threshold: 3, "
        "window: 60s, group_by: host}\n"), "rules.yaml")

    def worker():
        a = Alerting(AlertEngine(rules, warmup_lines=0), AlertHistory(tmp_path / "alerts.db"),
                     [], clock=lambda: _T + 1, tick_seconds=3600)
        a.holds = lambda: scopes_held({0, 1}, 2)
        a.plan = lambda: assign_rules(rules, {0, 1}, 2)
        a.start()
        return a

    line = [_line(i, _T + 1, "h1") for i in range(3)]
    a = worker()
    assert a.on_stored(line[:1], "p0", seen=line[:1], offset=10, batch=line[:1]) is None
    assert a.save(clean=True)
    # offset 11 stored, then A is killed -9 (no judging, no save)
    c = worker()
    c.on_stored([], "p0", seen=[], offset=10, batch=line[:1])  # covered by the saved part
    c.on_stored([], "p0", seen=[], offset=11, batch=line[1:2])  # stored by A, never judged
    assert c.history.list() == []  # 2 errors, not 3
    c.on_stored(line[2:], "p0", seen=line[2:], offset=12, batch=line[2:])
    assert [(r["rule"], r["group"], r["state"]) for r in c.history.list()] == [
        ("errs", "h1", "firing")]
    assert c.save(clean=True)
    # a part saved without the offset (an older release): the newly stored events, as before
    import orjson
    import zlib

    blob, position = c.history.load_state("p0")
    saved = orjson.loads(zlib.decompress(blob))
    assert saved["raw"] == 13
    del saved["raw"]
    c.history.save_state("p0", zlib.compress(orjson.dumps(saved)), position)
    d = worker()
    d.on_stored([], "p1", seen=[], offset=5, batch=[_line(7, _T + 1, "h2")])  # p1: none saved
    d.on_stored([], "p1", seen=[], offset=6, batch=[_line(8, _T + 1, "h2")])
    d.on_stored([], "p0", seen=[], offset=13, batch=[_line(9, _T + 1, "h3")] * 3)  # not judged
    d.on_stored([_line(10, _T + 1, "h2")], "p1", seen=[], offset=7,
                batch=[_line(10, _T + 1, "h2")])
    assert sorted((r["group"], r["state"]) for r in d.history.list()) == [
        ("h1", "firing"), ("h2", "firing")]  # h2: its part had no save, every batch judged
    for w in (a, c, d):
        w.stop()
