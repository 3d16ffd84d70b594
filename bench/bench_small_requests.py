"""Small requests: many clients posting one line per request (curl, application loggers).

Starts a fresh embedded `smartlogs up` (or uses --url, e.g. the full stack's API), then C
concurrent clients each POST one text line per request to /ingest until N lines were accepted
(202). Reports accepted lines/s (202 means on disk: the spool's commit, or the broker's
confirm), and stored-and-searchable lines/s (until /api/events counts them all).

    python bench/bench_small_requests.py --clients 32 --lines 20000 --record bench/RESULTS.md
    python bench/bench_small_requests.py --clients 1 --lines 3000
    python bench/bench_small_requests.py --url http://127.0.0.1:8000 --label "full stack"
    python bench/bench_small_requests.py --wrk --seconds 10     # wrk as the client (apt install wrk)
    python bench/bench_small_requests.py --wrk --full-stack     # api+bridge+worker on the engines

``--full-stack`` starts the API, a bridge and a worker on the real engines (queues, topics and
indices of their own, deleted afterwards; see bench_full_stack.start_stack): 202 then means
RabbitMQ confirmed the message. Every run records the load average (the machine may be
shared) and the CPU time of the API process per request, a figure a busy machine disturbs
less than the rates.

The Python client (httpx, asyncio) costs more CPU per request than the server on two cores, so
it measures itself as much as SmartLogs; ``--wrk`` drives the same requests from wrk (C), which
leaves the cores to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embedded import embedded_server  # noqa: E402
from bench_full_stack import cpu_seconds, full_stack  # noqa: E402


@contextmanager
def _api_pid(stack):
    """(url, the API's pid) of a running ``full_stack``."""
    with stack as (url, procs):
        yield url, procs[0].pid


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the shards of `smartlogs up`)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def post_lines(url: str, clients: int, lines: int, tag: str) -> dict:
    counter = iter(range(lines))
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        async def client() -> None:
            for i in counter:
                while True:
                    r = await http.post("/ingest", content=f"{tag} small request line {i}\n",
                                        headers={"Content-Type": "text/plain"})
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 202:
                        break
                    await asyncio.sleep(float(r.headers.get("retry-after", "0.1")))

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return {"accept_s": time.perf_counter() - t0, "statuses": statuses, "t0": t0}


def run_wrk(url: str, clients: int, seconds: float, tag: str) -> dict:
    """wrk POSTing one line per request for ``seconds``; (requests/s, non-2xx count)."""
    import re
    import shutil
    import subprocess
    import tempfile

    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk), or run without --wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'wrk.method = "POST"\nwrk.body = "{tag} small request line\\n"\n'
                'wrk.headers["Content-Type"] = "text/plain"\n')
    out = subprocess.run([wrk, f"-t{min(2, clients)}", f"-c{clients}", f"-d{seconds:g}s", "-s", f.name,
                          f"{url}/ingest"], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    total = int(re.search(r"(\d+) requests in", out)[1])
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "requests": total, "non_2xx": int(bad[1]) if bad else 0}


def _emit(text: str, record: Path | None) -> None:
    """Print a results section, and append it to ``record`` when given."""
    print(text)
    if record:
        with open(record, "a") as f:
            f.write(text + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--url", help="an API that is already running (default: start an embedded one)")
    ap.add_argument("--label", default="embedded")
    ap.add_argument("--record", type=Path, help="append a results section to this Markdown file")
    ap.add_argument("--wrk", action="store_true", help="use wrk (C) as the client instead of httpx")
    ap.add_argument("--seconds", type=float, default=10.0, help="with --wrk: how long")
    ap.add_argument("--full-stack", action="store_true",
                    help="start api+bridge+worker on the real engines instead of `smartlogs up`")
    args = ap.parse_args()
    tag = "small" + uuid.uuid4().hex[:10]
    if args.full_stack and args.label == "embedded":
        args.label = "full stack"

    def server():
        """(url, pid of the API process) of a fresh server of the kind asked for."""
        if args.full_stack:
            return _api_pid(full_stack(tag[5:13]))
        return embedded_server({"SMARTLOGS_SYSLOG_PORT": "0", "SMARTLOGS_RATE_LIMIT_PER_KEY": "0"})

    def run(url: str) -> dict:
        res = asyncio.run(post_lines(url, args.clients, args.lines, tag))
        with httpx.Client(base_url=url, timeout=30) as c:
            while c.get("/api/events", params={"q": tag, "limit": 1, "exact_total": "true"}).json()["total"] < args.lines:
                time.sleep(0.05)
        res["stored_s"] = time.perf_counter() - res["t0"]
        return res

    if args.wrk:
        def wrk_stored(url: str, res: dict) -> dict:
            """How many of the accepted lines are stored and searchable (waits up to 120 s)."""
            with httpx.Client(base_url=url, timeout=30) as c:
                deadline = time.monotonic() + 120
                while (c.get("/api/events", params={"q": tag, "limit": 1, "exact_total": "true"}).json()["total"]
                       < res["requests"] - res["non_2xx"]) and time.monotonic() < deadline:
                    time.sleep(0.2)
                return {"stored": c.get("/api/events", params={"q": tag, "limit": 1, "exact_total": "true"}).json()["total"]}

        def wrk_run(url: str) -> dict:
            res = run_wrk(url, args.clients, args.seconds, tag)
            return {**res, **wrk_stored(url, res)}

        load = load_average()
        if args.url:
            res, cpu, shards = wrk_run(args.url), None, 0.0
        else:
            with server() as (url, pid):
                before, kids = cpu_seconds(pid), {k: cpu_seconds(k) for k in children(pid)}
                res = run_wrk(url, args.clients, args.seconds, tag)
                cpu = (cpu_seconds(pid) - before) / max(res["requests"], 1) * 1e6
                res = {**res, **wrk_stored(url, res)}
                # the shard processes (embedded): until what was accepted is stored
                shards = sum(cpu_seconds(k) - c for k, c in kids.items()) / max(res["stored"], 1) * 1e6
        load = f"{load} before, {load_average()} after"
        text = "\n".join([
            f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · small requests ({args.label}, wrk): "
            f"{args.clients} connections, one line per POST, {args.seconds:g} s",
            "",
            f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average "
            f"{load}",
            "",
            f"- accepted (202, {'confirmed by RabbitMQ' if args.full_stack else 'on disk'}): "
            f"**{res['rate']:,.0f} lines/s** ({res['requests']:,} requests, "
            f"{res['non_2xx']} not 2xx); stored and searchable afterwards: {res['stored']:,}",
            *([f"- CPU of the API process (`smartlogs {'api' if args.full_stack else 'up'}`): "
               f"{cpu:,.0f} µs per request"] if cpu else []),
            *([f"- CPU of its shard processes, together: {shards:,.0f} µs per line stored"]
              if shards else []),
            "",
        ])
        _emit(text, args.record)
        return
    cpu_us = None
    if args.url:
        res = run(args.url)
    else:
        with server() as (url, pid):
            before = cpu_seconds(pid)
            res = run(url)
            cpu_us = (cpu_seconds(pid) - before) / args.lines * 1e6
    text = "\n".join([
        f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · small requests ({args.label}): "
        f"{args.clients} concurrent clients, one line per POST",
        "",
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{load_average()} after",
        "",
        f"- accepted (202, {'confirmed by RabbitMQ' if args.full_stack else 'on disk'}): "
        f"**{args.lines / res['accept_s']:,.0f} lines/s** "
        f"({args.lines:,} requests in {res['accept_s']:.1f} s; answers {res['statuses']})",
        f"- stored and searchable: **{args.lines / res['stored_s']:,.0f} lines/s**",
        *([f"- CPU of the API process (`smartlogs {'api' if args.full_stack else 'up'}`): "
           f"{cpu_us:,.0f} µs per request "
           f"(user+system; a figure that a busy machine disturbs less than the rates)"]
          if cpu_us is not None else []),
        "",
    ])
    _emit(text, args.record)


if __name__ == "__main__":
    main()
