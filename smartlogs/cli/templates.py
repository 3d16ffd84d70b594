"""``smartlogs templates``: the template catalog of a running API (list, show, mark)."""

from __future__ import annotations

from typing import Annotated, Optional
from urllib.parse import quote

import typer

templates_app = typer.Typer(
    help="The message templates SmartLogs mined: list them (by count, first or last seen, new "
         "since a time), show one with its history and example lines, mark one expected or "
         "always-alert.",
    no_args_is_help=False, invoke_without_command=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="SMARTLOGS_URL",
                                     help="Base URL of a running SmartLogs API.")]
DEFAULT_URL = "http://127.0.0.1:8000"
MARK_STYLE = {"expected": "[green]expected[/]", "always_alert": "[bold red]always-alert[/]"}


def _mark(mark: str | None) -> str:
    return MARK_STYLE.get(mark, "") if mark else ""


@templates_app.callback()
def templates_list(
    ctx: typer.Context,
    sort: Annotated[str, typer.Option(help="count (most lines first), first-seen (newest "
                                           "first) or last-seen (most recent first).")] = "count",
    since: Annotated[Optional[str], typer.Option(help="Only templates first seen since this "
                                                      "time (ISO 8601, epoch, or an age like 2h).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many templates.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """List templates with their counts, first/last seen and mark.

    Examples: smartlogs templates --sort first-seen --since 1h;
    smartlogs templates show T12; smartlogs templates mark T12 expected
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.markup import escape

    from smartlogs.cli import _fail, _get, _record_table, console

    key = sort.replace("-", "_")
    if key not in ("count", "first_seen", "last_seen"):
        _fail(f"--sort must be count, first-seen or last-seen, not {sort!r}")
    res = _get(url, "/api/templates", {"sort": key, "since": since, "limit": limit})
    if as_json:
        _print_json(res)
        return
    rows = res["templates"]
    table = _record_table(
        f"{len(rows)} template(s), by {sort}" + (f", new since {since}" if since else ""),
        ["id", "count", "first seen", "last seen", "mark", "template"],
        [[t["id"], f"{t['count']:,}", (t["first_seen"] or "-")[:19], (t["last_seen"] or "-")[:19],
          _mark(t["mark"]), escape(t["template"] or "")] for t in rows],
        labelled=("count", "first seen", "last seen"))
    console.print(table)


@templates_app.command("show")
def templates_show(
    template_id: Annotated[str, typer.Argument(help="A template id, e.g. T12.")],
    history: Annotated[int, typer.Option(min=1, max=1000, help="How many of the latest history records.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """One template: its text, counts, mark, example lines and history of changes."""
    from rich.markup import escape
    from rich.table import Table

    from smartlogs.cli import _get, console

    t = _get(url, f"/api/templates/{quote(template_id, safe='')}", {"history": history})
    if as_json:
        _print_json(t)
        return
    console.print(f"[bold]{t['id']}[/]  {escape(t['template'] or '')}")
    console.print(f"{t['count']:,} lines, first seen {t['first_seen']}, last seen {t['last_seen']}"
                  + (f", marked {_mark(t['mark'])}" if t["mark"] else ""))
    ex = Table(title="example lines", expand=True, show_header=False)
    ex.add_column("line", overflow="fold")
    for line in t["examples"]:
        ex.add_row(escape(line))
    console.print(ex)
    hist = Table(title=f"history ({t['history_total']} record(s))", expand=True)
    hist.add_column("time", no_wrap=True)
    hist.add_column("change", no_wrap=True)
    hist.add_column("detail", overflow="fold", ratio=1)
    for h in t["history"]:
        hist.add_row((h["time"] or "-")[:19], h["kind"], escape(_detail(h, t["id"])))
    console.print(hist)


def _print_json(doc: dict) -> None:
    import sys

    import orjson

    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


def _detail(h: dict, tid: str) -> str:
    kind = h["kind"]
    if kind == "created":
        return f"first line: {h.get('example') or '?'}"
    if kind == "generalised":
        return f"{h.get('previous')}  →  {h.get('template')}  (line: {h.get('example')})"
    if kind == "merged":
        return (f"{h['template_id']} merged into this template" if h.get("into") == tid
                else f"merged into {h.get('into')}")
    mark = (h.get("mark") or "none").replace("_", "-")
    by = f" by {h['by']}" if h.get("by") else ""
    return f"marked {mark}{by}" + (f": {h['note']}" if h.get("note") else "")


@templates_app.command("mark")
def templates_mark(
    template_id: Annotated[str, typer.Argument(help="A template id, e.g. T12.")],
    mark: Annotated[str, typer.Argument(help="expected (its lines stop counting as anomalous "
                                             "for rarity or novelty), always-alert (its lines are "
                                             "always flagged) or none (clear the mark).")],
    note: Annotated[Optional[str], typer.Option(help="Why; stored with the template's history.")] = None,
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Mark a template expected or always-alert, or clear its mark (none). Scoring uses it from
    the next line. Needs an admin key when keys are on (SMARTLOGS_API_KEY)."""
    import httpx

    from smartlogs.cli import _auth_headers, _fail, console

    if mark.lower() not in ("expected", "always-alert", "always_alert", "none"):
        _fail(f"the mark must be expected, always-alert or none, not {mark!r}")
    try:
        r = httpx.post(f"{url.rstrip('/')}/api/templates/{quote(template_id, safe='')}/feedback",
                       json={"mark": mark.lower(), **({"note": note} if note else {})},
                       headers=_auth_headers(), timeout=30)
    except httpx.TransportError as exc:
        _fail(f"cannot reach SmartLogs at {url} ({exc}). Is `smartlogs up` running?", 2)
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        _fail(f"{r.status_code}: {detail}")
    res = r.json()
    what = f"marked {_mark(res['mark'])}" if res["mark"] else "mark cleared"
    console.print(f"{template_id}: {what}; applies {res['applies']}")
