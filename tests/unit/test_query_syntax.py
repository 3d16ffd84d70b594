"""The search language of q (smartlogs/store/query.py): what it accepts, what it refuses and
where, and that the SQLite store's translation means what a plain evaluation of the tree means
(the Elasticsearch translation is compared with SQLite on the real engine in
tests/integration/test_elasticsearch_store.py)."""

from __future__ import annotations

import random

import pytest

from tests.ci import need_module

hypothesis = need_module("hypothesis")  # skips locally when missing; fails in CI

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from smartlogs.store.base import EventQuery, search_words  # noqa: E402
from smartlogs.store.query import (MAX_DEPTH, MAX_TERMS, And, Not, Or,  # noqa: E402
                                   QueryError, QuerySyntaxError, QueryTooComplex, Term,
                                   parse_query)


def test_the_syntax_people_know():
    t = lambda *w, prefix=False: Term(tuple(w), prefix)  # noqa: E731
    assert parse_query("auth failure") == And((t("auth"), t("failure")))
    assert parse_query("auth AND failure") == And((t("auth"), t("failure")))
    assert parse_query('"Session Opened"') == t("session", "opened")
    assert parse_query("auth*") == t("auth", prefix=True)
    assert parse_query("a b OR c") == Or((And((t("a"), t("b"))), t("c")))
    assert parse_query("-cron") == parse_query("NOT cron") == Not(t("cron"))
    assert parse_query("(sshd OR su) -cron") == And((Or((t("sshd"), t("su"))), Not(t("cron"))))
    assert parse_query("rhost=218.188.2.4") == t("rhost", "218", "188", "2", "4")
    assert parse_query("a or b") == And((t("a"), t("or"), t("b")))  # operators are upper case
    assert parse_query("!!! ***") is None and parse_query('""') is None


def test_repeats_count_once():
    assert parse_query(" ".join(["a"] * 1000)) == Term(("a",))
    assert parse_query("a A a OR a") == Term(("a",))
    assert parse_query("(a b) (b a) a") == And((Term(("a",)), Term(("b",))))


@pytest.mark.parametrize("q, pos", [('x "a b', 3), ("(a", 1), ("a)", 2), ("OR a", 1), ("a OR", 3),
                                    ("a AND", 3), ("NOT", 1), ("a - b", None), ("x*y*", 1)])
def test_refusals_say_where(q, pos):
    if pos is None:
        assert parse_query(q) is not None  # "-" alone is punctuation, ignored
        return
    with pytest.raises(QuerySyntaxError) as err:
        parse_query(q)
    assert err.value.position == pos and f"character {pos}" in str(err.value)


def test_limits():
    with pytest.raises(QueryTooComplex, match=f"at most {MAX_TERMS}"):
        parse_query(" ".join(f"w{i}" for i in range(MAX_TERMS + 1)))
    assert parse_query(" ".join(f"w{i}" for i in range(MAX_TERMS))) is not None
    with pytest.raises(QueryTooComplex, match="nests deeper"):
        parse_query("(" * (MAX_DEPTH + 2) + "a" + ")" * (MAX_DEPTH + 2))
    with pytest.raises(QueryTooComplex):
        parse_query("-" * 50 + "a")


# -- the SQLite translation means what the tree means ---------------------------------------
WORDS = ["alpha", "beta", "gamma", "alps", "be", "delta"]


def _holds(node, words: list[str]) -> bool:
    """A plain evaluation of the tree over a message's words (the reference)."""
    if isinstance(node, Term):
        n = len(node.words)
        for i in range(len(words) - n + 1):
            window = words[i:i + n]
            if node.prefix and window[0].startswith(node.words[0]):
                return True
            if not node.prefix and tuple(window) == node.words:
                return True
        return False
    if isinstance(node, Not):
        return not _holds(node.child, words)
    if isinstance(node, And):
        return all(_holds(c, words) for c in node.children)
    return any(_holds(c, words) for c in node.children)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from smartlogs.store import SqliteStore

    rng = random.Random(11)
    messages = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))) + rng.choice(["", ".", "!"])
                for _ in range(300)]
    store = SqliteStore(tmp_path_factory.mktemp("q") / "q.db")
    store.write([{"id": f"m{i}", "ts": float(i), "timestamp": "x", "received": 1.0, "source": "t",
                  "host": None, "component": None, "pid": None, "level": None, "message": m,
                  "raw": None, "template_id": "T1", "template": "t", "params": [], "score": 0.0,
                  "anomaly": False, "reason": None, "warming_up": False, "parse_ok": True,
                  "format": None, "truncated": False, "fields": {}}
                 for i, m in enumerate(messages)], window_seconds=60)
    yield store, messages
    store.close()


_token = st.one_of(
    st.sampled_from(WORDS + ["AL*", "b*", "be*", "zeta"]),
    st.builds(lambda a, b: f'"{a} {b}"', st.sampled_from(WORDS), st.sampled_from(WORDS)),
    st.sampled_from(["OR", "AND", "NOT", "-", "(", ")", '"', "*", "!!!"]),
    st.builds(lambda w: "-" + w, st.sampled_from(WORDS)),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(_token, min_size=1, max_size=9))
def test_sqlite_finds_exactly_what_the_tree_means(corpus, tokens):
    store, messages = corpus
    q = " ".join(tokens)
    try:
        node = parse_query(q)
    except QueryError:
        with pytest.raises(QueryError):  # the store refuses it the same way, never an FTS error
            store.search(EventQuery(q=q))
        return
    got = store.search(EventQuery(q=q, limit=1000))
    want = [f"m{i}" for i, m in enumerate(messages)
            if node is None or _holds(node, [w.lower() for w in search_words(m)])]
    assert sorted(e["id"] for e in got.events) == sorted(want), (q, node)
    assert got.total == len(want)
