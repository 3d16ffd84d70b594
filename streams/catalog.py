"""The template catalog's pure parts: change records, feedback marks, example lines.

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

from dataclasses import dataclass

__all__ = ["EXPECTED", "ALWAYS_ALERT", "MARKS", "MAX_EXAMPLES", "HISTORY_KINDS", "SORTS",
           "TemplateChange", "carry_marks", "change_from_miner", "normalise_mark",
           "pick_examples"]

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
