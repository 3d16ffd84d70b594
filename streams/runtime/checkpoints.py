"""Model checkpoints: written incrementally, atomically, by the runtime (embedded runner and
Kafka worker alike).

A checkpoint is one SQLite file:

* ``meta``: the pickled model *without* its keyed maps (``streams.keyed``) and its digest, a
  lineage (which model this file follows) and a generation (how many saves it holds);
* ``rows``: one row per key of each keyed map (the scorer's rates per host, template and
  host-template pair, the miner's memos of masked tokens and messages: most of a large
  model), in the map's insertion order.

A save writes, in one transaction (``synchronous=FULL``: on disk when it returns), the pickle
of the rest and only the rows whose keys changed since the previous save — unless the file
follows another model (another lineage, or a generation the model did not save last: a model
restored from an older file, a fresh one after a lost checkpoint) or a map dropped keys (its
bound was reached), which rewrites that map whole. A crash mid-save leaves the previous
checkpoint as it was. The miner's templates (groups and their indexes) and the smaller maps
are still in the pickle, whole.

Files of the older format (one pickle with a checksum) are read; the next save replaces them.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import pickle
import sqlite3
import uuid
from itertools import islice
from pathlib import Path

from streams.keyed import pickle_without_rows
from streams.pipeline import Pipeline, PipelineConfig
from smartlogs.store.sqlite_tx import immediate

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_generation"]

log = logging.getLogger(__name__)

_OLD_MAGIC = b"SMARTLOGS-CKPT-1\n"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rows (map TEXT NOT NULL, k TEXT NOT NULL, ord INTEGER NOT NULL,
                                 v BLOB NOT NULL, PRIMARY KEY (map, k)) WITHOUT ROWID;
"""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(_SCHEMA)
    return conn


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except FileNotFoundError:
        return False


def checkpoint_generation(path: Path) -> int | None:
    """How many saves the checkpoint at ``path`` holds (None: none there)."""
    if not _is_sqlite(path):
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT v FROM meta WHERE k = 'generation'").fetchone()
        return int(row[0]) if row else None
    finally:
        conn.close()


def save_checkpoint(pipeline: Pipeline, path: Path) -> dict:
    """Write what changed since this model's last save to ``path``; returns what was written
    (``rows``: keyed rows written, ``full``: whether every map was rewritten, ``bytes``: the
    pickled rest)."""
    maps = pipeline.keyed_maps()
    if not _is_sqlite(path):  # none yet, or the older format: a new file, renamed over it
        tmp = path.with_name(path.name + ".new")
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        conn = _connect(tmp)
        try:
            done = _save(conn, pipeline, maps, force_full=True)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    else:
        conn = _connect(path)
        try:
            done = _save(conn, pipeline, maps, force_full=False)
        finally:
            conn.close()
    for view in maps.values():
        view.owner.saved()
    return done


def _save(conn: sqlite3.Connection, pipeline: Pipeline, maps: dict, force_full: bool) -> dict:
    meta = dict(conn.execute("SELECT k, v FROM meta"))
    lineage = getattr(pipeline, "ckpt_lineage", None)
    generation = getattr(pipeline, "ckpt_generation", 0)
    full = (force_full or lineage is None or meta.get("lineage") != lineage
            or int(meta.get("generation", -1)) != generation
            or any(f"n:{name}" not in meta for name in maps))
    if lineage is None:
        lineage = uuid.uuid4().hex
    body = pickle_without_rows(pipeline, maps)
    written = 0
    with immediate(conn):
        if full:
            conn.execute("DELETE FROM rows")
        for name, view in maps.items():
            rows, owner, enc = view.rows, view.owner, view.encode
            if full or owner.reordered:
                if not full:
                    conn.execute("DELETE FROM rows WHERE map = ?", (name,))
                todo = ((name, repr(k), pos, marshal.dumps((k, enc(v))))
                        for pos, (k, v) in enumerate(rows.items()))
                conn.executemany("INSERT INTO rows VALUES (?, ?, ?, ?)", todo)
                written += len(rows)
                continue
            dirty = owner.dirty
            if not dirty:
                continue
            if getattr(owner, "unordered", False):  # a row's place is its key: upsert, delete
                todo = [(name, repr(k), 0, marshal.dumps((k, enc(rows[k]))))
                        for k in dirty if k in rows]
                conn.executemany("INSERT INTO rows VALUES (?, ?, ?, ?) ON CONFLICT (map, k) "
                                 "DO UPDATE SET v = excluded.v", todo)
                conn.executemany("DELETE FROM rows WHERE map = ? AND k = ?",
                                 [(name, repr(k)) for k in dirty if k not in rows])
                written += len(todo)
                continue
            # while a map only grows (a removal reorders: above), the file holds its first
            # ``held`` keys in order: the keys after them are new, the others keep their place
            held = int(meta[f"n:{name}"])
            new = [(name, repr(k), pos, marshal.dumps((k, enc(v))))
                   for pos, (k, v) in enumerate(islice(rows.items(), held, None), held)]
            conn.executemany("INSERT INTO rows VALUES (?, ?, ?, ?)", new)
            fresh = frozenset(islice(rows, held, None))
            known = [(marshal.dumps((k, enc(rows[k]))), name, repr(k)) for k in dirty
                     if k in rows and k not in fresh]
            conn.executemany("UPDATE rows SET v = ? WHERE map = ? AND k = ?", known)
            written += len(new) + len(known)
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
            *((f"n:{name}", str(len(view.rows))) for name, view in maps.items()),
            ("model", body), ("digest", hashlib.sha256(body).hexdigest()),
            ("lineage", lineage), ("generation", str(generation + 1)),
            ("maps", ",".join(maps))])
    pipeline.ckpt_lineage, pipeline.ckpt_generation = lineage, generation + 1
    return {"rows": written, "full": full, "bytes": len(body)}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: Path, config: PipelineConfig) -> Pipeline | None:
    """The checkpointed pipeline, or None (logged) when missing, truncated or corrupt."""
    try:
        if _is_sqlite(path):
            pipeline = _load(path)
        else:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            pipeline = _load_old(data)
        if not isinstance(pipeline, Pipeline):
            raise ValueError("not a pipeline checkpoint")
    except Exception as exc:  # noqa: BLE001 - any damage means: start fresh, never crash-loop
        log.error("checkpoint %s is unusable (%s); starting from a fresh model", path, exc)
        return None
    pipeline.upgrade(config)
    return pipeline


def _load(path: Path) -> Pipeline:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise ValueError(f"damaged file: {check}")
        meta = dict(conn.execute("SELECT k, v FROM meta"))
        body = meta["model"]
        if hashlib.sha256(body).hexdigest() != meta["digest"]:
            raise ValueError("checksum mismatch (truncated or corrupt)")
        pipeline = pickle.loads(body)
        maps = pipeline.keyed_maps()
        held = set(meta["maps"].split(","))
        if not held <= set(maps):
            raise ValueError(f"its keyed maps {meta['maps']} are not this model's")
        for name, view in maps.items():
            if name not in held:  # written whole in the pickle by an earlier version
                continue
            dec = view.decode
            view.fill({k: dec(v) for k, v in (marshal.loads(b) for (b,) in conn.execute(
                "SELECT v FROM rows WHERE map = ? ORDER BY ord", (name,)))})
        pipeline.ckpt_lineage = meta["lineage"]
        pipeline.ckpt_generation = int(meta["generation"])
        return pipeline
    finally:
        conn.close()


def _load_old(data: bytes) -> Pipeline:
    if not data.startswith(_OLD_MAGIC):
        raise ValueError("bad header")
    rest = data[len(_OLD_MAGIC):]
    digest, body = rest[:64], rest[65:]
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise ValueError("checksum mismatch (truncated or corrupt)")
    pipeline = pickle.loads(body)
    pipeline.ckpt_lineage, pipeline.ckpt_generation = None, 0
    return pipeline
