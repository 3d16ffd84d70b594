"""Receivers for the shippers people already run: Elasticsearch ``_bulk``, Loki push, OTLP/HTTP logs.

Each module exposes a FastAPI ``router`` and keeps its decoding pure (bytes → items, no I/O) so it
can be unit-tested without a server:

* :mod:`ingest_api.receivers.es_bulk` — ``POST|PUT /_bulk``, ``/{index}/_bulk`` and the few
  endpoints Elasticsearch clients probe (``GET|HEAD /``, ``/_license``, ``/_xpack``,
  ``/_cluster/health``), answering like Elasticsearch 8.19;
* :mod:`ingest_api.receivers.loki` — ``POST /loki/api/v1/push``, JSON or snappy protobuf;
* :mod:`ingest_api.receivers.otlp` — ``POST /v1/logs``, OTLP protobuf or JSON, gzip optional.

They produce the same items as ``POST /ingest`` (``message``, ``ts``, ``host``, ``component``,
``level``, ``pid``, ``fields``, ``id``) and hand them to the same transport: a success answer
is sent only once ``transport.accept`` returned (spool commit, or broker confirm in the full
stack); when it refuses, the answer is the protocol's "retry later" (503/429 + Retry-After).

Idempotency: an event without an id of its own (Elasticsearch's ``_id``, stored as
``es:<index>:<_id>``) gets ``<source>-<digest of the decoded request body>-<position>`` (for
``_bulk`` the digest also covers the URL's index). A shipper that resends the same request
after a lost or failed answer therefore produces the same ids, and the store keeps each id
once: no duplicates. Two byte-identical requests are taken as one: real shippers stamp each
record with its time, so distinct requests differ, but records without a time (a heartbeat)
posted twice in identical bodies are stored once. ``/ingest`` is different: without client
ids it draws a random batch id, so a repeated body is stored twice (docs/receivers.md).

This package imports nothing heavy: the protobuf modules load with the router that needs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from contextlib import asynccontextmanager

from fastapi import Request
from starlette.requests import ClientDisconnect

from ingest_api.decode import IngestError
from smartlogs import metrics

__all__ = ["accept_items", "assign_ids", "body_digest", "ingest_slot", "LineBudget", "read_body", "reject",
           "settings_of"]

log = logging.getLogger(__name__)


def settings_of(request: Request):
    """The app's settings: ``app.state.settings`` if set, else the transport's, else the env."""
    s = getattr(request.app.state, "settings", None)
    if s is None:
        s = getattr(getattr(request.app.state, "transport", None), "settings", None)
    if s is None:
        from smartlogs.settings import get_settings

        s = get_settings()
    return s


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading it all.

    A client that goes away mid-body is its own business, not a server error: one INFO line,
    no traceback, and nothing of the request is taken (``client_disconnected``)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise IngestError(413, "body_too_large", f"body is {declared} bytes, the limit is {limit}",
                          limit=limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise IngestError(413, "body_too_large", f"body exceeds the limit of {limit} bytes",
                                  limit=limit)
            chunks.append(chunk)
    except ClientDisconnect:
        log.info("%s %s: the client went away after %d bytes of its body; nothing taken",
                 request.method, request.url.path, size)
        raise IngestError(400, "client_disconnected",
                          "the client closed the connection before sending the whole body") from None
    return b"".join(chunks)


class LineBudget:
    """A weighted semaphore in lines: ``ingest_concurrency`` full requests' worth
    (``× max_lines_per_request``) decoded and waiting for the transport at once.

    A decoded request costs a few hundred bytes of objects per line, so lines are what to
    bound. A request weighs its lines when they can be counted before decoding (an identity
    body: one C scan for newlines), else a full share: so thousands of one-line requests can be
    in flight at once (and share one spool commit or broker confirm), while a handful of large
    ones wait their turn holding only their raw body."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.free = capacity
        self._cond = asyncio.Condition()
        self._waiting = 0

    @asynccontextmanager
    async def hold(self, weight: int):
        weight = max(1, min(weight, self.capacity))
        if self.free < weight:
            async with self._cond:
                self._waiting += 1
                try:
                    await self._cond.wait_for(lambda: self.free >= weight)
                finally:
                    self._waiting -= 1
                self.free -= weight
        else:  # it fits: taken at once (one event loop, no await in between: no lock needed)
            self.free -= weight
        try:
            yield
        finally:
            self.free += weight
            if self._waiting:
                async with self._cond:
                    self._cond.notify_all()


def request_weight(request: Request, body: bytes | None) -> int | None:
    """Lines ``body`` holds if that is known before decoding it, else None (a full share)."""
    if body is None or request.headers.get("content-encoding", "identity").strip().lower() not in (
            "", "identity"):
        return None
    return body.count(b"\n") + 1


def ingest_slot(request: Request, body: bytes | None = None):
    """Hold a share of the app's ``LineBudget`` while a body is decoded and its items handed to
    the transport (every receiver takes one: one shared bound). Without ``body`` (or for an
    encoded one), a full request's share.

    Decoding is CPU-bound under the GIL: more requests decoding at once add memory, not
    throughput. The others wait here holding only their raw body, so eight concurrent large
    bodies peak at about ``ingest_concurrency`` decoded ones, and the threadpool stays free for
    ``/healthz``."""
    state = request.app.state
    s = settings_of(request)
    budget = getattr(state, "ingest_slots", None)
    if budget is None:  # one per app, created on its event loop
        budget = state.ingest_slots = LineBudget(s.ingest_concurrency * s.max_lines_per_request)
    weight = request_weight(request, body)
    # the budget's own context manager (``async with ingest_slot(...)``), not one wrapping it
    return budget.hold(s.max_lines_per_request if weight is None else weight)


def body_digest(data: bytes) -> str:
    """A short, stable digest of a decoded request body (the basis of generated ids)."""
    return hashlib.blake2b(data, digest_size=10).hexdigest()


def assign_ids(items: list[dict], source: str, data: bytes) -> list[dict]:
    """Give every item without an ``id`` the id ``<source>-<digest(data)>-<position>``."""
    prefix = f"{source}-{body_digest(data)}-"
    for i, item in enumerate(items):
        if not item.get("id"):
            item["id"] = f"{prefix}{i}"
    return items


def sender_key(request: Request) -> str | None:
    """The name of the API key a request was let in with (None while keys are off): the
    source of the lines that name nothing else (``streams.partitions.source_of``)."""
    return (request.scope.get("state") or {}).get("key_name")


async def accept_items(request: Request, items: list[dict], source: str) -> None:
    """Stamp ``received``/``source`` (the receiver) and the API key's name, and hand the
    items to the transport; raises ``IngestError``.

    Returns only once the transport took them durably."""
    batch_id, now = secrets.token_hex(6), time.time()
    key = sender_key(request)
    for i, item in enumerate(items):
        item.setdefault("id", f"{batch_id}-{i}")
        item["received"] = now
        item["source"] = source
        if key:
            item["key"] = key
    with metrics.ACCEPT_SECONDS.time():
        await request.app.state.transport.accept(items, batch_id)
    metrics.accepted(source, len(items))


def reject(reason: str, n: int = 1, detail: str | None = None) -> None:
    """Count a refused request (or ``n`` refused items) under ``reason``; kept among the
    recent refusals with the request's client (``metrics.rejected``)."""
    metrics.rejected(reason, n, detail=detail)
