"""Request bodies → accepted items. Pure: no I/O, every failure a clear ``IngestError``.

Accepted bodies (``Content-Encoding: gzip`` optional on all of them):

* ``application/json``: one event object, or an array of them;
* ``application/x-ndjson`` / ``application/jsonl``: one event object per line;
* ``text/plain``: one raw log line per line (the pipeline parses the header).

An event object has ``message`` (or ``raw``/``line`` for an unparsed line) and optionally
``timestamp`` (ISO 8601 or epoch seconds/milliseconds), ``host``, ``service``/``component``,
``level``, ``pid``, ``id`` (idempotency key: an id already stored is not stored again) and
``fields`` (an object of extra values). Other keys are kept in ``fields``.
"""

from __future__ import annotations

import gzip
import zlib
from datetime import datetime, timezone

import orjson

from streams.multiline import join_lines

__all__ = ["IngestError", "decode_body", "INGEST_REQUEST_BODY", "decode_content_encoding",
           "gunzip", "check_count", "check_lines", "parse_timestamp", "check_depth", "JSON_TYPES", "NDJSON_TYPES", "TEXT_TYPES"]

JSON_TYPES = {"application/json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/x-jsonlines", "application/jsonlines"}
TEXT_TYPES = {"text/plain"}

MAX_STREAM_LENGTH = 200
_KNOWN = {"stream", "message", "msg", "raw", "line", "timestamp", "@timestamp", "time", "ts", "host",
          "hostname", "service", "component", "app", "level", "severity", "pid", "id", "fields"}
MAX_ID_LENGTH = 200
# how deep an event's own fields may nest objects/arrays; the stores serialise events as JSON
# (orjson stops at 255 levels, the spool wraps each event in two more), so deeper is refused
# here, with a clear error, rather than failing later where nobody can be told
MAX_FIELD_DEPTH = 100
_MIN_TS = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp()  # 0001-01-01T00:00:00Z
_MAX_TS = 253402300800.0  # 10000-01-01T00:00:00Z


# What POST /ingest takes, for its OpenAPI schema (clients and fuzzers read it there).
# message, raw, host, service, level, pid: a number is taken as its text, null as absent
# (``_str_field``)
_TEXT_FIELD = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]}

_NOT_NULL = {"not": {"type": "null"}}
EVENT_SCHEMA = {
    "type": "object",
    "properties": {  # read from every event
        "message": _TEXT_FIELD,
        "raw": _TEXT_FIELD,
        "stream": {"type": ["string", "null"], "description": "the source the line comes from "
                   "(a file): its header layout is learned apart"},
        "id": {"type": ["string", "null"], "minLength": 1, "maxLength": 200},
    },
    "anyOf": [
        # an event with a message: its other fields are read as given
        {"required": ["message"], "properties": {
            "message": _NOT_NULL,
            "timestamp": {"anyOf": [
                {"type": "string", "format": "date-time"},
                # epoch seconds, or milliseconds above 1e11
                {"type": "number", "minimum": 0, "exclusiveMaximum": 253402300800000},
                {"type": "null"},  # null: as if absent (the arrival time stands in)
            ]},
            "host": _TEXT_FIELD,
            "service": _TEXT_FIELD,
            "level": _TEXT_FIELD,
            "pid": _TEXT_FIELD,
            "fields": {"type": ["object", "null"]},
        }},
        # a raw line and no message: the line is parsed like text/plain (host, time... come
        # from it) and the event's other fields are not read
        {"required": ["raw"], "properties": {"raw": _NOT_NULL, "message": {"type": "null"}}},
    ],
}
NON_BLANK_TEXT = {"type": "string", "pattern": "\\S"}  # at least one line that is not blank
INGEST_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"anyOf": [EVENT_SCHEMA,
                                 {"type": "array", "items": EVENT_SCHEMA, "minItems": 1}]},
        },
        "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
        "text/plain": {"schema": NON_BLANK_TEXT},
    },
}



class IngestError(Exception):
    """A request we refuse, with the HTTP status and a JSON-able body."""

    def __init__(self, status: int, error: str, detail: str, **extra):
        super().__init__(detail)
        self.status = status
        self.body = {"error": error, "detail": detail, **extra}


def check_count(n: int, limit: int | None, what: str = "lines") -> None:
    """IngestError 413 when a request carries more than ``limit`` lines (or events).

    The one bound on lines per request that every receiver applies (``/ingest``, ``_bulk``,
    Loki, OTLP) before it builds a Python object per line: a few bytes per line can otherwise
    cost hundreds of bytes of objects each (``a\\n`` × 450,000, a 900 KB body, took 1.6 GB)."""
    if limit is not None and n > limit:
        raise IngestError(413, "too_many_lines",
                          f"the request holds {n} {what}, more than the limit of {limit} per "
                          "request (SMARTLOGS_MAX_LINES_PER_REQUEST): split it into smaller "
                          "requests", limit=limit)


_MIN_EVENT_BYTES = 12  # the shortest event an array can hold, with its comma: {"raw":"a"},


def _too_many(limit: int, what: str) -> IngestError:
    return IngestError(413, "too_many_lines",
                       f"the request holds more than {limit} {what}, the limit per request "
                       "(SMARTLOGS_MAX_LINES_PER_REQUEST): split it into smaller requests",
                       limit=limit)


def check_json_array(data: bytes, limit: int | None) -> None:
    """:func:`check_count` for a JSON array of events, counted before it is parsed.

    A body too short to hold more than ``limit`` events is not looked at. A longer one is
    walked by a streaming parser (ijson's yajl backend, in C) that builds no object and stops
    at the first element past the limit: ``[{...}, ...]`` × 650,000 in a 10 MB body otherwise
    became 650,000 dicts before being refused. Not JSON, or not an array: left to the parser
    that reports the error with its position.

    >>> try:
    ...     check_json_array(b'[{"raw":"a"},{"raw":"b"}]', 1)
    ... except IngestError as exc:
    ...     print(exc.status, exc.body["error"])
    413 too_many_lines
    """
    check_json_elements(data, limit, ("",), "events", _MIN_EVENT_BYTES)


def check_json_elements(data: bytes, limit: int | None, arrays: tuple[str, ...], what: str,
                        min_bytes: int) -> None:
    """IngestError 413 when the JSON arrays at ``arrays`` (ijson prefixes: ``""`` is the
    document, ``"streams.item.values"`` the ``values`` of each element of ``streams``) hold
    more than ``limit`` elements together, counted by a streaming parser that builds no object
    and stops past the limit. Bodies shorter than ``limit + 1`` elements of ``min_bytes`` are
    not looked at; what is not JSON is left to the real parser (it reports where).

    >>> body = b'{"streams":[{"values":[["1","a"],["2","b"]]},{"values":[["3","c"]]}]}'
    >>> check_json_elements(body, 3, ("streams.item.values",), "entries", 1)
    >>> try:
    ...     check_json_elements(body, 2, ("streams.item.values",), "entries", 1)
    ... except IngestError as exc:
    ...     print(exc.status, exc.body["detail"][:40])
    413 the request holds more than 2 entries, t
    """
    if limit is None or len(data) <= (limit + 1) * min_bytes - 1:
        return
    import ijson

    items = {f"{a}.item" if a else "item" for a in arrays}
    n = 0
    try:
        for prefix, event, _ in ijson.parse(data):
            # an element starts with one event at "<array>.item" (its end and its keys too)
            if prefix in items and event not in ("end_map", "end_array", "map_key"):
                n += 1
                if n > limit:
                    raise _too_many(limit, what)
    except ijson.JSONError:
        return


def check_protobuf_elements(data: bytes, limit: int | None, path: tuple[int, ...],
                            what: str) -> None:
    """IngestError 413 when a protobuf message holds more than ``limit`` elements at ``path``
    (field numbers of nested repeated messages: Loki's ``PushRequest.streams[].entries[]`` is
    ``(1, 2)``), counted on the wire before the message is parsed: the parsed objects of a
    body of tiny records take 15 to 30 times its size. Walks tags and lengths only, stops past
    the limit; a malformed body is left to the real parser (it says what is wrong).

    >>> entry = bytes([2 << 3 | 2, 1]) + b"a"  # field 2, 1 byte long: one entry
    >>> stream = bytes([1 << 3 | 2, len(entry * 3)]) + entry * 3
    >>> check_protobuf_elements(stream * 2, 6, (1, 2), "entries")
    >>> try:
    ...     check_protobuf_elements(stream * 2, 5, (1, 2), "entries")
    ... except IngestError as exc:
    ...     print(exc.status, exc.body["error"])
    413 too_many_lines
    """
    # the smallest element is a tag and a length (2 bytes)
    if limit is None or len(data) <= 2 * (limit + 1) - 1:
        return
    try:
        _count_fields(memoryview(data), 0, len(data), path, limit)
    except ValueError:
        return
    except OverflowError:
        raise _too_many(limit, what) from None


def _varint(buf, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _count_fields(buf, i: int, end: int, path: tuple[int, ...], budget: int) -> int:
    """Elements at ``path`` in ``buf[i:end]``; OverflowError once more than ``budget``."""
    n = 0
    field = path[0]
    while i < end:
        tag, i = _varint(buf, i, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = _varint(buf, i, end)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _varint(buf, i, end)
            if number == field:
                if len(path) == 1:
                    n += 1
                else:
                    n += _count_fields(buf, i, min(i + size, end), path[1:], budget - n)
                if n > budget:
                    raise OverflowError
            i += size
        else:
            raise ValueError("groups are not used by these messages")
    if i > end:
        raise ValueError("a field runs past its message")
    return n


def check_lines(data: bytes, limit: int | None) -> None:
    """:func:`check_count` for a body split at newlines, counted without splitting it (in C, no
    allocation). Blank lines count too: splitting allocates for them as well."""
    if limit is not None:
        check_count(data.count(b"\n") + (0 if data.endswith(b"\n") else 1), limit)


def decode_body(
    body: bytes,
    *,
    content_type: str | None,
    content_encoding: str | None = None,
    max_bytes: int,
    max_line_length: int = 65536,
    multiline: bool = False,
    max_lines: int | None = None,
) -> list[dict]:
    """Decode and validate a request body into items (dicts without ids or times yet).

    ``multiline``: in a text body, continuation lines (a stack trace, an indented dump) join
    the line they belong to (``streams.multiline``), one item per event. ``max_lines``: more
    lines (text, NDJSON) or array elements (JSON) than this is a 413, refused before an
    object is built for each."""
    body = decode_content_encoding(body, content_encoding, max_bytes)
    if len(body) > max_bytes:
        raise IngestError(413, "body_too_large",
                          f"body is {len(body)} bytes, the limit is {max_bytes}", limit=max_bytes)
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in TEXT_TYPES or mime in NDJSON_TYPES:
        check_lines(body, max_lines)
    if not body.strip():
        raise IngestError(400, "empty_body", "the request body is empty; send at least one event")
    if mime not in TEXT_TYPES | JSON_TYPES | NDJSON_TYPES:  # the type first: a PNG is a 415
        raise IngestError(
            415, "unsupported_media_type",
            (f"Content-Type {content_type!r} is not supported" if content_type else
             "the request has no Content-Type") + "; use application/json, "
            "application/x-ndjson or text/plain",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(400, "invalid_utf8",
                          f"the body is not valid UTF-8 (bad byte at offset {exc.start})") from None
    if mime in TEXT_TYPES:
        lines = (line.rstrip("\r") for line in text.split("\n"))
        nonblank = (line for line in lines if line.strip())
        if multiline:  # a stack trace or an indented continuation joins the line before it
            items = [{"raw": event} for _, event in join_lines(
                ((None, line) for line in nonblank), max_bytes=max_line_length)]
        else:
            items = [{"raw": line} for line in nonblank]
        if not items:  # only unicode whitespace (U+00A0, U+3000, ...): nothing to store
            raise IngestError(400, "empty_body", "the request body holds only blank lines; "
                              "send at least one event")
        return items
    if mime in JSON_TYPES:
        check_json_array(body, max_lines)  # before a Python object is built for each event
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise IngestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        if isinstance(doc, dict):
            return [_event(doc, 0)]
        if isinstance(doc, list):
            if not doc:
                raise IngestError(400, "empty_body", "the JSON array is empty; send at least one event")
            check_count(len(doc), max_lines, "events")
            return [_event(d, i) for i, d in enumerate(doc)]
        raise IngestError(422, "invalid_event",
                          f"expected a JSON object or an array of objects, got {_kind(doc)}")
    if mime in NDJSON_TYPES:
        items = []
        for n, line in enumerate(text.split("\n")):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise IngestError(400, "invalid_json", f"line {n + 1} is not valid JSON: {exc}",
                                  line=n + 1) from None
            items.append(_event(doc, n, what="line"))
        if not items:
            raise IngestError(400, "empty_body", "the request body holds only blank lines; "
                              "send at least one event")
        return items
    raise AssertionError(f"unhandled media type {mime!r}")  # every accepted type returns above


def decode_content_encoding(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip or identity/none); anything else is a 415."""
    if content_encoding:
        enc = content_encoding.strip().lower()
        if enc == "gzip":
            return gunzip(body, max_bytes)
        if enc not in ("identity", ""):
            raise IngestError(415, "unsupported_encoding",
                              f"Content-Encoding {content_encoding!r} is not supported; use gzip or none")
    return body


def gunzip(body: bytes, max_bytes: int) -> bytes:
    """gzip → bytes, every member of it, refusing (413) to inflate beyond ``max_bytes`` in all and
    (400) broken streams.

    Concatenated members are one valid gzip file (``gzip -c a b``, ``cat a.gz b.gz``; shippers
    that rotate compressed chunks send them so), and ``gunzip`` decodes them all. Trailing zero
    bytes after the last member (tape-style padding) are ignored, as GNU gzip does.

    >>> import gzip
    >>> gunzip(gzip.compress(b"one\\n") + gzip.compress(b"two\\n"), 100)
    b'one\\ntwo\\n'
    """
    # Fed in small chunks: what zlib hands back after a member's end (``unused_data``) is a copy,
    # so one big feed would cost O(body) per member, O(body²) for a body of many tiny members.
    end, padded = len(body), len(body.rstrip(b"\0"))  # from ``padded`` on: zero bytes only
    view = memoryview(body)
    out = bytearray()
    pos = 0
    try:
        while True:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while not d.eof:
                if pos >= end:
                    raise IngestError(400, "invalid_gzip", "the gzip stream is truncated")
                chunk = view[pos:pos + _GZIP_CHUNK]
                pos += len(chunk)
                out += d.decompress(chunk, max_bytes + 1 - len(out))
                if len(out) > max_bytes or d.unconsumed_tail:
                    raise IngestError(413, "body_too_large",
                                      f"the decompressed body exceeds the limit of {max_bytes} bytes",
                                      limit=max_bytes)
            pos -= len(d.unused_data)
            if pos >= padded:
                return bytes(out)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise IngestError(400, "invalid_gzip", f"the body is not valid gzip: {exc}") from None


_GZIP_CHUNK = 4096
_gunzip = gunzip  # the old private name


def _kind(v) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _str_field(doc: dict, keys: tuple[str, ...], where: str) -> str | None:
    for k in keys:
        v = doc.get(k)
        if v is None:
            continue
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        raise IngestError(422, "invalid_event", f"{where}: {k!r} must be a string, got {_kind(v)}",
                          field=k)
    return None


def parse_timestamp(v, where: str = "event") -> float:
    """ISO 8601 string or epoch seconds/milliseconds → epoch seconds (UTC)."""
    if isinstance(v, bool):
        raise IngestError(422, "invalid_event", f"{where}: 'timestamp' must be a string or number")
    if isinstance(v, (int, float)):
        ts = float(v)
        if ts > 1e11:  # milliseconds
            ts /= 1000.0
        if not (0 <= ts < 253402300800):
            raise IngestError(422, "invalid_event", f"{where}: 'timestamp' {v} is out of range")
        return ts
    if isinstance(v, str):
        s = v.strip()
        try:
            dt = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
        except ValueError:
            raise IngestError(422, "invalid_event",
                              f"{where}: 'timestamp' {v!r} is not ISO 8601 or epoch seconds") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        ts = dt.timestamp()
        # an offset can push the instant outside what a date can hold (year 0 or 10000)
        if not (_MIN_TS <= ts < _MAX_TS):
            raise IngestError(422, "invalid_event",
                              f"{where}: 'timestamp' {v!r} is out of range")
        return ts
    raise IngestError(422, "invalid_event",
                      f"{where}: 'timestamp' must be a string or number, got {_kind(v)}")


def _event(doc, i: int, what: str = "event") -> dict:
    where = f"{what} {i + 1}" if what == "line" else f"event {i}"
    if not isinstance(doc, dict):
        raise IngestError(422, "invalid_event", f"{where}: expected an object, got {_kind(doc)}",
                          index=i)
    raw = _str_field(doc, ("raw", "line"), where)
    message = _str_field(doc, ("message", "msg"), where)
    if raw is None and message is None:
        raise IngestError(422, "invalid_event", f"{where}: needs a 'message' (or 'raw') string",
                          index=i)
    item: dict = {}
    eid = doc.get("id")
    if eid is not None:
        if not isinstance(eid, str) or not eid or len(eid) > MAX_ID_LENGTH:
            raise IngestError(422, "invalid_event",
                              f"{where}: 'id' must be a non-empty string of at most "
                              f"{MAX_ID_LENGTH} characters", index=i)
        item["id"] = eid
    stream = doc.get("stream")
    if stream is not None and not isinstance(stream, str):
        raise IngestError(422, "invalid_event", f"{where}: 'stream' must be a string, got "
                          f"{_kind(stream)}", field="stream", index=i)
    if isinstance(stream, str) and stream.strip():  # the named source (a shipped file)
        item["stream"] = stream.strip()[:MAX_STREAM_LENGTH]
    if message is None:
        item["raw"] = raw
        return item
    item["message"] = message
    ts = next((doc[k] for k in ("timestamp", "@timestamp", "time", "ts") if doc.get(k) is not None),
              None)
    if ts is not None:
        item["ts"] = parse_timestamp(ts, where)
    for key, names in (("host", ("host", "hostname")), ("component", ("service", "component", "app")),
                       ("level", ("level", "severity")), ("pid", ("pid",))):
        v = _str_field(doc, names, where)
        if v is not None:
            item[key] = v
    fields = doc.get("fields")
    if fields is not None and not isinstance(fields, dict):
        raise IngestError(422, "invalid_event", f"{where}: 'fields' must be an object", index=i)
    extra = {k: v for k, v in doc.items() if k not in _KNOWN}
    if fields or extra:
        item["fields"] = {**extra, **(fields or {})}
        check_depth(item["fields"], where, index=i)
    return item


def check_depth(value, where: str, *, index: int | None = None, limit: int = MAX_FIELD_DEPTH) -> None:
    """IngestError 422 when ``value`` nests objects/arrays more than ``limit`` levels deep.
    Iterative (no recursion limit to hit), and it stops at the first level over the limit."""
    level, todo = 0, [value]
    while todo:
        level += 1
        if level > limit:
            raise IngestError(422, "invalid_event",
                              f"{where}: its fields nest objects/arrays more than {limit} levels "
                              "deep; flatten them", index=index)
        todo = [c for v in todo for c in (v.values() if isinstance(v, dict) else v)
                if isinstance(c, (dict, list))]
