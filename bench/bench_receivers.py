"""Receivers benchmark: lines/s accepted per protocol, and until stored, against `smartlogs up`.

For each protocol a fresh embedded `smartlogs up` (own data dir, free port) receives the same
lines (Linux_2k.log repeated to --lines, each line suffixed with ` seq=<n>` so that no two
requests are byte-identical: the receivers derive ids from the body), sent the way a shipper
sends them, one request at a time on one keep-alive connection:

| protocol | request | lines per request |
|---|---|---|
| ingest-text | `POST /ingest` text/plain | 1000 (`smartlogs replay`'s default) |
| ingest-ndjson | `POST /ingest` NDJSON `{"timestamp","host","message"}` | 1000 |
| es-bulk | `POST /_bulk` `create` + ECS-ish document (Filebeat-like) | 1600 (Filebeat's `bulk_max_size`) |
| loki-json | `POST /loki/api/v1/push` JSON, one stream | ~1 MiB of lines (Promtail's `batchsize`) |
| loki-protobuf | same, snappy protobuf as Promtail/Alloy send | ~1 MiB |
| otlp-protobuf | `POST /v1/logs` protobuf, resource + record attributes | 512 (the SDK's batch processor) |
| otlp-json | same, OTLP JSON | 512 |
| syslog-tcp | RFC 6587 octet-counted RFC 3164 frames on one TCP connection | (a stream) |
| kafka | the Kafka source, raw lines, one line per record, topic filled beforehand | 2000 per fetch |

Request bodies are built before the clock starts, so the client's own encoding cost is not
measured (it runs on the same cores). "accepted" is the time until the last request was answered
with success (202/200/204: durably in the spool); for syslog and Kafka, which have no answer,
until ``smartlogs_events_accepted_total`` counts every line. "stored" is the time until
``/api/events`` reports every line stored and searchable (end to end).

    python bench/bench_receivers.py --lines 40000 --record bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOST = "combo"


def loghub() -> Path:
    from smartlogs.cli.datasets import loghub_dir_or_exit

    return loghub_dir_or_exit("Linux")


def make_lines(n: int) -> list[str]:
    base = [ln for ln in (loghub() / "Linux" / "Linux_2k.log").read_text(errors="replace").splitlines()
            if ln.strip()]
    return [f"{base[i % len(base)].rstrip()} seq={i}" for i in range(n)]


def chunks(seq: list, size: int) -> list[list]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def by_bytes(lines: list[str], limit: int) -> list[list[str]]:
    out, cur, size = [], [], 0
    for ln in lines:
        if cur and size + len(ln) + 40 > limit:
            out.append(cur)
            cur, size = [], 0
        cur.append(ln)
        size += len(ln) + 40
    if cur:
        out.append(cur)
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- request bodies, one builder per protocol -------------------------------------------------

def bodies_ingest_text(lines):
    return [("/ingest", {"Content-Type": "text/plain"}, ("\n".join(b) + "\n").encode())
            for b in chunks(lines, 1000)]


def bodies_ingest_ndjson(lines):
    now = time.time()
    out = []
    for b in chunks(lines, 1000):
        body = b"".join(orjson.dumps({"timestamp": _iso(now), "host": HOST, "message": ln}) + b"\n"
                        for ln in b)
        out.append(("/ingest", {"Content-Type": "application/x-ndjson"}, body))
    return out


def bodies_es_bulk(lines):
    now = time.time()
    action = orjson.dumps({"create": {"_index": "filebeat-bench"}})
    out = []
    for b in chunks(lines, 1600):
        parts = []
        for ln in b:
            parts.append(action)
            parts.append(orjson.dumps({"@timestamp": _iso(now), "message": ln,
                                       "host": {"name": HOST}, "log": {"file": {"path": "/var/log/messages"}},
                                       "agent": {"type": "filebeat"}}))
        out.append(("/_bulk", {"Content-Type": "application/x-ndjson"}, b"\n".join(parts) + b"\n"))
    return out


def bodies_loki_json(lines):
    ns = time.time_ns()
    out = []
    for b in by_bytes(lines, 1 << 20):
        doc = {"streams": [{"stream": {"job": "varlogs", "host": HOST, "filename": "/var/log/messages"},
                            "values": [[str(ns + i), ln] for i, ln in enumerate(b)]}]}
        ns += len(b)
        out.append(("/loki/api/v1/push", {"Content-Type": "application/json"}, orjson.dumps(doc)))
    return out


def bodies_loki_protobuf(lines):
    import cramjam

    from ingest_api.receivers.proto.loki_push import PushRequest

    ns = time.time_ns()
    out = []
    for b in by_bytes(lines, 1 << 20):
        req = PushRequest()
        stream = req.streams.add()
        stream.labels = '{filename="/var/log/messages", host="combo", job="varlogs"}'
        for i, ln in enumerate(b):
            e = stream.entries.add()
            t = ns + i
            e.timestamp.seconds, e.timestamp.nanos = t // 10**9, t % 10**9
            e.line = ln
        ns += len(b)
        body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
        out.append(("/loki/api/v1/push", {"Content-Type": "application/x-protobuf"}, body))
    return out


def _otlp_requests(lines):
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    ns = time.time_ns()
    reqs = []
    for b in chunks(lines, 512):
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        for k, v in (("service.name", "syslog"), ("host.name", HOST)):
            a = rl.resource.attributes.add()
            a.key, a.value.string_value = k, v
        sl = rl.scope_logs.add()
        sl.scope.name = "bench"
        for i, ln in enumerate(b):
            r = sl.log_records.add()
            r.time_unix_nano = ns + i
            r.severity_text, r.severity_number = "INFO", 9
            r.body.string_value = ln
            a = r.attributes.add()
            a.key, a.value.string_value = "log.file.path", "/var/log/messages"
        ns += len(b)
        reqs.append(req)
    return reqs


def bodies_otlp_protobuf(lines):
    return [("/v1/logs", {"Content-Type": "application/x-protobuf"}, r.SerializeToString())
            for r in _otlp_requests(lines)]


def bodies_otlp_json(lines):
    from google.protobuf import json_format

    return [("/v1/logs", {"Content-Type": "application/json"},
             orjson.dumps(json_format.MessageToDict(r))) for r in _otlp_requests(lines)]


HTTP = {
    "ingest-text": bodies_ingest_text,
    "ingest-ndjson": bodies_ingest_ndjson,
    "es-bulk": bodies_es_bulk,
    "loki-json": bodies_loki_json,
    "loki-protobuf": bodies_loki_protobuf,
    "otlp-protobuf": bodies_otlp_protobuf,
    "otlp-json": bodies_otlp_json,
}
BATCH = {"ingest-text": "1000", "ingest-ndjson": "1000", "es-bulk": "1600", "loki-json": "~1 MiB",
         "loki-protobuf": "~1 MiB", "otlp-protobuf": "512", "otlp-json": "512",
         "syslog-tcp": "stream", "kafka": "2000/fetch"}


# -- the server --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, workdir: Path, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, "SMARTLOGS_DATA_DIR": str(workdir), "SMARTLOGS_PORT": str(self.port),
                "SMARTLOGS_SYSLOG_PORT": "0", "SMARTLOGS_KAFKA_SOURCE_TOPIC": ""}
        full.update({f"SMARTLOGS_{k.upper()}": str(v) for k, v in env.items()})
        self.proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "up", "--log-level",
                                      "warning"], env=full, cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("smartlogs up did not start")
            time.sleep(0.05)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def total(self) -> int:
        return self.http.get("/api/events", params={"limit": 1, "exact_total": "true"}).json()["total"]

    def accepted(self, source: str) -> float:
        m = re.search(rf'smartlogs_events_accepted_total{{source="{source}"}} ([0-9.e+]+)',
                      self.http.get("/metrics").text)
        return float(m.group(1)) if m else 0.0

    def wait_total(self, n: int, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while self.total() < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.total()} of {n} stored after {timeout}s")
            time.sleep(0.05)
        return time.perf_counter()

    def close(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- runs ----------------------------------------------------------------------------------------

def run_http(name: str, lines: list[str], work: Path) -> dict:
    reqs = HTTP[name](lines)
    srv = Server(work / name)
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            t0 = time.perf_counter()
            for path, headers, body in reqs:
                r = c.post(path, content=body, headers=headers)
                if r.status_code not in (200, 202, 204) or (name == "es-bulk" and r.json()["errors"]):
                    raise SystemExit(f"{name}: {r.status_code} {r.text[:300]}")
            t_acc = time.perf_counter()
        t_sto = srv.wait_total(len(lines))
        return {"accepted_s": t_acc - t0, "stored_s": t_sto - t0, "requests": len(reqs)}
    finally:
        srv.close()


def run_syslog(lines: list[str], work: Path) -> dict:
    frames = []
    for ln in lines:
        msg = f"<13>{ln}".encode()
        frames.append(f"{len(msg)} ".encode() + msg)
    stream = b"".join(frames)
    port = free_port()
    srv = Server(work / "syslog", syslog_port=port, syslog_udp="false")
    try:
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(stream)
            t_sent = time.perf_counter()
        deadline = time.monotonic() + 600
        while srv.accepted("syslog_tcp") < len(lines):
            if time.monotonic() > deadline:
                raise SystemExit("syslog: not every line was accepted")
            time.sleep(0.05)
        t_acc = time.perf_counter()
        t_sto = srv.wait_total(len(lines))
        return {"accepted_s": t_acc - t0, "stored_s": t_sto - t0, "requests": 1,
                "note": (f"one connection; sendall returned after {t_sent - t0:.2f} s (kernel "
                         "buffers), the clock stops on the receiver's accepted count")}
    finally:
        srv.close()


def kafka_reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return True
    except OSError:
        return False


def run_kafka(lines: list[str], work: Path, bootstrap: str) -> dict:
    """The source joins its group on an empty topic; then one producer transaction writes every
    line and commits: the source reads committed records only, so all become visible at once,
    and the clock starts at the commit (the producing itself is not measured)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench-receivers-{uuid.uuid4().hex[:8]}"

    async def admin_do(fn):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await fn(admin)
        finally:
            await admin.close()

    asyncio.run(admin_do(lambda a: a.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1)])))
    srv = Server(work / "kafka", kafka_bootstrap=bootstrap, kafka_source_topic=topic,
                 kafka_source_group=f"bench-{topic}", kafka_source_format="raw")
    try:
        deadline = time.monotonic() + 60
        while len(srv.http.get("/healthz").json().get("kafka_source", {}).get("partitions", [])) < 3:
            if time.monotonic() > deadline:
                raise SystemExit("kafka: the source did not get the topic's partitions")
            time.sleep(0.1)

        async def fill() -> float:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                        enable_idempotence=True,
                                        transactional_id=f"bench-{topic}")
            await producer.start()
            try:
                await producer.begin_transaction()
                futs = [await producer.send(topic, ln.encode()) for ln in lines]
                await asyncio.gather(*futs)
                t = time.perf_counter()
                await producer.commit_transaction()
                return t
            finally:
                await producer.stop()

        t0 = asyncio.run(fill())
        deadline = time.monotonic() + 600
        while srv.accepted("kafka") < len(lines):
            if time.monotonic() > deadline:
                raise SystemExit("kafka: not every line was accepted")
            time.sleep(0.05)
        t_acc = time.perf_counter()
        t_sto = srv.wait_total(len(lines))
        return {"accepted_s": t_acc - t0, "stored_s": t_sto - t0, "requests": 0,
                "note": "one line per record, 3 partitions, written in one producer transaction; "
                        "clock from its commit (the source reads committed records only)"}
    finally:
        srv.close()
        try:
            asyncio.run(admin_do(lambda a: a.delete_topics([topic])))
        except Exception as exc:  # noqa: BLE001 - cleanup only
            print(f"could not delete topic {topic}: {exc}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=40_000, help="lines per protocol")
    ap.add_argument("--only", action="append", help="run only these protocols (repeatable)")
    ap.add_argument("--kafka", default=os.environ.get("SMARTLOGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                    help="Kafka bootstrap for the Kafka source run (skipped when unreachable)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per protocol (interleaved); the median is reported, with the range")
    ap.add_argument("--record", type=Path, help="append a results section to this Markdown file")
    args = ap.parse_args()

    lines = make_lines(args.lines)
    names = list(HTTP) + ["syslog-tcp", "kafka"]
    if args.only:
        names = [n for n in names if n in args.only]
    runs: dict[str, list[dict]] = {}
    loads: list[float] = []
    n = len(lines)
    kafka_ok = "kafka" in names and kafka_reachable(args.kafka)
    if "kafka" in names and not kafka_ok:
        print(f"kafka: {args.kafka} unreachable, skipped")
    with tempfile.TemporaryDirectory(prefix="bench-receivers-") as tmp:
        for rep in range(args.repeat):
            for name in names:
                work = Path(tmp) / f"r{rep}"
                loads.append(os.getloadavg()[0])
                if name in HTTP:
                    res = run_http(name, lines, work)
                elif name == "syslog-tcp":
                    res = run_syslog(lines, work)
                elif kafka_ok:
                    res = run_kafka(lines, work, args.kafka)
                else:
                    continue
                runs.setdefault(name, []).append(res)
                print(f"{name:14s} accepted {n / res['accepted_s']:>9,.0f} lines/s "
                      f"({res['accepted_s']:.2f} s)   stored {n / res['stored_s']:>8,.0f} lines/s "
                      f"({res['stored_s']:.2f} s)   {res.get('note', '')}", flush=True)
    loads.append(os.getloadavg()[0])
    results: dict[str, dict] = {}
    for name, rs in runs.items():
        acc = sorted(n / r["accepted_s"] for r in rs)
        sto = sorted(n / r["stored_s"] for r in rs)
        results[name] = {"accepted": acc, "stored": sto, "note": rs[-1].get("note")}

    def fmt(values: list[float]) -> str:
        med = statistics.median(values)
        if len(values) == 1:
            return f"{med:,.0f}"
        return f"**{med:,.0f}** [{values[0]:,.0f}–{values[-1]:,.0f}]"

    if args.record:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        reps = f"median of {args.repeat} runs, min–max in brackets" if args.repeat > 1 else "one run"
        out = [f"\n## {when} · Receivers: lines/s per protocol ({n:,} lines each, {reps})\n",
               (f"machine: {os.cpu_count()} cores, Python {platform.python_version()}; one fresh "
                "embedded `smartlogs up` per protocol and run; the client (bodies built "
                "beforehand) on the same cores; 1-min load average "
                f"{min(loads):.1f}–{max(loads):.1f} during the run (other work was running on "
                "the machine)\n"),
               ("| protocol | lines per request | accepted (durably taken), lines/s | "
                "stored and searchable (end to end), lines/s |"),
               "|---|---|---:|---:|"]
        for name, r in results.items():
            out.append(f"| {name} | {BATCH[name]} | {fmt(r['accepted'])} | {fmt(r['stored'])} |")
        notes = [f"- {name}: {r['note']}" for name, r in results.items() if r.get("note")]
        out += ["", *notes, "",
                (f"Reproduce: `python bench/bench_receivers.py --lines {n} --repeat {args.repeat} "
                 "--record bench/RESULTS.md` (Kafka from `SMARTLOGS_KAFKA_BOOTSTRAP`; skipped when "
                 "unreachable).\n")]
        with open(args.record, "a") as f:
            f.write("\n".join(out))
        print(f"recorded in {args.record}")


if __name__ == "__main__":
    main()
