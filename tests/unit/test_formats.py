"""User-declared formats (streams.formats): grok and named-group regexes, per source."""

from __future__ import annotations

import pickle
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from smartlogs.settings import Settings
from streams.formats import FormatError, UserFormat, UserFormats
from streams.pipeline import Pipeline, PipelineConfig

UTC = timezone.utc
JAVA = ("%{TIMESTAMP_ISO8601:timestamp} +%{LOGLEVEL:level} +\\[%{DATA:thread}\\] "
        "%{JAVACLASS:logger}: %{GREEDYDATA:message}")
LINE = "2024-03-05 06:07:08,123  WARN [pool-1-thread-2] com.example.Billing: card declined for 42"


def test_grok_pattern_fills_the_roles_and_fields():
    r = UserFormat(JAVA).parse(LINE)
    assert r.ok and r.format == "user"
    assert r.timestamp == datetime(2024, 3, 5, 6, 7, 8, 123000, tzinfo=UTC)
    assert (r.level, r.component, r.message) == ("WARN", "com.example.Billing",
                                                 "card declined for 42")
    assert r.fields == {"thread": "pool-1-thread-2"}
    assert UserFormat(JAVA).parse("something else entirely") is None


def test_regex_with_named_groups_pcre_style_and_dotted_names():
    f = UserFormat(r"(?<ts>\S+) \[(?<log.level>\w+)\] (?<client.ip>[\d.]+) (?<msg>.*)")
    r = f.parse("1700000000 [error] 10.0.0.9 upstream timed out")
    assert r.timestamp == datetime.fromtimestamp(1700000000, UTC)
    assert r.level == "error" and r.message == "upstream timed out"
    assert r.fields == {"client.ip": "10.0.0.9"}


def test_http_date_and_an_unreadable_time_is_kept():
    f = UserFormat(r'%{IPORHOST:client} \[%{HTTPDATE:timestamp}\] "%{DATA:request}" %{INT:status}')
    r = f.parse('10.1.2.3 [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200')
    assert r.timestamp == datetime(2000, 10, 10, 20, 55, 36, tzinfo=UTC)
    assert r.fields["status"] == "200" and r.message == ""
    g = UserFormat(r"(?P<timestamp>\w+) (?P<message>.*)").parse("yesterday it broke")
    assert g.timestamp is None and g.fields["invalid_timestamp"] == "yesterday"


@pytest.mark.parametrize("pattern, error", [
    ("%{TIMESTAMP_ISO8601:timestamp} %{NOPE:level}", "unknown grok pattern %{NOPE}"),
    (r"(?P<timestamp>\S+ (?P<message>.*)", "missing ), unterminated subpattern"),
    (r"\S+ \S+", "names no field"),
])
def test_a_bad_pattern_is_refused_with_the_pattern_and_the_error(pattern, error):
    with pytest.raises(FormatError) as exc:
        UserFormat(pattern)
    assert repr(pattern) in str(exc.value) and error in str(exc.value)
    with pytest.raises(ValidationError) as bad:  # at start: the settings do not load
        Settings(log_format=pattern)
    # a text with no named group is not taken for a pattern: the built-in names are listed
    assert error in str(bad.value) or "unknown log format" in str(bad.value)
    with pytest.raises(ValidationError) as bad:
        Settings(log_patterns={"app*": pattern})
    assert error in str(bad.value)


def test_a_user_pattern_overrides_inference_for_its_sources_only():
    cfg = PipelineConfig.from_settings(Settings(log_patterns={"billing*": JAVA}))
    p = Pipeline(cfg)
    items = [{"id": i, "raw": LINE, "received": 1.8e9, "stream": s}
             for i, s in enumerate(["billing.log", "other.log"] * 20)]
    events = p.process(items)
    assert {e["format"] for e in events[0::2]} == {"user"}
    assert {e["format"] for e in events[1::2]} == {"inferred"}
    assert events[0]["fields"] == {"thread": "pool-1-thread-2"}
    assert events[0]["component"] == "com.example.Billing"
    # a forced pattern for every source (SMARTLOGS_LOG_FORMAT)
    every = Pipeline(PipelineConfig.from_settings(Settings(log_format=JAVA)))
    assert every.process(items[1:2])[0]["format"] == "user"
    # pickled with the pipeline (checkpoints), recompiled from the pattern
    again = pickle.loads(pickle.dumps(p))
    assert again._parse(LINE, {"stream": "billing.log"}).format == "user"


def test_the_first_matching_glob_wins_and_a_host_may_select():
    fs = UserFormats([("web-*", r"(?P<message>.*)"), ("*", JAVA)])
    assert fs.for_source("http", host="web-3").pattern == r"(?P<message>.*)"
    assert fs.for_source("http").pattern == JAVA
    assert not UserFormats(())


def test_a_format_name_no_longer_built_in_is_refused_at_start_with_the_allowed_names():
    """`bgl` was a built-in format; it is now learned like any header. A setting that still
    names it stops the start with one line saying which values are allowed (no traceback)."""
    from smartlogs.cli import settings_errors
    from streams.parsing import FORMATS

    with pytest.raises(ValidationError) as bad:
        Settings(log_format="bgl")
    text = settings_errors(bad.value)
    assert "SMARTLOGS_LOG_FORMAT=bgl: unknown log format 'bgl'" in text
    assert ", ".join(FORMATS) in text and "empty to detect" in text
    assert "bgl" not in FORMATS
