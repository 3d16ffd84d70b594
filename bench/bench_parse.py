"""Parse-stage cost per line (µs), before and after header inference (issue 17).

For every sample found (``smartlogs.cli.evaluation.find_samples``), each file repeated to
``--lines`` lines, best of ``--repeat`` runs of:

* ``builtin``: ``LineParser.parse`` alone (the parse stage before issue 17; on a format it
  does not know, it tries its candidates and returns the raw line);
* ``pipeline``: the pipeline's parse stage (``Pipeline._parse``: built-in formats, then the
  source's learned layout), the default;
* ``inferred``: the same with the built-in formats switched off (learned layouts alone).

    python bench/bench_parse.py --lines 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from smartlogs.cli.evaluation import find_samples  # noqa: E402
from streams.parsing import LineParser  # noqa: E402
from streams.pipeline import Pipeline, PipelineConfig  # noqa: E402


def per_line(makers, lines, items, repeat: int) -> list[float]:
    """Best µs/line of each maker's parse function; the makers take turns in every round, so
    a noisy neighbour slows them alike. CPU time of this process (time.process_time), so time
    spent waiting for a core on a shared machine is not counted."""
    best = [float("inf")] * len(makers)
    for _ in range(repeat):
        for k, make in enumerate(makers):
            run = make()
            t = time.process_time()
            for x, it in zip(lines, items):
                run(x, it)
            best[k] = min(best[k], time.process_time() - t)
    return [b / len(lines) * 1e6 for b in best]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--root", default=os.environ.get(
        "SMARTLOGS_LOGHUB_DIR", str(REPO.parent / "shared" / "data" / "loghub")))
    a = ap.parse_args()
    print("| sample | builtin µs/line | pipeline µs/line | inferred µs/line |")
    print("|---|---:|---:|---:|")
    for name, (log, _) in find_samples(Path(a.root)).items():
        base = log.read_text(errors="replace").splitlines()
        lines = [base[i % len(base)] for i in range(a.lines)]
        items = [{"id": i, "raw": x, "received": 1.8e9} for i, x in enumerate(lines)]

        def builtin():
            p = LineParser()
            return lambda x, it: p.parse(x)

        def pipeline():
            return Pipeline(PipelineConfig())._parse

        def inferred():
            return Pipeline(PipelineConfig(builtin_formats=False))._parse

        cols = per_line((builtin, pipeline, inferred), lines, items, a.repeat)
        print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
