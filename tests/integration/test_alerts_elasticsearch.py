"""The alert engine's state across restarts with its history in the real Elasticsearch (Kafka
mode's store): the same scenario as embedded mode's (tests/component/test_alerting.py), a
condition lasting across a clean restart and a crash raises once and resolves once."""

from __future__ import annotations

import uuid

import pytest
from elasticsearch import Elasticsearch

from streams.runtime.alerting import EsAlertHistory
from tests.component.test_alerting import Receiver, restart_scenario

pytestmark = pytest.mark.engines


@pytest.mark.timeout(120)
def test_a_condition_lasting_across_restarts_raises_once_and_resolves_once_on_elasticsearch(
        elasticsearch):
    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    client = Elasticsearch(elasticsearch, request_timeout=30)
    receiver = Receiver()
    try:
        restart_scenario(lambda: EsAlertHistory(client, prefix), receiver)
        state = client.get(index=f"{prefix}.alert-state", id="engine")["_source"]
        assert state["position"] > 0 and state["state"]
    finally:
        receiver.close()
        for name in (".alerts", ".alert-silences", ".alert-state"):
            client.options(ignore_status=404).indices.delete(index=prefix + name)
        client.close()


def test_a_global_rule_is_raised_once_by_two_workers_from_their_facts():
    """Two workers, each holding one of two partitions: a flood over all sources that
    neither sees alone (6 + 6 errors, the threshold 10) is raised once, by the holder of
    partition 0, over both workers' facts; so are a match and a component-grouped burst; a
    host-grouped flood by the worker that holds the host."""
    import yaml

    from streams.runtime.alerting import Alerting
    from streams.alerts import AlertEngine, assign_rules, load_rules

    rules, _ = load_rules(yaml.safe_load("""
rules:
  - {name: flood, kind: error_flood, level: ERROR, threshold: 10, window: 60s}
  - {name: per-host, kind: error_flood, level: ERROR, threshold: 5, window: 60s, group_by: host}
  - {name: oom, kind: match, query: out of memory, threshold: 2, window: 60s}
  - {name: burst, kind: anomaly_burst, threshold: 3, window: 60s, group_by: component}
"""), "rules.yaml")
    start = 1_800_000_000.0 - 1_800_000_000.0 % 60
    now = [start + 30]

    def line(i, host, **kw):
        return {"id": f"{host}:{i}", "ts": start + i, "received": start + 1 + i * 0.5,
                "timestamp": "", "host": host, "component": kw.get("component", "disk"),
                "source": "http", "level": kw.get("level", "ERROR"), "template_id": "T1",
                "message": kw.get("message", f"write failed on volume {i}"),
                "anomaly": kw.get("anomaly", False), "reason": None, "score": 0.1}

    workers = []
    for held in ({0}, {1}):
        a = Alerting(AlertEngine(rules, warmup_lines=0), _MemoryHistory(), [],
                     clock=lambda: now[0], tick_seconds=3600)
        a.plan = (lambda held=held: assign_rules(rules, held, 2))
        workers.append(a)
    batches = ([line(i, "web1") for i in range(6)] + [line(6, "web1", message="Out of memory")],
               [line(10 + i, "web2", anomaly=True) for i in range(6)]
               + [line(20, "web2", message="out of memory: kill", level="INFO")])
    topic = []
    for a, events in zip(workers, batches):
        topic.append((len(topic), {"lines": len(events), "events": a.on_stored(events)}))
    workers[0].on_facts(topic)  # the holder of partition 0 reads the facts
    for a in workers:
        a.tick()
    raised = [(i, r["rule"], r["group"]) for i, a in enumerate(workers)
              for r in a.history.records]
    assert sorted(raised) == [(0, "burst", "disk"), (0, "flood", "*"), (0, "oom", "*"),
                              (0, "per-host", "web1"), (1, "per-host", "web2")], raised
    now[0] += 120  # the next windows close without: each resolved once, by its raiser
    for a in workers:
        a.tick()
    resolved = sorted((i, r["rule"]) for i, a in enumerate(workers) for r in a.history.records
                      if r["state"] == "resolved")
    assert resolved == [(0, "burst"), (0, "flood"), (0, "oom"), (0, "per-host"),
                        (1, "per-host")], resolved


class _MemoryHistory:
    """The history's in-memory twin (this test is about who raises what)."""

    def __init__(self):
        self.records: list[dict] = []

    def record(self, alert, notified, scope=None):
        from dataclasses import asdict

        self.records.append(asdict(alert))

    def silenced(self, rule, group, now):
        return False

    def position(self):
        return len(self.records)

    def save_state(self, scope, state, position):
        pass

    def load_state(self, scope):
        return None, None

    take_state = load_state

    def follow(self, position):
        pass

    def records_after(self, position, scope=None):
        return iter(())

    def close(self):
        pass


# -- several workers: the engine's state per partition (streams.runtime.alerting) -------------------
_HOST_RULES = ("warmup_lines: 0\nrules:\n  - {name: errors, kind: error_flood, level: ERROR, "
               "threshold: 3, window: 60s, group_by: host}\n")


class _Workers:
    """Workers of one consumer group, simulated: each an ``Alerting`` with its own history
    writer on the same real Elasticsearch (as each worker process has), holding the raw
    partitions the test gives it (``held``), notifying one real webhook receiver."""

    def __init__(self, client, prefix, receiver, rules_text, n_partitions, now):
        import yaml

        from streams.alerts import load_rules

        self.client, self.prefix, self.receiver = client, prefix, receiver
        self.rules, self.warmup = load_rules(yaml.safe_load(rules_text), "rules.yaml")
        self.n, self.now = n_partitions, now
        self.topic: list[tuple[int, dict]] = []  # the facts topic
        self.held: dict[str, set[int]] = {}
        self.workers: dict = {}

    def start(self, name: str, partitions: set[int]):
        import time as _time

        from streams.runtime.alerting import Alerting, EsAlertHistory, Notifier
        from streams.alerts import AlertEngine, assign_rules, scopes_held

        _time.sleep(0.01)  # each writer's sequence starts at its own clock (a later start)
        self.held[name] = set(partitions)
        a = Alerting(AlertEngine(self.rules, warmup_lines=self.warmup),
                     EsAlertHistory(self.client, self.prefix),
                     [Notifier(self.receiver.url, backoff=0.05)], clock=lambda: self.now[0],
                     tick_seconds=3600)
        a.holds = lambda: scopes_held(self.held[name], self.n)
        a.plan = lambda: assign_rules(self.rules, self.held[name], self.n)
        a.start()
        self.workers[name] = a
        return a

    def move(self, partition: int, src: str, dst: str, *, crash: bool = False) -> None:
        """A rebalance: ``src`` saves the partition's part when it is revoked (unless it
        crashed), then ``dst`` holds it; each notices at its next batch or tick."""
        from streams.alerts import scopes_held

        if not crash:
            self.workers[src].save(clean=True, scopes=scopes_held({partition}, self.n),
                                   fence=True)
            self.workers[src].assigned()
        self.held[src].discard(partition)
        self.held[dst].add(partition)

    def store(self, name: str, events: list[dict], owner: str) -> None:
        """Worker ``name`` stored a batch: its facts go to the topic."""
        facts = self.workers[name].on_stored(events, owner)
        if facts is not None:
            self.topic.append((len(self.topic), {"lines": len(events), "events": facts}))

    def read_facts(self) -> None:
        """The worker that judges the facts now reads them from its position."""
        for w in self.workers.values():
            pos = w.facts_position()
            if pos is not None:
                w.on_facts(self.topic[max(pos, 0):])

    def crash(self, name: str) -> None:  # no final save; its notifications were delivered
        for n in self.workers[name].notifiers:
            n.stop()
        del self.workers[name]

    def stop(self) -> None:  # a clean stop of each (its final save)
        for a in self.workers.values():
            a.stop()
        self.workers.clear()

    def state(self, scope: str) -> dict:
        import zlib

        import orjson

        from streams.runtime.alerting import EsAlertHistory

        blob, _ = EsAlertHistory(self.client, self.prefix).load_state(scope)
        return orjson.loads(zlib.decompress(blob))["engine"]

    def facts(self, scope: str) -> int:
        """The facts' position saved with ``scope``'s record."""
        import zlib

        import orjson

        from streams.runtime.alerting import EsAlertHistory

        blob, _ = EsAlertHistory(self.client, self.prefix).load_state(scope)
        return orjson.loads(zlib.decompress(blob))["facts"]


def _errors(t: float, host: str, level: str = "ERROR") -> list[dict]:
    from tests.component.test_alerting import _line

    return [_line(0, t, host, level)]


def _posts(receiver, n: int) -> list[tuple]:
    from tests.component.test_alerting import _wait

    assert _wait(lambda: len(receiver.posts) >= n, timeout=10), receiver.posts
    import time as _time

    _time.sleep(0.3)  # nothing more arrives
    return sorted((p["rule"], p["group"], p["state"]) for p in receiver.posts)


def _cleanup(client, prefix):
    for name in (".alerts", ".alert-silences", ".alert-state"):
        client.options(ignore_status=404).indices.delete(index=prefix + name)


@pytest.mark.timeout(120)
def test_two_workers_save_their_partitions_states_apart_and_an_open_alert_moves_with_its_partition(
        elasticsearch):
    """Workers A (partition 0) and B (partition 1) each see a host flood errors: each saves
    its partition's record (A the global one too) and neither overwrites the other's. Then
    partition 1 moves to A on a clean rebalance while web2 keeps flooding: A carries web2's
    open alert on (no second firing) and resolves it once when the flood ends."""
    from tests.component.test_alerting import Receiver

    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    client = Elasticsearch(elasticsearch, request_timeout=30)
    receiver = Receiver()
    now = [1_800_000_000.0]
    group = _Workers(client, prefix, receiver, _HOST_RULES, 2, now)
    try:
        a, b = group.start("A", {0}), group.start("B", {1})

        def minutes(n, level="ERROR"):  # a line every 10 s from each host, by its holder
            for _ in range(n * 6):
                now[0] += 10
                for name, w in group.workers.items():
                    for p in sorted(group.held[name]):  # web1 is in partition 0, web2 in 1
                        w.on_stored(_errors(now[0], f"web{p + 1}", level), f"p{p}")
                    w.tick()

        minutes(2)
        assert a.save() and b.save()
        p0, p1 = group.state("p0"), group.state("p1")
        assert [(g[0], g[2], bool(g[3]["firing"])) for g in p0["groups"]] == [
            ("errors", "web1", True)]
        assert [(g[0], g[2], bool(g[3]["firing"])) for g in p1["groups"]] == [
            ("errors", "web2", True)]
        assert group.state("global")["groups"] == []  # A holds partition 0: no global rule
        ids = {p["group"]: p["id"] for p in receiver.posts}

        group.move(1, "B", "A")
        minutes(1)  # web2 still floods, now at A: nothing new
        assert _posts(receiver, 2) == [("errors", "web1", "firing"), ("errors", "web2", "firing")]
        assert b.engine.open_alerts() == []  # B forgot partition 1's groups
        minutes(3, level="INFO")  # over: each resolved once
        assert _posts(receiver, 4) == [
            ("errors", "web1", "firing"), ("errors", "web1", "resolved"),
            ("errors", "web2", "firing"), ("errors", "web2", "resolved")]
        assert {p["group"]: p["id"] for p in receiver.posts if p["state"] == "resolved"} == ids
        group.stop()
        assert sorted(g[2] for g in group.state("p1")["groups"]) == ["web2"]  # saved by A now
    finally:
        group.stop()
        receiver.close()
        _cleanup(client, prefix)
        client.close()


@pytest.mark.timeout(120)
def test_a_partition_moving_after_a_crash_resumes_from_its_record_and_the_history_after_it(
        elasticsearch):
    """B saved partition 1's record before web2's flood began and crashed while it lasted:
    A, taking partition 1, applies B's firing written after the save (no second firing) and
    resolves it; A crashes too, and C, taking partition 1 from B's old record, applies A's
    resolution (A's records of it come after B's save whatever their writers' clocks)."""
    from tests.component.test_alerting import Receiver

    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    client = Elasticsearch(elasticsearch, request_timeout=30)
    receiver = Receiver()
    now = [1_800_000_000.0]
    group = _Workers(client, prefix, receiver, _HOST_RULES, 2, now)

    def minutes(w, n, level="ERROR"):
        for _ in range(n * 6):
            now[0] += 10
            w.on_stored(_errors(now[0], "web2", level), "p1")
            w.tick()

    try:
        a = group.start("A", {0})  # A's writer starts first: its sequence is behind B's
        b = group.start("B", {1})
        minutes(b, 1, level="INFO")
        assert b.save()
        minutes(b, 2)  # firing, after the save
        group.crash("B")
        group.move(1, "B", "A", crash=True)
        minutes(a, 1)  # still flooding: the open alert is B's
        assert _posts(receiver, 1) == [("errors", "web2", "firing")]
        minutes(a, 2, level="INFO")  # resolved once, by A
        assert _posts(receiver, 2) == [("errors", "web2", "firing"), ("errors", "web2", "resolved")]
        group.crash("A")
        group.held["A"] = set()
        c = group.start("C", {1})  # B's record, then the records after it: B's and A's
        assert [x.group for x in c.engine.open_alerts()] == []
        minutes(c, 2, level="INFO")
        assert _posts(receiver, 2) == [("errors", "web2", "firing"), ("errors", "web2", "resolved")]
    finally:
        group.stop()
        receiver.close()
        _cleanup(client, prefix)
        client.close()


@pytest.mark.timeout(120)
def test_the_global_rules_state_follows_partition_0(elasticsearch):
    """A flood over all sources (a global rule, judged over the workers' facts by the holder
    of partition 0) lasts while partition 0 moves from A to B: A raised it and saved the
    global record (with the facts' position) when partition 0 was revoked; B takes it up with
    partition 0, raises nothing new while the flood lasts and resolves it once."""
    from tests.component.test_alerting import Receiver

    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    client = Elasticsearch(elasticsearch, request_timeout=30)
    receiver = Receiver()
    now = [1_800_000_000.0]
    rules = ("warmup_lines: 0\nrules:\n  - {name: flood, kind: error_flood, level: ERROR, "
             "threshold: 4, window: 60s}\n")
    group = _Workers(client, prefix, receiver, rules, 3, now)
    seq = [0]

    def minutes(n, errors=True):  # an error every 10 s from web1 (partition 0) and web2 (1)
        for _ in range(n * 6):
            now[0] += 10
            if errors:  # (none: quiet)
                seq[0] += 1
                events = [{"id": f"{host}:{seq[0]}", "ts": now[0] - 5, "received": now[0] - 5,
                           "timestamp": "", "host": host, "component": "disk", "source": host,
                           "level": "ERROR", "template_id": "T1", "message": "write failed",
                           "anomaly": False, "reason": None, "score": 0.1}
                          for host in ("web1", "web2")]
                for p, e in enumerate(events):  # to the holder of its partition
                    holder = next(k for k, held in group.held.items() if p in held)
                    group.store(holder, [e], f"p{p}")
            group.read_facts()
            for w in group.workers.values():
                w.tick()

    try:
        a = group.start("A", {0, 2})
        group.start("B", {1})
        minutes(2)
        assert _posts(receiver, 1) == [("flood", "*", "firing")]
        group.move(0, "A", "B")  # A saves partition 0's part and the global one
        glob = group.state("global")
        assert [(g[0], g[2], bool(g[3]["firing"])) for g in glob["groups"]] == [
            ("flood", "*", True)]
        assert group.facts("global") == len(group.topic)  # every fact judged before it
        minutes(1)  # the flood lasts, now judged by B: nothing new
        assert _posts(receiver, 1) == [("flood", "*", "firing")]
        assert a.engine.open_alerts() == []  # A no longer holds the global rules' groups
        minutes(3, errors=False)  # over: resolved once, by B
        assert _posts(receiver, 2) == [("flood", "*", "firing"), ("flood", "*", "resolved")]
        assert len({p["id"] for p in receiver.posts}) == 1
        group.stop()  # B saves the global record: the alert is over
        assert [bool(g[3]["firing"]) for g in group.state("global")["groups"]] == [False]
    finally:
        group.stop()
        receiver.close()
        _cleanup(client, prefix)
        client.close()


@pytest.mark.timeout(120)
def test_a_worker_frozen_past_the_session_timeout_cannot_overwrite_the_survivors_state(
        elasticsearch):
    """A holds both partitions (the judge) and saved; it is frozen past the session timeout
    and B takes both partitions (A saves nothing: frozen). web2 floods: B fires and saves.
    A wakes up still believing it holds them and finishes its in-flight batch (the same
    lines): its older state would fire the same alert again and its save (the clock's, or
    the revocation's) would overwrite B's newer parts. Now A's alert is neither notified nor
    recorded, its saves are refused, it drops the parts (not taken up again before the next
    assignment) and B's parts stay, B saving on; after the next assignment A takes up what
    it holds then, from B's save. The old code notified the firing twice and replaced B's
    parts with A's."""
    import base64

    from tests.component.test_alerting import Receiver

    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    client = Elasticsearch(elasticsearch, request_timeout=30)
    receiver = Receiver()
    now = [1_800_000_000.0]
    group = _Workers(client, prefix, receiver, _HOST_RULES, 2, now)

    def minutes(w, n, level="ERROR"):  # a line every 10 s from web2 (partition 1)
        lines = []
        for _ in range(n * 6):
            now[0] += 10
            lines += _errors(now[0], "web2", level)
            w.on_stored(lines[-1:], "p1")
            w.tick()
        return lines

    def doc(scope):
        return client.get(index=f"{prefix}.alert-state", id=scope)["_source"]

    try:
        a = group.start("A", {0, 1})
        minutes(a, 1, level="INFO")
        assert a.save(clean=True)
        b = group.start("B", set())
        group.move(0, "A", "B", crash=True)  # A is frozen: B takes both partitions
        group.move(1, "A", "B", crash=True)
        flood = minutes(b, 1)  # web2 floods: B fires
        assert _posts(receiver, 1) == [("errors", "web2", "firing")]
        assert b.save(clean=True)
        survivor = {s: doc(s) for s in ("p0", "p1", "global")}
        assert [bool(g[3]["firing"]) for g in group.state("p1")["groups"]] == [True]

        group.held["A"] = {0, 1}  # A wakes up: it still believes it holds both
        a.on_stored(flood, "p1")  # its in-flight batch: its older state fires again
        a.tick()
        assert a.save(clean=True) is False  # the revocation's save: refused
        assert _posts(receiver, 1) == [("errors", "web2", "firing")]  # not notified twice
        assert {s: doc(s) for s in survivor} == survivor  # B's parts stay
        assert a.engine.open_alerts() == []  # A dropped the parts it lost
        a.on_stored(_errors(now[0] + 1, "web2"), "p1")
        a.tick()  # ... and does not take them up again before the next assignment
        assert a.engine.open_alerts() == [] and {s: doc(s) for s in survivor} == survivor
        base64.b64decode(doc("p1")["state"])  # a whole part, not a claim only

        assert b.save(clean=True)  # B, the owner, saves on
        # the next assignment: A gets partition 0 back (B saved it when it was revoked)
        group.held["A"] = set()
        group.move(0, "B", "A")
        a.assigned(retake=True)
        now[0] += 10
        a.tick()
        b.tick()
        assert a.save(clean=True)  # A owns partition 0's part and the global one again
        assert b.save(clean=True)  # B still owns partition 1's
        assert [bool(g[3]["firing"]) for g in group.state("p1")["groups"]] == [True]
        assert _posts(receiver, 1) == [("errors", "web2", "firing")]
    finally:
        group.stop()
        receiver.close()
        _cleanup(client, prefix)
        client.close()


class _Killed(BaseException):
    """The judging worker is killed (-9) here: nothing after this line of it runs."""


@pytest.mark.timeout(120)
def test_a_judge_killed_between_notifying_and_recording_repeats_the_alert_with_the_same_id(
        elasticsearch):
    """Delivery is at least once: A, the holder of partition 0, judges a flood from the
    facts, hands the firing to the notifier (the receiver gets it) and is killed before its
    history record is written. B takes partition 0 up from A's last save, judges the facts
    after it again and sends the firing once more: with the same X-SmartLogs-Alert-Id and the
    same alert (id, state, window, count, trigger), so the receiver can drop it; the history
    keeps one record of it."""
    from tests.component.test_alerting import Receiver

    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    client = Elasticsearch(elasticsearch, request_timeout=30)
    receiver = Receiver()
    now = [1_800_000_000.0]
    rules = ("warmup_lines: 0\nrules:\n  - {name: flood, kind: error_flood, level: ERROR, "
             "threshold: 4, window: 60s}\n")
    group = _Workers(client, prefix, receiver, rules, 2, now)

    def lines(n, level):  # from web2 (partition 1, held by B): facts for the judge
        for _ in range(n):
            now[0] += 5
            group.store("B", _errors(now[0], "web2", level), "p1")

    try:
        a = group.start("A", {0})
        group.start("B", {1})
        lines(3, "INFO")
        group.read_facts()
        assert a.save(clean=True)  # the global part, with the position of the next fact

        def killed(*args, **kwargs):
            raise _Killed

        a.history.record = killed
        lines(4, "ERROR")
        with pytest.raises(_Killed):
            group.read_facts()  # A: notified, killed before the record
        assert _posts(receiver, 1) == [("flood", "*", "firing")]
        group.crash("A")
        group.move(0, "A", "B", crash=True)
        group.read_facts()  # B goes on from A's save: the flood is judged again
        assert _posts(receiver, 2) == [("flood", "*", "firing"), ("flood", "*", "firing")]
        first, again = receiver.posts
        assert receiver.ids[0] == receiver.ids[1] == f"{first['id']}|firing"
        same = ("id", "state", "rule", "group", "window_start", "window_end", "count", "trigger")
        assert {k: again[k] for k in same} == {k: first[k] for k in same}
        client.indices.refresh(index=f"{prefix}.alerts")
        assert client.count(index=f"{prefix}.alerts")["count"] == 1  # one record of it
    finally:
        group.stop()
        receiver.close()
        _cleanup(client, prefix)
        client.close()
