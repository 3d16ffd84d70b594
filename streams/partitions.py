"""Which partition a line belongs to: the one rule both runtimes share.

Work is keyed by *source* (:func:`partition_key`: the line's host when the request carries
one, else its named stream, else its receiver) and spread over ``n`` partitions by a stable
hash of that key (:func:`partition_of`). Everything a model learns about a source (trees,
threshold, rates, incidents) lives in the state of that source's partition, so a partition can
move to another worker or shard and take what was learned with it.

The key is read from what the request already carries, never from a parse of the line:
parsing to find a host would cost as much as the pipeline's own parse.

>>> partition_key({"host": "web-1", "stream": "app.log", "source": "http"})
'web-1'
>>> partition_key({"stream": "app.log", "source": "http"})
'app.log'
>>> partition_key({"source": "syslog"})
'syslog'
>>> partition_key({})
'http'
>>> partition_of("web-1", 1)
0
>>> partition_of("web-1", 8) == partition_of("web-1", 8)  # stable across processes and runs
True
"""

from __future__ import annotations

import zlib

__all__ = ["partition_key", "partition_of", "source_key"]


def source_key(item: dict) -> str:
    """Which source a line belongs to for header inference: its named stream (a replayed or
    shipped file, a receiver's stream), else its transport (``http``, ``file``, ``syslog``)."""
    return item.get("stream") or item.get("source") or "http"


def partition_key(item: dict) -> str:
    """The key work is partitioned by: the item's host when it carries one, else
    :func:`source_key`."""
    host = item.get("host")
    if isinstance(host, str) and host:
        return host
    return source_key(item)


def partition_of(key: str | bytes, n: int) -> int:
    """The partition (0..n-1) of a key: CRC-32 of its UTF-8 bytes modulo ``n``, the same in
    every process and every run (Python's ``hash`` is salted per process)."""
    if n <= 1:
        return 0
    data = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
    return zlib.crc32(data) % n
