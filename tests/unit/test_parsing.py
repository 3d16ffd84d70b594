"""Tests for streams.parsing.

The loghub samples are read from $SMARTLOGS_LOGHUB_DIR, by default
``<repo>/../shared/data/loghub``.  Missing data is a test failure, not a skip.
"""

from __future__ import annotations

import csv
import os
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from streams.parsing import FORMATS, LineParser, ParsedLine, normalize_level, parse_line

UTC = timezone.utc
MONTHS = {m: i + 1 for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}


# --------------------------------------------------------------------------------------
# loghub samples


def loghub_dir() -> Path:
    env = os.environ.get("SMARTLOGS_LOGHUB_DIR")
    if env:
        path = Path(env)
    else:
        path = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "loghub"
    if not path.is_dir():
        pytest.fail(
            f"loghub sample data not found at {path.resolve()}: put the samples there "
            "(the project's data download command does it) or set SMARTLOGS_LOGHUB_DIR",
            pytrace=False,
        )
    return path


def _hms(text: str) -> tuple[int, int, int]:
    h, m, s = text.split(":")
    return int(h), int(m), int(s)


def _linux(row: dict[str, str]) -> dict[str, object]:
    # loghub's "Level" column holds the host
    return {
        "timestamp": datetime(
            2005, MONTHS[row["Month"]], int(row["Date"]), *_hms(row["Time"]), tzinfo=UTC
        ),
        "host": row["Level"],
        "component": row["Component"],
        "pid": row["PID"] or None,
        "level": None,
    }


def _openssh(row: dict[str, str]) -> dict[str, object]:
    # loghub's "Component" column holds the host; the program is not a column
    return {
        "timestamp": datetime(
            2017, MONTHS[row["Date"]], int(row["Day"]), *_hms(row["Time"]), tzinfo=UTC
        ),
        "host": row["Component"],
        "component": "sshd",
        "pid": row["Pid"],
        "level": None,
    }


def _apache(row: dict[str, str]) -> dict[str, object]:
    return {
        "timestamp": datetime.strptime(row["Time"], "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC),
        "level": row["Level"],
        "host": None,
        "component": None,
        "pid": None,
    }


def _hdfs(row: dict[str, str]) -> dict[str, object]:
    return {
        "timestamp": datetime.strptime(row["Date"] + row["Time"], "%y%m%d%H%M%S").replace(
            tzinfo=UTC
        ),
        "pid": row["Pid"],
        "level": row["Level"],
        "component": row["Component"],
        "host": None,
    }


def _zookeeper(row: dict[str, str]) -> dict[str, object]:
    return {
        "timestamp": datetime.strptime(
            f"{row['Date']} {row['Time']}", "%Y-%m-%d %H:%M:%S,%f"
        ).replace(tzinfo=UTC),
        "level": row["Level"],
        # the CSV cuts "%t:%C{1}@%L" at the first ':'; the parser splits it as log4j wrote it
        "component": f"{row['Node']}:{row['Component']}".rpartition(":")[2],
        "fields.thread": f"{row['Node']}:{row['Component']}".rpartition(":")[0],
        "fields.line": row["Id"],
        "host": None,
        "pid": None,
    }


@dataclass(frozen=True)
class Sample:
    name: str
    log: str
    fmt: str
    count: int
    year: int | None
    expected: Callable[[dict[str, str]], dict[str, object]]


SAMPLES = {
    s.name: s
    for s in (
        Sample("Linux", "Linux/Linux_2k.log", "syslog", 2000, 2005, _linux),
        Sample("OpenSSH", "OpenSSH/OpenSSH_2k.log", "syslog", 2000, 2017, _openssh),
        Sample("Apache", "Apache/Apache_2k.log", "apache", 2000, None, _apache),
        Sample("HDFS", "HDFS/HDFS_2k.log", "hdfs", 2000, None, _hdfs),
        Sample("Zookeeper", "Zookeeper/Zookeeper_2k.log", "zookeeper", 2000, None, _zookeeper),
    )
}

_CACHE: dict[str, tuple[list[str], list[dict[str, str]]]] = {}


def load(sample: Sample) -> tuple[list[str], list[dict[str, str]]]:
    """Raw lines (with their CRLF endings, as a reader would hand them over) and CSV rows."""
    if sample.name not in _CACHE:
        log = loghub_dir() / sample.log
        csv_path = log.with_name(log.name + "_structured.csv")
        for p in (log, csv_path):
            if not p.is_file():
                pytest.fail(f"loghub sample file missing: {p}", pytrace=False)
        with open(log, encoding="utf-8", newline="") as fh:
            lines = fh.read().splitlines(keepends=True)
        with open(csv_path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        _CACHE[sample.name] = (lines, rows)
    return _CACHE[sample.name]


def _get(res: ParsedLine, key: str) -> object:
    if key.startswith("fields."):
        return res.fields.get(key[len("fields.") :])
    return getattr(res, key)


def check_against_csv(
    sample: Sample, results: list[ParsedLine], rows: list[dict[str, str]]
) -> None:
    problems = []
    for lineno, (res, row) in enumerate(zip(results, rows), start=1):
        expected = sample.expected(row)
        expected["message"] = row["Content"]
        expected["format"] = sample.fmt
        expected["ok"] = True
        expected["truncated"] = False
        for key, want in expected.items():
            got = _get(res, key)
            if got != want:
                problems.append(f"line {lineno} {key}: got {got!r}, CSV says {want!r}")
    assert not problems, f"{len(problems)} mismatches, first ones:\n" + "\n".join(problems[:15])


@pytest.mark.parametrize("name", list(SAMPLES))
def test_loghub_sample_auto_detection(name: str) -> None:
    sample = SAMPLES[name]
    lines, rows = load(sample)
    assert len(lines) == sample.count
    assert len(rows) == sample.count
    parser = LineParser(year=sample.year)
    results = [parser.parse(line) for line in lines]
    matched = sum(1 for r in results if r.ok and r.format == sample.fmt)
    assert matched == sample.count
    check_against_csv(sample, results, rows)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_loghub_sample_forced_format(name: str) -> None:
    sample = SAMPLES[name]
    lines, rows = load(sample)
    parser = LineParser(sample.fmt, year=sample.year)
    results = [parser.parse(line) for line in lines]
    assert sum(1 for r in results if r.ok) == sample.count
    check_against_csv(sample, results, rows)


def test_loghub_interleaved_detection_is_order_independent() -> None:
    """One parser fed a round-robin mix of all samples gives the per-sample results."""
    per_sample = {}
    for sample in SAMPLES.values():
        lines, _ = load(sample)
        parser = LineParser(year=2005)
        per_sample[sample.name] = [(line, parser.parse(line)) for line in lines]
    mixed = LineParser(year=2005)
    n = max(len(v) for v in per_sample.values())
    checked = 0
    for i in range(n):
        for name, pairs in per_sample.items():
            if i < len(pairs):
                line, expected = pairs[i]
                assert mixed.parse(line) == expected, (name, i, line)
                checked += 1
    assert checked == sum(s.count for s in SAMPLES.values())


def test_zookeeper_semantic_thread_class_split() -> None:
    sample = SAMPLES["Zookeeper"]
    lines, _ = load(sample)
    parser = LineParser("zookeeper")
    for line in lines:
        r = parser.parse(line)
        # thread:class@line cover the bracket's text exactly
        assert line.split(" [", 1)[1].startswith(
            f"{r.fields['thread']}:{r.component}@{r.fields['line']}]")
    r = parser.parse(
        "2015-07-30 18:18:02,003 - INFO  [ProcessThread(sid:1 cport:-1)::PrepRequestProcessor@476]"
        " - Processed session termination for sessionid: 0x14ede63a5a70002"
    )
    assert r.component == "PrepRequestProcessor"
    assert r.fields["thread"] == "ProcessThread(sid:1 cport:-1):"
    assert r.fields["line"] == "476"
    assert r.message == "Processed session termination for sessionid: 0x14ede63a5a70002"


def test_loghub_odd_syslog_components() -> None:
    r = parse_line("Jun 19 04:09:11 combo syslogd 1.4.1: restart.\r\n", year=2005)
    assert (r.host, r.component, r.pid, r.message) == ("combo", "syslogd 1.4.1", None, "restart.")
    r = parse_line("Jul  7 08:06:15 combo  -- root[2421]: ROOT LOGIN ON tty2", year=2005)
    assert (r.host, r.component, r.pid) == ("combo", "-- root", "2421")
    assert r.message == "ROOT LOGIN ON tty2"
    assert r.timestamp == datetime(2005, 7, 7, 8, 6, 15, tzinfo=UTC)
    r = parse_line("Jul 27 14:41:57 combo kernel:   Normal zone: 28334 pages", year=2005)
    assert (r.component, r.message) == ("kernel", "Normal zone: 28334 pages")
    r = parse_line("Jul  7 08:06:12 combo gpm[2094]: *** info [mice.c(1766)]: ", year=2005)
    assert (r.component, r.pid, r.message) == ("gpm", "2094", "*** info [mice.c(1766)]:")


# --------------------------------------------------------------------------------------
# explicit format


LINUX_LINE = "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown\r\n"


def test_forced_format_mismatch_is_raw() -> None:
    r = LineParser("apache").parse(LINUX_LINE)
    assert r.ok is False
    assert r.format == "raw"
    assert r.message == LINUX_LINE.rstrip()
    assert r.timestamp is None and r.host is None and r.component is None and r.fields == {}
    r = parse_line(LINUX_LINE, "apache")
    assert (r.ok, r.format, r.message) == (False, "raw", LINUX_LINE.rstrip())


def test_forced_format_match() -> None:
    r = parse_line(LINUX_LINE, "syslog", year=2005)
    assert (r.ok, r.format, r.host) == (True, "syslog", "combo")
    assert (r.component, r.pid) == ("sshd(pam_unix)", "19939")
    assert r.message == "check pass; user unknown"
    for fmt in FORMATS:
        if fmt != "syslog":
            assert LineParser(fmt).parse(LINUX_LINE).ok is False, fmt


def test_unknown_format_rejected() -> None:
    with pytest.raises(ValueError):
        LineParser("nope")


def test_formats_tuple() -> None:
    assert set(FORMATS) == {"rfc5424", "syslog", "apache", "hdfs", "zookeeper", "json"}
    assert len(FORMATS) == len(set(FORMATS))


# --------------------------------------------------------------------------------------
# RFC 5424 (examples from RFC 5424 section 6.5)


def test_rfc5424_example_1_bom_and_nil_sd() -> None:
    r = parse_line(
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        "\ufeff'su root' failed for lonvick on /dev/pts/8"
    )
    assert (r.ok, r.format) == (True, "rfc5424")
    assert r.timestamp == datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC)
    assert r.host == "mymachine.example.com"
    assert r.component == "su"
    assert r.pid is None
    assert r.level == "CRITICAL"
    assert r.fields == {"facility": "4", "severity": "2", "version": "1", "msgid": "ID47"}
    assert r.message == "'su root' failed for lonvick on /dev/pts/8"


def test_rfc5424_example_2_offset_and_nil_msgid() -> None:
    r = parse_line(
        "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
        "%% It's time to make the do-nothing list"
    )
    assert r.format == "rfc5424"
    assert r.timestamp == datetime(2003, 8, 24, 12, 14, 15, 3, tzinfo=UTC)
    assert r.timestamp.tzinfo == UTC
    assert (r.host, r.component, r.pid, r.level) == ("192.0.2.1", "myproc", "8710", "NOTICE")
    assert "msgid" not in r.fields
    assert (r.fields["facility"], r.fields["severity"]) == ("20", "5")
    assert r.message == "%% It's time to make the do-nothing list"


def test_rfc5424_example_3_structured_data() -> None:
    r = parse_line(
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] '
        "\ufeffAn application event log entry..."
    )
    assert r.format == "rfc5424"
    assert r.component == "evntslog"
    assert r.fields["sd.exampleSDID@32473.iut"] == "3"
    assert r.fields["sd.exampleSDID@32473.eventSource"] == "Application"
    assert r.fields["sd.exampleSDID@32473.eventID"] == "1011"
    assert r.fields["msgid"] == "ID47"
    assert r.message == "An application event log entry..."


def test_rfc5424_example_4_two_sd_elements_no_msg() -> None:
    r = parse_line(
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
        '[examplePriority@32473 class="high"]'
    )
    assert r.format == "rfc5424"
    assert r.fields["sd.examplePriority@32473.class"] == "high"
    assert r.fields["sd.exampleSDID@32473.iut"] == "3"
    assert r.message == ""


def test_rfc5424_all_nil_and_escapes() -> None:
    r = parse_line("<34>1 - - - - - -")
    assert (r.ok, r.format, r.timestamp) == (True, "rfc5424", None)
    assert (r.host, r.component, r.pid) == (None, None, None)
    r = parse_line(
        '<13>1 2019-01-01T00:00:00+01:00 h a p m [x@1 k="a\\"b\\]c\\\\d" z="]"][y@2] msg'
    )
    assert r.fields["sd.x@1.k"] == 'a"b]c\\d'
    assert r.fields["sd.x@1.z"] == "]"
    assert r.fields["sd.y@2"] == ""
    assert r.timestamp == datetime(2018, 12, 31, 23, 0, tzinfo=UTC)
    assert r.message == "msg"


def test_rfc5424_bad_lines_are_raw() -> None:
    for line in (
        "<34>1 2003-10-11T22:14:15.003Z host app - ID47 [unterminated x=\"1\" msg",
        "<192>1 2003-10-11T22:14:15.003Z host app - - - msg",  # PRI out of range
        "<34>1 2003-10-11T22:14:15.003Z host",
    ):
        r = parse_line(line)
        assert (r.ok, r.format, r.message) == (False, "raw", line), line


def test_rfc5424_invalid_date_keeps_line() -> None:
    r = parse_line("<34>1 2003-02-30T22:14:15Z host app - - - msg")
    assert (r.ok, r.format, r.timestamp) == (True, "rfc5424", None)
    assert r.fields["invalid_timestamp"] == "2003-02-30T22:14:15Z"
    assert r.message == "msg"


# --------------------------------------------------------------------------------------
# RFC 3164 / BSD syslog


def test_rfc3164_with_pri() -> None:
    r = parse_line(
        "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8", year=2003
    )
    assert (r.ok, r.format) == (True, "syslog")
    assert r.timestamp == datetime(2003, 10, 11, 22, 14, 15, tzinfo=UTC)
    assert (r.host, r.component, r.pid) == ("mymachine", "su", None)
    assert r.level == "CRITICAL"
    assert r.fields == {"facility": "4", "severity": "2"}
    assert r.message == "'su root' failed for lonvick on /dev/pts/8"
    r = parse_line("<13>Feb  5 17:32:18 10.0.0.99 myapp[12]: Use the BFG!", year=2003)
    assert (r.level, r.host, r.component, r.pid) == ("NOTICE", "10.0.0.99", "myapp", "12")
    assert r.message == "Use the BFG!"
    assert r.timestamp == datetime(2003, 2, 5, 17, 32, 18, tzinfo=UTC)
    assert r.fields == {"facility": "1", "severity": "5"}


def test_rfc3164_without_pri_has_no_level() -> None:
    r = parse_line("Oct 11 22:14:15 mymachine su: x", year=2003)
    assert r.level is None
    assert r.fields == {}


def test_rfc3164_pri_out_of_range_is_raw() -> None:
    r = parse_line("<192>Oct 11 22:14:15 mymachine su: x", year=2003)
    assert (r.ok, r.format) == (False, "raw")


def test_syslog_variants() -> None:
    r = parse_line("Jun 14 15:16:01 sshd[12]: no host here", year=2005)
    assert (r.host, r.component, r.pid, r.message) == (None, "sshd", "12", "no host here")
    r = parse_line("Jun 14 15:16:01 combo last message repeated 3 times", year=2005)
    assert (r.ok, r.host, r.component) == (True, "combo", None)
    assert r.message == "last message repeated 3 times"
    r = parse_line("Jun 14 15:16:01 combo app:sub: msg", year=2005)
    assert (r.component, r.message) == ("app:sub", "msg")
    r = parse_line("2003-10-11T22:14:15.003+02:00 host app[1]: iso syslog")
    assert (r.format, r.host, r.component, r.pid) == ("syslog", "host", "app", "1")
    assert r.message == "iso syslog"
    assert r.timestamp == datetime(2003, 10, 11, 20, 14, 15, 3000, tzinfo=UTC)
    r = parse_line("<30>2003-10-11T22:14:15Z host app: iso pri")
    assert (r.format, r.level, r.fields["facility"]) == ("syslog", "INFO", "3")


def test_syslog_year_override() -> None:
    line = "Dec 31 23:59:59 host app[1]: bye"
    expected = datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert LineParser(year=1999).parse(line).timestamp == expected
    assert parse_line(line, year=2030).timestamp == datetime(2030, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert parse_line(line, "syslog", year=2001).timestamp.year == 2001
    # leap day is valid only in leap years
    leap = parse_line("Feb 29 12:00:00 h a: x", year=2024)
    assert leap.timestamp == datetime(2024, 2, 29, 12, tzinfo=UTC)
    r = parse_line("Feb 29 12:00:00 h a: x", year=2023)
    assert (r.ok, r.timestamp, r.fields["invalid_timestamp"]) == (True, None, "Feb 29 12:00:00")


def test_syslog_default_year_is_current_utc_year() -> None:
    now = datetime.now(UTC)
    line = f"{now:%b} {now.day:2d} 10:00:00 host app: x"
    r = LineParser().parse(line)
    assert r.timestamp is not None
    assert r.timestamp.year == now.year
    assert (r.timestamp.month, r.timestamp.day) == (now.month, now.day)


def test_invalid_dates_keep_line_with_timestamp_none() -> None:
    cases = {
        "syslog": "Feb 30 10:00:00 host app: bad date",
        "apache": "[Sun Feb 30 04:47:44 2005] [notice] bad date",
        "hdfs": "081130 256115 148 INFO dfs.DataNode: bad date",
        "zookeeper": "2015-13-29 17:41:44,747 - INFO  [main:QuorumPeerMain@127] - bad date",
    }
    for fmt, line in cases.items():
        r = parse_line(line, year=2005)
        assert (r.ok, r.format, r.timestamp, r.message) == (True, fmt, None, "bad date"), fmt
        assert r.fields["invalid_timestamp"], fmt


# --------------------------------------------------------------------------------------
# other formats, small cases


def test_apache_24_format() -> None:
    r = parse_line(
        "[Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 35708:tid 4328636416] "
        "[client 72.15.99.187] File does not exist: /usr/local/apache2/htdocs/favicon.ico"
    )
    assert (r.format, r.level, r.component) == ("apache", "error", "core")
    assert (r.pid, r.fields["tid"]) == ("35708", "4328636416")
    assert r.timestamp == datetime(2011, 9, 9, 10, 42, 29, 902022, tzinfo=UTC)
    assert r.message == (
        "[client 72.15.99.187] File does not exist: /usr/local/apache2/htdocs/favicon.ico"
    )


def test_a_column_header_of_one_system_is_not_a_built_in_format() -> None:
    """A header of plain columns (label, epoch, date, node, time, node, type, component,
    level) is one system's own layout: no built-in format takes it; the pipeline learns it
    per source (tests/unit/test_headers.py)."""
    line = ("- 1700000000 2023.11.14 ctl-a7 2023-11-14-22.13.20.123456 ctl-a7 EVT RAID WARNING"
            " disk 4 slow")
    r = parse_line(line)
    assert (r.ok, r.format, r.message) == (False, "raw", line)


# --------------------------------------------------------------------------------------
# JSON


def test_json_full_event_iso_timestamp() -> None:
    r = parse_line(
        '{"@timestamp": "2024-01-02T03:04:05.5+01:00", "hostname": "web-1", "service": "api",'
        ' "level": "warn", "pid": 42, "message": "slow request  ", "path": "/x", "ms": 1234.5,'
        ' "cached": false, "user": {"id": 7}, "tags": ["a", "b"], "none": null}'
    )
    assert (r.ok, r.format) == (True, "json")
    assert r.timestamp == datetime(2024, 1, 2, 2, 4, 5, 500000, tzinfo=UTC)
    assert (r.host, r.component, r.level, r.pid) == ("web-1", "api", "warn", "42")
    assert r.message == "slow request"
    assert r.fields == {
        "path": "/x",
        "ms": "1234.5",
        "cached": "false",
        "user.id": "7",
        "tags": '["a","b"]',
        "none": "null",
    }
    assert all(isinstance(v, str) for v in r.fields.values())


def test_json_epoch_timestamps() -> None:
    expected = datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert parse_line('{"ts": 1700000000123, "msg": "ms"}').timestamp == expected
    assert parse_line('{"time": 1700000000.123, "msg": "s"}').timestamp == expected
    assert parse_line('{"timestamp": "1700000000123", "msg": "ms as text"}').timestamp == expected
    assert parse_line('{"ts": 1700000000, "msg": "s"}').timestamp == expected.replace(microsecond=0)


def test_json_without_timestamp_and_other_shapes() -> None:
    r = parse_line('{"msg": "hello", "lvl": "DEBUG", "logger": "a.b", "host": "h"}')
    assert (r.ok, r.timestamp, r.message) == (True, None, "hello")
    assert (r.level, r.component, r.host) == ("DEBUG", "a.b", "h")
    # ECS-style nesting
    r = parse_line(
        '{"log": {"level": "error", "logger": "svc"}, "message": "m",'
        ' "process": {"pid": 9}, "host": {"name": "n"}}'
    )
    assert (r.level, r.component, r.pid, r.host, r.message) == ("error", "svc", "9", "n", "m")
    # docker json-file driver
    r = parse_line(
        '{"log":"text line\\n","stream":"stderr","time":"2019-04-30T16:06:46.588587424Z"}'
    )
    assert r.message == "text line"
    assert r.timestamp == datetime(2019, 4, 30, 16, 6, 46, 588587, tzinfo=UTC)
    assert r.fields == {"stream": "stderr"}
    # no message key: the event text is the message
    line = '{"event": "login", "user": "bob"}'
    r = parse_line(line)
    assert (r.ok, r.format, r.message) == (True, "json", line)
    assert r.fields == {"event": "login", "user": "bob"}
    # unreadable timestamp is kept in fields
    r = parse_line('{"time": "yesterday", "msg": "x"}')
    assert (r.timestamp, r.fields["time"]) == (None, "yesterday")


def test_json_non_objects_are_raw() -> None:
    for line in ('[1, 2, 3]', '"text"', '{not json}', '{"a": 1', '{"a":' * 5000 + "1" + "}" * 5000):
        r = parse_line(line)
        assert (r.ok, r.format) == (False, "raw"), line[:40]


# --------------------------------------------------------------------------------------
# junk, limits, robustness


@pytest.mark.parametrize(
    "line,message",
    [
        ("\x00\xff garbage", "\x00\xff garbage"),
        ("", ""),
        ("   ", ""),
        ("\n", ""),
        ("\r\n", ""),
        ("just some text\r\n", "just some text"),
        ("  indented text  \n", "  indented text"),
        ("\ud800 lone surrogate", "\ud800 lone surrogate"),
        ("日本語のログ 🚀", "日本語のログ 🚀"),
    ],
)
def test_junk_is_raw(line: str, message: str) -> None:
    r = parse_line(line)
    assert (r.ok, r.format, r.message, r.truncated) == (False, "raw", message, False)
    assert r.timestamp is None and r.level is None and r.fields == {}


def test_one_megabyte_line_is_truncated() -> None:
    line = "x" * (1 << 20)
    r = LineParser().parse(line)
    assert (r.ok, r.format, r.truncated) == (False, "raw", True)
    assert r.message == "x" * 65536
    r = LineParser(year=2005).parse("Jun 14 15:16:01 combo app[1]: " + "y" * (1 << 20))
    assert (r.ok, r.format, r.truncated, r.component) == (True, "syslog", True, "app")
    assert len(r.message) == 65536 - len("Jun 14 15:16:01 combo app[1]: ")
    r = LineParser(max_length=20).parse("Jun 14 15:16:01 combo app[1]: hello")
    # cut inside the header: still a (tag-less) syslog line, flagged as truncated
    assert (r.ok, r.format, r.truncated, r.host, r.message) == (True, "syslog", True, None, "comb")
    assert LineParser(max_length=20).parse("a" * 20).truncated is False


def test_never_raises_on_random_input() -> None:
    rng = random.Random(1234)
    prefixes = [
        "",
        "<34>1 2003-10-11T22:14:15.003Z ",
        "<34>",
        "Jun 14 15:16:01 ",
        "[Sun Dec 04 04:47:44 2005] [",
        "081109 203615 148 INFO ",
        "2015-07-29 17:41:44,747 - INFO  [",
        "- 1117838570 2005.06.03 R02 2005-06-03-15.42.50.675872 ",
        "{",
        '{"ts": ',
    ]
    alphabet = "ab :[]{}\"\\<>-@=,.0123456789\x00\x1b\t\r\n\u00ff\u2028\ufeff\ud800"
    parser = LineParser(max_length=4096)
    for _ in range(3000):
        tail = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        line = rng.choice(prefixes) + tail
        r = parser.parse(line)
        assert isinstance(r, ParsedLine)
        assert isinstance(r.message, str)
        assert r.timestamp is None or r.timestamp.tzinfo == UTC
    for fmt in FORMATS:
        p = LineParser(fmt)
        for junk in ("", " ", "\x00", "<", "[", "{", "-", "0" * 50, "<1>1 " + "[" * 10000):
            assert isinstance(p.parse(junk), ParsedLine)


def test_bytes_input_is_decoded() -> None:
    r = parse_line(b"Jun 14 15:16:01 combo app: caf\xc3\xa9 \xff", year=2005)
    assert (r.ok, r.component, r.message) == (True, "app", "caf\u00e9 \ufffd")


def test_parsed_line_defaults() -> None:
    a, b = ParsedLine("x"), ParsedLine("y")
    assert (a.timestamp, a.host, a.component, a.pid, a.level) == (None,) * 5
    assert (a.format, a.ok, a.truncated, a.fields) == ("raw", False, False, {})
    assert a.fields is not b.fields
    assert not hasattr(a, "__dict__")  # slots


def test_all_timestamps_are_utc_aware() -> None:
    for sample in SAMPLES.values():
        lines, _ = load(sample)
        parser = LineParser(year=2005)
        for line in lines[:50]:
            ts = parser.parse(line).timestamp
            assert ts is not None and ts.utcoffset() == timedelta(0)


def test_fast_path_speed_sanity() -> None:
    """A very loose regression guard (the real figure, ~2-3 us/line, is in the docstring)."""
    lines, _ = load(SAMPLES["Linux"])
    parser = LineParser(year=2005)
    start = time.perf_counter()
    for line in lines * 5:
        parser.parse(line)
    per_line = (time.perf_counter() - start) / (len(lines) * 5)
    assert per_line < 100e-6, f"{per_line * 1e6:.1f} us per line"


# --------------------------------------------------------------------------------------
# levels


@pytest.mark.parametrize(
    "raw,canonical",
    [
        ("debug", "DEBUG"),
        ("DEBUG", "DEBUG"),
        ("trace", "TRACE"),
        ("info", "INFO"),
        ("INFO", "INFO"),
        ("Informational", "INFO"),
        ("notice", "NOTICE"),
        ("warn", "WARNING"),
        ("WARN", "WARNING"),
        ("warning", "WARNING"),
        ("err", "ERROR"),
        ("error", "ERROR"),
        ("ERROR", "ERROR"),
        ("severe", "ERROR"),
        ("SEVERE", "ERROR"),
        ("crit", "CRITICAL"),
        ("critical", "CRITICAL"),
        ("alert", "ALERT"),
        ("emerg", "EMERGENCY"),
        ("panic", "EMERGENCY"),
        ("emergency", "EMERGENCY"),
        ("fatal", "FATAL"),
        ("FATAL", "FATAL"),
        ("0", "EMERGENCY"),
        ("1", "ALERT"),
        ("2", "CRITICAL"),
        ("3", "ERROR"),
        ("4", "WARNING"),
        ("5", "NOTICE"),
        ("6", "INFO"),
        ("7", "DEBUG"),
        (" Warn ", "WARNING"),
        ("WaRnInG", "WARNING"),
        ("failure", "FAILURE"),
        ("verbose", "VERBOSE"),
        ("8", "8"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_normalize_level(raw: str | None, canonical: str | None) -> None:
    assert normalize_level(raw) == canonical


def test_levels_as_written_in_samples() -> None:
    """ParsedLine.level keeps the log's spelling; normalize_level maps every sample level."""
    seen = set()
    for sample in SAMPLES.values():
        lines, _ = load(sample)
        parser = LineParser(year=2005)
        seen.update(parser.parse(line).level for line in lines)
    seen.discard(None)
    assert {"notice", "error", "INFO", "WARN", "ERROR"} <= seen
    assert {normalize_level(s) for s in seen} <= {"NOTICE", "ERROR", "INFO", "WARNING", "FATAL"}


def test_a_line_without_a_year_is_placed_by_its_arrival_not_by_when_it_is_processed(monkeypatch):
    """The pipeline is deterministic (recovery re-runs accepted items and must produce the same
    events): the year of a syslog line without one comes from the item's arrival time, never
    from the wall clock of the process that happens to run it."""
    import calendar

    import streams.parsing
    from streams.pipeline import Pipeline

    arrived = calendar.timegm((2026, 1, 3, 12, 0, 0))
    item = {"id": 1, "raw": "Dec 30 23:59:58 web-1 cron[12]: job done", "received": arrived}
    first = Pipeline().process([dict(item)])[0]
    assert first["timestamp"].startswith("2025-12-30T23:59:58")  # last year's December
    monkeypatch.setattr(streams.parsing.time, "time", lambda: arrived + 400 * 86400.0)
    again = Pipeline().process([dict(item)])[0]  # processed over a year later
    assert again["ts"] == first["ts"]


def test_a_pickled_parser_keeps_its_settings_not_its_tables() -> None:
    """Model checkpoints pickle the parser: only its settings go in (no parser method is
    named, so removing a format never makes a checkpoint unloadable), and it parses alike.
    tests/unit/test_checkpoints.py loads one written when `bgl` was a built-in format."""
    import pickle

    for parser in (LineParser(), LineParser("syslog", year=2005, max_length=40)):
        data = pickle.dumps(parser)
        assert b"_parse_" not in data
        again = pickle.loads(data)
        assert (again.fmt, again.year, again.max_length) == (parser.fmt, parser.year,
                                                              parser.max_length)
        assert again.parse(LINUX_LINE) == parser.parse(LINUX_LINE)
