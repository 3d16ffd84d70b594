"""Embedded benchmark: replay → stored-and-searchable lines/s, the cost of each stage, peak memory.

Runs Linux_2k.log repeated to --lines lines (default 100,000) and measures, in one run:

1. end to end: a real `smartlogs up` process, the replay client sending batches over HTTP,
   until `/api/events` reports every line stored (i.e. stored *and* searchable);
2. per-stage cost (µs/line, in this process): parse, template mining, features,
   scoring (HST score+learn a batch at a time, threshold, reasons), each run alone; then
   pipeline.process whole (CPU time) and, in the rows marked "…", what it spends inside,
   every stage it calls timed on its own (bench/bench_pipeline.py, CPU) and the rest; store
   write (SQLite + FTS5 + window counts);
3. River HalfSpaceTrees score_one + learn_one alone on the same feature vectors (the target
   is at least half of that rate end to end), and the same trees walked a batch at a time
   (streams/hst_batch.py: what the pipeline runs, with River's exact scores);
4. peak RSS of the server process and its shard processes (VmHWM, summed).

``--shards K`` runs the server with K shard processes (SMARTLOGS_SHARDS; default: the
server's own default, the number of cores); ``--sources N`` sends the lines as N sources
(N concurrent clients, each naming its stream, the names chosen to spread over the
partitions): a source's lines are learned by its own partition, so one source keeps one
shard busy whatever K is.

``--timeline`` also prints what each shard's threads did per 250 ms of the run (spool read,
pipeline, hand-off, checkpoint, idle; the writer turn held or waited for), from the state
changes the shards record (streams/runtime/timeline.py).

    python bench/bench_embedded.py --lines 100000 --shards 2 --sources 4 --record bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "bench"))  # bench_pipeline

from smartlogs.cli.replay import plan_batches, read_lines, send_batches  # noqa: E402
from smartlogs.store import SqliteStore  # noqa: E402
from streams.parsing import LineParser, normalize_level  # noqa: E402
from streams.pipeline import Pipeline, PipelineConfig  # noqa: E402
from streams.hst_batch import BatchHST  # noqa: E402
from streams.scoring import FEATURES, AnomalyScorer  # noqa: E402
from streams.templates import TemplateMiner  # noqa: E402
from streams.runtime.shards import STATUS_SECONDS, TIMELINE_ENV  # noqa: E402
from streams.windows import window_start  # noqa: E402


def loghub() -> Path:
    from smartlogs.cli.datasets import loghub_dir_or_exit

    return loghub_dir_or_exit("Linux")


def lines_of(path: Path, n: int) -> list[str]:
    base = path.read_text(errors="replace").splitlines()
    return [base[i % len(base)] for i in range(n)]


def stage_costs(lines: list[str]) -> dict[str, float]:
    """µs per line of each stage, run in sequence over the same lines."""
    n = len(lines)
    cfg = PipelineConfig()
    parser = LineParser()
    t = time.perf_counter()
    parsed = [parser.parse(x) for x in lines]
    t_parse = time.perf_counter() - t

    miner = TemplateMiner()
    t = time.perf_counter()
    mined = [miner.mine(p.message) for p in parsed]
    t_mine = time.perf_counter() - t

    scorer = AnomalyScorer(n_trees=cfg.hst_trees, height=cfg.hst_height, window_size=cfg.hst_window)
    t = time.perf_counter()
    feats = []
    for p, m in zip(parsed, mined):
        ts = p.timestamp.timestamp() if p.timestamp else 0.0
        feats.append(scorer.features(template_id=m.template_id, seen_before=m.seen_before,
                                     is_new=m.is_new, level=normalize_level(p.level),
                                     tokens=p.message.count(" ") + 1, parsed=p.ok, host=p.host,
                                     window_start=window_start(ts, cfg.window_seconds)))
    t_feat = time.perf_counter() - t

    t = time.perf_counter()
    for k in range(0, n, 1000):  # as the pipeline does: a batch at a time
        scorer.score_many(feats[k:k + 1000])
    t_score = time.perf_counter() - t

    # HST alone on the same feature vectors: a fresh model, score_one + learn_one
    from river.anomaly import HalfSpaceTrees
    hst = HalfSpaceTrees(n_trees=cfg.hst_trees, height=cfg.hst_height, window_size=cfg.hst_window, seed=42)
    xs = [x for x, _ in feats]
    t = time.perf_counter()
    for x in xs:
        hst.score_one(x)
        hst.learn_one(x)
    t_hst = time.perf_counter() - t
    # the same model walked a batch at a time, as the pipeline does (the same scores)
    fast = BatchHST(HalfSpaceTrees(n_trees=cfg.hst_trees, height=cfg.hst_height,
                                   window_size=cfg.hst_window, seed=42), FEATURES)
    rows = [[x[f] for f in FEATURES] for x in xs]
    t = time.perf_counter()
    for k in range(0, n, 1000):
        fast.score_learn(rows[k:k + 1000])
    t_fast = time.perf_counter() - t

    # whole pipeline (what the runner calls) and the store write
    pipe = Pipeline(cfg)
    now = time.time()  # arrival: now, as in the end-to-end run
    items = [{"id": f"b:{i}", "raw": x, "received": now} for i, x in enumerate(lines)]
    t = time.process_time()  # CPU time, as the rows "…" below (wall time counts waits for a core)
    events = []
    for k in range(0, n, 1000):
        events.extend(pipe.process(items[k:k + 1000]))
    t_pipe = time.process_time() - t
    # what pipeline.process spends it on: each stage it calls timed on its own (bench_pipeline)
    from bench_pipeline import split

    inner = split([items[k:k + 1000] for k in range(0, n, 1000)])
    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(Path(d) / "b.db")
        t = time.perf_counter()
        for k in range(0, n, 1000):
            store.write(events[k:k + 1000], window_seconds=cfg.window_seconds, applied_seq=k + 1)
        t_store = time.perf_counter() - t
        store.close()
    us = 1e6 / n
    within = {f"… {k}": v * us for k, v in inner.items()}
    # (this process keeps CPython's GC settings: its passes fall in the rest, unlike in a shard)
    within["… rest (event dicts, kinds, timestamps, loops, GC passes)"] = max(
        0.0, t_pipe * us - sum(within.values()))
    return {
        "parse": t_parse * us, "template": t_mine * us, "features": t_feat * us,
        "score+learn (incl. threshold)": t_score * us, "pipeline.process total": t_pipe * us,
        **within,
        "store write (SQLite+FTS5+windows)": t_store * us, "hst_alone_lines_per_s": n / t_hst,
        "batch_hst_lines_per_s": n / t_fast,
    }


@contextmanager
def embedded_server(extra_env: dict | None = None):
    """A fresh `smartlogs up` in a temporary data dir on a free port: yields (url, pid)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = tempfile.mkdtemp(prefix="smartlogs-bench-")
    env = {**os.environ, "SMARTLOGS_DATA_DIR": data_dir, "SMARTLOGS_PORT": str(port),
           **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "up", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):  # up: the API answers and every shard runs its pipelines
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def _streams(n: int, partitions: int) -> list[str]:
    """``n`` stream names whose partitions are spread evenly (round robin)."""
    from streams.partitions import partition_of

    names: list[str] = []
    i = 0
    while len(names) < n:
        name = f"bench-{i}"
        if partition_of(name, partitions) == len(names) % partitions:
            names.append(name)
        i += 1
    return names


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hwm_mb(pids) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def _waited(url: str) -> dict[str, dict[str, float]]:
    """Each shard's seconds waited so far (its status in /healthz, ``waited_s``): for the
    store's writer turn, holding it, for its writer thread, for work."""
    shards = httpx.get(f"{url}/healthz").json()["pipeline"].get("shards", [])
    return {f"shard {s['shard']}": s.get("waited_s", {}) for s in shards}


def end_to_end(path: Path, n: int, batch: int, shards: int | None = None, sources: int = 1,
               partitions: int = 4, timeline: bool = False) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    env = {"SMARTLOGS_PARTITIONS": str(partitions)}
    if shards:
        env["SMARTLOGS_SHARDS"] = str(shards)
    data_dir = None
    if timeline:  # the shards write their threads' state changes (streams/runtime/timeline.py)
        data_dir = Path(tempfile.mkdtemp(prefix="smartlogs-bench-"))
        env.update({TIMELINE_ENV: "1", "SMARTLOGS_DATA_DIR": str(data_dir)})
    with embedded_server(env) as (url, pid):
        share = -(-n // sources)
        reps = -(-share // 2000)

        def send(k: int, stream: str):
            lines = itertools.islice(read_lines(path, reps), max(0, min(share, n - k * share)))
            return send_batches(url, plan_batches(lines, batch_size=batch), run_id=f"bench{k}",
                                headers={"x-smartlogs-stream": stream})

        shard_pids = [s["pid"] for s in httpx.get(f"{url}/healthz").json()["pipeline"].get("shards", [])]
        waited0 = _waited(url)
        cpu0 = {p: _cpu_s(p) for p in [pid, *shard_pids]}
        client0 = sum(os.times()[:2])
        t0 = time.monotonic()  # the shards' timelines use the same clock
        with ThreadPoolExecutor(sources) as pool:
            results = list(pool.map(send, range(sources), _streams(sources, partitions)))
        t_sent = time.monotonic() - t0
        # the API's and the client's part ends when the last batch is accepted (202: on disk);
        # after that the API process only answers this benchmark's polling (with one shard it
        # also runs the pipeline: then it is counted to the end)
        sent_cpu = {pid: _cpu_s(pid), "client": sum(os.times()[:2])}
        accepted = sum(r.accepted for r in results)
        with httpx.Client() as c:
            # stored and searchable: a fresh store numbers events 1, 2, ... as it commits them, so
            # all are in once event number `accepted` is: a tail query from there counts a few
            # rows (not the total of every event, 50 times a second, on the cores the shards
            # need), then the total confirms it once
            while not c.get(f"{url}/api/events", params={"limit": 1, "after": accepted - 1}
                            ).json()["total"]:
                time.sleep(0.02)
            t_all = time.monotonic() - t0
            total = c.get(f"{url}/api/events", params={"limit": 1, "exact_total": "true"}).json()["total"]
            assert total == accepted, f"{total} events stored of {accepted} accepted"
        time.sleep(1.2 * STATUS_SECONDS)  # the shards' status files: written every second
        # (the counters' difference: the status read before the run may be up to a second
        # old and the one after is read ~1.2 s after the end, so it counts ~1-2 s of the
        # shards idling outside the run; the timeline below is cut at the run's ends)
        waited = {k: {w: s - waited0.get(k, {}).get(w, 0.0) for w, s in v.items()}
                  for k, v in _waited(url).items()}
        lines_timeline = None
        if data_dir is not None:
            marks = {k: json.loads((data_dir / "shards" / f"timeline-{k}.json").read_bytes())["marks"]
                     for k in range(len(shard_pids))}
            lines_timeline = (marks, t0, t0 + t_sent, t0 + t_all)
            print(f"timeline: {data_dir}/shards/timeline-*.json (run from {t0:.3f} to "
                  f"{t0 + t_all:.3f}, monotonic)", file=sys.stderr)
        us = 1e6 / max(accepted, 1)
        cpu = {("api" if p == pid else f"shard {k - 1}"):
               ((sent_cpu[p] if p == pid and shard_pids else _cpu_s(p)) - c) * us
               for k, (p, c) in enumerate(cpu0.items())}
        cpu["client"] = (sent_cpu["client"] - client0) * us
        return {"cpu_us_per_line": cpu, "lines": accepted, "rejected": sum(r.rejected for r in results),
                "not_delivered": sum(r.not_delivered for r in results), "send_s": t_sent,
                "stored_s": t_all, "lines_per_s": accepted / t_all,
                "peak_rss_mb": _hwm_mb([pid, *shard_pids]), "batch": batch,
                "shards": len(shard_pids) or 1, "sources": sources, "waited_s": waited,
                "timeline": lines_timeline}


# the timeline's states, grouped into what the table shows (ms of each slice)
_RUNNER = {"pipeline": ("pipeline",), "read": ("read",), "hand-off": ("hand-off",),
           "checkpoint": ("checkpoint", "checkpoint: turn wait", "checkpoint: turn held",
                          "checkpoint: turn done"),
           "idle": ("idle", "gather", "tick", "yield")}
_WRITER = {"held": ("turn held",), "wait": ("turn wait",),
           "other": ("prepare", "turn done"), "idle": ("idle",)}


def timeline_table(timeline, step: float = 0.25) -> list[str]:
    """Markdown: per ``step`` seconds of the run, what each shard's runner thread (spool read,
    pipeline, hand-off to the writer: blocked while the writer is behind, idle) and writer
    thread (the store's writer turn held, waited for, the rows made before and the work after
    it, idle) did, in ms of the slice; then the whole run's seconds."""
    from streams.runtime.timeline import busy_share

    marks, t0, t_sent, t_end = timeline
    shares = {k: busy_share(m, t0, t_end, step) for k, m in marks.items()}
    head = "| s |" + "".join(
        f" s{k} pipe · read · hand-off · ckpt · idle | s{k} turn held · wait · other · writer idle |"
        for k in marks)
    out = [head, "|---:|" + "---|---|" * len(marks)]
    totals = {k: {} for k in marks}

    def cells(slot: dict, groups: dict, tot: dict) -> str:
        vals = []
        for name, states in groups.items():
            v = sum(slot.get(s, 0.0) for s in states)
            tot[name] = tot.get(name, 0.0) + v
            vals.append(f"{v * 1000:.0f}")
        return " · ".join(vals)

    for i in range(len(next(iter(shares.values())))):
        row = f"| {i * step:.2f}{'*' if t0 + i * step < t_sent else ''} |"
        for k in marks:
            slot = shares[k][i]
            row += (f" {cells(slot.get('runner', {}), _RUNNER, totals[k].setdefault('r', {}))} |"
                    f" {cells(slot.get('writer', {}), _WRITER, totals[k].setdefault('w', {}))} |")
        out.append(row)
    out.append("")
    out.append("Whole run (s): " + "; ".join(
        f"shard {k}: " + ", ".join(f"runner {n} {v:.2f}" for n, v in t["r"].items()) + ", "
        + ", ".join(f"writer {n} {v:.2f}" for n, v in t["w"].items()) for k, t in totals.items()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="lines per HTTP request")
    ap.add_argument("--shards", type=int, default=None,
                    help="shard processes of the server (default: the server's, the cores)")
    ap.add_argument("--sources", type=int, default=1, help="sources (streams) to send as, concurrently")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--timeline", action="store_true",
                    help="print what each shard's threads did per 250 ms of the run")
    ap.add_argument("--record", type=Path, help="append a results section to this Markdown file")
    args = ap.parse_args()
    path = loghub() / "Linux" / "Linux_2k.log"
    lines = lines_of(path, args.lines)
    load = os.getloadavg()[0]
    e2e = end_to_end(path, args.lines, args.batch, args.shards, args.sources, args.partitions,
                     args.timeline)
    stages = stage_costs(lines)
    hst_rate = stages.pop("hst_alone_lines_per_s")
    batch_rate = stages.pop("batch_hst_lines_per_s")
    ratio = e2e["lines_per_s"] / hst_rate
    out = [
        f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {args.lines:,} lines (Linux_2k.log repeated) · "
        f"{e2e['shards']} shard(s), {e2e['sources']} source(s), {args.partitions} partitions",
        "",
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}; "
        f"1-min load average {load:.1f} before the run",
        "",
        f"- end to end (replay client → HTTP → spool → pipeline → SQLite/FTS5, until all searchable): "
        f"**{e2e['lines_per_s']:,.0f} lines/s** ({e2e['lines']:,} lines in {e2e['stored_s']:.1f} s, "
        f"batches of {e2e['batch']}, rejected {e2e['rejected']}"
        + (f", not delivered {e2e['not_delivered']}" if e2e['not_delivered'] else "") + f"); client finished sending after {e2e['send_s']:.1f} s",
        f"- River HalfSpaceTrees score_one+learn_one alone, same features and config: **{hst_rate:,.0f} lines/s**; "
        f"end to end / HST alone = **{ratio:.2f}** (target ≥ 0.33, issue 18)",
        f"- the same trees walked a batch at a time (streams/hst_batch.py, what the pipeline runs; "
        f"identical scores): {batch_rate:,.0f} lines/s; end to end / that = {e2e['lines_per_s'] / batch_rate:.2f}",
        "- seconds each shard waited during the run (of "
        f"{e2e['stored_s']:.1f} s; its status in /healthz): "
        + "; ".join(f"{k}: " + ", ".join(f"{w} {v:.2f}" for w, v in ws.items())
                    for k, ws in e2e["waited_s"].items()),
        f"- peak RSS of the `smartlogs up` process and its shards: **{e2e['peak_rss_mb']:.0f} MB**",
        "- CPU µs per line, by process (end to end run; the API and the client until the last "
        "batch was accepted, the shards until the last line was stored): "
        + ", ".join(f"{k} {v:.0f}" for k, v in e2e["cpu_us_per_line"].items())
        + f" (total {sum(e2e['cpu_us_per_line'].values()):.0f})",
        "",
        "| stage | µs/line |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in stages.items()),
        "",
    ]
    if e2e["timeline"]:
        out += ["What each shard's threads did, ms of each 250 ms of the run (* the client still "
                "sending; runner: spool read, pipeline, hand-off to the writer thread = blocked "
                "while it is behind, checkpoint (waiting for its writer to store what it "
                "covers, then writing it), idle/gather/yield; writer: the store's writer turn held, waited "
                "for, its work before and after the turn, idle):", "",
                *timeline_table(e2e["timeline"]), ""]
    text = "\n".join(out)
    print(text)
    if args.record:
        if not args.record.exists():
            args.record.write_text("# Benchmark results\n\nAppended by `make bench` "
                                   "(`python bench/bench_embedded.py --record bench/RESULTS.md`).\n\n")
        with open(args.record, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
