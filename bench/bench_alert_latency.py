"""How long an alert takes to leave: from the POST of the line that triggers it to the webhook
receiving the alert (issue 20: new-template and anomaly-burst alerts within 1 second).

``PYTHONPATH=<checkout> python bench/bench_alert_latency.py [--probes 20] [--mode full]
[--workers 2]``

``--mode embedded`` (default) starts ``smartlogs up`` (default settings, a fresh data dir);
``--mode full`` starts the full stack, ``smartlogs api``, ``bridge`` and ``--workers`` N
``worker`` processes (default 1) on the real engines (URLs from the environment, as
``eval "$(scripts/engines/env.sh)"`` sets them; its own queue, topics and index prefix, deleted
at the end), so the path is API → RabbitMQ → bridge → Kafka → worker → Elasticsearch → rules
→ webhook (with several workers, a global rule's facts go on through the facts topic to the
holder of partition 0). Either way: three rules (new_template, a global rule; anomaly_burst
with a threshold of 1 per host, partition-local; the same per component, global) and a local
webhook receiver (a real HTTP server in this process); warms the model up with Linux_2k.log
(../shared/data/loghub, or SMARTLOGS_LOGHUB_DIR), then posts one line at a time: a message
pattern never seen (new template), and a line of a pattern marked always-alert through the
template catalog (flagged: anomaly burst), each from a host and component of its own, and times
each alert: POST sent → webhook request received. Prints p50/p95/p99/max per rule. Results:
bench/RESULTS.md.
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
  - {name: burst-all, kind: anomaly_burst, threshold: 1, window: 1m, group_by: component,
     max_per_window: 1000}
"""
PROBED = {"new-pattern": "new_template (global)", "burst": "anomaly_burst (per host, local)",
          "burst-all": "anomaly_burst (per component, global)"}


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


def _start_full(tmp: Path, env: dict, workers: int = 1) -> tuple[str, list, callable]:
    """api, bridge and ``workers`` workers on the engines, on names of their own (cleaned up
    after); returns once every worker holds partitions."""
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
             for verb in ("api", "bridge")]
    ports = [int(env["SMARTLOGS_WORKER_METRICS_PORT"])] + [_free_port() for _ in range(workers - 1)]
    procs += [subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "worker"],
                               env={**env, "SMARTLOGS_WORKER_METRICS_PORT": str(port)},
                               stdout=open(tmp / f"worker-{k}.log", "w"),
                               stderr=subprocess.STDOUT)
              for k, port in enumerate(ports)]

    def assigned(port: int) -> int:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()[
                "kafka"]["assigned_partitions"]
        except (httpx.TransportError, ValueError, KeyError):
            return 0

    deadline = time.monotonic() + 120
    while not all(assigned(port) for port in ports):
        if time.monotonic() > deadline:
            raise SystemExit(f"the {workers} workers did not all get partitions")
        time.sleep(0.5)

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
    ap.add_argument("--workers", type=int, default=1, help="--mode full: worker processes")
    ap.add_argument("--logs", type=Path, help="copy the services' logs into this directory")
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
        if a.mode == "full":
            url, procs, cleanup = _start_full(Path(tmp), env, a.workers)
        else:
            url, procs, cleanup = _start_embedded(Path(tmp), env)
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
            lat: dict[str, list[float]] = {rule: [] for rule in PROBED}

            def probe(rules: tuple[str, ...], msg: str, host: str, component: str) -> None:
                t0 = time.monotonic()
                httpx.post(f"{url}/ingest", json={"message": msg, "host": host,
                                                 "component": component, "level": "ERROR"},
                           timeout=10)
                deadline, left = t0 + 10, set(rules)
                while left and time.monotonic() < deadline:
                    for rule in list(left):
                        hit = [t for t, body in list(_Receiver.got)
                               if body.get("state") == "firing" and body.get("rule") == rule
                               and (body.get("trigger") or {}).get("message") == msg]
                        if hit:
                            lat[rule].append(hit[0] - t0)
                            left.discard(rule)
                    time.sleep(0.005)
                for rule in left:
                    print(f"{rule}: no alert within 10 s for {msg!r} (posted at "
                          f"{time.strftime('%H:%M:%S', time.gmtime(time.time() - (time.monotonic() - t0)))})")

            for i in range(a.probes):
                words = " ".join("".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(5))
                probe(("new-pattern",), f"probe{i} {words} failed", f"probe-{i}", f"svc-{i}")
                time.sleep(0.2)
                probe(("burst", "burst-all"), f"{marked} {i + 1}", f"ops-{i}", f"unit-{i}")
                time.sleep(0.2)
            print(f"mode {a.mode}" + (f", {a.workers} worker(s)" if a.mode == "full" else "")
                  + f", {a.probes} probes per rule, load average "
                  + " ".join(f"{x:.1f}" for x in os.getloadavg()))
            for rule, xs in lat.items():
                name = PROBED[rule]
                if xs:
                    print(f"{name:40} {len(xs)}/{a.probes} alerts: p50 {_pct(xs, 0.5) * 1000:.0f} ms, "
                          f"p95 {_pct(xs, 0.95) * 1000:.0f} ms, p99 {_pct(xs, 0.99) * 1000:.0f} ms, "
                          f"max {max(xs) * 1000:.0f} ms")
                else:
                    print(f"{name:40} 0/{a.probes} alerts")
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
            if a.logs is not None:
                import shutil

                a.logs.mkdir(parents=True, exist_ok=True)
                for f in Path(tmp).glob("*.log"):
                    shutil.copy(f, a.logs / f.name)


if __name__ == "__main__":
    main()
