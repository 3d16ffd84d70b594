"""The embedded store's full-text index without positions (``detail=none``,
smartlogs/store/fts.py): every query answers as a positional index (``detail=full``, the
layout before) answers it, whatever the plan; the template filter reads its synthetic token;
prefixes are expanded to words; an index written with positions is rebuilt once, resumably."""

from __future__ import annotations

import random
import sqlite3

import pytest

from smartlogs.store import SqliteStore
from smartlogs.store import fts
from smartlogs.store import query as qsyntax
from smartlogs.store.base import EventQuery

# messages where a positional index and a naive reading disagree: diacritics, case, letters
# outside ASCII, combining marks, a word split by punctuation, the index's own tag character
_WORDS = ["session", "opened", "closed", "for", "user", "root", "Café", "CAFE", "crème", "naïve",
          "e\u0301cole", "École", "İstanbul", "Σίσυφος", "日本語", "テスト", "jk2_init",
          "rhost=10.0.0.1", "a~b", "~t01", "auth", "authentication", "authorize", "x\u00b2",
          "ﬁle", "\u00aa", "\ue000pua", "😀", "Straße", "STRASSE", "ǅemal", "opened],[session"]


def _message(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 7)))


def _event(i: int, rng: random.Random, message: str | None = None) -> dict:
    tid = f"T{rng.choice([1, 1, 1, 1, 2, 3])}" if i % 97 else "T9"
    ts = 1_700_000_000.0 + i * 1.5 + rng.choice([0.0, -400.0])
    return {"id": f"e{i}", "ts": ts, "timestamp": "x", "received": 1_800_000_000.0 + i,
            "source": "h", "receiver": "test", "host": "h", "component": "c", "pid": None,
            "level": None, "message": message or _message(rng), "raw": None, "template_id": tid,
            "template": f"text {tid}", "params": [], "score": 0.5, "anomaly": False,
            "reason": None, "warming_up": False, "parse_ok": True, "format": "syslog",
            "truncated": False, "fields": {}}


_QUERIES = ['"session opened"', '"opened session"', '"cafe creme"', '"CAFÉ crème"', "cafe",
            "ecole", '"naive file"', "jk2_init", "rhost=10.0.0.1", '"for user" -root',
            '-"session opened"', '"session opened" OR closed', 'auth*', 'aut*', 'caf*', 'ec*',
            "istanbul", "σίσυφος", "日本語", "strasse", "a~b", "t01", "~t01", "pua",
            '(session OR closed) -"for user"', 'session -"opened for"', "x2", "\u00aa",
            "dzemal", '"root user"']


def _reference(messages: dict[int, str]):
    """A positional index of the same messages (the layout before), and how it answers."""
    ref = sqlite3.connect(":memory:")
    ref.execute("CREATE VIRTUAL TABLE r USING fts5(m, tokenize='unicode61', detail='full')")
    ref.executemany("INSERT INTO r (rowid, m) VALUES (?, ?)", messages.items())
    every = set(messages)

    def answer(node) -> set:
        expr = qsyntax.fts5(node)
        if expr is not None:
            return {r for (r,) in ref.execute("SELECT rowid FROM r WHERE r MATCH ?", (expr,))}
        if isinstance(node, qsyntax.Not):
            return every - answer(node.child)
        parts = [answer(c) for c in node.children]
        return set.intersection(*parts) if isinstance(node, qsyntax.And) else set.union(*parts)
    return ref, answer


def test_the_tokenizer_rules_are_sqlites_own():
    """``fts.tokens`` (which checks phrases against the text) makes the tokens FTS5 makes, for
    characters of many scripts, marks, symbols, private use and emoji, in and out of words."""
    ref = sqlite3.connect(":memory:")
    ref.execute("CREATE VIRTUAL TABLE r USING fts5(m, tokenize='unicode61', detail='full')")
    ref.execute("CREATE VIRTUAL TABLE rv USING fts5vocab(r, 'instance')")
    rng = random.Random(7)
    ranges = [(0x20, 0x7f), (0xa0, 0x250), (0x300, 0x370), (0x370, 0x530), (0x1e00, 0x1f00),
              (0x2000, 0x2100), (0x3040, 0x3100), (0xe000, 0xe010), (0xfb00, 0xfb10),
              (0x1f600, 0x1f610)]
    chars = [chr(c) for a, b in ranges for c in range(a, b)]
    for n in range(300):
        text = "".join(rng.choice(chars + [" "] * 20 + list("abcXYZ09")) for _ in range(40))
        text = text.replace("~", " ")  # (an indexed message never holds the tag character)
        ref.execute("DELETE FROM r")
        ref.execute("INSERT INTO r (rowid, m) VALUES (1, ?)", (text,))
        want = [t for (t,) in ref.execute("SELECT term FROM rv ORDER BY offset")]
        assert fts.tokens(text) == want, text


@pytest.mark.parametrize("plan", ["index", "set", "walk"])
def test_every_query_answers_as_a_positional_index(tmp_path, monkeypatch, plan):
    """Phrases (checked against the text), negated phrases, prefixes (expanded), diacritics:
    the same events, totals and pages as a ``detail=full`` index gives, whichever plan."""
    import smartlogs.store.sqlite as mod

    monkeypatch.setattr(mod, "_DENSE", {"index": 10**9, "set": 0, "walk": 0}[plan])
    monkeypatch.setattr(mod, "_WALK", plan == "walk")
    monkeypatch.setattr(mod, "_WALK_HITS", 1)
    monkeypatch.setattr(mod, "_WALK_FIRST", 16)
    rng = random.Random(3)
    events = [_event(i, rng) for i in range(1500)]
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, len(events), 250):
        store.write([dict(e) for e in events[k:k + 250]], window_seconds=60)
    # (an event's id is in its body, not a column: ask the store)
    seq_of = {e["id"]: e["seq"] for e in store.search(EventQuery(limit=-1, total_limit=None)).events}
    order = sorted(events, key=lambda e: (-e["ts"], -seq_of[e["id"]]))
    _, answer = _reference({seq_of[e["id"]]: e["message"] for e in events})
    for q in _QUERIES:
        want_seqs = answer(qsyntax.parse_query(q))
        want = [e["id"] for e in order if seq_of[e["id"]] in want_seqs]
        got = store.search(EventQuery(q=q, limit=-1, total_limit=None))
        assert [e["id"] for e in got.events] == want, q
        assert got.total == len(want), q
        # pages of 37 with bounded totals: the same events, the bound where it applies
        seen, after = [], None
        while True:
            page = store.search(EventQuery(q=q, limit=37, page_after=after, total_limit=100))
            assert (page.total, page.total_relation) == ((len(want), "eq") if len(want) <= 100
                                                         else (100, "gte")), q
            seen += [e["id"] for e in page.events]
            if not page.more:
                break
            last = page.events[-1]
            after = (last["ts"], last["seq"])
        assert seen == want, q
    store.close()


def test_the_template_filter_reads_its_token_and_follows_merges_and_retention(tmp_path):
    """A template filter is its synthetic token in the index (a rare one does not scan); a
    merge moves the events' tokens to the canonical id; retention deletes them; no message
    or query can make a token (``~t01`` in a message is the word ``t01``)."""
    rng = random.Random(5)
    events = [_event(i, rng) for i in range(2000)]
    events[10]["message"] = "~t01 ~t00 tag text"
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, 2000, 500):
        store.write([dict(e) for e in events[k:k + 500]], window_seconds=60)
    conn = store._conn()

    def ids(**kw):
        r = store.search(EventQuery(limit=-1, total_limit=None, **kw))
        assert r.total == len(r.events)
        return sorted(e["id"] for e in r.events)

    def want(tids, left=events):
        return sorted(e["id"] for e in left if e["template_id"] in tids)

    for tid in ("T1", "T2", "T9"):
        assert ids(template=tid) == want({tid})
    assert ids(template="T9", q="session") == sorted(
        e["id"] for e in events if e["template_id"] == "T9" and "session" in fts.tokens(e["message"]))
    # the rare template is read from the index: its list, not the events
    key = conn.execute("SELECT key FROM names WHERE text = 'T9'").fetchone()[0]
    tok = fts.template_token(key)
    assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH ?",
                        (f'"{tok}"',)).fetchone()[0] == len(want({"T9"}))
    for q in ("t01", "t00", tok):  # the word, never the token
        assert ids(q=q) == sorted(e["id"] for e in events
                                  if q.lstrip("~") in fts.tokens(e["message"])), q
    assert ids(template="T1") == want({"T1"})  # e10 (T1) once, whatever its message says
    # a merge: T3's events are T2's now, in the index too
    store.merge_templates({"T3": "T2"})
    assert ids(template="T2") == want({"T2", "T3"}) and ids(template="T3") == []
    # retention: the deleted events leave the index (its counts are those of the events left)
    cut = events[1200]["ts"]
    while store.delete_before(cut, limit=300):
        pass
    left = [e for e in events if e["ts"] >= cut]
    assert ids(template="T2") == want({"T2", "T3"}, left)
    assert ids(template="T9") == want({"T9"}, left)
    assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH ?",
                        (f'"{tok}"',)).fetchone()[0] == len(want({"T9"}, left))
    store.close()


def test_a_prefix_with_too_many_words_is_asked_as_a_prefix(tmp_path, monkeypatch):
    monkeypatch.setattr(fts, "MAX_EXPANSION", 2)
    rng = random.Random(9)
    events = [_event(i, rng) for i in range(400)]
    store = SqliteStore(tmp_path / "s.db")
    store.write(events, window_seconds=60)
    for q in ("auth*", "authe*"):
        want = sorted(e["id"] for e in events
                      if any(t.startswith(q[:-1]) for t in fts.tokens(e["message"])))
        got = store.search(EventQuery(q=q, limit=-1, total_limit=None))
        assert sorted(e["id"] for e in got.events) == want and got.total == len(want)
    store.close()


def _to_positional_index(path) -> None:
    """Make a store's index what it was before this layout: positions, no template tokens."""
    store = SqliteStore(path)
    conn = store._conn()
    rows = conn.execute("SELECT seq, body FROM events ORDER BY seq").fetchall()
    messages = [b[3] for b in store._decoded(conn, rows)]
    conn.execute("DROP TABLE events_fts")
    conn.execute("CREATE VIRTUAL TABLE events_fts USING fts5(message, content='', "
                 "tokenize='unicode61', detail='full', columnsize=0)")
    conn.executemany("INSERT INTO events_fts (rowid, message) VALUES (?, ?)",
                     [(r[0], m) for r, m in zip(rows, messages)])
    store.close()


def test_an_index_with_positions_is_rebuilt_once_and_resumes_after_a_crash(tmp_path, monkeypatch):
    rng = random.Random(11)
    events = [_event(i, rng) for i in range(1000)]
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    for k in range(0, 1000, 250):
        store.write([dict(e) for e in events[k:k + 250]], window_seconds=60)
    before = {q: [e["id"] for e in store.search(EventQuery(q=q, limit=-1)).events]
              for q in _QUERIES}
    before_t = [e["id"] for e in store.search(EventQuery(template="T9", limit=-1)).events]
    store.close()
    _to_positional_index(path)
    conn = sqlite3.connect(path)
    assert not fts.is_current(conn)
    # stopped after its first batch (a crash): the work done stays, the old index answers
    calls = []
    real = fts.convert

    def crashing(conn, messages, batch=20_000, log=None):
        def once(c, rows):
            if calls:
                raise KeyboardInterrupt
            calls.append(len(rows))
            return messages(c, rows)
        return real(conn, once, batch=300, log=log)

    monkeypatch.setattr(fts, "convert", crashing)
    with pytest.raises(KeyboardInterrupt):
        SqliteStore(path)
    assert not fts.is_current(conn)
    assert conn.execute("SELECT value FROM meta WHERE key = 'fts_rebuilt_upto'").fetchone()
    # opened again: it resumes from there (the first batch is not read twice), then swaps
    monkeypatch.setattr(fts, "convert", lambda c, m, batch=20_000, log=None: real(
        c, lambda c2, rows: (calls.append(rows[0][0]), m(c2, rows))[1], batch=300, log=log))
    store = SqliteStore(path)
    assert calls[1] == 301 and fts.is_current(store._conn())
    assert not store._conn().execute("SELECT 1 FROM meta WHERE key = 'fts_rebuilt_upto'").fetchone()
    for q in _QUERIES:
        assert [e["id"] for e in store.search(EventQuery(q=q, limit=-1)).events] == before[q], q
    assert [e["id"] for e in store.search(EventQuery(template="T9", limit=-1)).events] == before_t
    store.close()
    conn.close()


# -- hosts and sources as synthetic tokens, instead of an index on (host, time) --------------
def _hosted(i: int, rng: random.Random) -> dict:
    """Events of a common host, a rare host (< 1 in 100), hostless events of a common and a
    rare source, and hostless events whose source is named as a host is ("a")."""
    e = _event(i, rng)
    kind = i % 200
    host, source = (("r", "r") if kind == 0 else (None, "rare.log") if kind == 1 else
                    (None, "a") if kind == 2 else (None, "app.log") if kind < 60 else ("a", "a"))
    e.update(host=host, source=source, ts=1_700_000_000.0 + rng.choice([i * 1.5, 5.0]))
    return e


def _by_filter(events, host=None, source=None, left=None):
    keep = [e for e in (left or events)
            if (host is None or e["host"] == host)
            and (source is None or (e["host"] or e["source"]) == source)]
    return [e["id"] for e in sorted(keep, key=lambda e: (e["ts"], e["seq"]), reverse=True)]


def test_hosts_and_sources_are_tokens_in_the_index_and_answer_as_their_columns(tmp_path):
    """No (host, time) index: a host filter reads its token ``~h<key>`` (a rare host drives
    from its list, a common one walks the time index), a source filter ``~h<key> OR
    ~s<key>``; pages, cursors and totals (bounded and exact) are those of the columns, also
    after a template merge (the rows are indexed again with both tokens) and retention."""
    rng = random.Random(12)
    events = [_hosted(i, rng) for i in range(4000)]
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, 4000, 700):
        store.write([dict(e) for e in events[k:k + 700]], window_seconds=60)
    conn = store._conn()
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events_host_ts'").fetchone()
    seq = {e["id"]: e["seq"] for e in store.search(EventQuery(limit=-1, total_limit=None)).events}
    for e in events:
        e["seq"] = seq[e["id"]]

    def check(left=None, **kw):
        want = _by_filter(events, left=left, **kw)
        r = store.search(EventQuery(limit=-1, total_limit=None, **kw))
        assert [e["id"] for e in r.events] == want and r.total == len(want), kw
        bounded = store.search(EventQuery(limit=5, total_limit=100, **kw))
        assert bounded.total == min(len(want), 100), kw
        assert bounded.total_relation == ("gte" if len(want) > 100 else "eq")
        got, after = [], None  # page by page, with cursors
        while True:
            q = EventQuery(limit=9, page_after=after, **kw)
            r = store.search(q)
            got += [e["id"] for e in r.events]
            if not r.more:
                break
            after = (r.events[-1]["ts"], r.events[-1]["seq"])
        assert got == want, kw
        return len(want)

    assert check(host="a") > 1000 and 0 < check(host="r") < 40
    assert check(source="a") == check(host="a") + 20  # its host's and the hostless ones
    assert 0 < check(source="rare.log") < 40 and check(source="app.log") > 1000
    assert check(host="rare.log") == 0 and check(host="nowhere") == 0
    assert check(source="r") == check(host="r")
    key = conn.execute("SELECT key FROM names WHERE text = 'r'").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH ?",
                        (f'"{fts.host_token(key)}"',)).fetchone()[0] == check(host="r")
    # with words and time ranges too
    r = store.search(EventQuery(limit=-1, total_limit=None, host="r", q="session"))
    assert sorted(e["id"] for e in r.events) == sorted(
        e["id"] for e in events if e["host"] == "r" and "session" in fts.tokens(e["message"]))
    r = store.search(EventQuery(limit=-1, total_limit=None, host="a", since=1_700_000_100.0,
                                until=1_700_000_400.0))
    assert sorted(e["id"] for e in r.events) == sorted(
        e["id"] for e in events if e["host"] == "a" and 1_700_000_100.0 <= e["ts"] < 1_700_000_400.0)
    store.merge_templates({"T3": "T2"})  # re-indexed with their host and source tokens
    for e in events:
        e["template_id"] = "T2" if e["template_id"] == "T3" else e["template_id"]
    check(host="r"), check(source="rare.log"), check(source="a")
    cut = sorted(e["ts"] for e in events)[2500]
    while store.delete_before(cut, limit=333):
        pass
    left = [e for e in events if e["ts"] >= cut]
    for kw in ({"host": "a"}, {"host": "r"}, {"source": "a"}, {"source": "rare.log"},
               {"source": "app.log"}):
        check(left=left, **kw)
    assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH ?",
                        (f'"{fts.host_token(key)}"',)).fetchone()[0] == sum(
        e["host"] == "r" for e in left)
    store.close()


def test_an_index_without_host_tokens_is_rebuilt_with_them_and_the_host_index_dropped(tmp_path):
    """A store of the layout before (an index with template tokens only, and the (host,
    time) index): opened, the index is rebuilt with host and source tokens (the same
    resumable ``fts.convert``), the (host, time) index dropped, and every answer is the same."""
    rng = random.Random(13)
    events = [_hosted(i, rng) for i in range(1500)]
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    store.write([dict(e) for e in events], window_seconds=60)
    kws = [{"host": "a"}, {"host": "r"}, {"source": "a"}, {"source": "rare.log"},
           {"q": "session", "host": "r"}, {"q": '"session opened"'}, {"template": "T9"}]
    before = [[e["id"] for e in store.search(EventQuery(limit=-1, **kw)).events] for kw in kws]
    stored = store.search(EventQuery(limit=-1, total_limit=None)).events
    store.close()
    with sqlite3.connect(path) as c:  # as storage3/storage4 left it
        keys = dict(c.execute("SELECT text, key FROM names"))
        c.execute("DROP TABLE events_fts")
        c.execute(fts.SCHEMA.format(name="events_fts"))
        c.executemany("INSERT INTO events_fts (rowid, message) VALUES (?, ?)", [
            (e["seq"], fts.indexed_text(e["message"], keys[e["template_id"]])) for e in stored])
        c.execute("DELETE FROM meta WHERE key = 'fts_sources'")
        c.execute("CREATE INDEX events_host_ts ON events(host, ts)")
        assert not fts.is_current(c)
    store = SqliteStore(path)
    conn = store._conn()
    assert fts.is_current(conn)
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events_host_ts'").fetchone()
    assert [[e["id"] for e in store.search(EventQuery(limit=-1, **kw)).events]
            for kw in kws] == before
    assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH ?", (
        f'"{fts.host_token(keys["a"])}" OR "{fts.source_token(keys["a"])}"',)).fetchone()[0] == len(before[2])
    while store.delete_before(4e9, limit=500):  # retention gives the rows' texts back exactly
        pass
    conn.execute("INSERT INTO events_fts (events_fts) VALUES ('optimize')")
    conn.execute("CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, events_fts, 'row')")
    assert conn.execute("SELECT count(*) FROM temp.v").fetchone()[0] == 0  # no word left
    store.close()


def test_words_in_a_short_time_range_read_the_range_not_every_match(tmp_path, monkeypatch):
    """A time range holding fewer events than the words match: the range drives (each of its
    events probes the index), so the work is the range's, not every match's: bounded in
    SQLite steps (the index driving read all 20,000 matches: ~3,300 hundreds of steps, ~500 now). Same rows and
    total either way (the wide range: the index drives)."""
    rng = random.Random(14)
    events = [_event(i, rng, message=f"common word {rng.choice(['alpha', 'beta'])}")
              for i in range(20_000)]
    for i, e in enumerate(events):
        e["ts"] = 1_700_000_000.0 + i
    store = SqliteStore(tmp_path / "s.db")
    for k in range(0, len(events), 2000):
        store.write([dict(e) for e in events[k:k + 2000]], window_seconds=60)
    steps = [0]

    def counted(self, conn, fn):
        def tick():
            steps[0] += 1
            return 0
        conn.set_progress_handler(tick, 100)
        try:
            return fn()
        finally:
            conn.set_progress_handler(None, 0)

    monkeypatch.setattr(SqliteStore, "_budgeted", counted)
    lo = 1_700_000_000.0 + 12_000
    for q, since, until, n in (("common", lo, lo + 60, 60), ("alpha", lo, lo + 60, None),
                               ("common", lo - 9_000, lo + 6_000, 15_000)):
        steps[0] = 0
        r = store.search(EventQuery(q=q, since=since, until=until, limit=10, total_limit=None))
        want = [e for e in events if since <= e["ts"] < until and q in e["message"].split()]
        assert r.total == len(want) and (n is None or r.total == n)
        assert [e["id"] for e in r.events] == [e["id"] for e in want[::-1][:10]]
        if until - since < 100:
            assert steps[0] < 1500, (q, steps[0])
    store.close()
