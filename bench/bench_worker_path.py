"""The worker's CPU per line outside Kafka: what ``streams.runtime.worker`` does with each
Kafka message once Faust hands it over, on the real Elasticsearch.

    python bench/bench_worker_path.py [--lines 40000] [--es URL]

Linux_2k.log lines (4 sources, 250 to a message, as the bridge makes them) go through
``orjson.loads`` and ``streams.runtime.stage.run_stage`` (the pipeline and its stage), then
four messages at a time through ``Sink.write`` (``Batch.join``: one bulk request, as the
worker writes what queued during a write) into a fresh index prefix, which is deleted
afterwards. The first 8,000 lines are a warm-up (the model learns its templates). Printed: the
process CPU (``time.process_time``: every thread of this process, none of Elasticsearch's) per
line of the decode + pipeline part and of the write part (document building, the bulk request
and its answer, the catalog, incident snapshots). Run it from two checkouts one after the
other to compare them (bench/RESULTS.md, issue 18).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=40_000)
    ap.add_argument("--es", help="Elasticsearch URL (default: SMARTLOGS_ES_URL, else the engines')")
    args = ap.parse_args()

    from smartlogs.cli.datasets import require_loghub_dir
    from smartlogs.store.elasticsearch import ElasticsearchStore
    from streams.pipeline import Pipeline, PipelineConfig
    from streams.runtime.stage import Batch, Sink, run_stage
    from streams.templates import MergeNotices

    url = args.es or os.environ.get("SMARTLOGS_ES_URL")
    if not url:
        sys.path.insert(0, str(REPO / "bench"))
        from bench_full_stack import engine_env

        url = engine_env()["SMARTLOGS_ES_URL"].strip("'")
    lines = (require_loghub_dir("Linux") / "Linux" / "Linux_2k.log").read_text(
        errors="replace").splitlines()
    run = uuid.uuid4().hex[:6]
    now = time.time()
    msgs = [orjson.dumps([{"id": f"{run}:{k}", "raw": lines[k % len(lines)], "received": now,
                           "source": f"bench-{(s // 250) % 4}"} for k in range(s, s + 250)])
            for s in range(0, args.lines, 250)]
    pipe, notices = Pipeline(PipelineConfig()), MergeNotices()
    store = ElasticsearchStore(url, index_prefix=f"bench-wpath-{run}")
    sink = Sink(store, name="elasticsearch", window_seconds=60)
    try:
        for m in msgs[:32]:  # warm-up
            sink.write(run_stage(pipe, notices, orjson.loads(m)))
        rest = msgs[32:]
        cpu_pipe = cpu_write = 0.0
        for k in range(0, len(rest), 4):
            t0 = time.process_time()
            batches = [run_stage(pipe, notices, orjson.loads(m)) for m in rest[k:k + 4]]
            t1 = time.process_time()
            sink.write(Batch.join(batches))
            cpu_write += time.process_time() - t1
            cpu_pipe += t1 - t0
    finally:
        store.delete_before(4e9)
        store.client.options(ignore_status=404).indices.delete(
            index=f"{store.catalog_index},{store.incidents_index}", ignore_unavailable=True)
        store.close()
    n = len(rest) * 250
    print(f"{n:,} lines after a warm-up of 8,000; 1-min load average {os.getloadavg()[0]:.1f}: "
          f"decode + pipeline {cpu_pipe / n * 1e6:.1f} µs a line, write "
          f"{cpu_write / n * 1e6:.1f} µs a line (process CPU)")


if __name__ == "__main__":
    main()
