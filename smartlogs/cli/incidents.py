"""``smartlogs incidents``: flagged lines grouped by cause, from a running API (both modes)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

__all__ = ["incidents_command"]


def _short(ts: str | None) -> str:
    return (ts or "-").replace("T", " ").replace(".000Z", "Z")


def incidents_command(
    incident_id: Annotated[Optional[str], typer.Argument(
        metavar="ID", help="One incident: its details and example lines.")] = None,
    status: Annotated[Optional[str], typer.Option(
        help="open (still going on) or resolved (quiet for SMARTLOGS_INCIDENT_QUIET_SECONDS).")] = None,
    since: Annotated[Optional[str], typer.Option(
        help="With a line at or after this time: ISO 8601, epoch, or an age (15m, 2h, 7d).")] = None,
    source: Annotated[Optional[str], typer.Option(help="Only this source (host or stream).")] = None,
    template: Annotated[Optional[str], typer.Option(help="Only this template id, e.g. T12.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 30,
    basis: Annotated[str, typer.Option("--time", help="What --since and the order mean: event (the time in the lines) or arrival (when the latest line reached SmartLogs).")] = "event",
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
    url: Annotated[str, typer.Option(envvar="SMARTLOGS_URL", help="Base URL of the API.")] = "http://127.0.0.1:8000",
) -> None:
    """Incidents: anomalous lines that share a cause (the same source or pattern and the same
    evidence), each with a count, first and last time, and example lines; latest first.

    Example: smartlogs incidents --status open --since 2h

    Example: smartlogs incidents I3f2a9c0d1e2b4a57   (one incident, with example lines)
    """
    from rich.markup import escape
    from rich.table import Table

    from smartlogs.cli import _fail, _get, _record_table, console

    if status is not None and status not in ("open", "resolved"):
        _fail(f"--status must be open or resolved, not {status!r}")
    if basis not in ("event", "arrival"):
        _fail(f"--time must be event or arrival, not {basis!r}")
    if incident_id is not None:
        inc = _get(url, f"/api/incidents/{incident_id}", {})
        if as_json:
            console.print_json(json.dumps(inc))
            return
        console.print(f"[bold]{escape(inc['id'])}[/] {inc['status']} · {inc['count']} line(s) · "
                      f"source {escape(str(inc.get('source')))} · template "
                      f"{escape(str(inc.get('template_id')))} · evidence {escape(str(inc.get('kind')))}")
        console.print(f"first {_short(inc.get('first_seen'))} · last {_short(inc.get('last_seen'))}"
                      + (f" · resolved {_short(inc.get('resolved_at'))}" if inc.get("resolved_at") else ""))
        if inc.get("template"):
            console.print(f"pattern: {escape(inc['template'])}")
        console.print(f"why: {escape(inc.get('reason') or inc.get('last_reason') or '-')}")
        table = Table(title="example lines", expand=True)
        for col in ("time", "host", "level", "score", "message"):
            table.add_column(col, overflow="fold", ratio=5 if col == "message" else None)
        for x in inc.get("examples") or []:
            table.add_row(_short(x.get("timestamp")), escape(str(x.get("host") or "-")),
                          str(x.get("level") or "-"), f"{x.get('score') or 0:.2f}",
                          escape(x.get("message") or ""))
        console.print(table)
        console.print(f"all its lines: smartlogs search --incident {inc['id']}")
        return
    res = _get(url, "/api/incidents", {"status": status, "since": since, "source": source,
                                       "template": template, "limit": limit, "time": basis})
    if as_json:
        console.print_json(json.dumps(res))
        return
    last = "last_arrival" if basis == "arrival" else "last_seen"
    columns = ["id", "status", "lines", "last arrived" if basis == "arrival" else "last",
               "source", "template", "why"]
    rows = [[i["id"], i["status"], str(i["count"]), _short(i.get(last)),
             escape(str(i.get("source") or "-")), escape(str(i.get("template_id") or "-")),
             escape(i.get("reason") or i.get("last_reason") or "-")] for i in res["incidents"]]
    table = _record_table(f"{len(res['incidents'])} incident(s), latest first ({basis} time)",
                          columns, rows, labelled=("lines", "last", "last arrived", "template"))
    console.print(table)
