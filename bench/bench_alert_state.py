"""What saving and restoring the alert engine's state costs (streams.runtime.alerting: a snapshot
every SMARTLOGS_CHECKPOINT_SECONDS when it changed, under the engine's lock).

``PYTHONPATH=<checkout> python bench/bench_alert_state.py [--hosts 10000]`` feeds an engine
with five rules (three per host, a template spike, new templates) ten one-minute windows of
synthetic lines from ``--hosts`` hosts and 2,000 templates, then times snapshot, JSON, zlib
and a restore. Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
import zlib

import orjson
import yaml

from streams.alerts import AlertEngine, load_rules

RULES = """rules:
  - {name: burst, kind: anomaly_burst, threshold: 5, group_by: host}
  - {name: errs, kind: error_flood, threshold: 50, group_by: host}
  - {name: quiet, kind: silence, windows: 5, group_by: host}
  - {name: spike, kind: template_spike}
  - {name: new, kind: new_template}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=10_000)
    a = ap.parse_args()
    rules, _ = load_rules(yaml.safe_load(RULES), "bench")
    engine = AlertEngine(rules, warmup_lines=0)
    t0 = 1_800_000_000.0
    for w in range(10):
        engine.observe([{"id": f"{w}:{i}", "ts": t0 + w * 60 + i * 0.005,
                         "received": t0 + w * 60 + i * 0.005, "host": f"h{i % a.hosts}",
                         "level": "ERROR" if i % 7 == 0 else "INFO", "template_id": f"T{i % 2000}",
                         "message": "a line with a few words", "anomaly": i % 13 == 0,
                         "reason": "rare" if i % 13 == 0 else None, "score": 0.5}
                        for i in range(max(a.hosts, 10_000))])
    best: dict[str, float] = {}
    for _ in range(3):
        t = time.perf_counter()
        snap = engine.snapshot()
        t1 = time.perf_counter()
        blob = orjson.dumps(snap)
        t2 = time.perf_counter()
        packed = zlib.compress(blob, 1)
        t3 = time.perf_counter()
        AlertEngine(rules).restore(orjson.loads(zlib.decompress(packed)))
        t4 = time.perf_counter()
        for k, v in (("snapshot", t1 - t), ("json", t2 - t1), ("zlib", t3 - t2), ("restore", t4 - t3)):
            best[k] = min(best.get(k, v), v)
    groups = sum(len(g) for g in engine._groups.values())
    print(f"{groups} groups: JSON {len(blob) / 1e6:.1f} MB, zlib {len(packed) / 1e6:.2f} MB; best of 3: "
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in best.items()))


if __name__ == "__main__":
    main()
