"""The sink/query interface every store implements (embedded SQLite now, Elasticsearch next)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["MAX_SEQ", "EventQuery", "SearchResult", "EventStore", "search_words"]

# what full-text search matches: runs of letters and digits, as SQLite FTS5's unicode61
# tokenizer splits them (the Elasticsearch store indexes the same words)
_WORD = re.compile(r"[^\W_]+")


def search_words(text: str) -> list[str]:
    """The words ``q`` searches for (each must occur); none for punctuation or emoji only."""
    return _WORD.findall(text)

# The largest sequence number (cursor) a store can hold: a signed 64-bit integer, as SQLite's
# INTEGER and Elasticsearch's long are. The API refuses larger cursors with a 422.
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class EventQuery:
    q: str | None = None          # full text over the message
    host: str | None = None
    level: str | None = None
    template: str | None = None   # template id, e.g. "T12"
    anomaly: bool | None = None
    since: float | None = None    # event time, epoch seconds, inclusive
    until: float | None = None    # event time, epoch seconds, exclusive
    after_seq: int | None = None  # tailing: only events stored after this sequence number
    limit: int = 50
    arrival: bool = False         # newest *stored* first (seq), not newest by event time


@dataclass(slots=True)
class SearchResult:
    total: int
    events: list[dict] = field(default_factory=list)
    last_seq: int = 0  # highest sequence number in the store (a cursor for tailing)


class EventStore(Protocol):
    def write(self, events: list[dict], *, window_seconds: int, applied_seq: int = 0) -> int:
        """Store a batch idempotently (known ids are ignored); return how many were new."""

    def merge_templates(self, merges: dict[str, str]) -> int:
        """Rewrite stored events of template ids merged away (old id → the id that took it
        over) to the surviving id; idempotent; return how many events were rewritten."""

    def search(self, query: EventQuery) -> SearchResult: ...

    def stats(self, *, since: float | None = None, until: float | None = None,
              windows: int = 60, top: int = 10) -> dict: ...

    def templates(self, *, limit: int = 100) -> list[dict]: ...

    def count_ids(self, prefix: str) -> int:
        """How many stored events have an id that starts with ``prefix`` (a replay's
        ``RUN_ID:``: how much of a run is already stored)."""

    def close(self) -> None: ...
