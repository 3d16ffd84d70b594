"""The template catalog's pure parts: one id per template, change records, feedback marks,
example lines.

One catalog for many workers
----------------------------
Several miners name templates at once (Kafka workers, embedded shards, per-partition
pipelines). The design chosen: **ids derived from the template's constant text, plus the
smallest-id rule**, rather than a catalog topic (or a global table) that every worker must
read before it can name a template. A template's id is a digest of the tokens it is made from
(``streams.templates.template_id_for``), so every miner names a pattern's first line alike
with no round trip on the hot path and no coordinator. Two miners can still reach one text
from different first lines (then generalise to the same text) under two ids; the rule that
settles it needs no coordination either and gives the same answer in whatever order the
stores learn the facts:

    **the canonical id of a template is the smallest id ever recorded with its text**, and,
    since ids linked by a shared text or by a merge name one template, the smallest id of
    all the ids so linked (``converge``).

The stores apply it when they record a batch's (id, text) pairs and the miners' merges: the
other ids become aliases of the canonical one (a ``merged`` history record; their stored
events are rewritten, ``merge_templates``), and ``GET /api/templates`` lists one template per
text. The runtimes read the aliases (``template_aliases()`` of a store) and hand them to their
miners (``TemplateMiner.adopt``), so new lines carry the canonical id. Until a runtime has
read them (a few seconds), a store maps the ids of the events it writes itself.

>>> converge([("T9", "T4"), ("T4", "T7")], {})
{'T7': 'T4', 'T9': 'T4'}
>>> converge([("T2", "T7")], {"T9": "T4", "T7": "T4"})  # T4's template meets T2's
{'T4': 'T2', 'T7': 'T2', 'T9': 'T2'}

A template is a durable record (id, text, first/last seen, count, example lines, history).
Its *history* is made of records:

==============  ==============================================================================
``created``     derived, never stored as a record: the template's first line and first time
                (a flood of unique lines makes a template per line; a record each would double
                what the store keeps for them)
``generalised`` the miner found a variable position: the text before and after, the line
                that did it and its event time (``TemplateMiner`` emits it; the id is kept)
``merged``      an enumeration outgrew a handful of values: this id's lines now carry the id it
                was merged into (``into``); the stores rewrite its events (``merge_templates``)
``feedback``    a person marked the template: ``expected``, ``always_alert`` or ``none``
                (cleared), with an optional note and who did it
==============  ==============================================================================

Records made by the pipeline have ids built from the event that caused them
(``<event id>/<kind>/<template id>``), so a batch processed again after a crash makes the
same records and the stores keep one of each.

Marks change scoring from the next line on (``streams.scoring.AnomalyScorer.marks``):
``expected`` lines no longer count as anomalous for rarity or novelty (the model still
learns them, and other evidence, an error flood or a burst, still flags them);
``always_alert`` lines are always flagged, with a reason that says so.

>>> normalise_mark("always-alert"), normalise_mark("none")
('always_alert', None)
>>> carry_marks({"T7": "expected"}, {"T7": "T3"})
{'T7': 'expected', 'T3': 'expected'}
>>> pick_examples("a", ["b", "a", "c"], "d", limit=4)
['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["EXPECTED", "ALWAYS_ALERT", "MARKS", "MAX_EXAMPLES", "HISTORY_KINDS", "SORTS",
           "TemplateChange", "alias_change", "canonical_id", "carry_marks", "change_from_miner",
           "converge", "normalise_mark", "pick_examples", "text_key", "text_links", "texts_of"]

EXPECTED = "expected"
ALWAYS_ALERT = "always_alert"
MARKS = (EXPECTED, ALWAYS_ALERT)
# how the API, the CLI and the console name them (``none`` clears a mark)
MARK_WORDS = {"expected": EXPECTED, "always_alert": ALWAYS_ALERT, "always-alert": ALWAYS_ALERT,
              "none": None}
HISTORY_KINDS = ("created", "generalised", "merged", "feedback")
SORTS = ("count", "first_seen", "last_seen")
# example lines a template shows: its first line, the latest, and lines that changed it
MAX_EXAMPLES = 5
MAX_EXAMPLE_CHARS = 2000  # an example line is cut to this (a template's lines may be long)
MAX_NOTE_CHARS = 500


def normalise_mark(word: str | None) -> str | None:
    """``expected``, ``always_alert`` (or ``always-alert``), or None for ``none``/empty.
    Anything else is a ValueError naming the choices."""
    if word is None or word == "":
        return None
    try:
        return MARK_WORDS[word.strip().lower()]
    except KeyError:
        raise ValueError(f"mark must be one of expected, always_alert, none; not {word!r}") from None


@dataclass(frozen=True, slots=True)
class TemplateChange:
    """One history record of a template, made while processing a line (``generalised``,
    ``merged``) or by a person (``feedback``)."""

    id: str                      # unique and deterministic (see the module docs)
    template_id: str
    kind: str                    # one of HISTORY_KINDS except "created"
    at: float                    # event time (pipeline records) or wall-clock (feedback)
    template: str | None = None  # the text after the change
    previous: str | None = None  # the text before (generalised)
    into: str | None = None      # the id it was merged into (merged)
    example: str | None = None   # the line that caused it
    mark: str | None = None      # feedback: expected / always_alert / None (cleared)
    note: str | None = None      # feedback: the person's words
    by: str | None = None        # feedback: the API key's name (None: keys are off)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def change_from_miner(note: tuple, *, event_id: str, ts: float, line: str) -> TemplateChange:
    """A record from one of ``TemplateMiner.changes``' tuples (kind, id, template, previous,
    into), stamped with the line that caused it."""
    kind, tid, template, previous, into = note
    return TemplateChange(id=f"{event_id}/{kind}/{tid}", template_id=tid, kind=kind, at=ts,
                          template=template, previous=previous if kind == "generalised" else None,
                          into=into, example=line[:MAX_EXAMPLE_CHARS])


UNPROCESSABLE = "T0"  # lines the pipeline could not process: never linked to a template


def canonical_id(ids) -> str:
    """The rule: of the ids that name one template, the smallest (as text). Order-free."""
    return min(ids)


def converge(links, aliases: dict[str, str]) -> dict[str, str]:
    """The aliases to add or change after ``links`` (pairs of ids that name one template: the
    same text recorded under both, or a merge), given the ``aliases`` known (id -> its
    canonical id) for the ids involved and for every id aliased to their canonical ids. Each
    group of linked ids gets its smallest id (``canonical_id``); returns id -> canonical id
    for each id whose canonical id is new or changed. The same facts in any order give the
    same aliases."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            lo, hi = (ra, rb) if canonical_id((ra, rb)) == ra else (rb, ra)
            parent[hi] = lo

    for old, new in aliases.items():
        union(old, new)
    for a, b in links:
        if a != b and UNPROCESSABLE not in (a, b):
            union(a, b)
    out = {}
    for x in sorted(parent):
        root = find(x)
        if root != x and aliases.get(x) != root:
            out[x] = root
    return out


def text_key(text: str) -> int:
    """A template text as a signed 64-bit number (BLAKE2b), what a store indexes to find the
    ids recorded with one text without indexing texts of any length."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def text_links(pairs) -> list[tuple[str, str]]:
    """Links between ids recorded with one text: ``pairs`` of (id, text) -> (id, other id)
    for each text recorded under more than one id."""
    by_text: dict[str, str] = {}
    out = []
    for tid, text in pairs:
        if tid == UNPROCESSABLE:
            continue
        first = by_text.setdefault(text, tid)
        if first != tid:
            out.append((tid, first))
    return out


def texts_of(events: list[dict], catalog: list | None = None) -> set[tuple[str, str]]:
    """The (template id, text) pairs a batch records: its events' and its catalog records'
    (a generalisation's or a merge's text, before and after)."""
    pairs = {(e["template_id"], e["template"]) for e in events
             if e.get("template") and e.get("template_id") not in (None, UNPROCESSABLE)}
    for c in catalog or ():
        if c.kind in ("generalised", "merged"):
            for text in (c.previous, c.template):
                if text:
                    pairs.add((c.template_id, text))
    return pairs


def alias_change(old: str, new: str, *, at: float) -> TemplateChange:
    """The ``merged`` history record of an alias the catalog made (``old`` now carries the
    canonical id ``new``); its id is built from the pair, so every store and every retry
    makes one record."""
    return TemplateChange(id=f"catalog/merged/{old}/{new}", template_id=old, kind="merged",
                          at=at, into=new)


def carry_marks(marks: dict[str, str], merges: dict[str, str]) -> dict[str, str]:
    """A template merged into another passes its mark on, unless the survivor has its own
    (``marks`` is updated in place and returned)."""
    for old, new in merges.items():
        mark = marks.get(old)
        if mark is not None and new != old:
            marks.setdefault(new, mark)
    return marks


def pick_examples(first: str | None, changes: list[str], last: str | None, *,
                  limit: int = MAX_EXAMPLES) -> list[str]:
    """A template's example lines, at most ``limit``, each once: its first line, the latest
    lines that changed it (newest last), and its latest line."""
    middle: list[str] = []
    for c in changes:  # each line once, at its latest place
        if c and c != first and c != last:
            if c in middle:
                middle.remove(c)
            middle.append(c)
    room = max(limit - (1 if first else 0) - (1 if last else 0), 0)
    picked = ([first] if first else []) + (middle[-room:] if room else []) + ([last] if last else [])
    out: list[str] = []
    for line in picked:
        if line not in out:
            out.append(line)
    return out[:limit]
