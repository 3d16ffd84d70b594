"""docs/capacity.md's script: its figures follow from its inputs, and its CLI prints them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _capacity():
    spec = importlib.util.spec_from_file_location("capacity", ROOT / "scripts" / "capacity.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["capacity"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_the_plan_scales_with_the_rate_and_keeps_its_floors():
    cap = _capacity()
    small = cap.plan(cap.Inputs(rate=1_000, us=cap.MEASURED_US))
    assert small["workers"] == 1 and small["kafka_brokers"] == 3  # the replication floor
    assert small["elasticsearch_nodes"] == 2  # one node per copy
    a = cap.plan(cap.Inputs(rate=100_000, us=cap.MEASURED_US))
    b = cap.plan(cap.Inputs(rate=1_000_000, us=cap.MEASURED_US))
    for key in ("workers", "partitions", "api", "bridge", "elasticsearch_nodes", "es_disk_tb"):
        assert b[key] > a[key], key
    assert a["partitions"] == 2 * a["workers"]
    # the worker's cores are its CPU per line times the rate, at the utilisation asked
    assert abs(a["worker_cores"] - 100_000 * cap.MEASURED_US["worker"] / 1e6 / 0.6) < 1e-9
    # storage per day follows the bytes per line and the copies
    assert abs(a["es_tb_per_day"] - 100_000 * 86400 * cap.ES_BYTES_PER_LINE * 2 / 1e12) < 1e-9


def test_the_doctests_and_the_cli():
    import doctest

    assert doctest.testmod(_capacity()).failed == 0
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "capacity.py"), "--rate", "250000",
                          "--worker-us", "50", "--retention-days", "30"],
                         capture_output=True, text=True, check=True).stdout
    assert "## 250,000 lines/s sustained" in out
    assert "workers (one core each)                       21" in out  # 250k × 50 µs / 0.6
    assert "Elasticsearch for 30 days" in out
    assert "usage:" in subprocess.run([sys.executable, str(ROOT / "scripts" / "capacity.py"),
                                       "--help"], capture_output=True, text=True).stdout
