"""What incidents cost the pipeline (issue 19): ``Pipeline.process`` CPU time per line with the
incident tracker on and with it switched off (its three calls replaced by no-ops), side by
side in one process, alternating, median of ``--repeat`` runs each.

The input: the first three samples found (``smartlogs.cli.evaluation.find_samples``), each line
sent ``--copies`` times under other ids and from three streams, in batches of 500; a looser
threshold (quantile 0.99, floor 0.5) than the defaults so that more lines are flagged.

    python bench/bench_incidents.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from smartlogs.cli.evaluation import find_samples  # noqa: E402
from streams.pipeline import Pipeline, PipelineConfig  # noqa: E402


def run(items: list[dict], off: bool) -> tuple[float, int, int]:
    p = Pipeline(PipelineConfig(anomaly_quantile=0.99, min_anomaly_score=0.5))
    if off:
        p.incidents.see = lambda *a: None
        p.incidents.observe = lambda *a: None
        p.incidents.sweep = lambda: None
    flagged = incidents = 0
    t = time.process_time()
    for k in range(0, len(items), 500):
        flagged += sum(e["anomaly"] for e in p.process(items[k:k + 500]))
        incidents += len({s["id"] for s in p.take_incidents()})
    return (time.process_time() - t) / len(items) * 1e6, flagged, incidents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--copies", type=int, default=4)
    args = ap.parse_args()
    root = Path(os.environ.get("SMARTLOGS_LOGHUB_DIR", str(REPO.parent / "shared" / "data" / "loghub")))
    samples = list(find_samples(root).values())[:3]
    lines = [ln for log, _ in samples for ln in log.read_text(errors="replace").splitlines()]
    items = [{"id": f"r{k}:{i}", "raw": line, "received": 1.8e9 + i, "source": "http",
              "stream": f"s{k % 3}"} for k in range(args.copies) for i, line in enumerate(lines)]
    res: dict[bool, list] = {False: [], True: []}
    for r in range(args.repeat):  # alternating, and which goes first too
        for off in ((True, False) if r % 2 else (False, True)):
            res[off].append(run(items, off))
    for off in (True, False):
        us = statistics.median(r[0] for r in res[off])
        print(f"incidents {'off' if off else 'on '}: {us:.1f} µs/line (median of {args.repeat}), "
              f"{res[off][0][1]} lines flagged, {res[off][0][2]} incident(s) "
              f"over {len(items):,} lines")
    # the tracker's own work alone (the pipeline's numbers above move by more than this from
    # run to run on a shared machine): the same calls replayed on a recorded sequence
    p = Pipeline(PipelineConfig(anomaly_quantile=0.99, min_anomaly_score=0.5))
    calls = []
    p.incidents.see = lambda stream, ts: calls.append((stream, ts, None, None))
    p.incidents.observe = lambda e, key, stream: calls.append((stream, e["ts"], e, key)) or "I"
    for k in range(0, len(items), 500):
        p.process(items[k:k + 500])
    best = float("inf")
    for _ in range(args.repeat):
        from streams.incidents import IncidentTracker

        t = IncidentTracker()
        t0 = time.process_time()
        for n, (stream, ts, e, key) in enumerate(calls):
            if e is None:
                t.see(stream, ts)
            else:
                t.observe(e, key, stream)
            if n % 500 == 0:
                t.sweep()
                t.take()
        best = min(best, time.process_time() - t0)
    print(f"the tracker alone: {best / len(items) * 1e6:.2f} µs/line (best of {args.repeat})")


if __name__ == "__main__":
    main()
