"""What refusing a Loki/OTLP body over the line limit costs the process that decodes it.

``PYTHONPATH=<checkout> python bench/bench_decode_bounds.py [N]`` builds four bodies of N
(default 900,000) one-character entries — Loki JSON, Loki protobuf (before snappy), OTLP JSON
(N × 7/18 records, to stay near 10 MB) and OTLP protobuf — and decodes each in a fresh process
with the default limit of 100,000 lines, printing the answer, the peak RSS rise (``ru_maxrss``)
and the CPU it took. Results: bench/RELIABILITY.md (issue 22 item 7).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys, time
from ingest_api.decode import IngestError
from ingest_api.receivers.loki import decode_push_json, decode_push_protobuf
from ingest_api.receivers.otlp import decode_logs
kind, path = sys.argv[1:]
body = open(path, "rb").read()
decode = {"loki-json": lambda: decode_push_json(body, 100_000),
          "loki-protobuf": lambda: decode_push_protobuf(body, 100_000),
          "otlp-json": lambda: decode_logs(body, "application/json", 100_000),
          "otlp-protobuf": lambda: decode_logs(body, "application/x-protobuf", 100_000)}[kind]
before, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.process_time()
try:
    decode()
    answer = "accepted"
except IngestError as exc:
    answer = f"{exc.status} {exc.body['error']}"
rise = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(f"{kind:14} {len(body) / 1e6:5.1f} MB: {answer}, peak RSS rise {rise:.0f} MiB, "
      f"CPU {time.process_time() - cpu:.2f} s")
"""


def bodies(n: int) -> dict[str, bytes]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from ingest_api.receivers.proto.loki_push import PushRequest

    push = PushRequest()
    stream = push.streams.add()
    stream.labels = '{job="x"}'
    export = ExportLogsServiceRequest()
    records = export.resource_logs.add().scope_logs.add()
    for _ in range(n):
        stream.entries.add().line = "a"
        records.log_records.add().body.string_value = "a"
    return {
        "loki-json": b'{"streams":[{"stream":{"job":"x"},"values":['
                     + b",".join([b'["1","a"]'] * n) + b"]}]}",
        "loki-protobuf": push.SerializeToString(),
        "otlp-json": b'{"resourceLogs":[{"scopeLogs":[{"logRecords":['
                     + b",".join([b'{"body":{"stringValue":"a"}}'] * (n * 7 // 18)) + b"]}]}]}",
        "otlp-protobuf": export.SerializeToString(),
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 900_000
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        for kind, body in bodies(n).items():
            path = Path(tmp) / kind
            path.write_bytes(body)
            subprocess.run([sys.executable, "-c", CHILD, kind, str(path)], cwd=root, check=True)


if __name__ == "__main__":
    main()
