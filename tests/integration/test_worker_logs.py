"""With SMARTLOGS_LOGS_JSON=true the Faust worker's output is JSON lines only, its own
framework lines included (Faust configures logging itself; we hand it our formatter)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest

pytestmark = pytest.mark.engines


def test_worker_logs_are_json_lines_from_start_to_stop(tmp_path, kafka):
    tag = uuid.uuid4().hex[:8]
    env = {**os.environ, "SMARTLOGS_LOGS_JSON": "true", "SMARTLOGS_KAFKA_BOOTSTRAP": kafka,
           "SMARTLOGS_KAFKA_TOPIC": f"test.logs.{tag}", "SMARTLOGS_WORKER_ID": f"test-logs-{tag}",
           "SMARTLOGS_DATA_DIR": str(tmp_path / "var"), "SMARTLOGS_WORKER_METRICS_PORT": "0"}
    out = tmp_path / "worker.log"
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "worker"], env=env,
                                stdout=f, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while b"Worker]: Ready" not in out.read_bytes():
                assert proc.poll() is None and time.monotonic() < deadline, out.read_text()[-3000:]
                time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    lines = out.read_bytes().splitlines()
    assert len(lines) > 10
    docs = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert {d["service"] for d in docs} == {"worker"}
    assert any(d["logger"].startswith("faust.") for d in docs)
    assert all({"ts", "level", "logger", "message"} <= d.keys() for d in docs)
    assert not any(d["logger"].startswith("faust.web") for d in docs)  # no web server on 6066
