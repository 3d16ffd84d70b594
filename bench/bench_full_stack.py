"""Full-stack benchmark on real engines: HTTP → RabbitMQ → bridge → Kafka → Faust worker → Elasticsearch.

1. sustained: replay Linux_2k.log repeated to --lines lines at full speed; lines/s from the
   first request until Elasticsearch reports every line searchable;
2. latency at a fixed offered rate (--rate lines/s for --seconds): a marker event is sent every
   0.5 s among the load and polled until it is searchable; p50/p99 of those ingest→searchable
   latencies, and of their first part (received by the API → handed to Elasticsearch, from the
   markers' ``received`` and ``stored_at``); the CPU µs per line of every process at that rate.

During the sustained phase the CPU time (utime+stime from /proc) of every process is recorded
(api, bridge, worker, and the engines started by scripts/engines, found by their pid files),
as µs of CPU per line: where the time goes; and the peak resident memory of each, since the
sustained phase is an overload (the client sends ~100,000 lines/s).

Needs the engines (make engines-up; eval "$(scripts/engines/env.sh)").

    python bench/bench_full_stack.py --lines 20000 --rate 2000 --seconds 20 --record bench/RESULTS.md

``--workers N`` starts N workers (one consumer group sharing the raw topic's partitions) and
``--streams K`` sends the sustained phase as K named sources (the partition key: one source
all lands in one partition, so more workers than sources have nothing to do);
``--seconds 0`` skips the latency phase.

``--warmup N`` (default 4,000) sends N lines the same way and waits until they are searchable
before any CPU clock starts: the processes' start (the worker imports and builds its app for
~2 s of CPU, its topics are made, the day indices created) is not a cost per line, and over a
40,000-line run it was half the worker's figure (bench/RESULTS.md). ``--warmup 0`` measures
from the start, as the runs before 2026-12-07 17:00 did.

``--es URL --es-dir DIR`` writes to another Elasticsearch than the shared one (started with
``SMARTLOGS_ENGINES_DIR=DIR SMARTLOGS_ES_PORT=... scripts/engines/start.sh elasticsearch``):
its CPU then counts only this run, not every other user's searches, index churn and the
JIT compilation they cause. ``--es-threads`` also splits Elasticsearch's CPU by thread pool
(``jcmd Thread.print``: indexing, refresh, HTTP, JIT compiler, GC, ...).
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from smartlogs.cli.replay import plan_batches, read_lines, send_batches  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_env() -> dict:
    out = subprocess.run([str(REPO / "scripts" / "engines" / "env.sh")], capture_output=True,
                         text=True, check=True).stdout
    return dict(line[len("export "):].split("=", 1) for line in out.splitlines() if line.startswith("export "))


def drop_queues_and_topics(env: dict, tag: str) -> None:
    """Delete this run's RabbitMQ queues and Kafka topics: left behind, hundreds of topics
    from earlier runs slow the broker down (measured: Kafka 12 -> 41-60 µs of CPU a line
    with ~240 stale topics), and the next run would measure that."""
    import asyncio

    import aio_pika
    from aiokafka.admin import AIOKafkaAdminClient

    async def drop() -> None:
        conn = await aio_pika.connect(env["SMARTLOGS_AMQP_URL"])
        async with conn:
            channel = await conn.channel()
            for queue in (env["SMARTLOGS_AMQP_QUEUE"], env["SMARTLOGS_AMQP_DLQ"]):
                await channel.queue_delete(queue)
        admin = AIOKafkaAdminClient(bootstrap_servers=env["SMARTLOGS_KAFKA_BOOTSTRAP"])
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics()
                    if t.startswith((env["SMARTLOGS_KAFKA_TOPIC"], env["SMARTLOGS_KAFKA_DLQ_TOPIC"],
                                     env["SMARTLOGS_WORKER_ID"] + "-"))]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    try:
        asyncio.run(drop())
    except Exception as exc:  # noqa: BLE001 - the figures are measured already; say so and go on
        print(f"warning: could not delete this run's queues/topics: {exc}", file=sys.stderr)


@contextmanager
def full_stack(tag: str, workers: int = 1, es_url: str | None = None):
    """``start_stack``, then stop its processes and delete what the run made (Elasticsearch
    indices, queues, topics): yields (url, processes: api, bridge, worker(s))."""
    url, env, procs = start_stack(tag, workers, es_url)
    try:
        yield url, procs
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        from smartlogs.store.elasticsearch import ElasticsearchStore
        es = ElasticsearchStore(env["SMARTLOGS_ES_URL"], index_prefix=f"bench-{tag}")
        es.delete_before(4e9)
        es.client.options(ignore_status=404).indices.delete(
            index=f"{es.catalog_index},{es.incidents_index}", ignore_unavailable=True)
        es.close()
        drop_queues_and_topics(env, tag)


def start_stack(tag: str, workers: int = 1, es_url: str | None = None) -> tuple[str, dict, list]:
    port = _port()
    data = tempfile.mkdtemp(prefix="smartlogs-fsbench-")
    env = {**os.environ, **{k: v.strip("'") for k, v in engine_env().items()},
           **({"SMARTLOGS_ES_URL": es_url} if es_url else {}),
           "SMARTLOGS_AMQP_QUEUE": f"bench.ingest.{tag}", "SMARTLOGS_AMQP_DLQ": f"bench.dlq.{tag}",
           # the topics' names carry tests/integration/stack.py's TOPIC_MARKS: an integration
           # session sharing the broker deletes the new topics without them when it ends, and
           # took this run's raw and state topics mid-run (its worker then stalls)
           "SMARTLOGS_KAFKA_TOPIC": f"bench.test.raw.{tag}",
           "SMARTLOGS_KAFKA_DLQ_TOPIC": f"bench.test.dlq.{tag}",
           "SMARTLOGS_WORKER_ID": f"bench-test-worker-{tag}", "SMARTLOGS_ES_INDEX_PREFIX": f"bench-{tag}",
           "SMARTLOGS_DATA_DIR": data, "SMARTLOGS_PORT": str(port), "SMARTLOGS_SYSLOG_PORT": "0",
           "SMARTLOGS_BRIDGE_METRICS_PORT": str(_port()), "SMARTLOGS_WORKER_METRICS_PORT": str(_port())}
    procs = [subprocess.Popen([sys.executable, "-m", "smartlogs.cli", verb, *extra], env=env,
                              stdout=open(Path(data) / f"{verb}.log", "w"), stderr=subprocess.STDOUT)
             for verb, extra in (("api", ["--log-level", "warning"]), ("bridge", ["--log-level", "warning"]),
                                 ("worker", ["worker", "-l", "warn"]))]
    for i in range(1, workers):  # more workers in the same group, each with its metrics port
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "smartlogs.cli", "worker", "worker", "-l", "warn"],
            env={**env, "SMARTLOGS_WORKER_METRICS_PORT": str(_port())},
            stdout=open(Path(data) / f"worker{i}.log", "w"), stderr=subprocess.STDOUT))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return url, env, procs


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRss(threading.Thread):
    """Peak resident memory (MiB) of each process, sampled every 0.2 s from /proc."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.pids, self.peak, self.done = pids, dict.fromkeys(pids, 0.0), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            for name, pid in self.pids.items():
                try:
                    kb = next(int(line.split()[1]) for line in
                              Path(f"/proc/{pid}/status").read_text().splitlines()
                              if line.startswith("VmRSS:"))
                except (OSError, StopIteration):
                    continue
                self.peak[name] = max(self.peak[name], kb / 1024)


def engine_pids(es_dir: str | None = None) -> dict[str, int]:
    """Pids of the engines scripts/engines runs (their pid files in the state dir; with
    ``es_dir``, Elasticsearch's from that state dir instead)."""
    state = Path(os.environ.get("SMARTLOGS_ENGINES_DIR", "/var/tmp/smartlogs-engines"))
    out = {}
    for name, rel in (("rabbitmq", "rabbitmq/rabbitmq.pid"), ("kafka", "kafka/kafka.pid"),
                      ("elasticsearch", "elasticsearch/run/elasticsearch.pid")):
        base = Path(es_dir) if es_dir and name == "elasticsearch" else state
        try:
            out[name] = int((base / rel).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


# Elasticsearch's thread pools that do the work of our writes; the rest is the JIT compilers,
# GC, and on a shared node other users' searches and cluster-state changes
ES_WORK = ("write", "refresh", "transport_worker", "merge", "flush")


def _jcmd() -> str | None:
    for cand in (os.environ.get("JAVA_HOME", "") + "/bin/jcmd",
                 *sorted(glob.glob("/usr/lib/jvm/*17*/bin/jcmd")), "jcmd"):
        if cand and (os.path.isfile(cand) or cand == "jcmd"):
            return cand
    return None


def jvm_thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds by thread group of a JVM (``jcmd PID Thread.print``: Elasticsearch's thread
    pools by name, the JIT compilers, GC threads, ...); empty if jcmd is not at hand."""
    jcmd = _jcmd()
    try:
        out = subprocess.run([jcmd, str(pid), "Thread.print"], capture_output=True, text=True,
                             timeout=60).stdout if jcmd else ""
    except (OSError, subprocess.TimeoutExpired):
        return {}
    groups: dict[str, float] = {}
    for m in re.finditer(r'^"([^"]+)".*?cpu=([\d.]+)ms', out, re.M):
        pool = re.match(r"elasticsearch\[[^\]]+\]\[([^\]]+)\]", m.group(1))
        name = pool.group(1) if pool else re.sub(r"#?\d+$", "", m.group(1)).strip()
        groups[name] = groups.get(name, 0.0) + float(m.group(2)) / 1000
    return groups


def total(url: str, **params) -> int:
    """Events searchable now (-1 when the API could not say: e.g. a query over its time budget
    on a busy machine; the caller polls again)."""
    r = httpx.get(f"{url}/api/events", params={"limit": 1, "exact_total": "true", **params},
                  timeout=30)
    return r.json()["total"] if r.status_code == 200 else -1


def sustained_streams(url: str, path: Path, n: int, streams: int, run: str = "sus",
                      already: int = 0) -> dict:
    """The sustained phase as ``streams`` named sources (round robin, 1,000 lines a request);
    done once ``already`` + ``n`` events are searchable."""
    base = path.read_text(errors="replace").splitlines()
    t0 = time.perf_counter()
    with httpx.Client(timeout=60) as c:
        for start in range(0, n, 1000):
            body = b"\n".join(orjson.dumps({"id": f"{run}:{k}", "raw": base[(k // streams) % len(base)],
                                             "stream": f"bench-{k % streams}"})
                              for k in range(start, min(n, start + 1000)))
            r = c.post(f"{url}/ingest", content=body, headers={"Content-Type": "application/x-ndjson"})
            r.raise_for_status()
    sent = time.perf_counter() - t0
    while total(url) < already + n:
        time.sleep(0.1)
    done = time.perf_counter() - t0
    return {"lines": n, "seconds": done, "lines_per_s": n / done, "send_s": sent}


def sustained(url: str, path: Path, n: int, run: str = "sus", already: int = 0) -> dict:
    reps = -(-n // 2000)
    lines = ((i, x) for k, (i, x) in enumerate(read_lines(path, reps)) if k < n)
    t0 = time.perf_counter()
    res = send_batches(url, plan_batches(lines, batch_size=1000), run_id=run)
    sent = time.perf_counter() - t0
    while total(url) < already + res.accepted:
        time.sleep(0.1)
    done = time.perf_counter() - t0
    return {"lines": res.accepted, "seconds": done, "lines_per_s": res.accepted / done, "send_s": sent}


def latency(url: str, path: Path, rate: float, seconds: float, pids: dict[str, int],
            es_url: str, prefix: str) -> dict:
    """Markers among a steady load; per marker, ingest→searchable as the client sees it and
    its parts: received (the API's clock) → handed to Elasticsearch (``stored_at``, the
    worker's clock: same machine), and the rest (waiting for the refresh, the poll). Also the
    CPU µs per line of every process at this steady rate (refreshes cost more per line here
    than in the overload of the sustained phase, where each refresh covers more lines)."""
    stop = threading.Event()
    sent = [0]
    base = path.read_text(errors="replace").splitlines()

    def load():
        batch, k, start = 100, 0, time.perf_counter()
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                due = start + k * batch / rate
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                body = b"\n".join(orjson.dumps({"id": f"lat:{k}:{j}", "raw": base[(k * batch + j) % len(base)]})
                                  for j in range(batch))
                c.post(f"{url}/ingest", content=body, headers={"Content-Type": "application/x-ndjson"})
                sent[0] += batch
                k += 1

    th = threading.Thread(target=load, daemon=True)
    th.start()
    samples, markers = [], []
    time.sleep(2)  # the load reaches its rate before the CPU clock starts
    before, sent0 = {k: cpu_seconds(p) for k, p in pids.items()}, sent[0]
    end = time.monotonic() + seconds
    with httpx.Client(timeout=30) as c:
        while time.monotonic() < end:
            marker = f"marker{uuid.uuid4().hex[:12]}"
            t0 = time.perf_counter()
            c.post(f"{url}/ingest", json={"message": f"latency probe {marker}", "host": "bench"})
            while c.get(f"{url}/api/events", params={"q": marker, "limit": 1}).json().get("total", 0) < 1:
                time.sleep(0.02)
            samples.append(time.perf_counter() - t0)
            markers.append(marker)
            time.sleep(max(0.0, 0.5 - (time.perf_counter() - t0)))
    cpu_us = {k: (cpu_seconds(p) - before[k]) / max(1, sent[0] - sent0) * 1e6 for k, p in pids.items()}
    stop.set()
    th.join(10)
    to_write, rest = [], []
    with httpx.Client(timeout=30) as c:  # the parts, from the markers' documents
        for m, total_s in zip(markers, samples):
            hits = c.post(f"{es_url}/{prefix}-*/_search", json={
                "query": {"match": {"words": m}}, "size": 1,
                "_source": ["received", "stored_at"]}).json()["hits"]["hits"]
            if hits:
                src = hits[0]["_source"]
                to_write.append(src["stored_at"] / 1000 - src["received"])
                rest.append(total_s - to_write[-1])
    order = sorted(range(len(samples)), key=samples.__getitem__)
    samples = [samples[i] for i in order]
    p99 = samples[min(len(samples) - 1, int(0.99 * len(samples)))]
    to_write.sort()
    rest.sort()
    return {"rate": rate, "seconds": seconds, "samples": len(samples),
            "p50": statistics.median(samples), "p99": p99, "max": samples[-1],
            "write_p50": statistics.median(to_write) if to_write else float("nan"),
            "write_p99": to_write[min(len(to_write) - 1, int(0.99 * len(to_write)))] if to_write else float("nan"),
            "rest_p50": statistics.median(rest) if rest else float("nan"),
            "rest_p99": rest[min(len(rest) - 1, int(0.99 * len(rest)))] if rest else float("nan"),
            "cpu_us": cpu_us}


def index_stats(es_url: str, prefix: str) -> dict:
    """This run's indices' own times (ms) from ``_stats``: not disturbed by other users of the
    shared engine the way its process CPU is (still wall time: a busy machine stretches it)."""
    p = httpx.get(f"{es_url}/{prefix}-*/_stats/indexing,refresh,merge,flush,bulk", timeout=30).json()[
        "_all"]["primaries"]
    return {"index": p["indexing"]["index_time_in_millis"],
            "refresh": p["refresh"]["total_time_in_millis"],
            "merge": p["merges"]["total_time_in_millis"], "flush": p["flush"]["total_time_in_millis"],
            # shard-level bulk requests (one per index a request touches): the documents per
            # request are what the per-request costs are shared by
            "bulks": p.get("bulk", {}).get("total_operations", 0),
            "refreshes": p["refresh"]["total"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--record", type=Path)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=4000,
                    help="lines sent and searchable before the CPU clocks start (0: none)")
    ap.add_argument("--es", help="URL of a private Elasticsearch for this run (with --es-dir)")
    ap.add_argument("--es-dir", help="scripts/engines state dir of that Elasticsearch (its pid)")
    ap.add_argument("--es-threads", action="store_true",
                    help="split Elasticsearch's CPU by thread pool (needs jcmd)")
    args = ap.parse_args()
    from smartlogs.cli.datasets import loghub_dir_or_exit

    path = loghub_dir_or_exit("Linux") / "Linux" / "Linux_2k.log"
    tag = uuid.uuid4().hex[:8]
    load0 = os.getloadavg()[0]
    # SIGTERM (e.g. `timeout`) ends the run through full_stack's cleanup: no orphan worker
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    with full_stack(tag, args.workers, args.es) as (url, procs):
        pids = {"api": procs[0].pid, "bridge": procs[1].pid, "worker": procs[2].pid,
                **{f"worker{i}": p.pid for i, p in enumerate(procs[3:], 1)},
                **engine_pids(args.es_dir)}
        if args.workers > 1:  # every worker in the group holds its partitions before the clock
            time.sleep(15)

        def phase(n: int, run: str, already: int = 0) -> dict:
            return (sustained_streams(url, path, n, args.streams, run, already) if args.streams > 1
                    else sustained(url, path, n, run, already))

        warm = phase(args.warmup, "warm")["lines"] if args.warmup else 0
        es_url = args.es or engine_env()["SMARTLOGS_ES_URL"].strip("'")
        prefix = f"bench-{tag}"
        try:
            own0 = index_stats(es_url, prefix) if warm else {}
        except (httpx.HTTPError, KeyError):
            own0 = {}
        es_pid = pids.get("elasticsearch")
        threads0 = jvm_thread_cpu(es_pid) if args.es_threads and es_pid else {}
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        rss = PeakRss(pids)
        rss.start()
        sus = phase(args.lines, "sus", warm)
        rss.done.set()
        cpu_us = {k: (cpu_seconds(p) - before[k]) / sus["lines"] * 1e6 for k, p in pids.items()}
        es_threads = {}
        if threads0:
            threads1 = jvm_thread_cpu(es_pid)
            es_threads = {k: (v - threads0.get(k, 0.0)) / sus["lines"] * 1e6
                          for k, v in threads1.items()}
            es_threads = dict(sorted(((k, v) for k, v in es_threads.items() if v >= 0.5),
                                     key=lambda kv: -kv[1]))
        counts = {}
        try:
            own = {k: v - own0.get(k, 0) for k, v in index_stats(es_url, prefix).items()}
            counts = {"lines per shard bulk": sus["lines"] / max(1, own.pop("bulks")),
                      "refreshes": own.pop("refreshes")}
            own = {k: v / sus["lines"] * 1000 for k, v in own.items()}
        except (httpx.HTTPError, KeyError) as exc:
            print(f"warning: no index stats: {exc}", file=sys.stderr)
            own = None
        lat = (latency(url, path, args.rate, args.seconds, pids, es_url, prefix)
               if args.seconds > 0 else None)
    text = "\n".join([
        f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · full stack on real engines",
        "",
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}; RabbitMQ, Kafka, "
        "Elasticsearch (512 MB heap), api, bridge and worker all on this machine; 1-min load "
        f"average {load0:.1f} before the run, {os.getloadavg()[0]:.1f} after",
        "",
        f"- sustained, HTTP to searchable in Elasticsearch: **{sus['lines_per_s']:,.0f} lines/s** "
        f"({sus['lines']:,} lines in {sus['seconds']:.1f} s; the client finished sending after {sus['send_s']:.1f} s) — target ≥ 5,000"
        f"; {args.workers} worker(s), {args.streams} source(s); after a warm-up of {warm:,} lines"
        + (f"; a private Elasticsearch ({args.es})" if args.es else "; the shared Elasticsearch"),
        *([f"- ingest→searchable latency at {lat['rate']:,.0f} lines/s offered for {lat['seconds']:.0f} s "
           f"({lat['samples']} probes): p50 **{lat['p50']:.2f} s**, p99 **{lat['p99']:.2f} s**, max {lat['max']:.2f} s — target p99 ≤ 1 s; "
          f"of which received → handed to Elasticsearch p50 {lat['write_p50']:.2f} s, p99 {lat['write_p99']:.2f} s "
          f"and the rest (the bulk request, waiting for the refresh, the probe's poll) p50 {lat['rest_p50']:.2f} s, "
          f"p99 {lat['rest_p99']:.2f} s",
          "- CPU per line at that steady rate (µs): "
          + ", ".join(f"{k} {v:.0f}" for k, v in lat["cpu_us"].items())
          + f" = {sum(lat['cpu_us'].values()):.0f} in all"]
          if lat else []),
        "- CPU per line during the sustained phase (µs): "
        + ", ".join(f"{k} {v:.0f}" for k, v in cpu_us.items())
        + f" = {sum(cpu_us.values()):.0f} in all",
        *(["- Elasticsearch's CPU per line by thread (µs, `jcmd Thread.print`): "
           + ", ".join(f"{k} {v:.0f}" for k, v in es_threads.items())
           + f"; its work for these lines (indexing, refresh, HTTP, merges, flushes) "
           f"**{sum(es_threads.get(k, 0.0) for k in ES_WORK):.0f}**, the JIT compilers "
           f"{sum(v for k, v in es_threads.items() if 'Compiler' in k):.0f}"] if es_threads else []),
        *(["- this run's indices' own times during the sustained phase (`_stats`, ms per 1,000 lines): "
           + ", ".join(f"{k} {v:.0f}" for k, v in own.items())
           + "; " + ", ".join(f"{k} {v:.0f}" for k, v in counts.items())] if own else []),
        "- peak RSS during the sustained phase, an overload (the client sends far faster than the "
        "stack indexes, RabbitMQ and Kafka hold the backlog), MiB: "
        + ", ".join(f"{k} {v:.0f}" for k, v in rss.peak.items()),
        "",
    ])
    print(text)
    if args.record:
        with open(args.record, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
