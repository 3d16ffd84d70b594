"""Words that make a levelless line severe (streams.severity_words) and the scorer's use of
them (issue 19: a break-in attempt from a new host)."""

import pytest

from streams.scoring import AnomalyScorer
from streams.severity_words import severe_word


@pytest.mark.parametrize("message,expected", [
    ("Kernel panic - not syncing: Fatal exception", ("panic", "EMERGENCY")),
    ("logrotate: ALERT exited abnormally with [1]", ("ALERT", "ALERT")),
    ("disk sda: critical medium error", ("critical", "CRITICAL")),
    ("fatal: unable to access repository", ("fatal", "FATAL")),
    ("failed - POSSIBLE BREAK-IN ATTEMPT!", ("BREAK-IN", "ALERT")),
    ("possible SYN flood attack on port 80", ("attack", "ALERT")),
    ("intrusion detected from 10.0.0.1", ("intrusion", "ALERT")),
    ("authentication failure; user=root", None),  # a violation word: routine, not severe
    ("connection refused", None),
    ("error=0 warning=0", None),  # ERROR / WARNING as words are routine text
    ("critical_section entered", None),  # part of an identifier
    ("loaded alert.js", None),
    ("fdmn.panic_count=0", None),
    ("metric fatal-errors-total 0", None),
    ("", None),
])
def test_severe_words(message, expected):
    assert severe_word(message) == expected


def _line(s, host, i, word, level=None, tid="T7"):
    return s.features(template_id=tid, seen_before=i, is_new=False, level=level, tokens=8,
                      parsed=True, host=host, window_start=0.0, ts=float(i), kind="k", word=word)


def test_a_levelless_severe_line_is_flagged_once_per_host_and_pattern():
    """A known pattern whose words name an attack, routine for the kind (5% of its lines from
    one host): its first line from a new host is flagged with a reason naming the word; that
    host's second one is not flagged by the rule; the same words in a line with a level do
    not count (its level says how severe it is)."""
    s = AnomalyScorer(window_size=50)
    word = ("BREAK-IN", "ALERT")
    for i in range(2000):
        attack = i % 20 == 0
        s.score(*_line(s, "h0", i, word if attack else None, tid="T7" if attack else f"T{i % 5}"))
    first = s.score(*_line(s, "h9", 2001, word))
    assert first.is_anomaly
    assert first.reason.startswith("first line of pattern T7 from host h9 with the word "
                                   "'BREAK-IN' (severity ALERT named in a line without a level)")
    again = s.score(*_line(s, "h9", 2002, word))
    assert "with the word" not in (again.reason or "")
    x, ctx = _line(s, "h8", 2003, None, level="INFO")  # the pipeline passes no word then
    assert "severe_word" not in ctx
    x, ctx = _line(s, "h7", 2004, word, level="INFO")  # nor does the scorer use one
    assert "severe_word" not in ctx
