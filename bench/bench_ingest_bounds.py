"""What hostile ingest bodies cost the API process (issue 22 items 7 and 9), measured from outside.

Starts `smartlogs up` in a fresh data dir for each scenario and reads the server's peak RSS
(VmHWM) and CPU time from /proc, and how long /healthz takes while the bodies are handled:

* ``tiny``: one body of ``a\\n`` × 450,000 (900 KB);
* ``concurrent``: 8 bodies of 2 MB (``a\\n`` × 1,000,000) posted at once;
* ``within``: 8 bodies of ``a\\n`` × 100,000 (the default line limit) posted at once.

    python bench/bench_ingest_bounds.py [--settle 10] [--only tiny|concurrent|within]

Run it with another checkout first on PYTHONPATH to measure that code (the figures in
bench/RELIABILITY.md compare the commit before issue 22's fixes with the fixed branch).
Linux only (/proc). Short: about a minute.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return hwm, cpu


class Server:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="smartlogs-bounds-")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smartlogs.cli", "up", "--data-dir", self.dir.name,
             "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "SMARTLOGS_SYSLOG_PORT": "0"})
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:  # still busy with what it accepted: not measured
            self.proc.kill()
            self.proc.wait(15)
        self.dir.cleanup()


def _watch_healthz(url: str, stop: threading.Event, worst: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            httpx.get(f"{url}/healthz", timeout=30)
        except httpx.HTTPError:
            pass
        worst[0] = max(worst[0], time.perf_counter() - t0)
        time.sleep(0.1)


def scenario(name: str, bodies: list[bytes], settle: float) -> dict:
    srv = Server()
    try:
        base_rss, base_cpu = _proc(srv.proc.pid)
        stop, worst = threading.Event(), [0.0]
        watcher = threading.Thread(target=_watch_healthz, args=(srv.url, stop, worst))
        watcher.start()
        codes: list[int] = []

        def post(body: bytes) -> None:
            try:
                r = httpx.post(f"{srv.url}/ingest", content=body, timeout=120,
                               headers={"Content-Type": "text/plain"})
                codes.append(r.status_code)
            except httpx.HTTPError as exc:
                codes.append(type(exc).__name__)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answered = time.perf_counter() - t0
        time.sleep(settle)  # what the accepted events cost the pipeline meanwhile, too
        stop.set()
        watcher.join()
        rss, cpu = _proc(srv.proc.pid)
        return {"scenario": name, "codes": sorted(codes, key=str), "answered_s": round(answered, 2),
                "peak_rss_mb": round(rss), "rss_at_start_mb": round(base_rss),
                "cpu_s": round(cpu - base_cpu, 2), "worst_healthz_s": round(worst[0], 3)}
    finally:
        srv.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settle", type=float, default=10.0,
                    help="seconds to keep measuring after the answers (default 10)")
    ap.add_argument("--only", choices=("tiny", "concurrent", "within"))
    args = ap.parse_args()
    if args.only in (None, "tiny"):
        print(scenario("tiny: a\\n x 450,000 (900 KB)", [b"a\n" * 450_000], args.settle))
    if args.only in (None, "concurrent"):
        print(scenario("concurrent: 8 x 2 MB bodies (1M lines each)", [b"a\n" * 1_000_000] * 8,
                       args.settle))
    if args.only in (None, "within"):
        print(scenario("within: 8 x a\\n x 100,000 at once", [b"a\n" * 100_000] * 8, args.settle))


if __name__ == "__main__":
    main()
