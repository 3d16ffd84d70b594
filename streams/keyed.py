"""Keyed model state that a checkpoint can write incrementally.

The bulk of what the scorer learns is a few maps of per-key rows (rates per host, template and
host-template pair). A map that keeps its rows in ``_state`` (a dict, insertion-ordered) and
mixes in :class:`KeyedRows` records which keys changed since the last checkpoint; the runtime
(``streams.checkpoints``) then writes only those rows, and pickles the rest of the model
without them. Pure: no I/O here, only the bookkeeping.

>>> class Counts(KeyedRows):
...     def __init__(self):
...         super().__init__()
...         self._state = {}
...     def add(self, key):
...         self._state[key] = [self._state.get(key, [0])[0] + 1]
...         self.touched(key)
>>> c = Counts(); c.add("a"); c.add("b"); c.add("a")
>>> sorted(c.dirty), c.reordered
(['a', 'b'], False)
>>> c.saved(); c.dirty
set()
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["KeyedRows", "EXTERNAL_ROWS"]

# set by the checkpoint writer while it pickles the model: ids of the maps whose rows it
# writes itself (their pickled form then leaves the rows out)
EXTERNAL_ROWS: ContextVar[frozenset[int]] = ContextVar("EXTERNAL_ROWS", default=frozenset())


class KeyedRows:
    """Dirty-key bookkeeping for a map kept in ``self._state``: ``touched(key)`` after a row
    changes, ``reordered = True`` after keys are removed or reordered (the next checkpoint then
    rewrites the whole map), ``saved()`` once a checkpoint holds every row."""

    def __init__(self) -> None:
        self.dirty: set = set()
        self.reordered = False

    def touched(self, key) -> None:
        self.dirty.add(key)

    def saved(self) -> None:
        self.dirty = set()
        self.reordered = False

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("dirty", None)
        state.pop("reordered", None)
        if id(self) in EXTERNAL_ROWS.get():
            state["_state"] = None  # written as rows beside the pickle
        return state

    def __setstate__(self, state: dict) -> None:
        if state.get("_state") is None:
            state["_state"] = {}  # filled from the rows by the checkpoint reader
        self.__dict__.update(state)
        self.dirty = set()
        self.reordered = False
