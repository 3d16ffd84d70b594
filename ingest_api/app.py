"""The FastAPI application: ingest (``POST /ingest``) and queries (``/api/...``).

``create_app()`` builds the embedded platform (the API, the pipeline runner and the SQLite
store in one process); ``create_app(mode="full")`` the production API (RabbitMQ for ingest,
Elasticsearch for queries). Only the transport and the store differ. Every refusal is a 4xx with a JSON body ``{"error", "detail"}``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import re
import secrets
import time
from functools import partial
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi import Path as FastApiPath
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ingest_api.alerts_routes import router as alerts_router
from ingest_api.console import router as console_router
from ingest_api.incidents_routes import router as incidents_router
from ingest_api.decode import INGEST_REQUEST_BODY, IngestError, decode_body
from ingest_api.docs import add_offline_docs
from ingest_api.openapi import (EVENTS_RESPONSE, REFUSAL_REF, REFUSAL_SCHEMA, TIME_RE, TimeText,
                                 refusals, time_query)
from ingest_api.receivers import (LineBudget, es_bulk, ingest_slot, loki, otlp, read_body,
                                 sender_key)
from ingest_api.receivers.kafka_source import start_kafka_source
from ingest_api.receivers.syslog import start_syslog
from ingest_api.store_errors import STORE_ERRORS, store_refusal
from ingest_api.templates_routes import router as templates_router
from ingest_api.timeouts import ReadTimeoutMiddleware
from ingest_api.transports import build_embedded, build_full
from smartlogs import __version__, metrics
from smartlogs.auth import KeyStore, RateLimiter, parse_authorization, required_scope
from smartlogs.security import redact
from smartlogs.settings import Settings, get_settings
from smartlogs.store import EventQuery
from smartlogs.store.base import MAX_SEQ, TOTAL_LIMIT, QueryInterrupted, QueryTimeout, sort_key
from smartlogs.store.query import MAX_TERMS, QueryError, QueryTooComplex, parse_query
from streams.parsing import normalize_level

__all__ = ["create_app", "parse_time"]

log = logging.getLogger(__name__)

_RELATIVE = re.compile(r"^([0-9]+(?:\.[0-9]+)?) *(s|m|h|d|w)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_INLINE_DECODE_BYTES = 16 * 1024  # decoded in the event loop up to this size (~0.1 ms of work)


def parse_time(value: str | None, *, now: float | None = None, field: str | None = None) -> float | None:
    """'2005-06-14T15:16:01Z', epoch seconds, or a relative age such as '15m', '2h', '7d': the
    values ``TIME_PATTERN`` (the schema's pattern of since/until) matches, and only those.
    A bad value is a 422 whose body names ``field`` (``since``/``until``) when given."""
    if value is None or value == "":
        return None
    v = value
    out = None
    if TIME_RE.fullmatch(v):
        m = _RELATIVE.match(v)
        if m:
            out = (now if now is not None else time.time()) - float(m.group(1)) * _UNIT[m.group(2)]
        else:
            try:
                out = float(v)
            except ValueError:
                try:  # the pattern admits only real dates; a refusal here would be a bug in it
                    dt = datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v)
                    if dt.tzinfo is None:
                        dt = dt.replace(tzinfo=timezone.utc)
                    out = dt.timestamp()
                except (ValueError, OverflowError):
                    log.warning("since/until %r matches TIME_PATTERN but is not a date", v)
    if out is None or not math.isfinite(out):
        raise IngestError(422, "invalid_time",
                          f"{field + '=' if field else ''}{value!r} is not a time: use ISO 8601, "
                          "epoch seconds, or an age like 15m, 2h, 7d",
                          **({"field": field} if field else {}))
    return out


def _declare_refusal_shape(app: FastAPI) -> None:
    """The OpenAPI schema (and so /docs and schema-driven clients) shows the 4xx body the API
    really sends: one component, ``Refusal`` (``ingest_api.openapi``), instead of FastAPI's
    default 422 body (``{"detail": [...]}``) on every route."""
    base = app.openapi
    default = "#/components/schemas/HTTPValidationError"

    def point_at_refusal(node) -> None:
        if isinstance(node, dict):
            if node.get("$ref") == default:
                node["$ref"] = REFUSAL_REF
            for value in node.values():
                point_at_refusal(value)
        elif isinstance(node, list):
            for value in node:
                point_at_refusal(value)

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = base()
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)  # referred to only by the default above
            schemas["Refusal"] = copy.deepcopy(REFUSAL_SCHEMA)
            point_at_refusal(doc["paths"])
        return app.openapi_schema

    app.openapi = openapi


TimeBasis = Annotated[Literal["event", "arrival"], Query(alias="time", description=(
    "what since/until and the windows count in: event (the time the log line carries, the "
    "default) or arrival (when SmartLogs received it)"))]
MAX_SOURCE_LENGTH = 1024  # characters of source= (Elasticsearch indexes keywords up to 1,024)
MAX_Q_LENGTH = 2000  # characters of q (its terms are bounded by smartlogs.store.query.MAX_TERMS)


def _check_q(q: str | None) -> None:
    """Parse ``q`` before any store sees it: a query that cannot be read, that is too complex,
    or that has no words at all is a 422 that says what and where."""
    if not q or not q.strip():
        return
    try:
        node = parse_query(q)
    except QueryError as exc:
        where = {"position": exc.position} if exc.position is not None else {}
        error = "query_too_complex" if isinstance(exc, QueryTooComplex) else "invalid_query"
        extra = {"max_terms": MAX_TERMS} if isinstance(exc, QueryTooComplex) else {}
        raise IngestError(422, error, f"q: {exc}", field="q", **where, **extra) from None
    if node is None:
        # the index holds words (letters and digits): "!!!" or "🚀" alone would filter
        # nothing and return everything, which reads as "every event matches"
        raise IngestError(422, "invalid_query",
                          f"q={q!r} has no words to search for: search matches words "
                          "(letters and digits); punctuation and emoji are not indexed",
                          field="q")


def _encode_cursor(order: str, key: tuple) -> str:
    """An opaque cursor: where the page ended, in which order (base64url JSON)."""
    import base64

    import orjson

    return base64.urlsafe_b64encode(orjson.dumps([order, *key])).decode().rstrip("=")


def _decode_cursor(cursor: str, order: str | None) -> tuple[str, tuple]:
    """(the order the cursor pages, its key); ``order``: the one the request asked for."""
    import base64
    import binascii

    import orjson

    def bad(why: str) -> IngestError:
        return IngestError(422, "invalid_cursor", f"cursor: {why}; pass the `next` of the "
                           "previous answer unchanged, with the same order", field="cursor")

    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad("not a cursor this server made") from None
    shape = {"time": (float, int), "arrival": (int,), "tail": (int,)}
    if not isinstance(raw, list) or not raw or raw[0] not in shape:
        raise bad("not a cursor this server made")
    if order is not None and raw[0] != order:
        raise bad(f"it pages order={raw[0]}, this request asks for order={order}")
    order, key = raw[0], raw[1:]
    types = shape[order]
    if len(key) != len(types) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 2**62
            for v in key):
        raise bad("not a cursor this server made")
    return order, tuple(t(v) for t, v in zip(types, key))


def _interrupt(store) -> None:
    stop = getattr(store, "interrupt_queries", None)
    if stop is not None:
        stop()


async def _interrupt_queries_on_exit(store) -> None:
    """uvicorn waits for running requests before it shuts the app down: once it was asked to
    stop (SIGINT/SIGTERM), running queries are stopped inside the store so that wait is short."""
    from ingest_api.console import _server_exiting

    while not _server_exiting():
        await asyncio.sleep(0.2)
    log.info("shutting down: stopping running queries")
    _interrupt(store)


_STREAM_MAX = 200


def stream_name(value: str | None) -> str | None:
    """``X-SmartLogs-Stream``: which source the lines come from (a file, an application), so
    that its header layout is learned apart; printable text, at most 200 characters."""
    if not value:
        return None
    value = "".join(c for c in value if c.isprintable()).strip()[:_STREAM_MAX]
    return value or None


_INGEST_HEADERS = frozenset((b"content-type", b"content-encoding", b"x-smartlogs-source",
                             b"x-smartlogs-stream"))


def _ingest_headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """The request headers ``POST /ingest`` reads, in one pass over the ASGI headers (names
    are lower case there), the first of each as ``request.headers.get`` gives it: four
    lookups through Starlette's ``Headers`` scanned the list four times (bench/RESULTS.md,
    small requests)."""
    found: dict[bytes, str] = {}
    for name, value in raw:
        if name in _INGEST_HEADERS and name not in found:
            found[name] = value.decode("latin-1")
    return found


def create_app(settings: Settings | None = None, *, mode: str = "embedded") -> FastAPI:
    """The API. ``embedded``: spool + in-process pipeline + SQLite. ``full``: RabbitMQ + Elasticsearch."""
    s = settings or get_settings()
    build = {"embedded": build_embedded, "full": build_full}[mode]
    metrics.expose("api", *(("pipeline", "spool") if mode == "embedded" else ()))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        transport, store = build(s)
        app.state.ingest_slots = LineBudget(s.ingest_concurrency * s.max_lines_per_request)
        await transport.start()
        app.state.transport, app.state.store = transport, store
        if mode != "embedded" and s.alert_rules is not None:  # the worker raises them
            from streams.runtime.alerting import AlertsView

            app.state.alerts_view = AlertsView.from_settings(s, store.client)
        app.state.syslog = await start_syslog(s, transport)  # None when off or the port is taken
        if app.state.syslog is not None:
            app.state.syslog_health = {"listening": True,
                                       "address": f"{app.state.syslog.host}:{app.state.syslog.port}"}
        elif s.syslog_port:  # asked for and not listening: /healthz and `status` say so
            app.state.syslog_health = {"listening": False, "address": f"{s.syslog_host}:{s.syslog_port}",
                                       "error": "could not bind the port (see the server log)"}
        else:
            app.state.syslog_health = None
        app.state.kafka_source = await start_kafka_source(s, transport)  # None without a topic
        log.info("SmartLogs %s started in %s mode", __version__, mode)
        watcher = asyncio.create_task(_interrupt_queries_on_exit(store))
        try:
            yield
        finally:
            watcher.cancel()
            _interrupt(store)
            if app.state.kafka_source is not None:  # commits what the transport took
                await app.state.kafka_source.stop()
            if app.state.syslog is not None:  # before the transport: it drains what it read
                await app.state.syslog.stop()
            await transport.stop()
            store.close()

    app = FastAPI(
        title="SmartLogs",
        version=__version__,
        description="Real-time log ingest, template mining, anomaly detection and search.",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # /docs is served offline below (ingest_api/docs.py)
        # no OpenTelemetry here (Prometheus metrics at /metrics): FastAPI would otherwise ask
        # the OpenTelemetry providers on every request whether one was configured since
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    add_offline_docs(app)
    _declare_refusal_shape(app)

    keys = KeyStore(s.keys_path)
    limiter = RateLimiter(s.rate_limit_per_key) if s.rate_limit_per_key > 0 else None
    # added first, so innermost: POST /ingest passes the read timeout and auth like any route
    app.add_middleware(DirectRoute, fastapi_app=app, method="POST", path="/ingest")
    app.add_middleware(AuthMiddleware, keys=keys, limiter=limiter)
    app.add_middleware(ReadTimeoutMiddleware, timeout=s.read_timeout)  # 408 for a stalled body
    app.state.keys = keys

    # -- errors: always JSON, always saying what is wrong ---------------------------------
    @app.exception_handler(IngestError)
    async def _ingest_error(request: Request, exc: IngestError):
        metrics.rejected(exc.body["error"], detail=exc.body.get("detail"))
        headers = {"Retry-After": str(exc.body["retry_after"])} if "retry_after" in exc.body else None
        return JSONResponse(exc.body, status_code=exc.status, headers=headers)

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, exc: QueryError):  # raised by a store
        metrics.rejected("invalid_query", detail=f"q: {exc}")
        return JSONResponse({"error": "invalid_query", "detail": f"q: {exc}", "field": "q"},
                            status_code=422)

    async def _store_error(request: Request, exc: Exception):  # Elasticsearch busy or down
        return await _ingest_error(request, store_refusal(exc))

    for error_type in STORE_ERRORS:
        app.add_exception_handler(error_type, _store_error)

    @app.exception_handler(QueryTimeout)
    async def _query_timeout(request: Request, exc: QueryTimeout):
        if isinstance(exc, QueryInterrupted):
            error, detail = "shutting_down", str(exc)
        else:
            error = "query_timeout"
            detail = (f"{exc}: narrow it (a time range, a host, fewer or rarer words); the "
                      "budget is the server's query_timeout setting")
        metrics.rejected(error, detail=detail)
        return JSONResponse({"error": error, "detail": detail}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors)
        metrics.rejected("invalid_request", detail=detail)  # kept among the recent refusals
        return JSONResponse({"error": "invalid_request", "detail": detail, "errors": errors},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": "http_error", "detail": exc.detail},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # a bug: say so, in JSON
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal_error", "detail": "unexpected server error; see the server log"},
                            status_code=500)

    # -- ingest ---------------------------------------------------------------------------
    @app.post(
        "/ingest",
        status_code=202,
        summary="Send log events",
        description=(
            "Body: one JSON event, a JSON array, NDJSON, or text/plain (one raw log line per "
            "line); optionally gzip-encoded. Answers 202 once the events are on disk."
        ),
        responses={202: {"description": "accepted: {accepted, ids}"},
                   **refusals(400, 413, 415, 422, 503, s422="invalid event")},
        openapi_extra={"requestBody": INGEST_REQUEST_BODY},
    )
    async def ingest(request: Request):
        body = await read_body(request, s.max_body_bytes)
        async with ingest_slot(request, body):  # bounded decoding: see receivers.ingest_slot
            h = _ingest_headers(request.scope["headers"])
            decode = partial(decode_body, body, content_type=h.get(b"content-type"),
                             content_encoding=h.get(b"content-encoding"),
                             max_bytes=s.max_body_bytes, max_line_length=s.max_line_length,
                             multiline=s.multiline, max_lines=s.max_lines_per_request)
            # a small body is decoded at once: the hop to a worker thread costs more than the work
            items = decode() if len(body) <= _INLINE_DECODE_BYTES else await run_in_threadpool(decode)
            del body, decode
            source = "file" if h.get(b"x-smartlogs-source") == "file" else "http"
            stream = stream_name(h.get(b"x-smartlogs-stream"))
            key = sender_key(request)
            metrics.child(metrics.EVENTS_RECEIVED, source).inc(len(items))
            batch_id, now = secrets.token_hex(6), time.time()
            for i, item in enumerate(items):
                item.setdefault("id", f"{batch_id}-{i}")
                item["received"] = now
                item["source"] = source
                if stream:  # the named source whose header layout is learned (streams.headers)
                    item.setdefault("stream", stream)
                if key:  # the source of a line that names nothing else (streams.partitions)
                    item["key"] = key
                item["cid"] = batch_id  # correlation id, logged by every hop (smartlogs.logs)
            started = time.perf_counter()
            try:
                await request.app.state.transport.accept(items, batch_id)
            finally:  # (what ACCEPT_SECONDS.time() does, without its context manager object)
                metrics.ACCEPT_SECONDS.observe(time.perf_counter() - started)
        metrics.accepted(source, len(items))
        log.info("accepted %d events", len(items), extra={"correlation_id": batch_id})
        # serialised here: FastAPI's own encoding of a returned dict walks every id in Python
        # (~1.6 µs an id, a tenth of the API's CPU per line with batches of 1000)
        return Response(orjson.dumps({"accepted": len(items), "ids": [item["id"] for item in items]}),
                        status_code=202, media_type="application/json")

    @app.get("/ingest/runs/{run_id}", summary="How many lines of a replay run are stored")
    def run_stored(request: Request, run_id: Annotated[str, FastApiPath(
            min_length=1, max_length=200, description="the run id a replay printed")]):
        # a replay gives each line the id RUN_ID:LINE; ingest scope, as the replay's key has
        n = request.app.state.store.count_ids(f"{run_id}:")
        return {"run_id": run_id, "stored": n}

    # -- queries --------------------------------------------------------------------------
    @app.get("/api/events", summary="Search stored events, newest first",
             responses={200: EVENTS_RESPONSE})
    def events(
        request: Request,
        q: Annotated[str | None, Query(max_length=MAX_Q_LENGTH, description=(
            'full-text search in the message: words (all required), "a phrase", prefix*, '
            f"a OR b, -word / NOT word, (groups); at most {MAX_TERMS} different terms"))] = None,
        host: str | None = None,
        source: Annotated[str | None, Query(min_length=1, max_length=MAX_SOURCE_LENGTH, description=(
            "the events of one source: a host, else the service, file, stream or API key the "
            "event came from (an event's `source`)"))] = None,
        level: str | None = None,
        template: Annotated[str | None, Query(description="template id, e.g. T12")] = None,
        anomaly: Annotated[bool | None, Query(description="true: only anomalies")] = None,
        incident: Annotated[str | None, Query(max_length=64, description=(
            "only the flagged lines of this incident (its id, see /api/incidents)"))] = None,
        since: Annotated[TimeText | None, time_query("time ≥ this, event or arrival time (see time)")] = None,
        until: Annotated[TimeText | None, time_query("time < this")] = None,
        after: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="tail cursor: events stored after this seq, oldest first; with order=tail or no order (not with order=time or arrival, nor with cursor)")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        order: Annotated[Literal["time", "arrival", "tail"] | None, Query(
            description="time: newest first by event time (the default); arrival: newest "
                        "first by arrival (what was stored last); tail: oldest stored first "
                        "(the order of after)")] = None,
        basis: TimeBasis = "event",
        cursor: Annotated[str | None, Query(max_length=200, description=(
            "the next page: the `next` of the previous answer (same filters and order); "
            "`next` is null on the last page"))] = None,
        exact_total: Annotated[bool, Query(description=(
            f"count every match: total is exact whatever it is (by default the count stops "
            f"past {TOTAL_LIMIT:,}: total {TOTAL_LIMIT:,} and total_relation gte). Slower on "
            "a large store: a query matching millions of events reads them all"))] = False,
    ):
        _check_q(q)
        if cursor and after is not None:
            raise IngestError(422, "invalid_cursor", "give either after (a tail from a seq) or "
                              "cursor (the next page), not both", field="cursor")
        # the order: asked for, or the one the cursor pages, or the tail's when after is given
        kind = order or ("tail" if after is not None else None)
        page_after = None
        if cursor:
            kind, page_after = _decode_cursor(cursor, kind)
        kind = kind or "time"
        if kind == "tail":  # a tail reads forward from a seq: its cursor is that seq
            after = max(after or 0, page_after[0] if page_after else 0)
            page_after = None
        elif after is not None:
            raise IngestError(422, "invalid_request", f"after is a tail cursor (oldest stored "
                              f"first): it does not combine with order={kind}", field="after")
        query = EventQuery(q=q, host=host, source=source, level=normalize_level(level),
                           template=template,
                           anomaly=anomaly, since=parse_time(since, field="since"),
                           until=parse_time(until, field="until"),
                           after_seq=after, limit=limit, arrival=kind == "arrival",
                           page_after=page_after, basis=basis, incident=incident,
                           total_limit=None if exact_total else TOTAL_LIMIT)
        result = request.app.state.store.search(query)
        nxt = None
        if result.more and result.events:
            nxt = _encode_cursor(kind, sort_key(query, result.events[-1]))
        return {"total": result.total, "total_relation": result.total_relation,
                "last_seq": result.last_seq, "next": nxt, "events": result.events}

    @app.get("/api/stats", summary="Windowed counts and top hosts/components/templates")
    def stats(
        request: Request,
        since: Annotated[TimeText | None, time_query("time ≥ this, event or arrival time (see time)")] = None,
        until: Annotated[TimeText | None, time_query("time < this")] = None,
        windows: Annotated[int, Query(ge=1, le=10000)] = 60,
        top: Annotated[int, Query(ge=1, le=1000)] = 10,
        basis: TimeBasis = "event",
    ):
        out = request.app.state.store.stats(since=parse_time(since, field="since"),
                                            until=parse_time(until, field="until"),
                                            windows=windows, top=top, basis=basis)
        return {"window_seconds": s.window_seconds, "time": basis, **out}

    @app.get("/api/sources", summary="Each source's learned header layout, lines and share parsed",
             responses=refusals(404, s404="full stack: the worker knows the sources"))
    def sources(request: Request):
        runner = getattr(request.app.state.transport, "runner", None)
        if runner is None:
            return JSONResponse(
                {"error": "not_here",
                 "detail": "sources are known to the pipeline process: in the full stack that "
                           "is the worker (its log names each layout learned)",
                 "mode": request.app.state.transport.mode}, status_code=404)
        return {"sources": runner.describe_sources()}

    @app.get("/api/rejections", summary="The last refused requests (reason, time, client)")
    def rejections():
        return {"rejections": metrics.recent_rejections()}

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    def prometheus_metrics():
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", summary="Is the pipeline up?",
             responses={200: {"description": "ok (or degraded: status says why)"},
                        503: {"description": "down: the same document, status and the part "
                                             "at fault say why",
                              "content": {"application/json": {"schema": {"type": "object"}}}}})
    def healthz(request: Request):
        transport = request.app.state.transport
        ok, detail = transport.health()
        store_health = getattr(request.app.state.store, "health", None)
        if store_health is not None:  # Elasticsearch: the query side is a dependency too
            try:
                sink = store_health()
                sink_ok = sink.get("status") in ("green", "yellow")
            except Exception as exc:  # noqa: BLE001 - unreachable is an answer, not an error
                sink, sink_ok = {"error": redact(exc)[:200]}, False
            detail["store"] = {"reachable": sink_ok, **sink}
            ok = ok and sink_ok
        syslog = getattr(request.app.state, "syslog_health", None)
        if syslog is not None:  # informative: HTTP ingest works without it
            detail["syslog"] = syslog
        source = getattr(request.app.state, "kafka_source", None)
        if source is not None:  # informative: a source that cannot reach Kafka keeps retrying
            detail["kafka_source"] = source.status()
        # degraded: ingest works (what is accepted waits safely) but the pipeline behind it
        # does not move; the reasons are in "degraded"
        status = "down" if not ok else "degraded" if detail.get("degraded") else "ok"
        body = {"status": status, "mode": transport.mode, "version": __version__, **detail}
        return JSONResponse(body, status_code=200 if ok else 503)

    app.state.settings = s
    # shippers' protocols; es_bulk before the console: its GET / answers Elasticsearch clients
    app.include_router(es_bulk.router)
    app.include_router(loki.router)
    app.include_router(otlp.router)
    app.include_router(console_router)
    app.include_router(alerts_router)
    app.include_router(incidents_router)
    app.include_router(templates_router)
    return app


class DirectRoute:
    """One route, called without FastAPI's per-request machinery: ``POST /ingest``.

    Many clients post one line per request (curl, application loggers); for them the ingest
    work is small and the framework's layers (routing over every route, dependency solving,
    ``jsonable_encoder``, the exception middleware's wrappers) cost more CPU than the rest
    of the request together (bench/RESULTS.md, "small requests"). This middleware sits
    inside the read timeout and the API keys (both still apply) and, for its method and
    path, calls the route's own endpoint with the ``Request`` and writes its dict answer
    with orjson, in the route's status code. Nothing is written twice: the endpoint, its
    OpenAPI entry and the app's exception handlers (the JSON error bodies, the rejection
    metrics and record) are the ones the app declared; an exception without a handler goes
    on to the server-error middleware, as from any route. Only a route whose endpoint takes
    the ``Request`` alone (no parameters or dependencies for FastAPI to solve) and returns a
    dict or a ``Response`` is called directly; any other goes through the app as usual.
    """

    def __init__(self, app, *, fastapi_app: FastAPI, method: str, path: str):
        self.app, self.fastapi_app, self.method, self.path = app, fastapi_app, method, path
        self._route = None

    def route(self):
        """The app's route for the method and path if it can be called directly, else False
        (looked up once, at the first request)."""
        if self._route is None:
            from fastapi.routing import APIRoute

            route = next((r for r in self.fastapi_app.router.routes
                          if isinstance(r, APIRoute) and r.path == self.path
                          and self.method in r.methods), None)
            d = route.dependant if route is not None else None
            plain = d is not None and d.request_param_name is not None and not (
                d.path_params or d.query_params or d.header_params or d.cookie_params
                or d.body_params or d.dependencies or d.response_param_name
                or d.background_tasks_param_name) and asyncio.iscoroutinefunction(route.endpoint)
            if route is not None and not plain:
                log.warning("%s %s takes more than the request: served by the app, not directly",
                            self.method, self.path)
            self._route = route if plain else False
        return self._route

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != self.method or \
                scope["path"] != scope.get("root_path", "") + self.path:
            return await self.app(scope, receive, send)
        route = self.route()
        if not route:
            return await self.app(scope, receive, send)
        import orjson

        request = Request(scope, receive)
        try:
            answer = await route.endpoint(request)
        except Exception as exc:
            handler = next((self.fastapi_app.exception_handlers[t] for t in type(exc).__mro__
                            if t is not Exception and t in self.fastapi_app.exception_handlers),
                           None)
            if handler is None:
                raise
            answer = await handler(request, exc)
        if not isinstance(answer, Response):
            body = orjson.dumps(answer)
            await send({"type": "http.response.start", "status": route.status_code or 200,
                        "headers": [(b"content-length", str(len(body)).encode()),
                                    (b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await answer(scope, receive, send)


class AuthMiddleware:
    """API keys and per-key rate limits for every route, including routers added later.

    Open while no key was ever created (the CLI refuses to bind beyond loopback then);
    afterwards each request needs an active key with the scope its path requires
    (``smartlogs.auth.required_scope``), also once every key is revoked (fail closed).
    """

    def __init__(self, app, *, keys: KeyStore, limiter: RateLimiter | None):
        self.app, self.keys, self.limiter = app, keys, limiter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = scope.get("client")
        metrics.CURRENT_REQUEST.set((f"{client[0]}:{client[1]}" if client else None,
                                     f"{scope['method']} {scope['path']}"))
        need = required_scope(scope["method"], scope["path"])
        if need is None:
            return await self.app(scope, receive, send)
        enabled = self.keys.enabled
        secret = _request_secret(scope) if enabled else None
        # a long-lived answer (the live tail) asks ``keys.admits(secret, need)`` again as it runs
        scope.setdefault("state", {})["auth"] = (secret, need)
        if not enabled:
            return await self.app(scope, receive, send)
        key = self.keys.verify(secret) if secret else None
        if key is None:
            why = "missing API key" if not secret else "unknown or revoked API key"
            if not self.keys.active():
                why += " (every key of this server is revoked)"
            return await _deny(send, 401, "unauthorized",
                               f"{why}: send 'Authorization: Bearer <key>' (the CLI sends "
                               "$SMARTLOGS_API_KEY; create a key with "
                               "`smartlogs keys create --name NAME --scope ingest|read|admin`)",
                               {"WWW-Authenticate": "Bearer"}, scope)
        scope["state"]["key_name"] = key.name  # names the source of what it sends
        if not key.allows(need):
            return await _deny(send, 403, "forbidden",
                               f"key {key.name!r} has scope {key.scope!r}; this needs {need!r}",
                               scope=scope)
        if self.limiter is not None:
            wait = self.limiter.take(key.id)
            if wait > 0:
                retry = max(1, int(wait + 0.999))
                metrics.rejected("rate_limited", detail=f"key {key.name!r}")
                return await _deny(send, 429, "rate_limited",
                                   f"key {key.name!r} exceeds {self.limiter.rate:g} requests/s; "
                                   f"retry in {retry}s", {"Retry-After": str(retry)}, scope)
        return await self.app(scope, receive, send)


def _request_secret(scope) -> str | None:
    """The API key a request carries: its Authorization header, or for the live tail ``?key=``
    (browsers' EventSource cannot send headers)."""
    secret = parse_authorization(dict(scope["headers"]).get(b"authorization", b"").decode("latin-1"))
    if secret is None and scope["path"] == "/api/stream":
        from urllib.parse import parse_qs

        secret = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key") or [None])[0]
    return secret


_RPC_CODES = {401: 16, 403: 7, 429: 8}  # UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED


async def _deny(send, status: int, error: str, detail: str, headers: dict | None = None,
                scope: dict | None = None) -> None:
    import orjson

    if status in (401, 403):  # a shipper with a wrong key shows up in `smartlogs status`
        metrics.rejected(error, detail=detail)

    body, ctype = orjson.dumps({"error": error, "detail": detail}), b"application/json"
    if scope is not None and scope["path"] == "/v1/logs" and dict(scope["headers"]).get(
            b"content-type", b"").split(b";")[0].strip().lower() == b"application/x-protobuf":
        # an OTLP exporter reads answers in its request's encoding: a google.rpc.Status
        from ingest_api.receivers.proto.rpc_status import Status

        body = Status(code=_RPC_CODES[status], message=detail).SerializeToString()
        ctype = b"application/x-protobuf"
    raw = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
