"""--help is readable on an 80-column terminal: env var names and defaults are never cut off."""

import re

import pytest
from typer.testing import CliRunner

from smartlogs.cli import app

COMMANDS = [["up"], ["replay"], ["search"], ["tail"], ["stats"], ["status"], ["api"], ["bridge"],
            ["worker"], ["ship"], ["kibana-setup"], ["data", "fetch"], ["eval", "loghub"],
            ["sources"]]


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
