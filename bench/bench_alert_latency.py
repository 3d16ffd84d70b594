"""How long an alert takes to leave: from the POST of the line that triggers it to the webhook
receiving the alert (issue 20: new-template and anomaly-burst alerts within 1 second).

``PYTHONPATH=<checkout> python bench/bench_alert_latency.py [--probes 20]`` starts
``smartlogs up`` (embedded, default settings, a fresh data dir) with two rules (new_template;
anomaly_burst with a threshold of 1, per host) and a local webhook receiver (a real HTTP
server in this process), warms the model up with Linux_2k.log (../shared/data/loghub, or
SMARTLOGS_LOGHUB_DIR), then posts one line at a time: a message pattern never seen (new
template), and a line of a pattern marked always-alert through the template catalog (flagged:
anomaly burst), each from a host of its own, and times each alert: POST sent → webhook
request received. Prints p50/p95/max per kind. Results: bench/RESULTS.md.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=20)
    a = ap.parse_args()
    samples = Path(os.environ.get("SMARTLOGS_LOGHUB_DIR", Path(__file__).resolve().parents[2]
                                  / "shared" / "data" / "loghub"))
    linux = (samples / "Linux" / "Linux_2k.log").read_text(errors="replace").splitlines()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(RULES)
        port = _free_port()
        env = {**os.environ, "SMARTLOGS_DATA_DIR": str(Path(tmp) / "var"),
               "SMARTLOGS_PORT": str(port), "SMARTLOGS_SYSLOG_PORT": "0",
               "SMARTLOGS_ALERT_RULES": str(rules),
               "SMARTLOGS_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{receiver.server_port}/hook"}
        proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "up"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("smartlogs up did not become healthy")
                time.sleep(0.2)
            for k in range(0, len(linux), 500):
                httpx.post(f"{url}/ingest", content="\n".join(linux[k:k + 500]),
                           headers={"Content-Type": "text/plain"}, timeout=30)
            # a pattern an operator marked always-alert: each of its lines is flagged, so an
            # anomaly_burst rule (threshold 1, per host) fires on a line from a new host
            marked = "maintenance override engaged by operator"
            httpx.post(f"{url}/ingest", json={"message": f"{marked} 0", "host": "ops"}, timeout=10)
            time.sleep(3)  # warmed up and stored
            tid = httpx.get(f"{url}/api/events", params={"q": "maintenance override"}
                            ).json()["events"][0]["template_id"]
            r = httpx.post(f"{url}/api/templates/{tid}/feedback", json={"mark": "always_alert"})
            r.raise_for_status()
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
            for kind, xs in lat.items():
                if xs:
                    print(f"{kind:14} {len(xs)}/{a.probes} alerts: p50 {_pct(xs, 0.5) * 1000:.0f} ms, "
                          f"p95 {_pct(xs, 0.95) * 1000:.0f} ms, max {max(xs) * 1000:.0f} ms")
                else:
                    print(f"{kind:14} 0/{a.probes} alerts")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            receiver.shutdown()


if __name__ == "__main__":
    main()
