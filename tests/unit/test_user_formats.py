"""User-declared formats (streams.user_formats): grok or regex, per source; refused clearly."""

from __future__ import annotations

import pickle
from datetime import datetime, timezone

import pytest

from streams.user_formats import (FormatError, UserFormats, compile_format, parse_time,
                                  rules_from_data, rules_from_yaml_text)

UTC = timezone.utc
GROK = "%{TIMESTAMP_ISO8601:timestamp} +%{LOGLEVEL:level} \\[%{DATA:thread}\\] %{JAVACLASS:component} - %{GREEDYDATA:message}"


def test_grok_pattern_fills_the_known_fields_and_keeps_the_others():
    f = compile_format(GROK, "java")
    p = f.parse("2024-05-01 10:00:00,250  WARN [main-7] com.acme.Billing - invoice 42 late")
    assert p.ok and p.format == "user:java"
    assert p.timestamp == datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert (p.level, p.component, p.message) == ("WARN", "com.acme.Billing", "invoice 42 late")
    assert p.fields == {"thread": "main-7"}
    assert f.parse("something else entirely") is None


def test_regex_with_named_groups_and_no_message_group_takes_the_rest_of_the_line():
    f = compile_format(r"^(?P<timestamp>\d{10}) (?P<host>\S+) (?P<pid>\d+):")
    p = f.parse("1714557600 web-3 4711: cache warmed in 3 ms")
    assert (p.host, p.pid, p.message) == ("web-3", "4711", "cache warmed in 3 ms")
    assert p.timestamp == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_a_timestamp_no_rule_reads_is_kept_in_fields():
    p = compile_format(r"^(?P<timestamp>\S+) (?P<message>.*)").parse("yesterday-ish hello")
    assert p.timestamp is None and p.fields == {"unparsed_timestamp": "yesterday-ish"}


@pytest.mark.parametrize("text,expected", [
    ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("2024-05-01 12:00:00.5+02:00", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)),
    ("1714557600000", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("[01/May/2024:12:00:00 +0200]", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("May  1 10:00:00", datetime(2023, 5, 1, 10, tzinfo=UTC)),  # the year of arrival
])
def test_parse_time(text, expected):
    assert parse_time(text, now=datetime(2023, 6, 1, tzinfo=UTC).timestamp()) == expected


@pytest.mark.parametrize("spec,message", [
    ([{"grok": "%{NOPE:x} %{GREEDYDATA:message}"}], "unknown grok pattern %{NOPE}"),
    ([{"regex": "(?P<level>\\w+"}], "does not compile: missing )"),
    ([{"regex": "plain text"}], "names no field"),
    ([{"grok": "%{WORD:w}", "regex": "(?P<w>x)"}], "exactly one of 'grok' or 'regex'"),
    ([{"grok": "%{WORD:w}", "match": {"hots": "x"}}], "'match' selects on host, file, source"),
    ([{"grok": "%{WORD:w}", "colour": "red"}], "unknown key(s) ['colour']"),
    ({"formats": "nope"}, "expected a list of formats"),
])
def test_bad_declarations_name_the_file_the_rule_and_the_problem(spec, message):
    with pytest.raises(FormatError) as exc:
        rules_from_data(spec, "/etc/smartlogs/formats.yaml")
    assert str(exc.value).startswith("/etc/smartlogs/formats.yaml")
    assert message in str(exc.value)


def test_rules_select_by_glob_in_order_and_fall_through():
    rules = rules_from_yaml_text("""
formats:
  - name: billing
    match: {file: "/var/log/billing/*.log"}
    grok: "%{LOGLEVEL:level} %{GREEDYDATA:message}"
  - name: edge
    match: {host: "edge-*", source: "syslog_*"}
    regex: "^(?P<component>\\\\w+): (?P<message>.*)"
""", "formats.yaml")
    formats = UserFormats(rules)
    assert formats.parse("ERROR boom", {"file": "/var/log/billing/a.log"}).format == "user:billing"
    assert formats.parse("ERROR boom", {"file": "/var/log/other.log"}) is None
    assert formats.parse("nginx: up", {"host": "edge-1", "source": "syslog_tcp"}).component == "nginx"
    assert formats.parse("nginx: up", {"host": "edge-1", "source": "http"}) is None  # both must hold
    assert formats.parse("no level here", {"file": "/var/log/billing/a.log"}) is None  # no match
    again = pickle.loads(pickle.dumps(formats))  # checkpoints carry them
    assert again.parse("ERROR boom", {"file": "/var/log/billing/a.log"}).level == "ERROR"


def test_the_example_file_in_the_repository_loads_and_parses_its_own_examples():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "deploy" / "formats.example.yaml"
    formats = UserFormats(rules_from_yaml_text(path.read_text(), str(path)))
    java = formats.parse("2024-05-01 10:00:00,250  WARN [main-7] com.acme.Billing - invoice 42 late",
                         {"file": "/var/log/billing/app.log"})
    assert (java.level, java.component, java.fields) == ("WARN", "com.acme.Billing", {"thread": "main-7"})
    edge = formats.parse("1714557600 haproxy[311] 502 backend down", {"host": "edge-2"})
    assert (edge.component, edge.pid, edge.fields, edge.message) == (
        "haproxy", "311", {"status": "502"}, "backend down")
