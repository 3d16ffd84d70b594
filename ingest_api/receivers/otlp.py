"""OTLP/HTTP logs receiver: ``POST /v1/logs`` (OpenTelemetry SDKs, the OpenTelemetry Collector).

Bodies: an ``ExportLogsServiceRequest`` as protobuf (``Content-Type: application/x-protobuf``)
or as OTLP JSON (``application/json``: lowerCamelCase keys, hex ``traceId``/``spanId``), with
``Content-Encoding: gzip`` or ``deflate`` optional. In JSON, unknown keys are ignored (OTLP's
forward compatibility) but a known field of the wrong type is a 400 naming it (its path, e.g.
``resourceLogs[0].scopeLogs[0].logRecords[2].traceId``): a ``traceId``/``spanId`` that is not
``""`` or 32/16 hex digits, a ``severityNumber`` that is not an integer (or an enum name). In
protobuf, a trace/span id that is not 16/8 bytes (or empty) is a 400 too: a wrong id is never
stored; a string that is not UTF-8 is decoded with U+FFFD replacement (not a 400 for the batch).

Each log record becomes one event:

* message ← ``body`` (a string as is; a map, array or other value as compact JSON);
* time ← ``time_unix_nano``, else ``observed_time_unix_nano``, else the time of receipt;
* level ← ``severity_text``, else ``severity_number`` (1–4 TRACE, 5–8 DEBUG, 9–12 INFO,
  13–16 WARNING, 17–20 ERROR, 21–24 FATAL);
* component ← ``service.name``, host ← ``host.name``, pid ← ``process.pid`` (record attributes
  win over resource attributes); stream ← the resource's ``service.name`` (the event's source
  when it names no host, ``streams.partitions``);
* fields ← the resource attributes, then the scope's attributes, then the record's (later ones
  win on a clash), plus ``otel.scope.name``/``otel.scope.version``, ``trace_id``/``span_id``
  (hex) and ``event.name`` when set.

Answers, in the request's encoding (protobuf or JSON): ``200`` with an empty
``ExportLogsServiceResponse`` once the records are durably taken; ``400`` with a
``google.rpc.Status`` for an undecodable body (nothing stored; as JSON it also carries the API's
usual ``error`` code and ``detail``, and so does the answer to an unknown Content-Type); ``413``, ``415``; ``503`` +
``Retry-After`` with ``Status{code: UNAVAILABLE}`` when the queue cannot take the batch — the
SDK exporters retry 429/502/503/504 (honouring Retry-After) and drop the batch on anything else.
"""

from __future__ import annotations

import base64
import math
import re
import zlib

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ingest_api.decode import (MAX_STREAM_LENGTH, IngestError, check_count, check_json_elements,
                               check_protobuf_elements, decode_content_encoding)
from ingest_api.openapi import BINARY, REFUSAL_REF
from ingest_api.receivers import accept_items, assign_ids, ingest_slot, read_body, reject, settings_of
from smartlogs import metrics

__all__ = [
    "any_value",
    "decode_logs",
    "decode_logs_json",
    "decode_logs_protobuf",
    "inflate",
    "request_items",
    "router",
    "severity_level",
]

SOURCE = "otlp"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MAX_NS = 253402300800 * 10**9

_SEVERITY = ((21, "FATAL"), (17, "ERROR"), (13, "WARNING"), (9, "INFO"), (5, "DEBUG"), (1, "TRACE"))


def _bad(detail: str) -> IngestError:
    return IngestError(400, "invalid_otlp", detail)


# -- pure decoding -------------------------------------------------------------------------------
def decode_logs(data: bytes, content_type: str | None, max_lines: int | None = None) -> list[dict]:
    """An OTLP logs body (after Content-Encoding) → items without ids; raises ``IngestError`` (413
    when it holds more than ``max_lines`` records, counted before an item is built for each)."""
    mime = _mime(content_type)
    if mime == JSON:
        return decode_logs_json(data, max_lines)
    if mime == PROTOBUF:
        return decode_logs_protobuf(data, max_lines)
    raise IngestError(415, "unsupported_media_type",
                      f"Content-Type {content_type!r} is not supported; OTLP/HTTP takes "
                      f"{PROTOBUF} or {JSON}")


def _mime(content_type: str | None) -> str:
    mime = (content_type or "").split(";")[0].strip().lower()
    return mime or PROTOBUF  # OTLP/HTTP's default encoding


def decode_logs_protobuf(data: bytes, max_lines: int | None = None) -> list[dict]:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    # resource_logs[].scope_logs[].log_records[], counted before the message is parsed
    check_protobuf_elements(data, max_lines, (1, 2, 2), "log records")
    try:
        req = ExportLogsServiceRequest.FromString(data)
    except (DecodeError, ValueError, RecursionError) as exc:
        # A string that is not UTF-8 (a Latin-1 log line, say) is decoded with U+FFFD
        # replacement, as /ingest text, syslog and the shipper do (and the Collector, in Go,
        # takes such bytes), instead of refusing the batch: a 400, which exporters do not retry,
        # would lose its good records. Not keyed on the error's text (it varies across protobuf
        # runtimes): the mirror parse accepts what FromString does but for UTF-8, so any other
        # error fails again.
        from ingest_api.receivers.proto import parse_replacing_bad_utf8

        try:
            req = parse_replacing_bad_utf8(ExportLogsServiceRequest, data)
        except (DecodeError, ValueError, RecursionError):
            req = None
        if req is None:
            raise _bad(f"the body is not an OTLP ExportLogsServiceRequest: {exc}") from None
    return request_items(req, max_lines)


def decode_logs_json(data: bytes, max_lines: int | None = None) -> list[dict]:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    check_json_elements(data, max_lines, _JSON_RECORDS, "log records", 3)  # {},
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad("expected an ExportLogsServiceRequest object: {\"resourceLogs\": [...]}")
    check_count(_json_record_count(doc), max_lines, "log records")  # before protobuf objects
    _prepare_json(doc, ExportLogsServiceRequest.DESCRIPTOR)
    req = ExportLogsServiceRequest()
    try:
        # unknown fields are already gone (_prepare_json): what is left must have the right type
        json_format.ParseDict(doc, req, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise _bad(f"the body is not an OTLP ExportLogsServiceRequest: {_parse_error(exc)}") from None
    return request_items(req, max_lines)


# where OTLP/JSON keeps its log records (protobuf's JSON names, or the field names)
_JSON_RECORDS = tuple(f"{r}.item.{s}.item.{l}" for r in ("resourceLogs", "resource_logs")
                      for s in ("scopeLogs", "scope_logs") for l in ("logRecords", "log_records"))


def _json_record_count(doc: dict) -> int:
    """How many log records an OTLP/JSON document holds (protobuf's JSON names or field names)."""
    def items(obj, *names):
        v = next((obj[n] for n in names if n in obj), None) if isinstance(obj, dict) else None
        return v if isinstance(v, list) else []

    return sum(len(items(sl, "logRecords", "log_records"))
               for rl in items(doc, "resourceLogs", "resource_logs")
               for sl in items(rl, "scopeLogs", "scope_logs"))


# OTLP/JSON's hex-encoded byte fields (protobuf's JSON mapping would read them as base64)
_HEX_IDS = {"opentelemetry.proto.logs.v1.LogRecord.trace_id": 16,
            "opentelemetry.proto.logs.v1.LogRecord.span_id": 8}
_HEX = re.compile(r"[0-9a-fA-F]*")


def _prepare_json(doc: dict, descriptor) -> None:
    """Make an OTLP/JSON document what protobuf's JSON parser takes, strictly, in place.

    * Unknown keys are dropped: OTLP/JSON receivers MUST ignore them (forward compatibility), so
      the parser can then run with ``ignore_unknown_fields=False``, which reports a known field
      of the wrong type instead of skipping it (with ``True`` it also silently skips an enum it
      cannot read: ``"severityNumber": "x"`` was a record without severity).
    * ``traceId``/``spanId`` must be empty or exactly 32/16 hex digits, turned into base64 for
      the parser. Anything else is a 400 naming the field, for the whole request, as the
      OpenTelemetry Collector answers: a malformed id means a broken exporter, and the other
      choice, storing the record without it, would pass the breakage off as an uncorrelated
      record. (Before, a string of another length fell through to base64 decoding and a wrong
      id was stored: ``"zz"`` became ``cf``.)
    * An enum (``severityNumber``) must be an integer (OTLP/JSON's encoding) or one of the
      enum's names; anything else is a 400 naming it."""
    stack = [(doc, descriptor, "")]
    while stack:
        obj, desc, path = stack.pop()
        for key in list(obj):
            fd = desc.fields_by_camelcase_name.get(key) or desc.fields_by_name.get(key)
            if fd is None:
                del obj[key]
                continue
            value, where = obj[key], f"{path}.{key}" if path else key
            if value is None:
                continue
            size = _HEX_IDS.get(fd.full_name)
            if size is not None:
                if not isinstance(value, str) or (
                        value and (len(value) != 2 * size or not _HEX.fullmatch(value))):
                    raise _bad(f"{where}: expected {2 * size} hex digits (an OTLP/JSON "
                               f"{'trace' if size == 16 else 'span'} id) or \"\", got "
                               f"{orjson.dumps(value).decode()[:80]}")
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
            elif fd.enum_type is not None:
                _check_enum(fd, value, where)
            elif fd.message_type is not None and not fd.message_type.GetOptions().map_entry \
                    and not fd.message_type.full_name.startswith("google.protobuf."):
                if fd.is_repeated:
                    if isinstance(value, list):
                        stack.extend((v, fd.message_type, f"{where}[{i}]")
                                     for i, v in enumerate(value) if isinstance(v, dict))
                elif isinstance(value, dict):
                    stack.append((value, fd.message_type, where))


def _check_enum(fd, value, where: str) -> None:
    values = value if fd.is_repeated and isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool):
            continue
        if isinstance(v, str) and (v in fd.enum_type.values_by_name or re.fullmatch(r"-?\d+", v)):
            continue
        raise _bad(f"{where}: expected a {fd.enum_type.name} (an integer, e.g. 9 for INFO), got "
                   f"{orjson.dumps(v).decode()[:80]}")


def _parse_error(exc: Exception) -> str:
    """protobuf's "Failed to parse a field: Failed to parse b field: msg" → "a.b: msg"."""
    text = str(exc)
    names = re.findall(r"Failed to parse (\w+) field: ", text)
    if not names:
        return text
    rest = re.sub(r"(Failed to parse \w+ field: )+", "", text).rstrip(".")
    return f"{'.'.join(names)}: {rest}"


def request_items(req, max_lines: int | None = None) -> list[dict]:
    """An ``ExportLogsServiceRequest`` message → items (413 beyond ``max_lines`` records)."""
    check_count(sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs),
                max_lines, "log records")
    items: list[dict] = []
    for n, rl in enumerate(req.resource_logs):
        resource = _attributes(rl.resource.attributes)
        for m, sl in enumerate(rl.scope_logs):
            scope: dict = {}
            if sl.scope.name:
                scope["otel.scope.name"] = sl.scope.name
            if sl.scope.version:
                scope["otel.scope.version"] = sl.scope.version
            scope.update(_attributes(sl.scope.attributes))
            base = {**resource, **scope}
            for k, rec in enumerate(sl.log_records):
                for name, size in (("trace_id", 16), ("span_id", 8)):
                    if len(getattr(rec, name)) not in (0, size):  # never store a wrong id
                        raise _bad(f"resource_logs[{n}].scope_logs[{m}].log_records[{k}].{name}: "
                                   f"expected {size} bytes or none, got "
                                   f"{len(getattr(rec, name))}")
                items.append(_record_item(rec, base, resource))
    return items


def _record_item(rec, base: dict, resource: dict) -> dict:
    attrs = _attributes(rec.attributes)
    fields = {**base, **attrs}
    if any(rec.trace_id):
        fields["trace_id"] = rec.trace_id.hex()
    if any(rec.span_id):
        fields["span_id"] = rec.span_id.hex()
    if rec.event_name:
        fields["event.name"] = rec.event_name
    body = any_value(rec.body) if rec.HasField("body") else None
    if body is None:
        message = ""
    elif isinstance(body, str):
        message = body
    else:
        message = orjson.dumps(body).decode()
    item: dict = {"message": message}
    ns = rec.time_unix_nano or rec.observed_time_unix_nano
    if 0 < ns < _MAX_NS:
        item["ts"] = ns / 1e9
    level = severity_level(rec.severity_text, rec.severity_number)
    if level:
        item["level"] = level
    for key, name in (("host", "host.name"), ("component", "service.name"), ("pid", "process.pid")):
        v = attrs.get(name, resource.get(name))
        if isinstance(v, (str, int)) and not isinstance(v, bool) and v != "":
            item[key] = str(v)
    service = resource.get("service.name")  # the resource's stream (streams.partitions)
    if isinstance(service, str) and service.strip():
        item["stream"] = service.strip()[:MAX_STREAM_LENGTH]
    if fields:
        item["fields"] = fields
    return item


def severity_level(text: str, number: int) -> str | None:
    """``severity_text`` if set, else the level of ``severity_number`` (None when unspecified)."""
    if text and text.strip():
        return text.strip()
    for low, name in _SEVERITY:
        if number >= low:
            return name
    return None


def _attributes(kvs) -> dict:
    return {kv.key: any_value(kv.value) for kv in kvs}


def any_value(v):
    """An OTLP ``AnyValue`` → a JSON-able Python value (bytes as base64 text)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    value = getattr(v, kind)
    if isinstance(value, float) and math.isnan(value):  # not JSON
        return None
    return value


def inflate(body: bytes, max_bytes: int) -> bytes:
    """``Content-Encoding: deflate`` (zlib-wrapped, as the OpenTelemetry exporters send it)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise IngestError(400, "invalid_deflate", f"the body is not valid deflate: {exc}") from None
    if len(out) > max_bytes or d.unconsumed_tail:
        raise IngestError(413, "body_too_large",
                          f"the decompressed body exceeds the limit of {max_bytes} bytes",
                          limit=max_bytes)
    if not d.eof:
        raise IngestError(400, "invalid_deflate", "the deflate stream is truncated")
    return out


# -- HTTP --------------------------------------------------------------------------------------
router = APIRouter(tags=["receivers"])

# A refusal in JSON: a google.rpc.Status (code, message) that is also the API's Refusal; in
# protobuf (a protobuf request), the google.rpc.Status message
RPC_STATUS_JSON = {"allOf": [{"$ref": REFUSAL_REF}, {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}}]}
_CODES = {400: 3, 413: 8, 415: 3, 503: 14}  # google.rpc.Code: INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE


def _answer(mime: str, status: int = 200, status_body: tuple[int, str, str] | None = None,
            headers: dict | None = None) -> Response:
    if status_body is None:
        if mime == JSON:
            return Response(b"{}", status, media_type=JSON, headers=headers)
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        return Response(ExportLogsServiceResponse().SerializeToString(), status,
                        media_type=PROTOBUF, headers=headers)
    code, message, error = status_body
    if mime == PROTOBUF:
        from ingest_api.receivers.proto.rpc_status import Status

        return Response(Status(code=code, message=message).SerializeToString(), status,
                        media_type=PROTOBUF, headers=headers)
    # a JSON google.rpc.Status, plus the API's own {"error", "detail"} for people reading it
    return Response(orjson.dumps({"code": code, "message": message, "error": error,
                                  "detail": message}), status, media_type=JSON, headers=headers)


def _decode(body: bytes, encoding: str | None, content_type: str | None, max_bytes: int,
            max_lines: int | None = None) -> list[dict]:
    encoding = (encoding or "").strip().lower()
    if encoding == "deflate":
        data = inflate(body, max_bytes)
    else:
        data = decode_content_encoding(body, encoding, max_bytes)
    return assign_ids(decode_logs(data, content_type, max_lines), SOURCE, data)


def _error(mime: str, exc: IngestError) -> Response:
    reject(f"otlp_{exc.body['error']}", detail=exc.body.get('detail'))
    headers = {"Retry-After": str(exc.body["retry_after"])} if "retry_after" in exc.body else None
    if mime not in (JSON, PROTOBUF):
        mime = JSON
    return _answer(mime, exc.status, (_CODES.get(exc.status, 3), exc.body["detail"], exc.body["error"]),
                   headers)


@router.post(
    "/v1/logs",
    summary="OTLP/HTTP logs (protobuf or JSON)",
    description="An OTLP ExportLogsServiceRequest as OpenTelemetry SDKs and the Collector send "
                "it. Answers 200 with an ExportLogsServiceResponse once the records are durably "
                "taken; 503 + Retry-After when the queue is full.",
    responses={200: {"description": "taken: an ExportLogsServiceResponse, in the request's "
                                     "encoding",
                      "content": {JSON: {"schema": {"type": "object"}}, PROTOBUF: BINARY}},
               **{status: {"description": why, "content": {JSON: {"schema": RPC_STATUS_JSON},
                                                           PROTOBUF: BINARY}}
                  for status, why in ((400, "undecodable body"), (413, "body too large"),
                                      (415, "unsupported Content-Type or Content-Encoding"),
                                      (503, "backlog full, retry later (Retry-After)"))}},
    # no body: an empty ExportLogsServiceRequest (nothing to take), answered 200
    openapi_extra={"requestBody": {"required": False, "content": {
        JSON: {"schema": {"type": "object"}}, PROTOBUF: BINARY}}},
)
async def logs(request: Request) -> Response:
    s = settings_of(request)
    content_type = request.headers.get("content-type")
    mime = _mime(content_type)
    try:
        body = await read_body(request, s.max_body_bytes)
        async with ingest_slot(request):  # bounded decoding: see receivers.ingest_slot
            items = await run_in_threadpool(_decode, body, request.headers.get("content-encoding"),
                                            content_type, s.max_body_bytes, s.max_lines_per_request)
            if items:
                metrics.EVENTS_RECEIVED.labels(SOURCE).inc(len(items))
                await accept_items(request, items, SOURCE)
    except IngestError as exc:
        return _error(mime, exc)
    return _answer(mime)
