"""Each process registers the metrics of what it does (``metrics.expose``)."""

import subprocess
import sys

_SCRIPT = """
from prometheus_client import generate_latest
from smartlogs import metrics
metrics.expose("api")
metrics.expose("api")  # idempotent
before = generate_latest().decode()
metrics.ANOMALIES.inc(3)  # counted even before its registration
metrics.expose("pipeline", "spool")
after = generate_latest().decode()
print("queue_publish" in before, "anomalies_total" in before, "backlog" in before)
print("smartlogs_anomalies_total 3.0" in after, "smartlogs_backlog_events 0.0" in after,
      "gap_messages" in after)
"""


def test_metrics_are_exported_by_the_processes_that_move_them():
    # a fresh interpreter: the default registry is per process
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["True False False", "True True False"], out.stdout + out.stderr
