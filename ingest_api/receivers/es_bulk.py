"""Elasticsearch ``_bulk`` receiver: Filebeat, Fluent Bit, Vector, Logstash, syslog-ng, rsyslog.

Routes (every answer carries ``X-Elastic-Product: Elasticsearch``, which the official clients
check on each 2xx):

* ``POST|PUT /_bulk`` and ``POST|PUT /{index}/_bulk`` — NDJSON action/source pairs
  (``Content-Encoding: gzip`` optional; blank lines allowed), with a Content-Type of
  ``application/json``, ``application/x-ndjson`` or their ``application/vnd.elasticsearch+``
  forms (any other, or none, is a 415: Elasticsearch answers those 406). ``index`` and ``create`` store the
  source document as one event; ``delete`` and ``update`` get a per-item 400 (SmartLogs is
  append-only). The answer is Elasticsearch's: ``200 {"took", "errors", "items": [...]}`` with a
  ``status`` per item (201 ``created``, or 400 and an ``error`` for a source line that is not a
  JSON object or has an unusable timestamp). A request that cannot be split into actions
  (malformed action line, a missing source line, an empty body) is a 400 in Elasticsearch's error
  shape, and nothing of it is stored. When the queue cannot take the batch the answer is
  ``429 es_rejected_execution_exception`` with ``Retry-After`` — what Elasticsearch answers when
  overloaded, and what every Elasticsearch shipper retries.
* ``GET|HEAD /`` — the cluster-info document (version 8.19.3) shippers read at startup. It is
  only served to requests that do not ask for ``text/html``, so a browser opening ``/`` still
  reaches the console (include this router before the console's).
* ``GET /_license``, ``GET /_xpack``, ``GET /_cluster/health`` — what Logstash, Filebeat and
  Vector probe at startup (a basic license, no ILM, a green single-node cluster).

Source document → event (the first key present wins): message ← ``message``, ``msg``,
``MESSAGE``, ``log`` (when a string), ``event.original``; time ← ``@timestamp`` (ISO 8601 or
epoch seconds/milliseconds; unparseable: that item is a 400, as in Elasticsearch), else
``timestamp``, ``time``, ``ts``, ``timereported``, ``ISODATE`` (unparseable: kept in fields);
host ← ``host.name``, ``host.hostname``, ``hostname``, ``host``, ``fromhost``, ``HOST``;
level ← ``log.level``, ``level``, ``severity``, ``log_level``, ``loglevel``, ``priority``,
``PRIORITY``; component ← ``service.name``, ``service``, ``component``, ``app``,
``application``, ``process.name``, ``programname``, ``PROGRAM``; pid ← ``process.pid``,
``pid``, ``PID``. Keys may be dotted (``"log.level"``) or nested (``{"log": {"level"}}``).
Everything else, plus the target index as ``_index``, goes to ``fields``. A document with no
message is stored with its compact JSON as the message.
Ids: Elasticsearch scopes ``_id`` per index, so an action's ``_id`` is stored as the event id
``es:<index>:<_id>`` (the answer echoes the ``_id`` as sent): the same ``_id`` in two indices is
two events, a resent document is stored once, and no ``/ingest`` id or other source's id can
collide with it. Without an ``_id`` the id is ``es-<digest of the URL's index and the body>-<position>``,
so a resent request is stored once too (and two byte-identical requests are one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from ingest_api.decode import (IngestError, check_depth, check_lines, decode_content_encoding,
                               parse_timestamp)
from ingest_api.openapi import BINARY, REFUSAL_REF
from ingest_api.receivers import (accept_items, body_digest, ingest_slot, read_body, reject,
                                 settings_of)
from smartlogs import metrics

__all__ = [
    "ES_VERSION",
    "PRODUCT_HEADERS",
    "BulkItem",
    "BulkRequestError",
    "parse_bulk",
    "router",
    "source_to_event",
]

SOURCE = "es_bulk"
ES_VERSION = "8.19.3"
PRODUCT_HEADERS = {"X-Elastic-Product": "Elasticsearch"}
MAX_ID_BYTES = 512  # Elasticsearch's own limit for _id
ACTIONS = ("index", "create", "delete", "update")

# ECS (Filebeat, Elastic Agent), flat JSON (Fluent Bit, Vector), rsyslog's default template
# (message, fromhost, priority, timereported, programname) and syslog-ng's format-json (upper case)
_MESSAGE = ("message", "msg", "MESSAGE", "log", "event.original")
_STRICT_TIMESTAMP = "@timestamp"  # a date in every Elasticsearch log mapping: unparseable → 400
_TIMESTAMP = ("timestamp", "time", "ts", "timereported", "ISODATE")  # unparseable → left in fields
_HOST = ("host.name", "host.hostname", "hostname", "host", "fromhost", "HOST")
_LEVEL = ("log.level", "level", "severity", "log_level", "loglevel", "priority", "PRIORITY")
_COMPONENT = ("service.name", "service", "component", "app", "application", "process.name",
              "programname", "PROGRAM")
_PID = ("process.pid", "pid", "PID")


class BulkRequestError(Exception):
    """The whole request is refused (Elasticsearch answers 400 and indexes nothing)."""

    def __init__(self, reason: str, type_: str = "illegal_argument_exception", status: int = 400):
        super().__init__(reason)
        self.status, self.type, self.reason = status, type_, reason


@dataclass
class BulkItem:
    """One action of the request: its outcome, and the event to store when it succeeded."""

    action: str
    index: str | None
    id: str | None
    status: int = 201
    error: dict | None = None
    event: dict | None = None

    def result(self, seq_no: int) -> dict:
        body: dict = {"_index": self.index, "_id": self.id, "status": self.status}
        if self.error is not None:
            body["error"] = self.error
        else:
            body.update({"_version": 1, "result": "created",
                         "_shards": {"total": 1, "successful": 1, "failed": 0},
                         "_seq_no": seq_no, "_primary_term": 1})
        return {self.action: body}


# -- pure decoding -------------------------------------------------------------------------------
def parse_bulk(data: bytes, default_index: str | None = None, *,
               max_lines: int | None = None) -> list[BulkItem]:
    """NDJSON bulk body → items, each with its event or its per-item error.

    Raises ``BulkRequestError`` when the body cannot be split into actions, ``IngestError``
    (413) when it has more than ``max_lines`` lines (counted before splitting)."""
    check_lines(data, max_lines)
    lines = [(n + 1, line) for n, line in enumerate(data.split(b"\n")) if line.strip()]
    if not lines:
        raise BulkRequestError("Validation Failed: 1: no requests added;",
                               "action_request_validation_exception")
    # Generated ids digest the body *and* the index of the URL (``/a/_bulk`` vs ``/b/_bulk``
    # with the same body are different documents); with the position they are unique.
    digest = body_digest(_index_prefix(default_index) + data)
    items: list[BulkItem] = []
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        i += 1
        action, meta = _action(line, lineno)
        index = meta.get("_index")
        if index is None:
            index = default_index
        raw_id = meta.get("_id")
        item = BulkItem(action, index if isinstance(index, str) else None,
                        str(raw_id) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool)
                        else None)
        source = None
        if action != "delete":
            if i >= len(lines):
                raise BulkRequestError(f"the {action} action on line {lineno} has no source line "
                                       "(the bulk request must be terminated by a newline)")
            source = lines[i][1]
            i += 1
        items.append(item)
        error = _validate(action, meta, item)
        if error is not None:
            item.status, item.error = 400, error
            continue
        try:
            doc = orjson.loads(source)
        except orjson.JSONDecodeError as exc:
            item.status, item.error = 400, _err("document_parsing_exception",
                                                f"failed to parse: {exc}")
            continue
        if not isinstance(doc, dict):
            item.status, item.error = 400, _err(
                "document_parsing_exception",
                "failed to parse: the document must be a JSON object")
            continue
        try:
            event = source_to_event(doc, item.index, copy=False)
        except IngestError as exc:
            item.status, item.error = 400, _err("document_parsing_exception", exc.body["detail"])
            continue
        if item.id is None:  # Elasticsearch makes one up; ours is stable for a resent request
            item.id = f"es-{digest}-{len(items) - 1}"
            event["id"] = item.id
        else:
            event["id"] = event_id(item.index, item.id)
        item.event = event
    return items


def event_id(index: str, doc_id: str) -> str:
    """The stored id of the document ``doc_id`` of ``index``: ``es:<index>:<_id>``.

    Elasticsearch scopes ``_id`` per index, so the index is part of the id (the same ``_id`` in
    two indices is two documents), and the ``es:`` namespace keeps it apart from the ids other
    sources give (``/ingest``'s own ``id``, ``kafka:...``). It depends on nothing else, so a
    resent document is stored once. Elasticsearch forbids ``:`` in index names; were one to
    come anyway, it is escaped (``%3A``, and ``%`` as ``%25``) so that the index always ends at
    the first ``:`` after ``es:`` and two different (index, _id) pairs never share an id."""
    return f"es:{index.replace('%', '%25').replace(':', '%3A')}:{doc_id}"


def _index_prefix(index: str | None) -> bytes:
    if index is None:
        return b""
    raw = index.encode("utf-8", "surrogatepass")
    return b"%d:" % len(raw) + raw + b"\n"


def _action(line: bytes, lineno: int) -> tuple[str, dict]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BulkRequestError(f"Malformed action/metadata line [{lineno}]: {exc}",
                               "x_content_parse_exception") from None
    if not isinstance(obj, dict) or len(obj) != 1:
        raise BulkRequestError(f"Malformed action/metadata line [{lineno}], expected an object "
                               f"with one of {list(ACTIONS)}")
    (action, meta), = obj.items()
    if action not in ACTIONS:
        raise BulkRequestError(f"Malformed action/metadata line [{lineno}], expected one of "
                               f"{list(ACTIONS)} but found [{action}]")
    if not isinstance(meta, dict):
        raise BulkRequestError(f"Malformed action/metadata line [{lineno}], expected an object "
                               f"after [{action}]")
    return action, meta


def _validate(action: str, meta: dict, item: BulkItem) -> dict | None:
    if action in ("delete", "update"):
        return _err("illegal_argument_exception",
                    f"SmartLogs stores logs append-only: the [{action}] action is not supported; "
                    "use index or create")
    if item.index is None:
        given = meta.get("_index")
        if given is not None:
            return _err("action_request_validation_exception",
                        f"Validation Failed: 1: _index must be a string, got {_kind(given)} "
                        f"[{orjson.dumps(given).decode()[:64]}];")
        return _err("action_request_validation_exception", "Validation Failed: 1: index is missing;")
    if item.index == "":
        return _err("invalid_index_name_exception", "Invalid index name [], must not be empty")
    if "_id" in meta and meta["_id"] is not None:
        if item.id is None or item.id == "":
            return _err("action_request_validation_exception",
                        "Validation Failed: 1: if _id is specified it must be a non-empty string;")
        size = len(item.id.encode("utf-8", "surrogatepass"))
        if size > MAX_ID_BYTES:
            return _err("action_request_validation_exception",
                        f"Validation Failed: 1: id [{item.id[:64]}...] is too long, must be no "
                        f"longer than {MAX_ID_BYTES} bytes but was: {size};")
    return None


def _kind(v) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _err(type_: str, reason: str) -> dict:
    return {"type": type_, "reason": reason}


def source_to_event(doc: dict, index: str | None = None, *, copy: bool = True) -> dict:
    """A source document → an ingest item (without id); raises ``IngestError`` on a bad timestamp.

    The mapped keys are taken out of ``doc`` (a deep copy of it unless ``copy`` is false)."""
    if copy:
        doc = orjson.loads(orjson.dumps(doc))
    item: dict = {}
    message = _take_str(doc, _MESSAGE)
    if message is None:
        message = orjson.dumps(doc).decode()
    if doc.get(_STRICT_TIMESTAMP) is not None:
        item["ts"] = parse_timestamp(doc.pop(_STRICT_TIMESTAMP), f"field [{_STRICT_TIMESTAMP}]")
    else:
        found = _take(doc, _TIMESTAMP, lambda v: _timestamp_or_none(v) is not None)
        if found is not None:
            item["ts"] = _timestamp_or_none(found[1])
    for key, names in (("host", _HOST), ("level", _LEVEL), ("component", _COMPONENT),
                       ("pid", _PID)):
        v = _take_str(doc, names)
        if v is not None:
            item[key] = v
    item = {"message": message, **item}
    fields = doc
    if index is not None:
        fields["_index"] = index
    if fields:
        item["fields"] = fields
        check_depth(fields, "the document")  # deeper than the stores can serialise: refused
    return item


def _timestamp_or_none(v) -> float | None:
    if v is None:
        return None
    try:
        return parse_timestamp(v)
    except IngestError:
        return None


def _scalar_str(v) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def _take_str(doc: dict, names: tuple[str, ...]) -> str | None:
    found = _take(doc, names, lambda v: _scalar_str(v) is not None)
    return _scalar_str(found[1]) if found else None


def _take(doc: dict, names: tuple[str, ...], ok) -> tuple[str, object] | None:
    """Remove and return (name, value) of the first ``names`` entry whose value passes ``ok``.

    A name ``a.b`` matches the literal key ``"a.b"`` or the nested ``{"a": {"b": ...}}``."""
    for name in names:
        if name in doc and ok(doc[name]):
            return name, doc.pop(name)
        if "." in name:
            parts = name.split(".")
            chain = [doc]
            for p in parts[:-1]:
                nxt = chain[-1].get(p)
                if not isinstance(nxt, dict):
                    break
                chain.append(nxt)
            else:
                leaf = chain[-1]
                if parts[-1] in leaf and ok(leaf[parts[-1]]):
                    value = leaf.pop(parts[-1])
                    for parent, key, child in zip(reversed(chain[:-1]), reversed(parts[:-1]),
                                                  reversed(chain[1:])):
                        if child:
                            break
                        del parent[key]
                    return name, value
    return None


# -- HTTP --------------------------------------------------------------------------------------
def _json(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={**PRODUCT_HEADERS, **(headers or {})})


def es_error(status: int, type_: str, reason: str, headers: dict | None = None) -> Response:
    """Elasticsearch's error shape: {"error": {"root_cause", "type", "reason"}, "status"}."""
    cause = {"type": type_, "reason": reason}
    return _json({"error": {"root_cause": [cause], **cause}, "status": status}, status, headers)


class _NotForBrowsers(APIRoute):
    """A route that does not match requests asking for HTML (a browser opening ``/``)."""

    def matches(self, scope):
        if scope.get("type") == "http":
            for name, value in scope.get("headers", ()):
                if name == b"accept" and b"text/html" in value.lower():
                    return Match.NONE, {}
        return super().matches(scope)


router = APIRouter(tags=["receivers"])

# What Elasticsearch takes on _bulk that SmartLogs can read (it also takes SMILE and CBOR; no
# shipper sends those). Parameters are not checked: Filebeat and rsyslog send
# ``application/json; charset=UTF-8``, the official clients (elasticsearch-py 8: on _bulk
# ``application/vnd.elasticsearch+x-ndjson; compatible-with=8``) the vendor types, and a 9.x
# client's ``compatible-with=9`` is let through rather than refused as Elasticsearch 8 would.
BULK_TYPES = ("application/json", "application/x-ndjson",
              "application/vnd.elasticsearch+json", "application/vnd.elasticsearch+x-ndjson")


def content_type_error(content_type: str | None) -> str | None:
    """Why ``content_type`` is refused on _bulk (None: it is accepted).

    A missing Content-Type is refused too: Elasticsearch (6.0 on) answers a request with a body
    and no Content-Type ``406 Content-Type header is missing``, so no shipper that works with
    Elasticsearch omits it, and guessing would take a form post (curl -d) or a text file for
    NDJSON."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in BULK_TYPES:
        return None
    return (f"Content-Type {content_type!r} is not supported" if content_type and content_type.strip()
            else "the request has no Content-Type") + f"; _bulk takes {', '.join(BULK_TYPES)}"


def _unsupported_type(detail: str) -> Response:
    # Elasticsearch answers 406 here, with {"error": "<text>", "status": 406}; SmartLogs answers
    # 415 like its other receivers, in a body that is both their {"error", "detail"} and
    # Elasticsearch's simple error shape (a string "error" and a "status").
    return _json({"error": "unsupported_media_type", "detail": detail, "status": 415,
                  "accepted": list(BULK_TYPES)}, 415)


def _decode(body: bytes, encoding: str | None, max_bytes: int, index: str | None,
            max_lines: int | None = None) -> list[BulkItem]:
    return parse_bulk(decode_content_encoding(body, encoding, max_bytes), index, max_lines=max_lines)


async def _bulk(request: Request, index: str | None = None) -> Response:
    t0 = time.perf_counter()
    s = settings_of(request)
    try:
        body = await read_body(request, s.max_body_bytes)
    except IngestError as exc:
        return _ingest_error(exc)
    # Elasticsearch checks the type only of a request that has a body (an empty one is the
    # 400 "no requests added" below whatever its type)
    type_error = content_type_error(request.headers.get("content-type")) if body else None
    if type_error is not None:
        reject("es_bulk_unsupported_media_type")
        return _unsupported_type(type_error)
    async with ingest_slot(request):  # bounded decoding: see receivers.ingest_slot
        return await _decode_and_accept(request, body, index, s, t0)


def _ingest_error(exc: IngestError) -> Response:
    reject(f"es_bulk_{exc.body['error']}", detail=exc.body.get("detail"))
    kind = {413: "content_too_long_exception"}.get(exc.status, "parse_exception")
    return es_error(exc.status, kind, exc.body["detail"])


async def _decode_and_accept(request: Request, body: bytes, index: str | None, s,
                             t0: float) -> Response:
    try:
        items = await run_in_threadpool(_decode, body, request.headers.get("content-encoding"),
                                        s.max_body_bytes, index, s.max_lines_per_request)
    except IngestError as exc:
        return _ingest_error(exc)
    except BulkRequestError as exc:
        reject("es_bulk_malformed")
        return es_error(exc.status, exc.type, exc.reason)
    events = [it.event for it in items if it.event is not None]
    metrics.EVENTS_RECEIVED.labels(SOURCE).inc(len(events))
    if len(events) < len(items):
        reject("es_bulk_item_rejected", len(items) - len(events))
    if events:
        try:
            await accept_items(request, events, SOURCE)
        except IngestError as exc:
            reject(f"es_bulk_{exc.body['error']}", detail=exc.body.get("detail"))
            if exc.status == 413:  # the batch can never fit: retrying it would never succeed
                return es_error(413, "content_too_long_exception", exc.body["detail"])
            retry = str(exc.body.get("retry_after", 1))
            return es_error(429, "es_rejected_execution_exception",
                            f"rejected execution of the bulk request: {exc.body['detail']}",
                            {"Retry-After": retry})
    took = int((time.perf_counter() - t0) * 1000)
    return _json({"errors": len(events) < len(items), "took": took,
                  "items": [it.result(n) for n, it in enumerate(items)]})


async def bulk(request: Request) -> Response:
    return await _bulk(request)


async def bulk_index(request: Request, index: str) -> Response:
    return await _bulk(request, index)


_BULK_DOC = {
    "summary": "Elasticsearch _bulk (index/create actions)",
    "description": "NDJSON action/source pairs as Elasticsearch shippers send them; answers like "
                   "Elasticsearch 8.19 (per-item status, `errors`, `X-Elastic-Product`). "
                   "4xx answers use Elasticsearch's error document "
                   "`{\"error\": {\"type\", \"reason\", \"root_cause\"}, \"status\"}`, "
                   "except 415 (a Content-Type other than application/json, "
                   "application/x-ndjson or their application/vnd.elasticsearch+ forms): "
                   "`{\"error\": \"unsupported_media_type\", \"detail\", \"status\", \"accepted\"}`.",
}
# Elasticsearch's error document (400, 413, 429), and the 415 in the API's Refusal shape
ES_ERROR = {"type": "object", "required": ["error", "status"], "properties": {
    "error": {"type": "object", "required": ["type", "reason"], "properties": {
        "type": {"type": "string"}, "reason": {"type": "string"},
        "root_cause": {"type": "array", "items": {"type": "object"}}}},
    "status": {"type": "integer"}}}
_BULK_DOC["responses"] = {
    200: {"description": "per-item results (`errors`, `items`)"},
    **{status: {"description": why, "content": {"application/json": {"schema": ES_ERROR}}}
       for status, why in ((400, "malformed body or action"), (413, "body too large"),
                           (429, "backlog full, retry later (Retry-After)"))},
    415: {"description": "unsupported Content-Type",
          "content": {"application/json": {"schema": {"$ref": REFUSAL_REF}}}},
}
_BULK_DOC["openapi_extra"] = {"requestBody": {"required": True, "content": {
    "application/x-ndjson": BINARY, "application/json": BINARY}}}
for _method in ("POST", "PUT"):
    router.add_api_route("/_bulk", bulk, methods=[_method], operation_id=f"es_bulk_{_method.lower()}",
                         **_BULK_DOC)
    router.add_api_route("/{index}/_bulk", bulk_index, methods=[_method],
                         operation_id=f"es_index_bulk_{_method.lower()}", **_BULK_DOC)


_CLUSTER = "smartlogs"
_UUID = "c21hcnRsb2dzLWVzLWJ1bGs"
_BUILD = {"hash": "smartlogs", "date": "2025-01-01T00:00:00.000Z"}


def _info() -> dict:
    return {
        "name": _CLUSTER,
        "cluster_name": _CLUSTER,
        "cluster_uuid": _UUID,
        "version": {
            "number": ES_VERSION,
            "build_flavor": "default",
            "build_type": "tar",
            "build_hash": _BUILD["hash"],
            "build_date": _BUILD["date"],
            "build_snapshot": False,
            "lucene_version": "9.12.2",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    }


async def root() -> Response:
    return _json(_info())


router.add_api_route("/", root, methods=["GET", "HEAD"], include_in_schema=False,
                     route_class_override=_NotForBrowsers)

_LICENSE = {"status": "active", "uid": "00000000-0000-0000-0000-000000000000", "type": "basic",
            "mode": "basic", "issue_date": "2025-01-01T00:00:00.000Z",
            "issue_date_in_millis": 1735689600000, "max_nodes": 1000, "max_resource_units": None,
            "issued_to": _CLUSTER, "issuer": "elasticsearch", "start_date_in_millis": -1}


@router.get("/_license", include_in_schema=False)
async def license_() -> Response:
    return _json({"license": _LICENSE})


@router.get("/_xpack", include_in_schema=False)
async def xpack() -> Response:
    off = {"available": False, "enabled": False}
    return _json({"build": _BUILD,
                  "license": {k: _LICENSE[k] for k in ("uid", "type", "mode", "status")},
                  "features": {"ilm": off, "monitoring": off, "security": off}})


@router.get("/_cluster/health", include_in_schema=False)
async def cluster_health() -> Response:
    return _json({"cluster_name": _CLUSTER, "status": "green", "timed_out": False,
                  "number_of_nodes": 1, "number_of_data_nodes": 1, "active_primary_shards": 0,
                  "active_shards": 0, "relocating_shards": 0, "initializing_shards": 0,
                  "unassigned_shards": 0, "delayed_unassigned_shards": 0,
                  "number_of_pending_tasks": 0, "number_of_in_flight_fetch": 0,
                  "task_max_waiting_in_queue_millis": 0, "active_shards_percent_as_number": 100.0})
