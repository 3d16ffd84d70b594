"""Event stores: one write/query interface, an embedded SQLite+FTS5 backend (and later ES)."""

from smartlogs.store.base import EventQuery, EventStore, SearchResult
from smartlogs.store.sqlite import SqliteStore

__all__ = ["EventQuery", "EventStore", "SearchResult", "SqliteStore"]
