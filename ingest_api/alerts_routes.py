"""``/api/alerts``: the alert history and silences (see streams.runtime.alerting)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from ingest_api.decode import IngestError
from ingest_api.openapi import refusals

__all__ = ["router"]

router = APIRouter()


def _alerting(request: Request):
    """Embedded: the transport's alerting; full stack: the rules and the history the worker
    writes to Elasticsearch (``streams.runtime.alerting.AlertsView``)."""
    alerting = getattr(getattr(request.app.state, "transport", None), "alerting", None)
    alerting = alerting or getattr(request.app.state, "alerts_view", None)
    if alerting is None:
        raise IngestError(404, "alerts_off",
                          "alerting is off: start with SMARTLOGS_ALERT_RULES=FILE (see "
                          "deploy/alerts.example.yaml; in the full stack, on the API and the "
                          "worker)")
    return alerting


@router.get("/api/alerts", summary="Alerts raised (firing, resolved, suppressed), newest first",
            responses=refusals(404, s404="alerting is off (no SMARTLOGS_ALERT_RULES)"))
def alerts(request: Request,
           rule: Annotated[str | None, Query(max_length=200, description="only this rule")] = None,
           state: Annotated[Literal["firing", "resolved", "suppressed"] | None, Query()] = None,
           limit: Annotated[int, Query(ge=1, le=1000)] = 100):
    a = _alerting(request)
    return {"alerts": a.history.list(rule=rule, state=state, limit=limit),
            "silences": a.history.silences(time.time())}


class Silence(BaseModel):
    rule: str = Field(min_length=1, max_length=200, description="the rule's name")
    group: str = Field("*", min_length=1, max_length=500, description="one group (host, template…) or * for all")
    seconds: float = Field(gt=0, le=366 * 86400, description="how long, in seconds")


@router.post("/api/alerts/silences", summary="Silence a rule (or one of its groups) for a while",
             status_code=201, responses=refusals(400, 404, s404="alerting is off (no SMARTLOGS_ALERT_RULES)", s400="body is not JSON"))
def silence(request: Request, body: Silence):
    a = _alerting(request)
    if body.rule not in {r.name for r in a.engine.rules}:
        raise IngestError(422, "unknown_rule", f"no rule named {body.rule!r}; rules: "
                          + ", ".join(r.name for r in a.engine.rules))
    until = time.time() + body.seconds
    a.history.silence(body.rule, body.group, until)
    return {"rule": body.rule, "group": body.group, "until": until}
