"""Alert rules in the full stack (issue 20): the worker evaluates the rules on each batch once
Elasticsearch took it, notifies a webhook (a real HTTP server here), keeps the history in
Elasticsearch, and the API lists it and takes silences."""

from __future__ import annotations

import json
import random
import re
import string
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.integration.stack import run_stack, stack_logs, wait_total

pytestmark = pytest.mark.engines
T0 = 1_700_000_000
RULES = """warmup_lines: 300
rules:
  - {name: new-pattern, kind: new_template}
  - {name: errors, kind: error_flood, level: ERROR, threshold: 5, window: 1m, group_by: host}
"""


class _Hook(BaseHTTPRequestHandler):
    got: list = []

    def do_POST(self):  # noqa: N802
        _Hook.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def alert_stack(tmp_path, rabbitmq, kafka, elasticsearch):
    yield from _stack_with_rules(RULES, tmp_path, rabbitmq, kafka, elasticsearch)


def _stack_with_rules(text, tmp_path, rabbitmq, kafka, elasticsearch):
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    _Hook.got.clear()
    try:
        yield from run_stack(tmp_path, rabbitmq, kafka, elasticsearch, extra_env={
            "SMARTLOGS_ALERT_RULES": str(rules), "SMARTLOGS_SYSLOG_PORT": "0",
            "SMARTLOGS_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_port}/hook"})
    finally:
        hook.shutdown()


def _wait(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.3)
    return None


@pytest.mark.timeout(300)
def test_the_worker_raises_alerts_the_api_lists_and_silences(alert_stack):
    url, procs = alert_stack["url"], alert_stack["procs"]
    now = time.time()  # live lines: judged in arrival time, notified
    warm = [{"message": f"heartbeat ok from worker {i % 7}", "host": "h1", "level": "INFO",
             "timestamp": now + i * 0.01} for i in range(400)]
    r = httpx.post(f"{url}/ingest", json=warm, timeout=30)
    assert r.status_code == 202, r.text
    assert wait_total(url, 400, procs=procs) == 400, stack_logs(alert_stack)
    new = {"message": "disk controller reported a parity fault", "host": "h2", "level": "INFO",
           "timestamp": time.time()}
    httpx.post(f"{url}/ingest", json=[new], timeout=30)
    hit = _wait(lambda: [a for a in _Hook.got if a["kind"] == "new_template"
                         and a["trigger"]["message"] == new["message"]])
    assert hit and hit[0]["state"] == "firing" and hit[0]["lines_learned"] >= 400, \
        (_Hook.got, stack_logs(alert_stack))
    listed = _wait(lambda: httpx.get(f"{url}/api/alerts", params={"rule": "new-pattern"}
                                     ).json()["alerts"])
    assert listed and listed[0]["group"] == hit[0]["group"] and listed[0]["notified"] is True

    # a silence given to the API holds the worker's notifications of that rule and group
    r = httpx.post(f"{url}/api/alerts/silences", json={"rule": "errors", "group": "h3",
                                                       "seconds": 600})
    assert r.status_code == 201, r.text
    assert httpx.post(f"{url}/api/alerts/silences", json={"rule": "nope", "seconds": 60}
                      ).status_code == 422
    flood = [{"message": f"write failed on volume {i}", "host": host, "level": "ERROR",
              "timestamp": time.time()} for host in ("h3", "h4") for i in range(6)]
    httpx.post(f"{url}/ingest", json=flood, timeout=30)
    errs = _wait(lambda: [a for a in httpx.get(f"{url}/api/alerts", params={"rule": "errors"}
                                               ).json()["alerts"] if a["state"] == "firing"]
                 if len({a["group"] for a in httpx.get(f"{url}/api/alerts", params={
                     "rule": "errors"}).json()["alerts"]}) >= 2 else None)
    assert errs, stack_logs(alert_stack)
    by_group = {a["group"]: a for a in errs}
    assert by_group["h3"]["notified"] is False and by_group["h4"]["notified"] is True
    assert {a["group"] for a in _Hook.got if a["rule"] == "errors"} == {"h4"}
    assert httpx.get(f"{url}/api/alerts").json()["silences"][0]["group"] == "h3"


@pytest.fixture
def flood_stack(tmp_path, rabbitmq, kafka, elasticsearch):
    yield from _stack_with_rules(
        "warmup_lines: 0\nrules:\n  - {name: errors, kind: error_flood, level: ERROR, "
        "threshold: 3, window: 4s, group_by: host}\n", tmp_path, rabbitmq, kafka, elasticsearch)


@pytest.mark.timeout(300)
def test_a_flood_lasting_across_a_worker_restart_is_one_alert_resolved_once(flood_stack):
    """Kafka mode: the worker is stopped (SIGTERM) and started again while a host floods
    errors (its lines wait in RabbitMQ/Kafka meanwhile): one firing, one resolved. The stopped
    worker saved the engine's state in Elasticsearch, marked clean; the new one restored it."""
    import base64
    import signal
    import subprocess
    import sys
    import zlib

    import orjson

    url, procs, env = flood_stack["url"], flood_stack["procs"], flood_stack["env"]

    def flood(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            r = httpx.post(f"{url}/ingest", timeout=30, json=[
                {"message": f"write failed on volume {i}", "host": "h1", "level": "ERROR",
                 "timestamp": time.time()} for i in range(4)])
            assert r.status_code == 202, r.text
            time.sleep(0.5)

    flood(3)
    assert _wait(lambda: [a for a in _Hook.got if a["rule"] == "errors"], timeout=90), \
        stack_logs(flood_stack)
    worker = procs["worker"]
    worker.send_signal(signal.SIGTERM)
    flood(2)  # lines keep coming while no worker runs
    worker.wait(60)
    es = env["SMARTLOGS_ES_URL"]
    # the state is saved per partition (and global): h1's group is in its partition's record
    index = f"{es}/{env['SMARTLOGS_ES_INDEX_PREFIX']}.alert-state"
    httpx.post(f"{index}/_refresh")
    docs = {h["_id"]: orjson.loads(zlib.decompress(base64.b64decode(h["_source"]["state"])))
            for h in httpx.get(f"{index}/_search", params={"size": 100}).json()["hits"]["hits"]}
    holding = [k for k, saved in docs.items()
               if any(g[2] == "h1" for g in saved["engine"]["groups"])]
    assert len(holding) == 1 and re.fullmatch(r"p\d+", holding[0]), docs.keys()
    assert docs[holding[0]]["clean"] is True and "engine" not in docs, docs.keys()
    log = open(flood_stack["tmp"] / "worker.log", "a")
    procs["worker"] = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "worker"], env=env,
                                       stdout=log, stderr=subprocess.STDOUT)
    flood(12)  # three windows more of the flood, after the restart
    resolved = _wait(lambda: [a for a in _Hook.got if a["state"] == "resolved"], timeout=90)
    assert resolved, stack_logs(flood_stack)
    time.sleep(3)
    got = [(a["rule"], a["group"], a["state"]) for a in _Hook.got]
    assert got == [("errors", "h1", "firing"), ("errors", "h1", "resolved")], \
        (got, stack_logs(flood_stack))
    assert len({a["id"] for a in _Hook.got}) == 1
    assert re.search(rf"alert engine state {holding[0]} restored \(saved state and history\): "
                     r"1 alert\(s\) open", (flood_stack["tmp"] / "worker.log").read_text())


@pytest.mark.timeout(300)
def test_floods_lasting_while_a_second_worker_joins_are_one_alert_each_resolved_once(flood_stack):
    """Kafka mode, two real workers: eight hosts flood errors (spread over the 4 partitions);
    a second worker joins while they do, and the partitions it takes carry their part of the
    alert engine's state over (saved when revoked from the first worker, restored with its
    open alerts by the second). Each host: one firing, one resolved, one id."""
    from tests.integration.stack import assigned, start_worker

    url = flood_stack["url"]
    hosts = [f"h{i}" for i in range(8)]
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            r = httpx.post(f"{url}/ingest", timeout=30, json=[
                {"message": f"write failed on volume {i}", "host": h, "level": "ERROR",
                 "timestamp": time.time()} for h in hosts for i in range(2)])
            assert r.status_code == 202, r.text
            time.sleep(0.5)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        assert _wait(lambda: len({a["group"] for a in _Hook.got}) == len(hosts), timeout=90), \
            (_Hook.got, stack_logs(flood_stack))
        second = flood_stack["procs"]["worker-b"] = start_worker(flood_stack, "worker-b")
        assert _wait(lambda: assigned(second.metrics_port) > 0, timeout=90), \
            stack_logs(flood_stack)
        time.sleep(12)  # three windows more of the floods, with two workers
    finally:
        stop.set()
        sender.join(30)
    assert _wait(lambda: len([a for a in _Hook.got if a["state"] == "resolved"]) >= len(hosts),
                 timeout=90), (_Hook.got, stack_logs(flood_stack))
    time.sleep(3)
    got = sorted((a["group"], a["state"]) for a in _Hook.got)
    assert got == sorted((h, s) for h in hosts for s in ("firing", "resolved")), \
        (got, stack_logs(flood_stack))
    assert len({a["id"] for a in _Hook.got}) == len(hosts)
    # the second worker took partitions up from their saved records, open alerts included
    log = (flood_stack["tmp"] / "worker-b.log").read_text()
    assert re.search(r"alert engine state p\d restored \(saved state and history\): "
                     r"[1-9]\d* alert\(s\) open", log), log[-3000:]


# -- several workers: global rules judged once, in the stream (the facts topic) -----------------
GLOBAL_RULES = """warmup_lines: 300
rules:
  - {name: new-pattern, kind: new_template, window: 10s}
  - {name: burst, kind: anomaly_burst, threshold: 6, window: 10s}
  - {name: per-comp, kind: anomaly_burst, threshold: 1, window: 1m, group_by: component,
     max_per_window: 3}
  - {name: per-host, kind: anomaly_burst, threshold: 1, window: 1m, group_by: host,
     max_per_window: 3}
"""
MARKED = "maintenance override engaged by operator"


def _hosts_over_partitions(n: int = 4, per: int = 2) -> list[str]:
    """``per`` hosts in each of the raw topic's ``n`` partitions (the partition key is the
    host): whichever worker holds which partitions, each sees some of them."""
    from streams.partitions import partition_of

    out, k = {p: [] for p in range(n)}, 0
    while any(len(v) < per for v in out.values()):
        host = f"node-{k}"
        if len(out[partition_of(host, n)]) < per:
            out[partition_of(host, n)].append(host)
        k += 1
    return [h for p in range(n) for h in out[p]]


def _held(port: int) -> set[int]:
    try:
        detail = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
    except (httpx.TransportError, ValueError):
        return set()
    return {int(p) for p in detail.get("kafka", {}).get("state", {})}


def _two_workers_marked(stack) -> tuple[dict, list[str]]:
    """Warm the model up on every partition, start a second worker, and mark the pattern
    ``MARKED`` always-alert (each of its lines is then flagged: anomaly bursts on demand).
    Returns {name: (process, metrics port)} and the hosts."""
    from tests.integration.stack import start_worker

    url, procs, env = stack["url"], stack["procs"], stack["env"]
    hosts = _hosts_over_partitions()
    now = time.time()
    warm = [{"message": f"heartbeat ok from worker {i % 7}", "host": hosts[i % len(hosts)],
             "level": "INFO", "timestamp": now + i * 0.01} for i in range(400)]
    warm.append({"message": f"{MARKED} 0", "host": hosts[0], "level": "INFO",
                 "timestamp": time.time()})
    assert httpx.post(f"{url}/ingest", json=warm, timeout=30).status_code == 202
    assert wait_total(url, 401, procs=procs) == 401, stack_logs(stack)
    second = procs["worker-b"] = start_worker(stack, "worker-b")
    workers = {"worker": (procs["worker"], int(env["SMARTLOGS_WORKER_METRICS_PORT"])),
               "worker-b": (second, second.metrics_port)}
    def assigned(port):  # raw partitions assigned (a worker lists a partition's state
        try:                # only once a message of it came)
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()[
                "kafka"]["assigned_partitions"]
        except (httpx.TransportError, ValueError, KeyError):
            return 0

    assert _wait(lambda: all(assigned(port) for _, port in workers.values()), timeout=120), \
        stack_logs(stack)

    def spread():  # a line in every partition: each worker shows the partitions it holds
        httpx.post(f"{url}/ingest", json=[{"message": "heartbeat ok from worker 1", "host": h,
                                           "level": "INFO", "timestamp": time.time()}
                                          for h in hosts], timeout=30)
        held = [_held(port) for _, port in workers.values()]
        return (held[0] | held[1] == {0, 1, 2, 3} and not held[0] & held[1]
                and held[0] and held[1])

    assert _wait(spread, timeout=120), stack_logs(stack)
    found = _wait(lambda: httpx.get(f"{url}/api/events", params={"q": MARKED}, timeout=10
                                    ).json().get("events"))
    r = httpx.post(f"{url}/api/templates/{found[0]['template_id']}/feedback",
                   json={"mark": "always_alert"}, timeout=10)
    assert r.status_code < 300, r.text
    time.sleep(7)  # each worker reads the marks every 5 s
    return workers, hosts


def _mid_window() -> None:
    """Wait until at least 4 s are left in the current 10 s window, and 15 s in the minute."""
    while time.time() % 10 > 6 or time.time() % 60 > 45:
        time.sleep(0.2)


@pytest.fixture
def global_stack(tmp_path, rabbitmq, kafka, elasticsearch):
    yield from _stack_with_rules(GLOBAL_RULES, tmp_path, rabbitmq, kafka, elasticsearch)


@pytest.mark.timeout(400)
def test_two_workers_raise_a_global_alert_once_and_its_cap_holds_over_both(global_stack):
    """Two real workers, each holding some of the 4 partitions, hosts in every partition: a
    template new to both workers raises one new_template alert; 8 flagged lines from 8 hosts
    (neither worker sees 6 of them) raise one burst alert; 8 components each flagged once,
    with a cap of 3 firings per window, raise 3 and one 'suppressed' notice over both
    workers (each worker alone would have raised up to 3); so do the 8 hosts of a host rule
    (judged by each worker for its hosts, its firings capped by the holder of partition 0)."""
    url = global_stack["url"]
    workers, hosts = _two_workers_marked(global_stack)
    held = [_held(port) for _, port in workers.values()]
    assert held[0] and held[1] and not held[0] & held[1], held
    _Hook.got.clear()
    _mid_window()
    fault = [{"message": "disk controller reported a parity fault", "host": h, "level": "INFO",
              "timestamp": time.time()} for h in hosts]
    flagged = [{"message": f"{MARKED} {i + 1}", "host": h, "component": f"unit{i}",
                "level": "INFO", "timestamp": time.time()} for i, h in enumerate(hosts)]
    assert httpx.post(f"{url}/ingest", json=fault + flagged, timeout=30).status_code == 202
    assert _wait(lambda: len([a for a in _Hook.got if a["state"] in ("firing", "suppressed")])
                 >= 9, timeout=60), (_Hook.got, stack_logs(global_stack))
    time.sleep(5)  # nothing more comes (a second judge would raise them again)
    got = sorted((a["rule"], a["state"]) for a in _Hook.got if a["state"] != "resolved")
    assert got == [("burst", "firing"), ("new-pattern", "firing"),
                   ("per-comp", "firing"), ("per-comp", "firing"), ("per-comp", "firing"),
                   ("per-comp", "suppressed"), ("per-host", "firing"), ("per-host", "firing"),
                   ("per-host", "firing"), ("per-host", "suppressed")], \
        (got, stack_logs(global_stack))
    new = [a for a in _Hook.got if a["rule"] == "new-pattern"]
    assert new[0]["trigger"]["message"] == fault[0]["message"]
    burst = next(a for a in _Hook.got if a["rule"] == "burst")
    assert burst["count"] >= 6 and burst["group"] == "*"


@pytest.mark.timeout(500)
def test_a_kill_9_of_the_judging_worker_raises_no_global_alert_twice(global_stack):
    """Two real workers; a burst over all sources lasts (flagged lines from hosts in every
    partition, 2 per second) and a new template arrives; the worker judging them (the holder
    of partition 0) is killed with SIGKILL right after raising them. The survivor takes
    partition 0 up from the global record and the history after it, judges the facts after
    the record's position again, and raises neither a second time; the burst resolves once
    after it ends."""
    import signal

    url = global_stack["url"]
    workers, hosts = _two_workers_marked(global_stack)
    judge = next(name for name, (_, port) in workers.items() if 0 in _held(port))
    survivor = next(name for name in workers if name != judge)
    _Hook.got.clear()
    stop = threading.Event()

    def burst():
        i = 0
        while not stop.is_set():
            i += 1
            r = httpx.post(f"{url}/ingest", timeout=30, json=[
                {"message": f"{MARKED} {i}", "host": hosts[i % len(hosts)], "level": "INFO",
                 "timestamp": time.time()}])
            assert r.status_code == 202, r.text
            time.sleep(0.5)

    sender = threading.Thread(target=burst, daemon=True)
    sender.start()
    try:
        httpx.post(f"{url}/ingest", json=[{"message": "fan tray reported an overheating "
                                           "condition", "host": h, "level": "INFO",
                                           "timestamp": time.time()} for h in hosts], timeout=30)
        assert _wait(lambda: {a["rule"] for a in _Hook.got} >= {"burst", "new-pattern"},
                     timeout=60), (_Hook.got, stack_logs(global_stack))
        time.sleep(0.5)
        workers[judge][0].send_signal(signal.SIGKILL)
        workers[judge][0].wait(30)
        _, port = workers[survivor]
        assert _wait(lambda: 0 in _held(port), timeout=120), stack_logs(global_stack)
        time.sleep(15)  # the burst goes on, judged by the survivor now
    finally:
        stop.set()
        sender.join(30)
    assert _wait(lambda: [a for a in _Hook.got if a["rule"] == "burst"
                          and a["state"] == "resolved"], timeout=90), \
        (_Hook.got, stack_logs(global_stack))
    time.sleep(3)
    got = sorted((a["rule"], a["state"]) for a in _Hook.got
                 if a["rule"] in ("burst", "new-pattern"))
    assert got.count(("burst", "firing")) == 1 and got.count(("burst", "resolved")) == 1, got
    assert got.count(("new-pattern", "firing")) == 1, got
    assert len({a["id"] for a in _Hook.got if a["rule"] == "burst"}) == 1
    sent = [(a["id"], a["state"]) for a in _Hook.got]  # host alerts too: none twice
    assert len(sent) == len(set(sent)), sent
    log = (global_stack["tmp"] / f"{survivor}.log").read_text()
    assert re.search(r"alert engine state global restored", log), log[-3000:]


@pytest.mark.timeout(600)
def test_a_batch_stored_by_a_worker_killed_before_its_facts_went_out_is_judged_once(global_stack):
    """Three real workers share the 4 partitions. One of them is killed with SIGKILL right
    after Elasticsearch took a batch (tests/integration/die_after_storing.py) holding the
    first line of a new template, from a host of a partition it holds: before anything of
    the batch's facts went out. The partition moves to a survivor, which processes the batch
    again (Elasticsearch has its events: the write newly stores none) and, the batch being
    past the partition's facts mark (streams/runtime/alert_facts.py), sends its facts: the
    new-template rule over all sources fires once, not zero times (the old code built the
    facts from the events a write newly stored, so the global rules never saw the batch)
    and not twice."""
    import subprocess
    import sys

    from tests.integration.stack import free_port
    from tests.integration.stack import start_worker

    url, procs, env, tmp = (global_stack[k] for k in ("url", "procs", "env", "tmp"))
    new = "power supply unit reported a voltage sag on its rail"
    hosts = _hosts_over_partitions()
    now = time.time()
    warm = [{"message": f"heartbeat ok from worker {i % 7}", "host": hosts[i % len(hosts)],
             "level": "INFO", "timestamp": now + i * 0.01} for i in range(400)]
    assert httpx.post(f"{url}/ingest", json=warm, timeout=30).status_code == 202
    assert wait_total(url, 400, procs=procs) == 400, stack_logs(global_stack)
    procs["worker-b"] = second = start_worker(global_stack, "worker-b")
    port = free_port()
    victim = procs["victim"] = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.die_after_storing"],
        env={**env, "SMARTLOGS_WORKER_METRICS_PORT": str(port),
             "SMARTLOGS_TEST_DIE_AFTER_STORING": new},
        stdout=open(tmp / "victim.log", "w"), stderr=subprocess.STDOUT)
    ports = [int(env["SMARTLOGS_WORKER_METRICS_PORT"]), second.metrics_port, port]

    def up(port):
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
        except httpx.TransportError:
            return None

    last = []

    def spread():  # a line in every partition: each worker shows the partitions it holds;
        # the victim holds some, and the assignment is the same twice in a row (settled)
        httpx.post(f"{url}/ingest", json=[{"message": "heartbeat ok from worker 1", "host": h,
                                           "level": "INFO", "timestamp": time.time()}
                                          for h in hosts], timeout=30)
        held = [_held(p) for p in ports]
        ok = (all(up(p) for p in ports) and held[2] and set().union(*held) == {0, 1, 2, 3}
              and sum(map(len, held)) == 4)
        settled = ok and last == held
        last[:] = held if ok else []
        return settled and held

    held = _wait(spread, timeout=240)
    assert held, stack_logs(global_stack) + (tmp / "victim.log").read_text()[-3000:]
    partition = min(held[2])
    host = hosts[2 * partition]  # (two hosts per partition, in partition order)
    _Hook.got.clear()
    assert httpx.post(f"{url}/ingest", timeout=30, json=[
        {"message": new, "host": host, "level": "INFO", "timestamp": time.time()}]
    ).status_code == 202
    assert victim.wait(90) == -9, (tmp / "victim.log").read_text()[-3000:]
    assert "event(s) stored; SIGKILL" in (tmp / "victim.log").read_text()
    assert not [a for a in _Hook.got if a["rule"] == "new-pattern"]  # nobody judged it yet
    # the batch was stored before the kill
    assert _wait(lambda: httpx.get(f"{url}/api/events", params={"q": "voltage"}, timeout=10
                                   ).json().get("total") == 1, timeout=30)
    fired = _wait(lambda: [a for a in _Hook.got if a["rule"] == "new-pattern"], timeout=180)
    assert fired, (_Hook.got, stack_logs(global_stack), (tmp / "worker-b.log").read_text()[-3000:])
    assert fired[0]["state"] == "firing" and fired[0]["trigger"]["message"] == new
    time.sleep(8)  # nothing more comes (the batch judged twice would not raise it twice
    # either: the judge knows the template now; the facts mark is checked by the unit test)
    got = [(a["rule"], a["state"]) for a in _Hook.got if a["rule"] == "new-pattern"]
    assert got.count(("new-pattern", "firing")) == 1, got
    assert len({a["id"] for a in _Hook.got if a["rule"] == "new-pattern"}) == 1, got


@pytest.mark.timeout(500)
def test_a_judging_worker_frozen_past_the_session_timeout_alerts_again_for_every_partition(
        global_stack):
    """Two real workers; the holder of partition 0 is frozen (SIGSTOP) for 15 s, past the
    10 s session timeout: the other worker takes every partition, fencing the frozen worker's
    state writers, and saves newer states. Thawed, the frozen worker rejoins (often given its
    partitions back). Then a new template from a host of every partition raises its
    new-pattern alert. The old code kept the partitions it was given back with their fenced
    writers: their facts never reached the judge again, so the hosts of those partitions got
    no global alert (bench/RELIABILITY.md, the alert stall). The judge is kept frozen until
    the survivor has taken the global rules' part up: thawed, its write of that part is
    refused (the older code wrote its older state over the survivor's)."""
    import signal

    url, env = global_stack["url"], global_stack["env"]
    workers, hosts = _two_workers_marked(global_stack)
    judge = next(name for name, (_, port) in workers.items() if 0 in _held(port))
    proc, _ = workers[judge]
    state = f"{env['SMARTLOGS_ES_URL']}/{env['SMARTLOGS_ES_INDEX_PREFIX']}.alert-state/_doc/global"

    def claim():  # who took the global rules' part up last (streams.runtime.alerting)
        return httpx.get(state, timeout=10).json().get("_source", {}).get("claim")

    before = claim()
    assert before, state
    proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(15)  # and until the survivor took the judge's part up (its claim)
        assert _wait(lambda: claim() != before, timeout=60), stack_logs(global_stack)
    finally:
        proc.send_signal(signal.SIGCONT)

    def settled():  # both workers hold partitions again, every partition once
        httpx.post(f"{url}/ingest", json=[{"message": "heartbeat ok from worker 1", "host": h,
                                           "level": "INFO", "timestamp": time.time()}
                                          for h in hosts], timeout=30)
        held = [_held(port) for _, port in workers.values()]
        return held[0] | held[1] == {0, 1, 2, 3} and not held[0] & held[1]

    assert _wait(settled, timeout=120), stack_logs(global_stack)
    time.sleep(6)  # past a checkpoint: a fenced writer has failed a transaction by now
    _Hook.got.clear()
    missing = []
    rng = random.Random(20)
    for k, host in enumerate(hosts):  # one new template per host, one at a time (the cap);
        # a length of its own each: no two of them can be one template
        msg = " ".join("".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(3 + k))
        assert httpx.post(f"{url}/ingest", json=[{"message": msg, "host": host, "level": "INFO",
                                                  "timestamp": time.time()}],
                          timeout=30).status_code == 202
        if not _wait(lambda: [a for a in _Hook.got if a["rule"] == "new-pattern"
                              and (a.get("trigger") or {}).get("message") == msg], timeout=30):
            missing.append(host)
    logs = "".join((global_stack["tmp"] / f"{name}.log").read_text()[-4000:] for name in workers)
    assert not missing, (missing, logs)
    # thawed, the frozen worker's write of the parts it had held (at the revocation, or its
    # clock's save) was refused: the survivor's newer parts stayed (the old code overwrote them)
    assert "global was taken up by another worker" in (
        global_stack["tmp"] / f"{judge}.log").read_text(), logs


# -- crash windows of a partition (streams/runtime/alert_facts.py) ------------------------------
HOST_RULES = """warmup_lines: 0
rules:
  - {name: errs, kind: error_flood, level: ERROR, threshold: 1, window: 1m, group_by: host}
"""


@pytest.fixture
def host_stack(tmp_path, rabbitmq, kafka, elasticsearch):
    yield from _stack_with_rules(HOST_RULES, tmp_path, rabbitmq, kafka, elasticsearch)


def _up(port: int):
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
    except httpx.TransportError:
        return None


def _start_victim(stack, module: str, env: dict):
    import subprocess
    import sys

    from tests.integration.stack import free_port

    port = free_port()
    proc = stack["procs"]["victim"] = subprocess.Popen(
        [sys.executable, "-m", module],
        env={**stack["env"], "SMARTLOGS_WORKER_METRICS_PORT": str(port), **env},
        stdout=open(stack["tmp"] / "victim.log", "w"), stderr=subprocess.STDOUT)
    return proc, port


def _error_on_a_victims_host(host_stack, module: str, env: dict, word: str,
                              saved_seconds: float) -> tuple[str, object]:
    """Two real workers sharing the 4 partitions: the stack's and a victim running
    ``module`` (a fault-injection wrapper of the worker, configured by ``env``). Warms the
    hosts, waits until both hold partitions (settled), then ``saved_seconds`` for the
    victim's alert parts to be saved, and sends one ERROR line ``word`` from a host of a
    partition the victim holds. Returns (host, victim process)."""
    url, procs, stack_env, tmp = (host_stack[k] for k in ("url", "procs", "env", "tmp"))
    hosts = _hosts_over_partitions()
    warm = [{"message": f"heartbeat ok from worker {i % 7}", "host": hosts[i % len(hosts)],
             "level": "INFO", "timestamp": time.time()} for i in range(100)]
    assert httpx.post(f"{url}/ingest", json=warm, timeout=30).status_code == 202
    assert wait_total(url, 100, procs=procs) == 100, stack_logs(host_stack)
    victim, port = _start_victim(host_stack, module, env)
    ports = [int(stack_env["SMARTLOGS_WORKER_METRICS_PORT"]), port]
    last = []

    def spread():  # a line in every partition: each worker shows the partitions it holds
        httpx.post(f"{url}/ingest", json=[{"message": "heartbeat ok from worker 1", "host": h,
                                           "level": "INFO", "timestamp": time.time()}
                                          for h in hosts], timeout=30)
        held = [_held(p) for p in ports]
        ok = (all(_up(p) for p in ports) and held[1] and set().union(*held) == {0, 1, 2, 3}
              and sum(map(len, held)) == 4)
        settled = ok and last == held
        last[:] = held if ok else []
        return settled and held

    held = _wait(spread, timeout=240)
    assert held, stack_logs(host_stack) + (tmp / "victim.log").read_text()[-3000:]
    time.sleep(saved_seconds)
    host = hosts[2 * min(held[1])]  # (two hosts per partition, in partition order)
    _Hook.got.clear()
    assert httpx.post(f"{url}/ingest", timeout=30, json=[
        {"message": word, "host": host, "level": "ERROR", "timestamp": time.time()}]
    ).status_code == 202
    return host, victim


@pytest.mark.timeout(600)
def test_a_batch_stored_by_a_worker_killed_before_judging_it_raises_its_host_alert_once(
        host_stack):
    """Two real workers share the 4 partitions. One is killed with SIGKILL right after
    Elasticsearch took a batch (tests/integration/die_after_storing.py) holding an ERROR line
    of a host of a partition it holds: before its host rule judged it. The survivor takes the
    partition and processes the batch again; its write newly stores none of it, and the batch
    lies past what the partition's saved alert part covers, so the host rule (1 error a
    minute) judges it from its stored events: one alert for that host, not zero (the old
    code judged only the events a write newly stored) and not two."""
    url, tmp = host_stack["url"], host_stack["tmp"]
    word = "controller reset the bus after a timeout"
    # (the victim's alert parts are saved every 5 s)
    host, victim = _error_on_a_victims_host(host_stack, "tests.integration.die_after_storing",
                                            {"SMARTLOGS_TEST_DIE_AFTER_STORING": word}, word, 6)
    assert victim.wait(90) == -9, (tmp / "victim.log").read_text()[-3000:]
    assert "event(s) stored; SIGKILL" in (tmp / "victim.log").read_text()
    assert not [a for a in _Hook.got if a["group"] == host]  # nobody judged it yet
    assert _wait(lambda: httpx.get(f"{url}/api/events", params={"q": "controller"}, timeout=10
                                   ).json().get("total") == 1, timeout=30)
    fired = _wait(lambda: [a for a in _Hook.got if a["group"] == host], timeout=180)
    assert fired, (_Hook.got, stack_logs(host_stack))
    assert fired[0]["state"] == "firing" and fired[0]["trigger"]["message"] == word
    time.sleep(8)  # nothing more comes
    got = [(a["rule"], a["state"]) for a in _Hook.got if a["group"] == host]
    assert got.count(("errs", "firing")) == 1 and set(got) == {("errs", "firing")}, got


@pytest.mark.timeout(600)
def test_a_host_alert_forwarded_by_a_worker_killed_before_it_left_arrives_once(host_stack):
    """Two real workers share the 4 partitions. An ERROR line of a host of a partition the
    victim holds raises its host alert there, which the victim forwards to the holder of
    partition 0; the victim (tests/integration/die_before_forwarding.py) stops its event loop
    for 5 s before the alert leaves (its alert parts are saved every second meanwhile) and
    is killed with SIGKILL. The survivor takes the partition: the alert arrives once. The old
    code sent the alert by a plain send and saved the partition's part counting the batch and
    the open alert meanwhile, so the survivor neither processed the batch for the host rule
    nor raised the alert: it never arrived. Now the alert goes in the partition's
    transaction, and the part is not saved before that transaction committed."""
    tmp = host_stack["tmp"]
    word = "disk array lost a member and went degraded"
    # (the victim's alert parts are saved every second)
    host, victim = _error_on_a_victims_host(host_stack, "tests.integration.die_before_forwarding",
                                            {"SMARTLOGS_TEST_DIE_BEFORE_FORWARDING": word}, word, 3)
    assert victim.wait(90) == -9, (tmp / "victim.log").read_text()[-3000:]
    assert "alert(s) to forward; SIGKILL" in (tmp / "victim.log").read_text()
    assert not [a for a in _Hook.got if a["group"] == host]  # it never left the victim
    fired = _wait(lambda: [a for a in _Hook.got if a["group"] == host], timeout=180)
    assert fired, (_Hook.got, stack_logs(host_stack), (tmp / "victim.log").read_text()[-3000:])
    assert fired[0]["state"] == "firing" and fired[0]["trigger"]["message"] == word
    time.sleep(8)  # nothing more comes
    got = [(a["rule"], a["state"]) for a in _Hook.got if a["group"] == host]
    assert got.count(("errs", "firing")) == 1 and set(got) == {("errs", "firing")}, got


def _group_committed(env: dict, partitions) -> dict[int, int | None]:
    """The consumer group's committed offsets of raw partitions (asked of Kafka)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    async def ask():
        consumer = AIOKafkaConsumer(bootstrap_servers=env["SMARTLOGS_KAFKA_BOOTSTRAP"],
                                    group_id=env["SMARTLOGS_WORKER_ID"], enable_auto_commit=False)
        await consumer.start()
        try:
            return {p: await consumer.committed(TopicPartition(env["SMARTLOGS_KAFKA_TOPIC"], p))
                    for p in partitions}
        finally:
            await consumer.stop()

    return asyncio.run(ask())


FIRST_RULES = """warmup_lines: 0
rules:
  - {name: new-pattern, kind: new_template, window: 10s}
"""


@pytest.fixture
def first_stack(tmp_path, rabbitmq, kafka, elasticsearch):
    yield from _stack_with_rules(FIRST_RULES, tmp_path, rabbitmq, kafka, elasticsearch)


@pytest.mark.timeout(600)
def test_a_batch_acked_in_a_partitions_first_seconds_is_judged_after_a_kill_9(first_stack):
    """Two real workers share the 4 partitions before any line was sent (no partition has a
    state yet). One of them has its facts transactions refused
    (tests/integration/refuse_facts.py): its partitions' first batches are stored and acked,
    their facts wait in memory, and no state save of those partitions commits (their first
    seconds, stretched). One new template per host: once the group's commit passed the
    victim's batches, it is killed with SIGKILL, and a line goes to every host. The survivor
    takes its partitions up from
    the state saved when each was taken (a fresh model at its start offset, the facts mark
    with it), processes the batches again, and every host's template raises its new-pattern
    alert once. The old code took the partitions up from the group's committed offset, past
    those batches: the global rules never saw them."""
    import signal

    url, procs, env, tmp = (first_stack[k] for k in ("url", "procs", "env", "tmp"))
    victim, port = _start_victim(first_stack, "tests.integration.refuse_facts", {})
    ports = [int(env["SMARTLOGS_WORKER_METRICS_PORT"]), port]

    def assigned(port):
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()[
                "kafka"]["assigned_partitions"]
        except (httpx.TransportError, ValueError, KeyError):
            return 0

    last = []

    def settled():  # both hold partitions, the same twice in a row 3 s apart
        now = [assigned(p) for p in ports]
        ok = all(now) and last == now
        last[:] = now
        time.sleep(3)
        return ok

    assert _wait(settled, timeout=240), stack_logs(first_stack) + (
        tmp / "victim.log").read_text()[-3000:]
    hosts = _hosts_over_partitions()
    rng = random.Random(2020)
    messages = {h: " ".join("".join(rng.choices(string.ascii_lowercase, k=7))
                            for _ in range(3 + k)) for k, h in enumerate(hosts)}
    assert httpx.post(f"{url}/ingest", timeout=30, json=[
        {"message": m, "host": h, "level": "INFO", "timestamp": time.time()}
        for h, m in messages.items()]).status_code == 202
    assert wait_total(url, len(hosts), procs=procs) == len(hosts), stack_logs(first_stack)

    def victims():  # the victim's partitions, once the group's commit passed their batches
        try:
            state = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()[
                "kafka"]["state"]
        except (httpx.TransportError, ValueError, KeyError):
            return None
        applied = {int(p): s["offset"] for p, s in state.items() if s["offset"]}
        if not applied:
            return None
        committed = _group_committed(env, applied)
        return applied if all((committed[p] or 0) >= o for p, o in applied.items()) else None

    mine = _wait(victims, timeout=60)
    assert mine, (tmp / "victim.log").read_text()[-3000:]
    assert "alert facts of" in (tmp / "victim.log").read_text()  # refused, kept
    lost = {h: m for h, m in messages.items() if _partition(h) in mine}
    assert lost and not [a for a in _Hook.got
                         if (a.get("trigger") or {}).get("message") in lost.values()]
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(30) == -9
    # logs go on (a partition's state is taken up at its next message)
    assert httpx.post(f"{url}/ingest", json=[
        {"message": "heartbeat ok from worker 1", "host": h, "level": "INFO",
         "timestamp": time.time()} for h in hosts], timeout=30).status_code == 202

    def fired():
        got = {(a.get("trigger") or {}).get("message") for a in _Hook.got
               if a["rule"] == "new-pattern" and a["state"] == "firing"}
        return set(messages.values()) <= got

    assert _wait(fired, timeout=180), (sorted(set(lost) - {
        h for h, m in lost.items() if any((a.get("trigger") or {}).get("message") == m
                                          for a in _Hook.got)}), stack_logs(first_stack))
    time.sleep(8)  # nothing more comes
    sent = [(a["id"], a["state"]) for a in _Hook.got]
    assert len(sent) == len(set(sent)), sent
    for m in messages.values():
        assert [a["state"] for a in _Hook.got if a["state"] == "firing"
                and (a.get("trigger") or {}).get("message") == m] == ["firing"], m


def _partition(host: str, n: int = 4) -> int:
    from streams.partitions import partition_of

    return partition_of(host, n)
