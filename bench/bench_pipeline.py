"""The pure core's CPU a line: ``Pipeline.process`` in this process, stage by stage.

Two workloads, both fed to one ``Pipeline`` in batches of 1000 as the runtimes do:

- ``linux4``: Linux_2k.log repeated to 100,000 lines, sent as 4 sources (batch k by source k % 4);
- ``mixed``: every loghub ``*_2k.log`` sample, one source each, their batches interleaved;
- ``structured`` (for ``compare``): the samples' ``_structured.csv`` rows as JSON events.

Subcommands:

    python bench/bench_pipeline.py stages [--workload linux4] [--repeat 3]
        µs a line of Pipeline.process (best of --repeat), then the same run with each named
        stage wrapped in a timer: the stages' µs a line and the rest ("glue").
    python bench/bench_pipeline.py profile [--workload mixed]
        cProfile of one run, the top functions by own time.
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/bench_pipeline.py run --workload linux4 --batches 20   (then --batches 0)
        instructions of 20 batches: the difference of the two "Collected" counts; the one
        figure a shared machine does not disturb.
    python bench/bench_pipeline.py compare --ref DIR
        runs every workload and every loghub 2k sample alone through the pipeline of the
        checkout in DIR (e.g. ``git archive main | tar -x -C DIR``) and of this checkout, each
        in its own process, and compares every output: each event (every field), the incident
        snapshots and catalog records taken after each batch, and the final status. Exit 1
        on the first difference.

The code measured is this checkout's, or the one named by ``SMARTLOGS_CODE`` (what
``compare`` uses to run the reference).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("SMARTLOGS_CODE") or str(REPO))

from streams.pipeline import Pipeline, PipelineConfig  # noqa: E402

BATCH = 1000
RECEIVED = 1_700_000_000.0  # a fixed arrival time: runs are comparable across checkouts


def _root() -> Path:
    from smartlogs.cli.datasets import loghub_dir_or_exit

    return loghub_dir_or_exit("Linux")


def _lines(system: str) -> list[str]:
    path = _root() / system / f"{system}_2k.log"
    if not path.exists():  # a sample kept in part (BGL: its first 1000 lines)
        path = _root() / system / f"{system}_2k_first1000.log"
    return path.read_text(errors="replace").splitlines()


def _samples(partial: bool = False) -> list[str]:
    """The samples with a whole ``_2k.log``; with ``partial``, also those kept in part."""
    return sorted(p.name for p in _root().iterdir()
                  if (p / f"{p.name}_2k.log").exists()
                  or (partial and (p / f"{p.name}_2k_first1000.log").exists()))


def _batches(lines: list[str], source: str, tag: str) -> list[list[dict]]:
    return [[{"id": f"{tag}:{k + i}", "raw": x, "received": RECEIVED + k / BATCH,
              "source": "http", "stream": source}
             for i, x in enumerate(lines[k:k + BATCH])]
            for k in range(0, len(lines), BATCH)]


def workload(name: str) -> list[list[dict]]:
    """The batches of a workload, in the order they are processed."""
    if name == "linux4":
        base = _lines("Linux")
        lines = [base[i % len(base)] for i in range(100_000)]
        out = []
        for k in range(0, len(lines), BATCH):
            out += _batches(lines[k:k + BATCH], f"bench-{(k // BATCH) % 4}", f"l{k}")
        return out
    if name == "mixed":
        per = {s: _batches(_lines(s), s.lower(), s) for s in _samples()}
        out = []
        for k in range(max(len(b) for b in per.values())):
            out += [b[k] for b in per.values() if k < len(b)]
        return out
    if name == "structured":
        return _structured()
    if name.startswith("sample:"):
        s = name.split(":", 1)[1]
        return _batches(_lines(s), s.lower(), s)
    raise SystemExit(f"unknown workload {name!r}")


def _structured() -> list[list[dict]]:
    """Structured events (the JSON path): each sample's ``_structured.csv`` rows as events with
    their level, component, pid and a host of three, an event time of their own; every
    seventh a bare message holding the whole raw line (parsed for its header, not learned)."""
    import csv

    out = []
    for s in _samples():
        path = _root() / s / f"{s}_2k.log_structured.csv"
        if not path.exists():
            continue
        raw = _lines(s)
        with open(path, newline="", errors="replace") as f:
            rows = list(csv.DictReader(f))
        items = []
        for i, r in enumerate(rows):
            if i % 7 == 6 and i < len(raw):
                item = {"message": raw[i]}
            else:
                item = {"message": r.get("Content") or "", "level": r.get("Level") or None,
                        "component": r.get("Component") or None, "pid": r.get("PID") or r.get("Pid"),
                        "host": f"{s.lower()}-{i % 3}", "ts": RECEIVED - 3600.0 + i}
            items.append({**item, "id": f"{s}:j{i}", "received": RECEIVED, "source": "http",
                          "key": s.lower()})
        out += [items[k:k + BATCH] for k in range(0, len(items), BATCH)]
    return out


def runtime_gc() -> None:
    """The garbage-collector settings the shards run with (streams/runtime/gc_tuning.py), so
    the figures are a shard's; ``--default-gc`` keeps CPython's."""
    try:
        from streams.runtime.gc_tuning import tune_gc
    except ImportError:  # a checkout from before it
        return
    tune_gc()


def run(batches: list[list[dict]], wall: list | None = None) -> float:
    """CPU seconds of Pipeline.process over the batches (fresh items each run: process may
    add keys). CPU time, not wall time: on a shared machine it is what the process itself spent."""
    pipe = Pipeline(PipelineConfig())
    fresh = [[dict(i) for i in b] for b in batches]
    t, w = time.process_time(), time.perf_counter()
    for b in fresh:
        pipe.process(b)
        pipe.take_incidents()
        pipe.take_catalog()
    if wall is not None:
        wall.append(time.perf_counter() - w)
    return time.process_time() - t


# -- stages -------------------------------------------------------------------------------
def _stage_wrappers() -> list[tuple[str, object, str]]:
    """(stage name, owner, attribute) of every function timed as a stage. The stages nest
    nowhere: each is called from Pipeline.process / _featurise directly."""
    import streams.pipeline as pl
    from streams.incidents import IncidentTracker
    from streams.scoring import AnomalyScorer
    from streams.silence import SilenceWatch
    from streams.templates import TemplateMiner

    return [
        ("parse (Pipeline._parse)", Pipeline, "_parse"),
        ("template (TemplateMiner.mine)", TemplateMiner, "mine"),
        ("features (AnomalyScorer.features)", AnomalyScorer, "features"),
        ("score+learn (AnomalyScorer.score_many)", AnomalyScorer, "score_many"),
        ("severity word (severe_word)", pl, "severe_word"),
        ("level (normalize_level)", pl, "normalize_level"),
        ("source (source_of)", pl, "source_of"),
        ("window start (window_start)", pl, "window_start"),
        ("timestamp text (_iso)", pl, "_iso"),
        ("incidents: see", IncidentTracker, "see"),
        ("incidents: observe + key", IncidentTracker, "observe"),
        ("incidents: sweep", IncidentTracker, "sweep"),
        ("silence watch (SilenceWatch.see)", SilenceWatch, "see"),
        ("catalog records (Pipeline._record)", Pipeline, "_record"),
    ]


def split(batches: list[list[dict]]) -> dict[str, float]:
    """CPU seconds spent in each named stage during one run of the batches, each stage's
    function wrapped in a timer; the timer's own cost inside the measured span (measured on an
    empty function, times the stage's calls) is taken off."""
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}
    saved = []
    perf = time.perf_counter  # short calls: wall time (a CPU-time read is a system call)

    def wrap(f, name):
        def timed(*a, **k):
            t = perf()
            try:
                return f(*a, **k)
            finally:
                spent[name] += perf() - t
                calls[name] += 1
        return timed

    spent["(calibration)"], calls["(calibration)"] = 0.0, 0
    empty = wrap(lambda *a, **k: None, "(calibration)")
    for _ in range(200_000):
        empty(1, k=2)
    per_call = spent.pop("(calibration)") / calls.pop("(calibration)")
    for name, owner, attr in _stage_wrappers():
        if not hasattr(owner, attr):
            continue
        f = getattr(owner, attr)
        saved.append((owner, attr, f))
        spent[name], calls[name] = 0.0, 0
        setattr(owner, attr, wrap(f, name))
    wall: list[float] = []
    try:
        cpu = run(batches, wall)
    finally:
        for owner, attr, f in saved:
            setattr(owner, attr, f)
    # the stages are timed by the wall clock (a CPU-time read is a system call, too dear a
    # few dozen times a line): on a shared machine the process waits for a core part of that
    # time, so each stage is scaled by the run's CPU / wall ratio (the waits fall alike on all)
    scale = min(1.0, cpu / max(wall[0], 1e-9))
    return {k: max(0.0, v - calls[k] * per_call) * scale for k, v in spent.items()}


def stages(batches: list[list[dict]], repeat: int) -> dict[str, float]:
    """µs a line: each named stage, the rest, and the total (best of ``repeat`` runs, CPU)."""
    n = sum(len(b) for b in batches)
    total = min(run(batches) for _ in range(repeat))
    us = 1e6 / n
    out = {k: v * us for k, v in split(batches).items()}
    out["rest (glue: event dicts, kinds, timestamps, loops)"] = max(0.0, total * us - sum(out.values()))
    out["pipeline.process total"] = total * us
    return out


def profile(batches: list[list[dict]], top: int) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    run(batches)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


# -- compare ------------------------------------------------------------------------------
def dump(name: str, out: Path) -> None:
    """Every output of the pipeline over a workload, pickled: per batch the events, the
    incidents and catalog records taken after it; then the status and the sources' layouts."""
    pipe = Pipeline(PipelineConfig())
    got = []
    for b in workload(name):
        events = pipe.process(b)
        got.append((events, pipe.take_incidents(), [c.__dict__ if hasattr(c, "__dict__") else
                                                    repr(c) for c in pipe.take_catalog()]))
    got.append((pipe.status(), pipe.describe_sources()))
    out.write_bytes(pickle.dumps(got))


def _first_difference(a, b, where="") -> str | None:
    if type(a) is not type(b):
        return f"{where}: type {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            d = _first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float) and a != a and b != b:  # NaN
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"


def compare(ref: Path, names: list[str]) -> int:
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            got = {}
            for label, code in (("ref", ref), ("this", REPO)):
                path = Path(d) / f"{label}.pkl"
                env = {**os.environ, "SMARTLOGS_CODE": str(code), "PYTHONPATH": str(code)}
                subprocess.run([sys.executable, __file__, "dump", "--workload", name,
                                "--out", str(path)], env=env, check=True)
                got[label] = pickle.loads(path.read_bytes())
            diff = _first_difference(got["ref"], got["this"])
            events = sum(len(e) for e, *_ in got["this"][:-1])
            digest = hashlib.sha256(pickle.dumps(got["this"])).hexdigest()[:12]
            print(f"{name}: {events} events, {'IDENTICAL' if diff is None else 'DIFFERENT'}"
                  f" (sha256 {digest})" + ("" if diff is None else f"\n  first difference {diff}"))
            bad += diff is not None
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--default-gc", action="store_true",
                    help="CPython's collector settings, not the shards' (streams/runtime/gc_tuning.py)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stages")
    s.add_argument("--workload", default="linux4")
    s.add_argument("--repeat", type=int, default=3)
    p = sub.add_parser("profile")
    p.add_argument("--workload", default="linux4")
    p.add_argument("--top", type=int, default=40)
    c = sub.add_parser("compare")
    c.add_argument("--ref", type=Path, required=True)
    c.add_argument("--workload", action="append", help="default: linux4, mixed and every sample")
    r = sub.add_parser("run", help="build the workload, warm up on 3 batches, run N batches: "
                       "under valgrind --tool=callgrind, N=20 minus N=0 counts the instructions")
    r.add_argument("--workload", default="linux4")
    r.add_argument("--batches", type=int, default=20)
    d = sub.add_parser("dump")
    d.add_argument("--workload", required=True)
    d.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not args.default_gc:
        runtime_gc()
    if args.cmd == "stages":
        batches = workload(args.workload)
        res = stages(batches, args.repeat)
        print(f"workload {args.workload}: {sum(map(len, batches)):,} lines, "
              f"1-min load {os.getloadavg()[0]:.1f}, code {sys.path[0]}")
        print("| stage | µs/line |\n|---|---:|")
        for k, v in res.items():
            print(f"| {k} | {v:.2f} |")
    elif args.cmd == "profile":
        profile(workload(args.workload), args.top)
    elif args.cmd == "run":
        batches = workload(args.workload)
        run(batches[:3])
        if args.batches:
            run(batches[:args.batches])
    elif args.cmd == "compare":
        names = args.workload or ["linux4", "mixed", "structured",
                                  *(f"sample:{s}" for s in _samples(partial=True))]
        sys.exit(compare(args.ref, names))
    else:
        dump(args.workload, args.out)


if __name__ == "__main__":
    main()
