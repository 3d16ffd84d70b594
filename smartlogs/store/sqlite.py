"""Embedded store: SQLite (WAL) with an FTS5 index over messages, plus the ingest spool.

Two files: ``smartlogs.db`` (events, windows, templates, meta) and ``smartlogs-spool.db``
(the spool). SQLite lets one writer at a time into a file; with the spool in the same file,
every accepted request waited for the batch being stored (tens to hundreds of ms), and
the API, not the pipeline, set the pace. Nothing needs both files in one transaction: the
spool is an append-only log, and the cursor into it (``stored_seq``) commits with the events.

Why SQLite: it is in the standard library, gives transactions (so a batch of events,
its window counts and the spool cursor commit together, which is what makes the embedded
mode exactly-once), and FTS5 gives real full-text search. One file, no server.

Tables
  spool      accepted-but-not-yet-processed request batches (the write-ahead log of ingest;
             in the spool file)
  events     one row per event; ``seq`` is the store's own monotonically growing cursor. Columns
             only for what queries filter, sort or count by (ts, received, host, component,
             level, template id, anomaly, and the source of an event without a host: with a
             host, the host is its source and the column stays NULL); host, component and
             template id are 1-3 byte keys of ``names``. What is only displayed (message,
             template text, params, pid, score, ..., and the event's id) is in ``body_blocks``;
             ``body`` is empty (a store written before blocks keeps one blob per event there,
             read as before). ``id`` is NULL: a store made before ``event_ids`` keeps the id
             there, under a UNIQUE index, and keeps doing so (its rows are not rewritten)
  id_runs    runs of ids: (stem code, first tail) → (n, first seq): the ids stem + tail ..
             stem + (tail + n - 1) are the events seq .. seq + n - 1. An id is the text before
             its trailing digits (its stem, once in ``id_stems``, by a 1-3 byte code) and those
             digits as a number, or (0, the id) when it has none (``_id_key``, a run of one). A
             batch's ids (one stem, counting up, consecutive seqs) are one row, not one per
             event (14.8 bytes an event at 1M); how duplicates are refused and a run's stored
             events counted (``count_ids``). Retention splits the runs it deletes ids from, so
             every id a run covers is stored. A store made with ``event_ids`` (one row per
             event) has it turned into runs when opened (``_ids_to_runs``, resumable)
  id_stems   code ↔ stem of every stored id
  body_blocks  the display-only part of runs of up to 128 consecutive events, one zstd frame
             each, compressed with a dictionary trained on the store's own events (``_Bodies``,
             ``body_dicts``): neighbouring lines repeat each other's words
  names      key ↔ text of every host, component and template id events name (``_Names``)
  events_fts FTS5 over the message, contentless (rowid = seq; the text is in the body, not a
             second time here), ``detail=none``: for each word only the list of its events, no
             positions (~1/3 of the bytes); phrases are checked against the stored text for the
             candidates; plus synthetic tokens per event for its template id and its host (or,
             without a host, its source column), and prefixes asked as the OR of their words
             (smartlogs/store/fts.py); ``columnsize=0`` (no ranking, no sizes kept). An index
             written with positions, or without host tokens, is rebuilt once when the store is
             opened (``fts.convert``, resumable), and the (host, ts) index it replaces dropped
  arrival_blocks  runs of seqs with their lowest and highest arrival time: how arrival-time
             ranges are searched, instead of an index on every event
  windows    (window start, dimension, key) → count, derived from stored events only; the
             dimension is a 1-byte code (``_DIM_CODES``; a store made before codes keeps the
             names, and each store is read and written in its own form: ``_dim``)
  templates  template id → latest text, count, first/last event time, its first and latest
             line, the feedback mark (the template catalog, streams/catalog.py)
  template_history  the catalog's history records (generalised, merged, feedback), one per id
  template_texts  (64-bit key of a template text, id): every text recorded under every id,
             with the batch that carried it; two ids with one text name one template
  template_aliases  id → the canonical id of its template (the smallest id linked to it by a
             text or a merge, ``streams.catalog.converge``): its events, window counts and
             template row are rewritten to the canonical id, and events written later under it
             are stored under the canonical id
  meta       small key/value state: ``stored_seq/<p>``, the last spool batch whose events of
             partition ``p`` are stored (``stored_seq``: a store made before partitions, the
             cursor of every partition that has none of its own); ``ckpt_seq/<p>``: the spool
             position partition ``p``'s durable checkpoint covers (the spool is trimmed below
             the lowest); ``partitions``: how many partitions the store was made with
  incidents  incident id → its latest snapshot (``streams.incidents``), upserted by id; an
             older snapshot (lower ``rev``) never overwrites a newer one
  event_incidents  seq of a flagged event → its incident id (a table of its own, so the
             events table keeps its layout; only flagged events have a row)

A store written before bodies (every field a column, the full-text index reading
``message``) is moved to this layout when opened, once, in resumable batches. A store written
with one body blob per event, or with texts in host/component/template id, needs no move: its
rows are read as they are (the file stays as large as it was; new events take the new layout).

Indexes are kept to what the hot queries need (time, anomalies, level when there is one, the
source of hostless events; ids through ``id_runs``): each extra index costs ~2 µs per stored
line (bench/RESULTS.md) and ~15-25 bytes per event. The template, host and source filters have
none: one in few events (< 1 in _DENSE) is read from its synthetic token's list in the
full-text index (~1-2 bytes an event each); a common one walks the time index (a page fills
fast), and when it is the only filter its total is its tokens' count in the index (stops at
~10,000). A store whose rows were written before names (hosts as texts, no tokens) keeps its
(host, ts) index. ``/api/stats`` counts come from ``windows``. Bytes per event and query times at 1M and 10M lines: bench/bench_store_size.py,
bench/RESULTS.md.

Totals are bounded (``EventQuery.total_limit``, 10,000 by default, as Elasticsearch's
``track_total_hits``): counts stop at the limit + 1 (``SELECT count(*) FROM (... LIMIT n)``),
so a filter matching millions of events reads ~10,000 of them for its total; pages are exact
whatever the total says. Words alone in many events (>= 1 in _DENSE) are answered by walking
the events in the order asked for a chunk at a time (``_walk``); in few, the full-text index
drives. A query holding a phrase is asked of the index as its words (a superset) and each
candidate checked against its message (``fts_check``, ``fts.matcher``): bounded totals keep that
to ~10,000 candidates plus the page.

Queries (``search``, ``stats``) run under a time budget enforced inside SQLite: a progress
handler stops the statement once ``query_timeout`` seconds have passed or ``interrupt_queries()``
was called (server shutdown), and the query raises ``QueryTimeout``/``QueryInterrupted``.

Connections are per thread (sqlite3 objects must not cross threads). Writers of events are
the runner threads of the shards (streams/runtime/shards.py), one per shard, possibly in several
processes: SQLite serialises their transactions (``BEGIN IMMEDIATE``), and everything a write
derives from the store (the next ``seq``, the body dictionary, the keys of new names) is
read inside its transaction. API threads append to the spool and read.
"""

from __future__ import annotations

import bisect
import fcntl
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import orjson
import zstandard as zstd

from smartlogs.store import fts
from smartlogs.store import query as qsyntax
from smartlogs.store.base import (DEFAULT_QUERY_TIMEOUT, MAX_SEQ, EventQuery, QueryInterrupted,
                                  QueryTimeout, SearchResult, bounded_total, template_detail,
                                  template_row)
from streams.catalog import MAX_EXAMPLE_CHARS, alias_change, converge, text_key, texts_of
from streams.incidents import merge_part
from streams.partitions import partition_key, partition_of
from streams.windows import count_windows
from smartlogs.store.sqlite_tx import immediate

__all__ = ["SqliteStore"]

# ``part``: the partition of every item of the batch (streams.partitions), so a shard reads only
# its partitions' batches (the record's header and ``part`` come before the blob: passing a
# batch of another partition does not read it); NULL: items of several partitions (a batch
# written before the column), split item by item when read
_SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    part INTEGER,
    n INTEGER NOT NULL,
    items BLOB NOT NULL
);
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT,
    ts REAL NOT NULL,
    received REAL NOT NULL,
    host TEXT,
    component TEXT,
    level TEXT,
    template_id TEXT NOT NULL,
    anomaly INTEGER NOT NULL,
    body BLOB NOT NULL,
    source TEXT
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_source_ts ON events(source, ts) WHERE source IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_anomaly_ts ON events(ts) WHERE anomaly = 1;
CREATE INDEX IF NOT EXISTS events_level_ts ON events(level, ts) WHERE level IS NOT NULL;
-- the events' ids, as runs of (the code of their stem, consecutive numeric tails) on
-- consecutive seqs (_id_key, _id_runs): what finds a stored id; the id itself is in the body
CREATE TABLE IF NOT EXISTS id_stems (code INTEGER PRIMARY KEY, stem TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS id_runs (
    stem INTEGER NOT NULL, tail NOT NULL, n INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (stem, tail)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS arrival_blocks (
    first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL
);
-- events_fts: see smartlogs/store/fts.py (created from fts.SCHEMA)
-- the hosts, components and template ids events name, each by a short key (see _Names)
CREATE TABLE IF NOT EXISTS names (code INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE,
                                  text TEXT NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS names_key_text ON names(key, text);  -- key → text in one lookup
-- the bodies of runs of consecutive events (seqs first_seq .. first_seq + n - 1), see _Bodies
CREATE TABLE IF NOT EXISTS body_blocks (first_seq INTEGER PRIMARY KEY, n INTEGER NOT NULL,
                                        blob BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS body_dicts (id INTEGER PRIMARY KEY, events INTEGER NOT NULL,
                                       dict BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    start REAL NOT NULL, dim INTEGER NOT NULL, key TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (start, dim, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY, template TEXT NOT NULL, count INTEGER NOT NULL,
    first_ts REAL, last_ts REAL, example TEXT, last_example TEXT, mark TEXT
);
-- what is new (sort=first_seen, since=): first_ts rarely changes once a template exists, so
-- this index costs writes almost nothing; count and last_ts change with every batch, and
-- indexes on them added ~2 µs of CPU per stored line in a quick A/B (a noisy machine), so
-- those sorts scan the table (~0.1 s at 500,000 templates)
CREATE INDEX IF NOT EXISTS templates_first ON templates(first_ts DESC, id);
CREATE TABLE IF NOT EXISTS template_history (
    n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, template_id TEXT NOT NULL,
    into_id TEXT, kind TEXT NOT NULL, at REAL NOT NULL, body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS template_history_tid ON template_history(template_id);
CREATE INDEX IF NOT EXISTS template_history_into ON template_history(into_id) WHERE into_id IS NOT NULL;
-- the template catalog across miners (streams/catalog.py): every (text, id) pair recorded, by
-- the text's 64-bit key, and the ids that are aliases of a template's canonical id
CREATE TABLE IF NOT EXISTS template_texts (
    h INTEGER NOT NULL, id TEXT NOT NULL, PRIMARY KEY (h, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS template_aliases (
    id TEXT PRIMARY KEY, canonical TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS template_aliases_canonical ON template_aliases(canonical);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, source TEXT, template_id TEXT,
    first_ts REAL NOT NULL, last_ts REAL NOT NULL, count INTEGER NOT NULL, rev INTEGER NOT NULL,
    doc BLOB NOT NULL, last_received REAL
);
CREATE INDEX IF NOT EXISTS incidents_last_ts ON incidents(last_ts);
CREATE INDEX IF NOT EXISTS incidents_last_received ON incidents(last_received);
CREATE TABLE IF NOT EXISTS event_incidents (
    seq INTEGER PRIMARY KEY, incident_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_incidents_incident ON event_incidents(incident_id, seq);
""" + fts.SCHEMA.format(name="events_fts") + ";\n"
_UPSERT_INCIDENT = """
INSERT INTO incidents (id, status, source, template_id, first_ts, last_ts, count, rev, doc,
                       last_received)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET status = excluded.status, source = excluded.source,
    template_id = excluded.template_id, first_ts = excluded.first_ts, last_ts = excluded.last_ts,
    count = excluded.count, rev = excluded.rev, doc = excluded.doc,
    last_received = excluded.last_received
WHERE excluded.rev >= incidents.rev
"""


def _upsert_incidents(conn: sqlite3.Connection, incidents: list[dict]) -> None:
    """Incident snapshots upserted by id (a newer ``rev`` wins); a part of a shared incident
    (one severe pattern over partitions, ``streams.incidents.merge_part``) is merged into the
    stored record, in the caller's transaction."""
    plain = [i for i in incidents if i.get("part") is None]
    if plain:
        conn.executemany(_UPSERT_INCIDENT, [_incident_values(i) for i in plain])
    for snap in incidents:
        if snap.get("part") is None:
            continue
        row = conn.execute("SELECT doc FROM incidents WHERE id = ?", (snap["id"],)).fetchone()
        merged = merge_part(orjson.loads(row[0]) if row else None, snap)
        if merged is not None:
            conn.execute(_UPSERT_INCIDENT, _incident_values(merged))


def _incident_values(inc: dict) -> tuple:
    return (inc["id"], inc["status"], inc.get("source"), inc.get("template_id"),
            float(inc["first_ts"]), float(inc["last_ts"]), int(inc["count"]), int(inc["rev"]),
            orjson.dumps(inc), _last_received(inc))


def _last_received(inc: dict) -> float:
    """When the incident's latest line arrived (its event time for a snapshot without one)."""
    v = inc.get("last_received")
    return float(v if isinstance(v, (int, float)) and not isinstance(v, bool) else inc["last_ts"])

# ``events`` holds what queries filter, sort or count by; the rest of an event, what is only
# displayed, is its ``body`` (the values of _BODY, compressed: see _Bodies)
_COLUMNS = ("seq", "id", "ts", "received", "host", "component", "level", "template_id", "anomaly",
            "body", "source")
# ``source`` is a column only for an event without a host (NULL: the source is the host, see
# streams.partitions.source_of); the body's second value is the receiver (``http``, ``syslog``,
# ...), which events called ``source`` before every event had a source of its own
_BODY = ("timestamp", "receiver", "pid", "message", "raw", "template", "params", "score", "reason",
         "warming_up", "parse_ok", "format", "truncated", "fields")
_EVENT_KEYS = (  # an event as the API shows it, in this order
    "seq", "id", "ts", "timestamp", "received", "source", "receiver", "host", "component", "pid",
    "level", "message", "raw", "template_id", "template", "params", "score", "anomaly", "reason",
    "warming_up", "parse_ok", "format", "truncated", "fields",
)


class _Bodies:
    """The display-only part of events as compressed blobs: the values of ``_BODY`` as JSON,
    compressed with zstd (``zstandard``, pinned) using a dictionary trained on this store's own
    events, ``BLOCK`` consecutive events to a blob (``body_blocks``). A log line is too short for
    a compressor to find repeats within it: alone, with a dictionary trained on other lines
    of its log, a body took ~80 bytes; in a block of 128 neighbours, whose lines repeat each
    other's words, ~14 (bench/RESULTS.md, "Storage and growth"). The dictionary still helps the
    small blocks of small batches (one line per request). A blob is one byte, the
    number of its dictionary (0: none), then a zstd frame (a JSON array: one body, or a block
    of them). Stores written before blocks keep a blob per event in ``events.body``, read as
    they were; an event in a block has an empty ``body``. Dictionaries are kept in
    ``body_dicts`` as long as the store (a blob needs its own); a new one is trained from the
    latest events when the store has 2,000 events, then each time it has grown 25-fold, so the
    dictionary follows a log that changes. A few µs per event each way.

    zstd objects are not thread-safe: compressors and decompressors are per thread."""

    LEVEL = 3
    BLOCK = 128     # bodies per blob (one page of results decompresses ~1-50 blocks)
    FIRST = 2_000   # events before the first dictionary
    GROWTH = 25     # a new dictionary when the store has this many times the events of the last
    SIZE = 64 * 1024

    def __init__(self):
        self._dicts: dict[int, zstd.ZstdCompressionDict] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self.current = 0        # the dictionary new bodies are compressed with
        self.next_training = self.FIRST

    def load(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT id, events FROM body_dicts ORDER BY id DESC LIMIT 1").fetchone()
        if row:
            self.current, self.next_training = row[0], max(row[1] * self.GROWTH, self.FIRST)

    def _dict(self, conn: sqlite3.Connection, n: int) -> zstd.ZstdCompressionDict:
        d = self._dicts.get(n)
        if d is None:
            row = conn.execute("SELECT dict FROM body_dicts WHERE id = ?", (n,)).fetchone()
            if row is None:
                raise sqlite3.DatabaseError(f"body dictionary {n} is missing from the store")
            d = zstd.ZstdCompressionDict(row[0])
            with self._lock:
                self._dicts[n] = d
        return d

    def encode(self, conn: sqlite3.Connection, values: list[bytes]) -> list[bytes]:
        """JSON bodies → blobs (with the current dictionary)."""
        n = self.current
        d = self._dict(conn, n) if n else None
        cache = getattr(self._local, "c", None)
        if cache is None or cache[0] is not d or cache[2][0] != n:
            c = (zstd.ZstdCompressor(level=self.LEVEL, dict_data=d, write_checksum=False,
                                     write_dict_id=False) if n else
                 zstd.ZstdCompressor(level=self.LEVEL, write_checksum=False))
            cache = self._local.c = (d, c, bytes((n,)))
        _, c, head = cache
        return [head + c.compress(v) for v in values]

    def _decompress(self, conn: sqlite3.Connection, blob: bytes) -> bytes:
        n = blob[0]
        ds = getattr(self._local, "d", None)
        if ds is None:
            ds = self._local.d = {}
        zd = self._dict(conn, n) if n else None
        got = ds.get(n)
        if got is None or got[0] is not zd:  # (a dictionary of a rolled-back batch: replaced)
            got = ds[n] = (zd, zstd.ZstdDecompressor(dict_data=zd) if n else zstd.ZstdDecompressor())
        return got[1].decompress(memoryview(blob)[1:])

    def decode(self, conn: sqlite3.Connection, blob: bytes) -> list:
        return orjson.loads(self._decompress(conn, blob))

    def decode_some(self, conn: sqlite3.Connection, blob: bytes, n: int, wanted) -> dict:
        """The bodies at positions ``wanted`` of a block of ``n`` (index → body), parsing
        only those: a block is ``[`` + its bodies joined by ``,`` + ``]`` and every body is a
        JSON array (``encode_blocks``), so the n - 1 boundaries are each ``],[``; when the text
        holds exactly n - 1 of them (none inside a string), it is cut there. Else the whole
        block is parsed. (Checking a phrase needs ~1 message in 10 of a block.)"""
        raw = self._decompress(conn, blob)
        parts = raw[1:-1].split(b"],[")
        if len(parts) != n:
            bodies = orjson.loads(raw)
            return {i: bodies[i] for i in wanted}
        return {i: orjson.loads((b"[" if i > 0 else b"") + parts[i] + (b"]" if i < n - 1 else b""))
                for i in wanted}

    def encode_blocks(self, conn: sqlite3.Connection,
                      bodies: list[tuple[int, bytes]]) -> list[tuple[int, int, bytes]]:
        """(seq, JSON body) in seq order → (first seq, n, blob) rows of ``body_blocks``: runs
        of at most ``BLOCK`` consecutive seqs, each a JSON array of its bodies compressed as one
        frame with the current dictionary (``decode`` of the blob is the list of bodies)."""
        runs: list[tuple[int, list[bytes]]] = []
        for seq, body in bodies:
            if runs and len(runs[-1][1]) < self.BLOCK and seq == runs[-1][0] + len(runs[-1][1]):
                runs[-1][1].append(body)
            else:
                runs.append((seq, [body]))
        blobs = self.encode(conn, [b"[" + b",".join(values) + b"]" for _, values in runs])
        return [(first, len(values), blob) for (first, values), blob in zip(runs, blobs)]

    def newest(self, conn: sqlite3.Connection):
        """Stored bodies, the newest first (blocks, then bodies stored one per event)."""
        for (blob,) in conn.execute("SELECT blob FROM body_blocks ORDER BY first_seq DESC"):
            yield from reversed(self.decode(conn, blob))
        for (blob,) in conn.execute("SELECT body FROM events WHERE length(body) > 0 "
                                    "ORDER BY seq DESC"):
            yield self.decode(conn, blob)

    def maybe_train(self, conn: sqlite3.Connection, events: int, fresh: list[bytes]) -> None:
        """Once the store holds ``next_training`` events: a new dictionary from the latest
        bodies (``fresh``, not yet stored, and the newest stored ones), in the caller's
        transaction. A sample too small to train on leaves the current one in use."""
        if events < self.next_training or self.current >= 255:
            return
        # another process (a shard) may have trained one since: adopt it instead
        row = conn.execute("SELECT max(id) FROM body_dicts").fetchone()
        if row[0] and row[0] > self.current:
            self.load(conn)
            return
        samples = list(fresh[-4000:])
        if len(samples) < 4000:
            for body in self.newest(conn):
                samples.append(orjson.dumps(body))
                if len(samples) >= 4000:
                    break
        try:
            d = zstd.train_dictionary(self.SIZE, samples, level=self.LEVEL)
        except zstd.ZstdError:  # too few or too uniform samples: try again when twice as big
            self.next_training = events * 2
            return
        n = self.current + 1
        conn.execute("INSERT INTO body_dicts (id, events, dict) VALUES (?, ?, ?)",
                     (n, events, d.as_bytes()))
        with self._lock:
            self._dicts[n] = zstd.ZstdCompressionDict(d.as_bytes())
        self.current, self.next_training = n, events * self.GROWTH

    def forget_uncommitted(self, conn: sqlite3.Connection) -> None:
        """After a rollback: the dictionary trained in it is not in the store."""
        self.current, self.next_training = 0, self.FIRST
        self.load(conn)
        with self._lock:
            for n in [n for n in self._dicts if n > self.current]:
                del self._dicts[n]


class _Names:
    """Hosts, components and template ids in ``events`` as short keys: each distinct text gets
    a number in ``names`` (1, 2, ...), stored in events as the big-endian bytes of that number,
    a BLOB of 1-3 bytes where the text took 5-15 (a template id is 13: "T" and 12 hex digits),
    in the table and in the full-text index's tokens. A BLOB, because the columns are TEXT: SQLite
    would store a number there as its decimal text, and a key must never read as a text an
    older store holds (stores written before names keep their texts in these columns, and
    every reader takes either). Keys are given inside the writer's transaction (shards in
    other processes add names too) and never change, so readers may keep what they read."""

    def __init__(self):
        self._text: dict[bytes, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def keys(conn: sqlite3.Connection, texts: list) -> dict[str, bytes]:
        """Text → key for each text (None and duplicates skipped), adding the new ones (in the
        caller's transaction)."""
        wanted = sorted({t for t in texts if t is not None})
        if not wanted:
            return {}
        # bound parameters, not json_each: SQLite's JSON functions end a text at a NUL, so a
        # name holding one ("a\x00b") was never found, inserted again, and the UNIQUE failure
        # made the shard retry that write forever
        got: dict[str, bytes] = {}
        for k in range(0, len(wanted), 500):
            part = wanted[k:k + 500]
            got.update(conn.execute(
                f"SELECT text, key FROM names WHERE text IN ({', '.join('?' * len(part))})", part))
        new = [t for t in wanted if t not in got]
        if new:
            code = conn.execute("SELECT coalesce(max(code), 0) FROM names").fetchone()[0]
            rows = []
            for t in new:
                code += 1
                got[t] = code.to_bytes((code.bit_length() + 7) // 8, "big")
                rows.append((code, got[t], t))
            conn.executemany("INSERT INTO names (code, key, text) VALUES (?, ?, ?)", rows)
        return got

    @staticmethod
    def key_of(conn: sqlite3.Connection, text: str) -> bytes | None:
        row = conn.execute("SELECT key FROM names WHERE text = ?", (text,)).fetchone()
        return row[0] if row else None

    def texts(self, conn: sqlite3.Connection, values: list) -> dict[bytes, str]:
        """Key → text for the keys among ``values`` (texts of older rows pass through)."""
        missing = sorted({v for v in values if isinstance(v, bytes) and v not in self._text})
        for k in range(0, len(missing), 500):
            part = missing[k:k + 500]
            found = conn.execute(
                f"SELECT key, text FROM names WHERE key IN ({', '.join('?' * len(part))})",
                part).fetchall()
            with self._lock:
                self._text.update(found)
        return self._text


@lru_cache(maxsize=4096)  # as streams.pipeline._iso: log timestamps repeat (many lines a second)
def _ts_text(ts: float) -> str:
    """The ``timestamp`` the pipeline gives an event of time ``ts`` (streams.pipeline._iso): a
    body leaves it out when it is exactly this, and it is rebuilt with this when read."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _body_json(e: dict, with_id: bool = False) -> bytes:
    """The values of ``_BODY`` as JSON; ``with_id``: the event's id after them (a store whose
    ids are in ``id_runs``, not in the row)."""
    ts_text = e["timestamp"]
    if ts_text == _ts_text(e["ts"]):  # rebuilt when read
        ts_text = None
    values = [ts_text, _receiver(e), e["pid"], e["message"], e["raw"], e["template"],
              e["params"], e["score"], e["reason"], e["warming_up"], e["parse_ok"],
              e["format"], e["truncated"], e["fields"] or None]
    if with_id:
        values.append(e["id"])
    return orjson.dumps(values)


# Event ids. A store made before ``event_ids`` keeps each id in its row with a UNIQUE index on
# it (~35 bytes an event for ids of ~12 characters, twice that for the API's ~15): its events
# keep that layout. A newer store keeps the id only in the event's body (compressed with its
# neighbours: a run's ids differ in their last digits) and finds ids through ``id_runs``:
# an id is its stem (the text before its trailing digits, once in ``id_stems``, by a 1-3 byte
# code) and those digits as a number (``RUN:123456`` → (code of ``RUN:``, 123456)). The key
# is exact (no hash: nothing to check against the body) and keeps the order of the ids: a
# batch's ids share a stem, count up and get consecutive seqs, so they are one row of
# ``id_runs`` (stem, first number, how many, first seq), where ``event_ids`` (one row an
# event, storage4) took 14.8 bytes an event; a 32-bit hash (tried before that) scattered each
# batch's inserts over as many pages. An id without trailing digits is its own key (stem code
# 0, the whole id as text, a run of one). A replay's progress (``count_ids("RUN:")``) sums the
# runs of the stems that start with the prefix.
_DIGITS = "0123456789"


@lru_cache(maxsize=8192)  # a batch's ids are split when looked up, then again when stored
def _id_key(eid: str) -> tuple[str | None, int | str]:
    """An id as (stem, tail): its trailing ASCII digits (at most 18, no leading zero: a number
    SQLite stores in 1-8 bytes) and the text before them, ``stem + str(tail) == eid``; (None,
    eid) when it does not end with a digit."""
    stem = eid.rstrip(_DIGITS)
    digits = eid[len(stem):]
    if not digits:
        return None, eid
    if len(digits) > 18:
        stem, digits = eid[:-18], digits[-18:]
    if len(digits) > 1 and digits[0] == "0":  # leading zeros belong to the stem
        nz = digits.lstrip("0") or "0"
        stem, digits = eid[:len(eid) - len(nz)], nz
    return stem, int(digits)


def _id_runs(pairs: list) -> list[tuple]:
    """((stem code, tail), seq) pairs → ``id_runs`` rows (stem, tail, n, seq): ids of one stem
    whose numbers and seqs both count up by one are one row."""
    out: list[list] = []
    for (stem, tail), seq in sorted(pairs, key=lambda p: (p[0][0], isinstance(p[0][1], str),
                                                          p[0][1])):
        r = out[-1] if out else None
        if (r is not None and stem and r[0] == stem and tail == r[1] + r[2]
                and seq == r[3] + r[2]):
            r[2] += 1
        else:
            out.append([stem, tail, 1, seq])
    return [tuple(r) for r in out]


# an id's key (v.column1, v.column2) is stored: the run that starts at or before it covers it
_IN_A_RUN = ("(SELECT r.tail = v.column2 OR (typeof(r.tail) = 'integer' AND v.column2 < r.tail + r.n) "
             "FROM id_runs r WHERE r.stem = v.column1 AND r.tail <= v.column2 "
             "ORDER BY r.tail DESC LIMIT 1)")


def _template_rows(events: list[dict]) -> list[list]:
    """Template rows of a batch: count, earliest and latest event time, the newest text, (for
    a template new to the store) the first event's message as its example, and the batch's
    last message of it as its latest example (both cut to MAX_EXAMPLE_CHARS)."""
    groups: dict[str, list] = {}
    for e in events:
        g = groups.get(e["template_id"])
        ts = e["ts"]
        if g is None:
            groups[e["template_id"]] = [e["template_id"], e["template"], 1, ts, ts,
                                        e["message"][:MAX_EXAMPLE_CHARS], e["message"]]
        else:
            g[1] = e["template"]
            g[2] += 1
            if ts < g[3]:
                g[3] = ts
            if ts > g[4]:
                g[4] = ts
            g[6] = e["message"]
    for g in groups.values():
        g[6] = g[6][:MAX_EXAMPLE_CHARS]
    return list(groups.values())


def _receiver(e: dict) -> str | None:
    """What received an event (``receiver``; events made before it had one: ``source``)."""
    r = e.get("receiver")
    return r if r is not None else e.get("source")


def _source_column(e: dict) -> str | None:
    """The ``source`` column: an event's source when it has no host, else NULL (its host)."""
    return None if e.get("host") else e.get("source")


@lru_cache(maxsize=64)
def _insert_rows(n: int, table: str = "events", columns: tuple = _COLUMNS, upsert: str = "") -> str:
    """One INSERT of ``n`` rows (multi-row VALUES). A batch is written in a few such statements
    (row counts are powers of two, so the statement cache holds at most ~11 of them): each
    statement releases the GIL once while SQLite works, where a row-by-row executemany takes
    it back for every row (and waits up to the 5 ms switch interval while the pipeline thread
    runs). Binding parameters costs ~1 µs a row; JSON (json_each) cost SQLite ~15 µs a row."""
    row = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([row] * n) + upsert


_FTS_COLUMNS = ("rowid", "message")
_BLOCK_COLUMNS = ("first_seq", "n", "blob")
_WINDOW_COLUMNS = ("start", "dim", "key", "count")
# the template dims under either layout (a code never equals a name)
_TEMPLATE_DIMS = "'template', 'a:template', 5, 21"
# A window's dimension as stored: a 1-byte code (0 and 1 take no byte at all), where a store
# made before codes keeps the name (TEXT: 4-11 bytes in each of ~0.75 rows an event)
_DIM_CODES = {d: k for k, d in enumerate(("total", "anomaly", "host", "component", "level",
                                          "template"))}
_DIM_CODES.update({"a:" + d: 16 + k for d, k in list(_DIM_CODES.items())})
_ADD_COUNT = " ON CONFLICT (start, dim, key) DO UPDATE SET count = count + excluded.count"

# Arrival time (``received``) is searched through ``arrival_blocks`` instead of an index on
# every event (19 bytes an event): each row holds a run of consecutive seqs and the lowest and
# highest arrival time among them. Events are stored about in the order they arrived, so a
# range of arrival time maps to a few runs of seqs, which the query reads by rowid and filters
# on ``received`` itself (exact whatever the order). A batch joins the previous run while that
# holds fewer than _BLOCK_EVENTS events (one row per ~2,000 events: small batches add none).
_BLOCK_EVENTS = 2048
_ADD_ARRIVAL_BLOCK = """
INSERT INTO arrival_blocks (first_seq, last_seq, lo, hi)
SELECT coalesce(b.first_seq, ?1), ?2, min(coalesce(b.lo, ?3), ?3), max(coalesce(b.hi, ?4), ?4)
FROM (SELECT 1) LEFT JOIN (SELECT * FROM arrival_blocks ORDER BY first_seq DESC LIMIT 1) b
     ON b.last_seq - b.first_seq + 1 < ?5 AND b.last_seq < ?1
WHERE true
ON CONFLICT (first_seq) DO UPDATE SET last_seq = excluded.last_seq, lo = excluded.lo, hi = excluded.hi
"""
_DENSE = 100  # words in at least 1 event in _DENSE: the query walks events, not matches
_FTS_SET = "+e.seq IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)"
_MAX_RANGES = 64  # runs of seqs in one query (beyond: one run from the first to the last)
# Words alone (no other filter, no range) in many events are answered by walking the events in
# the order asked for, a chunk at a time (_WALK_FIRST rows, doubling up to _WALK_MAX), each
# chunk tested against the matches within its own span of seqs (FTS5 reads a rowid range of
# a word's list directly): the work is what the page (and a bounded total) needs, not every
# match. A chunk whose seqs spread over more than _WALK_SPREAD times its rows (events stored
# far out of event-time order) would read too much of the lists: the set plan answers instead.
# Not for prefixes: FTS5 merges every word of a prefix over the whole index for each query,
# whatever the rowid range (~95 ms at 1M for auth*), so one set is cheaper than many chunks.
_WALK = True
_WALK_FIRST, _WALK_MAX, _WALK_SPREAD = 256, 8192, 64
# ... and words alone in at least this many events are walked whatever the store's size: the
# index-driven plan sorts every match (its cost grows with the store), the walk reads ~50 / the
# share of events that match (at 50,000 of 10M: ~10,000 index entries for a page)
_WALK_HITS = 50_000
# window counts of events already stored (seq ?1..?2), as streams.windows.count_windows
# defines them: window start = floor(ts / size) * size (?3 = size), a missing
# host/component/level counts as "-". Used to count what a store made before arrival windows
# holds, once (its arrival form below), and, turned into subtractions, by retention (which reads
# the stored rows, whose names are keys); a batch being written is counted in memory
# (count_windows, _add_windows), for less than half of these statements' CPU
_UPSERT_WINDOWS = """
WITH b AS (
    SELECT CAST(?3 * (CAST(ts / ?3 AS INTEGER) - (ts / ?3 < CAST(ts / ?3 AS INTEGER))) AS REAL) AS w,
           host, component, level, template_id, anomaly
    FROM events WHERE seq BETWEEN ?1 AND ?2
), g AS (
    SELECT w, dim, key, count(*) AS n FROM (
        SELECT w, 'total' AS dim, '*' AS key FROM b
        UNION ALL SELECT w, 'host', host FROM b
        UNION ALL SELECT w, 'component', component FROM b
        UNION ALL SELECT w, 'level', level FROM b
        UNION ALL SELECT w, 'template', template_id FROM b
        UNION ALL SELECT w, 'anomaly', '*' FROM b WHERE anomaly
    ) GROUP BY w, dim, key
)
INSERT INTO windows (start, dim, key, count)
SELECT w, dim, coalesce(nullif(CASE WHEN typeof(key) = 'blob' THEN
           (SELECT text FROM names WHERE names.key = g.key) ELSE key END, ''), '-') AS k, sum(n)
FROM g WHERE true GROUP BY w, dim, k
ON CONFLICT (start, dim, key) DO UPDATE SET count = count + excluded.count
"""
# the same counts by arrival time (``received``), as dims prefixed "a:"
_UPSERT_ARRIVAL_WINDOWS = (
    _UPSERT_WINDOWS.replace("CAST(ts / ?3", "CAST(received / ?3").replace("(ts / ?3", "(received / ?3")
    .replace("'total' AS dim", "'a:total' AS dim").replace("w, 'host'", "w, 'a:host'")
    .replace("w, 'component'", "w, 'a:component'").replace("w, 'level'", "w, 'a:level'")
    .replace("w, 'template'", "w, 'a:template'").replace("w, 'anomaly'", "w, 'a:anomaly'"))
assert _UPSERT_ARRIVAL_WINDOWS.count("received") == 3 and _UPSERT_ARRIVAL_WINDOWS.count("'a:") == 6
# a template row: the newest text, the first example ever seen, the earliest and latest event time
_TEMPLATE_COLUMNS = ("id", "template", "count", "first_ts", "last_ts", "example", "last_example")
_ADD_TEMPLATE = """
ON CONFLICT (id) DO UPDATE SET template = excluded.template, count = count + excluded.count,
    first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts),
    last_example = excluded.last_example
"""
_INSERT_HISTORY = ("INSERT OR IGNORE INTO template_history (id, template_id, into_id, kind, at, body) "
                   "VALUES (?, ?, ?, ?, ?, ?)")
_TEMPLATE_SORTS = {"count": "count DESC, id", "first_seen": "first_ts DESC, id",
                   "last_seen": "last_ts DESC, id"}
_SELECT = f"SELECT {', '.join('e.' + c for c in _COLUMNS)} FROM events e"
_PROGRESS_STEPS = 10_000  # SQLite VM steps between two looks at the clock (~1 ms of work)


def _match_sql(node: qsyntax.Node, expand) -> tuple[str, list]:
    """A WHERE condition on ``e.seq`` for a query tree, true for a superset of its matches
    (exactly them when ``fts.exact(node)``; else ``fts_check`` makes them exact): whole
    subtrees FTS5 can say become one MATCH; negations FTS5 cannot say alone (``-cron``,
    ``a OR -b``) become SQL NOT, but a negated phrase is left to the check."""
    expr = fts.relaxed(node, expand)
    if expr is not None:
        return "e.seq IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)", [expr]
    if isinstance(node, qsyntax.Not):
        if not fts.exact(node.child):
            return "1", []
        inner, args = _match_sql(node.child, expand)
        return f"NOT ({inner})", args
    parts, args = [], []
    for child in node.children:
        sql, a = _match_sql(child, expand)
        parts.append(f"({sql})")
        args.extend(a)
    return (" AND " if isinstance(node, qsyntax.And) else " OR ").join(parts), args


class SqliteStore:
    """The embedded sink, query backend and ingest spool (two SQLite files)."""

    def __init__(self, path: Path | str, *, durable_spool: bool = True,
                 query_timeout: float = DEFAULT_QUERY_TIMEOUT, window_seconds: int | None = None,
                 partitions: int | None = None):
        """``partitions``: how many partitions the runtime keys the spool by (None: as the
        store was made, 1 for a new one). A store made with another number is refused: the
        sources' learned state would land in other partitions."""
        self.path = Path(path)
        self.query_timeout = query_timeout
        self._stopping = threading.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.spool_path = self.path.with_name(f"{self.path.stem}-spool{self.path.suffix or '.db'}")
        self._local = threading.local()
        self._durable_spool = durable_spool
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._turn_file = None  # the writers' lock file (``_writer_turn``), opened on first use
        self._turn_thread = threading.Lock()
        # seconds this store's batch writes waited for their turn (another shard writing) and
        # held it: what the shards lose to the one SQLite writer (``/healthz``, the benchmark)
        self.turn_waited = self.turn_held = 0.0
        # called with "turn wait", "turn held", "turn done" around each writer turn (a
        # shard's timeline: streams/runtime/timeline.py); None: not recorded
        self.turn_hook = None
        self._rows_per_insert: int | None = None
        self._ids_keyed = True  # set from the store's layout when opened (_keyed_layout)
        self._bodies = _Bodies()
        self._names = _Names()
        conn = self._conn()
        names_from = self._names_from(conn)
        self._upgrade_incidents(conn)
        self._migrate_old_layout(conn)
        self._upgrade_templates(conn)
        added = self._add_source_column(conn)
        conn.executescript(_SCHEMA)
        self._ids_keyed = self._keyed_layout(conn)
        self._ids_to_runs(conn)
        self._dims_coded = any(r[1] == "dim" and r[2].upper() == "INTEGER"
                               for r in conn.execute("PRAGMA table_info(windows)"))
        if names_from is not None:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('names_from', ?)",
                         (names_from,))
        self._bodies.load(conn)
        self.partitions = self._check_partitions(conn, partitions)
        if added or conn.execute("SELECT 1 FROM meta WHERE key = 'sources_filled'").fetchone():
            self._fill_sources(conn)
        self._fts_made_empty(conn)
        if not fts.is_current(conn):  # positions, or no host/source tokens: rebuilt once
            import logging

            fts.convert(conn, lambda c, rows: self._indexed(c, [
                (b[3], r[1], r[2], r[3]) for r, b in zip(rows, self._decoded(
                    c, [(r[0], r[4]) for r in rows]))]), log=logging.getLogger(__name__))
        # hosts are found through their tokens in the index; rows written before names (a
        # host stored as text, no token) keep the (host, time) index
        if self._texts_stored(conn):
            conn.execute("CREATE INDEX IF NOT EXISTS events_host_ts ON events(host, ts)")
        else:
            conn.execute("DROP INDEX IF EXISTS events_host_ts")
        self._record_stored_texts(conn)
        self._spool().executescript(_SPOOL_SCHEMA)
        if not any(c[1] == "part" for c in self._spool().execute("PRAGMA table_info(spool)")):
            self._spool().execute("ALTER TABLE spool ADD COLUMN part INTEGER")  # a spool made before
        self._adopt_old_spool(conn)
        self._block_arrival_times(conn)
        self._next_seq = self._first_free_seq(conn)
        row = conn.execute("SELECT value FROM meta WHERE key = 'arrival_windows'").fetchone()
        self._arrival_windows: int | None = int(row[0]) if row else None
        if self._arrival_windows is None and self._next_seq == 1:  # a new store: none to make
            conn.execute("INSERT INTO meta (key, value) VALUES ('arrival_windows', 0)")
            self._arrival_windows = 0
        elif self._arrival_windows is None and window_seconds:
            with immediate(conn):
                self._backfill_arrival_windows(conn, self._next_seq - 1, window_seconds)

    @staticmethod
    def _fts_made_empty(conn: sqlite3.Connection) -> None:
        """An index without positions made while the store holds no event has every token
        its events will get (host and source tokens included): marked current."""
        row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events_fts'").fetchone()
        if (row is not None and "detail='none'" in row[0]
                and not conn.execute("SELECT 1 FROM events LIMIT 1").fetchone()):
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('fts_sources', 1)")

    @staticmethod
    def _indexed(conn: sqlite3.Connection, rows) -> list[str]:
        """The texts the index holds (``fts.indexed_text``) for stored (message, template_id,
        host, source) values: the source column is a text, its token names its key (added to
        ``names`` when missing, in the caller's transaction)."""
        keys = _Names.keys(conn, [r[3] for r in rows if r[3] is not None])
        return [fts.indexed_text(m, t, h, keys.get(src)) for m, t, h, src in rows]

    def _dim(self, name: str):
        """A window dimension as this store keeps it (its code, or its name in a store made
        before codes)."""
        return _DIM_CODES[name] if self._dims_coded else name

    @staticmethod
    def _keyed_layout(conn: sqlite3.Connection) -> bool:
        """Whether the store finds ids through ``event_ids`` (False: a store made before it,
        whose events table has the id in each row under a UNIQUE index, kept as it is)."""
        for _, name, unique, *_ in conn.execute("PRAGMA index_list(events)").fetchall():
            if unique and [r[2] for r in conn.execute(
                    "SELECT * FROM pragma_index_info(?)", (name,))] == ["id"]:
                return False
        return True

    @staticmethod
    def _names_from(conn: sqlite3.Connection) -> int | None:
        """For a store without ``names`` yet: the first seq whose host, component and template
        id will be keys (rows below keep their texts; a store of the oldest layout is moved
        with keys). None when the store has names already."""
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'names'").fetchone():
            return None
        cols = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
        if "body" not in cols:  # a new store, or one the move to bodies rewrites whole
            return 1
        return conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchone()[0]

    def _texts_stored(self, conn: sqlite3.Connection) -> bool:
        """Whether events written before ``names`` (their texts in the columns) are stored."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'names_from'").fetchone()
        start = int(row[0]) if row else 1
        return start > 1 and conn.execute("SELECT 1 FROM events WHERE seq < ? LIMIT 1",
                                          (start,)).fetchone() is not None

    @staticmethod
    def _check_partitions(conn: sqlite3.Connection, wanted: int | None) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'partitions'").fetchone()
        have = int(row[0]) if row else None
        if have is not None and wanted is not None and wanted != have:
            raise ValueError(
                f"this store was made with {have} partitions, not {wanted}: a source's learned "
                f"state lives in its partition, so the number cannot change for an existing data "
                f"directory (set SMARTLOGS_PARTITIONS={have}, or start a new data directory)")
        if have is None and wanted is not None:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('partitions', ?)",
                         (wanted,))
        return have or wanted or 1

    def _backfill_arrival_windows(self, conn: sqlite3.Connection, upto: int, size: int) -> None:
        """Arrival-time windows of the events a store held before it counted them (once, in
        the caller's transaction)."""
        conn.execute(_WINDOW_SQL[_UPSERT_ARRIVAL_WINDOWS, self._dims_coded], (1, upto, size))
        conn.execute("INSERT INTO meta (key, value) VALUES ('arrival_windows', ?) ON CONFLICT (key) "
                     "DO UPDATE SET value = excluded.value", (upto,))
        self._arrival_windows = upto

    def _record_stored_texts(self, conn: sqlite3.Connection) -> None:
        """A store made before the catalog recorded texts (its ids numbered T1, T2, ...): the
        text of each template row is recorded once, so a model that names those templates by
        their text's id now (a lost checkpoint, another shard) joins the stored ids."""
        if conn.execute("SELECT 1 FROM meta WHERE key = 'template_texts'").fetchone():
            return
        with immediate(conn):
            pairs = set(conn.execute("SELECT id, template FROM templates"))
            self._converge(conn, pairs)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('template_texts', 1)")

    @staticmethod
    def _upgrade_templates(conn: sqlite3.Connection) -> None:
        """A store made before the template catalog: its templates table gets the columns."""
        cols = {r[1] for r in conn.execute("PRAGMA table_info(templates)")}
        if cols:
            for col in ("last_example", "mark"):
                if col not in cols:
                    conn.execute(f"ALTER TABLE templates ADD COLUMN {col} TEXT")

    @staticmethod
    def _upgrade_incidents(conn: sqlite3.Connection) -> None:
        """A store made before incidents were listed in arrival time: its incidents table gets
        the ``last_received`` column, filled from each snapshot."""
        cols = {r[1] for r in conn.execute("PRAGMA table_info(incidents)")}
        if not cols or "last_received" in cols:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if "last_received" in {r[1] for r in conn.execute("PRAGMA table_info(incidents)")}:
                conn.execute("COMMIT")  # another process opening the store did it meanwhile
                return
            conn.execute("ALTER TABLE incidents ADD COLUMN last_received REAL")
            conn.executemany("UPDATE incidents SET last_received = ? WHERE id = ?", [
                (_last_received(orjson.loads(doc)), iid)
                for iid, doc in conn.execute("SELECT id, doc FROM incidents").fetchall()])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _add_source_column(conn: sqlite3.Connection) -> bool:
        """A store made before events had a source of their own gets the ``source`` column;
        True when it was added (its hostless events are then given one: ``_fill_sources``)."""
        cols = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
        if not cols or "source" in cols:
            return False
        with immediate(conn):
            conn.execute("ALTER TABLE events ADD COLUMN source TEXT")
            # to be filled (resumable: the row goes once every hostless event has a source)
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sources_filled', 0)")
        return True

    def _fill_sources(self, conn: sqlite3.Connection) -> None:
        """The events a store held without a host before sources: their source is what their
        item named then, the receiver (kept in the body); in batches of ``_MIGRATE_BATCH``, a
        transaction each (a store stopped midway resumes where it was)."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'sources_filled'").fetchone()
        done = int(row[0]) if row else 0
        while True:
            rows = conn.execute("SELECT seq, body FROM events WHERE seq > ? AND host IS NULL "
                                "ORDER BY seq LIMIT ?", (done, self._MIGRATE_BATCH)).fetchall()
            if not rows:
                break
            done = rows[-1][0]
            with immediate(conn):
                conn.executemany("UPDATE events SET source = ? WHERE seq = ? AND source IS NULL",
                                 [(b[1], q) for (q, _), b in zip(rows, self._decoded(conn, rows))])
                conn.execute("UPDATE meta SET value = ? WHERE key = 'sources_filled'", (done,))
        conn.execute("DELETE FROM meta WHERE key = 'sources_filled'")

    _MIGRATE_BATCH = 20_000

    def _migrate_old_layout(self, conn: sqlite3.Connection) -> None:
        """A store written before bodies (``events`` with a ``message`` column and every other
        field, a full-text index reading it) is moved to this layout once, when opened: its
        table is renamed ``events_v1``, its events copied over in batches of 20,000 (a
        transaction each: a store stopped midway resumes where it was), the old table dropped and
        the file compacted (VACUUM). Windows, templates and meta stay as they are."""
        cols = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
        if "message" in cols:
            with immediate(conn):
                for ix in ("events_ts", "events_host_ts", "events_anomaly_ts", "events_received",
                           "events_level_ts"):
                    conn.execute(f"DROP INDEX IF EXISTS {ix}")
                conn.execute("DROP TABLE IF EXISTS events_fts")
                conn.execute("ALTER TABLE events RENAME TO events_v1")
        elif not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events_v1'").fetchone():
            return
        import logging

        log = logging.getLogger(__name__)
        total = conn.execute("SELECT count(*) FROM events_v1").fetchone()[0]
        log.info("moving %d events to the compact layout (once)", total)
        conn.executescript(_SCHEMA)
        self._fts_made_empty(conn)
        self._ids_keyed = self._keyed_layout(conn)
        self._bodies.load(conn)
        while True:
            start = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
            cur = conn.execute("SELECT * FROM events_v1 WHERE seq > ? ORDER BY seq LIMIT ?",
                               (start, self._MIGRATE_BATCH))
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
            if not rows:
                break
            events = []
            for row in rows:
                e = dict.fromkeys(_EVENT_KEYS)
                e.update(zip(names, row))
                e["params"] = orjson.loads(e["params"]) if e["params"] else []
                e["fields"] = orjson.loads(e["fields"]) if e["fields"] else {}
                events.append(e)
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._insert_events(conn, events, events[-1]["seq"])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._bodies.forget_uncommitted(conn)
                raise
        conn.execute("DROP TABLE events_v1")
        conn.execute("VACUUM")
        log.info("moved %d events to the compact layout", total)

    @staticmethod
    def _block_arrival_times(conn: sqlite3.Connection) -> None:
        """A store that indexed every event's arrival time gets ``arrival_blocks`` in its
        place, once."""
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events_received'").fetchone():
            return
        with immediate(conn):
            conn.execute("DELETE FROM arrival_blocks")
            conn.execute(f"INSERT INTO arrival_blocks (first_seq, last_seq, lo, hi) "
                         f"SELECT min(seq), max(seq), min(received), max(received) FROM events "
                         f"GROUP BY seq / {_BLOCK_EVENTS}")
            conn.execute("DROP INDEX events_received")

    def _adopt_old_spool(self, conn: sqlite3.Connection) -> None:
        """Spool batches are numbered past everything the store has applied: from a store
        that kept its spool in the main file (moved over, unprocessed batches included), or
        whose spool file went missing (new batches must not hide behind ``stored_seq``)."""
        spool = self._spool()
        floor = max(self.cursors().values())
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'spool'").fetchone():
            # all of it: batches a checkpoint does not cover yet are replayed to rebuild the model
            rows = conn.execute("SELECT seq, items, n FROM spool ORDER BY seq")
            spool.execute("BEGIN IMMEDIATE")
            spool.executemany("INSERT OR IGNORE INTO spool (seq, items, n) VALUES (?, ?, ?)", rows)
            spool.execute("COMMIT")
            floor = max(floor, conn.execute("SELECT coalesce(max(seq), 0) FROM spool").fetchone()[0])
            conn.execute("DROP TABLE spool")
        row = spool.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
        if (row[0] if row else 0) < floor:
            spool.execute("DELETE FROM sqlite_sequence WHERE name = 'spool'")
            spool.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('spool', ?)", (floor,))

    # -- connections ---------------------------------------------------------------------
    # Durability. In WAL mode a commit with synchronous=NORMAL survives a process crash
    # (kill -9); FULL also survives power loss, at an fsync per commit. The spool is FULL: a
    # 202 promises the batch. The events file is NORMAL (an fsync per stored batch cost ~11 µs
    # a line): until ``sync()`` its last commits may be lost with the power, which is safe
    # because the spool keeps every batch until a checkpoint covers it, and the runner calls
    # ``sync()`` before it writes a checkpoint and trims the spool.
    def _conn(self) -> sqlite3.Connection:
        return self._thread_conn("conn", self.path, full=False)

    def _spool(self) -> sqlite3.Connection:
        return self._thread_conn("spool", self.spool_path, full=self._durable_spool)

    def sync(self) -> None:
        """Make every commit to the events file so far durable against power loss: a commit
        with synchronous=FULL fsyncs the whole WAL, earlier commits included."""
        conn = self._conn()
        conn.execute("PRAGMA synchronous=FULL")
        try:
            with self._writer_turn():  # (see checkpointed)
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO meta (key, value) VALUES ('synced_at', strftime('%s')) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                conn.execute("COMMIT")
        finally:
            conn.execute("PRAGMA synchronous=NORMAL")

    def _thread_conn(self, name: str, path: Path, *, full: bool) -> sqlite3.Connection:
        conn = getattr(self._local, name, None)
        if conn is None:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            conn.execute("PRAGMA busy_timeout=30000")
            setattr(self._local, name, conn)
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
            if self._turn_file is not None:
                self._turn_file.close()
                self._turn_file = None
        self._local = threading.local()

    # -- spool (the embedded transport's durable queue) ------------------------------------
    def spool_append(self, items: list[dict]) -> int:
        """Durably accept a batch (committed before return); returns its spool sequence."""
        return self.spool_append_many([items])[0]

    def spool_append_many(self, batches: list[list[dict]]) -> list[int]:
        """Durably accept several batches in one transaction, so one fsync covers them all
        (group commit: the API gathers the requests that arrive while a commit is running);
        returns their spool sequences, in order. A batch is kept as one spool row per
        partition its items belong to (its items' order kept within each); its sequence is
        that of its last row."""
        conn = self._spool()
        rows = [[(p, len(group), orjson.dumps(group)) for p, group in self._by_partition(items)]
                for items in batches]
        with immediate(conn):
            seqs = [[conn.execute("INSERT INTO spool (part, n, items) VALUES (?, ?, ?)", row).lastrowid
                     for row in group][-1] for group in rows]
        return seqs

    def _by_partition(self, items: list[dict]) -> list[tuple[int | None, list[dict]]]:
        """(partition, its items) of a batch (``streams.partitions``: the key an item names,
        computed once per key)."""
        if self.partitions <= 1 or not items:
            return [(0 if self.partitions <= 1 else None, items)]
        n = self.partitions
        of: dict[str, int] = {}
        groups: dict[int, list[dict]] = {}
        for item in items:
            key = partition_key(item)
            p = of.get(key)
            if p is None:
                p = of[key] = partition_of(key, n)
            g = groups.get(p)
            if g is None:
                groups[p] = [item]
            else:
                g.append(item)
        return sorted(groups.items())

    def spool_read(self, after_seq: int, max_items: int) -> list[tuple[int, list[dict]]]:
        """Spool batches after ``after_seq`` (every partition's), in order: (seq, items)."""
        return [(seq, items) for seq, _, items in self.spool_rows(after_seq, max_items)[0]]

    def spool_rows(self, after_seq: int, max_items: int, positions: dict[int, int] | None = None
                   ) -> tuple[list[tuple[int, int | None, list[dict]]], int]:
        """The spool rows after ``after_seq``, in order, as (seq, partition or None for
        several, items), about ``max_items`` items (at least one row); with ``positions``
        (partition → the spool position its reader applied), only the rows of those partitions
        after each one's own position (and rows of several partitions). Also the spool position
        the reader has seen everything it asked for up to: the last row returned when more
        wait, else the end of the spool as it was read (rows of other partitions before it are
        not the reader's). One read transaction, so no row committed meanwhile falls between
        the two."""
        where = ""
        if positions is not None:  # ints only: written into the statement
            where = " AND (part IS NULL" + "".join(
                f" OR (part = {int(p)} AND seq > {int(s)})" for p, s in sorted(positions.items())) + ")"
        conn = self._spool()
        conn.execute("BEGIN")
        try:
            cur = conn.execute(f"SELECT seq, part, n, items FROM spool WHERE seq > ?{where} "
                               "ORDER BY seq LIMIT 1000", (after_seq,))
            out: list = []
            n, more = 0, False
            for seq, part, count, blob in cur:
                if out and n + count > max_items:
                    more = True
                    break
                out.append((seq, part, orjson.loads(blob)))
                n += count
            cur.close()
            if more or len(out) == 1000:
                upto = out[-1][0]
            else:
                end = conn.execute("SELECT max(seq) FROM spool").fetchone()[0]
                upto = max(end or 0, after_seq)
        finally:
            conn.execute("COMMIT")
        return out, upto

    def spool_backlog(self) -> int:
        """Items accepted and not yet stored (items of partitions that are ahead of the
        slowest one are counted too: an upper bound)."""
        stored = self.stored_seq()
        row = self._spool().execute("SELECT coalesce(sum(n), 0) FROM spool WHERE seq > ?", (stored,))
        return row.fetchone()[0]

    def spool_trim(self, upto_seq: int) -> None:
        """Forget batches that a durable checkpoint of the model already reflects."""
        self._spool().execute("DELETE FROM spool WHERE seq <= ?", (upto_seq,))

    def _partition_values(self, prefix: str) -> dict[int, int]:
        rows = self._conn().execute(
            "SELECT key, value FROM meta WHERE key = ? OR key LIKE ?", (prefix, prefix + "/%"))
        got = dict(rows.fetchall())
        legacy = int(got.get(prefix, 0))
        return {p: int(got.get(f"{prefix}/{p}", legacy)) for p in range(self.partitions)}

    def cursors(self) -> dict[int, int]:
        """Partition → the last spool batch whose events of that partition are stored."""
        return self._partition_values("stored_seq")

    def stored_seq(self) -> int:
        """The spool position every partition's events are stored up to."""
        return min(self.cursors().values())

    def checkpointed(self, positions: dict[int, int]) -> None:
        """Record the spool positions the partitions' durable checkpoints now cover, and trim
        the spool below the lowest of every partition's (only what all of them cover)."""
        conn = self._conn()
        # in the writers' turn, as the batches are: SQLite's busy handler, polling with sleeps
        # of up to 100 ms, kept missing the moments between another shard's batches while the
        # shard's pipeline waited for its checkpoint (bench/RESULTS.md, issue 18)
        with self._writer_turn(), immediate(conn):
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                "SET value = max(CAST(value AS INTEGER), excluded.value)",
                [(f"ckpt_seq/{p}", seq) for p, seq in positions.items()])
        covered = min(self._partition_values("ckpt_seq").values())
        if covered:
            self.spool_trim(covered)

    # -- sink -----------------------------------------------------------------------------
    def write(self, events: list[dict], *, window_seconds: int, applied_seq: int = 0,
              catalog: list | None = None, incidents: list[dict] | None = None,
              cursors: dict[int, int] | None = None) -> int:
        """Store a batch (and the template catalog's records it made: ``catalog``, see
        streams/catalog.py, and the incident snapshots its processing changed: ``incidents``)
        in one transaction, with the spool cursors of the partitions it covers (``cursors``:
        partition → spool seq; ``applied_seq``: the same for every partition); known event
        and record ids are ignored."""
        if applied_seq and cursors is None:
            cursors = dict.fromkeys(range(self.partitions), applied_seq)
        # what needs no transaction is done before the writer turn, which the other shards
        # wait for: the events' bodies, the batch's window counts, template rows, names and
        # (id, text) pairs (used as they are unless the transaction finds ids already stored
        # or aliases to rename)
        keyed = self._ids_keyed
        ready = ([_body_json(e, keyed) for e in events],
                 count_windows(events, window_seconds, arrival=True), _template_rows(events),
                 list({x for e in events for x in (e["host"], e["component"], e["template_id"],
                                                   _source_column(e))}),
                 texts_of(events, catalog), keyed) if events else None
        with self._writer_turn():
            return self._write(events, window_seconds, catalog, incidents, cursors, ready)

    def write_batch(self, batch, *, window_seconds: int) -> int:
        """Store a processed batch (``streams.runtime.stage.Batch``): its events, catalog
        records, incident snapshots and spool cursors in one transaction (``write``); the
        interface both stores give ``streams.runtime.stage.Sink``. Returns how many events
        were new."""
        return self.write(batch.events, window_seconds=window_seconds, cursors=batch.cursors,
                          catalog=batch.catalog or None, incidents=batch.incidents or None)

    @contextmanager
    def _writer_turn(self):
        """Writers of batches (the shards, in several processes) take turns through a lock
        file (``<db>-writer.lock``): a blocked ``flock`` wakes the moment the lock is free,
        where SQLite's busy handler polls with sleeps growing to 100 ms while the other
        shard's batch commits."""
        with self._lock:
            f = self._turn_file
            if f is None:
                f = self._turn_file = open(self.path.with_name(self.path.name + "-writer.lock"), "a+")  # noqa: SIM115
        hook = self.turn_hook
        if hook is not None:
            hook("turn wait")
        asked = time.monotonic()
        with self._turn_thread:
            fcntl.flock(f, fcntl.LOCK_EX)
            got = time.monotonic()
            if hook is not None:
                hook("turn held")
            self.turn_waited += got - asked
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
                self.turn_held += time.monotonic() - got
                if hook is not None:
                    hook("turn done")

    def _write(self, events: list[dict], window_seconds: int, catalog: list | None,
               incidents: list[dict] | None, cursors: dict[int, int] | None,
               ready: tuple | None = None) -> int:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            renamed = self._canonical_ids(conn, events)
            new = self._new_only(conn, events)
            whole = ready is not None and len(new) == len(events)  # ``ready`` is of ``new``
            same = whole and not renamed  # ``ready`` holds this batch's ids and names too
            # read inside the transaction: other processes (shards) write events too
            self._next_seq = self._first_free_seq(conn)
            first = seq = self._next_seq
            for e in new:
                e["seq"] = seq
                seq += 1
            if new:
                # a few statements for the whole batch, each run by SQLite with the GIL
                # released: storing batch k overlaps with the pipeline working on batch k+1
                self._insert_events(conn, new, seq - 1,
                                    ready[0] if whole and ready[5] == self._ids_keyed else None,
                                    ready[3] if same else None)
                if self._arrival_windows is None:  # a store made before arrival windows
                    self._backfill_arrival_windows(conn, first - 1, window_seconds)
                self._add_windows(conn, ready[1] if same
                                  else count_windows(new, window_seconds, arrival=True))
                self._upsert_templates(conn, new, ready[2] if same else None)
                linked = [(e["seq"], e["incident_id"]) for e in new if e.get("incident_id")]
                if linked:
                    conn.executemany("INSERT OR REPLACE INTO event_incidents (seq, incident_id) "
                                     "VALUES (?, ?)", linked)
            if catalog:
                conn.executemany(_INSERT_HISTORY, [_history_row(c) for c in catalog])
            self._converge(conn, ready[4] if same else texts_of(new, catalog),
                           {(c.template_id, c.into) for c in catalog or () if c.kind == "merged"})
            if incidents:
                _upsert_incidents(conn, incidents)
            if cursors:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                    "DO UPDATE SET value = max(CAST(value AS INTEGER), excluded.value)",
                    [(f"stored_seq/{p}", s) for p, s in cursors.items() if s])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            self._bodies.forget_uncommitted(conn)
            raise
        self._next_seq = seq
        return len(new)

    @staticmethod
    def _first_free_seq(conn: sqlite3.Connection) -> int:
        """The seq the next event gets: past every stored event and every body block (a block
        whose newest events retention deleted still covers their seqs)."""
        return max(conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchone()[0],
                   conn.execute("SELECT coalesce(max(first_seq + n), 1) FROM (SELECT first_seq, n "
                                "FROM body_blocks ORDER BY first_seq DESC LIMIT 1)").fetchone()[0])

    def _add_windows(self, conn: sqlite3.Connection, counts) -> None:
        """Add a batch's window counts (``streams.windows.count_windows``: counted in memory
        from the batch's events, grouped, so ~1 row per line is upserted; counting them in SQL
        from the inserted rows cost over twice the CPU) in a few multi-row upserts."""
        self._insert_many(conn, "windows", _WINDOW_COLUMNS,
                          [(w, self._dim(dim), key, n) for (w, dim, key), n in counts.items()],
                          upsert=_ADD_COUNT)

    def _insert_events(self, conn: sqlite3.Connection, events: list[dict], upto: int,
                       bodies: list[bytes] | None = None, names: list | None = None) -> None:
        """Rows of ``events`` (their ``seq`` set) and their full-text entries; ``upto``: the
        store's event count after them (when to train a body dictionary); ``bodies``: their
        ``_body_json`` (for this layout), and ``names``: their hosts, components and template
        ids, when already made."""
        keyed = self._ids_keyed
        if bodies is None:
            bodies = [_body_json(e, keyed) for e in events]
        self._bodies.maybe_train(conn, upto, bodies)
        self._insert_many(conn, "body_blocks", _BLOCK_COLUMNS, self._bodies.encode_blocks(
            conn, [(e["seq"], b) for e, b in zip(events, bodies)]))
        if names is None:
            names = [x for e in events for x in (e["host"], e["component"], e["template_id"],
                                                 _source_column(e))]
        key = _Names.keys(conn, names)
        self._insert_many(conn, "events", _COLUMNS, [
            (e["seq"], None if keyed else e["id"], e["ts"], e["received"], key.get(e["host"]),
             key.get(e["component"]), e["level"], key[e["template_id"]], e["anomaly"], b"",
             _source_column(e))
            for e in events])
        if keyed:
            ids = [e["id"] for e in events]
            self._insert_many(conn, "id_runs", ("stem", "tail", "n", "seq"), _id_runs(
                [(k, e["seq"]) for k, e in zip(self._id_keys(conn, ids, add=True), events)]))
        self._insert_many(conn, "events_fts", _FTS_COLUMNS,
                          [(e["seq"], fts.indexed_text(e["message"], key[e["template_id"]],
                                                       key.get(e["host"]),
                                                       key.get(_source_column(e))))
                           for e in events])
        received = [e["received"] for e in events]
        conn.execute(_ADD_ARRIVAL_BLOCK, (events[0]["seq"], events[-1]["seq"], min(received),
                                          max(received), _BLOCK_EVENTS))

    def _insert_many(self, conn: sqlite3.Connection, table: str, columns: tuple,
                     rows: list[tuple], upsert: str = "") -> None:
        per = self._rows_per_insert
        if per is None:  # SQLite's bound-parameter limit (32,766 by default, 250,000 here)
            limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            per = self._rows_per_insert = 1 << min(10, (limit // len(_COLUMNS)).bit_length() - 1)
        k = 0
        while k < len(rows):
            n = per
            while n > len(rows) - k:
                n >>= 1
            values: list = []
            for r in rows[k:k + n]:
                values.extend(r)
            conn.execute(_insert_rows(n, table, columns, upsert), values)
            k += n

    def _upsert_templates(self, conn: sqlite3.Connection, events: list[dict],
                          rows: list | None = None) -> None:
        """Template rows of a batch (``_template_rows``; ``rows``: when already made), in a
        few multi-row upserts (``_insert_rows``), not a row-by-row executemany: that released
        and took back the GIL once per template (~100 a batch) while this shard held the
        store's writer turn, each time waiting for the pipeline thread's switch interval."""
        if rows is None:
            rows = _template_rows(events)
        self._insert_many(conn, "templates", _TEMPLATE_COLUMNS, rows, upsert=_ADD_TEMPLATE)


    def _new_only(self, conn: sqlite3.Connection, events: list[dict]) -> list[dict]:
        """Drop events whose id is already stored (or repeated within the batch)."""
        if self._ids_keyed:
            seen = self._stored_ids(conn, [e["id"] for e in events])
        else:
            ids = orjson.dumps([e["id"] for e in events])
            seen = {r[0] for r in conn.execute(
                "SELECT j.value FROM json_each(?) j JOIN events e ON e.id = j.value", (ids,))}
        out = []
        for e in events:
            if e["id"] not in seen:
                seen.add(e["id"])
                out.append(e)
        return out

    def _id_keys(self, conn: sqlite3.Connection, ids: list[str], *,
                 add: bool = False) -> list[tuple[int, int | str] | None]:
        """The ``id_runs`` key (stem code, tail) of each id (``_id_key``); ``add``: new stems
        get a code (in the caller's transaction, a few multi-row INSERTs: ``_insert_many``),
        else an id of an unknown stem has None (it is not stored)."""
        split = [_id_key(i) for i in ids]
        wanted = sorted({st for st, _ in split if st is not None})
        codes: dict[str, int] = {}
        for k in range(0, len(wanted), 500):
            part = wanted[k:k + 500]
            codes.update(conn.execute(
                f"SELECT stem, code FROM id_stems WHERE stem IN ({', '.join('?' * len(part))})", part))
        if add:
            new = [st for st in wanted if st not in codes]
            if new:
                code = conn.execute("SELECT coalesce(max(code), 0) FROM id_stems").fetchone()[0]
                for st in new:
                    code += 1
                    codes[st] = code
                self._insert_many(conn, "id_stems", ("code", "stem"),
                                  [(codes[st], st) for st in new])
        return [(0, tail) if st is None else (codes[st], tail) if st in codes else None
                for st, tail in split]

    def _stored_ids(self, conn: sqlite3.Connection, ids: list[str]) -> set[str]:
        """The stored ids among ``ids`` (a store with ``id_runs``). Ids of a stem whose
        stored numbers all lie below theirs (a run counting up: the usual batch) are new
        without a look-up each: one read of the stem's highest number decides. Else each id
        is looked for in the run that starts at or before it (one index seek)."""
        by_key = {k: i for k, i in zip(self._id_keys(conn, ids), ids) if k is not None}
        lowest: dict[int, int] = {}
        for code, tail in by_key:
            if code and (code not in lowest or tail < lowest[code]):
                lowest[code] = tail
        for code, lo in lowest.items():
            row = conn.execute("SELECT tail + n - 1 FROM id_runs WHERE stem = ? ORDER BY tail DESC "
                               "LIMIT 1", (code,)).fetchone()
            lowest[code] = row is None or lo > row[0]  # True: none of them is stored
        keys = sorted((k for k in by_key if not (k[0] and lowest[k[0]] is True)),
                      key=lambda k: (k[0], isinstance(k[1], str), k[1]))
        found: set[str] = set()
        for k in range(0, len(keys), 500):
            part = keys[k:k + 500]
            values = [x for key in part for x in key]
            found.update(by_key[key] for key in conn.execute(
                "SELECT v.column1, v.column2 FROM (VALUES " + ", ".join(["(?, ?)"] * len(part))
                + ") v WHERE " + _IN_A_RUN, values))
        return found

    @staticmethod
    def _drop_ids(conn: sqlite3.Connection, keys: list) -> None:
        """Retention: take the ids of ``keys`` ((stem code, tail) of deleted events) out of
        their runs: each run they were in is replaced by the runs of its ids left (none, one,
        or more when the deleted ids were inside it), so a run covers only stored events."""
        runs: dict[tuple, list] = {}
        last = None  # the run the previous key was in (keys sorted: most share it)
        for stem, tail in sorted(set(keys), key=lambda k: (k[0], isinstance(k[1], str), k[1])):
            if not (last is not None and last[0] == stem and isinstance(tail, int)
                    and last[1] <= tail < last[1] + last[2]):
                row = conn.execute("SELECT tail, n, seq FROM id_runs WHERE stem = ? AND tail <= ? "
                                   "ORDER BY tail DESC LIMIT 1", (stem, tail)).fetchone()
                if row is None:
                    continue
                last = (stem, *row)
            t0, n = last[1], last[2]
            if t0 == tail:
                off = 0
            elif isinstance(t0, int) and isinstance(tail, int) and t0 < tail < t0 + n:
                off = tail - t0
            else:
                continue
            runs.setdefault((stem, t0), [n, last[3], set()])[2].add(off)
        kept = []
        for (stem, t0), (n, s0, gone) in runs.items():
            prev = 0
            for off in [*sorted(gone), n]:
                if off > prev:
                    kept.append((stem, t0 + prev, off - prev, s0 + prev))
                prev = off + 1
        conn.executemany("DELETE FROM id_runs WHERE stem = ? AND tail = ?", list(runs))
        conn.executemany("INSERT INTO id_runs (stem, tail, n, seq) VALUES (?, ?, ?, ?)", kept)

    _RUNS_BATCH = 50_000

    def _ids_to_runs(self, conn: sqlite3.Connection) -> None:
        """A store made with ``event_ids`` (one row per event): its rows become ``id_runs``,
        once, when it is opened, ``_RUNS_BATCH`` rows a transaction in key order (each moved
        batch is deleted from ``event_ids`` in the same transaction, so a store stopped midway
        resumes where it was; processes opening it together share the work); then the table
        is dropped. (A run cut at a batch's end is two rows: still exact.)"""
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'event_ids'").fetchone():
            return
        while True:
            with immediate(conn):
                if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'event_ids'").fetchone():
                    return
                rows = conn.execute("SELECT stem, tail, seq FROM event_ids ORDER BY stem, tail "
                                    "LIMIT ?", (self._RUNS_BATCH,)).fetchall()
                if not rows:
                    conn.execute("DROP TABLE event_ids")
                    return
                conn.executemany("INSERT INTO id_runs (stem, tail, n, seq) VALUES (?, ?, ?, ?)",
                                 _id_runs([((st, t), q) for st, t, q in rows]))
                conn.execute("DELETE FROM event_ids WHERE (stem, tail) <= (?, ?)", rows[-1][:2])

    def merge_templates(self, merges: dict[str, str]) -> int:
        """Apply a miner's merges (``TemplateMiner.merges``: old id → the id that took it
        over) to the catalog, in one transaction: each merge links two ids of one template,
        whose id is then the smallest of all ids so linked (``streams.catalog.converge``), and
        the events, window counts and template rows of the others are rewritten to it (see
        ``_rewrite``). Idempotent. Returns how many events were rewritten."""
        links = [(old, new) for old, new in merges.items() if new != old]
        if not links:
            return 0
        conn = self._conn()
        with self._writer_turn(), immediate(conn):  # (see checkpointed)
            n = self._link(conn, links, recorded=set(links))
        return n

    def template_aliases(self) -> dict[str, str]:
        """Every id that is an alias in the catalog → the canonical id of its template (what
        the runtimes hand their miners, ``TemplateMiner.adopt``)."""
        return dict(self._conn().execute("SELECT id, canonical FROM template_aliases"))

    @staticmethod
    def _canonical_ids(conn: sqlite3.Connection, events: list[dict]) -> bool:
        """Events named by an alias (a miner that has not taken the catalog's names yet) are
        stored under the canonical id (the event dicts are updated). True: some were."""
        ids = {e["template_id"] for e in events}
        if not ids:
            return False
        found = dict(conn.execute(
            "SELECT a.id, a.canonical FROM json_each(?) j JOIN template_aliases a ON a.id = j.value",
            (orjson.dumps(sorted(ids)),)))
        if found:
            for e in events:
                c = found.get(e["template_id"])
                if c is not None:
                    e["template_id"] = c
        return bool(found)

    def _converge(self, conn: sqlite3.Connection, pairs: set[tuple[str, str]],
                  recorded: set | None = None) -> int:
        """Record (id, text) pairs; an id recorded with a text that another id has is linked
        to it (the canonical-id rule, ``_link``; ``recorded``: merges the batch's own records
        tell already). In the caller's transaction."""
        if not pairs:
            return 0
        keyed = {(text_key(text), tid) for tid, text in pairs}
        known: dict[int, set[str]] = {}
        for h, tid in conn.execute(
                "SELECT t.h, t.id FROM json_each(?) j JOIN template_texts t ON t.h = j.value",
                (orjson.dumps(sorted({h for h, _ in keyed})),)):
            known.setdefault(h, set()).add(tid)
        fresh = sorted(k for k in keyed if k[1] not in known.get(k[0], ()))
        if not fresh:
            return 0
        conn.executemany("INSERT OR IGNORE INTO template_texts (h, id) VALUES (?, ?)", fresh)
        links = []
        for h, tid in fresh:
            links.extend((tid, other) for other in sorted(known.get(h, ())) if other != tid)
            known.setdefault(h, set()).add(tid)
        return self._link(conn, links, recorded) if links else 0

    def _link(self, conn: sqlite3.Connection, links: list[tuple[str, str]],
              recorded: set | None = None) -> int:
        """Ids that name one template: the catalog's aliases change as ``converge`` says, a
        ``merged`` record is kept for each new alias (unless ``recorded``: a miner's merge,
        recorded by the pipeline), and the others' events are rewritten to the canonical id."""
        ids = sorted({x for link in links for x in link})
        alias_of = dict(conn.execute(
            "SELECT a.id, a.canonical FROM json_each(?) j JOIN template_aliases a ON a.id = j.value",
            (orjson.dumps(ids),)))
        roots = sorted({alias_of.get(x, x) for x in ids})
        aliases = dict(conn.execute(
            "SELECT a.id, a.canonical FROM json_each(?) j JOIN template_aliases a "
            "ON a.canonical = j.value", (orjson.dumps(roots),)))
        aliases.update(alias_of)
        changes = converge(links, aliases)
        if not changes:
            return 0
        conn.executemany("INSERT INTO template_aliases (id, canonical) VALUES (?, ?) "
                         "ON CONFLICT (id) DO UPDATE SET canonical = excluded.canonical",
                         sorted(changes.items()))
        conn.execute("DELETE FROM template_aliases WHERE id IN (SELECT value FROM json_each(?))",
                     (orjson.dumps(sorted(set(changes.values()))),))
        now = time.time()
        records = [alias_change(old, new, at=now) for old, new in sorted(changes.items())
                   if not recorded or (old, new) not in recorded]
        if records:
            conn.executemany(_INSERT_HISTORY, [_history_row(c) for c in records])
        return self._rewrite(conn, changes)

    def _rewrite(self, conn: sqlite3.Connection, pairs: dict[str, str]) -> int:
        """Rewrite the events, window counts and template rows of ids that are aliases now
        (old id → canonical id), in the caller's transaction. Events keep the template text
        they were emitted with (as after any generalisation); the surviving template row
        keeps its text and adds the others' counts and times. Idempotent: ids already
        rewritten match nothing. Returns how many events were rewritten. Aliases are rare
        (an enumeration outgrowing a handful of values, two miners meeting one text), so the
        scan of ``events`` (no index on template_id) is affordable."""
        pairs = {old: new for old, new in pairs.items() if new != old}
        if not pairs:
            return 0
        args = (orjson.dumps(pairs),)
        m = "(SELECT key AS old, value AS new FROM json_each(?1))"
        conn.execute(
            f"INSERT INTO templates (id, template, count, first_ts, last_ts, example, "
            f"last_example, mark) SELECT m.new, t.template, t.count, t.first_ts, t.last_ts, "
            f"t.example, t.last_example, t.mark "
            f"FROM templates t JOIN {m} m ON t.id = m.old WHERE true "
            "ON CONFLICT (id) DO UPDATE SET count = count + excluded.count, "
            "first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts), "
            # the examples: the earliest first line and the latest line of them all
            "example = CASE WHEN excluded.first_ts < first_ts THEN excluded.example "
            "ELSE example END, "
            "last_example = CASE WHEN excluded.last_ts > last_ts THEN excluded.last_example "
            "ELSE last_example END, "
            "mark = coalesce(mark, excluded.mark)",
            args)
        conn.execute(f"DELETE FROM templates WHERE id IN (SELECT old FROM {m})", args)
        conn.execute(
            f"INSERT INTO windows (start, dim, key, count) SELECT w.start, w.dim, m.new, w.count "
            f"FROM windows w JOIN {m} m ON w.dim IN ({_TEMPLATE_DIMS}) AND w.key = m.old "
            "WHERE true "
            "ON CONFLICT (start, dim, key) DO UPDATE SET count = count + excluded.count", args)
        conn.execute(f"DELETE FROM windows WHERE dim IN ({_TEMPLATE_DIMS}) "
                     f"AND key IN (SELECT old FROM {m})", args)
        # events name a template by its key (or, written before names, by its id itself)
        key = _Names.keys(conn, list(pairs.values()))
        cases = [(old, key[new]) for old, new in pairs.items()]
        old_keys = {old: _Names.key_of(conn, old) for old in pairs}
        cases += [(k, key[pairs[old]]) for old, k in old_keys.items() if k is not None]
        n = 0
        for i in range(0, len(cases), 400):  # (SQLite's bound-parameter limit)
            part = cases[i:i + 400]
            self._reindex_templates(conn, dict(part))
            n += conn.execute(
                "UPDATE events SET template_id = CASE template_id "
                + " ".join(["WHEN ? THEN ?"] * len(part)) + " END WHERE template_id IN ("
                + ", ".join("?" * len(part)) + ")",
                [x for case in part for x in case] + [old for old, _ in part]).rowcount
        return n

    def _reindex_templates(self, conn: sqlite3.Connection, new_of: dict) -> None:
        """The full-text rows of the events about to move from one template id to another
        (stored value → new key): their template token changes (``fts.template_token``), so
        each row is deleted with the text it was indexed with and indexed again."""
        olds = list(new_of)
        rows = conn.execute(
            "SELECT seq, body, template_id, host, source FROM events WHERE template_id IN ("
            + ", ".join("?" * len(olds)) + ")", olds).fetchall()
        if not rows:
            return
        messages = [b[3] for b in self._decoded(conn, [(r[0], r[1]) for r in rows])]
        before = self._indexed(conn, [(m, r[2], r[3], r[4]) for r, m in zip(rows, messages)])
        after = self._indexed(conn, [(m, new_of[r[2]], r[3], r[4]) for r, m in zip(rows, messages)])
        conn.executemany("INSERT INTO events_fts (events_fts, rowid, message) VALUES ('delete', ?, ?)",
                         [(r[0], t) for r, t in zip(rows, before)])
        conn.executemany("INSERT INTO events_fts (rowid, message) VALUES (?, ?)",
                         [(r[0], t) for r, t in zip(rows, after)])

    def write_incidents(self, incidents: list[dict]) -> None:
        """Upsert incident snapshots by id (a newer ``rev`` wins; the same one again is a
        no-op in effect): what a tick of the pipeline resolved, with no events."""
        if not incidents:
            return
        conn = self._conn()
        with immediate(conn):
            _upsert_incidents(conn, incidents)

    def incidents(self, *, status: str | None = None, since: float | None = None,
                  source: str | None = None, template: str | None = None,
                  limit: int = 100, basis: str = "event") -> list[dict]:
        """Incidents, the latest line first; ``since``: with a line at or after it; ``basis``:
        both in the lines' event time, or (``arrival``) in when their latest line arrived;
        ``source``: host or stream; ``template``: template id."""
        when = "last_received" if basis == "arrival" else "last_ts"
        where, args = [], []
        for col, val in (("status", status), ("source", source), ("template_id", template)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if since is not None:
            where.append(f"{when} >= ?")
            args.append(since)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        conn = self._conn()
        rows = self._budgeted(conn, lambda: conn.execute(
            f"SELECT doc FROM incidents{clause} ORDER BY {when} DESC, id LIMIT ?",
            [*args, limit]).fetchall())
        return [orjson.loads(r[0]) for r in rows]

    def incident(self, incident_id: str) -> dict | None:
        row = self._conn().execute("SELECT doc FROM incidents WHERE id = ?",
                                   (incident_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    # -- queries --------------------------------------------------------------------------
    # -- the time budget -------------------------------------------------------------------
    def interrupt_queries(self) -> None:
        """Stop every running query now and refuse new ones (the server is shutting down).
        Writes are not affected."""
        self._stopping.set()

    def _budgeted(self, conn: sqlite3.Connection, fn):
        """Run ``fn()`` with SQLite's progress handler stopping it past the budget or on
        ``interrupt_queries``: the statement ends inside SQLite, whatever the client does."""
        if self._stopping.is_set():
            raise QueryInterrupted(self.query_timeout)
        deadline = time.monotonic() + self.query_timeout
        stopping = self._stopping

        def check() -> int:
            return stopping.is_set() or time.monotonic() > deadline

        conn.set_progress_handler(check, _PROGRESS_STEPS)
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise
            if stopping.is_set():
                raise QueryInterrupted(self.query_timeout) from None
            raise QueryTimeout(self.query_timeout) from None
        finally:
            conn.set_progress_handler(None, 0)

    # -- queries --------------------------------------------------------------------------
    def search(self, query: EventQuery) -> SearchResult:
        conn = self._conn()
        where, args, join = [], [], ""
        node = qsyntax.parse_query(query.q) if query.q else None
        conn.execute("BEGIN")  # one snapshot: arrival runs, total, page and cursor agree
        try:
            return self._search(conn, query, node, where, args, join)
        finally:
            conn.execute("COMMIT")

    def _search(self, conn: sqlite3.Connection, query: EventQuery, node, where: list,
                args: list, join: str) -> SearchResult:
        # the full-text index answers the words (a superset when they hold a phrase: the
        # candidates are then checked against the text, ``checked``) and the template id (its
        # synthetic token, fts.template_token); other filters are conditions on the events
        expand = self._expander(conn)
        texts = (any(x is not None for x in (query.host, query.template, query.source))
                 and self._texts_stored(conn))
        checked = node is not None and not fts.exact(node)
        drive = [fts.relaxed(node, expand)] if node is not None else []
        if drive and drive[0] is None:  # a negation FTS5 cannot say alone
            sql, a = _match_sql(node, expand)
            where.append(f"({sql})")
            args.extend(a)
            drive = []
        # the template, host and source filters as their synthetic tokens (exact: each token
        # is in the index for exactly the events whose column holds its key)
        tokens: list[str] = []
        if not texts:
            if query.template is not None:
                tok = fts.template_token(_Names.key_of(conn, query.template))
                tokens.append(f'"{tok}"' if tok else '""')
            if query.host is not None:
                tok = fts.host_token(_Names.key_of(conn, query.host))
                tokens.append(f'"{tok}"' if tok else '""')
            if query.source is not None:  # its host's events, and hostless ones naming it
                key = _Names.key_of(conn, query.source)
                tokens.append(f'("{fts.host_token(key)}" OR "{fts.source_token(key)}")'
                              if key is not None else '""')
        if tokens:
            # a filter in few events (< 1 in _DENSE): its list in the index drives; in many,
            # the events are walked in the order asked for, each tested (a page fills fast)
            last = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
            dense = -(-last // _DENSE) if _DENSE else 0
            for tok in tokens:
                if tok != '""' and conn.execute(
                        "SELECT count(*) FROM (SELECT 1 FROM events_fts WHERE events_fts MATCH ? "
                        "LIMIT ?)", (tok, dense)).fetchone()[0] < dense:
                    drive.append(tok)
        # no words and no other filter: the total is the tokens' count in the index
        only_tokens = (bool(tokens) and node is None and '""' not in tokens
                       and all(x is None for x in (query.level, query.anomaly, query.incident,
                                                   query.since, query.until, query.after_seq)))
        if drive:  # the usual case: FTS5 drives the query
            join = " JOIN events_fts f ON f.rowid = e.seq"
            where.insert(0, "events_fts MATCH ?")
            args.insert(0, drive[0] if len(drive) == 1 else "(" + " AND ".join(drive) + ")")
        if checked:
            self._checker(conn, node)
            where.append("fts_check(e.seq, e.body)")
        n_words = len(where)  # the conditions that say the words
        if query.level is not None:
            where.append("e.level = ?")
            args.append(query.level)
        # a host or template id is its key in ``names``; rows of a store written before names
        # hold the text itself (then either matches: slower, an IN does not walk the index
        # in time order)

        def named(col: str, val: str) -> str:
            args.extend((val, _Names.key_of(conn, val)) if texts else (_Names.key_of(conn, val),))
            return f"{col} IN (?, ?)" if texts else f"{col} = ?"

        for col, val in (("e.host", query.host), ("e.template_id", query.template)):
            if val is not None:
                where.append(named(col, val))
        if query.source is not None:  # a host is its events' source; a hostless one is a column
            where.append(f"({named('e.host', query.source)} OR e.source = ?)")
            args.append(query.source)
        if query.anomaly is not None:
            where.append("e.anomaly = ?")
            args.append(1 if query.anomaly else 0)
        if query.incident is not None:
            where.append("e.seq IN (SELECT seq FROM event_incidents WHERE incident_id = ?)")
            args.append(query.incident)
        col = "e.received" if query.basis == "arrival" else "e.ts"
        if col == "e.received" and (query.since is not None or query.until is not None):
            runs = self._arrival_runs(conn, query.since, query.until)
            where.append("(" + (" OR ".join(["e.seq BETWEEN ? AND ?"] * len(runs)) or "0") + ")")
            args.extend(x for run in runs for x in run)
        if query.since is not None:
            where.append(f"{col} >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append(f"{col} < ?")
            args.append(query.until)
        if query.after_seq is not None:
            where.append("e.seq > ?")
            args.append(query.after_seq)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        # tailing reads forward from a cursor; everything else is newest first
        order = ("e.seq ASC" if query.after_seq is not None else
                 "e.seq DESC" if query.arrival else "e.ts DESC, e.seq DESC")
        page, page_args = clause, list(args)
        if query.page_after is not None:  # the next page: strictly after the key, in that order
            if query.after_seq is not None:
                cond, key = "e.seq > ?", [int(query.page_after[0])]
            elif query.arrival:
                cond, key = "e.seq < ?", [int(query.page_after[0])]
            else:
                cond = "(e.ts < ? OR (e.ts = ? AND e.seq < ?))"
                ts, seq = float(query.page_after[0]), int(query.page_after[1])
                key = [ts, ts, seq]
            page = f"{clause} AND {cond}" if clause else f" WHERE {cond}"
            page_args.extend(key)

        fts_expr = args[0] if join else None
        # only the index's words (exact: no phrase to check): its count is the total
        only_words = bool(join) and len(where) == 1 and not checked
        words_alone = node is not None and len(where) == n_words  # no other filter, no range
        # a range of time or seqs is read through its index, each row probing the full-text
        # index: kept whatever the words (the walk would read every match first)
        ranged = query.since is not None or query.until is not None or query.after_seq is not None
        # an event-time range: (since, until), open ends as infinities
        timed = ((-float("inf") if query.since is None else query.since,
                  float("inf") if query.until is None else query.until)
                 if col == "e.ts" and (query.since is not None or query.until is not None)
                 else None)

        cap = query.total_limit  # count at most cap + 1 matches (None: every one)

        def count(sql: str, a: list, upto: int | None = None) -> int:
            upto = None if cap is None else max(cap + 1, upto or 0)
            if upto is None:
                return conn.execute(f"SELECT count(*) {sql}", a).fetchone()[0]
            return conn.execute(f"SELECT count(*) FROM (SELECT 1 {sql} LIMIT ?)",
                                [*a, upto]).fetchone()[0]

        def run():
            last = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
            nonlocal join, clause, page
            total = None
            if only_tokens:
                total = count("FROM events_fts WHERE events_fts MATCH ?",
                              [" AND ".join(tokens)])
            if fts_expr is not None:
                # How many events have the words decides the plan. Few: the full-text index
                # drives (each match looked up, then sorted). Many (>= 1% of the store) and no
                # time range: the matches are read once into a set and the events walked in
                # the order asked for (an index), each tested against the set, until the page
                # is full; the join would look up and sort every match. Same rows either way.
                # Counted up to what the plan and the total need, no further.
                dense = -(-last // _DENSE) if _DENSE else 0
                hits = count("FROM events_fts WHERE events_fts MATCH ?", [fts_expr],
                             upto=min(dense, _WALK_HITS) if words_alone and _WALK else dense)
                if only_words:  # every indexed message is a stored event's
                    total = hits
                if not ranged and (hits * _DENSE >= last
                                   or (words_alone and _WALK and hits >= _WALK_HITS)):
                    join = ""
                    clause, page = (x.replace("events_fts MATCH ?", _FTS_SET) for x in (clause, page))
                elif join and timed and conn.execute(
                        "SELECT count(*) FROM (SELECT 1 FROM events WHERE ts >= ? AND ts < ? "
                        "LIMIT ?)", (*timed, hits + 1)).fetchone()[0] <= hits:
                    # fewer events in the time range than matches of the words: the range
                    # (the time index) drives and each of its events probes the index; SQLite
                    # would have the index drive, reading every match (at 10M, 1.2 million
                    # for `session`, ~1 s, where the range's ~1,300 events take ~25 ms)
                    join = join.replace(" JOIN ", " CROSS JOIN ")
            rows = None
            if (_WALK and words_alone and not ranged and (fts_expr is None or not join)
                    and query.limit >= 0 and not any(fts.relaxed(t, expand).endswith("*")
                                                     for t in qsyntax.terms_of(node))):
                # the page (and, when the words cannot be counted in the index alone, the
                # bounded total) by walking the events; None: they are too far out of order
                if total is None and checked and fts_expr is not None:
                    # a phrase: its candidates in the index, newest seq first, each checked,
                    # up to the bound (no need to walk the events in order for a count)
                    total = self._count_checked(conn, node, fts_expr, cap)
                counting = total is None
                walked = self._walk(conn, node, query, query.limit + 1, expand,
                                    counting=counting and query.page_after is None, upto=cap)
                if walked is not None and counting and query.page_after is not None:
                    # the total counts every match, not only those after the cursor
                    counted = self._walk(conn, node, replace(query, page_after=None), 0, expand,
                                         counting=True, upto=cap)
                    walked = None if counted is None else (walked[0], counted[1])
                if walked is not None:
                    rows = walked[0]
                    total = walked[1] if counting else total
            if total is None:
                total = count(f"FROM events e{join}{clause}", args)
            if rows is None:
                rows = conn.execute(
                    f"{_SELECT}{join}{page} ORDER BY {order} LIMIT ?", [*page_args, query.limit + 1 if query.limit >= 0 else -1]
                ).fetchall()
            links = dict(conn.execute(
                "SELECT j.value, i.incident_id FROM json_each(?) j "
                "JOIN event_incidents i ON i.seq = j.value",
                (orjson.dumps([r[0] for r in rows]),)).fetchall()) if rows else {}
            return total, rows, last, links

        total, rows, last, links = self._budgeted(conn, run)
        more = 0 <= query.limit < len(rows)
        if more:
            rows = rows[:query.limit]
        text = self._names.texts(conn, [x for r in rows for x in (r[4], r[5], r[7])])
        events = [self._row_to_event(r, b, text) for r, b in
                  zip(rows, self._decoded(conn, [(r[0], r[9]) for r in rows]))]
        for e in events:
            e["incident_id"] = links.get(e["seq"])
        total, relation = bounded_total(total, cap)
        return SearchResult(total=total, events=events, last_seq=last, more=more,
                            total_relation=relation)

    def _walk(self, conn: sqlite3.Connection, node, query: EventQuery, need: int, expand, *,
              counting: bool, upto: int | None) -> tuple[list, int] | None:
        """The first ``need`` events matching ``node`` in the order ``query`` asks for (newest
        first by event time, or by arrival), after ``query.page_after``, and, with
        ``counting``, how many match from there (up to ``upto`` + 1; ``upto`` None: all; without
        ``counting`` 0). None when a chunk's seqs spread too widely (see _WALK_SPREAD). The walk
        reads only (seq, ts) from the index; the rows of the page are read at the end."""
        by_time = not query.arrival
        key = query.page_after
        page: list[int] = []
        n, chunk = 0, _WALK_FIRST
        stop = None if not counting else (upto + 1 if upto is not None else float("inf"))
        while True:
            if by_time:
                cond = " WHERE (ts < ? OR (ts = ? AND seq < ?))" if key else ""
                a = [float(key[0]), float(key[0]), int(key[1])] if key else []
                sql = f"SELECT seq, ts FROM events{cond} ORDER BY ts DESC, seq DESC LIMIT ?"
            else:
                cond = " WHERE seq < ?" if key else ""
                a = [int(key[0])] if key else []
                sql = f"SELECT seq, ts FROM events{cond} ORDER BY seq DESC LIMIT ?"
            rows = conn.execute(sql, [*a, chunk]).fetchall()
            if not rows:
                break
            seqs = {r[0] for r in rows}
            lo, hi = min(seqs), max(seqs)
            if hi - lo >= _WALK_SPREAD * len(rows):
                return None
            hits = self._match_set(conn, node, lo, hi, seqs, expand)
            if len(page) < need:
                page.extend([r[0] for r in rows if r[0] in hits][:need - len(page)])
            n += len(hits) if counting else 0
            if len(page) >= need and (stop is None or n >= stop):
                break
            last = rows[-1]
            key = (last[1], last[0]) if by_time else (last[0],)
            chunk = min(chunk * 2, _WALK_MAX)
        if stop is not None:
            n = min(n, stop)
        got = {r[0]: r for r in conn.execute(
            f"{_SELECT} WHERE e.seq IN (SELECT value FROM json_each(?))",
            (orjson.dumps(page),))} if page else {}
        return [got[q] for q in page], n

    def _match_set(self, conn: sqlite3.Connection, node, lo: int, hi: int, seqs: set,
                   expand) -> set:
        """The seqs among ``seqs`` (all within lo..hi) whose message matches ``node``: each
        subtree the index answers alone is one MATCH over the rowid range; a phrase is its
        words' events checked against their text; NOT is what the chunk holds minus the
        matches."""
        if fts.exact(node) or isinstance(node, qsyntax.Term):
            expr = fts.relaxed(node, expand)
            if expr is not None:
                got = {r for (r,) in conn.execute(
                    "SELECT rowid FROM events_fts WHERE events_fts MATCH ? AND rowid BETWEEN ? AND ?",
                    (expr, lo, hi))} & seqs
                if isinstance(node, qsyntax.Term) and not fts.exact(node):
                    test = fts.matcher(node)
                    got = {s for s, m in self._messages(conn, got).items() if test(fts.tokens(m))}
                return got
        if isinstance(node, qsyntax.Not):
            return seqs - self._match_set(conn, node.child, lo, hi, seqs, expand)
        parts = [self._match_set(conn, c, lo, hi, seqs, expand) for c in node.children]
        return set.intersection(*parts) if isinstance(node, qsyntax.And) else set.union(*parts)

    def _count_checked(self, conn: sqlite3.Connection, node, expr: str,
                       upto: int | None) -> int:
        """How many events match ``node`` (up to ``upto`` + 1; None: all), from the candidates
        of its relaxed expression ``expr`` (every index row is a stored event's), read from
        the index newest seq first a run at a time, each checked against its message."""
        test = fts.matcher(node)
        stop = upto + 1 if upto is not None else None
        n, below, run = 0, MAX_SEQ, 512
        while stop is None or n < stop:
            seqs = [r for (r,) in conn.execute(
                "SELECT rowid FROM events_fts WHERE events_fts MATCH ? AND rowid < ? "
                "ORDER BY rowid DESC LIMIT ?", (expr, below, run))]
            if not seqs:
                break
            n += sum(1 for m in self._messages(conn, seqs).values() if test(fts.tokens(m)))
            # (most candidates usually match: read about what the bound still needs)
            below = seqs[-1]
            run = min(run * 2, 8192) if stop is None else max(64, min(run * 2, 8192, stop - n))
        return n if stop is None else min(n, stop)

    def _messages(self, conn: sqlite3.Connection, seqs) -> dict[int, str]:
        """seq → the stored message of each of ``seqs``: the blocks that may hold them read in
        one statement, each decompressed once and only the bodies asked for parsed; seqs in
        no block (a store written with one body per event) read ``events.body``."""
        if not seqs:
            return {}
        want = sorted(seqs)
        blocks = conn.execute("SELECT first_seq, n, blob FROM body_blocks WHERE first_seq "
                              "BETWEEN ? AND ? ORDER BY first_seq",
                              (want[0] - _Bodies.BLOCK + 1, want[-1])).fetchall()
        firsts = [b[0] for b in blocks]
        by_block: dict[int, list[int]] = {}
        alone = []
        for seq in want:
            k = bisect.bisect_right(firsts, seq) - 1
            if k < 0 or seq >= firsts[k] + blocks[k][1]:
                alone.append(seq)
            else:
                by_block.setdefault(k, []).append(seq - firsts[k])
        out: dict[int, str] = {}
        for k, idx in by_block.items():
            first, n, blob = blocks[k]
            for i, body in self._bodies.decode_some(conn, blob, n, idx).items():
                out[first + i] = body[3]
        if alone:
            rows = conn.execute("SELECT seq, body FROM events WHERE seq IN (SELECT value FROM "
                                "json_each(?))", (orjson.dumps(alone),)).fetchall()
            for seq, body in rows:
                if not body:
                    raise sqlite3.DatabaseError(f"the body of event {seq} is missing from the store")
                out[seq] = self._bodies.decode(conn, body)[3]
        return out

    def _checker(self, conn: sqlite3.Connection, node) -> None:
        """Define ``fts_check(seq, body)`` on ``conn`` for this query: 1 when the event's
        message matches ``node`` as a positional index answers it (fts.matcher), read from
        its body (the last few blocks read are kept: a plan reads events in runs)."""
        test = fts.matcher(node)
        blocks: dict[int, list] = {}

        def message(seq: int, body: bytes | None) -> str:
            if body:
                return self._bodies.decode(conn, body)[3]
            for first, msgs in blocks.items():
                if first <= seq < first + len(msgs):
                    return msgs[seq - first]
            row = conn.execute("SELECT first_seq, n, blob FROM body_blocks WHERE first_seq <= ? "
                               "ORDER BY first_seq DESC LIMIT 1", (seq,)).fetchone()
            if row is None or seq >= row[0] + row[1]:
                raise sqlite3.DatabaseError(f"the body of event {seq} is missing from the store")
            if len(blocks) >= 16:
                del blocks[next(iter(blocks))]
            msgs = blocks[row[0]] = [b[3] for b in self._bodies.decode(conn, row[2])]
            return msgs[seq - row[0]]

        conn.create_function("fts_check", 2, lambda seq, body: int(test(fts.tokens(
            message(seq, body)))))

    def _expander(self, conn: sqlite3.Connection):
        """prefix → the words of the index that start with it, in order (``fts5vocab`` over
        the index, a range of its terms), or None when there are more than
        fts.MAX_EXPANSION; remembered for the query."""
        if not getattr(self._local, "vocab", None):
            conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.events_vocab USING "
                         "fts5vocab(main, events_fts, 'row')")
            self._local.vocab = True
        memo: dict[str, list | None] = {}

        def expand(prefix: str) -> list | None:
            if prefix not in memo:
                hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                words = [w for (w,) in conn.execute(
                    "SELECT term FROM temp.events_vocab WHERE term >= ? AND term < ? LIMIT ?",
                    (prefix, hi, fts.MAX_EXPANSION + 1)) if w.startswith(prefix)]
                memo[prefix] = None if len(words) > fts.MAX_EXPANSION else words
            return memo[prefix]
        return expand

    @staticmethod
    def _arrival_runs(conn: sqlite3.Connection, since: float | None,
                      until: float | None) -> list[tuple[int, int]]:
        """The runs of seqs whose arrival times may fall in [since, until) (see
        ``arrival_blocks``), adjacent runs joined; at most _MAX_RANGES."""
        lo = since if since is not None else float("-inf")
        hi = until if until is not None else float("inf")
        runs: list[list[int]] = []
        for a, b in conn.execute("SELECT first_seq, last_seq FROM arrival_blocks "
                                 "WHERE hi >= ? AND lo < ? ORDER BY first_seq", (lo, hi)):
            if runs and a == runs[-1][1] + 1:
                runs[-1][1] = b
            else:
                runs.append([a, b])
        if len(runs) > _MAX_RANGES:
            runs = [[runs[0][0], runs[-1][1]]]
        return [(a, b) for a, b in runs]

    def _decoded(self, conn: sqlite3.Connection, rows: list[tuple[int, bytes]]) -> list[list]:
        """(seq, ``events.body``) → the events' decoded bodies (the values of ``_BODY``), in
        that order: an empty ``body`` is in a block of ``body_blocks``; each block is read and
        decompressed once."""
        out: list[list] = []
        firsts: list[int] = []               # the first seqs of the blocks read, sorted
        blocks: dict[int, list] = {}         # first seq → its bodies
        for seq, body in rows:
            if body:
                out.append(self._bodies.decode(conn, body))
                continue
            k = bisect.bisect_right(firsts, seq) - 1
            if k < 0 or seq >= firsts[k] + len(blocks[firsts[k]]):
                row = conn.execute("SELECT first_seq, n, blob FROM body_blocks WHERE first_seq <= ? "
                                   "ORDER BY first_seq DESC LIMIT 1", (seq,)).fetchone()
                if row is None or seq >= row[0] + row[1]:
                    raise sqlite3.DatabaseError(f"the body of event {seq} is missing from the store")
                blocks[row[0]] = self._bodies.decode(conn, row[2])
                bisect.insort(firsts, row[0])
                k = firsts.index(row[0])
            first = firsts[k]
            out.append(blocks[first][seq - first])
        return out

    @staticmethod
    def _row_to_event(row: tuple, body: list, text: dict) -> dict:
        (seq, eid, ts, received, host, component, level, template_id, anomaly, _, source) = row
        host, component, template_id = (text.get(x, x) for x in (host, component, template_id))
        (ts_text, receiver, pid, message, raw, template, params, score, reason, warming_up,
         parse_ok, fmt, truncated, fields) = body[:14]
        if eid is None:  # a store with id_runs: the id is in the body
            eid = body[14]
        return {
            "seq": seq, "id": eid, "ts": ts, "timestamp": ts_text or _ts_text(ts),
            "received": received, "source": source or host or receiver, "receiver": receiver,
            "host": host, "component": component,
            "pid": pid, "level": level, "message": message, "raw": raw,
            "template_id": template_id, "template": template, "params": params or [],
            "score": score, "anomaly": bool(anomaly), "reason": reason,
            "warming_up": bool(warming_up), "parse_ok": bool(parse_ok), "format": fmt,
            "truncated": bool(truncated), "fields": fields or {},
        }

    def stats(self, *, since: float | None = None, until: float | None = None,
              windows: int = 60, top: int = 10, basis: str = "event") -> dict:
        conn = self._conn()
        p = "a:" if basis == "arrival" else ""
        return self._budgeted(conn, lambda: self._stats(conn, since, until, windows, top, p))

    def _stats(self, conn: sqlite3.Connection, since: float | None, until: float | None,
               windows: int, top: int, p: str) -> dict:
        """``p``: the dims' prefix ("" event-time windows, "a:" arrival-time windows)."""
        lo = since if since is not None else float("-inf")
        hi = until if until is not None else float("inf")
        starts = [r[0] for r in conn.execute(
            "SELECT DISTINCT start FROM windows WHERE dim = ? AND start >= ? AND start < ? "
            "ORDER BY start DESC LIMIT ?", (self._dim(p + "total"), lo, hi, windows))]
        starts.reverse()
        per: dict[float, dict] = {s: {"start": s, "total": 0, "anomalies": 0, "levels": {}}
                                  for s in starts}
        if starts:
            rows = conn.execute(
                "SELECT start, dim, key, count FROM windows WHERE start >= ? AND start <= ? "
                "AND dim IN (?, ?, ?)", (starts[0], starts[-1], *map(self._dim, (
                    p + "total", p + "anomaly", p + "level"))))
            names = {self._dim(p + d): d for d in ("total", "anomaly", "level")}
            for start, dim, key, count in rows:
                dim = names[dim]
                w = per.get(start)
                if w is None:
                    continue
                if dim == "total":
                    w["total"] = count
                elif dim == "anomaly":
                    w["anomalies"] = count
                else:
                    w["levels"][key] = count

        def top_of(dim: str) -> list[dict]:
            return [{"key": k, "count": c} for k, c in conn.execute(
                "SELECT key, sum(count) AS c FROM windows WHERE dim = ? AND start >= ? "
                "AND start < ? GROUP BY key ORDER BY c DESC LIMIT ?", (self._dim(p + dim), lo, hi,
                                                                       top))]

        totals = conn.execute(
            "SELECT coalesce(sum(CASE WHEN dim = ? THEN count END), 0), "
            "coalesce(sum(CASE WHEN dim = ? THEN count END), 0) FROM windows "
            "WHERE start >= ? AND start < ?", (self._dim(p + "total"), self._dim(p + "anomaly"),
                                               lo, hi)).fetchone()
        top_templates = top_of("template")
        texts = dict(conn.execute(
            f"SELECT id, template FROM templates WHERE id IN ({','.join('?' * len(top_templates))})",
            [t["key"] for t in top_templates]).fetchall()) if top_templates else {}
        for t in top_templates:
            t["template"] = texts.get(t["key"])
        from streams.pipeline import _iso  # one formatter for every timestamp we emit
        for w in per.values():
            w["start"] = _iso(w["start"])
        return {
            "totals": {"events": totals[0], "anomalies": totals[1],
                       "templates": conn.execute("SELECT count(*) FROM templates").fetchone()[0]},
            "windows": list(per.values()),
            "top_hosts": top_of("host"),
            "top_components": top_of("component"),
            "top_levels": top_of("level"),
            "top_templates": top_templates,
        }

    def templates(self, *, limit: int = 100, sort: str = "count",
                  since: float | None = None) -> list[dict]:
        """The catalog: ``sort`` count (most lines first), first_seen or last_seen (newest
        first); ``since``: only templates first seen at or after it (event time)."""
        order = _TEMPLATE_SORTS[sort]
        where, args = "", []
        if since is not None:
            # the templates new since are found by the first_ts index, then sorted (a unary +
            # keeps SQLite from walking the whole count index instead, filtering as it goes)
            where, args = "WHERE first_ts >= ?", [since]
            order = "+" + order
        conn = self._conn()
        rows = self._budgeted(conn, lambda: conn.execute(
            f"SELECT id, template, count, first_ts, last_ts, mark FROM templates {where} "
            f"ORDER BY {order} LIMIT ?", [*args, limit]).fetchall())
        return [template_row(i, t, c, f, l, m) for i, t, c, f, l, m in rows]

    def template(self, template_id: str, *, history: int = 100) -> dict | None:
        """One template with its examples and history (the ``history`` latest records, with
        ``created`` first), or None when the catalog has no such id."""
        conn = self._conn()
        row = conn.execute("SELECT id, template, count, first_ts, last_ts, mark, example, "
                           "last_example FROM templates WHERE id = ?", (template_id,)).fetchone()
        if row is None:
            return None
        records = [{**orjson.loads(body), "order": n} for n, body in conn.execute(
            "SELECT n, body FROM template_history WHERE template_id = ?1 OR into_id = ?1 "
            "ORDER BY at DESC, n DESC LIMIT ?2", (template_id, history))]
        total = conn.execute("SELECT count(*) FROM template_history WHERE template_id = ?1 "
                             "OR into_id = ?1", (template_id,)).fetchone()[0]
        return template_detail(template_row(*row[:6]), records, first=row[6], last=row[7],
                               total=total)

    def merged_into(self, template_id: str) -> str | None:
        """The id a template was merged into (its lines carry that id now), or None."""
        row = self._conn().execute(
            "SELECT into_id FROM template_history WHERE template_id = ? AND kind = 'merged' "
            "ORDER BY n DESC LIMIT 1", (template_id,)).fetchone()
        return row[0] if row else None

    def set_mark(self, change) -> bool:
        """Feedback (a ``streams.catalog.TemplateChange`` of kind feedback): the template's
        mark and its history record, in one transaction. False: no such template."""
        conn = self._conn()
        with immediate(conn):
            n = conn.execute("UPDATE templates SET mark = ? WHERE id = ?",
                             (change.mark, change.template_id)).rowcount
            if n:
                conn.execute(_INSERT_HISTORY, _history_row(change))
                # shards in other processes compare this before each batch (marks_version)
                conn.execute("INSERT INTO meta (key, value) VALUES ('marks_version', 1) "
                             "ON CONFLICT(key) DO UPDATE SET value = value + 1")
        return bool(n)

    def marks_version(self) -> int:
        """Bumped by every ``set_mark``: a process that runs pipelines re-reads the marks when
        it changed (one primary-key read before each batch), so feedback applies from the next
        line it processes."""
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'marks_version'").fetchone()
        return int(row[0]) if row else 0

    def template_marks(self) -> dict[str, str]:
        """Every marked template's mark (what the pipeline applies at start)."""
        return dict(self._conn().execute(
            "SELECT id, mark FROM templates WHERE mark IS NOT NULL").fetchall())

    def count_events(self) -> int:
        return self._conn().execute("SELECT count(*) FROM events").fetchone()[0]

    def count_ids(self, prefix: str) -> int:
        """Events whose id starts with ``prefix`` (ids compare as UTF-8 bytes). A store with
        ``id_runs`` and a prefix that does not end with a digit (a replay's ``RUN:``): every
        such id is a stem in the prefix's range and a number, or an id without digits at its
        end (``_id_key``), so the count is the runs' sizes of those stems; another
        prefix scans every body (no caller asks for one). A store made before: a range on the
        unique id index."""
        if not prefix:
            return self.count_events()
        conn = self._conn()
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        if self._ids_keyed:
            if prefix[-1] not in _DIGITS:
                return conn.execute(
                    "SELECT coalesce(sum((SELECT sum(n) FROM id_runs x WHERE x.stem = s.code)), 0) "
                    "+ (SELECT count(*) FROM id_runs WHERE stem = 0 AND tail >= ?1 AND tail < ?2) "
                    "FROM id_stems s WHERE s.stem >= ?1 AND s.stem < ?2", (prefix, upper)).fetchone()[0]
            n, last = 0, 0
            while True:
                rows = conn.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq "
                                    "LIMIT 10000", (last,)).fetchall()
                if not rows:
                    return n
                last = rows[-1][0]
                n += sum(1 for b in self._decoded(conn, rows) if b[14].startswith(prefix))
        return self._conn().execute("SELECT count(*) FROM events WHERE id >= ? AND id < ?",
                                    (prefix, upper)).fetchone()[0]
    def delete_before(self, ts: float, *, limit: int = 1000, window_seconds: int = 60) -> int:
        """Retention, one bounded step: delete up to ``limit`` of the events whose event time
        is before ``ts``, with their full-text rows, and take them out of the window counts
        (event-time and arrival-time alike, so ``/api/stats`` keeps agreeing with what is
        stored), in one short transaction. Returns the events deleted (0: done). Called in a
        loop with pauses, so ingest (another file) and the writer never wait long."""
        conn = self._conn()
        with immediate(conn):
            doomed = conn.execute("SELECT seq, body, template_id, host, source FROM events "
                                  "WHERE ts < ? ORDER BY ts LIMIT ?", (ts, limit)).fetchall()
            bodies = self._decoded(conn, [(r[0], r[1]) for r in doomed])
            # the index is contentless: a delete gives the text the row was indexed with
            rows = list(zip([r[0] for r in doomed], self._indexed(conn, [
                (body[3], tid, host, src) for (_, _, tid, host, src), body in zip(doomed, bodies)])))
            if rows:
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (seq INTEGER PRIMARY KEY)")
                conn.execute("DELETE FROM temp.doomed")
                conn.executemany("INSERT INTO temp.doomed (seq) VALUES (?)", [(r[0],) for r in rows])
                # what the write added for them, taken away (the stored rows carry names as
                # keys: the statement reads their texts, as count_windows counted them)
                conn.execute(_WINDOW_SQL[_UNCOUNT_WINDOWS, self._dims_coded], (0, 0, window_seconds))
                if self._arrival_windows is not None:
                    conn.execute(_WINDOW_SQL[_UNCOUNT_ARRIVAL_WINDOWS, self._dims_coded],
                                 (0, 0, window_seconds))
                conn.execute("DELETE FROM windows WHERE count <= 0")
                conn.executemany("INSERT INTO events_fts (events_fts, rowid, message) "
                                 "VALUES ('delete', ?, ?)", rows)
                conn.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM temp.doomed)")
                if self._ids_keyed:
                    ids = [b[14] for b in bodies]
                    keys = self._id_keys(conn, ids)
                    self._drop_ids(conn, [k for k in keys if k is not None])
                    # stems none of whose ids is left (the API's: one per request)
                    conn.executemany("DELETE FROM id_stems WHERE code = ?1 AND NOT EXISTS (SELECT 1 "
                                     "FROM id_runs WHERE stem = ?1)",
                                     [(c,) for c in {k[0] for k in keys if k and k[0]}])
                conn.execute("DELETE FROM event_incidents WHERE seq IN (SELECT seq FROM temp.doomed)")
                # body blocks none of whose events is left
                conn.execute("DELETE FROM body_blocks WHERE first_seq IN (SELECT b.first_seq FROM "
                             "body_blocks b WHERE b.first_seq <= ? AND b.first_seq + b.n > ? AND NOT "
                             "EXISTS (SELECT 1 FROM events e WHERE e.seq >= b.first_seq AND "
                             "e.seq < b.first_seq + b.n))",
                             (max(r[0] for r in rows), min(r[0] for r in rows)))
                conn.execute("DELETE FROM arrival_blocks WHERE last_seq < "
                             "(SELECT min(seq) FROM events)")
            # incidents whose last line is past the cutoff go with their events
            conn.execute("DELETE FROM incidents WHERE last_ts < ? AND status = 'resolved'", (ts,))
        return len(rows)


# retention: the window counts of the events about to be deleted (temp.doomed), taken away
_UNCOUNT_WINDOWS, _UNCOUNT_ARRIVAL_WINDOWS = (
    sql.replace("WHERE seq BETWEEN ?1 AND ?2", "WHERE seq IN "
                "(SELECT seq FROM temp.doomed) AND ?1 = ?2")
    .replace("count = count + excluded.count", "count = count - excluded.count")
    for sql in (_UPSERT_WINDOWS, _UPSERT_ARRIVAL_WINDOWS))
assert all("temp.doomed" in q and "count - excluded" in q
           for q in (_UNCOUNT_WINDOWS, _UNCOUNT_ARRIVAL_WINDOWS))


def _dims_coded(sql: str) -> str:
    """A window statement above for a store whose dims are codes (_DIM_CODES)."""
    case = "CASE dim " + " ".join(f"WHEN '{d}' THEN {c}" for d, c in _DIM_CODES.items()) + " END"
    assert sql.count("SELECT w, dim, coalesce(") == 1
    assert sql.count("FROM g WHERE true GROUP BY w, dim, k\n") == 1
    return sql.replace("SELECT w, dim, coalesce(", f"SELECT w, {case} AS d, coalesce(").replace(
        "FROM g WHERE true GROUP BY w, dim, k\n", "FROM g WHERE true GROUP BY w, d, k\n")


# (statement, coded) → the statement for that layout
_WINDOW_SQL = {(q, coded): _dims_coded(q) if coded else q
               for q in (_UPSERT_WINDOWS, _UPSERT_ARRIVAL_WINDOWS, _UNCOUNT_WINDOWS,
                         _UNCOUNT_ARRIVAL_WINDOWS) for coded in (False, True)}


def _history_row(c) -> tuple:
    return (c.id, c.template_id, c.into, c.kind, c.at, orjson.dumps(c.as_dict()))

