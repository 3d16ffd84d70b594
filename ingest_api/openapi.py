"""What the OpenAPI schema says about refusals and times, shared by every route module.

* ``REFUSAL_SCHEMA``: the body of every 4xx of the API's own routes (``{"error", "detail"}``,
  see the exception handlers in ``ingest_api.app``), declared once as the component
  ``Refusal``; ``refusals(404, 415, ...)`` declares statuses with that body on a route.
* ``TIME_PATTERN``: the values ``since``/``until`` take. ``ingest_api.app.parse_time`` refuses
  (422 ``invalid_time``) exactly the values that do not match it, so a request the schema
  allows is accepted and one it does not is refused (issue 21, Schemathesis' conformance).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Query
from pydantic import WithJsonSchema

__all__ = ["REFUSAL_SCHEMA", "REFUSAL_REF", "refusals", "EVENTS_RESPONSE", "TIME_PATTERN", "TIME_RE", "TimeText", "time_query"]

REFUSAL_REF = "#/components/schemas/Refusal"
REFUSAL_SCHEMA = {
    "title": "Refusal", "type": "object", "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "what is wrong, as a code: invalid_request, "
                  "invalid_time, invalid_query, invalid_cursor, ..."},
        "detail": {"type": "string", "description": "what is wrong, for a person"},
        "field": {"type": "string", "description": "the parameter at fault, when one is"},
        "position": {"type": "integer", "description": "where in q a query could not be read"},
        "errors": {"type": "array", "items": {"type": "object"},
                   "description": "each invalid parameter (type, loc, msg)"},
    },
}

BINARY = {"schema": {"type": "string", "format": "binary"}}  # a body a route reads raw

# GET /api/events: a page of events and how many match. ``total`` is exact up to
# smartlogs.store.base.TOTAL_LIMIT (10,000) matching events; past it the store stops counting
# and says so, as Elasticsearch's default track_total_hits does.
EVENTS_RESPONSE = {
    "description": "a page of matching events, newest first (or in the order asked for)",
    "content": {"application/json": {"schema": {
        "title": "EventsPage", "type": "object",
        "required": ["total", "total_relation", "last_seq", "next", "events"],
        "properties": {
            "total": {"type": "integer", "minimum": 0, "description": (
                "how many events match: exact when total_relation is eq; with gte, at least "
                "this many (the count stops at 10,000: shown as 10,000+)")},
            "total_relation": {"type": "string", "enum": ["eq", "gte"], "description": (
                "eq: total is exact; gte: total is a lower bound (more than 10,000 match)")},
            "last_seq": {"type": "integer", "minimum": 0, "description": (
                "the highest seq stored: a cursor for tailing (after=)")},
            "next": {"type": ["string", "null"], "description": (
                "the cursor of the next page (pass it as cursor=); null on the last page. "
                "Exact whatever total says")},
            "events": {"type": "array", "items": {"type": "object"}},
        },
    }}},
}

_WHY = {400: "malformed body", 404: "not found", 413: "body too large",
        415: "unsupported Content-Type or Content-Encoding", 422: "invalid request",
        503: "backlog full or store busy: retry later (Retry-After)"}


def refusals(*statuses: int, **why: str) -> dict:
    """``responses=`` entries for these statuses, each with the ``Refusal`` body; ``why``
    overrides a description (``s404="alerting is off"``)."""
    return {status: {"description": why.get(f"s{status}", _WHY.get(status, "refused")),
                     "content": {"application/json": {"schema": {"$ref": REFUSAL_REF}}}}
            for status in statuses}


# ISO 8601 date or date-time (only valid calendar dates, leap days included; optional seconds,
# fraction and offset), epoch seconds, or an age (15m, 2h, 7d, 1.5w); digits bounded, so
# that every value that matches is a finite time. Plain [0-9] and literal
# characters only, so that JSON Schema (ECMA 262) and Python's re read it the same way.
_YEAR = "(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_DATE = ("(?:" + _YEAR + "-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
         "|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
         "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)-02-29)")
_TIME = ("(?:[T t](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{1,6})?)?"
         "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?)?")
_EPOCH = "[+-]?(?:[0-9]{1,20}(?:\\.[0-9]{0,20})?|\\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,2})?"
_AGE = "[0-9]{1,20}(?:\\.[0-9]{1,20})? *[smhdw]"
TIME_PATTERN = f"^(?:{_DATE}{_TIME}|{_EPOCH}|{_AGE})?$"  # empty: no bound
TIME_RE = re.compile(TIME_PATTERN)

_TIME_FORMS = ("ISO 8601 (2024-05-01, 2024-05-01T10:00:00Z, with an offset or none: UTC), "
               "epoch seconds, or an age such as 15m, 2h, 7d, 1w")


# the text of since/until: the schema carries the pattern, parse_time applies it (so that a
# refusal is its invalid_time 422, which names the parameter and the forms it takes)
TimeText = Annotated[str, WithJsonSchema({"type": "string", "maxLength": 100,
                                          "pattern": TIME_PATTERN})]


def time_query(what: str):
    """A ``since``/``until`` query parameter (``Annotated[TimeText | None, time_query(...)]``)."""
    return Query(max_length=100, description=f"{what}: {_TIME_FORMS}")
