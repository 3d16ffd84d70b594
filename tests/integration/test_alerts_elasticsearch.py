"""The alert engine's state across restarts with its history in the real Elasticsearch (Kafka
mode's store): the same scenario as embedded mode's (tests/component/test_alerting.py), a
condition lasting across a clean restart and a crash raises once and resolves once."""

from __future__ import annotations

import uuid

import pytest
from elasticsearch import Elasticsearch

from smartlogs.alerting import EsAlertHistory
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


@pytest.mark.timeout(120)
def test_a_global_rule_is_raised_once_by_two_workers_from_the_stores_window_counts(elasticsearch):
    """Two workers, each holding one of two partitions, each storing its hosts' lines in the
    real Elasticsearch: a flood over all sources that neither sees alone (6 + 6 errors, the
    threshold 10) is raised once, by the holder of partition 0, from the store's counts; a
    host-grouped flood by the worker that holds the host; the counts per kind are the
    store's."""
    import yaml

    from smartlogs.alerting import Alerting, EsWindowCounts
    from smartlogs.store.elasticsearch import ElasticsearchStore
    from streams.alerts import AlertEngine, assign_rules, load_rules

    rules, _ = load_rules(yaml.safe_load("""
rules:
  - {name: flood, kind: error_flood, level: ERROR, threshold: 10, window: 60s}
  - {name: per-host, kind: error_flood, level: ERROR, threshold: 5, window: 60s, group_by: host}
  - {name: oom, kind: match, query: out of memory, threshold: 2, window: 60s}
  - {name: burst, kind: anomaly_burst, threshold: 3, window: 60s, group_by: component}
"""), "rules.yaml")
    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    store = ElasticsearchStore(elasticsearch, index_prefix=prefix, refresh="wait_for")
    start = 1_800_000_000.0 - 1_800_000_000.0 % 60
    now = [start + 30]

    def line(i, host, **kw):
        return {"id": f"{host}:{i}", "ts": start + i, "received": start + 1 + i * 0.5,
                "timestamp": "", "host": host, "component": kw.get("component", "disk"),
                "source": "http", "level": kw.get("level", "ERROR"), "template_id": "T1",
                "message": kw.get("message", f"write failed on volume {i}"),
                "anomaly": kw.get("anomaly", False), "reason": None, "score": 0.1}

    workers = []
    try:
        for held in ({0}, {1}):
            a = Alerting(AlertEngine(rules, warmup_lines=0), _MemoryHistory(), [],
                         clock=lambda: now[0], tick_seconds=3600)
            a.plan = (lambda held=held: assign_rules(rules, held, 2))
            a.global_counts = EsWindowCounts(store.client, store.pattern)
            workers.append(a)
        batches = ([line(i, "web1") for i in range(6)] + [line(6, "web1", message="Out of memory")],
                   [line(10 + i, "web2", anomaly=True) for i in range(6)]
                   + [line(20, "web2", message="out of memory: kill", level="INFO")])
        for a, events in zip(workers, batches):
            store.write(events, window_seconds=60)
            a.on_stored(events)
        counts = EsWindowCounts(store.client, store.pattern)
        assert counts(rules[0], start, start + 60)[0] == {"*": 13}
        assert counts(rules[1], start, start + 60)[0] == {"web1": 7, "web2": 6}
        assert counts(rules[2], start, start + 60)[0] == {"*": 2}
        assert counts(rules[3], start, start + 60)[0] == {"disk": 6}
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
    finally:
        store.delete_before(4e9)
        store.client.options(ignore_status=404).indices.delete_index_template(name=prefix)
        store.close()


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

    def follow(self, position):
        pass

    def records_after(self, position, scope=None):
        return iter(())

    def close(self):
        pass
