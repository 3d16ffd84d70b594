"""Which source a line comes from, and which partition it belongs to: the rules both runtimes
share.

Every event has a **source** (:func:`source_of`), the thing an operator names it by and the
scorer keeps a history per: the first of

1. its host, when it has one (a header's or an event's ``host``);
2. the service it declares: a structured event's ``service``/``app``/``component`` (a Loki
   service label, an OTLP resource's ``service.name`` and a bulk document's ``service.name``
   arrive there), as its family (``sshd[42]`` and ``sshd(pam_unix)`` are ``sshd``);
3. the stream the item names (:func:`source_key`): a shipped file's path
   (``smartlogs ship``), a replayed file's name (``smartlogs replay``, or the
   ``X-SmartLogs-Stream`` header), a receiver's stream (the syslog peer's address, a Loki
   stream's labels);
4. the name of the API key that sent it;
5. for a raw line that names none of these, the family of the component its header gives;
6. else its receiver (``http``, ``file``, ``syslog``, ``loki``, ``otlp``, ...), which the event
   keeps apart as ``receiver``.

A raw line's component comes after the stream: the lines of one file or stream are one source
whose parts are its components, not dozens of sources (one per logging class or tag).

Work is keyed by what an item names before it is parsed (:func:`partition_key`) and spread
over ``n`` partitions by a stable hash of that key (:func:`partition_of`). Everything a model
learns (trees, threshold, rates, incidents) lives in the state of the key's partition, so a
partition can move to another worker or shard and take what was learned with it. The key is the
stream the item names, when it names one, else its source by the rule above (host, service, API
key, receiver): the hosts of one stream are each other's fleet (``streams.scoring`` judges a
host's floods and novelties against the hosts of its kind of source, a kind being the named
stream), so they stay in one partition: keyed by host, a fleet is split over several models
and each host is judged against a part of it (measured with ``smartlogs eval production
--partitions P``: bench/QUALITY.md, "With partitions"). A raw line is keyed by its
stream in any case: parsing to find a host would cost as much as the pipeline's own parse.
What does not scale out by this key: one stream's lines all go through one partition, so a
stream that outgrows a worker is split by the sender into several streams (per service or
host group).

>>> partition_key({"host": "web-1", "stream": "app.log", "source": "http"})
'app.log'
>>> partition_key({"host": "web-1", "source": "http"})
'web-1'
>>> partition_key({"stream": "app.log", "source": "http"})
'app.log'
>>> partition_key({"source": "syslog"})
'syslog'
>>> partition_key({})
'http'
>>> source_of({"raw": "...", "stream": "app.log", "source": "http"}, host="db-2")
'db-2'
>>> source_of({"message": "m", "stream": "app.log", "source": "otlp"}, service="billing")
'billing'
>>> source_of({"raw": "...", "stream": "app.log", "source": "http"}, component="sshd")
'app.log'
>>> source_of({"raw": "...", "key": "edge-shipper", "source": "http"})
'edge-shipper'
>>> source_of({"raw": "...", "source": "http"}, component="sshd(pam_unix)")
'sshd'
>>> partition_of("web-1", 1)
0
>>> partition_of("web-1", 8) == partition_of("web-1", 8)  # stable across processes and runs
True
"""

from __future__ import annotations

import re
import zlib

__all__ = ["component_family", "partition_key", "partition_of", "source_key", "source_of"]

# where a component's instance or detail begins: ``sshd[42]``, ``sshd(pam_unix)``, ``CRON:``
_FAMILY_END = re.compile(r"[\[(:\s]")


def component_family(component: str | None) -> str | None:
    """A component without its instance or detail (``sshd[42]``, ``sshd(pam_unix)`` →
    ``sshd``); None when nothing is left."""
    if not component:
        return None
    m = _FAMILY_END.search(component)
    family = (component[:m.start()] if m else component).strip()
    return family or None


def source_key(item: dict) -> str:
    """The source an item names before any parse: its named stream (a shipped or replayed
    file, a receiver's stream), else the API key's name, else its receiver (``http``, ``file``,
    ``syslog``, ...). Header layouts are learned per this key."""
    return item.get("stream") or item.get("key") or item.get("source") or "http"


def source_of(item: dict, host: str | None = None, service: str | None = None,
              component: str | None = None) -> str:
    """An event's source (the module's rule) from its item and what its line gave: ``host``,
    the ``service`` a structured event declares (its service/app/component), the
    ``component`` a raw line's header names."""
    if host:
        return host
    family = component_family(service)
    if family:  # a declared service
        return family
    named = item.get("stream") or item.get("key")
    if named:
        return named
    family = component_family(component)
    if family:  # a raw line that names nothing else: its program is its best name
        return family
    return item.get("source") or "http"


def partition_key(item: dict) -> str:
    """The key work is partitioned by: the stream the item names, else :func:`source_of` with
    the item's own host and, for a structured event, its service (a raw line's header is not
    parsed for it)."""
    stream = item.get("stream")
    if isinstance(stream, str) and stream:
        return stream
    host = item.get("host")
    service = item.get("component") if "message" in item else None
    return source_of(item, host if isinstance(host, str) else None,
                     service if isinstance(service, str) else None)


def partition_of(key: str | bytes, n: int) -> int:
    """The partition (0..n-1) of a key: CRC-32 of its UTF-8 bytes modulo ``n``, the same in
    every process and every run (Python's ``hash`` is salted per process)."""
    if n <= 1:
        return 0
    data = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
    return zlib.crc32(data) % n
