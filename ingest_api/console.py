"""The built-in web console: ``GET /`` (a single page) and ``GET /api/stream`` (live tail, SSE).

The page is plain HTML/JS/CSS from ``ingest_api/static/`` (no build step, no CDN: it works
offline) and reads only the public query API (``/api/events``, ``/api/stats``,
``/api/templates``) plus the stream below, so it works against every store (embedded SQLite,
Elasticsearch) alike.

``GET /api/stream`` is a server-sent-events tail: it polls the store for events stored after a
cursor (``EventQuery(after_seq=...)``, the same cursor ``smartlogs tail`` uses) every
``interval`` seconds and sends each non-empty page as one ``events`` message whose ``id`` is
the new cursor. On Elasticsearch, where events can become searchable out of seq order, it
stays ``ES_VISIBILITY_LAG_SECONDS`` behind and also sends events that show up late (see there). A browser's ``EventSource`` reconnects by itself and sends that id back as
``Last-Event-ID``, so a dropped connection resumes without gaps or duplicates. Store calls are
blocking and run in the threadpool. A stream ends by itself after ``max_seconds`` (the browser
reconnects seamlessly) and as soon as the server is asked to shut down, so it never holds up
Ctrl-C.

Log lines are hostile input: the page inserts them as text only (never as HTML), and is served
with a Content-Security-Policy that forbids inline and foreign scripts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from smartlogs.security import redact
from smartlogs.store import EventQuery
from smartlogs.store.base import MAX_SEQ
from streams.parsing import normalize_level

__all__ = ["STATIC_DIR", "router"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

# the only files the console serves (no path from the URL ever reaches the file system)
_ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "views.js": "text/javascript; charset=utf-8",  # how the views below start
    "incidents.js": "text/javascript; charset=utf-8",  # the incidents view
    "templates.js": "text/javascript; charset=utf-8",  # the Templates page
    "alerts.js": "text/javascript; charset=utf-8",  # the Alerts page
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

PAGE_SIZE = 500          # events per store query while catching up
# Elasticsearch: ``seq`` is the writer's clock in µs, taken *before* the bulk request, and each
# monthly/daily index becomes searchable at its own refresh; an event can therefore appear after events
# with higher seqs, and a cursor that jumped to the highest visible seq would skip it (a replay
# spanning many days lost 1,299 of 2,000 events that way). So on Elasticsearch the stream
# (1) hands out only events older than a short lag (most are visible by then), and
# (2) every few seconds compares the number of matching events in the last minute of seqs with
#     the number it sent, and when some are missing re-reads that minute and sends the late ones.
ES_VISIBILITY_LAG_SECONDS = 2.0
ES_LATE_WINDOW_SECONDS = 60.0
ES_SWEEP_SECONDS = 2.0
HEARTBEAT_SECONDS = 15   # an SSE comment line keeps proxies from closing an idle stream
# A stream replays at most this many stored events (by default; ``replay`` up to MAX_REPLAY)
# before it goes live: ``after=0`` on a large store used to send all of it (10 such streams:
# 845 MB in 45 s, 179% CPU). Older events are for /api/events (paged, filtered) to read.
DEFAULT_REPLAY = 1000
MAX_REPLAY = 10_000
RETRY_MS = 1000          # how long the browser waits before reconnecting

router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
def console_page() -> FileResponse:
    """The console (single page)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers=_SECURITY_HEADERS)


@router.get("/console/{name}", include_in_schema=False)
def console_asset(name: str):
    media_type = _ASSETS.get(name)
    if media_type is None:
        return JSONResponse({"error": "not_found", "detail": f"no console asset {name!r}"},
                            status_code=404)
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=_SECURITY_HEADERS)


def _server_exiting() -> bool:
    """True once uvicorn was asked to stop (its SIGINT/SIGTERM handler is a bound method of
    the Server, which sets ``should_exit``). Open streams then end, so shutdown is not held up."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            handler = signal.getsignal(sig)
        except (ValueError, OSError):  # pragma: no cover - exotic platforms
            continue
        server = getattr(handler, "__self__", None)
        if server is not None and getattr(server, "should_exit", False):
            return True
    return False


def _visibility_lag_us(store) -> int:
    """How far behind "now" (in seq units) the tail must stay for this store; 0 = none.

    SQLite hands out seqs inside the write transaction: everything up to ``last_seq`` is
    visible at once. Elasticsearch seqs are µs timestamps taken before the write."""
    if type(store).__name__ == "ElasticsearchStore":
        return int(ES_VISIBILITY_LAG_SECONDS * 1_000_000)
    return 0


def _late_events(store, filters: dict, lo: int, hi: int, sent: dict) -> list[dict]:
    """Matching events with ``lo < seq <= hi`` that were not sent (they became visible late).
    Two cheap counts first; the window is re-read only when the counts say something is missing."""
    in_window = (store.search(EventQuery(after_seq=lo, limit=1, total_limit=None, **filters)).total
                 - store.search(EventQuery(after_seq=hi, limit=1, total_limit=None, **filters)).total)
    if in_window <= sum(1 for seq in sent if lo < seq <= hi):
        return []
    out, after = [], lo
    while True:
        page = store.search(EventQuery(after_seq=after, limit=PAGE_SIZE, **filters)).events
        for e in page:
            if e["seq"] > hi:
                return out
            if e["seq"] not in sent:
                out.append(e)
        if len(page) < PAGE_SIZE:
            return out
        after = page[-1]["seq"]


def _replay_start(store, filters: dict, cursor: int, replay: int) -> tuple[int, int]:
    """(the cursor to start from, how many matching events that skips): ``cursor`` itself when
    at most ``replay`` matching events were stored after it, else just below the newest
    ``replay`` of them. A query of at most ``replay`` events, newest stored first (and a count
    when some are skipped)."""
    if replay:
        newest = store.search(EventQuery(limit=replay, arrival=True, **filters))
        if len(newest.events) < replay or newest.events[-1]["seq"] - 1 <= cursor:
            return cursor, 0
        start = newest.events[-1]["seq"] - 1
    else:
        start = store.search(EventQuery(limit=1)).last_seq
        if start <= cursor:
            return cursor, 0
    behind = store.search(EventQuery(after_seq=cursor, limit=1, total_limit=None,
                                      **filters)).total
    return start, max(behind - replay, 0)


def _sse(data: dict, *, event: str, id: int | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {id}\n" if id is not None else "")
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


@router.get(
    "/api/stream",
    summary="Live tail (server-sent events)",
    description=(
        "Server-sent events. `ready` once, with the starting cursor; then one `events` message "
        "per page of newly stored events (`{events, last_seq}`, oldest first; the message id is "
        "the cursor to resume from); `store_error` when the store is unreachable (the stream goes on); "
        "`unauthorized`, and the stream ends, when its key was revoked or keys were turned on since it opened. "
        "Starts after `after`, or the `Last-Event-ID` header, or else at the newest stored "
        "event; but it replays at most `replay` stored events before going live: when more were "
        "stored after the cursor, it starts at the newest `replay` of them and `ready` says so "
        "(`skipped`: how many older ones it left out, to read with /api/events). "
        "Filters: host, source, level, anomaly."
    ),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    host: str | None = None,
    source: Annotated[str | None, Query(max_length=1024, description=(
        "the events of one source (a host, else the service, file, stream or API key)"))] = None,
    level: str | None = None,
    anomaly: Annotated[bool | None, Query(description="true: only anomalies")] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="start after this cursor (seq)")] = None,
    interval: Annotated[float, Query(ge=0.1, le=10, description="seconds between polls")] = 0.5,
    max_seconds: Annotated[float, Query(ge=1, le=3600, description="end the stream after this long; the browser reconnects")] = 300,
    replay: Annotated[int, Query(ge=0, le=MAX_REPLAY, description="most stored events sent before going live")] = DEFAULT_REPLAY,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
):
    store = request.app.state.store
    filters = {"host": host or None, "source": source or None, "level": normalize_level(level),
               "anomaly": anomaly}
    if last_event_id and last_event_id.strip().isdigit() and int(last_event_id.strip()) <= MAX_SEQ:
        cursor: int | None = int(last_event_id.strip())
    else:
        cursor = after
    skipped = 0
    if cursor is None:  # start at the newest stored event: only what arrives from now on
        first = await run_in_threadpool(store.search, EventQuery(limit=1))
        cursor = first.last_seq
    else:  # bounded replay: at most the newest ``replay`` events stored after the cursor
        cursor, skipped = await run_in_threadpool(_replay_start, store, filters, cursor, replay)
    lag_us = _visibility_lag_us(store)
    if lag_us:  # events below a recent cursor may not be visible yet: start at the watermark
        cursor = min(cursor, time.time_ns() // 1000 - lag_us)

    async def body():
        nonlocal cursor
        ready = {"cursor": cursor, **({"skipped": skipped, "replay": replay} if skipped else {})}
        yield f"retry: {RETRY_MS}\n".encode() + _sse(ready, event="ready", id=cursor)
        started = last_sent = last_sweep = time.monotonic()
        errors = 0
        # the key was checked when the stream opened; it may be revoked (or keys turned on) since
        auth = request.scope.get("state", {}).get("auth")  # (secret, scope) it was let in with
        keys = request.app.state.keys
        floor = cursor       # late events are looked for above where this stream started only
        sent: dict = {}      # Elasticsearch: seqs sent in the late-event window (insertion order)
        window_us = int(ES_LATE_WINDOW_SECONDS * 1_000_000)
        while True:
            if _server_exiting() or await request.is_disconnected():
                return
            if time.monotonic() - started > max_seconds:
                return
            if auth is not None and not keys.admits(*auth):
                yield _sse({"error": "unauthorized",
                            "detail": "the API key was revoked or keys were turned on since this "
                                      "stream opened: reconnect with a valid key"},
                           event="unauthorized")
                return
            try:
                res = await run_in_threadpool(
                    store.search, EventQuery(after_seq=cursor, limit=PAGE_SIZE, **filters))
            except Exception as exc:  # noqa: BLE001 - the store may be down; keep the stream
                errors += 1
                log.warning("live tail: store query failed (%s)", exc)
                yield _sse({"error": "store_unavailable", "detail": redact(exc)[:300]},
                           event="store_error")
                last_sent = time.monotonic()
                await asyncio.sleep(min(interval * 2 ** errors, 10))
                continue
            errors = 0
            events, last_seq = res.events, res.last_seq
            full = len(events) >= PAGE_SIZE
            if lag_us:  # hand out only what is older than the watermark (the rest comes later)
                watermark = time.time_ns() // 1000 - lag_us
                ready = [e for e in events if e["seq"] <= watermark]
                full = full and len(ready) == len(events)
                events, last_seq = ready, min(last_seq, watermark)
            # a full page may have more behind it; otherwise everything up to last_seq was seen
            new_cursor = events[-1]["seq"] if full else max(cursor, last_seq)
            if events:
                yield _sse({"events": events, "last_seq": new_cursor}, event="events",
                           id=new_cursor)
                last_sent = time.monotonic()
            elif new_cursor != cursor:
                # nothing matched the filters, but the cursor moved: remember it for a resume
                yield _sse({"events": [], "last_seq": new_cursor}, event="events", id=new_cursor)
                last_sent = time.monotonic()
            cursor = new_cursor
            if lag_us:
                for e in events:
                    sent[e["seq"]] = None
                if time.monotonic() - last_sweep >= ES_SWEEP_SECONDS:
                    last_sweep = time.monotonic()
                    lo = max(floor, cursor - window_us)
                    while sent and next(iter(sent)) <= lo:  # forget what left the window
                        sent.pop(next(iter(sent)))
                    try:
                        late = await run_in_threadpool(_late_events, store, filters, lo, cursor, sent)
                    except Exception as exc:  # noqa: BLE001 - next sweep
                        log.warning("live tail: late-event sweep failed (%s)", exc)
                        late = []
                    if late:
                        for e in late:
                            sent[e["seq"]] = None
                        yield _sse({"events": late, "last_seq": cursor, "late": True},
                                   event="events", id=cursor)
                        last_sent = time.monotonic()
            if full:
                await asyncio.sleep(0)  # catching up: next page at once
                continue
            if time.monotonic() - last_sent > HEARTBEAT_SECONDS:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(interval)

    return StreamingResponse(body(), media_type="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"})
