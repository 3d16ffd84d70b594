"""``/api/templates``: the template catalog (list, one template's history and examples) and
feedback on a template (``expected`` / ``always_alert`` / ``none``), see streams/catalog.py.

Both stores answer the catalog (SQLite in embedded mode, Elasticsearch in the full stack).
Feedback is stored with the template's history; in embedded mode the pipeline shares this
process and scores the next line with it; in the full stack the worker reads the marks from
Elasticsearch every few seconds (``streams.runtime.worker.MARKS_SECONDS``, 5).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as FastApiPath
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ingest_api.decode import IngestError
from ingest_api.openapi import refusals, TimeText, time_query
from ingest_api.store_errors import STORE_ERRORS, store_refusal
from streams.catalog import MAX_NOTE_CHARS, TemplateChange, normalise_mark

__all__ = ["router"]

router = APIRouter()

# "T" + 12 hex digits (ids derived from the template's text, streams.templates); "T" + a number
# (stores and checkpoints made before, and T0: lines that could not be processed)
TEMPLATE_ID = r"^T(?:[0-9a-f]{12}|\d{1,18})$"
MAX_TEMPLATES_PAGE = 10_000
MAX_HISTORY = 1000

TemplateId = Annotated[str, FastApiPath(pattern=TEMPLATE_ID, max_length=19,
                                        description="a template id, e.g. T3f2a9c01b7de")]


def _store(request: Request, method: str, *args, **kwargs):
    """A call to the store; a store that cannot answer now (Elasticsearch down or overloaded)
    is a 503 that says so, never a 500 (``ingest_api.store_errors``)."""
    try:
        return getattr(request.app.state.store, method)(*args, **kwargs)
    except STORE_ERRORS as exc:
        raise store_refusal(exc) from None


def _since(value: str | None) -> float | None:
    from ingest_api.app import parse_time

    return parse_time(value, field="since")


@router.get("/api/templates", summary="The template catalog: mined templates, counts, first/last seen, marks")
def templates(
    request: Request,
    sort: Annotated[Literal["count", "first_seen", "last_seen"], Query(description=(
        "count: most lines first (the default); first_seen: newest templates first; "
        "last_seen: most recently seen first"))] = "count",
    since: Annotated[TimeText | None, time_query(
        "only templates first seen at or after this event time (what is new)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_TEMPLATES_PAGE)] = 100,
):
    rows = _store(request, "templates", limit=limit, sort=sort, since=_since(since))
    return {"sort": sort, "templates": rows}


@router.get("/api/templates/{template_id}",
            summary="One template: its text, counts, example lines and history of changes",
            responses=refusals(404, s404="no such template (or merged into another)"))
def template(
    request: Request, template_id: TemplateId,
    history: Annotated[int, Query(ge=1, le=MAX_HISTORY, description=(
        "how many of the latest history records to return"))] = 100,
):
    found = _store(request, "template", template_id, history=history)
    if found is None:
        raise _unknown(template_id, _store(request, "merged_into", template_id))
    return found


def _unknown(template_id: str, into: str | None = None) -> IngestError:
    if into is not None:  # its lines carry the other id now: say which
        return IngestError(404, "merged_template",
                           f"template {template_id} was merged into {into}: GET "
                           f"/api/templates/{into} (its history has the merge)",
                           template_id=template_id, merged_into=into)
    return IngestError(404, "unknown_template",
                       f"no template {template_id} in the catalog (GET /api/templates lists them; "
                       "one whose lines were all deleted by retention is gone)",
                       template_id=template_id)


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mark: Literal["expected", "always_alert", "always-alert", "none"] = Field(description=(
        "expected: its lines stop counting as anomalous for rarity or novelty (the model keeps "
        "learning them); always_alert: its lines are always flagged; none: clear the mark"))
    note: str | None = Field(None, max_length=MAX_NOTE_CHARS,
                             description="why (stored with the template's history)")


@router.post("/api/templates/{template_id}/feedback",
             summary="Mark a template expected or always-alert (or clear the mark)",
             responses=refusals(400, 404, 422, s400="body is not JSON",
                                s404="no such template (or merged into another)",
                                s422="invalid body"))
async def feedback(request: Request, template_id: TemplateId, body: Feedback):
    now = time.time()
    change = TemplateChange(id=f"feedback/{template_id}/{time.time_ns()}", template_id=template_id,
                            kind="feedback", at=now, mark=normalise_mark(body.mark),
                            note=body.note or None, by=_key_name(request))
    runner = getattr(request.app.state.transport, "runner", None)
    # embedded: the runner stores the mark and applies it to the pipeline it runs
    if runner is not None:
        done = await run_in_threadpool(runner.set_mark, change)
    else:
        done = await run_in_threadpool(_store, request, "set_mark", change)
    if not done:
        raise _unknown(template_id, await run_in_threadpool(_store, request, "merged_into",
                                                            template_id))
    applies = (getattr(runner, "marks_apply", "from the next line processed")
               if runner is not None else "once the workers read the marks (within 5 s)")
    return {"template_id": template_id, "mark": change.mark, "at": now, "applies": applies}


def _key_name(request: Request) -> str | None:
    """The name of the API key that gave the feedback (None while keys are off)."""
    keys = getattr(request.app.state, "keys", None)
    secret = (request.scope.get("state") or {}).get("auth", (None,))[0]
    if keys is None or not secret:
        return None
    key = keys.verify(secret)
    return key.name if key is not None else None
