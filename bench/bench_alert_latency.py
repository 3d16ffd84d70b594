"""How long an alert takes to leave: from the POST of the line that triggers it to the webhook
receiving the alert (issue 20: new-template and anomaly-burst alerts within 1 second).

``PYTHONPATH=<checkout> python bench/bench_alert_latency.py [--probes 20] [--mode full]``

``--mode embedded`` (default) starts ``smartlogs up`` (default settings, a fresh data dir);
``--mode full`` starts the full stack, ``smartlogs api``, ``bridge`` and ``worker`` on the real
engines (URLs from the environment, as ``eval "$(scripts/engines/env.sh)"`` sets them; its own
queue, topics and index prefix, deleted at the end), so the path is API → RabbitMQ → bridge →
Kafka → worker → Elasticsearch → rules → webhook. Either way: two rules (new_template;
anomaly_burst with a threshold of 1, per host) and a local webhook receiver (a real HTTP server
in this process); warms the model up with Linux_2k.log (../shared/data/loghub, or
SMARTLOGS_LOGHUB_DIR), then posts one line at a time: a message pattern never seen (new
template), and a line of a pattern marked always-alert through the template catalog (flagged:
anomaly burst), each from a host of its own, and times each alert: POST sent → webhook request
received. Prints p50/p95/p99/max per kind. Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

RULES = """warmup_lines: 500
rules:
  - {name: new-pattern, kind: new_template, max_per_window: 1000}
  - {name: burst, kind: anomaly_burst, threshold: 1, window: 1m, group_by: host, max_per_window: 1000}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Receiver(BaseHTTPRequestHandler):
    got: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Receiver.got.append((time.monotonic(), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _start_embedded(tmp: Path, env: dict) -> tuple[str, list, callable]:
    port = _free_port()
    env = {**env, "SMARTLOGS_DATA_DIR": str(tmp / "var"), "SMARTLOGS_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "up"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return f"http://127.0.0.1:{port}", [proc], lambda: None


def _start_full(tmp: Path, env: dict) -> tuple[str, list, callable]:
    """api, bridge and worker on the engines, on names of their own (cleaned up after)."""
    tag = uuid.uuid4().hex[:8]
    port = _free_port()
    prefix = f"bench-alerts-{tag}"
    env = {**env, "SMARTLOGS_AMQP_QUEUE": f"bench.ingest.{tag}",
           "SMARTLOGS_AMQP_DLQ": f"bench.ingest.dlq.{tag}",
           "SMARTLOGS_KAFKA_TOPIC": f"bench.raw.{tag}", "SMARTLOGS_KAFKA_DLQ_TOPIC": f"bench.dlq.{tag}",
           "SMARTLOGS_WORKER_ID": f"bench-worker-{tag}", "SMARTLOGS_ES_INDEX_PREFIX": prefix,
           "SMARTLOGS_DATA_DIR": str(tmp / "var"), "SMARTLOGS_PORT": str(port),
           "SMARTLOGS_BRIDGE_METRICS_PORT": str(_free_port()),
           "SMARTLOGS_WORKER_METRICS_PORT": str(_free_port())}
    missing = [k for k in ("SMARTLOGS_AMQP_URL", "SMARTLOGS_KAFKA_BOOTSTRAP", "SMARTLOGS_ES_URL")
               if not env.get(k)]
    if missing:
        raise SystemExit(f"--mode full needs {', '.join(missing)}: "
                         'eval "$(scripts/engines/env.sh)" first')
    procs = [subprocess.Popen([sys.executable, "-m", "smartlogs.cli", verb], env=env,
                              stdout=open(tmp / f"{verb}.log", "w"), stderr=subprocess.STDOUT)
             for verb in ("api", "bridge", "worker")]

    def cleanup() -> None:
        es = env["SMARTLOGS_ES_URL"].rstrip("/")
        try:
            names = httpx.get(f"{es}/_cat/indices/{prefix}*", params={"h": "index"},
                              timeout=10).text.split()
            for name in names:
                httpx.delete(f"{es}/{name}", timeout=30)
            httpx.delete(f"{es}/_index_template/{prefix}", timeout=10)
        except httpx.HTTPError as exc:
            print(f"cleanup of {prefix}* failed: {exc}", file=sys.stderr)
        try:
            import asyncio

            from aiokafka.admin import AIOKafkaAdminClient

            async def drop() -> None:
                admin = AIOKafkaAdminClient(bootstrap_servers=env["SMARTLOGS_KAFKA_BOOTSTRAP"])
                await admin.start()
                try:
                    topics = [t for t in await admin.list_topics() if tag in t]
                    if topics:
                        await admin.delete_topics(topics)
                finally:
                    await admin.close()

            asyncio.run(drop())
        except Exception as exc:  # noqa: BLE001 - a courtesy to the shared broker
            print(f"cleanup of the topics of {tag} failed: {exc}", file=sys.stderr)

    return f"http://127.0.0.1:{port}", procs, cleanup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--mode", choices=("embedded", "full"), default="embedded")
    a = ap.parse_args()
    samples = Path(os.environ.get("SMARTLOGS_LOGHUB_DIR", Path(__file__).resolve().parents[2]
                                  / "shared" / "data" / "loghub"))
    linux = (samples / "Linux" / "Linux_2k.log").read_text(errors="replace").splitlines()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(RULES)
        env = {**os.environ, "SMARTLOGS_SYSLOG_PORT": "0", "SMARTLOGS_ALERT_RULES": str(rules),
               "SMARTLOGS_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{receiver.server_port}/hook"}
        start = _start_full if a.mode == "full" else _start_embedded
        url, procs, cleanup = start(Path(tmp), env)
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"smartlogs ({a.mode}) did not become healthy")
                time.sleep(0.2)
            for k in range(0, len(linux), 500):
                httpx.post(f"{url}/ingest", content="\n".join(linux[k:k + 500]),
                           headers={"Content-Type": "text/plain"}, timeout=30)
            # a pattern an operator marked always-alert: each of its lines is flagged, so an
            # anomaly_burst rule (threshold 1, per host) fires on a line from a new host
            marked = "maintenance override engaged by operator"
            httpx.post(f"{url}/ingest", json={"message": f"{marked} 0", "host": "ops"}, timeout=10)
            tid = None
            deadline = time.monotonic() + 120
            while tid is None and time.monotonic() < deadline:  # warmed up and stored
                time.sleep(1)
                found = httpx.get(f"{url}/api/events", params={"q": "maintenance override"},
                                  timeout=10).json().get("events") or []
                tid = found[0]["template_id"] if found else None
            if tid is None:
                raise SystemExit("the warm-up lines were not stored in time")
            r = httpx.post(f"{url}/api/templates/{tid}/feedback", json={"mark": "always_alert"})
            r.raise_for_status()
            time.sleep(7 if a.mode == "full" else 1)  # the worker reads the marks every 5 s
            _Receiver.got.clear()
            rng = random.Random(1)
            lat: dict[str, list[float]] = {"new_template": [], "anomaly_burst": []}

            def probe(kind: str, msg: str, host: str) -> None:
                t0 = time.monotonic()
                httpx.post(f"{url}/ingest", json={"message": msg, "host": host,
                                                 "level": "ERROR"}, timeout=10)
                deadline = t0 + 10
                while time.monotonic() < deadline:
                    hit = [t for t, body in list(_Receiver.got)
                           if body.get("state") == "firing" and body.get("kind") == kind
                           and (body.get("trigger") or {}).get("message") == msg]
                    if hit:
                        lat[kind].append(hit[0] - t0)
                        return
                    time.sleep(0.005)

            for i in range(a.probes):
                words = " ".join("".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(5))
                probe("new_template", f"probe{i} {words} failed", f"probe-{i}")
                time.sleep(0.2)
                probe("anomaly_burst", f"{marked} {i + 1}", f"ops-{i}")
                time.sleep(0.2)
            print(f"mode {a.mode}, {a.probes} probes per kind")
            for kind, xs in lat.items():
                if xs:
                    print(f"{kind:14} {len(xs)}/{a.probes} alerts: p50 {_pct(xs, 0.5) * 1000:.0f} ms, "
                          f"p95 {_pct(xs, 0.95) * 1000:.0f} ms, p99 {_pct(xs, 0.99) * 1000:.0f} ms, "
                          f"max {max(xs) * 1000:.0f} ms")
                else:
                    print(f"{kind:14} 0/{a.probes} alerts")
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT if a.mode == "embedded" else signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            receiver.shutdown()
            cleanup()


if __name__ == "__main__":
    main()
