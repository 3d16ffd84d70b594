"""Embedded shards: K processes, each running the pipelines of its share of the partitions.

One Python process runs ~50 µs of GIL-held work per line, so one process cannot use a second
core. `smartlogs up` therefore runs the partitioned pipeline (``streams.runtime.embedded``) as K shards:
shard k owns the partitions p with ``p % K == k``, reads the spool rows of its partitions (the
API keeps each request as a row per partition, so a shard decodes only its own items), and writes its events to the one SQLite store with its partitions' cursors in the same
transaction (SQLite serialises the shards' transactions). Each partition has its own
checkpoint, so K can change between runs: a partition moves to another shard with what it
learned.

With K=1 the one shard is an ``EmbeddedRunner`` in the API process (what `smartlogs up`
always was); with K>1 :class:`ShardSupervisor` runs the same ``EmbeddedRunner`` in K child
processes (``multiprocessing``, spawn: the API process has threads, and forking those is
unsafe), restarts a shard that dies, and stops them on shutdown (each writes its final
checkpoints). A shard whose parent died (kill -9 of `smartlogs up`) stops by itself, and a
shard holds a lock per partition (``<data dir>/shards/p<N>.lock``) so a restarted server's
shard waits for an orphan still finishing rather than run the same partition twice.

Shards report their status through a small JSON file each (``shards/shard-<k>.json``,
replaced atomically every second), which ``/healthz`` shows; feedback marks reach them
through the store: a shard compares the store's marks version before each batch, so a mark
applies from the next line processed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["ShardSupervisor", "shard_partitions"]

STATUS_SECONDS = 1.0
MARKS_SECONDS = 5.0
# GIL switch interval of a shard process. Its two busy threads are the pipeline (pure
# Python) and the writer (mostly SQLite, the GIL released); each time a SQLite call returns,
# the writer waits for the pipeline thread to give the GIL up, up to the switch interval,
# while it holds the store's one writer turn that the other shards wait for. At Python's 5 ms,
# a batch's write held the turn several times as long as its CPU (bench/RESULTS.md, issue 18).
SWITCH_SECONDS = 0.001
# set (to anything) in a server's environment, its shards write ``shards/timeline-<k>.json``
# every second: their threads' state changes (``bench/bench_embedded.py --timeline``)
TIMELINE_ENV = "SMARTLOGS_SHARD_TIMELINE"
# Whether a shard's pipeline pauses while its writer holds the store's writer turn
# (``EmbeddedRunner(yield_to_writer=...)``, streams/runtime/embedded.py YIELD_ITEMS). On: at
# load 2.5-4.5 it made runs 12-24% faster with 8-12% less CPU a line (less GIL hand-off
# between a shard's two threads), 4 of 4 pairs; on a machine loaded far beyond its cores by
# other work (load 12-15) it made them slower, 5 of 5 (the paused thread's share of the cores
# went to other processes, not to the writer): bench/RESULTS.md, issue 18.
# SMARTLOGS_SHARD_YIELD=0 in the server's environment turns it off (a benchmark, a shared box).
YIELD_ENV = "SMARTLOGS_SHARD_YIELD"
YIELD_TO_WRITER = os.environ.get(YIELD_ENV, "1") != "0"
TAIL_SECONDS = 0.25  # how often stored events are read back for the API's listeners  # how soon feedback given through the API reaches a shard


def shard_partitions(k: int, shards: int, partitions: int) -> list[int]:
    """The partitions shard ``k`` of ``shards`` owns.

    >>> shard_partitions(0, 2, 4), shard_partitions(1, 2, 4), shard_partitions(0, 1, 4)
    ([0, 2], [1, 3], [0, 1, 2, 3])
    """
    return [p for p in range(partitions) if p % shards == k]


def _lock_partitions(folder: Path, parts: list[int], stop) -> list:
    """Hold an exclusive lock per partition (released by the OS when the process dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    held = []
    for p in parts:
        f = open(folder / f"p{p}.lock", "a+")  # noqa: SIM115 - held for the process's life
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop.is_set():
                    return held
                time.sleep(0.1)  # an orphan of a killed server still finishing this partition
        held.append(f)
    return held


def _write_status(path: Path, status: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(json.dumps(status, default=str).encode())
    os.replace(tmp, path)


def _wake_relay(conn, wake: threading.Event, stop: threading.Event) -> None:
    """The parent's wake-ups (one byte message each) → ``wake``; the pipe's end → ``stop``."""
    while True:
        try:
            conn.recv_bytes()
        except (EOFError, OSError):  # the server process is gone
            stop.set()
            wake.set()
            return
        wake.set()


def shard_main(k: int, shards: int, settings, log_level: str, wake_conn) -> None:
    """A shard process: the runner of its partitions until SIGTERM or its parent dies.

    Only signals and a pipe cross the process boundary: a ``multiprocessing.Event`` that a
    process was killed while waiting on blocks every later ``set()`` for good."""
    from smartlogs.logs import configure_logging
    from smartlogs.store.sqlite import SqliteStore
    from streams.pipeline import PipelineConfig
    from streams.runtime.embedded import GATHER_SECONDS, EmbeddedRunner
    from streams.runtime.gc_tuning import tune_gc
    from streams.runtime.stage import RetryPolicy

    configure_logging(f"shard-{k}", log_level, settings.logs_json)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the API decides
    stop, wake = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=_wake_relay, args=(wake_conn, wake, stop), daemon=True,
                     name="smartlogs-wake").start()
    parent = os.getppid()
    parts = shard_partitions(k, shards, settings.partitions)
    folder = settings.data_dir / "shards"
    locks = _lock_partitions(folder, parts, stop)
    if stop.is_set():
        return
    store = SqliteStore(settings.db_path, query_timeout=settings.query_timeout,
                        window_seconds=settings.window_seconds, partitions=settings.partitions)
    runner = EmbeddedRunner(store, PipelineConfig.from_settings(settings),
                            checkpoint_path=settings.checkpoint_path,
                            checkpoint_seconds=settings.checkpoint_seconds,
                            partitions=parts, n_partitions=settings.partitions,
                            wake_event=wake, reload_marks=MARKS_SECONDS,
                            retry=RetryPolicy.from_settings(settings),
                            gather_seconds=GATHER_SECONDS, yield_to_writer=YIELD_TO_WRITER)
    tune_gc()  # the models are restored: see streams/runtime/gc_tuning.py
    # the writer thread takes the GIL back after each SQLite call while holding the store's
    # writer turn, which the other shards wait for: after 1 ms of the pipeline thread's work,
    # not Python's default 5 ms (see SWITCH_SECONDS)
    sys.setswitchinterval(SWITCH_SECONDS)
    runner.start()
    log.info("shard %d of %d running partitions %s (pid %d)", k, shards, parts, os.getpid())
    status_path = folder / f"shard-{k}.json"
    # bench only: the threads' state changes (streams/runtime/timeline.py), written with the status
    timeline_path = folder / f"timeline-{k}.json" if os.environ.get(TIMELINE_ENV) else None
    try:
        first = True
        while first or not stop.wait(STATUS_SECONDS):
            first = False
            if os.getppid() != parent:
                log.warning("shard %d: the server process is gone; stopping", k)
                break
            try:
                _write_status(status_path, {**runner.status(), "pid": os.getpid(),
                                            "switch_interval": sys.getswitchinterval(),
                                            "sources": runner.describe_sources(),
                                            "written_at": time.time()})
                if timeline_path is not None:
                    _write_status(timeline_path, {"marks": runner.timeline.dump()})
            except Exception:  # noqa: BLE001 - status is best effort
                log.exception("shard %d: status not written", k)
    finally:
        runner.stop()
        store.close()
        for f in locks:
            f.close()


class ShardSupervisor:
    """K shard processes behind the API process: the runner interface the API uses
    (``start``, ``stop``, ``wake``, ``status``, ``set_mark``, ...), for shards elsewhere."""

    def __init__(self, settings, store, shards: int, *, restart_delay: float = 1.0):
        self.settings = settings
        self.store = store  # the API process's store: marks, backlog
        self.shards = shards
        self.restart_delay = restart_delay
        self._ctx = multiprocessing.get_context("spawn")
        self._wakes: list = [None] * shards  # the write ends of the shards' wake pipes
        self._procs: list = [None] * shards
        self.restarts = [0] * shards
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._folder = settings.data_dir / "shards"
        self._listeners: list = []
        self._tail: threading.Thread | None = None
        self._marks: tuple[float, dict] = (0.0, {})

    # -- lifecycle ------------------------------------------------------------------------
    def _spawn(self, k: int) -> None:
        r, w = self._ctx.Pipe(duplex=False)
        p = self._ctx.Process(target=shard_main, name=f"smartlogs-shard-{k}", daemon=False,
                              args=(k, self.shards, self.settings,
                                    logging.getLevelName(logging.getLogger().getEffectiveLevel()),
                                    r))
        # Ctrl-C reaches the whole process group: a shard ignores it from its first
        # instruction (an ignored signal stays ignored across exec), the API stops it
        try:
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread (a restart): the shard ignores it once up
            old_int = None
        try:
            p.start()
        finally:
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)
        r.close()  # the child's end: its death then shows here as a broken pipe
        os.set_blocking(w.fileno(), False)  # a wake-up never waits for a busy shard
        old, self._wakes[k] = self._wakes[k], w
        if old is not None:
            old.close()
        self._procs[k] = p

    def start(self) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        for f in self._folder.glob("shard-*.json"):
            f.unlink(missing_ok=True)  # the last run's
        for k in range(self.shards):
            self._spawn(k)
        self._monitor = threading.Thread(target=self._watch, name="smartlogs-shards", daemon=True)
        self._monitor.start()
        if self._listeners:
            self._tail = threading.Thread(target=self._follow, name="smartlogs-tail", daemon=True)
            self._tail.start()

    def _follow(self) -> None:
        """Listeners (alerting) get the events the shards store, read back from the store in
        ``seq`` order (seqs are taken inside the write transactions, which SQLite serialises,
        so a later seq is never visible before an earlier one)."""
        from smartlogs.store.base import EventQuery

        after = self.store._conn().execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        while not self._stopping.wait(TAIL_SECONDS):
            try:
                while True:
                    got = self.store.search(EventQuery(after_seq=after, limit=1000)).events
                    if not got:
                        break
                    after = got[-1]["seq"]
                    for cb in self._listeners:
                        try:
                            cb(got)
                        except Exception:  # noqa: BLE001 - a listener must never stop the tail
                            log.exception("event listener failed")
            except Exception:  # noqa: BLE001 - read again at the next turn
                log.exception("reading stored events for the listeners failed")

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            for k, p in enumerate(self._procs):
                if p is not None and not p.is_alive() and not self._stopping.is_set():
                    log.error("shard %d (pid %s) exited with %s; restarting it", k, p.pid,
                              p.exitcode)
                    self.restarts[k] += 1
                    time.sleep(self.restart_delay)
                    if not self._stopping.is_set():
                        self._spawn(k)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        for p in self._procs:
            if p is not None and p.is_alive():
                p.terminate()  # SIGTERM: the shard stops its runner (final checkpoints)
        deadline = time.monotonic() + timeout
        for k, p in enumerate(self._procs):
            if p is None:
                continue
            p.join(max(deadline - time.monotonic(), 0.1))
            if p.is_alive():  # nothing is lost: its partitions re-run from their checkpoints
                log.error("shard %d did not stop in %.0fs; killing it", k, timeout)
                p.kill()
                p.join(5)
        for t in (self._monitor, self._tail):
            if t is not None:
                t.join(2)

    def wake(self) -> None:
        for w in self._wakes:
            if w is None:
                continue
            try:
                w.send_bytes(b"w")
            except (BlockingIOError, BrokenPipeError, OSError):
                pass  # a shard with wake-ups pending, or one being restarted

    @property
    def alive(self) -> bool:
        return all(p is not None and p.is_alive() for p in self._procs)

    def pids(self) -> list[int | None]:
        return [p.pid if p is not None else None for p in self._procs]

    # -- what the API asks of its runner --------------------------------------------------
    def subscribe(self, callback) -> None:
        self._listeners.append(callback)

    marks_apply = "from the next line processed"

    def set_mark(self, change) -> bool:
        """Stored in the catalog; each shard re-reads the marks before its next batch."""
        return self.store.set_mark(change)

    def marks(self) -> dict:
        at, marks = self._marks
        if time.monotonic() - at > 1.0:
            marks = self.store.template_marks()
            self._marks = (time.monotonic(), marks)
        return marks

    def _shard_status(self, k: int) -> dict | None:
        try:
            return json.loads((self._folder / f"shard-{k}.json").read_bytes())
        except (OSError, ValueError):
            return None

    @property
    def lines(self) -> int:
        return sum((s or {}).get("lines", 0) for s in map(self._shard_status, range(self.shards)))

    def describe_sources(self) -> list[dict]:
        out = [d for k in range(self.shards) for d in (self._shard_status(k) or {}).get("sources", [])]
        return sorted(out, key=lambda d: d["source"])

    def status(self) -> dict:
        from smartlogs import metrics
        from streams.runtime.embedded import COUNTS_EXPLAINED

        now = time.time()
        shards, failing = [], []
        for k, p in enumerate(self._procs):
            st = self._shard_status(k) or {}
            st.pop("sources", None)
            st.pop("counts", None)
            alive = p is not None and p.is_alive()
            # a shard that stopped reporting is as good as down
            fresh = (bool(st) and p is not None and st.get("pid") == p.pid
                     and now - st.get("written_at", 0) < 10 * STATUS_SECONDS + 5)
            shards.append({**st, "shard": k, "pid": p.pid if p else None, "alive": alive,
                           "restarts": self.restarts[k], "reporting": fresh})
            if st.get("failing_since") is not None:
                failing.append(st["failing_since"])
        backlog = self.store.spool_backlog()
        metrics.BACKLOG.set(backlog)
        return {
            # up once every shard runs its pipelines (a shard takes a few seconds to start)
            "running": all(s["alive"] and s["reporting"] and s.get("running") for s in shards),
            "failing_since": min(failing, default=None),
            "processed": sum(s.get("processed", 0) for s in shards),
            "backlog": backlog,
            "errors": sum(s.get("errors", 0) for s in shards),
            "last_error": next((s["last_error"] for s in shards if s.get("last_error")), None),
            "last_event_at": max((s["last_event_at"] for s in shards
                                  if s.get("last_event_at")), default=None),
            "lines": sum(s.get("lines", 0) for s in shards),
            "templates": sum(s.get("templates", 0) for s in shards),
            "model_warmed_up": all(s.get("model_warmed_up") for s in shards),
            "open_incidents": sum(s.get("open_incidents", 0) for s in shards),
            "partitions": self.settings.partitions,
            "shards": shards,
            "counts": COUNTS_EXPLAINED,
        }
