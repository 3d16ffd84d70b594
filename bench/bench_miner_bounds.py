"""Costs an input can drive up in the processing core (issue 22, items 4-6).

Runs the real ``Pipeline`` (parse → mine → score) in this process, no store, and prints:

1. ``rss``: resident memory (VmRSS, MiB) before and after ``--unique`` unique random lines
   (default 200,000), the template count, and the size of a pickled checkpoint;
2. ``cpu``: CPU seconds per 1,000 new unique lines that share their first word and token
   count (the worst case for the group search), after 10,000 and 100,000 such lines
   (``--templates``: without bounds, each is a template; a plain ``TemplateMiner``);
3. ``worst``: the costliest single line (CPU ms) among crafted long lines (60 KB: shapes
   that differ only in optional value slots, many tokens, one huge token).

    python bench/bench_miner_bounds.py                       # everything (~2-4 min)
    python bench/bench_miner_bounds.py --only worst          # one part
    python bench/bench_miner_bounds.py --templates 10000     # a lower template count
"""

from __future__ import annotations

import argparse
import pickle
import random
import string
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streams.pipeline import Pipeline  # noqa: E402
from streams.templates import TemplateMiner  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(n)]


def items(lines: list[str], start: int) -> list[dict]:
    return [{"id": f"i{start + k}", "received": 1.7e9 + (start + k) / 100, "raw": x,
             "source": "bench"} for k, x in enumerate(lines)]


def part_rss(n: int) -> None:
    rng = random.Random(1)
    p = Pipeline()
    before = rss_mib()
    t = time.process_time()
    for start in range(0, n, 1000):
        lines = [" ".join(words(rng, rng.randint(4, 12))) for _ in range(min(1000, n - start))]
        p.process(items(lines, start))
        if (start + 1000) % 50_000 == 0 and start + 1000 < n:
            print(f"rss:   after {start + 1000:,} lines: RSS {rss_mib():.0f} MiB, "
                  f"templates {p.miner.template_count:,}")
    cpu = time.process_time() - t
    size = len(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)) / 2**20
    print(f"rss: {n:,} unique lines: RSS {before:.0f} -> {rss_mib():.0f} MiB, "
          f"templates {p.miner.template_count:,}, checkpoint {size:.1f} MiB, CPU {cpu:.1f} s")


def part_cpu(targets: list[int]) -> None:
    rng = random.Random(2)
    m = TemplateMiner()

    def unique(k: int) -> list[str]:
        # same first word and token count, every other token a fresh word: no two lines group
        return ["svc " + " ".join(words(rng, 7)) for _ in range(k)]

    done = 0
    for target in targets:
        # ``target`` unique lines: as many templates without bounds (with them, the miner
        # keeps what its caps allow and evicts the rest)
        t = time.process_time()
        while done < target:
            for x in unique(1000):
                m.mine(x)
            done += 1000
            if time.process_time() - t > 600:
                print(f"cpu: gave up filling to {target:,} templates after 600 s "
                      f"({done:,} lines, {m.template_count:,} templates)")
                return
        batch = unique(1000)
        t = time.process_time()
        for x in batch:
            m.mine(x)
        done += 1000
        print(f"cpu: after {target:,} unique lines ({m.template_count:,} templates kept): "
              f"{time.process_time() - t:.3f} s CPU per 1,000 new lines")


def crafted() -> list[str]:
    n = 30001
    return [
        "shX y z " + "=a" * n, "shX y z " + "=" * n,
        "shY y z " + "(a)" * 20000, "shY y z " + "()" * 20000,
        "shZ " + " ".join(f"k{i}=v{i}" for i in range(6000)),
        "shZ " + " ".join(f"k{i}=w" for i in range(6000)),
        "shW " + "a" * 60000, "shW " + "1" * 60000,
        "shV " + "/a" * 30000, "shV " + "a@b." * 15000,
        "shU " + "1.2.3." * 10000, "shU " + "0x" + "f" * 60000,
    ]


def part_worst() -> None:
    p = Pipeline()
    p.process(items(["warm up line one", "warm up line two"], 0))
    worst, which = 0.0, ""
    for k, x in enumerate(crafted() * 2):  # twice: the second time meets the first's groups
        t = time.process_time()
        p.process(items([x], 100 + k))
        c = time.process_time() - t
        if c > worst:
            worst, which = c, x[:24]
    print(f"worst: costliest single 60 KB line {worst * 1000:.1f} ms CPU ({which!r}...)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["rss", "cpu", "worst"])
    ap.add_argument("--unique", type=int, default=200_000)
    ap.add_argument("--templates", type=int, nargs="+", default=[10_000, 100_000])
    a = ap.parse_args()
    if a.only in (None, "worst"):
        part_worst()
    if a.only in (None, "cpu"):
        part_cpu(a.templates)
    if a.only in (None, "rss"):
        part_rss(a.unique)


if __name__ == "__main__":
    main()
