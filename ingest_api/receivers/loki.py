"""Loki push receiver: ``POST /loki/api/v1/push`` (Promtail, Grafana Alloy, python-logging-loki...).

Both encodings Loki accepts:

* ``Content-Type: application/json`` — ``{"streams": [{"stream": {label: value}, "values":
  [["<unix ns>", "<line>"], ["<unix ns>", "<line>", {structured metadata}]]}]}``, and the older
  ``{"streams": [{"labels": "{a=\\"b\\"}", "entries": [{"ts": "<RFC 3339>", "line": ...}]}]}``;
  ``Content-Encoding: gzip`` optional;
* ``Content-Type: application/x-protobuf`` (or none, as in Loki) — a ``logproto.PushRequest``
  compressed with snappy's block format, as Promtail and Alloy send it.

A string that is not UTF-8 in a protobuf push (a Latin-1 line, say) is decoded with U+FFFD
replacement, as Loki (Go) takes such bytes, instead of failing the whole push.

Each entry becomes one event: the line is the message, the entry's nanosecond timestamp its
time. The stream labels and the entry's structured metadata (which wins on a clash) become
``fields``; well-known labels also fill the event's columns: ``host``/``hostname``/``host_name``
→ host, ``level``/``detected_level``/``severity``/``lvl``/``log_level``/``loglevel`` → level,
``service_name``/``service``/``app``/``application``/``component``/``container``/``job`` →
component, ``pid`` → pid. The stream's labels but the host and level ones name the entries'
``stream`` (``stream_name``), their source when they name no host or service.

Answers: ``204`` once the events are durably taken (the only success python-logging-loki
recognises); ``400`` with a JSON ``{"error", "detail"}`` for a malformed push (nothing of it
stored); ``413``/``415`` for too large or unsupported bodies; ``503`` + ``Retry-After`` when the
queue cannot take the batch (Promtail and Alloy retry 5xx and 429 with backoff).
"""

from __future__ import annotations

import re

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ingest_api.decode import (MAX_STREAM_LENGTH, IngestError, check_count, check_json_elements,
                               check_protobuf_elements, decode_content_encoding, parse_timestamp)
from ingest_api.openapi import BINARY, refusals
from ingest_api.receivers import accept_items, assign_ids, ingest_slot, read_body, reject, settings_of
from smartlogs import metrics

__all__ = [
    "decode_push",
    "decode_push_json",
    "decode_push_protobuf",
    "entry_event",
    "parse_labels",
    "router",
    "snappy_decompress",
    "stream_name",
]

SOURCE = "loki"
_MAX_TS = 253402300800  # year 10000
_MAX_NS = (_MAX_TS - 1) * 10**9  # the last second before it, in ns (exact, unlike a float)

_HOST = ("host", "hostname", "host_name")
_LEVEL = ("level", "detected_level", "severity", "lvl", "log_level", "loglevel")
_COMPONENT = ("service_name", "service", "app", "application", "component", "container", "job")
_NOT_STREAM = frozenset((*_HOST, *_LEVEL))

PROTOBUF_TYPES = {"application/x-protobuf", "application/protobuf", "application/octet-stream", ""}


def _bad(detail: str) -> IngestError:
    return IngestError(400, "invalid_loki_push", detail)


# -- pure decoding -------------------------------------------------------------------------------
def decode_push(data: bytes, content_type: str | None, *, max_bytes: int,
                max_lines: int | None = None) -> list[dict]:
    """A push body (after Content-Encoding) → items without ids; raises ``IngestError`` (413
    when it holds more than ``max_lines`` entries, counted before an item is built for each)."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime == "application/json":
        return decode_push_json(data, max_lines)
    if mime in PROTOBUF_TYPES:
        return decode_push_protobuf(snappy_decompress(data, max_bytes), max_lines)
    raise IngestError(415, "unsupported_media_type",
                      f"Content-Type {content_type!r} is not supported; Loki push takes "
                      "application/json or application/x-protobuf (snappy)")


def decode_push_json(data: bytes, max_lines: int | None = None) -> list[dict]:
    # counted before a Python object is built for each entry ([ts, line] takes 9 bytes: ["1","a"],)
    check_json_elements(data, max_lines, ("streams.item.values", "streams.item.entries"),
                        "log entries", 9)
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not valid JSON: {exc}") from None
    streams = doc.get("streams") if isinstance(doc, dict) else None
    if not isinstance(streams, list):
        raise _bad("expected an object with a 'streams' array")
    check_count(sum(len(v) for st in streams if isinstance(st, dict)
                    for v in (st.get("values"), st.get("entries")) if isinstance(v, list)),
                max_lines, "log entries")
    items: list[dict] = []
    for n, stream in enumerate(streams):
        where = f"streams[{n}]"
        if not isinstance(stream, dict):
            raise _bad(f"{where}: expected an object")
        if "values" in stream or "stream" in stream:
            labels = stream.get("stream")
            labels = {} if labels is None else labels  # "" or [] is not labels: refused below
            if not isinstance(labels, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
                raise _bad(f"{where}.stream: expected an object of string label values")
            values = stream.get("values")
            if not isinstance(values, list):
                raise _bad(f"{where}.values: expected an array of [timestamp, line] pairs")
            start = len(items)
            for m, value in enumerate(values):
                items.append(_json_value(value, labels, f"{where}.values[{m}]"))
            _name_stream(items, start, labels)
        elif "entries" in stream or "labels" in stream:  # the pre-2.0 push format
            labels = parse_labels(stream.get("labels") or "{}", where=f"{where}.labels")
            entries = stream.get("entries")
            if not isinstance(entries, list):
                raise _bad(f"{where}.entries: expected an array")
            start = len(items)
            for m, entry in enumerate(entries):
                w = f"{where}.entries[{m}]"
                if not isinstance(entry, dict) or not isinstance(entry.get("line"), str):
                    raise _bad(f"{w}: expected an object with 'ts' and a 'line' string")
                ts = entry.get("ts", entry.get("timestamp"))
                if ts is None:
                    raise _bad(f"{w}: the entry has no 'ts'")
                try:
                    seconds = parse_timestamp(ts, w)
                except IngestError as exc:
                    raise _bad(exc.body["detail"]) from None
                items.append(entry_event(labels, {}, seconds, entry["line"]))
            _name_stream(items, start, labels)
        else:
            raise _bad(f"{where}: expected 'stream' and 'values'")
    if not items:
        raise _bad("the push holds no log entries")
    return items


def _json_value(value, labels: dict, where: str) -> dict:
    if not isinstance(value, list) or len(value) not in (2, 3) or not isinstance(value[1], str):
        raise _bad(f"{where}: expected [\"<unix epoch ns>\", \"<line>\"] "
                   "(and optionally an object of structured metadata)")
    meta = value[2] if len(value) == 3 else {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _bad(f"{where}: structured metadata must be an object of strings")
    return entry_event(labels, meta, _ns_seconds(value[0], where), value[1])


def _ns_seconds(ts, where: str) -> float:
    if isinstance(ts, str) and ts.isdigit():
        ns = int(ts)
    elif isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0:
        ns = ts
    elif isinstance(ts, float) and ts.is_integer() and 0 <= ts < 2**64:
        # 1.0 is an integer in JSON; beyond 64 bits, where the parser gives floats, whose
        # rounding would move the bound, a number is refused (a string of digits is not)
        ns = int(ts)
    else:
        raise _bad(f"{where}: the timestamp must be a string of Unix epoch nanoseconds, got {ts!r}")
    if ns >= _MAX_NS:  # compared as integers: the schema's bound, exactly
        raise _bad(f"{where}: the timestamp {ts} is out of range (nanoseconds expected)")
    return ns / 1e9


def decode_push_protobuf(data: bytes, max_lines: int | None = None) -> list[dict]:
    """An uncompressed ``logproto.PushRequest`` → items."""
    from google.protobuf.message import DecodeError

    from ingest_api.receivers.proto.loki_push import PushRequest

    check_protobuf_elements(data, max_lines, (1, 2), "log entries")  # streams[].entries[]
    try:
        req = PushRequest.FromString(data)
    except (DecodeError, ValueError) as exc:
        req = _with_bad_utf8(PushRequest, data, exc)
    check_count(sum(len(stream.entries) for stream in req.streams), max_lines, "log entries")
    items: list[dict] = []
    for n, stream in enumerate(req.streams):
        labels = parse_labels(stream.labels or "{}", where=f"streams[{n}].labels")
        start = len(items)
        for entry in stream.entries:
            ts = entry.timestamp.seconds + entry.timestamp.nanos / 1e9
            if not 0 <= ts < _MAX_TS:
                raise _bad(f"streams[{n}]: a timestamp is out of range")
            meta = {p.name: p.value for p in entry.structuredMetadata}
            items.append(entry_event(labels, meta, ts, entry.line))
        _name_stream(items, start, labels)
    if not items:
        raise _bad("the push holds no log entries")
    return items


def _with_bad_utf8(cls, data: bytes, exc: Exception):
    """The push again when it failed on a string that is not UTF-8 (a Latin-1 line, say):
    Loki (Go, gogoproto) takes such bytes, so SmartLogs does too, decoding them with U+FFFD
    replacement as /ingest text, syslog and the shipper do, rather than refusing the batch
    (a 400, which clients do not retry: every good line of it would be lost)."""
    from google.protobuf.message import DecodeError

    from ingest_api.receivers.proto import parse_replacing_bad_utf8

    # Not keyed on the error's text (it varies across protobuf runtimes): the mirror parse
    # accepts exactly what FromString does but for UTF-8, so other errors fail again.
    try:
        return parse_replacing_bad_utf8(cls, data)
    except (DecodeError, ValueError, RecursionError):
        pass
    raise _bad(f"the body is not a Loki PushRequest: {exc}") from None


def snappy_decompress(data: bytes, max_bytes: int) -> bytes:
    """Snappy block format (what Loki clients send) → bytes, refusing to inflate past ``max_bytes``."""
    import cramjam

    size, shift, i = 0, 0, 0
    while True:  # the block starts with the uncompressed length as a varint
        if i >= len(data) or i > 9:
            raise _bad("the body is not snappy-compressed protobuf (no valid length header)")
        b = data[i]
        size |= (b & 0x7F) << shift
        shift += 7
        i += 1
        if not b & 0x80:
            break
    if size > max_bytes:
        raise IngestError(413, "body_too_large",
                          f"the decompressed body ({size} bytes) exceeds the limit of {max_bytes} bytes",
                          limit=max_bytes)
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except Exception as exc:  # noqa: BLE001 - cramjam.DecompressionError and friends
        raise _bad(f"the body is not valid snappy (block format): {exc}") from None


_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)', re.DOTALL)


def parse_labels(text: str, where: str = "labels") -> dict[str, str]:
    """``{name="value", ...}`` (Prometheus/LogQL stream selector syntax) → dict."""
    if not isinstance(text, str):
        raise _bad(f"{where}: expected a string like '{{job=\"app\"}}'")
    s = text.strip()
    if not (s.startswith("{") and s.endswith("}")):
        raise _bad(f"{where}: expected labels like '{{job=\"app\"}}', got {text[:100]!r}")
    body, pos, out = s[1:-1], 0, {}
    if not body.strip():
        return out
    while pos < len(body):
        m = _LABEL.match(body, pos)
        if not m or m.end() == pos:
            raise _bad(f"{where}: cannot parse labels {text[:100]!r} at position {pos + 1}")
        out[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
        if m.group(3) == "" and pos < len(body):
            raise _bad(f"{where}: cannot parse labels {text[:100]!r}")
    return out


def _unescape(v: str) -> str:
    if "\\" not in v:
        return v
    try:
        return orjson.loads(f'"{v}"')
    except orjson.JSONDecodeError:
        return v.replace('\\"', '"').replace("\\\\", "\\")


def stream_name(labels: dict) -> str | None:
    """A Loki stream's name, the source of its entries that name no host or service
    (``streams.partitions``): its labels as a LogQL selector, sorted, without the host and
    level labels (one stream per writer, not per host or level); at most 200 characters.

    >>> stream_name({"job": "varlogs", "filename": "/var/log/app.log", "level": "info"})
    '{filename="/var/log/app.log", job="varlogs"}'
    >>> stream_name({"host": "web-1"}) is None
    True
    """
    kept = sorted((k, v) for k, v in labels.items() if k not in _NOT_STREAM and v)
    if not kept:
        return None
    text = ", ".join(f'{k}="{v}"' for k, v in kept)
    return ("{" + text + "}")[:MAX_STREAM_LENGTH]


def _name_stream(items: list[dict], start: int, labels: dict) -> None:
    name = stream_name(labels) if labels else None
    if name:
        for item in items[start:]:
            item["stream"] = name


def entry_event(labels: dict, metadata: dict, ts: float, line: str) -> dict:
    """One Loki entry → an item: line → message, labels + structured metadata → fields."""
    merged = {**labels, **metadata} if metadata else labels
    item: dict = {"message": line, "ts": ts}
    for key, names in (("host", _HOST), ("level", _LEVEL), ("component", _COMPONENT),
                       ("pid", ("pid",))):
        for name in names:
            v = merged.get(name)
            if v:
                item[key] = v
                break
    if merged:
        item["fields"] = dict(merged)
    return item


# -- HTTP --------------------------------------------------------------------------------------
router = APIRouter(tags=["receivers"])


def _decode(body: bytes, encoding: str | None, content_type: str | None, max_bytes: int,
            max_lines: int | None = None) -> list[dict]:
    data = decode_content_encoding(body, encoding, max_bytes)
    if not data:
        raise _bad("the request body is empty")
    return assign_ids(decode_push(data, content_type, max_bytes=max_bytes, max_lines=max_lines),
                      SOURCE, data)


def _error(exc: IngestError) -> JSONResponse:
    reject(f"loki_{exc.body['error']}", detail=exc.body.get('detail'))
    headers = {"Retry-After": str(exc.body["retry_after"])} if "retry_after" in exc.body else None
    return JSONResponse(exc.body, status_code=exc.status, headers=headers)


# What the push takes (the route reads its body raw, so FastAPI cannot infer it): Loki's JSON
# push body (streams of labels and [epoch ns, line, metadata?] values; the pre-2.0 form with
# labels/entries is taken too, undeclared), or its snappy-compressed protobuf PushRequest
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_EPOCH_NS = {"anyOf": [{"type": "string", "pattern": "^0*[0-9]{1,20}$"},  # below year 10000
                       {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}]}
PUSH_REQUEST_BODY = {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["streams"], "properties": {
        "streams": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["values"], "properties": {
                "stream": {"anyOf": [_STRINGS, {"type": "null"}]},
                "values": {"type": "array", "minItems": 1, "items": {
                    "type": "array", "minItems": 2, "maxItems": 3,
                    "items": [_EPOCH_NS, {"type": "string"}, _STRINGS]}}}}}}}},
    "application/x-protobuf": BINARY,
}}


@router.post(
    "/loki/api/v1/push",
    status_code=204,
    summary="Loki push (JSON, or snappy protobuf)",
    description="The Loki push API as Promtail, Grafana Alloy and Loki client libraries send it. "
                "Answers 204 once the entries are durably taken.",
    responses={204: {"description": "taken"},
               **refusals(400, 413, 415, 503, s400="malformed push")},
    openapi_extra={"requestBody": PUSH_REQUEST_BODY},
)
async def push(request: Request) -> Response:
    s = settings_of(request)
    try:
        body = await read_body(request, s.max_body_bytes)
        async with ingest_slot(request):  # bounded decoding: see receivers.ingest_slot
            items = await run_in_threadpool(_decode, body, request.headers.get("content-encoding"),
                                            request.headers.get("content-type"), s.max_body_bytes,
                                            s.max_lines_per_request)
            metrics.EVENTS_RECEIVED.labels(SOURCE).inc(len(items))
            await accept_items(request, items, SOURCE)
    except IngestError as exc:
        return _error(exc)
    return Response(status_code=204)
