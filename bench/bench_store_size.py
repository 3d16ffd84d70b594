"""Storage and growth of the embedded SQLite store: bytes on disk per raw byte, write rate, and
the latency of each /api/events filter kind, at N stored lines.

    python bench/bench_store_size.py --lines 1000000 [--against REV] [--keep DIR]
    python bench/bench_store_size.py --keep DIR --queries-only   # the queries again, on DIR
    python bench/bench_store_size.py --keep DIR --queries-only --compare REV --runs 5
    python bench/bench_store_size.py --keep DIR --queries-only --compare REV --compare-dir OLD
        # a layout change: REV's code on the store REV wrote (OLD) against this one's on DIR

Linux_2k.log goes through the real pipeline once (parse, template mining, scoring); its 2,000
events are then written N/2000 times through ``SqliteStore.write`` (2,000 per batch, as the
runner does), each copy with new ids, its event times shifted past the previous copy's and
later arrival times, so time ranges, windows and the id index grow as with a longer log. Raw
bytes = the lines as replayed (each with its newline).

Prints: the files' bytes (events file + WAL after a checkpoint, spool file) and their ratio to
the raw bytes, where the bytes go (SQLite's ``dbstat``: per table and index), write lines/s
(wall and CPU), and for each filter kind of ``/api/events`` (``SqliteStore.search``, the call
the endpoint makes; a page of 50, as the API's default) the median of 3 runs in ms and how
many events matched. ``--against REV`` runs the same with another revision's
``smartlogs/store/sqlite.py`` (to measure the layout before a change).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def base_events() -> tuple[list[dict], list[str]]:
    from smartlogs.cli.datasets import require_loghub_dir
    from streams.pipeline import Pipeline

    lines = (require_loghub_dir("Linux") / "Linux" / "Linux_2k.log").read_text(
        errors="replace").splitlines()
    pipe = Pipeline()
    items = [{"id": f"b:{i}", "raw": x, "received": 1.8e9, "source": "file"}
             for i, x in enumerate(lines)]
    events = []
    for k in range(0, len(items), 500):
        events.extend(pipe.process(items[k:k + 500]))
    return events, lines


def _span(base: list[dict], copy_span: float | None) -> tuple[float, float, float]:
    """(first ts, span of one copy, scale of its times)."""
    lo = min(e["ts"] for e in base)
    span = max(e["ts"] for e in base) - lo + 86400.0
    if copy_span:
        return lo, copy_span, copy_span / span
    return lo, span, 1.0


def copies(base: list[dict], n_lines: int, copy_span: float | None = None):
    """Batches of 2,000 events: copy k of the base with new ids and later times."""
    from streams.pipeline import _iso

    lo, span, scale = _span(base, copy_span)
    k = 0
    while k * len(base) < n_lines:
        shift = k * span
        batch = []
        for i, e in enumerate(base[:n_lines - k * len(base)]):
            e = dict(e)
            n = k * len(base) + i
            e["id"] = f"bench:{n}"
            e["ts"] = lo + shift + (e["ts"] - lo) * scale
            e["timestamp"] = _iso(e["ts"])
            e["received"] = 1.8e9 + n * 0.001
            batch.append(e)
        yield k + 1, batch
        k += 1


def load_store_class(against: str | None):
    if against is None:
        from smartlogs.store.sqlite import SqliteStore
        return SqliteStore
    src = subprocess.run(["git", "show", f"{against}:smartlogs/store/sqlite.py"], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    tmp = pathlib.Path(tempfile.mkdtemp())
    (tmp / "other_sqlite.py").write_text(src)
    spec = importlib.util.spec_from_file_location("other_sqlite", tmp / "other_sqlite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SqliteStore


def where_the_bytes_go(path: pathlib.Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name "
                            "ORDER BY 2 DESC").fetchall()
    finally:
        conn.close()
    return rows


def queries(base: list[dict], n_lines: int, copy_span: float | None = None):
    """(label, EventQuery) for each filter kind of /api/events."""
    from collections import Counter

    from smartlogs.store.base import EventQuery

    lo, span, scale = _span(base, copy_span)
    mid_copy = (n_lines // len(base)) // 2
    t0 = lo + mid_copy * span + 86400.0 * scale  # a day inside a copy in the middle of the store
    host = Counter(e["host"] for e in base).most_common(1)[0][0]
    tmpls = Counter(e["template_id"] for e in base).most_common()
    tmpl, rare_tmpl = tmpls[0][0], tmpls[-1][0]
    levels = Counter(e["level"] for e in base if e["level"])
    level = levels.most_common()[-1][0] if levels else "error"
    r_mid = 1.8e9 + (n_lines // 2) * 0.001
    return [
        ("no filter (newest first)", EventQuery()),
        ("q word: session", EventQuery(q="session")),
        ("q two words: authentication failure", EventQuery(q="authentication failure")),
        ('q phrase: "session opened"', EventQuery(q='"session opened"')),
        ("q prefix: auth*", EventQuery(q="auth*")),
        ("q OR: cupsd OR xinetd", EventQuery(q="cupsd OR xinetd")),
        ("q NOT alone: -session", EventQuery(q="-session")),
        ("q rare word: kernel", EventQuery(q="kernel")),
        (f"host={host}", EventQuery(host=host)),
        (f"level={level}", EventQuery(level=level)),
        (f"template={tmpl} (most common)", EventQuery(template=tmpl)),
        (f"template={rare_tmpl} (rarest)", EventQuery(template=rare_tmpl)),
        ("anomaly=true", EventQuery(anomaly=True)),
        ("time range (1 day*, event time)", EventQuery(since=t0, until=t0 + 86400.0 * scale)),
        ("time range (10 s, arrival time)", EventQuery(since=r_mid, until=r_mid + 10.0,
                                                         basis="arrival")),
        ("order=arrival", EventQuery(arrival=True)),
        ("tail (after=N-100)", EventQuery(after_seq=n_lines - 100)),
        ("q + host + time range (30 days*)", EventQuery(q="session", host=host, since=t0,
                                                        until=t0 + 30 * 86400.0 * scale)),
    ]


def measure_elasticsearch(args, base: list[dict], lines: list[str]) -> None:
    """The Elasticsearch store's bytes per line, measured as for SQLite: N lines through
    ``ElasticsearchStore.write`` (monthly indices), then a refresh and a forcemerge to one
    segment, then the indices' store size (``_cat/indices?bytes=b``)."""
    import httpx

    from smartlogs.store.elasticsearch import ElasticsearchStore

    url = args.elasticsearch.rstrip("/")
    prefix = f"bench-store-size-{os.getpid()}"
    store = ElasticsearchStore(url, index_prefix=prefix, index_period="month")
    http = httpx.Client(timeout=600)
    raw = 0
    try:
        wall0 = time.perf_counter()
        for _, batch in copies(base, args.lines, args.copy_span):
            store.write(batch, window_seconds=60)
            raw += sum(len(lines[i].encode()) + 1 for i in range(len(batch)))
        wall = time.perf_counter() - wall0
        http.post(f"{url}/{prefix}-*/_refresh").raise_for_status()
        http.post(f"{url}/{prefix}-*/_forcemerge?max_num_segments=1").raise_for_status()
        rows = http.get(f"{url}/_cat/indices/{prefix}-*?bytes=b&format=json").json()
        size = sum(int(r["pri.store.size"]) for r in rows)
        docs = sum(int(r["docs.count"]) for r in rows)
        print(f"elasticsearch: {docs:,} documents in {len(rows)} indices, raw {raw / 1e6:.1f} MB; "
              f"primary store {size / 1e6:.1f} MB = {size / raw:.2f}x raw, {size / docs:.0f} "
              f"bytes/event after forcemerge; write {docs / wall:,.0f} lines/s")
    finally:
        store.close()
        names = [r["index"] for r in http.get(
            f"{url}/_cat/indices/{prefix}-*?format=json").json()]
        if names:
            http.delete(f"{url}/{','.join(names)}")
        http.delete(f"{url}/_index_template/{prefix}")
        http.close()


def _matched(r) -> str:
    bound = getattr(r, "total_relation", "eq") == "gte"  # stopped counting (TOTAL_LIMIT)
    return f"{r.total:>10,}{'+' if bound else ' '} matched"


def run_queries(store, base: list[dict], copy_span: float | None = None,
                other=None, runs: int = 3) -> None:
    """Each filter kind ``runs`` times (median); with ``other`` (another revision's store class
    on the same files), both alternately, query by query: "before" then "now"."""
    n = store.count_events()
    print(f"queries at {n:,} events (ms, median of {runs}; limit 50; * of the original log's "
          f"time){'; before | now' if other else ''}; load average {os.getloadavg()[0]:.1f}:")
    stores = [other, store] if other else [store]
    for label, q in queries(base, n, copy_span):
        times: list[list[float]] = [[] for _ in stores]
        res = [None] * len(stores)
        for _ in range(runs):
            for k, st in enumerate(stores):
                t = time.perf_counter()
                res[k] = st.search(q)
                times[k].append((time.perf_counter() - t) * 1000)
        ms = " | ".join(f"{statistics.median(t):8.1f}" for t in times)
        print(f"  {label:<40} {ms} ms  {' | '.join(_matched(r) for r in res)}")
    print(f"  (load average after: {os.getloadavg()[0]:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--against", help="git revision whose smartlogs/store/sqlite.py to measure")
    ap.add_argument("--keep", help="directory to write the store into (kept afterwards)")
    ap.add_argument("--queries-only", action="store_true",
                    help="only the queries, on the store --keep names (written before)")
    ap.add_argument("--copy-span", type=float, help="seconds of event time one copy of the "
                    "log spans (default: as the log, ~45 days; fewer: more events per window)")
    ap.add_argument("--compare", metavar="REV", help="with --queries-only: also query the store "
                    "with REV's smartlogs/store/sqlite.py, alternately (before | now)")
    ap.add_argument("--compare-dir", metavar="DIR", help="with --compare: query the store in DIR "
                    "(written by REV: a layout change) instead of the same files")
    ap.add_argument("--runs", type=int, default=3, help="runs of each query (median)")
    ap.add_argument("--elasticsearch", metavar="URL", help="measure the Elasticsearch store "
                    "instead (indices under a prefix of its own, deleted afterwards)")
    args = ap.parse_args()
    cls = load_store_class(args.against)
    base, lines = base_events()
    raw_per_copy = sum(len(x.encode()) + 1 for x in lines)
    if args.elasticsearch:
        return measure_elasticsearch(args, base, lines)
    d = pathlib.Path(args.keep) if args.keep else pathlib.Path(tempfile.mkdtemp())
    d.mkdir(parents=True, exist_ok=True)
    store = cls(d / "smartlogs.db", window_seconds=60, query_timeout=600)
    if args.queries_only:
        # a budget far above the API's 10 s: the point is how long each query takes
        od = pathlib.Path(args.compare_dir) if args.compare_dir else d
        other = load_store_class(args.compare)(od / "smartlogs.db", window_seconds=60,
                                               query_timeout=600) if args.compare else None
        run_queries(store, base, args.copy_span, other, args.runs)
        store.close()
        if other:
            other.close()
        return
    raw = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    marks = []
    for k, batch in copies(base, args.lines, args.copy_span):
        store.write(batch, window_seconds=60, applied_seq=k)
        raw += raw_per_copy if len(batch) == len(base) else sum(
            len(lines[i].encode()) + 1 for i in range(len(batch)))
        if k % 50 == 0:
            marks.append((k * len(base), time.perf_counter() - wall0))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n = store.count_events()
    store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    files = {f.name: f.stat().st_size for f in d.iterdir() if f.is_file()}
    total = sum(files.values())
    print(f"store: {args.against or 'this checkout'}; {n:,} events, raw {raw / 1e6:.1f} MB")
    print(f"on disk: {total / 1e6:.1f} MB = {total / raw:.2f}x raw, {total / n:.0f} bytes/event "
          f"({', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in sorted(files.items()))})")
    print(f"write: {n / wall:,.0f} lines/s wall, {cpu / n * 1e6:.1f} µs CPU/line")
    if len(marks) >= 2:
        (n1, t1), (na, ta), (nb, tb) = marks[0], marks[-2], marks[-1]
        print(f"write rate: first {n1:,} lines {n1 / t1:,.0f} lines/s, lines {na:,}-{nb:,} "
              f"{(nb - na) / (tb - ta):,.0f} lines/s")
    print("where the bytes go (dbstat):")
    for name, size in where_the_bytes_go(d / "smartlogs.db"):
        if size >= total / 1000:
            print(f"  {name:<28} {size / 1e6:8.1f} MB  {size / n:6.1f} bytes/event")
    run_queries(store, base, args.copy_span, runs=args.runs)
    store.close()
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("SMARTLOGS_LOG_LEVEL", "warning")
    main()
