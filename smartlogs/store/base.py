"""The sink/query interface every store implements (embedded SQLite now, Elasticsearch next)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["template_row", "template_detail", "MAX_SEQ", "EventQuery", "SearchResult", "sort_key", "BASES", "EventStore", "search_words", "QueryTimeout",
           "QueryInterrupted", "DEFAULT_QUERY_TIMEOUT", "TOTAL_LIMIT", "bounded_total"]

BASES = ("event", "arrival")  # the time a filter or a window is counted in
DEFAULT_QUERY_TIMEOUT = 10.0  # seconds a store may spend on one query (Settings.query_timeout)

# what full-text search matches: runs of letters and digits, as SQLite FTS5's unicode61
# tokenizer splits them (the Elasticsearch store indexes the same words)
_WORD = re.compile(r"[^\W_]+")


def search_words(text: str) -> list[str]:
    """The words ``q`` searches for (each must occur); none for punctuation or emoji only."""
    return _WORD.findall(text)

# ``total`` of a search is exact up to this many matching events; beyond it the store stops
# counting and says so (``total_relation="gte"``, ``total == TOTAL_LIMIT``), as Elasticsearch's
# default ``track_total_hits``: counting every match of a common word made a query's time grow
# with the store (bench/RESULTS.md). Pages (``more``, the API's ``next``) stay exact.
TOTAL_LIMIT = 10_000


def bounded_total(count: int, limit: int | None) -> tuple[int, str]:
    """(total, relation) of ``count`` matches counted up to ``limit`` + 1 (None: exact)."""
    if limit is not None and count > limit:
        return limit, "gte"
    return count, "eq"


# The largest sequence number (cursor) a store can hold: a signed 64-bit integer, as SQLite's
# INTEGER and Elasticsearch's long are. The API refuses larger cursors with a 422.
MAX_SEQ = 2**63 - 1


class QueryTimeout(Exception):
    """The store stopped a query that ran past its time budget (enforced in the database)."""

    def __init__(self, budget: float, message: str | None = None):
        super().__init__(message or f"the query ran longer than its budget of {budget:g} s")
        self.budget = budget


class QueryInterrupted(QueryTimeout):
    """The store stopped a query because the server is shutting down."""

    def __init__(self, budget: float = 0.0):
        super().__init__(budget, "the query was stopped: the server is shutting down")


@dataclass(frozen=True, slots=True)
class EventQuery:
    q: str | None = None          # full text over the message
    host: str | None = None
    source: str | None = None     # the event's source (streams.partitions.source_of)
    level: str | None = None
    template: str | None = None   # template id, e.g. "T12"
    anomaly: bool | None = None
    since: float | None = None    # epoch seconds, inclusive (event or arrival time: ``basis``)
    until: float | None = None    # epoch seconds, exclusive
    after_seq: int | None = None  # tailing: only events stored after this sequence number
    limit: int = 50
    arrival: bool = False         # newest *stored* first (seq), not newest by event time
    # paging: only events after this one in the order asked for: (ts, seq) newest first by
    # event time, (seq,) by arrival; a keyset, so events stored meanwhile never shift a page
    page_after: tuple | None = None
    basis: str = "event"          # what since/until mean: "event" time (ts) or "arrival" (received)
    incident: str | None = None   # only the flagged events of this incident (its id)
    # ``total`` is exact up to this many matches, then TOTAL_LIMIT with relation "gte"; None:
    # always exact (internal counts, e.g. the live tail's, over a small range of seqs)
    total_limit: int | None = TOTAL_LIMIT


@dataclass(slots=True)
class SearchResult:
    total: int                    # exact when ``total_relation == "eq"``, else a lower bound
    events: list[dict] = field(default_factory=list)
    last_seq: int = 0  # highest sequence number in the store (a cursor for tailing)
    more: bool = False  # more events match after this page (in the order asked for)
    total_relation: str = "eq"  # "eq": total is exact; "gte": at least total (query.total_limit)


def sort_key(query: EventQuery, event: dict) -> tuple:
    """Where ``event`` sits in the order ``query`` asks for: ``page_after`` for the next page."""
    if query.after_seq is not None or query.arrival:
        return (int(event["seq"]),)
    return (float(event["ts"]), int(event["seq"]))


class EventStore(Protocol):
    def write(self, events: list[dict], *, window_seconds: int, applied_seq: int = 0) -> int:
        """Store a batch idempotently (known ids are ignored); return how many were new."""

    def write_batch(self, batch, *, window_seconds: int) -> int:
        """Store a processed batch (``streams.runtime.stage.Batch``: events, catalog records,
        incident snapshots; in embedded mode its spool cursors too, in the same transaction)
        idempotently, events and catalog first, then incidents; return how many events were
        new. What ``streams.runtime.stage.Sink`` calls, retries and follows with the merges."""

    def merge_templates(self, merges: dict[str, str]) -> int:
        """Apply a miner's merges (old id → the id that took it over): the ids are linked in
        the catalog and the events of each alias rewritten to the canonical id (the smallest,
        ``streams.catalog.converge``); idempotent; return how many events were rewritten."""

    def template_aliases(self) -> dict[str, str]:
        """Every id that is an alias in the template catalog → its canonical id (the stores
        make them as they write: two ids recorded with one text, or merged, are one template)."""

    def search(self, query: EventQuery) -> SearchResult: ...

    def stats(self, *, since: float | None = None, until: float | None = None,
              windows: int = 60, top: int = 10, basis: str = "event") -> dict:
        """Windows of event time (``basis="event"``) or of arrival time (``"arrival"``)."""

    def templates(self, *, limit: int = 100, sort: str = "count",
                  since: float | None = None) -> list[dict]:
        """The template catalog (``template_row``s): sorted by ``count`` (most first),
        ``first_seen`` or ``last_seen`` (newest first), then id; ``since``: first seen at or
        after it (event time)."""

    def template(self, template_id: str, *, history: int = 100) -> dict | None:
        """One template (``template_detail``) or None when unknown."""

    def merged_into(self, template_id: str) -> str | None:
        """The id a template was merged into, or None."""

    def set_mark(self, change) -> bool:
        """Store feedback (``streams.catalog.TemplateChange``, kind feedback) as the template's
        mark and a history record; False when the template is unknown."""

    def template_marks(self) -> dict[str, str]:
        """Every marked template's mark."""

    def write_incidents(self, incidents: list[dict]) -> None:
        """Upsert incident snapshots (``streams.incidents``) by id; a higher ``rev`` wins."""

    def incidents(self, *, status: str | None = None, since: float | None = None,
                  source: str | None = None, template: str | None = None,
                  limit: int = 100, basis: str = "event") -> list[dict]:
        """Incident snapshots, the latest line first, in event time (``last_ts``) or, with
        ``basis="arrival"``, in when their latest line arrived (``last_received``)."""

    def incident(self, incident_id: str) -> dict | None: ...

    def count_ids(self, prefix: str) -> int:
        """How many stored events have an id that starts with ``prefix`` (a replay's
        ``RUN_ID:``: how much of a run is already stored)."""

    def close(self) -> None: ...


# -- the template catalog: one answer shape for every store ------------------------------------
def template_row(tid: str, template: str | None, count: int, first_ts: float | None,
                 last_ts: float | None, mark: str | None) -> dict:
    """One template of ``GET /api/templates``."""
    from streams.pipeline import _iso  # one formatter for every timestamp we emit

    return {"id": tid, "template": template, "count": int(count), "first_ts": first_ts,
            "last_ts": last_ts, "first_seen": _iso(first_ts) if first_ts is not None else None,
            "last_seen": _iso(last_ts) if last_ts is not None else None, "mark": mark}


def template_detail(row: dict, records: list[dict], *, first: str | None, last: str | None,
                    total: int) -> dict:
    """``GET /api/templates/{id}``: the row, its example lines (``streams.catalog.pick_examples``)
    and its history: ``created`` (derived: the first line, and the text before the first
    generalisation) then the stored records oldest first; ``history_total`` counts the stored
    records (``records`` may be the latest of them only)."""
    from streams.catalog import pick_examples
    from streams.pipeline import _iso

    # by time, then in the order the store took them (``order``: the records of one line)
    records = sorted(records, key=lambda r: (r["at"], r.pop("order", 0)))
    own_gen = [r for r in records if r["kind"] == "generalised" and r["template_id"] == row["id"]]
    created = {"id": f"{row['id']}/created", "template_id": row["id"], "kind": "created",
               "at": row["first_ts"], "template": own_gen[0]["previous"] if own_gen and total ==
               len(records) else (row["template"] if not own_gen else None),
               "previous": None, "into": None, "example": first, "mark": None, "note": None,
               "by": None}
    history = [created, *records]
    for h in history:
        h["time"] = _iso(h["at"]) if h.get("at") is not None else None
    examples = pick_examples(first, [r["example"] for r in own_gen], last)
    return {**row, "examples": examples, "history": history, "history_total": total + 1}
