"""`smartlogs incidents` and `smartlogs alerts` on an 80-column terminal: the reason stays
readable (it was squeezed to one character a line), and a wide terminal keeps the table."""

from rich.console import Console

from smartlogs.cli import _record_table

COLUMNS = ["id", "status", "lines", "last", "source", "template", "why"]
ROW = ["I91566067a43a96d8", "resolved", "25", "2026-07-10 16:02:40Z", "combo", "T2313c6704789",
       "burst: pattern T2313c6704789 ~20 times in the last minute, at most ~3 before"]


def _render(width: int) -> str:
    out = Console(width=width, record=True, color_system=None)
    out.print(_record_table("1 incident(s)", COLUMNS, [ROW], labelled=("lines",), width=width))
    return out.export_text()


def test_narrow_terminal_gives_the_reason_the_full_width():
    text = _render(80)
    assert "why: burst: pattern T2313c6704789 ~20 times in the last minute" in text
    assert "I91566067a43a96d8  resolved  lines 25" in text  # the short fields on one line
    assert max(len(line) for line in text.splitlines()) <= 80


def test_wide_terminal_keeps_the_table_with_its_headers():
    text = _render(160)
    header = next(line for line in text.splitlines() if "status" in line)
    for col in COLUMNS:
        assert col in header
    assert "I91566067a43a96d8" in text and "~20 times in the last minute" in text
