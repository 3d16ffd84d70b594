"""``smartlogs alerts``: the alert history and silences, from a running API."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Optional

import typer

alerts_app = typer.Typer(help="Alerts raised by the rules of SMARTLOGS_ALERT_RULES: list them, "
                              "silence a rule or one of its groups.", no_args_is_help=False,
                         invoke_without_command=True)


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


@alerts_app.callback()
def alerts_list(
    ctx: typer.Context,
    rule: Annotated[Optional[str], typer.Option(help="Only this rule.")] = None,
    state: Annotated[Optional[str], typer.Option(help="firing, resolved or suppressed.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 30,
    url: Annotated[str, typer.Option(envvar="SMARTLOGS_URL", help="Base URL of the API.")] = "http://127.0.0.1:8000",
) -> None:
    """List alerts, newest first (firing, resolved, suppressed), and the silences in force.

    Example: smartlogs alerts --rule error-flood --state firing
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.markup import escape

    from smartlogs.cli import _get, _record_table, console

    res = _get(url, "/api/alerts", {"rule": rule, "state": state, "limit": limit})
    rows = []
    for a in res["alerts"]:
        note = "" if a["notified"] else (" (replay: not notified)" if a["historical"] else " (not notified)")
        rows.append([_when(a["at"]), a["state"] + note, escape(a["rule"]), escape(a["group"]),
                     str(a["count"]), escape("; ".join(a["reasons"][:2]))])
    table = _record_table(f"{len(res['alerts'])} alert(s)",
                          ["time", "state", "rule", "group", "count", "why"], rows,
                          labelled=("count",))
    console.print(table)
    for s in res["silences"]:
        console.print(f"silenced: {escape(s['rule'])} / {escape(s['group'])} until {_when(s['until'])} UTC")


@alerts_app.command("silence")
def alerts_silence(
    rule: Annotated[str, typer.Argument(help="The rule's name (see deploy/alerts.example.yaml).")],
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")] = "1h",
    group: Annotated[str, typer.Option(help="Only this group (a host, a template id…); * for all.")] = "*",
    url: Annotated[str, typer.Option(envvar="SMARTLOGS_URL", help="Base URL of the API.")] = "http://127.0.0.1:8000",
) -> None:
    """Silence a rule (or one group of it) for a while: its alerts are still recorded, not sent.
    Needs an admin key when keys are on (SMARTLOGS_API_KEY)."""
    import httpx

    from smartlogs.cli import _auth_headers, _fail, console
    from streams.alerts import parse_duration

    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        _fail(f"--for: {exc}")
    try:
        r = httpx.post(f"{url.rstrip('/')}/api/alerts/silences", timeout=30, headers=_auth_headers(),
                       json={"rule": rule, "group": group, "seconds": seconds})
    except httpx.TransportError as exc:
        _fail(f"cannot reach SmartLogs at {url} ({exc}). Is `smartlogs up` running?", 2)
    if r.status_code >= 400:
        _fail(f"{r.status_code}: {r.json().get('detail', r.text)}")
    until = r.json()["until"]
    console.print(f"silenced {rule} / {group} until {_when(until)} UTC "
                  f"({(until - time.time()) / 60:.0f} min)")
