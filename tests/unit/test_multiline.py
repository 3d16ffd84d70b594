"""Multi-line events (streams.multiline): stack traces join the line they belong to."""

from __future__ import annotations

from smartlogs.cli.replay import read_lines
from streams.multiline import MultilineJoiner, join_lines
from streams.pipeline import Pipeline, PipelineConfig

# shaped like a real log4j/logback ERROR with a cause chain (frames as the JVM prints them)
JAVA = """\
2024-03-05 06:07:08,123 INFO  [main] com.example.App: starting
2024-03-05 06:07:09,456 ERROR [http-nio-8080-exec-1] o.a.c.c.C.[.[.[/].[dispatcherServlet]: Servlet.service() threw exception
java.lang.IllegalStateException: Failed to load ApplicationContext
\tat org.springframework.test.context.cache.DefaultCacheAwareContextLoaderDelegate.loadContext(DefaultCacheAwareContextLoaderDelegate.java:132)
\tat org.springframework.test.context.support.DefaultTestContext.getApplicationContext(DefaultTestContext.java:124)
\tat java.base/java.lang.Thread.run(Thread.java:833)
Caused by: org.springframework.beans.factory.BeanCreationException: Error creating bean with name 'dataSource'
\tat org.springframework.beans.factory.support.AbstractAutowireCapableBeanFactory.initializeBean(AbstractAutowireCapableBeanFactory.java:1804)
\t... 42 more
Caused by: java.net.ConnectException: Connection refused
\tat java.base/sun.nio.ch.Net.pollConnect(Native Method)
\t... 58 common frames omitted
2024-03-05 06:07:10,001 INFO  [main] com.example.App: retrying
"""

PYTHON = """\
2024-03-05 06:07:08,123 ERROR worker: job 7 failed
Traceback (most recent call last):
  File "/srv/app/worker.py", line 41, in run
    result = job()
  File "/srv/app/jobs.py", line 12, in job
    return 1 / 0
ZeroDivisionError: division by zero
2024-03-05 06:07:09,000 INFO worker: job 8 done
"""


def _events(text: str) -> list[str]:
    return [e for _, e in join_lines((None, x) for x in text.splitlines())]


def test_a_java_stack_trace_with_its_causes_is_one_event():
    ev = _events(JAVA)
    assert len(ev) == 3
    assert ev[0].endswith("starting") and ev[2].endswith("retrying")
    trace = ev[1].split("\n")
    assert trace[0].startswith("2024-03-05 06:07:09,456 ERROR")
    assert len(trace) == 11 and trace[-1] == "\t... 58 common frames omitted"


def test_a_python_traceback_and_its_exception_line_are_one_event():
    ev = _events(PYTHON)
    assert len(ev) == 2
    assert ev[0].split("\n")[-1] == "ZeroDivisionError: division by zero"


def test_an_exception_name_without_a_trace_before_it_starts_an_event():
    ev = _events("plain line\nValueError: not a continuation here\n  indented continues\n")
    assert ev == ["plain line", "ValueError: not a continuation here\n  indented continues"]


def test_events_are_bounded_and_nothing_is_dropped():
    lines = ["head"] + [f"  frame {i}" for i in range(25)]
    ev = [e for _, e in join_lines(((i, x) for i, x in enumerate(lines)), max_lines=10)]
    assert [len(e.split("\n")) for e in ev] == [10, 10, 6]
    assert "\n".join(ev).split("\n") == lines
    big = [e for _, e in join_lines(((i, x) for i, x in enumerate(lines)), max_bytes=40)]
    assert "\n".join(big).split("\n") == lines and all(len(e) <= 40 for e in big)


def test_the_joiner_holds_an_event_until_the_next_one_or_a_flush():
    j = MultilineJoiner()
    assert j.feed("first", 1) == []
    assert j.feed("  more", 2) == []
    assert j.pending
    assert j.feed("second", 3) == [(1, "first\n  more")]
    assert j.flush() == [(3, "second")] and not j.pending  # the caller's idle flush


def test_replay_sends_a_trace_as_one_event_numbered_by_its_first_line(tmp_path):
    path = tmp_path / "app.log"
    path.write_text(JAVA)
    got = list(read_lines(path))
    assert [n for n, _ in got] == [1, 2, 13]
    assert len(list(read_lines(path, multiline=False))) == 13


def test_the_pipeline_groups_a_trace_by_its_first_line_and_keeps_all_of_it():
    p = Pipeline(PipelineConfig())
    items = [{"id": i, "raw": e, "received": 1.8e9} for i, e in enumerate(_events(JAVA + JAVA))]
    out = p.process(items)
    assert out[1]["template_id"] == out[4]["template_id"]
    assert out[1]["message"].count("\n") == 10 and out[1]["level"] == "ERROR"
    assert out[1]["timestamp"] == "2024-03-05T06:07:09.456Z"


# -- real stack traces, made on the spot by a real JVM and a real Python --------------------
def _events(text: str) -> list[str]:
    from streams.multiline import join_lines

    return [event for _, event in join_lines((None, x) for x in text.splitlines() if x.strip())]


def test_a_real_java_trace_with_a_cause_is_one_event(tmp_path):
    import re

    from tests.stacktraces import java_log

    events = _events(java_log(tmp_path))
    assert len(events) == 3
    crash = events[1]
    assert crash.splitlines()[0].endswith("SEVERE com.acme.Billing - billing run crashed")
    assert "Caused by: java.lang.IllegalStateException: gateway closed, attempt 3" in crash
    assert "\tat Billing.charge(Billing.java" in crash and re.search(r"\t\.\.\. \d+ more", crash)
    assert events[2].endswith("billing run retried")


def test_a_real_python_traceback_with_a_chained_exception_is_one_event():
    from tests.stacktraces import python_log

    events = _events(python_log())
    assert len(events) == 3
    assert events[1].splitlines()[0].endswith("ERROR smartlogs.test.stacktrace - import of batch 7 failed")
    assert "During handling of the above exception" in events[1]
    assert events[1].splitlines()[-1].startswith("ValueError: invalid literal for int()")


def test_a_first_line_is_scanned_for_a_header_only_when_a_later_line_names_an_exception(monkeypatch):
    """The scan (streams.headers) cost a one-line request more than the rest of its decoding:
    it runs only when its answer matters, and the answer is the same."""
    import streams.multiline as ml

    scanned: list[str] = []
    real = ml.starts_with_header
    monkeypatch.setattr(ml, "starts_with_header", lambda line: scanned.append(line) or real(line))
    assert _events("one line\n") == ["one line"]
    assert _events("a\nb\n  indented\nc\n") == ["a", "b\n  indented", "c"]
    assert scanned == []
    assert _events("2024-03-05 06:07:09,456 ERROR x\nValueError: boom\nplain\nKeyError: k\n") == [
        "2024-03-05 06:07:09,456 ERROR x\nValueError: boom", "plain", "KeyError: k"]
    assert scanned == ["2024-03-05 06:07:09,456 ERROR x", "plain"]
