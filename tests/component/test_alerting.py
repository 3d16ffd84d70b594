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
from smartlogs.alerting import Notifier
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
