"""One partition's learned state as keyed records, for a compacted Kafka topic.

The Kafka worker keeps one ``Pipeline`` per partition of the raw topic, and that pipeline's
whole state (trees, threshold, rates, header layouts, incidents, its miner) lives in Kafka, in
a compacted topic whose partition *p* holds the state of raw partition *p*. This module turns
a pipeline into the records of one save, and the records read back into a pipeline. Pure: no
I/O here; the worker sends and reads the records (in one Kafka transaction per save).

The row model is the checkpoint file's (``streams.runtime.checkpoints``, ``streams.keyed``):

* ``r|<map>|<repr(key)>`` — one record per row of a keyed map: ``marshal((ord, key, value))``;
  a save writes only the rows changed since the previous save, a removed key is a
  **tombstone** (value None, which compaction then drops), a map that dropped keys is
  rewritten whole (and every key it no longer has is tombstoned);
* ``c|<i>`` — the pickle of the rest of the model, in chunks of at most ``CHUNK`` bytes (so
  no record comes near Kafka's ``max.message.bytes``; chunks past the last are tombstoned);
* ``h`` — the head, written last: the raw-topic **offset the state reflects** (the next
  offset to process), the number of chunks and their digest, the maps, a generation.

A save is one transaction (the worker's producer is transactional, its readers
``read_committed``): a worker killed mid-save leaves the previous save whole.

>>> from streams.pipeline import Pipeline, PipelineConfig
>>> p = Pipeline(PipelineConfig())
>>> _ = p.process([{"id": "1", "raw": "disk sda1 is full", "received": 1.7e9}])
>>> book = Book()
>>> records = encode_save(p, book, offset=7).records
>>> records[-1][0], len(records) > 3
(b'h', True)
>>> restored, offset, _ = decode_state(dict(records), PipelineConfig())
>>> offset, restored.lines
(7, 1)
>>> [k for k, _ in encode_save(p, book, offset=8).records]  # no row changed: pickle, head
[b'c|0', b'h']
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import pickle
from dataclasses import dataclass, field
from itertools import islice

from streams.keyed import pickle_without_rows
from streams.pipeline import Pipeline, PipelineConfig

__all__ = ["Book", "Save", "encode_save", "decode_state", "CHUNK", "HEAD"]

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # bytes of pickle per record (Kafka's default record limit is 1 MiB)
HEAD = b"h"


def _row_key(name: str, krepr: str) -> bytes:
    return f"r|{name}|{krepr}".encode("utf-8", "surrogatepass")


def _chunk_key(i: int) -> bytes:
    return b"c|%d" % i


@dataclass
class Book:
    """What the topic holds of one partition's state, as far as its writer knows: per map,
    ``repr(key) → ord`` of the rows written, the number of pickle chunks, the generation.
    ``fresh``: nothing is known (a new partition, or a save that failed): the next save
    rewrites every map and tombstones whatever may be left (``ghosts``)."""

    ords: dict[str, dict[str, int]] = field(default_factory=dict)
    chunks: int = 0
    generation: int = 0
    fresh: bool = True
    ghosts: dict[str, set[str]] = field(default_factory=dict)

    def failed(self, save: "Save") -> None:
        """The transaction of ``save`` did not commit: the topic holds the save before it, or
        (unknown) this one; the next save is whole and tombstones the keys of both."""
        for name, ords in save.before.items():
            self.ghosts.setdefault(name, set()).update(ords)
        self.chunks = max(self.chunks, save.before_chunks)
        self.fresh = True


@dataclass
class Save:
    records: list[tuple[bytes, bytes | None]]
    offset: int
    lines: int
    full: bool
    before: dict[str, dict[str, int]]  # the book's rows before this save (for Book.failed)
    before_chunks: int


def encode_save(pipeline: Pipeline, book: Book, offset: int) -> Save:
    """The records of one save of ``pipeline`` whose state reflects the raw topic up to
    ``offset`` (exclusive), given what ``book`` says the topic holds; updates ``book`` and marks
    the model's rows saved (synchronously: whatever the model learns after this call is in
    the next save). If the records do not reach Kafka, call ``book.failed(save)``."""
    maps = pipeline.keyed_maps()
    body = pickle_without_rows(pipeline, maps)
    full = book.fresh or any(name not in book.ords for name in maps)
    before = {name: dict(o) for name, o in book.ords.items()} if full else {}
    records: list[tuple[bytes, bytes | None]] = []
    for name, view in maps.items():
        rows, owner, enc = view.rows, view.owner, view.encode
        held = book.ords.get(name) or {}
        if full or owner.reordered:
            if not full:
                before[name] = dict(held)
            now: dict[str, int] = {}
            for pos, (k, v) in enumerate(rows.items()):
                kr = repr(k)
                now[kr] = pos
                records.append((_row_key(name, kr), marshal.dumps((pos, k, enc(v)))))
            gone = (held.keys() | book.ghosts.get(name, set())) - now.keys()
            records.extend((_row_key(name, kr), None) for kr in gone)
            book.ords[name] = now
            continue
        dirty = owner.dirty
        if not dirty:
            continue
        if getattr(owner, "unordered", False):  # a row's place is its key
            for k in dirty:
                kr = repr(k)
                if k in rows:
                    held[kr] = 0
                    records.append((_row_key(name, kr), marshal.dumps((0, k, enc(rows[k])))))
                elif held.pop(kr, None) is not None:
                    records.append((_row_key(name, kr), None))
            continue
        # a map that only grew since the last save: the keys after the ``len(held)`` first are
        # new (in insertion order), the others keep their place
        n = len(held)
        for pos, (k, v) in enumerate(islice(rows.items(), n, None), n):
            kr = repr(k)
            held[kr] = pos
            records.append((_row_key(name, kr), marshal.dumps((pos, k, enc(v)))))
        for k in dirty:
            kr = repr(k)
            pos = held.get(kr)
            if k in rows and pos is not None and pos < n:
                records.append((_row_key(name, kr), marshal.dumps((pos, k, enc(rows[k])))))
    chunks = [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]
    records.extend((_chunk_key(i), c) for i, c in enumerate(chunks))
    records.extend((_chunk_key(i), None) for i in range(len(chunks), book.chunks))
    head = {"offset": int(offset), "generation": book.generation + 1, "chunks": len(chunks),
            "digest": hashlib.sha256(body).hexdigest(), "maps": list(maps),
            "lines": pipeline.lines}
    records.append((HEAD, marshal.dumps(head)))
    save = Save(records, int(offset), pipeline.lines, full, before, book.chunks)
    book.chunks, book.generation, book.fresh = len(chunks), book.generation + 1, False
    if full:
        book.ghosts = {}
    for view in maps.values():
        view.owner.saved()
    return save


def decode_state(records: dict[bytes, bytes | None],
                 config: PipelineConfig) -> tuple[Pipeline, int, Book] | None:
    """``key → latest value`` of one state partition (tombstones as None or absent) → (the
    pipeline, the raw-topic offset it reflects, the book of what the topic holds); None when
    there is no head (nothing saved yet). Raises ValueError on a damaged state."""
    raw_head = records.get(HEAD)
    if raw_head is None:
        return None
    head = marshal.loads(raw_head)
    parts = [records.get(_chunk_key(i)) for i in range(head["chunks"])]
    if any(p is None for p in parts):
        raise ValueError("a chunk of the model is missing")
    body = b"".join(parts)
    if hashlib.sha256(body).hexdigest() != head["digest"]:
        raise ValueError("checksum mismatch")
    pipeline = pickle.loads(body)
    if not isinstance(pipeline, Pipeline):
        raise ValueError("not a pipeline")
    rows: dict[str, list[tuple[int, object, object]]] = {}
    for key, value in records.items():
        if value is None or not key.startswith(b"r|"):
            continue
        name = key[2:].split(b"|", 1)[0].decode()
        rows.setdefault(name, []).append(marshal.loads(value))
    book = Book(chunks=head["chunks"], generation=head["generation"], fresh=False)
    maps = pipeline.keyed_maps()
    held = set(head["maps"])
    for name, view in maps.items():
        if name not in held:
            continue
        got = sorted(rows.get(name, ()), key=lambda r: r[0])
        dec = view.decode
        view.fill({k: dec(v) for _, k, v in got})
        book.ords[name] = {repr(k): pos for pos, k, _ in got}
    pipeline.upgrade(config)
    return pipeline, int(head["offset"]), book
