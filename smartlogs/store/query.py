"""The search language of ``q``: one parser, which every store translates from.

Pure (no I/O): text → a small tree of ``Term``/``And``/``Or``/``Not``, or a
``QuerySyntaxError`` saying where the text cannot be read.

Syntax (what people know from search boxes)::

    auth failure           both words (AND is implicit; ``AND`` may be written)
    "session opened"       the words next to each other, in this order (a phrase)
    auth*                  a word starting with ``auth`` (authentication, authorize, ...)
    failure OR error       either (OR binds looser than AND: ``a b OR c`` = ``(a b) OR c``)
    -cron   NOT cron       without the word (alone: every event that does not have it)
    (sshd OR su) -cron     parentheses group

Words are what the index holds: runs of letters and digits (``search_words``), matched
case-insensitively. A bare token made of several words (``rhost=218.188.2.4``,
``jk2_init``) is the phrase of those words; punctuation-only tokens are ignored. Operators are
upper case (``or`` is a word). A prefix applies to one word.

Cost bounds: identical terms in one group count once (``a a a`` = ``a``), and a query may hold
at most ``MAX_TERMS`` terms and ``MAX_DEPTH`` levels of parentheses: beyond that
``QueryTooComplex`` (a 422 that names the limit). The time a store may spend on one query is
bounded by the store itself (``query_timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass

from smartlogs.store.base import search_words

__all__ = [
    "MAX_TERMS", "MAX_DEPTH", "Term", "And", "Or", "Not", "Node",
    "QueryError", "QuerySyntaxError", "QueryTooComplex", "QueryUnsupported", "parse_query", "terms_of",
]

MAX_TERMS = 32   # distinct terms (words, phrases, prefixes) in one query
MAX_DEPTH = 8    # nested parentheses / NOTs


class QueryError(ValueError):
    """``q`` cannot be searched for; ``str()`` says why, ``position`` (1-based) where, if known."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message)
        self.position = position


class QuerySyntaxError(QueryError):
    """The text is not a query (an unclosed quote or parenthesis, an operator without a term)."""


class QueryUnsupported(QueryError):
    """The store cannot run this (well-formed) query over the data it holds."""


class QueryTooComplex(QueryError):
    """More terms or deeper nesting than the limits allow."""


@dataclass(frozen=True, slots=True)
class Term:
    words: tuple[str, ...]   # lower case; several = a phrase (adjacent, in order)
    prefix: bool = False     # the (single) word is a prefix


@dataclass(frozen=True, slots=True)
class And:
    children: tuple["Node", ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple["Node", ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: "Node"


Node = Term | And | Or | Not

_OPS = {"AND", "OR", "NOT"}


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, value, 1-based position); kinds: ( ) - AND OR NOT word phrase."""
    out: list[tuple[str, str, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            out.append((c, c, i + 1))
            i += 1
        elif c == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise QuerySyntaxError(f'the quote at character {i + 1} is never closed', i + 1)
            j = end + 1
            star = j < n and text[j] == "*"
            out.append(("phrase*" if star else "phrase", text[i + 1:end], i + 1))
            i = j + star
        elif c == "-" and i + 1 < n and not text[i + 1].isspace():  # -word: NOT word
            out.append(("-", "-", i + 1))
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in '()"':
                j += 1
            word = text[i:j]
            out.append((word if word in _OPS else "word", word, i + 1))
            i = j
    return out


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0
        self.end = len(text) + 1

    def peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def where(self) -> int:
        t = self.peek()
        return t[2] if t else self.end

    def parse(self) -> Node | None:
        node = self.or_(0)
        t = self.peek()
        if t is not None:  # only a ')' stops an expression early
            raise QuerySyntaxError(f"the ')' at character {t[2]} closes nothing", t[2])
        return node

    def or_(self, depth: int) -> Node | None:
        start = self.where()
        parts = [self.and_(depth)]
        while (t := self.peek()) is not None and t[0] == "OR":
            self.i += 1
            if parts[-1] is _EMPTY or self.peek() is None or self.peek()[0] in (")", "OR"):
                raise QuerySyntaxError(f"OR at character {t[2]} needs a term on each side", t[2])
            parts.append(self.and_(depth))
        if len(parts) == 1:
            return None if parts[0] is _EMPTY else parts[0]
        kept = [p for p in parts if p is not None and p is not _EMPTY]
        if len(kept) < len(parts):
            # "!!! OR x": a side with no words would match everything or nothing; say so
            raise QuerySyntaxError(f"a side of the OR starting at character {start} has no words "
                                   "to search for", start)
        return Or(tuple(kept))

    def and_(self, depth: int):
        parts: list[Node | None] = []
        while (t := self.peek()) is not None and t[0] not in (")", "OR"):
            if t[0] == "AND":
                self.i += 1
                if not parts or self.peek() is None or self.peek()[0] in (")", "OR", "AND"):
                    raise QuerySyntaxError(f"AND at character {t[2]} needs a term on each side",
                                           t[2])
                continue
            parts.append(self.unary(depth))
        if not parts:
            return _EMPTY
        kept = [p for p in parts if p is not None]
        if not kept:
            return None
        return kept[0] if len(kept) == 1 else And(tuple(kept))

    def unary(self, depth: int) -> Node | None:
        t = self.peek()
        kind, value, pos = t
        if depth > MAX_DEPTH:
            raise QueryTooComplex(f"the query nests deeper than {MAX_DEPTH} levels (at character "
                                  f"{pos})", pos)
        if kind in ("NOT", "-"):
            self.i += 1
            nxt = self.peek()
            if nxt is None or nxt[0] in (")", "OR", "AND"):
                raise QuerySyntaxError(f"{value} at character {pos} needs a term after it", pos)
            inner = self.unary(depth + 1)
            return None if inner is None else Not(inner)
        if kind == "(":
            self.i += 1
            inner = self.or_(depth + 1)
            close = self.peek()
            if close is None or close[0] != ")":
                raise QuerySyntaxError(f"the '(' at character {pos} is never closed", pos)
            self.i += 1
            return inner
        self.i += 1
        prefix = kind == "phrase*" or (kind == "word" and value.endswith("*"))
        words = tuple(w.lower() for w in search_words(value))
        if not words:
            return None  # "", "!!!", "*": nothing the index holds, ignored like punctuation
        if prefix and len(words) > 1:
            raise QuerySyntaxError(f"the prefix at character {pos} ({value}) spans several words; "
                                   "a * applies to one word", pos)
        return Term(words, prefix)


_EMPTY = object()  # an AND with no tokens at all (as opposed to tokens without words)


def _simplify(node: Node) -> Node:
    """Flatten nested groups of the same kind, drop repeated terms (``a a`` = ``a``)."""
    if isinstance(node, Not):
        inner = _simplify(node.child)
        return inner.child if isinstance(inner, Not) else Not(inner)
    if isinstance(node, (And, Or)):
        kind = type(node)
        seen: list[Node] = []
        for child in node.children:
            child = _simplify(child)
            for c in (child.children if isinstance(child, kind) else (child,)):
                if c not in seen:
                    seen.append(c)
        return seen[0] if len(seen) == 1 else kind(tuple(seen))
    return node


def terms_of(node: Node) -> list[Term]:
    """Every term of the tree, in order (repeats in different groups included)."""
    if isinstance(node, Term):
        return [node]
    if isinstance(node, Not):
        return terms_of(node.child)
    return [t for c in node.children for t in terms_of(c)]


def parse_query(text: str) -> Node | None:
    """``q`` → its tree; None when it holds no words at all. Raises ``QueryError``."""
    node = _Parser(text).parse()
    if node is None:
        return None
    node = _simplify(node)
    n = len(terms_of(node))
    if n > MAX_TERMS:
        raise QueryTooComplex(f"the query has {n} different terms; at most {MAX_TERMS} are "
                              "allowed (repeated words count once)")
    return node


# -- translations shared by the stores ------------------------------------------------------
def fts5(node: Node) -> str | None:
    """The SQLite FTS5 MATCH expression of ``node``, or None when FTS5 cannot say it alone (a
    negation with nothing positive beside it: FTS5's NOT is binary, ``a NOT b``)."""
    if isinstance(node, Term):
        return '"' + " ".join(node.words) + '"' + ("*" if node.prefix else "")
    if isinstance(node, Not):
        return None
    if isinstance(node, Or):
        parts = [fts5(c) for c in node.children]
        return None if None in parts else "(" + " OR ".join(parts) + ")"
    pos = [fts5(c) for c in node.children if not isinstance(c, Not)]
    neg = [fts5(c.child) for c in node.children if isinstance(c, Not)]
    if not pos or None in pos or None in neg:
        return None
    expr = "(" + " AND ".join(pos) + ")"
    for n in neg:
        expr = f"({expr} NOT {n})"
    return expr


def elasticsearch(node: Node, field: str = "words") -> dict:
    """The Elasticsearch query of ``node`` over a text field holding the message's words
    (standard analyzer: lower case, one position per word, as FTS5's unicode61)."""
    if isinstance(node, Term):
        if node.prefix:
            return {"prefix": {field: {"value": node.words[0]}}}
        if len(node.words) > 1:
            return {"match_phrase": {field: " ".join(node.words)}}
        return {"match": {field: {"query": node.words[0], "operator": "and"}}}
    if isinstance(node, Not):
        return {"bool": {"must_not": [elasticsearch(node.child, field)]}}
    if isinstance(node, Or):
        return {"bool": {"should": [elasticsearch(c, field) for c in node.children],
                         "minimum_should_match": 1}}
    pos = [elasticsearch(c, field) for c in node.children if not isinstance(c, Not)]
    neg = [elasticsearch(c.child, field) for c in node.children if isinstance(c, Not)]
    body: dict = {"filter": pos} if pos else {}
    if neg:
        body["must_not"] = neg
    return {"bool": body}
