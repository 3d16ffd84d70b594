"""--help is readable on an 80-column terminal: env var names and defaults are never cut off."""

import re

import pytest
from typer.testing import CliRunner

from smartlogs.cli import app

COMMANDS = [["up"], ["replay"], ["search"], ["tail"], ["stats"], ["status"], ["api"], ["bridge"],
            ["worker"], ["ship"], ["kibana-setup"], ["data", "fetch"], ["eval", "loghub"],
            ["sources"], ["templates"], ["templates", "show"], ["templates", "mark"], ["incidents"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_env_vars_and_defaults_are_whole_at_80_columns(command):
    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0, r.output
    # the help column is the last cell of each row; a value cut off there ends in "…"
    cells = [line.rstrip(" │").rsplit("  ", 1)[-1] for line in r.output.splitlines() if line.startswith("│")]
    assert not [c for c in cells if c.endswith("…")], r.output


def test_a_long_env_var_name_survives_narrow_help():
    r = CliRunner().invoke(app, ["status", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert re.search(r"SMARTLOGS_BRIDGE_METRICS_URL", r.output), r.output


def test_search_results_at_80_columns_keep_the_message_readable():
    """At 80 columns the table squeezed each message to ~20 characters: now a narrow terminal
    gets each event's fields on one line and its message on (nearly) the full width."""
    from rich.console import Console

    from smartlogs.cli import _event_table

    message = ("session opened for user root by (uid=0) after a long authentication exchange "
               "with the remote host 10.0.0.1 port 22")
    event = {"timestamp": "2024-06-14T15:16:01.000Z", "host": "combo", "level": "INFO",
             "template_id": "T12", "score": 0.12, "anomaly": False, "reason": None,
             "message": message}
    out = Console(width=80, record=True, color_system=None)
    out.print(_event_table([event], "1 matching events", width=80))
    text = out.export_text()
    lines = [ln.strip() for ln in text.splitlines()]
    assert "2024-06-14T15:16:01.000Z" in text and "combo" in text and "T12" in text
    # the message takes at most 2 lines of ≥ 60 characters, never a narrow column
    msg_lines = [ln for ln in lines if ln and ln in message]
    assert " ".join(msg_lines) == message and len(msg_lines) <= 2, text
    assert max(len(ln) for ln in msg_lines) >= 70, text


def test_stats_windows_at_80_columns_are_never_cut(monkeypatch):
    """With many levels the windows table squeezed every column at 80 columns until a window
    start read "2026-1…": the commonest levels get a column, the rest one "other" column;
    a level holding [markup] is printed as text."""
    import smartlogs.cli as cli

    levels = {"INFO": 5, "WARN": 1, "ERROR": 2, "DEBUG": 9, "NOTICE": 1, "[red]x": 4, "-": 3}
    answer = {"window_seconds": 60, "time": "arrival",
              "totals": {"events": 25, "anomalies": 1, "templates": 2},
              "windows": [{"start": "2026-12-07T10:37:00.000Z", "total": 25, "anomalies": 1,
                           "levels": levels}],
              "top_templates": [], "top_hosts": [], "top_components": []}
    monkeypatch.setattr(cli, "_get", lambda url, path, params: answer)
    r = CliRunner().invoke(app, ["stats"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0, r.output
    assert "…" not in r.output and "2026-12-07 10:37" in r.output, r.output
    row = next(line for line in r.output.splitlines() if "2026-12-07 10:37" in line)
    # DEBUG 9 and INFO 5 get columns; the 5 other levels sum to 11
    assert [c.strip() for c in row.split("│")[1:-1]] == ["2026-12-07 10:37", "25", "1", "9", "5", "11"], r.output
    assert "5 other" in r.output and max(len(line) for line in r.output.splitlines()) <= 80
    wide = CliRunner().invoke(app, ["stats"], env={"COLUMNS": "200"}, terminal_width=200)
    assert "[red]x" in wide.output and "other" not in wide.output, wide.output


@pytest.mark.parametrize("relation, shown", [("eq", "10,000 matching events"),
                                             ("gte", "10,000+ matching events")])
def test_search_shows_a_bounded_total_as_a_lower_bound(monkeypatch, relation, shown):
    """/api/events stops counting past 10,000 (``total_relation`` gte): the CLI says 10,000+."""
    import smartlogs.cli as cli

    event = {"timestamp": "2024-06-14T15:16:01.000Z", "host": "combo", "level": "INFO",
             "template_id": "T12", "score": 0.12, "anomaly": False, "reason": None,
             "message": "session opened", "seq": 1, "ts": 1.0}
    monkeypatch.setattr(cli, "_get", lambda url, path, params: {
        "total": 10_000, "total_relation": relation, "last_seq": 1, "next": None,
        "events": [event]})
    r = CliRunner().invoke(app, ["search", "session"], env={"COLUMNS": "120"},
                           terminal_width=120)
    assert r.exit_code == 0, r.output
    assert shown in r.output and ("10,000+" in r.output) == (relation == "gte"), r.output


@pytest.mark.parametrize("group", [[], ["templates"], ["alerts"], ["eval"]], ids=lambda g: " ".join(g) or "smartlogs")
def test_the_commands_list_wraps_each_summary_as_one_paragraph(group):
    """The commands panel shows each command's first docstring paragraph; Typer's rich mode
    kept the docstring's line breaks, so at 80 columns a summary broke mid-sentence after a
    few words ("... (the same source or pattern and the same" / "evidence), ..."). Each row's
    text now flows: no line breaks where the next line's first word would still have fit."""
    r = CliRunner().invoke(app, [*group, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0, r.output
    panel = r.output.split("Commands")[-1].splitlines()[1:]
    rows: list[list[str]] = []
    for line in panel:
        if not line.startswith("│"):
            continue
        name, _, text = line.strip("│").partition("  ")
        if name.strip():
            rows.append([])
        rows[-1].append(text.strip())
    assert rows, r.output
    width = max(len(x) for row in rows for x in row)
    for row in rows:  # a kept line break: the next word would have fit on the line
        assert all(len(a) + 1 + len(b.split()[0]) > width for a, b in zip(row, row[1:])), \
            (row, r.output)
