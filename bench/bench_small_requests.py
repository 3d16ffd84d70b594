"""Small requests: many clients posting one line per request (curl, application loggers).

Starts a fresh embedded `smartlogs up` (or, with ``--full-stack``, an API, a bridge and a
worker on the real engines), then C concurrent clients each POST one text line per request
to /ingest, keep-alive, for ``--seconds``; then waits until every accepted line is stored and
searchable. Reports accepted lines/s (202 means on disk: the spool's commit; or RabbitMQ's
confirm) and the CPU time (user+system, from /proc and getrusage) of every process: the API
and the client per request, the shards (embedded) or the bridge and worker (full stack) per
line stored, each with its system (kernel) share, and the load average before and after each
run (the machine may be shared: the CPU figures are disturbed far less than the rates).

    python bench/bench_small_requests.py --clients 1 32 --client both --record bench/RESULTS.md
    python bench/bench_small_requests.py --clients 32 --repeat 3          # wrk only
    python bench/bench_small_requests.py --clients 32 --full-stack        # needs the engines

Two clients: ``wrk`` (C, apt install wrk) and ``httpx`` (asyncio, in this process). The Python
client costs more CPU per request than the server does, on the same two cores, so it measures
itself as much as SmartLogs; wrk leaves the cores to the server.
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
from bench_full_stack import full_stack  # noqa: E402


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the shards of `smartlogs up`)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def post_lines(url: str, clients: int, seconds: float, tag: str) -> dict:
    """``clients`` concurrent httpx clients, each POSTing one line per request (waiting for
    its answer) until ``seconds`` have passed; the answers by status."""
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        t0 = time.perf_counter()
        end = t0 + seconds

        async def client(c: int) -> None:
            i = 0
            while time.perf_counter() < end:
                r = await http.post("/ingest", content=f"{tag} small request line {c}.{i}\n",
                                    headers={"Content-Type": "text/plain"})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                i += 1
                if r.status_code != 202:
                    await asyncio.sleep(float(r.headers.get("retry-after", "0.1")))

        await asyncio.gather(*(client(c) for c in range(clients)))
        return {"accept_s": time.perf_counter() - t0, "statuses": statuses}


def run_wrk(url: str, clients: int, seconds: float, tag: str) -> dict:
    """wrk POSTing one line per request for ``seconds``: requests/s, requests, non-2xx, and
    wrk's own CPU seconds (user, system)."""
    import re
    import resource
    import shutil
    import subprocess
    import tempfile

    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk), or run with --client httpx")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'wrk.method = "POST"\nwrk.body = "{tag} small request line\\n"\n'
                'wrk.headers["Content-Type"] = "text/plain"\n')
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([wrk, f"-t{min(2, clients)}", f"-c{clients}", f"-d{seconds:g}s", "-s", f.name,
                          f"{url}/ingest"], capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk was waited for: its CPU is in
    os.unlink(f.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    total = int(re.search(r"(\d+) requests in", out)[1])
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "requests": total, "non_2xx": int(bad[1]) if bad else 0,
            "client_cpu": (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)}


def run_httpx(url: str, clients: int, seconds: float, tag: str) -> dict:
    """The Python client (httpx, asyncio, this process) for about ``seconds``: the same
    fields as :func:`run_wrk`."""
    t0 = os.times()
    res = asyncio.run(post_lines(url, clients, seconds, tag))
    t1 = os.times()
    ok = res["statuses"].get(202, 0)
    return {"rate": ok / res["accept_s"], "requests": sum(res["statuses"].values()),
            "non_2xx": sum(n for code, n in res["statuses"].items() if code != 202),
            "client_cpu": (t1.user - t0.user, t1.system - t0.system)}


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (0, 0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def stored_count(url: str, tag: str, want: int, wait: float = 120) -> int:
    """How many of the tagged lines are stored and searchable (waits up to ``wait`` s for
    ``want``)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        deadline = time.monotonic() + wait
        while True:
            n = c.get("/api/events", params={"q": tag, "limit": 1, "exact_total": "true"}).json()["total"]
            if n >= want or time.monotonic() > deadline:
                return n
            time.sleep(0.2)


def measure(url: str, procs: dict[str, list[int]], client: str, clients: int, seconds: float,
            tag: str) -> dict:
    """One run: the client posting for ``seconds``; then until what was accepted is stored.
    CPU µs of each named group of processes (user+system, and the system share), per request
    for the API and the client, per line stored for the processes behind the API."""
    load_before = load_average()
    before = {name: [proc_cpu(p) for p in pids] for name, pids in procs.items()}
    go = run_wrk if client == "wrk" else run_httpx
    res = go(url, clients, seconds, tag)
    api_after = [proc_cpu(p) for p in procs["API"]]
    accepted = res["requests"] - res["non_2xx"]
    stored = stored_count(url, tag, accepted)
    after = {name: [proc_cpu(p) for p in pids] for name, pids in procs.items()}
    after["API"] = api_after  # the API's figure: while the client ran, not the wait after it
    cpu = {}
    for name in procs:
        user = sum(a[0] - b[0] for a, b in zip(after[name], before[name]))
        system = sum(a[1] - b[1] for a, b in zip(after[name], before[name]))
        per = res["requests"] if name == "API" else stored
        cpu[name] = ((user + system) / max(per, 1) * 1e6, system / max(user + system, 1e-9))
    user, system = res["client_cpu"]
    cpu[f"client ({client})"] = ((user + system) / max(res["requests"], 1) * 1e6,
                                 system / max(user + system, 1e-9))
    return {**res, "stored": stored, "cpu": cpu, "clients": clients, "client": client,
            "load": f"{load_before} → {load_average()}"}


def _emit(text: str, record: Path | None) -> None:
    """Print a results section, and append it to ``record`` when given."""
    print(text)
    if record:
        with open(record, "a") as f:
            f.write(text + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[32],
                    help="concurrent clients (connections); several: one run each")
    ap.add_argument("--client", choices=("wrk", "httpx", "both"), default="wrk",
                    help="wrk (C; the default) or the Python httpx client, or both in turn")
    ap.add_argument("--wrk", action="store_true", help="same as --client wrk (kept for old commands)")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long each run posts")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each kind, in turn")
    ap.add_argument("--label", default=None)
    ap.add_argument("--record", type=Path, help="append a results section to this Markdown file")
    ap.add_argument("--full-stack", action="store_true",
                    help="start api+bridge+worker on the real engines instead of `smartlogs up`")
    args = ap.parse_args()
    label = args.label or ("full stack" if args.full_stack else "embedded")
    tag = "small" + uuid.uuid4().hex[:10]
    kinds = ("wrk", "httpx") if args.client == "both" else (args.client,)

    def server():
        """(url, {group: pids}) of a fresh server of the kind asked for."""
        if args.full_stack:
            @contextmanager
            def stack():
                with full_stack(tag[5:13]) as (url, ps):
                    yield url, {"API": [ps[0].pid], "bridge": [ps[1].pid],
                                "worker": [p.pid for p in ps[2:]]}
            return stack()

        @contextmanager
        def embedded():
            with embedded_server({"SMARTLOGS_SYSLOG_PORT": "0", "SMARTLOGS_RATE_LIMIT_PER_KEY": "0"}
                                 ) as (url, pid):
                yield url, {"API": [pid], "shards": children(pid)}
        return embedded()

    runs = []
    with server() as (url, procs):
        for _ in range(args.repeat):
            for clients in args.clients:
                for kind in kinds:
                    r = measure(url, procs, kind, clients, args.seconds, f"{tag}x{len(runs)}")
                    runs.append(r)
                    print(f"{kind} {clients} clients: {r['rate']:,.0f} lines/s, load {r['load']}",
                          file=sys.stderr)
    names = list(runs[0]["cpu"])
    names = [n for n in names if not n.startswith("client")] + ["client"]
    durable = "confirmed by RabbitMQ" if args.full_stack else "on disk"
    rows = []
    for r in runs:
        cpu = {("client" if k.startswith("client") else k): v for k, v in r["cpu"].items()}
        rows.append(f"| {r['client']} | {r['clients']} | **{r['rate']:,.0f}** | "
                    f"{r['requests']:,} ({r['non_2xx']} not 2xx) / {r['stored']:,} | "
                    + " | ".join(f"{cpu[n][0]:,.0f} ({cpu[n][1]:.0%})" for n in names)
                    + f" | {r['load']} |")
    text = "\n".join([
        f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · small requests ({label}): "
        f"one line per POST, keep-alive, {args.seconds:g} s a run",
        "",
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"`python bench/bench_small_requests.py {' '.join(sys.argv[1:])}`",
        "",
        f"| client | clients | accepted lines/s (202 = {durable}) | requests / stored | "
        + " | ".join(f"{n} CPU µs {'a request' if n in ('API', 'client') else 'a line'} (system share)"
                     for n in names)
        + " | load average (1, 5, 15 min) before → after |",
        "|---|---:|---:|---:|" + "---:|" * len(names) + "---|",
        *rows,
        "",
    ])
    _emit(text, args.record)


if __name__ == "__main__":
    main()
