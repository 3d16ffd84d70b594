"""The SQLite store computes window counts and template rows in SQL (one statement per
batch, so the writer thread does not hold the GIL): they must equal the pure definitions."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from smartlogs.store import SqliteStore
from smartlogs.store.sqlite import _DIM_CODES
from streams.windows import count_windows


def _event(i: int, rng: random.Random) -> dict:
    ts = rng.choice([-3601.5, -60.0, -0.25, 0.0, 59.999, 60.0, 1_118_897_460.0, 1_700_000_000.75])
    ts += rng.choice([0.0, rng.uniform(0, 300)])
    tid = f"T{rng.randint(1, 5)}"
    host = rng.choice(["a", "b", "", None])
    return {
        "id": f"e{i}", "ts": ts, "timestamp": "x", "received": 1.0,
        # the source is the host, else what the line came from (streams.partitions.source_of)
        "source": host or rng.choice(["app.log", "billing"]), "receiver": "test",
        "host": host, "component": rng.choice(["sshd", None, ""]),
        "pid": rng.choice(["12", None]), "level": rng.choice(["INFO", "ERROR", None]),
        "message": f"message {i} of {tid}", "raw": None, "template_id": tid,
        "template": f"text of {tid} as of {i}", "params": rng.choice([[], ["x", "1"]]),
        "score": rng.random(), "anomaly": rng.random() < 0.2, "reason": None,
        "warming_up": False, "parse_ok": True, "format": "syslog", "truncated": False,
        "fields": rng.choice([{}, {"k": [1, 2]}]),
    }


@pytest.mark.parametrize("size", [60, 7, 3600])
def test_windows_and_templates_equal_the_pure_definitions(tmp_path, size):
    rng = random.Random(size)
    events = [_event(i, rng) for i in range(600)]
    for i, e in enumerate(events):  # arrival times in their own order, apart from event times
        e["received"] = 1_800_000_000.0 + (i * 37 % 600) * 1.7
    store = SqliteStore(tmp_path / "s.db")
    written = []
    for k in range(0, 600, 150):
        batch = events[k:k + 150] + events[k:k + 5]  # repeats are stored once, counted once
        store.write(batch, window_seconds=size)
        written.extend(events[k:k + 150])
    conn = store._conn()
    dims = {c: d for d, c in _DIM_CODES.items()}  # (stored as 1-byte codes)
    rows = [(w, dims[d], k, n) for w, d, k, n in conn.execute("SELECT * FROM windows")]
    got = Counter({(w, d, k): n for w, d, k, n in rows if not d.startswith("a:")})
    assert got == count_windows(written, size)
    # the same counts in arrival-time windows (dims "a:…")
    arrival = Counter({(w, d[2:], k): n for w, d, k, n in rows if d.startswith("a:")})
    assert arrival == count_windows([{**e, "ts": e["received"]} for e in written], size)

    want = {}
    for e in written:
        t = want.setdefault(e["template_id"], {"count": 0, "first_ts": e["ts"], "last_ts": e["ts"],
                                               "example": e["message"]})
        t.update(count=t["count"] + 1, template=e["template"],
                 first_ts=min(t["first_ts"], e["ts"]), last_ts=max(t["last_ts"], e["ts"]))
    rows = conn.execute("SELECT id, template, count, first_ts, last_ts, example FROM templates")
    assert {r[0]: dict(zip(("template", "count", "first_ts", "last_ts", "example"), r[1:]))
            for r in rows} == want
    store.close()


def test_events_round_trip_through_the_batch_insert(tmp_path):
    rng = random.Random(1)
    events = [_event(i, rng) for i in range(50)]
    store = SqliteStore(tmp_path / "s.db")
    assert store.write([dict(e) for e in events], window_seconds=60) == 50
    assert store.write([dict(e) for e in events[:10]], window_seconds=60) == 0
    from smartlogs.store.base import EventQuery
    res = store.search(EventQuery(limit=100))
    assert res.total == 50
    by_id = {e["id"]: e for e in res.events}
    for e in events:
        got = by_id[e["id"]]
        for key, value in e.items():
            if key in ("host", "component", "level") and value == "":
                value = ""  # stored as given; only the window counts read "" as "-"
            assert got[key] == value, (key, got[key], value)
    store.close()


def test_a_store_with_its_spool_in_the_main_file_moves_it_over(tmp_path):
    import sqlite3

    import orjson

    path = tmp_path / "s.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript("""
        CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, items BLOB NOT NULL, n INTEGER NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('stored_seq', '7');
    """)
    for seq in (6, 7, 8, 9):  # 6 and 7 stored, not yet covered by a checkpoint; 8, 9 waiting
        old.execute("INSERT INTO spool VALUES (?, ?, 1)", (seq, orjson.dumps([{"raw": f"line {seq}"}])))
    old.close()

    store = SqliteStore(path)
    assert [(seq, items[0]["raw"]) for seq, items in store.spool_read(0, 100)] == [
        (6, "line 6"), (7, "line 7"), (8, "line 8"), (9, "line 9")]
    assert store.spool_backlog() == 2
    assert store.spool_append([{"raw": "new"}]) == 10
    assert not store._conn().execute("SELECT 1 FROM sqlite_master WHERE name = 'spool'").fetchone()
    store.close()


def test_a_lost_spool_file_does_not_hide_new_batches_behind_the_stored_cursor(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    for k in range(3):
        store.spool_append([{"raw": f"line {k}"}])
    store.write([], window_seconds=60, applied_seq=3)
    store.close()
    store.spool_path.unlink()
    store = SqliteStore(tmp_path / "s.db")
    assert store.spool_append([{"raw": "after"}]) == 4
    assert [seq for seq, _ in store.spool_read(store.stored_seq(), 10)] == [4]
    store.close()


def _seq_ids(store: SqliteStore) -> list[tuple[int, str]]:
    """(seq, id) of every stored event, in seq order (the id is in the row in a store made
    before ``event_ids``, in the body after)."""
    conn = store._conn()
    rows = conn.execute("SELECT seq, id, body FROM events ORDER BY seq").fetchall()
    bodies = store._decoded(conn, [(q, b) for q, _, b in rows])
    return [(q, i if i is not None else b[14]) for (q, i, _), b in zip(rows, bodies)]


@pytest.mark.parametrize("per_insert", [1, 4, 1024])
def test_a_batch_is_stored_whole_whatever_the_rows_per_statement(tmp_path, per_insert):
    rng = random.Random(per_insert)
    store = SqliteStore(tmp_path / "s.db")
    store._rows_per_insert = per_insert
    events = [_event(i, rng) for i in range(1, 1301)]
    assert store.write(events[:23], window_seconds=60) == 23
    assert store.write(events[23:], window_seconds=60) == 1277
    assert _seq_ids(store) == [(i + 1, e["id"]) for i, e in enumerate(events)]
    store.close()


# -- search: the time budget, shutdown, the query language ---------------------------------
def _many(n: int, rng: random.Random) -> list[dict]:
    return [_event(i, rng) for i in range(n)]


def test_a_query_past_its_budget_is_stopped_inside_sqlite(tmp_path):
    from smartlogs.store.base import EventQuery, QueryTimeout

    store = SqliteStore(tmp_path / "s.db", query_timeout=1e-6)
    store.write(_many(20_000, random.Random(1)), window_seconds=60)
    with pytest.raises(QueryTimeout, match="budget"):
        store.search(EventQuery(q="-message", limit=10))  # a full scan: far past 1 µs
    with pytest.raises(QueryTimeout):
        store.stats(windows=1000)
    store.query_timeout = 60  # the same store answers within a normal budget
    assert store.search(EventQuery(q="message -T1", limit=10)).total > 0
    store.close()


def test_interrupt_queries_stops_queries_but_not_writes(tmp_path):
    import threading
    import time

    from smartlogs.store.base import EventQuery, QueryInterrupted

    store = SqliteStore(tmp_path / "s.db", query_timeout=600)
    rng = random.Random(2)
    store.write(_many(30_000, rng), window_seconds=60)
    # a query that runs long (every event against a NOT of an OR of prefixes), stopped from
    # another thread as the server's shutdown does
    errors: list[BaseException] = []
    started = threading.Event()

    def slow():
        started.set()
        try:
            for _ in range(1000):
                store.search(EventQuery(q="-(T1* OR T2* OR of* OR as*) -message", limit=1000))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=slow)
    t.start()
    started.wait()
    time.sleep(0.2)
    t0 = time.monotonic()
    store.interrupt_queries()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 5  # bounded: a regression never ends
    assert errors and isinstance(errors[0], QueryInterrupted)
    with pytest.raises(QueryInterrupted):
        store.search(EventQuery(limit=1))
    extra = [_event(100_000 + i, rng) for i in range(10)]
    assert store.write(extra, window_seconds=60) == 10  # the pipeline still stores
    store.close()


def _msg_store(tmp_path, messages: list[str]) -> SqliteStore:
    rng = random.Random(3)
    events = []
    for i, m in enumerate(messages):
        e = _event(i, rng)
        e["message"] = m
        events.append(e)
    store = SqliteStore(tmp_path / "q.db")
    store.write(events, window_seconds=60)
    return store


MESSAGES = [
    "session opened for user root",      # 0
    "session closed for user root",      # 1
    "opened session for user cron",      # 2
    "authentication failure; rhost=218.188.2.4",  # 3
    "Authorization granted to admin",    # 4
    "error reading jk2_init config",     # 5
    "CRON job finished",                 # 6
]


@pytest.mark.parametrize("q, want", [
    ('"session opened"', {0}),
    ("session opened", {0, 2}),
    ("auth*", {3, 4}),
    ("AUTH*", {3, 4}),
    ("failure OR error", {3, 5}),
    ("session -cron", {0, 1}),
    ("session NOT cron", {0, 1}),
    ("-session", {3, 4, 5, 6}),
    ("(root OR cron) -closed", {0, 2, 6}),
    ("root OR -session", {0, 1, 3, 4, 5, 6}),
    ("rhost=218.188.2.4", {3}),
    ("218.188", {3}),
    ("188.218", set()),
    ("jk2_init", {5}),
    ("init_jk2", set()),
    ("user user user root", {0, 1}),
    ('"session opened" OR granted', {0, 4}),
])
def test_query_language(tmp_path, q, want):
    from smartlogs.store.base import EventQuery

    store = _msg_store(tmp_path, MESSAGES)
    got = store.search(EventQuery(q=q, limit=100))
    assert {int(e["id"][1:]) for e in got.events} == want and got.total == len(want)
    store.close()


# -- the layout: what is only displayed is compressed; stores of the old layout are moved -----
# events as stores kept them before bodies (commit af621b3 and earlier): every field a column,
# the full-text index reading ``message`` from the table (external content)
_OLD_LAYOUT = """
DROP TABLE events; DROP TABLE events_fts; DROP TABLE body_dicts; DROP TABLE IF EXISTS body_blocks;
DROP TABLE IF EXISTS event_ids; DROP TABLE IF EXISTS id_runs; DROP TABLE IF EXISTS id_stems;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts REAL NOT NULL, timestamp TEXT NOT NULL,
    received REAL NOT NULL, source TEXT, host TEXT, component TEXT, pid TEXT, level TEXT,
    message TEXT NOT NULL, raw TEXT, template_id TEXT NOT NULL, template TEXT, params BLOB,
    score REAL, anomaly INTEGER NOT NULL, reason TEXT, warming_up INTEGER,
    parse_ok INTEGER NOT NULL, format TEXT, truncated INTEGER, fields BLOB
);
CREATE INDEX events_ts ON events(ts);
CREATE INDEX events_host_ts ON events(host, ts);
CREATE INDEX events_anomaly_ts ON events(ts) WHERE anomaly = 1;
CREATE INDEX events_received ON events(received);
CREATE VIRTUAL TABLE events_fts USING fts5(
    message, content='events', content_rowid='seq', tokenize='unicode61', detail='{detail}'
);
"""
_OLD_COLUMNS = (
    "seq", "id", "ts", "timestamp", "received", "source", "host", "component", "pid", "level",
    "message", "raw", "template_id", "template", "params", "score", "anomaly", "reason",
    "warming_up", "parse_ok", "format", "truncated", "fields",
)


def _rewrite_in_the_old_layout(path, events: list[dict], detail: str) -> None:
    """The store at ``path`` (windows, templates, meta as written) with its events as the old
    code stored them (``events`` carry their ``seq``)."""
    import sqlite3

    import orjson

    conn = sqlite3.connect(path)
    conn.executescript(_OLD_LAYOUT.format(detail=detail))
    conn.executemany(
        f"INSERT INTO events ({', '.join(_OLD_COLUMNS)}) VALUES ({', '.join('?' * 23)})",
        [tuple(orjson.dumps(e[c]) if c == "params" else
               (orjson.dumps(e[c]) if e[c] else None) if c == "fields" else
               e["receiver"] if c == "source" else e[c]  # (``source`` held the receiver)
               for c in _OLD_COLUMNS) for e in events])
    conn.execute("INSERT INTO events_fts (events_fts) VALUES ('rebuild')")
    conn.commit()
    conn.close()


def _answers(store: SqliteStore) -> list:
    from smartlogs.store.base import EventQuery

    queries = [EventQuery(limit=-1), EventQuery(q='"session opened"', limit=-1),
               EventQuery(q="auth*", limit=-1), EventQuery(q="session -cron", limit=-1),
               EventQuery(q="-session", limit=-1), EventQuery(host="a", limit=-1),
               EventQuery(level="ERROR", limit=-1), EventQuery(template="T3", limit=-1),
               EventQuery(anomaly=True, limit=-1), EventQuery(since=0.0, until=100.0, limit=-1),
               EventQuery(arrival=True, limit=-1), EventQuery(after_seq=1000, limit=-1),
               EventQuery(since=1000.0, until=1900.0, basis="arrival", limit=-1)]
    out = []
    for q in queries:
        r = store.search(q)
        out.append((r.total, r.last_seq, r.events))
    return out + [store.stats(windows=1000), store.templates(limit=1000)]


@pytest.mark.parametrize("detail", ["none", "full"])
def test_a_store_written_in_the_old_layout_is_moved_on_open_and_answers_the_same(
        tmp_path, detail, monkeypatch):
    rng = random.Random(7)
    events = []
    for i in range(2600):  # past the first body dictionary (2,000 events)
        e = _event(i, rng)
        e["message"] = f"{MESSAGES[i % len(MESSAGES)]} {i}"
        e["received"] = float(i + rng.randint(-50, 50))
        # the source the old layout's events get when moved: the host, else the receiver
        e["source"] = e["host"] or e["receiver"]
        events.append(e)
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, len(events), 500):
        store.write(events[k:k + 500], window_seconds=60)
    want = _answers(store)
    store.close()
    _rewrite_in_the_old_layout(tmp_path / "s.db", events, detail)
    monkeypatch.setattr(SqliteStore, "_MIGRATE_BATCH", 700)  # several batches
    store = SqliteStore(tmp_path / "s.db")
    assert _answers(store) == want
    cols = {r[1] for r in store._conn().execute("PRAGMA table_info(events)")}
    assert "message" not in cols and "body" in cols
    more = [_event(i, rng) for i in range(2600, 2700)]  # and it goes on storing
    assert store.write(more, window_seconds=60) == 100
    assert store.write(events[:50], window_seconds=60) == 0  # ids of moved events are known
    assert store.count_events() == 2700
    store.close()


def test_a_move_stopped_midway_resumes_when_the_store_is_opened_again(tmp_path, monkeypatch):
    rng = random.Random(8)
    events = [_event(i, rng) for i in range(900)]
    for e in events:  # the source the old layout's events get when moved
        e["source"] = e["host"] or e["receiver"]
    store = SqliteStore(tmp_path / "s.db")
    store.write(events, window_seconds=60)
    want = _answers(store)
    store.close()
    _rewrite_in_the_old_layout(tmp_path / "s.db", events, "full")
    monkeypatch.setattr(SqliteStore, "_MIGRATE_BATCH", 400)
    real = SqliteStore._insert_events
    calls = []

    def crash_on_the_second_batch(self, conn, evs, upto):
        calls.append(len(evs))
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped midway")
        return real(self, conn, evs, upto)

    monkeypatch.setattr(SqliteStore, "_insert_events", crash_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        SqliteStore(tmp_path / "s.db")
    monkeypatch.setattr(SqliteStore, "_insert_events", real)
    store = SqliteStore(tmp_path / "s.db")
    assert _answers(store) == want and store.count_events() == 900
    store.close()


@pytest.mark.parametrize("batch", [1, 7, 500, 3000])
def test_arrival_time_ranges_find_exactly_the_events_received_in_them(tmp_path, batch):
    """Arrival time is searched through runs of seqs (``arrival_blocks``), not an index: events
    stored out of arrival order, in batches small and large, are all found, and only them."""
    from smartlogs.store.base import EventQuery

    rng = random.Random(batch)
    events = [_event(i, rng) for i in range(3000)]
    for i, e in enumerate(events):  # mostly in arrival order, some late, some far off
        e["received"] = 1_800_000_000.0 + i * 0.5 + rng.choice([0.0, 0.0, -30.0, 7.5, 4000.0])
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, len(events), batch):
        store.write(events[k:k + batch], window_seconds=60)
    for _ in range(40):
        since = 1_800_000_000.0 + rng.uniform(-100, 3600)
        until = since + rng.choice([0.5, 10.0, 300.0, 5000.0])
        want = sorted(e["id"] for e in events if since <= e["received"] < until)
        got = store.search(EventQuery(since=since, until=until, basis="arrival", limit=-1))
        assert sorted(e["id"] for e in got.events) == want and got.total == len(want)
    got = store.search(EventQuery(since=1_800_004_000.0, basis="arrival", limit=-1))
    assert got.total == sum(e["received"] >= 1_800_004_000.0 for e in events)
    assert store._conn().execute("SELECT count(*) FROM arrival_blocks").fetchone()[0] <= 3
    store.close()


def _loglike(i: int) -> dict:
    """An event of a varied synthetic log (templates with changing values), as the pipeline
    makes it."""
    from datetime import datetime, timezone

    rng = random.Random(i)
    user = rng.choice(["root", "admin", "cron", "guest", "test", "www"])
    ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
    kind = i % 4
    message, template, params = [
        (f"session opened for user {user} by (uid={rng.randint(0, 999)})",
         "session opened for user <*> by (uid=<NUM>)", [user, "0"]),
        (f"authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}",
         "authentication failure; logname= uid=<NUM> euid=<NUM> tty=ssh ruser= rhost=<IP>",
         ["0", "0", ip]),
        (f"connection from {ip} () at Sun Jul 10 {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00 2005",
         "connection from <IP> () at <*>", [ip, "Sun Jul 10"]),
        (f"Accepted password for {user} from {ip} port {rng.randint(1024, 65535)} ssh2",
         "Accepted password for <*> from <IP> port <NUM> ssh2", [user, ip, "22"]),
    ][kind]
    ts = 1_700_000_000.0 + i * 1.5
    return {
        "id": f"{i:012x}-{i % 500}", "ts": ts,
        "timestamp": datetime.fromtimestamp(ts, timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"),
        "received": 1_800_000_000.0 + i * 0.01, "source": "web-01", "receiver": "http",
        "host": "web-01",
        "component": "sshd", "pid": str(rng.randint(100, 30000)), "level": None,
        "message": message, "raw": None, "template_id": f"T{kind + 1}", "template": template,
        "params": params, "score": round(rng.random(), 4), "anomaly": rng.random() < 0.01,
        "reason": None, "warming_up": False, "parse_ok": True, "format": "syslog",
        "truncated": False, "fields": {},
    }


def test_the_store_takes_less_than_three_times_the_bytes_of_its_lines(tmp_path):
    """Bounded: the old layout (every field a column, the message in the table and indexed)
    took 4.4x the raw bytes of this log (random addresses, pids, scores); this one 2.5x. A
    regression that stores text twice or stops compressing breaks 3x. (Figures at 1,000,000
    lines: bench/bench_store_size.py, bench/RESULTS.md.)"""
    from smartlogs.store.base import EventQuery

    events = [_loglike(i) for i in range(20_000)]
    raw = sum(len(f"Jul 10 10:00:00 {e['host']} {e['component']}[{e['pid']}]: {e['message']}\n")
              for e in events)
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, len(events), 2000):
        store.write([dict(e) for e in events[k:k + 2000]], window_seconds=60)
    store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(f.stat().st_size for f in tmp_path.iterdir())
    got = store.search(EventQuery(q='"session opened"', limit=1)).total
    store.close()
    assert got == 5000
    assert size < 3.0 * raw, (size, raw, size / raw)


def test_bodies_round_trip_with_each_dictionary_and_after_reopening(tmp_path):
    from smartlogs.store.base import EventQuery

    events = [_loglike(i) for i in range(6000)]
    events[10]["timestamp"] = "2023-11-14 22:13:35"  # not the rebuilt form: kept as given
    events[11]["raw"] = "<13>" + events[11]["message"]
    events[11]["parse_ok"] = False
    events[12]["fields"] = {"k": [1, {"x": None}], "ü": "✓"}
    store = SqliteStore(tmp_path / "s.db")
    store._bodies.FIRST, store._bodies.GROWTH = 1000, 2  # several dictionaries
    store._bodies.next_training = 1000
    for k in range(0, len(events), 700):
        store.write([dict(e) for e in events[k:k + 700]], window_seconds=60)
    assert store._bodies.current >= 3
    store.close()
    store = SqliteStore(tmp_path / "s.db")  # dictionaries come from the file
    got = {e["id"]: e for e in store.search(EventQuery(limit=-1)).events}
    assert len(got) == len(events)
    for e in events:
        # (every event read back names its incident, null when it has none)
        assert {k: v for k, v in got[e["id"]].items() if k != "seq"} == {**e, "incident_id": None}
    store.close()


def test_a_batch_rolled_back_after_training_a_dictionary_leaves_nothing_behind(tmp_path):
    from smartlogs.store.base import EventQuery

    events = [_loglike(i) for i in range(3000)]
    store = SqliteStore(tmp_path / "s.db")
    store.write([dict(e) for e in events[:1500]], window_seconds=60)
    real = store._upsert_templates

    def fail(conn, evs, rows=None):
        raise RuntimeError("disk full")

    store._upsert_templates = fail
    with pytest.raises(RuntimeError):
        store.write([dict(e) for e in events[1500:]], window_seconds=60)  # trains, rolls back
    assert store._bodies.current == 0
    store._upsert_templates = real
    for e in events[1500:]:  # other events this time: another dictionary is trained
        e["message"] = f"disk {e['id']} full after {e['message']}"
    store.write([dict(e) for e in events[1500:]], window_seconds=60)
    assert store._bodies.current == 1
    got = {e["id"]: e for e in store.search(EventQuery(limit=-1)).events}
    assert [got[e["id"]]["message"] for e in events] == [e["message"] for e in events]
    store.close()
    store = SqliteStore(tmp_path / "s.db")  # and from the file, in a new process's view
    got = {e["id"]: e for e in store.search(EventQuery(limit=-1)).events}
    assert [got[e["id"]]["message"] for e in events] == [e["message"] for e in events]
    store.close()


def test_a_store_made_before_arrival_windows_counts_its_events_once(tmp_path):
    rng = random.Random(5)
    events = [_event(i, rng) for i in range(300)]
    store = SqliteStore(tmp_path / "s.db")
    store.write(events[:200], window_seconds=60)
    conn = store._conn()  # as a store made before arrival windows were counted
    conn.execute("DELETE FROM windows WHERE dim IN (SELECT value FROM json_each(?))",
                 (str([c for d, c in _DIM_CODES.items() if d.startswith("a:")]),))
    conn.execute("DELETE FROM meta WHERE key = 'arrival_windows'")
    store.close()
    store = SqliteStore(tmp_path / "s.db", window_seconds=60)  # counts them when opened
    store.write(events[200:], window_seconds=60)
    st = store.stats(basis="arrival", windows=1000)
    assert st["totals"]["events"] == 300 and sum(w["total"] for w in st["windows"]) == 300
    store.close()
    store = SqliteStore(tmp_path / "s.db", window_seconds=60)  # and only once
    assert store.stats(basis="arrival")["totals"]["events"] == 300
    store.close()


def test_since_until_and_windows_in_arrival_time(tmp_path):
    from smartlogs.store.base import EventQuery

    rng = random.Random(6)
    events = [_event(i, rng) for i in range(100)]
    for i, e in enumerate(events):  # event times from years ago; arrival in the last 100 s
        e["ts"] = 1_100_000_000.0 + i
        e["received"] = 1_900_000_000.0 + i
    store = SqliteStore(tmp_path / "s.db")
    store.write(events, window_seconds=60)
    q = EventQuery(since=1_900_000_050.0, until=1_900_000_060.0, limit=100)
    assert store.search(q).total == 0  # no event *time* in that range
    got = store.search(EventQuery(since=q.since, until=q.until, limit=100, basis="arrival"))
    assert sorted(e["id"] for e in got.events) == [f"e{i}" for i in range(50, 60)]
    st = store.stats(since=1_899_999_000.0, basis="arrival")  # whole windows from since
    assert st["totals"]["events"] == 100 and st["windows"][0]["start"].startswith("2030-")
    assert store.stats(since=1_899_999_000.0)["totals"]["events"] == 0
    store.close()


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("q", ["alpha", "alpha beta", '"beta gamma"', "gam*", "alpha OR delta",
                               "alpha -beta", "zeta", "-alpha", "zeta OR -(beta gamma)"])
def test_both_plans_of_a_word_query_give_the_same_pages(tmp_path, monkeypatch, q, ordered):
    """Words in few events: the full-text index drives; in many: events are walked in order and
    tested against the set of matches (``_DENSE``), or, for words alone, walked a chunk at a
    time against the matches in the chunk's seqs (``_WALK``; events far out of order fall back
    to the set). Same totals, pages and cursors every way; ``ordered``: event times about in
    the order stored (the chunked walk), else scattered (its fallback)."""
    import smartlogs.store.sqlite as mod
    from smartlogs.store.base import EventQuery, sort_key

    rng = random.Random(11)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    events = []
    for i in range(3000):
        e = _event(i, rng)
        e["message"] = " ".join(rng.choice(words) for _ in range(rng.randint(1, 5)))
        if i % 500 == 0:
            e["message"] += " zeta"
        e["received"] = 1_800_000_000.0 + i
        if ordered:
            e["ts"] = 900_000_000.0 + i - rng.choice([0.0, 0.0, 30.0, 0.5])
        events.append(e)
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, len(events), 400):
        store.write(events[k:k + 400], window_seconds=60)
    shapes = [dict(), dict(host="a"), dict(since=0.0, until=1e9), dict(arrival=True),
              dict(after_seq=1200), dict(level="ERROR", anomaly=False),
              dict(since=1_800_000_500.0, until=1_800_002_000.0, basis="arrival")]

    def pages(shape):
        out, after = [], None
        for _ in range(4):
            query = EventQuery(q=q, limit=37, page_after=after, **shape)
            r = store.search(query)
            out.append((r.total, r.more, r.last_seq, [e["id"] for e in r.events]))
            if not r.events:
                break
            after = sort_key(query, r.events[-1])
        return out

    got = {}
    # _DENSE 0: the share never walks; _WALK_HITS 1: words alone in any event walk
    for dense, walk, hits in ((0, False, 10**9), (10**9, False, 10**9), (10**9, True, 10**9),
                              (0, True, 1)):
        monkeypatch.setattr(mod, "_DENSE", dense)
        monkeypatch.setattr(mod, "_WALK", walk)
        monkeypatch.setattr(mod, "_WALK_HITS", hits)
        monkeypatch.setattr(mod, "_WALK_FIRST", 16)  # several chunks in a page of 37
        got[dense, walk, hits] = [pages(shape) for shape in shapes]
    assert (got[0, False, 10**9] == got[10**9, False, 10**9] == got[10**9, True, 10**9]
            == got[0, True, 1])
    assert any(p[0][0] for p in got[0, False, 10**9])  # the queries match something
    store.close()


def test_retention_takes_deleted_events_out_of_the_full_text_index(tmp_path):
    """The index keeps no copy of the messages: retention hands it each deleted event's message
    (from its body), and word counts, totals and pages stay those of the events left."""
    from smartlogs.store.base import EventQuery

    events = [_loglike(i) for i in range(3000)]
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, 3000, 1000):
        store.write([dict(e) for e in events[k:k + 1000]], window_seconds=60)
    cut = events[1800]["ts"]
    while store.delete_before(cut, limit=500):
        pass
    left = [e for e in events if e["ts"] >= cut]
    for q, has in (("session", lambda m: "session" in m.split()),
                   ('"Accepted password"', lambda m: m.startswith("Accepted password")),
                   ("auth*", lambda m: m.startswith("authentication"))):
        want = [e["id"] for e in sorted(left, key=lambda e: -e["ts"]) if has(e["message"])]
        got = store.search(EventQuery(q=q, limit=-1))
        assert got.total == len(want) and [e["id"] for e in got.events] == want
        # the index itself (no positions: a phrase is asked as its words, a superset)
        words = fts_words(q)
        fts = store._conn().execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH ?",
                                    (" AND ".join(f'"{w}"' + "*" * q.endswith("*")
                                                  for w in words),)).fetchone()[0]
        assert fts == sum(all(any(t == w or (q.endswith("*") and t.startswith(w))
                                  for t in fts_tokens(e["message"])) for w in words)
                          for e in left)
    store.close()


def fts_words(q: str) -> list[str]:
    return [w.lower() for w in q.strip('"*').split()]


def fts_tokens(message: str) -> list[str]:
    from smartlogs.store.fts import tokens
    return tokens(message)


# -- bodies in blocks: what is only displayed is compressed with its neighbours -------------
def _body_bytes(store: SqliteStore) -> int:
    conn = store._conn()
    return (conn.execute("SELECT coalesce(sum(length(body)), 0) FROM events").fetchone()[0]
            + conn.execute("SELECT coalesce(sum(length(blob)), 0) FROM body_blocks").fetchone()[0])


def test_bodies_of_neighbouring_events_are_compressed_together(tmp_path):
    """Bounded: one blob per event took 43 bytes an event of this log (random pids, addresses
    and scores, a dictionary trained on the store's first 2,000 events); 128 neighbours to a
    blob take ~25. A regression to one blob per event breaks 32."""
    events = [_loglike(i) for i in range(20_000)]
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, len(events), 2000):
        store.write([dict(e) for e in events[k:k + 2000]], window_seconds=60)
    per_event = _body_bytes(store) / len(events)
    store.close()
    assert per_event < 32, per_event


def _as_one_blob_per_event(store: SqliteStore, upto: int) -> None:
    """The events with seq <= ``upto`` as a store written before blocks holds them: each its
    own blob in ``events.body``, no block."""
    import orjson

    from smartlogs.store.sqlite import _Bodies

    conn = store._conn()
    rows = conn.execute("SELECT seq, body FROM events WHERE seq <= ?", (upto,)).fetchall()
    bodies = store._decoded(conn, rows)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("UPDATE events SET body = ? WHERE seq = ?", [
        (_Bodies.encode(store._bodies, conn, [orjson.dumps(b)])[0], seq)
        for (seq, _), b in zip(rows, bodies)])
    conn.execute("DELETE FROM body_blocks WHERE first_seq <= ?", (upto,))
    conn.execute("COMMIT")


def test_a_store_with_bodies_per_event_and_in_blocks_reads_both(tmp_path):
    """A store written before blocks keeps its blobs per event; events written after go into
    blocks; every event reads back whole, by every page and after a restart."""
    from smartlogs.store.base import EventQuery

    events = [_loglike(i) for i in range(3000)]
    events[5]["fields"] = {"k": [1, {"x": None}], "ü": "✓"}
    by_id = {e["id"]: e for e in events}
    store = SqliteStore(tmp_path / "s.db")
    store.write([dict(e) for e in events[:1500]], window_seconds=60)
    assert store._conn().execute("SELECT count(*) FROM events WHERE length(body) > 0"
                                 ).fetchone()[0] == 0
    _as_one_blob_per_event(store, 1500)
    store.close()
    store = SqliteStore(tmp_path / "s.db")
    for k in range(1500, 3000, 7 * 61):  # batches whose blocks end anywhere
        store.write([dict(e) for e in events[k:k + 7 * 61]], window_seconds=60)
    for q in (EventQuery(limit=-1), EventQuery(limit=-1, arrival=True),
              EventQuery(q="session", limit=-1), EventQuery(after_seq=1400, limit=-1)):
        got = store.search(q).events
        assert got, q
        for e in got:
            assert {k: v for k, v in e.items() if k not in ("seq", "incident_id")} == by_id[e["id"]]
    store.close()


def test_retention_drops_the_blocks_whose_events_are_all_gone(tmp_path):
    from smartlogs.store.base import EventQuery

    events = [_loglike(i) for i in range(3000)]
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, 3000, 1000):
        store.write([dict(e) for e in events[k:k + 1000]], window_seconds=60)
    cut = sorted(e["ts"] for e in events)[1800]
    while store.delete_before(cut, limit=333):
        pass
    conn = store._conn()
    left = {r[0] for r in conn.execute("SELECT seq FROM events")}
    blocks = conn.execute("SELECT first_seq, n FROM body_blocks").fetchall()
    # every block holds an event left, and every event left is in a block
    assert all(any(a <= s < a + n for s in left) for a, n in blocks)
    assert all(any(a <= s < a + n for a, n in blocks) for s in left)
    got = store.search(EventQuery(limit=-1))
    assert sorted(e["id"] for e in got.events) == sorted(e["id"] for e in events
                                                         if e["ts"] >= cut)
    # everything deleted: no block left; events written next read back
    while store.delete_before(4e9, limit=1000):
        pass
    assert conn.execute("SELECT count(*) FROM body_blocks").fetchone()[0] == 0
    more = [_loglike(i) for i in range(3000, 3010)]
    store.write([dict(e) for e in more], window_seconds=60)
    got = store.search(EventQuery(limit=-1)).events
    assert [e["message"] for e in sorted(got, key=lambda e: e["seq"])] == [
        e["message"] for e in more]
    store.close()


# -- names: hosts, components and template ids as short keys --------------------------------
def _as_written_before_names(path) -> None:
    """The store at ``path`` as the code before ``names`` left it: texts in the columns."""
    import sqlite3

    conn = sqlite3.connect(path)
    for col in ("host", "component", "template_id"):
        conn.execute(f"UPDATE events SET {col} = (SELECT text FROM names WHERE key = {col}) "
                     f"WHERE typeof({col}) = 'blob'")
    conn.execute("DROP TABLE names")
    conn.execute("DELETE FROM meta WHERE key = 'names_from'")
    conn.commit()
    conn.close()


def _filters(store: SqliteStore) -> dict:
    from smartlogs.store.base import EventQuery

    got = {}
    for name, q in {"all": EventQuery(limit=-1), "host a": EventQuery(host="a", limit=-1),
                    "host ''": EventQuery(host="", limit=-1),
                    "template T3": EventQuery(template="T3", limit=-1),
                    "source billing": EventQuery(source="billing", limit=-1),
                    "source b": EventQuery(source="b", limit=-1),
                    "host a, T2, paged": EventQuery(host="a", template="T2", limit=7),
                    "unknown host": EventQuery(host="nope", limit=-1)}.items():
        r = store.search(q)
        got[name] = (r.total, [(e["id"], e["host"], e["component"], e["template_id"])
                               for e in r.events])
    return got


def test_names_are_keys_and_a_store_written_before_them_reads_and_filters_the_same(tmp_path):
    rng = random.Random(11)
    events = [_event(i, rng) for i in range(900)]
    want_store = SqliteStore(tmp_path / "want.db")  # every event written with keys
    for k in range(0, 900, 300):
        want_store.write([dict(e) for e in events[k:k + 300]], window_seconds=60)
    conn = want_store._conn()
    assert conn.execute("SELECT count(*) FROM events WHERE typeof(template_id) != 'blob'"
                        ).fetchone()[0] == 0
    want = _filters(want_store)
    want_windows = sorted(conn.execute("SELECT * FROM windows"))
    want_store.close()

    store = SqliteStore(tmp_path / "s.db")
    store.write([dict(e) for e in events[:300]], window_seconds=60)
    store.close()
    _as_written_before_names(tmp_path / "s.db")
    store = SqliteStore(tmp_path / "s.db")  # 300 rows with texts, then keys
    for k in range(300, 900, 300):
        store.write([dict(e) for e in events[k:k + 300]], window_seconds=60)
    assert _filters(store) == want
    assert sorted(store._conn().execute("SELECT * FROM windows")) == want_windows
    # a merge rewrites rows of both kinds; retention uncounts both
    store.merge_templates({"T2": "T1"})
    got = store.search(__import__("smartlogs.store.base", fromlist=["EventQuery"]).EventQuery(
        template="T1", limit=-1))
    assert got.total == sum(e["template_id"] in ("T1", "T2") for e in events)
    assert {e["template_id"] for e in got.events} == {"T1"}
    while store.delete_before(4e9, limit=250):
        pass
    assert store._conn().execute("SELECT count(*) FROM windows").fetchone()[0] == 0
    store.close()


def test_a_name_holding_a_nul_is_written_twice_without_wedging_the_store(tmp_path):
    """A host (or component) holding a NUL ("a\\x00b", which a Loki label or an API event may
    carry) was never found among the names (SQLite's JSON functions end a text at a NUL), so
    its second write inserted it again: a UNIQUE failure the shard retried forever, while
    /healthz said down (found by Schemathesis against `smartlogs up`, issue 21)."""
    from smartlogs.store.base import EventQuery

    rng = random.Random(3)
    store = SqliteStore(tmp_path / "s.db")
    for n in range(2):
        e = _event(n, rng)
        e.update(id=f"nul-{n}", host="a\x00b", component="c\x00")
        store.write([e], window_seconds=60)
    got = store.search(EventQuery(host="a\x00b", limit=-1))
    assert got.total == 2 and {e["host"] for e in got.events} == {"a\x00b"}
    store.close()


# -- bounded totals ------------------------------------------------------------------------
@pytest.mark.parametrize("dense", [0, 10**9])
def test_totals_are_exact_up_to_the_limit_then_a_lower_bound_and_pages_are_unchanged(
        tmp_path, monkeypatch, dense):
    """``total`` is exact up to ``total_limit`` matches, then the limit with relation "gte"
    (as Elasticsearch's track_total_hits); the page, ``more`` and ``last_seq`` are those of
    an exact count, whichever plan the words take (``_DENSE``)."""
    import smartlogs.store.sqlite as mod
    from dataclasses import replace

    from smartlogs.store.base import EventQuery, sort_key

    rng = random.Random(5)
    words = ["alpha", "beta", "gamma", "delta"]
    events = []
    for i in range(2000):
        e = _event(i, rng)
        e["message"] = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        e["received"] = 1_800_000_000.0 + i
        events.append(e)
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, len(events), 500):
        store.write(events[k:k + 500], window_seconds=60)
    monkeypatch.setattr(mod, "_DENSE", dense)
    shapes = [dict(), dict(q="alpha"), dict(q='"alpha beta"'), dict(q="al*"), dict(q="-alpha"),
              dict(q="alpha OR -beta"), dict(q="alpha", host="a"), dict(host="b"),
              dict(template="T2"), dict(anomaly=True), dict(level="ERROR"),
              dict(since=0.0, until=1e9), dict(arrival=True, q="beta"), dict(after_seq=1500),
              dict(since=1_800_000_100.0, until=1_800_001_900.0, basis="arrival", q="gamma")]
    seen = set()
    for shape in shapes:
        exact = store.search(EventQuery(limit=20, total_limit=None, **shape))
        assert exact.total_relation == "eq"
        for limit in (1, 37, exact.total - 1, exact.total, 5000):
            if limit < 0:
                continue
            got = store.search(EventQuery(limit=20, total_limit=limit, **shape))
            want = (exact.total, "eq") if exact.total <= limit else (limit, "gte")
            assert (got.total, got.total_relation) == want, (shape, limit)
            seen.add(got.total_relation)
            assert ([e["id"] for e in got.events], got.more, got.last_seq) == (
                [e["id"] for e in exact.events], exact.more, exact.last_seq)
        if exact.more:  # the next page too
            q = EventQuery(limit=20, **shape)
            after = sort_key(q, exact.events[-1])
            a = store.search(replace(q, page_after=after, total_limit=None))
            b = store.search(replace(q, page_after=after, total_limit=3))
            assert [e["id"] for e in a.events] == [e["id"] for e in b.events] and a.more == b.more
    assert seen == {"eq", "gte"}
    store.close()


def test_the_default_total_stops_at_ten_thousand(tmp_path):
    from smartlogs.store.base import TOTAL_LIMIT, EventQuery

    assert TOTAL_LIMIT == 10_000 and EventQuery().total_limit == TOTAL_LIMIT
    store = SqliteStore(tmp_path / "s.db")
    store.write(_many(TOTAL_LIMIT, random.Random(2)), window_seconds=60)
    r = store.search(EventQuery(limit=1))
    assert (r.total, r.total_relation) == (TOTAL_LIMIT, "eq")
    more = [_event(TOTAL_LIMIT + 1 + i, random.Random(3)) for i in range(2)]
    store.write(more, window_seconds=60)
    r = store.search(EventQuery(limit=1))
    assert (r.total, r.total_relation) == (TOTAL_LIMIT, "gte")
    r = store.search(EventQuery(limit=1, total_limit=None))
    assert (r.total, r.total_relation) == (TOTAL_LIMIT + 2, "eq")
    r = store.search(EventQuery(q="message", limit=1))  # the words' count, bounded the same
    assert (r.total, r.total_relation) == (TOTAL_LIMIT, "gte")
    store.close()


def test_a_batch_is_written_in_a_few_statements_whatever_its_number_of_templates(tmp_path):
    """Bounded: each statement the writer runs releases the GIL and takes it back, waiting for
    the pipeline thread while the shard holds the store's one writer turn (issue 18). A batch's
    template rows were one statement each (an executemany: 500 templates, 500+ statements);
    they are a few multi-row upserts now, with the same rows (the test above)."""
    events = []
    for i in range(2000):
        e = _loglike(i)
        e["template_id"] = f"T{i % 500}"
        e["template"] = f"pattern {i % 500} <*>"
        e["id"] = f"b:{i}"  # ids of one request's stem, as the API makes them
        events.append(e)
    store = SqliteStore(tmp_path / "s.db")
    store.write([dict(e) for e in events[:1000]], window_seconds=60)
    statements = []
    store._conn().set_trace_callback(lambda sql: statements.append(sql))
    store.write([dict(e) for e in events[1000:]], window_seconds=60)
    store._conn().set_trace_callback(None)
    ours = [s for s in statements if not s.startswith("--")]  # not FTS5's own, run inside ours
    assert len(ours) < 60, len(ours)
    rows = dict(store._conn().execute("SELECT id, count FROM templates"))
    assert len(rows) == 500 and set(rows.values()) == {4}


def test_a_batch_of_many_new_id_stems_is_written_in_a_few_statements(tmp_path):
    """Bounded, as the templates above: a batch whose ids have many stems not stored yet
    (ids from many clients) adds their ``id_stems`` rows in a few multi-row INSERTs, not one
    statement a stem (an executemany: 1,000 stems, 1,000+ statements in the writer turn)."""
    events = []
    for i in range(1000):
        e = _loglike(i)
        e["id"] = f"client{i}x:{i}"  # a stem of its own each
        events.append(e)
    store = SqliteStore(tmp_path / "s.db")
    store.write([_loglike(5000)], window_seconds=60)  # the store and its statements exist
    statements = []
    store._conn().set_trace_callback(lambda sql: statements.append(sql))
    assert store.write([dict(e) for e in events], window_seconds=60) == 1000
    store._conn().set_trace_callback(None)
    ours = [s for s in statements if not s.startswith("--")]  # not FTS5's own, run inside ours
    assert len(ours) < 60, len(ours)
    conn = store._conn()
    assert conn.execute("SELECT count(*) FROM id_stems").fetchone()[0] == 1001
    assert sorted(_ids_of(store)) == sorted([e["id"] for e in events] + [_loglike(5000)["id"]])
    store.close()


def test_bodies_window_counts_and_template_rows_are_made_before_the_writer_turn(tmp_path,
                                                                               monkeypatch):
    """The writer turn is what the shards wait for (issue 18): the Python work a batch needs
    no transaction for is done before it is taken; what the transaction changes (ids already
    stored, ids the catalog renames) is made again inside, from the events kept."""
    from contextlib import contextmanager

    import smartlogs.store.sqlite as sq

    store = SqliteStore(tmp_path / "s.db")
    inside = []
    turn = store._writer_turn

    @contextmanager
    def watched():
        with turn():
            inside.append(True)
            try:
                yield
            finally:
                inside.pop()

    made = []
    body, count = sq._body_json, sq.count_windows
    monkeypatch.setattr(store, "_writer_turn", watched)
    monkeypatch.setattr(sq, "_body_json",
                        lambda e, *a: made.append(("body", bool(inside))) or body(e, *a))
    monkeypatch.setattr(sq, "count_windows",
                        lambda *a, **k: made.append(("counts", bool(inside))) or count(*a, **k))
    rows = sq._template_rows
    monkeypatch.setattr(sq, "_template_rows",
                        lambda evs: made.append(("templates", bool(inside))) or rows(evs))
    events = [_loglike(i) for i in range(200)]
    store.write([dict(e) for e in events[:100]], window_seconds=60)
    assert {what for what, _ in made} == {"body", "counts", "templates"}
    assert not any(held for _, held in made)
    # half of this batch is stored already: only the other half is counted
    store.write([dict(e) for e in events[50:150]], window_seconds=60)
    assert store.count_events() == 150
    total = dict(((w, d), n) for w, d, k, n in store._conn().execute(
        "SELECT start, dim, key, count FROM windows") if k == "*")
    assert sum(n for (w, d), n in total.items() if d in ("total", store._dim("total"))) == 150
    assert sum(store._conn().execute("SELECT sum(count) FROM templates").fetchone()) == 150


# -- event ids: (stem, number) of each id, in runs (id_runs), the id itself in the body --------------
def _ids_of(store: SqliteStore) -> list[str]:
    from smartlogs.store.base import EventQuery
    got = store.search(EventQuery(limit=100_000, arrival=True, total_limit=None))
    return sorted(e["id"] for e in got.events)


def _run_event(eid: str, i: int, rng: random.Random) -> dict:
    e = _event(i, rng)
    e["id"] = eid
    return e


def test_ids_are_found_by_stem_and_number_not_a_unique_index_and_read_from_the_body(tmp_path):
    rng = random.Random(5)
    store = SqliteStore(tmp_path / "s.db")
    conn = store._conn()
    assert not [r for r in conn.execute("PRAGMA index_list(events)") if r[2]]  # no UNIQUE index
    ids = [f"{'r1' if i % 3 else 'r2'}:{i}" for i in range(600)]
    events = [_run_event(x, i, rng) for i, x in enumerate(ids)]
    assert store.write(events[:400], window_seconds=60) == 400
    # ids stored already (a resent batch, a retried request) and repeated within the batch
    assert store.write(events[200:] + events[590:], window_seconds=60) == 200
    assert _ids_of(store) == sorted(ids)
    assert conn.execute("SELECT count(*) FROM events WHERE id IS NOT NULL").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM id_runs").fetchone()[0] <= 400
    assert conn.execute("SELECT count(*) FROM id_stems").fetchone()[0] == 2
    assert store.count_ids("r1:") == 400 and store.count_ids("r2:") == 200
    assert store.count_ids("r3:") == 0 and store.count_ids("") == 600
    store.close()


_TRICKY_IDS = [
    "t:0", "t:00", "t:007", "t:07", "t:7", "t:70", "7", "07", "0", "00", "t:", "t", "abc", "a-1", "a-01", "x" + "9" * 25, "x" + "9" * 24, "x" + "0" * 20 + "1",
    "1" * 19, "1" * 18, "r:\u0663", "r:3", "nul\x00:1", "nul\x00:2", "é:12", "é:012",
    "3f9a2c1b7e00-0", "3f9a2c1b7e00-10", "3f9a2c1b7e01-0",
]


def test_ids_split_into_stem_and_number_are_stored_once_each_and_found_again(tmp_path):
    from smartlogs.store.sqlite import _id_key

    for eid in _TRICKY_IDS:  # the key gives the id back, the number as SQLite can keep it
        stem, tail = _id_key(eid)
        assert (eid == tail if stem is None else stem + str(tail) == eid and 0 <= tail < 2 ** 63)
    rng = random.Random(6)
    store = SqliteStore(tmp_path / "s.db")
    ids = [*_TRICKY_IDS, *(f"run:{i}" for i in range(200))]
    events = [_run_event(x, i, rng) for i, x in enumerate(ids)]
    for k in range(0, len(events), 70):
        assert store.write(events[k:k + 70], window_seconds=60) == len(events[k:k + 70])
    assert store.write(events, window_seconds=60) == 0
    assert store.write(events[::7] + [_run_event("run:new", 999, rng)], window_seconds=60) == 1
    assert _ids_of(store) == sorted([*ids, "run:new"])
    assert store.count_ids("run:") == 200 + 1 and store.count_ids("t:") == 7
    # retention takes deleted events out of id_runs (and stems left without ids out of
    # id_stems) and out of the counts: they can come back, the others still cannot
    conn = store._conn()
    cut = sorted(e["ts"] for e in events)[len(events) // 2]
    while store.delete_before(cut, limit=50):
        pass
    kept = _ids_of(store)
    gone = sorted(set(ids) - set(kept))
    assert gone and store.count_ids("run:") == sum(x.startswith("run:") for x in kept)
    assert conn.execute("SELECT sum(n) FROM id_runs").fetchone()[0] == len(kept)
    stems = {r[0] for r in conn.execute("SELECT stem FROM id_stems")}
    assert stems == {_id_key(x)[0] for x in kept} - {None}
    again = store.write(events, window_seconds=60)
    want = sorted(set(ids) | ({"run:new"} & set(kept)))
    assert again == len(gone) and _ids_of(store) == want
    assert store.count_ids("run:") == sum(x.startswith("run:") for x in want)
    while store.delete_before(4e9, limit=100):
        pass
    assert conn.execute("SELECT (SELECT count(*) FROM id_runs) + (SELECT count(*) FROM id_stems)"
                        ).fetchone()[0] == 0
    store.close()


def test_count_ids_counts_nested_run_prefixes_and_any_other_prefix(tmp_path):
    rng = random.Random(7)
    store = SqliteStore(tmp_path / "s.db")
    ids = ["a:b:1", "a:b:2", "a:c:1", "a:1", "ab:1", "b-1", "a:b:c:d:e:1", "é:1", "a:x", "a:b:12",
           "a:b:x7y", "a:b:07", "a:b:0", "a:", "a", "10", "17", "a:b:" + "1" * 20, "z\U0010ffff:1"]
    store.write([_run_event(x, i, rng) for i, x in enumerate(ids)], window_seconds=60)
    want = {"a:": 12, "a:b:": 8, "a:c:": 1, "ab:": 1, "b:": 0, "a:b:c:": 1, "a:b:c:d:": 1,
            "a:b:c:d:e:": 1, "é:": 1, "a": 14, "a:b": 8, "b-": 1, "x": 0, "a:b:1": 3, "a:b:0": 2,
            "1": 2, "a:b:x": 1, "a:b:x7": 1, "z\U0010ffff:": 1, "z": 1}
    assert {p: store.count_ids(p) for p in want} == want
    store.close()


def test_a_batch_of_counting_ids_is_one_run_and_retention_inside_a_run_splits_it(tmp_path):
    """One row of ``id_runs`` for a batch whose ids count up (14.8 bytes an event before, as
    one row each); deleting events from the middle of a run leaves runs of exactly the ids
    still stored: those can be written again, the others are refused."""
    rng = random.Random(9)
    store = SqliteStore(tmp_path / "s.db")
    conn = store._conn()
    events = [_run_event(f"run:{i}", i, rng) for i in range(1000)]
    for e, k in zip(events, range(1000)):  # event times out of id order: retention cuts holes
        e["ts"] = 1.7e9 + (k * 7919) % 1000
    assert store.write(events[:500], window_seconds=60) == 500
    assert store.write(events[500:], window_seconds=60) == 500
    assert conn.execute("SELECT count(*), sum(n) FROM id_runs").fetchone() == (2, 1000)
    while store.delete_before(1.7e9 + 300, limit=37):
        pass
    kept = _ids_of(store)
    assert len(kept) == 700 and store.count_ids("run:") == 700
    runs = conn.execute("SELECT tail, n, seq FROM id_runs ORDER BY tail").fetchall()
    assert sum(n for _, n, _ in runs) == 700 and len(runs) > 2
    from smartlogs.store.base import EventQuery
    stored = {e["id"]: e["seq"] for e in store.search(EventQuery(limit=2000, total_limit=None)).events}
    for tail, n, seq in runs:  # each run: ids that are stored, at the seqs it says
        assert all(stored[f"run:{tail + k}"] == seq + k for k in range(n))
    assert store.write(events, window_seconds=60) == 300
    assert _ids_of(store) == sorted(e["id"] for e in events)
    assert store.write(events, window_seconds=60) == 0
    store.close()


def test_a_store_with_one_id_row_an_event_gets_runs_when_opened_resumably(tmp_path, monkeypatch):
    """A store made with ``event_ids`` (storage4's layout): opened, its rows become runs in
    batches (a crash after the first batch resumes), the table is dropped, and the same ids
    are found, counted, refused and deleted as before."""
    import sqlite3

    rng = random.Random(10)
    path = tmp_path / "s.db"
    events = [_run_event(x, i, rng) for i, x in enumerate(
        [*(f"a:{i}" for i in range(300)), *(f"b-{i}" for i in range(50)), "plain", "x0y"])]
    store = SqliteStore(path)
    assert store.write(events[:200], window_seconds=60) == 200
    assert store.write(events[200:], window_seconds=60) == len(events) - 200
    store.close()
    with sqlite3.connect(path) as c:  # back to one row an event, as storage4 wrote them
        c.execute("CREATE TABLE event_ids (stem INTEGER NOT NULL, tail NOT NULL, seq INTEGER "
                  "NOT NULL, PRIMARY KEY (stem, tail)) WITHOUT ROWID")
        for stem, tail, n, seq in c.execute("SELECT * FROM id_runs").fetchall():
            c.executemany("INSERT INTO event_ids VALUES (?, ?, ?)",
                          [(stem, tail + k if n > 1 or isinstance(tail, int) else tail, seq + k)
                           for k in range(n)])
        c.execute("DROP TABLE id_runs")
    assert sqlite3.connect(path).execute("SELECT count(*) FROM event_ids").fetchone()[0] == len(events)
    monkeypatch.setattr(SqliteStore, "_RUNS_BATCH", 100)
    real = SqliteStore._ids_to_runs
    calls = []

    def crash_after_one_batch(self, conn):
        real_immediate = sqlite_module.immediate
        n = [0]

        @contextlib.contextmanager
        def once(c):
            n[0] += 1
            if n[0] > 1:
                raise KeyboardInterrupt("crash")
            with real_immediate(c):
                yield
        monkeypatch.setattr(sqlite_module, "immediate", once)
        try:
            real(self, conn)
        finally:
            monkeypatch.setattr(sqlite_module, "immediate", real_immediate)
        calls.append(1)

    import contextlib

    import smartlogs.store.sqlite as sqlite_module
    monkeypatch.setattr(SqliteStore, "_ids_to_runs", crash_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        SqliteStore(path)
    with sqlite3.connect(path) as c:
        left = c.execute("SELECT count(*) FROM event_ids").fetchone()[0]
        assert left == len(events) - 100 and c.execute("SELECT sum(n) FROM id_runs").fetchone()[0] == 100
    monkeypatch.setattr(SqliteStore, "_ids_to_runs", real)
    store = SqliteStore(path)
    conn = store._conn()
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'event_ids'").fetchone()
    assert conn.execute("SELECT sum(n) FROM id_runs").fetchone()[0] == len(events)
    assert conn.execute("SELECT count(*) FROM id_runs").fetchone()[0] < 10
    assert store.count_ids("a:") == 300 and store.count_ids("b-") == 50
    assert _ids_of(store) == sorted(e["id"] for e in events)
    assert store.write(events, window_seconds=60) == 0
    while store.delete_before(4e9, limit=64):
        pass
    assert conn.execute("SELECT count(*) FROM id_runs").fetchone()[0] == 0
    assert store.write(events, window_seconds=60) == len(events)
    store.close()


# the events table as stores made it before event_ids (commit db63daa and earlier)
_UNIQUE_ID_EVENTS = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts REAL NOT NULL, received REAL NOT NULL,
    host TEXT, component TEXT, level TEXT, template_id TEXT NOT NULL, anomaly INTEGER NOT NULL,
    body BLOB NOT NULL, source TEXT
);
"""


def test_a_store_with_ids_in_a_unique_index_keeps_that_layout_and_answers_the_same(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:
        c.executescript(_UNIQUE_ID_EVENTS)
    rng = random.Random(8)
    ids = [f"old:{i}" for i in range(300)]
    events = [_run_event(x, i, rng) for i, x in enumerate(ids)]
    store = SqliteStore(path)
    assert store.write(events[:200], window_seconds=60) == 200
    store.close()
    store = SqliteStore(path)  # opened again: the same layout
    assert store.write(events, window_seconds=60) == 100
    conn = store._conn()
    assert conn.execute("SELECT count(*) FROM id_runs").fetchone()[0] == 0
    assert sorted(r[0] for r in conn.execute("SELECT id FROM events")) == sorted(ids)
    assert _ids_of(store) == sorted(ids) and store.count_ids("old:") == 300
    cut = sorted(e["ts"] for e in events)[100]
    while store.delete_before(cut, limit=64):
        pass
    kept = _ids_of(store)
    assert len(kept) < 300 and store.count_ids("old:") == len(kept)
    assert store.write(events, window_seconds=60) == 300 - len(kept)
    store.close()


# the windows table as stores made it before dimension codes (commit db63daa and earlier)
_NAMED_DIMS_WINDOWS = """
CREATE TABLE windows (
    start REAL NOT NULL, dim TEXT NOT NULL, key TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (start, dim, key)
) WITHOUT ROWID;
"""


@pytest.mark.parametrize("size", [60, 3600])
def test_windows_with_dimension_codes_or_names_give_the_same_stats(tmp_path, size):
    import sqlite3

    rng = random.Random(size)
    events = [_event(i, rng) for i in range(900)]
    for i, e in enumerate(events):
        e["received"] = 1_800_000_000.0 + (i * 37 % 900) * 1.3
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as c:
        c.executescript(_NAMED_DIMS_WINDOWS)
    stores = [SqliteStore(tmp_path / "new.db"), SqliteStore(old)]
    for st in stores:
        for k in range(0, 900, 300):
            st.write([dict(e) for e in events[k:k + 300]], window_seconds=size)
    new_dims = {r[0] for r in stores[0]._conn().execute("SELECT DISTINCT dim FROM windows")}
    old_dims = {r[0] for r in stores[1]._conn().execute("SELECT DISTINCT dim FROM windows")}
    assert new_dims <= set(_DIM_CODES.values()) and old_dims <= set(_DIM_CODES)
    assert all(0 <= c < 128 for c in new_dims)  # one byte each at most

    def stats(st):
        return [st.stats(since=since, until=until, windows=w, top=t, basis=b)
                for since, until in ((None, None), (0.0, 3600.0), (-4000.0, 1.8e9 + 600))
                for w, t in ((60, 10), (3, 2)) for b in ("event", "arrival")]

    assert stats(stores[0]) == stats(stores[1])
    for st in stores:  # a template merge and retention rewrite and uncount both kinds of rows
        st.merge_templates({"T2": "T1"})
    assert stats(stores[0]) == stats(stores[1])
    for st in stores:
        while st.delete_before(60.0, limit=100, window_seconds=size):
            pass
    assert stats(stores[0]) == stats(stores[1])
    # a store made before codes is opened again as it is (no rows rewritten)
    stores[1].close()
    stores[1] = SqliteStore(old)
    assert {r[0] for r in stores[1]._conn().execute("SELECT DISTINCT dim FROM windows")} <= set(_DIM_CODES)
    assert stats(stores[0]) == stats(stores[1])
    for st in stores:
        st.close()


@pytest.mark.parametrize("call", ["sync", "checkpointed", "merge_templates"])
def test_checkpoint_and_merge_writes_wait_in_the_writer_turn(tmp_path, call):
    """Issue 18: a shard's checkpoint (``sync``, ``checkpointed``) and template merges take
    the writers' turn (the lock file) as the batches do, and so start the moment the other
    shard's write ends; before, they waited in SQLite's busy handler, which polls with sleeps
    of up to 100 ms and kept missing the gaps between the other shard's batches (a shard's
    pipeline waited seconds for its checkpoint on a busy machine)."""
    import fcntl
    import threading

    store = SqliteStore(tmp_path / "db")
    other = open(tmp_path / "db-writer.lock", "a+")  # another shard, holding the turn
    fcntl.flock(other, fcntl.LOCK_EX)
    args = {"sync": (), "checkpointed": ({0: 1},), "merge_templates": ({"a": "b"},)}[call]
    done = threading.Event()
    t = threading.Thread(target=lambda: (getattr(store, call)(*args), done.set()))
    t.start()
    try:
        assert not done.wait(0.5), f"{call} did not wait for the writer turn"
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        other.close()
    assert done.wait(10)
    t.join(5)
    assert store.turn_waited >= 0.4
    store.close()
