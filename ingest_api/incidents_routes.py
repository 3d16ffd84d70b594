"""``/api/incidents``: flagged lines grouped by cause (``streams.incidents``), both modes.

The pipeline's state holds the incidents; the store (SQLite embedded, Elasticsearch in the
full stack) keeps the latest snapshot of each, which is what these routes read.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from ingest_api.decode import IngestError
from ingest_api.openapi import TimeText, time_query, refusals

__all__ = ["router", "present"]

router = APIRouter()

IncidentId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                 description="an incident id, e.g. I3f2a9c0d1e2b4a57")]


def present(inc: dict) -> dict:
    """A stored snapshot as the API shows it: ISO times beside the epoch seconds."""
    from streams.pipeline import _iso  # one formatter for every timestamp we emit

    out = dict(inc)
    for key, iso in (("first_ts", "first_seen"), ("last_ts", "last_seen"),
                     ("resolved_ts", "resolved_at"), ("last_received", "last_arrival")):
        v = inc.get(key)
        out[iso] = _iso(v) if isinstance(v, (int, float)) and math.isfinite(v) else None
    return out


@router.get("/api/incidents", summary="Incidents (flagged lines grouped by cause), latest first")
async def incidents(
    request: Request,
    status: Annotated[Literal["open", "resolved"] | None, Query(
        description="open: still going on; resolved: quiet for the quiet period")] = None,
    since: Annotated[TimeText | None, time_query(
        "with a line at or after this time (event or arrival time, see time)")] = None,
    source: Annotated[str | None, Query(max_length=500, description="the incident's source: its lines' host, else their service, file, stream or API key")] = None,
    template: Annotated[str | None, Query(max_length=100, description="template id, e.g. T12")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    basis: Annotated[Literal["event", "arrival"], Query(alias="time", description=(
        "what since and the order count in: event (the time the lines carry, the default) or "
        "arrival (when their latest line reached SmartLogs: what was flagged last comes "
        "first, whatever the dates in a replayed file)"))] = "event",
):
    from ingest_api.app import parse_time

    t = parse_time(since, field="since")
    if t is not None and not math.isfinite(t):
        raise IngestError(422, "invalid_time", f"since={since!r} is not a finite time", field="since")
    store = request.app.state.store
    rows = await run_in_threadpool(store.incidents, status=status, since=t, source=source,
                                   template=template, limit=limit, basis=basis)
    return {"incidents": [present(i) for i in rows]}


@router.get("/api/incidents/{incident_id}", summary="One incident, with its example lines",
            responses=refusals(404, s404="no such incident"))
async def incident(request: Request, incident_id: IncidentId):
    inc = await run_in_threadpool(request.app.state.store.incident, incident_id)
    if inc is None:
        raise IngestError(404, "unknown_incident", f"no incident with id {incident_id!r}")
    return present(inc)
