"""Elasticsearch's cost of storing events: this checkout's mapping and writes against another
revision's, on the real engine (make engines-up).

    python bench/bench_es_write.py --against HEAD~3 [--events 20000] [--rounds 3]

The same pipeline-processed events (Linux_2k.log repeated, fresh ids each round; the
pipeline runs once, before any timing) are written by each version's ``ElasticsearchStore``
(its own index template, its own document building) into an index prefix of its own, in
batches of 500 as the worker writes them, with the normal 1 s refresh; then a refresh. The
versions alternate ``--rounds`` times. Per version, per 1,000 events, median over the rounds:

- the Elasticsearch process's CPU (utime+stime from /proc, µs per event): the figure the
  full-stack benchmark adds up, but disturbed by anything else that uses the shared engine;
- the index's own times from ``_stats`` (indexing, refresh, merges; ms per 1,000 events): these
  count only this index's work, so other users of the engine disturb them much less;
- the writer's CPU (µs per event: building the documents, the bulk requests);
- the bytes on disk per event after a flush and force-merge to one segment;
- with ``--threads``, Elasticsearch's CPU by thread (``jcmd Thread.print``): the indexing
  (write), refresh, merge and HTTP threads' sum ("work") apart from the JIT compilers, which
  on a JVM started minutes ago take as much again and fall run after run (bench/RESULTS.md).

``--settings '{"merge.scheduler.max_thread_count": 1}'`` adds index settings to this
checkout's template, and ``--mapping '{"properties": {"template": {"type": "keyword",
"index": false, "doc_values": false}}}'`` replaces mapping entries of it (each property
given replaces that property; other keys, e.g. ``_source``, replace that key of the
mappings): a lever measured without editing the store. ``--against HEAD`` with a lever
measures it alone (the same code both sides). ``SMARTLOGS_ES_URL`` and
``SMARTLOGS_ENGINES_DIR`` point it at a private Elasticsearch.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_full_stack import ES_WORK as _WORK  # noqa: E402
from bench_full_stack import cpu_seconds, engine_env, engine_pids, jvm_thread_cpu  # noqa: E402


def _load_store_module(rev: str):
    """smartlogs/store/elasticsearch.py of ``rev``, as a module of its own."""
    src = subprocess.run(["git", "show", f"{rev}:smartlogs/store/elasticsearch.py"], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "other_es_store.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("other_es_store", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _events(n: int) -> list[dict]:
    from smartlogs.cli.datasets import require_loghub_dir
    from streams.pipeline import Pipeline, PipelineConfig

    lines = (require_loghub_dir("Linux") / "Linux" / "Linux_2k.log").read_text(
        errors="replace").splitlines()
    items = [{"id": f"i{k}", "raw": lines[k % len(lines)], "received": 1.8e9 + k * 0.001}
             for k in range(n)]
    pipe = Pipeline(PipelineConfig())
    return [e for k in range(0, n, 500) for e in pipe.process(items[k:k + 500])]


def _index_stats(es, pattern: str) -> dict:
    s = es.indices.stats(index=pattern, metric="indexing,refresh,merge,store,flush").body
    p = s["_all"]["primaries"]
    return {"index_ms": p["indexing"]["index_time_in_millis"],
            "refresh_ms": p["refresh"]["total_time_in_millis"],
            "merge_ms": p["merges"]["total_time_in_millis"],
            "flush_ms": p["flush"]["total_time_in_millis"]}


def run_one(mod, url: str, events: list[dict], es_pid: int | None,
            refresh: str | None = None, settings: dict | None = None,
            threads: bool = False, mapping: dict | None = None) -> dict:
    prefix = f"bench-esw-{uuid.uuid4().hex[:8]}"
    store = mod.ElasticsearchStore(url, index_prefix=prefix, index_period="month")
    run = uuid.uuid4().hex[:6]
    batches = [[dict(e, id=f"{run}:{e['id']}") for e in events[k:k + 500]]
               for k in range(0, len(events), 500)]
    store.ensure_setup()
    es = store.client
    if refresh or settings or mapping:  # this refresh interval whatever the version's own;
        body = mod.index_template(prefix)  # more settings; mapping entries replaced
        if refresh:
            body["template"]["settings"]["index"]["refresh_interval"] = refresh
        body["template"]["settings"]["index"].update(settings or {})
        mappings = body["template"]["mappings"]
        for key, value in (mapping or {}).items():
            if key == "properties":
                mappings["properties"].update(value)
            else:
                mappings[key] = value
        es.indices.put_index_template(name=prefix, **body)
    try:
        th0 = jvm_thread_cpu(es_pid) if threads and es_pid else {}
        es_cpu0 = cpu_seconds(es_pid) if es_pid else 0.0
        me0 = time.process_time()
        t0 = time.perf_counter()
        for b in batches:
            store.write(b)
        es.indices.refresh(index=store.pattern)
        wall = time.perf_counter() - t0
        me = time.process_time() - me0
        es_cpu = (cpu_seconds(es_pid) - es_cpu0) if es_pid else float("nan")
        th1 = jvm_thread_cpu(es_pid) if th0 else {}
        diff = {k: v - th0.get(k, 0.0) for k, v in th1.items()}
        work = sum(diff.get(k, 0.0) for k in _WORK) if th0 else float("nan")
        jit = sum(v for k, v in diff.items() if "Compiler" in k) if th0 else float("nan")
        st = _index_stats(es, store.pattern)
        es.indices.forcemerge(index=store.pattern, max_num_segments=1, flush=True)
        size = es.indices.stats(index=store.pattern, metric="store").body[
            "_all"]["primaries"]["store"]["size_in_bytes"]
    finally:
        store.delete_before(4e9)
        es.options(ignore_status=404).indices.delete(
            index=f"{store.catalog_index},{store.incidents_index}", ignore_unavailable=True)
        store.close()
    n = len(events)
    return {"es_us": es_cpu / n * 1e6, "work_us": work / n * 1e6, "jit_us": jit / n * 1e6,
            "writer_us": me / n * 1e6, "docs_s": n / wall,
            "bytes": size / n, **{k: v / n * 1000 for k, v in st.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", required=True, help="git revision to compare with")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--refresh", help="refresh intervals, OTHER,THIS (e.g. 1s,1s: the mapping "
                    "alone; 1s,500ms): instead of each version's own")
    ap.add_argument("--settings", help="JSON: more index settings for this checkout's indices")
    ap.add_argument("--mapping", help="JSON: mapping entries replaced in this checkout's template")
    ap.add_argument("--threads", action="store_true", help="Elasticsearch's CPU by thread (jcmd)")
    args = ap.parse_args()
    import json

    settings = json.loads(args.settings) if args.settings else None
    mapping = json.loads(args.mapping) if args.mapping else None
    import smartlogs.store.elasticsearch as this

    url = os.environ.get("SMARTLOGS_ES_URL") or engine_env()["SMARTLOGS_ES_URL"].strip("'")
    other = _load_store_module(args.against)
    events = _events(args.events)
    es_pid = engine_pids().get("elasticsearch")
    load = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {args.against: [], "this checkout": []}
    refresh = dict(zip(runs, args.refresh.split(","))) if args.refresh else {}
    # a warm-up write first (JIT, caches), not counted
    run_one(this, url, events[:2000], es_pid)
    for _ in range(args.rounds):
        for name, mod in ((args.against, other), ("this checkout", this)):
            runs[name].append(run_one(mod, url, events, es_pid, refresh.get(name),
                                      settings if mod is this else None, args.threads,
                                      mapping if mod is this else None))
    keys = ("es_us", "work_us", "jit_us", "index_ms", "refresh_ms", "merge_ms", "flush_ms", "writer_us", "docs_s", "bytes")
    print(f"{args.events:,} events x {args.rounds} rounds; 1-min load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; refresh intervals: {refresh or 'each version its own'}"
          f"; this checkout's extra settings: {settings or 'none'}, mapping entries: "
          f"{mapping or 'none'}")
    print("| version | ES CPU µs/event | of which work threads / JIT | index ms/1k | refresh ms/1k | merge ms/1k | flush ms/1k "
          "| writer CPU µs/event | docs/s | bytes/event |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rs in runs.items():
        name = f"{name} ({refresh[name]})" if name in refresh else name
        med = {k: statistics.median(r[k] for r in rs) for k in keys}
        rng = {k: (min(r[k] for r in rs), max(r[k] for r in rs)) for k in ("es_us", "index_ms")}
        print(f"| {name} | {med['es_us']:.0f} ({rng['es_us'][0]:.0f}–{rng['es_us'][1]:.0f}) "
              f"| {med['work_us']:.0f} / {med['jit_us']:.0f} "
              f"| {med['index_ms']:.1f} ({rng['index_ms'][0]:.1f}–{rng['index_ms'][1]:.1f}) "
              f"| {med['refresh_ms']:.1f} | {med['merge_ms']:.1f} | {med['flush_ms']:.1f} "
              f"| {med['writer_us']:.0f} | {med['docs_s']:,.0f} | {med['bytes']:.0f} |")


if __name__ == "__main__":
    main()
