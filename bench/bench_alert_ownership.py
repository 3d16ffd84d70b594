"""What fencing the alert engine's parts costs on Elasticsearch (streams.runtime.alerting:
``EsAlertHistory.take_state``, the conditional ``save_state``, ``owns`` before notifying).

``eval "$(scripts/engines/env.sh)"; PYTHONPATH=<checkout> python bench/bench_alert_ownership.py
[--calls 200]`` times each call against ``SMARTLOGS_ES_URL`` on indices of its own (deleted
after). Results: bench/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

from elasticsearch import Elasticsearch

from streams.runtime.alerting import EsAlertHistory


def _timed(f, n: int) -> str:
    xs = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        xs.append((time.perf_counter() - start) * 1000)
    xs.sort()
    return f"p50 {statistics.median(xs):.1f} ms, p95 {xs[int(0.95 * len(xs))]:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    es = Elasticsearch(os.environ["SMARTLOGS_ES_URL"], request_timeout=30)
    prefix = f"slt-bench-{uuid.uuid4().hex[:8]}"
    history = EsAlertHistory(es, prefix)
    blob = os.urandom(20_000)  # a part's compressed snapshot
    try:
        history.take_state("p0")
        print("take_state (read + claim):", _timed(lambda: history.take_state("p0"),
                                                   max(1, args.calls // 4)))
        print("save_state (conditional, 20 kB):",
              _timed(lambda: history.save_state("p0", blob, 1), args.calls))
        print("owns (before notifying):", _timed(lambda: history.owns("p0"), args.calls))
        print("load_state (a plain read):", _timed(lambda: history.load_state("p0"), args.calls))
    finally:
        for name in (".alerts", ".alert-silences", ".alert-state"):
            es.options(ignore_status=404).indices.delete(index=prefix + name)
        es.close()


if __name__ == "__main__":
    main()
