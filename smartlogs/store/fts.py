"""The embedded store's full-text index: FTS5 with ``detail=none``, and what that needs.

``detail=none`` keeps, for each word, only the list of events (rowids) that hold it: no
positions, so ~1/3 of the bytes of ``detail=full`` (bench/RESULTS.md), but FTS5 refuses
phrases (``"session opened"``, and a bare token of several words, ``jk2_init``). A query is
therefore asked of the index in a *relaxed* form, which matches a superset of the events:
a phrase becomes the AND of its words, a negated phrase is left out. When the query holds a
phrase, the candidates are then checked against the stored text (``matcher``), with the
tokenizer's own rules (``tokens``): the results are those a positional index gives.
Bounded totals (10,000) keep that check affordable: a query reads at most ~10,000 candidates
plus its page.

Also in the index, *synthetic tokens*: one per event for its template id (``template_token``):
``~t`` + the hex of the id's key in ``names``; one for its host (``~h`` + the host's key) and,
for an event without a host, one for its source (``~s`` + the key of the source's name)
(``host_token``, ``source_token``). ``~`` is a token character for this index only
(``tokenchars '~'``) and is replaced by a space in every indexed message (it separates words
there anyway, so a message's words are unchanged): no message and no query (whose words are
letters and digits, ``search_words``) can make a token starting with ``~``. A template filter
is then a doclist read (a rare template is quick whatever the store's size), and so is a
host or source filter: these tokens replace an index on (host, time) (19 bytes an event at 1M,
where the tokens take ~1-2).

Prefixes (``auth*``) are expanded to the words the index holds (``fts5vocab``) and asked as
an OR of those words: FTS5 merges a prefix's words over the whole index for every query,
where an OR of words can be read for a range of rowids (the store's walk plan).

Pure helpers plus ``convert``, the once-only rebuild of an index written with ``detail=full``.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from functools import lru_cache

from smartlogs.store import query as qsyntax

__all__ = ["SCHEMA", "TAG", "indexed_text", "template_token", "host_token", "source_token",
           "tokens", "term_tokens",
           "relaxed", "exact", "matcher", "convert", "is_current"]

TAG = "~"  # starts every synthetic token; a separator in indexed messages
_TOKENIZE = "unicode61 tokenchars '~'"
SCHEMA = ("CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING fts5(message, content='', "
          f"tokenize=\"{_TOKENIZE}\", detail='none', columnsize=0)")
MAX_EXPANSION = 256  # words a prefix may expand to (beyond: asked as a prefix)


def template_token(key) -> str | None:
    """The synthetic token of a template id stored as ``key`` (its key in ``names``); None
    for an id stored as text (rows written before names: no token, filtered by a scan)."""
    if isinstance(key, (bytes, bytearray)):
        return f"{TAG}t{bytes(key).hex()}"
    return None


def host_token(key) -> str | None:
    """The synthetic token of the events whose host is stored as ``key`` (None: a host stored
    as text, in rows written before names)."""
    if isinstance(key, (bytes, bytearray)):
        return f"{TAG}h{bytes(key).hex()}"
    return None


def source_token(key) -> str | None:
    """The synthetic token of the hostless events whose ``source`` column names ``key``."""
    if isinstance(key, (bytes, bytearray)):
        return f"{TAG}s{bytes(key).hex()}"
    return None


def indexed_text(message: str, template_key, host_key=None, source_key=None) -> str:
    """What the index holds for an event: its message (``~`` made a space), its template
    token, and its host's (or, without a host, its source's) token. A delete from the
    contentless index must give the same text."""
    text = message.replace(TAG, " ") if TAG in message else message
    toks = [t for t in (template_token(template_key), host_token(host_key),
                        source_token(source_key)) if t is not None]
    return f"{text} {' '.join(toks)}" if toks else text


# -- the tokenizer's rules (unicode61, remove_diacritics=1), for checking phrases ----------
_ASCII_WORD = re.compile(r"[0-9A-Za-z]+")
_SEP, _ALNUM, _DIACRITIC = 0, 1, 2
_probe_lock = threading.Lock()
_probe_conn: sqlite3.Connection | None = None


@lru_cache(maxsize=1 << 16)
def _char(ch: str) -> tuple[int, str]:
    """How unicode61 treats a non-ASCII character: (kind, its folded form), asked of SQLite
    itself (an in-memory FTS5 table with positions; ``fts5vocab`` lists its tokens in order),
    so the rules are exactly the tokenizer's, whatever the SQLite version: a separator; a
    letter/digit (starts or continues a word); a diacritic (continues a word only)."""
    global _probe_conn
    with _probe_lock:
        if _probe_conn is None:
            c = sqlite3.connect(":memory:", check_same_thread=False)
            c.execute(f"CREATE VIRTUAL TABLE p USING fts5(m, tokenize=\"{_TOKENIZE}\")")
            c.execute("CREATE VIRTUAL TABLE pv USING fts5vocab(p, 'instance')")
            _probe_conn = c
        c = _probe_conn
        c.execute("DELETE FROM p")
        c.execute("INSERT INTO p (rowid, m) VALUES (1, ?)", (f"a{ch}b {ch}b",))
        got = [t for (t,) in c.execute("SELECT term FROM pv ORDER BY offset")]
    if len(got) != 2:
        return _SEP, ""
    fold = got[0][1:-1]
    return (_ALNUM if got[1] == fold + "b" and fold else _DIACRITIC), fold


def tokens(text: str) -> list[str]:
    """The words FTS5's unicode61 tokenizer makes of ``text`` (as indexed: ``~`` separates),
    folded as it folds them (lower case, diacritics removed), in order."""
    if text.isascii():
        return _ASCII_WORD.findall(text.lower())
    out: list[str] = []
    cur: list[str] = []
    inside = False
    for ch in text:
        if ch < "\x80":
            if ch.isalnum():
                cur.append(ch.lower())
                inside = True
                continue
            kind = _SEP
        else:
            kind, fold = _char(ch)
            if kind == _ALNUM or (kind == _DIACRITIC and inside):
                cur.append(fold)
                inside = True
                continue
        if inside:
            out.append("".join(cur))
            cur, inside = [], False
    if inside:
        out.append("".join(cur))
    return out


def term_tokens(term: qsyntax.Term) -> tuple[str, ...]:
    """The tokens FTS5 makes of a query term (``"w1 w2"``): a term is a phrase when it has
    several."""
    return tuple(tokens(" ".join(term.words)))


def _quote(tok: str) -> str:
    return '"' + tok.replace('"', '""') + '"'


def exact(node) -> bool:
    """Whether the index alone answers ``node`` (no phrase to check against the text)."""
    return all(len(term_tokens(t)) <= 1 for t in qsyntax.terms_of(node))


def relaxed(node, expand=None) -> str | None:
    """The ``detail=none`` MATCH expression of a superset of ``node``'s matches (exactly its
    matches when ``exact(node)``), or None when FTS5 cannot say it (a negation with nothing
    positive beside it). ``expand(prefix)``: the words of a prefix (None: too many)."""
    if isinstance(node, qsyntax.Term):
        toks = term_tokens(node)
        if not toks:
            return '""'  # matches nothing, as the quoted empty phrase always did
        if len(toks) == 1 and node.prefix and expand is not None:
            words = expand(toks[0])
            if words is not None:
                return "(" + " OR ".join(map(_quote, words)) + ")" if words else _quote(toks[0]) + "*"
        quoted = [_quote(t) for t in toks]
        if node.prefix:
            quoted[-1] += "*"
        return quoted[0] if len(quoted) == 1 else "(" + " AND ".join(quoted) + ")"
    if isinstance(node, qsyntax.Not):
        return None
    if isinstance(node, qsyntax.Or):
        parts = [relaxed(c, expand) for c in node.children]
        return None if None in parts else "(" + " OR ".join(parts) + ")"
    pos = [relaxed(c, expand) for c in node.children if not isinstance(c, qsyntax.Not)]
    if not pos or None in pos:
        return None
    expr = "(" + " AND ".join(pos) + ")"
    for c in node.children:
        if isinstance(c, qsyntax.Not) and exact(c.child):
            n = relaxed(c.child, expand)
            if n is not None:
                expr = f"({expr} NOT {n})"
        # a negated phrase (or a negation FTS5 cannot say) is left out: still a superset
    return expr


def matcher(node):
    """A test of a message's ``tokens`` list against ``node``, exactly as a positional index
    answers it (phrases: the words next to each other, in order; a prefix on the last)."""
    if isinstance(node, qsyntax.Term):
        toks = term_tokens(node)
        n = len(toks)
        if n == 0:
            return lambda words: False
        first, last, prefix = toks[0], toks[-1], node.prefix
        if n == 1:
            if prefix:
                return lambda words: any(w.startswith(first) for w in words)
            return lambda words: first in words
        mid = list(toks[:-1])

        def phrase(words: list[str]) -> bool:
            for i in range(len(words) - n + 1):
                if words[i] == first and words[i:i + n - 1] == mid and (
                        words[i + n - 1].startswith(last) if prefix else words[i + n - 1] == last):
                    return True
            return False
        return phrase
    if isinstance(node, qsyntax.Not):
        inner = matcher(node.child)
        return lambda words: not inner(words)
    parts = [matcher(c) for c in node.children]
    if isinstance(node, qsyntax.And):
        return lambda words: all(p(words) for p in parts)
    return lambda words: any(p(words) for p in parts)


# -- the index written with positions, rebuilt once -------------------------------------------
def is_current(conn: sqlite3.Connection) -> bool:
    """Whether ``events_fts`` is absent or of this layout (``detail=none``, template tokens,
    host and source tokens: ``meta`` says ``fts_sources``, set when the index was made for an
    empty store or rebuilt)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events_fts'").fetchone()
    if row is None:
        return True
    return "detail='none'" in row[0] and conn.execute(
        "SELECT 1 FROM meta WHERE key = 'fts_sources'").fetchone() is not None


def convert(conn: sqlite3.Connection, indexed, batch: int = 20_000, log=None) -> int:
    """Rebuild an ``events_fts`` written before this layout (``detail=full``, no template
    tokens, or no host and source tokens) from the stored events, once: into ``events_fts_new`` in batches of ``batch``
    events by seq (a transaction each, the progress in ``meta``: a store stopped midway
    resumes where it was; several processes opening it share the work), then the old index
    is dropped and the new one takes its name. ``indexed(conn, rows)``: the indexed texts
    (``indexed_text``) of (seq, template_id, host, source, body) rows. Returns the events
    indexed."""
    done = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if is_current(conn):
                conn.execute("COMMIT")
                return done
            conn.execute(SCHEMA.format(name="events_fts_new"))
            row = conn.execute("SELECT value FROM meta WHERE key = 'fts_rebuilt_upto'").fetchone()
            upto = int(row[0]) if row else 0
            rows = conn.execute("SELECT seq, template_id, host, source, body FROM events "
                                "WHERE seq > ? ORDER BY seq LIMIT ?", (upto, batch)).fetchall()
            if rows:
                conn.executemany("INSERT INTO events_fts_new (rowid, message) VALUES (?, ?)",
                                 [(r[0], t) for r, t in zip(rows, indexed(conn, rows))])
                conn.execute("INSERT INTO meta (key, value) VALUES ('fts_rebuilt_upto', ?) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                             (str(rows[-1][0]),))
                done += len(rows)
                if log is not None:
                    log.info("full-text index: %d events rebuilt (up to seq %d)", done, rows[-1][0])
            else:
                conn.execute("DROP TABLE events_fts")
                conn.execute("ALTER TABLE events_fts_new RENAME TO events_fts")
                conn.execute("DELETE FROM meta WHERE key = 'fts_rebuilt_upto'")
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('fts_sources', 1)")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
