"""Run a probe of the Kafka worker module in a fresh interpreter (importing
``streams.runtime.worker`` builds a Faust app, which must not leak into the test process) and
return the dict it printed as its last ``RESULT {json}`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_probe(probe: str, data_dir: Path) -> dict:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "SMARTLOGS_DATA_DIR": str(data_dir)}
    env.pop("SMARTLOGS_ALERT_RULES", None)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])
