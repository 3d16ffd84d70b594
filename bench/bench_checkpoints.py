"""What a checkpoint costs under load: the whole model pickled (the format before issue 22
item 5 was finished) against the incremental checkpoint (streams.runtime.checkpoints).

``PYTHONPATH=<checkout> python bench/bench_checkpoints.py [N]`` grows a model with N
(default 100,000) unique random lines, then replays ``Linux_2k.log`` (from
../shared/data/loghub, or SMARTLOGS_SAMPLES) in batches of 500 lines, checkpointing after
each batch as a busy runner does, and prints per save: CPU and wall time, rows written, bytes
of the pickled rest, and the same for a whole pickle written and fsynced. Results:
bench/RELIABILITY.md.
"""

from __future__ import annotations

import os
import pickle
import random
import string
import sys
import tempfile
import time
from pathlib import Path

from streams.runtime.checkpoints import save_checkpoint
from streams.pipeline import Pipeline


def _items(lines: list[str], start: int) -> list[dict]:
    return [{"id": f"i{start + k}", "received": 1.7e9 + (start + k) / 100, "raw": x,
             "source": "bench"} for k, x in enumerate(lines)]


def _whole(p: Pipeline, path: Path) -> int:
    body = pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)
    with open(path, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    return len(body)


def _timed(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    samples = Path(os.environ.get("SMARTLOGS_SAMPLES", Path(__file__).resolve().parents[2]
                                  / "shared" / "data" / "loghub"))
    linux = (samples / "Linux" / "Linux_2k.log").read_text(errors="replace").splitlines()
    rng = random.Random(1)
    p = Pipeline()
    for start in range(0, n, 1000):
        lines = [" ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))
                          for _ in range(rng.randint(4, 12))) for _ in range(1000)]
        p.process(_items(lines, start))
    with tempfile.TemporaryDirectory() as tmp:
        inc, whole = Path(tmp) / "inc.ckpt", Path(tmp) / "whole.ckpt"
        first, c, w = _timed(lambda: save_checkpoint(p, inc))
        print(f"model after {n:,} unique lines: first (full) save {c:.2f} s CPU, {w:.2f} s wall, "
              f"{first['rows']:,} rows + {first['bytes'] / 2**20:.1f} MiB pickled rest; "
              f"file {inc.stat().st_size / 2**20:.1f} MiB")
        tot = {"inc_cpu": 0.0, "inc_wall": 0.0, "whole_cpu": 0.0, "whole_wall": 0.0, "rows": 0}
        saves = 0
        for rnd in range(3):
            for k in range(0, len(linux), 500):
                p.process(_items(linux[k:k + 500], n + rnd * 2000 + k))
                done, c, w = _timed(lambda: save_checkpoint(p, inc))
                tot["inc_cpu"] += c
                tot["inc_wall"] += w
                tot["rows"] += done["rows"]
                size, c, w = _timed(lambda: _whole(p, whole))
                tot["whole_cpu"] += c
                tot["whole_wall"] += w
                saves += 1
        print(f"{saves} saves, each after 500 lines of Linux_2k.log:")
        print(f"  incremental: {tot['inc_cpu'] / saves:.3f} s CPU, {tot['inc_wall'] / saves:.3f} s "
              f"wall per save, {tot['rows'] / saves:,.0f} rows + {done['bytes'] / 2**20:.1f} MiB "
              f"pickled rest")
        print(f"  whole pickle: {tot['whole_cpu'] / saves:.3f} s CPU, "
              f"{tot['whole_wall'] / saves:.3f} s wall per save, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
