"""The sink/query interface every store implements (embedded SQLite now, Elasticsearch next)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["MAX_SEQ", "EventQuery", "SearchResult", "sort_key", "BASES", "EventStore", "search_words", "QueryTimeout",
           "QueryInterrupted", "DEFAULT_QUERY_TIMEOUT"]

BASES = ("event", "arrival")  # the time a filter or a window is counted in
DEFAULT_QUERY_TIMEOUT = 10.0  # seconds a store may spend on one query (Settings.query_timeout)

# what full-text search matches: runs of letters and digits, as SQLite FTS5's unicode61
# tokenizer splits them (the Elasticsearch store indexes the same words)
_WORD = re.compile(r"[^\W_]+")


def search_words(text: str) -> list[str]:
    """The words ``q`` searches for (each must occur); none for punctuation or emoji only."""
    return _WORD.findall(text)

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


@dataclass(slots=True)
class SearchResult:
    total: int
    events: list[dict] = field(default_factory=list)
    last_seq: int = 0  # highest sequence number in the store (a cursor for tailing)
    more: bool = False  # more events match after this page (in the order asked for)


def sort_key(query: EventQuery, event: dict) -> tuple:
    """Where ``event`` sits in the order ``query`` asks for: ``page_after`` for the next page."""
    if query.after_seq is not None or query.arrival:
        return (int(event["seq"]),)
    return (float(event["ts"]), int(event["seq"]))


class EventStore(Protocol):
    def write(self, events: list[dict], *, window_seconds: int, applied_seq: int = 0) -> int:
        """Store a batch idempotently (known ids are ignored); return how many were new."""

    def merge_templates(self, merges: dict[str, str]) -> int:
        """Rewrite stored events of template ids merged away (old id → the id that took it
        over) to the surviving id; idempotent; return how many events were rewritten."""

    def search(self, query: EventQuery) -> SearchResult: ...

    def stats(self, *, since: float | None = None, until: float | None = None,
              windows: int = 60, top: int = 10, basis: str = "event") -> dict:
        """Windows of event time (``basis="event"``) or of arrival time (``"arrival"``)."""

    def templates(self, *, limit: int = 100) -> list[dict]: ...

    def write_incidents(self, incidents: list[dict]) -> None:
        """Upsert incident snapshots (``streams.incidents``) by id; a higher ``rev`` wins."""

    def incidents(self, *, status: str | None = None, since: float | None = None,
                  source: str | None = None, template: str | None = None,
                  limit: int = 100) -> list[dict]:
        """Incident snapshots, the latest line first."""

    def incident(self, incident_id: str) -> dict | None: ...

    def count_ids(self, prefix: str) -> int:
        """How many stored events have an id that starts with ``prefix`` (a replay's
        ``RUN_ID:``: how much of a run is already stored)."""

    def close(self) -> None: ...
