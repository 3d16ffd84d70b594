"""Keyed model state that a checkpoint can write incrementally.

The bulk of what the model learns is a few maps of per-key rows: the scorer's rates per host,
template and host-template pair, the miner's memos of masked tokens and messages. A map that
keeps its rows in ``_state`` (a dict, insertion-ordered) and mixes in :class:`KeyedRows`, or a
:class:`TrackedDict`, records which keys changed since the last checkpoint; its owner hands
the runtime (``streams.runtime.checkpoints``) a :class:`Rows` view of it, and the runtime writes only
those rows and pickles the rest of the model without them. Pure: no I/O here, only the
bookkeeping.

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

__all__ = ["KeyedRows", "TrackedDict", "DiffRows", "Rows", "EXTERNAL_ROWS", "pickle_without_rows"]

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


class TrackedDict(dict):
    """A dict that records the keys set since the last checkpoint (``dirty``); ``clear``, a
    deletion or a pop reorders it (``reordered``: the next checkpoint rewrites it whole).
    Reads cost what a dict's do; ``d[k] = v`` a Python call.

    >>> d = TrackedDict(); d["a"] = 1; d["b"] = 2
    >>> sorted(d.dirty), d.reordered
    (['a', 'b'], False)
    >>> d.saved(); d.clear(); d["c"] = 3
    >>> sorted(d.dirty), d.reordered, dict(d)
    (['c'], True, {'c': 3})
    """

    __slots__ = ("dirty", "reordered")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dirty = set(self)
        self.reordered = False

    def __setitem__(self, key, value) -> None:
        dict.__setitem__(self, key, value)
        self.dirty.add(key)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *args, **kwargs) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def _reorder(self) -> None:
        self.reordered = True

    def __delitem__(self, key) -> None:
        dict.__delitem__(self, key)
        self._reorder()

    def pop(self, *args):
        self._reorder()
        return dict.pop(self, *args)

    def popitem(self):
        self._reorder()
        return dict.popitem(self)

    def clear(self) -> None:
        dict.clear(self)
        self.dirty = set()
        self._reorder()

    def saved(self) -> None:
        self.dirty = set()
        self.reordered = False

    def fill(self, rows: dict) -> None:
        """Restore the rows (from a checkpoint): nothing is dirty afterwards."""
        dict.clear(self)
        dict.update(self, rows)
        self.saved()

    def __reduce_ex__(self, protocol):
        if id(self) in EXTERNAL_ROWS.get():
            return (TrackedDict, ())  # written as rows beside the pickle
        return (TrackedDict, (dict(self),))


class DiffRows:
    """Rows of a structure with many mutation sites (the miner's templates): computed when a
    checkpoint is written (``prepare``) and compared with what the last one wrote, so only the
    rows that changed, appeared or went away are written. Costs one pass over the rows per
    save (bounded by the structure's own cap), never a missed change. Unordered: a row's
    place is its key (the loader orders what needs it).

    >>> state = {"a": 1, "b": 2}
    >>> d = DiffRows(lambda: dict(state)); d.prepare(); sorted(d.dirty)
    ['a', 'b']
    >>> d.saved(); state["b"] = 3; del state["a"]; state["c"] = 4; d.prepare(); sorted(d.dirty)
    ['a', 'b', 'c']
    """

    unordered = True

    def __init__(self, compute):
        self.compute = compute
        self.rows: dict = {}
        self.dirty: set = set()
        self.reordered = False
        self._saved: dict = {}  # key -> the bytes the last save wrote
        self._pending: dict = {}

    def prepare(self) -> None:
        import marshal

        self.rows = rows = self.compute()
        enc = {k: marshal.dumps(v) for k, v in rows.items()}
        saved = self._saved
        self.dirty = {k for k, b in enc.items() if saved.get(k) != b} | (saved.keys() - enc.keys())
        self._pending = enc

    def saved(self) -> None:
        self._saved, self._pending = self._pending, {}
        self.dirty = set()

    def prime(self) -> None:
        """After a restore: what the file holds is what was just read."""
        self.prepare()
        self.saved()


class Rows:
    """What the checkpoint writer needs of one keyed map: ``owner`` (its bookkeeping:
    ``dirty``, ``reordered``, ``saved()``; the object named in ``EXTERNAL_ROWS``), ``rows``
    (the ordered dict of its rows), ``fill`` (restore them), and how a value is written and
    read back (``encode``/``decode``: identity unless the values are objects of the model).
    An owner with ``prepare`` (:class:`DiffRows`) computes its rows when a save begins."""

    __slots__ = ("owner", "rows", "fill", "encode", "decode")

    def __init__(self, owner, rows: dict | None, fill, encode=None, decode=None):
        self.owner, self.rows, self.fill = owner, rows, fill
        self.encode = encode or _same
        self.decode = decode or _same


def _same(value):
    return value


def pickle_without_rows(obj, maps: dict) -> bytes:
    """``obj`` pickled without the rows of ``maps`` (name → ``Rows``), which a checkpoint
    writes row by row: rows computed at save time (``DiffRows``) are prepared first, and the
    owners are named in ``EXTERNAL_ROWS`` while pickling so they leave their rows out."""
    import pickle

    for view in maps.values():
        prepare = getattr(view.owner, "prepare", None)
        if prepare is not None:
            prepare()
            view.rows = view.owner.rows
    token = EXTERNAL_ROWS.set(frozenset(id(view.owner) for view in maps.values()))
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        EXTERNAL_ROWS.reset(token)
