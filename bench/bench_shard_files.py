"""Two shards through the embedded runner, without HTTP: one SQLite file (the store's one
writer turn, as `smartlogs up` runs them) against a file per shard (a prototype of the
structural fix issue 18 asks to evaluate: no turn to share; the API would read across the
files with ATTACH, not built), each with and without the runner yielding to its writer's
turn (``EmbeddedRunner(yield_to_writer=...)``).

Each shard process owns one of two partitions and finds its spool filled before it starts
(Linux_2k.log repeated, --lines in all, half a shard); the figure is the wall time from the
common start until both shards stored every line, and each shard's CPU and writer-turn
seconds. Rounds alternate the variants so the machine's load falls on all of them.

    python bench/bench_shard_files.py --lines 100000 --rounds 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {  # name: (a file per shard, yield_to_writer, the runners' max_batch)
    "one file, no yield (main)": (False, False, 5000),
    "one file, yield": (False, True, 5000),
    "a file per shard": (True, False, 5000),
    "one file, batches of 2000": (False, False, 2000),
    "one file, batches of 1000": (False, False, 1000),
}


def _source_of(k: int, parts: int) -> str:
    from streams.partitions import partition_of

    i = 0
    while partition_of(f"bench-{i}", parts) != k:
        i += 1
    return f"bench-{i}"


def _fill(path: Path, k_list: list[int], lines: list[str], per_shard: int, batch: int) -> None:
    from smartlogs.store.sqlite import SqliteStore

    store = SqliteStore(path, partitions=2)
    now = time.time()
    for start in range(0, per_shard, batch):
        for k in k_list:  # the API interleaves the sources' requests
            src = _source_of(k, 2)
            store.spool_append([{"id": f"{src}:{i}", "raw": lines[i % len(lines)],
                                 "received": now, "source": src}
                                for i in range(start, min(start + batch, per_shard))])
    store.close()


def _shard(k: int, path: str, yield_to_writer: bool, max_batch: int, go, out) -> None:
    from smartlogs.store.sqlite import SqliteStore
    from streams.pipeline import PipelineConfig
    from streams.runtime.embedded import GATHER_SECONDS, EmbeddedRunner
    from streams.runtime.gc_tuning import tune_gc
    from streams.runtime.shards import SWITCH_SECONDS

    store = SqliteStore(path, partitions=2)
    runner = EmbeddedRunner(store, PipelineConfig(), partitions=[k], n_partitions=2,
                            max_batch=max_batch,
                            gather_seconds=GATHER_SECONDS, yield_to_writer=yield_to_writer)
    tune_gc()
    sys.setswitchinterval(SWITCH_SECONDS)
    out.put("ready")
    go.wait()
    t0, c0 = time.monotonic(), time.process_time()
    runner.start()
    runner.drain(600)
    end = time.monotonic()
    out.put((k, end - t0, time.process_time() - c0, store.turn_waited, store.turn_held, end))
    runner.stop()
    store.close()


def run(variant: str, lines: list[str], n: int, batch: int) -> dict:
    per_file, yields, max_batch = VARIANTS[variant]
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        paths = [Path(d) / f"s{k}.db" for k in range(2)] if per_file else [Path(d) / "one.db"] * 2
        if per_file:
            for k in range(2):
                _fill(paths[k], [k], lines, n // 2, batch)
        else:
            _fill(paths[0], [0, 1], lines, n // 2, batch)
        go, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_shard, args=(k, str(paths[k]), yields, max_batch, go, out))
                 for k in range(2)]
        for p in procs:
            p.start()
        for _ in procs:  # both restored their (fresh) models and wait
            assert out.get(timeout=300) == "ready"
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        go.set()
        got = sorted(out.get(timeout=600) for _ in procs)
        wall = max(g[-1] for g in got) - t0  # until the last shard stored its last line
        for p in procs:
            p.join(60)
    return {"variant": variant, "load": load, "lines_per_s": n / wall, "wall": wall,
            "shards": got}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="items per spool row (a request)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    root = Path(os.environ.get("SMARTLOGS_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub"))
    lines = (root / "Linux" / "Linux_2k.log").read_text(errors="replace").splitlines()
    print("| round | variant | load before | lines/s | wall s | per shard: wall · CPU · turn waited · "
          "turn held (s) |")
    print("|---:|---|---:|---:|---:|---|")
    for r in range(args.rounds):
        for v in args.variants:
            res = run(v, lines, args.lines, args.batch)
            shards = "; ".join(f"{w:.2f} · {c:.2f} · {tw:.2f} · {th:.2f}"
                               for _, w, c, tw, th, _ in res["shards"])
            print(f"| {r + 1} | {v} | {res['load']:.1f} | {res['lines_per_s']:,.0f} | "
                  f"{res['wall']:.2f} | {shards} |", flush=True)


if __name__ == "__main__":
    main()
