"""What a shard's batch costs by its size: CPU µs a line of one ``EmbeddedRunner.step`` (the
spool read, the pipeline, the store's write) for batches of N lines, in this process, without
threads (issue 18, small requests: many clients posting a line each made batches of a few
dozen lines; the fixed cost of a step and its write is why the shards gather).

    python bench/bench_shard_batch_cost.py                 # batches of 1, 8, 30, 100, 300, 1000, 3000
    python bench/bench_shard_batch_cost.py --sizes 30 300

The lines are synthetic (``small request line <n>``, one source), appended to the spool in
requests of up to 30 lines before each step, as the API's group commits would.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from smartlogs.store.sqlite import SqliteStore
from streams.pipeline import PipelineConfig
from streams.runtime import embedded
from streams.runtime.embedded import EmbeddedRunner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 30, 100, 300, 1000, 3000])
    ap.add_argument("--lines", type=int, default=6000, help="lines per size (at least 5 steps)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="smartlogs-batchcost-"))
    store = SqliteStore(folder / "db", partitions=1)
    runner = EmbeddedRunner(store, PipelineConfig())
    spent = {"read": 0.0, "pipeline": 0.0, "write": 0.0}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.process_time() - t
        return wrapper

    embedded.run_stage = timed("pipeline", embedded.run_stage)
    runner._write = timed("write", runner._write)
    store.spool_rows = timed("read", store.spool_rows)
    k = 0

    def items(n: int) -> list[dict]:
        nonlocal k
        out = [{"id": f"x{k + i}", "raw": f"small request line {k + i}", "source": "bench",
                "received": time.time()} for i in range(n)]
        k += n
        return out

    for _ in range(10):  # past the model's warm-up
        store.spool_append(items(500))
        runner.step()
    print("| lines a batch | CPU µs a line: step | spool read | pipeline | store write | µs a batch |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        steps = max(5, args.lines // n)
        for key in spent:
            spent[key] = 0.0
        total = 0.0
        for _ in range(steps):
            for j in range(0, n, 30):
                store.spool_append(items(min(30, n - j)))
            t = time.process_time()
            runner.step()
            total += time.process_time() - t
        per = 1e6 / (steps * n)
        print(f"| {n:,} | {total * per:,.0f} | {spent['read'] * per:,.1f} | "
              f"{spent['pipeline'] * per:,.0f} | {spent['write'] * per:,.0f} | "
              f"{total / steps * 1e6:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
