"""Multi-line events (streams.multiline) on real stack traces, and its bounds."""

from __future__ import annotations

import re

from streams.multiline import MultilineJoiner, join_keyed, join_lines
from tests.stacktraces import java_log, python_log


def test_a_real_java_trace_with_a_cause_is_one_event(tmp_path):
    text = java_log(tmp_path)
    lines = text.splitlines()
    events = join_lines(lines)
    assert len(events) == 3 and len(lines) > 8
    crash = events[1]
    assert crash.splitlines()[0].endswith("SEVERE com.acme.Billing - billing run crashed")
    assert "Caused by: java.lang.IllegalStateException: gateway closed, attempt 3" in crash
    assert "\tat Billing.charge(Billing.java" in crash and re.search(r"\t\.\.\. \d+ more", crash)
    assert events[2].endswith("billing run retried")


def test_a_real_python_traceback_with_a_chained_exception_is_one_event():
    events = join_lines(python_log().splitlines())
    assert len(events) == 3
    assert events[1].splitlines()[0].endswith("ERROR smartlogs.test.stacktrace - import of batch 7 failed")
    assert "During handling of the above exception" in events[1]
    assert events[1].splitlines()[-1].startswith("ValueError: invalid literal for int()")


def test_without_timestamps_only_indented_and_caused_by_lines_continue():
    lines = ["server starting", "config dump:", "  port = 8080", "  tls = on", "Exception in x",
             "\tat a.b(C.java:1)", "Caused by: java.io.IOException: eof", "\t... 3 more", "ready"]
    assert join_lines(lines) == ["server starting", "config dump:\n  port = 8080\n  tls = on",
                                 "Exception in x\n\tat a.b(C.java:1)\nCaused by: java.io.IOException: eof\n\t... 3 more",
                                 "ready"]


def test_keys_follow_the_first_line_of_each_event():
    pairs = [(1, "2024-05-01 10:00:00 ERROR x"), (2, "\tat y"), (3, "2024-05-01 10:00:01 INFO z")]
    assert [k for k, _ in join_keyed(pairs)] == [1, 3]


def test_bounded_in_lines_and_bytes():
    j = MultilineJoiner(max_lines=3, max_bytes=100)
    out = []
    for i in range(6):
        out += j.feed(i, "2024-05-01 10:00:00 ERROR head" if i == 0 else f"  frame {i}")
    out += j.flush()
    assert [k for k, _ in out] == [0, 3]  # three lines per event at most: the 4th starts anew
    j = MultilineJoiner(max_bytes=40)
    for i in range(50):
        j.feed(i, "2024-05-01 10:00:00 ERROR head" if i == 0 else "  a frame of the trace")
    ((_, text),) = j.flush()
    assert 40 < len(text) <= 41  # kept up to one character past the limit: the pipeline cuts and flags it


def test_the_loghub_samples_are_left_one_line_per_event(loghub):
    for path in sorted(loghub.glob("*/*.log")):
        lines = [x for x in path.read_text(errors="replace").split("\n") if x.strip()]
        assert len(join_lines(lines)) == len(lines), path.name
