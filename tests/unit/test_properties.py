"""Property-based tests (Hypothesis) of every parser, of template mining and of the pipeline.

Issue 8, "Bad input and hostile input": arbitrary bytes and unicode never make an exception
escape; a line over the configured maximum length is truncated and flagged, not dropped.

Inputs are arbitrary text (all of unicode, lone surrogates included where a ``str`` can carry
them), arbitrary bytes (decoded as the API decodes them, and passed to the parser as bytes),
and lines *shaped* like every supported format (RFC 5424, RFC 3164 and ISO syslog, Apache,
HDFS, Zookeeper, JSON, and a header of plain columns that only inference reads) with random, often invalid, field values: random text almost
never gets past a header regex, these do, so the code behind each header is exercised too.

Runs are reproducible: ``derandomize=True`` and no example database, so CI sees the same
examples every time; ``SMARTLOGS_PROPERTY_EXAMPLES`` scales the budget for a deeper local run
(e.g. ``SMARTLOGS_PROPERTY_EXAMPLES=5000``).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import re
import string
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from tests.ci import need_module

hypothesis = need_module("hypothesis")  # skips locally when missing; fails in CI

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ingest_api.decode import IngestError, decode_body
from streams.parsing import FORMATS, LineParser, ParsedLine, normalize_level
from streams.pipeline import Pipeline, PipelineConfig
from streams.templates import TemplateMiner

_SCALE = int(os.environ.get("SMARTLOGS_PROPERTY_EXAMPLES", "0"))


def budget(n: int) -> settings:
    """Deterministic settings with ``n`` examples (or $SMARTLOGS_PROPERTY_EXAMPLES)."""
    return settings(
        max_examples=_SCALE or n,
        derandomize=True,
        database=None,
        deadline=None,  # timing is asserted explicitly where it matters, not per example
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],
    )


# -- strategies ----------------------------------------------------------------------------------
# every code point, lone surrogates included (a Python str can hold them)
any_char = st.characters(codec=None, exclude_categories=())
# what a UTF-8 body can decode to: every code point but the surrogates
utf8_char = st.characters(codec="utf-8")
any_text = st.text(any_char, max_size=300)
utf8_text = st.text(utf8_char, max_size=300)
# text heavy in the characters that header regexes and JSON care about
tricky_char = st.one_of(
    st.sampled_from(list(' \t\r\n\x0b\x0c\x00\x85\u2028\u3000\ufeff')),
    st.sampled_from(list('[]{}()<>:;,."\'\\/@=-+_*#|%&$!?~^`')),
    st.sampled_from(list(string.ascii_letters + string.digits)),
    utf8_char,
)
tricky_text = st.text(tricky_char, max_size=80)
word = st.text(st.sampled_from(string.ascii_letters + string.digits + "._-/:@"), min_size=1,
               max_size=12)


def has_surrogate(s: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in s)


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(string.digits), min_size=n, max_size=n)


def some_digits(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(string.digits), min_size=lo, max_size=hi)


MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
month = st.one_of(st.sampled_from(MONTHS), st.text(st.sampled_from(string.ascii_letters),
                                                   min_size=3, max_size=3))
level_word = st.one_of(st.sampled_from(["INFO", "WARN", "ERROR", "DEBUG", "FATAL", "notice",
                                        "error",
                                        "crit", "emerg", "info", "TRACE", "7", ""]), word)
tz = st.one_of(st.just(""), st.sampled_from(["Z", "z"]),
               st.builds(lambda s, h, m, c: f"{s}{h}{c}{m}", st.sampled_from("+-"), digits(2),
                         digits(2), st.sampled_from(["", ":"])))
frac = st.one_of(st.just(""), st.builds(lambda d: "." + d, some_digits(1, 10)))
pri = st.one_of(st.just(""), st.builds(lambda d: f"<{d}>", some_digits(1, 4)))
message = st.one_of(tricky_text, utf8_text, st.just(""))


@st.composite
def syslog_line(draw) -> str:
    head = (f"{draw(pri)}{draw(month)} {draw(some_digits(1, 2))} "
            f"{draw(digits(2))}:{draw(digits(2))}:{draw(digits(2))}{draw(frac)}")
    if draw(st.booleans()):  # the ISO 8601 form
        head = (f"{draw(pri)}{draw(digits(4))}-{draw(digits(2))}-{draw(digits(2))}T"
                f"{draw(digits(2))}:{draw(digits(2))}:{draw(digits(2))}{draw(frac)}{draw(tz)}")
    host = draw(st.one_of(st.just(""), st.builds(lambda w: " " + w, word)))
    tag = draw(st.one_of(st.just(""), word, tricky_text))
    pid = draw(st.one_of(st.just(""), st.builds(lambda d: f"[{d}]", st.one_of(some_digits(0, 8),
                                                                            tricky_text))))
    return f"{head}{host} {tag}{pid}: {draw(message)}"


@st.composite
def rfc5424_line(draw) -> str:
    ts = draw(st.one_of(st.just("-"), st.builds(
        lambda y, mo, d, h, mi, s, f, z: f"{y}-{mo}-{d}T{h}:{mi}:{s}{f}{z}", digits(4), digits(2),
        digits(2), digits(2), digits(2), digits(2), frac, tz)))
    sd = draw(st.one_of(
        st.just("-"),
        st.lists(st.builds(
            lambda i, params: f"[{i}{params}]", word,
            st.lists(st.builds(lambda k, v: f' {k}="{v}"', word,
                               st.text(st.one_of(st.sampled_from(list('ab\\"] =')), utf8_char),
                                       max_size=8)),
                     max_size=3).map("".join)), min_size=1, max_size=3).map("".join),
        st.builds(lambda t: "[" + t, tricky_text),  # unterminated
    ))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    fields = [draw(st.one_of(st.just("-"), word)) for _ in range(4)]
    return (f"<{draw(some_digits(1, 3))}>{draw(some_digits(1, 3))} {ts} {' '.join(fields)} {sd}"
            f" {bom}{draw(message)}")


@st.composite
def apache_line(draw) -> str:
    day = draw(st.sampled_from(["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Xyz"]))
    ts = (f"[{day} {draw(month)} {draw(some_digits(1, 2))} {draw(digits(2))}:{draw(digits(2))}:"
          f"{draw(digits(2))}{draw(frac)} {draw(digits(4))}]")
    lvl = draw(st.one_of(level_word, st.builds(lambda m, lv: f"{m}:{lv}", word, level_word)))
    pid = draw(st.one_of(st.just(""), st.builds(lambda p, t: f" [pid {p}{t}]", some_digits(1, 7),
                                                st.one_of(st.just(""), st.builds(
                                                    lambda t: f":tid {t}", some_digits(1, 20))))))
    return f"{ts} [{lvl}]{pid} {draw(message)}"


@st.composite
def hdfs_line(draw) -> str:
    return (f"{draw(digits(6))} {draw(digits(6))} {draw(some_digits(1, 6))} {draw(level_word)} "
            f"{draw(word)}: {draw(message)}")


@st.composite
def zookeeper_line(draw) -> str:
    bracket = draw(st.one_of(word, tricky_text, st.builds(lambda a, b, c: f"{a}:{b}@{c}", word,
                                                          word, some_digits(1, 4))))
    return (f"{draw(digits(4))}-{draw(digits(2))}-{draw(digits(2))} {draw(digits(2))}:"
            f"{draw(digits(2))}:{draw(digits(2))},{draw(digits(3))} - {draw(level_word)}  "
            f"[{bracket}] - {draw(message)}")


@st.composite
def columns_line(draw) -> str:
    """label, epoch, date, node, time, node, type, component, level: no built-in format,
    a layout the pipeline learns per source."""
    node = draw(word)
    return (f"{draw(st.sampled_from(['-', 'DISKERR', 'FANFAIL']))} {draw(some_digits(1, 12))} "
            f"{draw(digits(4))}.{draw(digits(2))}.{draw(digits(2))} {node} {draw(digits(4))}-"
            f"{draw(digits(2))}-{draw(digits(2))}-{draw(digits(2))}.{draw(digits(2))}."
            f"{draw(digits(2))}.{draw(some_digits(1, 6))} {draw(st.one_of(st.just(node), word))} "
            f"EVT {draw(word)} {draw(level_word)} {draw(message)}")


json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2 ** 200), max_value=2 ** 200),
    st.floats(allow_nan=False, allow_infinity=False), any_text,
)
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)), max_leaves=8)
# keys that the JSON parser gives a role to, in several spellings
json_key = st.one_of(st.sampled_from([
    "@timestamp", "timestamp", "time", "ts", "datetime", "host", "hostname", "host.name",
    "service", "component", "app", "logger", "level", "severity", "lvl", "LEVEL", "log.level",
    "pid", "process.pid", "message", "msg", "MSG", "log", "body", "fields", "raw", "line", "id"]),
    any_text)
ts_value = st.one_of(
    st.integers(), st.floats(), st.sampled_from(["", "now", "0", "-1", "1e400", "NaN"]),
    st.builds(lambda y, mo, d, h, mi, s, z: f"{y}-{mo}-{d}T{h}:{mi}:{s}{z}", digits(4), digits(2),
              digits(2), digits(2), digits(2), digits(2), st.one_of(tz, st.sampled_from(
                  [" UTC", " GMT", "+05", "-2359", "+23:59"]))),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                     "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2024-02-30T00:00:00"]),
)


@st.composite
def json_object(draw) -> dict:
    obj = draw(st.dictionaries(json_key, json_value, max_size=6))
    if draw(st.booleans()):
        obj[draw(st.sampled_from(["timestamp", "@timestamp", "time", "ts"]))] = draw(ts_value)
    if draw(st.booleans()):
        obj[draw(st.sampled_from(["message", "msg", "raw"]))] = draw(any_text)
    if draw(st.booleans()):
        obj["log"] = {"level": draw(json_value), "nested": draw(json_value)}
    return obj


@st.composite
def json_line(draw) -> str:
    obj = draw(json_object())
    # json.dumps escapes lone surrogates as \udXXX, which a UTF-8 body carries fine
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if has_surrogate(text):  # a line from a UTF-8 body holds none (only \\udXXX escapes)
        text = json.dumps(obj, ensure_ascii=True, allow_nan=True)
    if draw(st.booleans()):  # numbers in forms json.dumps never writes
        text = text[:-1] + draw(st.sampled_from(
            [', "msg": 1e15}', ', "n": 1E400}', ', "n": -0.0e-999}', ', "n": NaN}',
             ', "n": ' + "9" * 5000 + "}", ', "n": ' + "9" * 300 + "}"]))
    return text


formatted_line = st.one_of(syslog_line(), rfc5424_line(), apache_line(), hdfs_line(),
                           zookeeper_line(), columns_line(), json_line())


@st.composite
def mangled(draw, lines: st.SearchStrategy[str]) -> str:
    """A formatted line, sometimes cut, padded or with characters spliced in."""
    line = draw(lines)
    op = draw(st.sampled_from(["keep", "keep", "cut", "pad", "splice", "indent"]))
    if op == "cut" and line:
        line = line[: draw(st.integers(0, len(line)))]
    elif op == "pad":
        line = line + draw(st.sampled_from([" ", "\t", "\r", "\n", " \x00"])) * draw(
            st.integers(1, 5))
    elif op == "splice" and line:
        i = draw(st.integers(0, len(line)))
        line = line[:i] + draw(tricky_text) + line[i:]
    elif op == "indent":
        line = draw(st.sampled_from([" ", "\t", "  \u3000"])) + line
    return line


# lines as the API hands them to the parser: decoded UTF-8 (no surrogates)
api_line = st.one_of(mangled(formatted_line), utf8_text,
                     st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")))
# and anything a str can hold
any_line = st.one_of(api_line, any_text)
max_length = st.one_of(st.integers(1, 40), st.integers(41, 400), st.just(65536))
fmt = st.sampled_from([None, *FORMATS])


# -- helpers -----------------------------------------------------------------------------------
def assert_utf8(value, where: str) -> None:
    """Every string in ``value`` can be written out as UTF-8 (SQLite, orjson, Elasticsearch)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise AssertionError(f"{where}: {value!r} is not UTF-8 encodable ({exc})") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            assert_utf8(k, f"{where} key")
            assert_utf8(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            assert_utf8(v, f"{where}[{i}]")


def check_parsed(r: ParsedLine, line: str, parser: LineParser) -> None:
    assert isinstance(r, ParsedLine)
    n = parser.max_length
    assert isinstance(r.message, str)
    # over the maximum: truncated and flagged; never dropped, never longer than the maximum
    assert r.truncated or len(line) <= n, (len(line), n, r)
    if r.truncated and len(line) <= n:  # only a JSON value rendered longer than its source text
        assert r.format == "json", r
    assert len(r.message) <= n, (len(r.message), n, r)
    assert isinstance(r.ok, bool)
    if r.ok:
        assert r.format in FORMATS
        if parser.fmt is not None:
            assert r.format == parser.fmt
    else:
        assert r.format == "raw"
        assert r.message == line[:n].rstrip()  # the raw line itself, not dropped
        assert r.timestamp is None and r.host is None
    for name in ("host", "component", "pid", "level"):
        v = getattr(r, name)
        assert v is None or isinstance(v, str), (name, v)
    if r.timestamp is not None:
        assert isinstance(r.timestamp, datetime)
        assert r.timestamp.utcoffset() == timedelta(0)
        # epoch seconds and back, as the pipeline does (9999-12-31T23:59:59.999999 would not)
        datetime.fromtimestamp(r.timestamp.timestamp(), UTC)
    assert isinstance(r.fields, dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in r.fields.items()), r.fields
    if not has_surrogate(line):
        assert_utf8([r.message, r.host, r.component, r.pid, r.level, r.fields], "ParsedLine")


# -- LineParser ------------------------------------------------------------------------------------
@budget(600)
@given(line=any_line, fmt=fmt, n=max_length)
@example(line="{}", fmt=None, n=65536)
@example(line='{"msg": "a\\ud800b", "host": "h\\udc00"}', fmt=None, n=65536)
@example(line='{"msg":1e15}', fmt="json", n=12)
@example(line="x" * 70_000, fmt=None, n=65536)
@example(line='{"ts": "9999-12-31T23:59:59.999999Z", "msg": "x"}', fmt=None, n=65536)
@example(line="<13>1 9999-12-31T23:58:59.99999-00:01 h a - - - m", fmt=None, n=65536)
@example(line="9999-12-31T23:59:59.999999Z host app: m", fmt=None, n=65536)
def test_parser_never_raises_and_bounds_the_message(line, fmt, n):
    parser = LineParser(fmt, max_length=n)
    check_parsed(parser.parse(line), line, parser)


@budget(300)
@given(data=st.binary(max_size=400), fmt=fmt, n=max_length)
@example(data=b"\xff\xfe" + b"a" * 100, fmt=None, n=10)
def test_parser_takes_arbitrary_bytes(data, fmt, n):
    parser = LineParser(fmt, max_length=n)
    text = data.decode("utf-8", "replace")
    r = parser.parse(data)
    check_parsed(r, text, parser)
    assert r == LineParser(fmt, max_length=n).parse(text)  # bytes = their UTF-8 decoding


@budget(300)
@given(line=mangled(formatted_line), n=max_length)
def test_a_detected_format_parses_the_same_when_forced(line, n):
    auto = LineParser(max_length=n).parse(line)
    if auto.ok:
        assert LineParser(auto.format, max_length=n).parse(line) == auto


@budget(200)
@given(before=st.lists(api_line, max_size=4), line=api_line)
def test_detection_does_not_depend_on_the_previous_lines(before, line):
    """The "last format" hint only changes the speed, never the result."""
    primed = LineParser(year=2024)
    for b in before:
        primed.parse(b)
    assert primed.parse(line) == LineParser(year=2024).parse(line)


def test_parser_ignores_non_text_input():
    parser = LineParser()
    for v in (None, 12, 3.5, ["a"], {"a": 1}, bytearray(b"abc"),
              memoryview(b"Jan 1 00:00:00 h a: b")):
        r = parser.parse(v)
        assert isinstance(r, ParsedLine) and isinstance(r.message, str)


@budget(200)
@given(level=st.one_of(st.none(), any_text))
def test_normalize_level_never_raises(level):
    out = normalize_level(level)
    assert out is None or (isinstance(out, str) and out == out.strip() and out)


# -- TemplateMiner ---------------------------------------------------------------------------------
TEMPLATE_ID = re.compile(r"^T(?:[0-9a-f]{12}|\d+)$")
# messages from a small vocabulary with variables, so that lines do share templates
vocab_message = st.lists(st.one_of(
    st.sampled_from(["user", "session", "opened", "closed", "for", "from", "port", "failed",
                     "password", "root", "(uid=0)", "rhost=", "tty=ssh", "=", "[]", "<*>",
                     "<NUM>"]),
    st.builds(str, st.integers(0, 70000)),
    st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", *[st.integers(0, 300)] * 4),
    st.builds(lambda h: f"0x{h:x}", st.integers(0, 2 ** 40)),
    st.builds(lambda p: f"/var/{p}/x.log", word),
    word,
), min_size=0, max_size=10).map(" ".join)
mine_input = st.one_of(vocab_message, any_text, mangled(formatted_line))


def check_mined(r, message: str) -> None:
    assert TEMPLATE_ID.match(r.template_id), r.template_id
    assert isinstance(r.template, str)
    assert isinstance(r.params, list) and all(isinstance(p, str) for p in r.params)
    assert isinstance(r.is_new, bool)
    assert isinstance(r.seen_before, int) and r.seen_before >= 0


@budget(200)
@given(messages=st.lists(mine_input, min_size=1, max_size=12))
@example(messages=["", " ", "\x00", "\ud800", "<*>", "<*> <*>", "a\u2028b", "😀" * 50])
def test_mining_never_raises_and_is_deterministic(messages):
    a, b = TemplateMiner(), TemplateMiner()
    ids = []
    for m in messages:
        r = a.mine(m)
        check_mined(r, m)
        ids.append(r.template_id)
    # the same lines in the same order give the same ids (what exact recovery relies on)
    assert [b.mine(m).template_id for m in messages] == ids
    # a line seen before goes to the template it got last time
    last = messages[-1]
    again = a.mine(last)
    assert again.template_id == ids[-1] and not again.is_new


@budget(100)
@given(messages=st.lists(mine_input, min_size=1, max_size=8), more=st.lists(mine_input, max_size=4))
def test_mining_state_survives_a_checkpoint(messages, more):
    m = TemplateMiner()
    for msg in messages:
        m.mine(msg)
    restored = pickle.loads(pickle.dumps(m))
    assert [restored.mine(x).template_id for x in more] == [m.mine(x).template_id for x in more]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("token", [
    "a" * 20_000 + "@", "a@" + "b-" * 10_000, "-a" * 10_000, "/a" * 10_000 + ":",
    "1." * 10_000, "0" * 20_000 + "g", "ab:" * 7_000, "=(" * 10_000, "a@b." * 5_000 + "-",
    "\ud800" * 10_000, "<" * 10_000 + "1",
])
def test_mining_a_pathological_token_is_fast(token):
    import time

    m = TemplateMiner()
    t0 = time.perf_counter()
    m.mine(f"start {token} end")
    m.mine(f"start {token[::-1]} end")  # a second one of the same shape exercises the merge
    assert time.perf_counter() - t0 < 2.0


# -- decode_body -----------------------------------------------------------------------------------
CONTENT_TYPES = ["application/json", "application/x-ndjson", "application/ndjson",
                 "application/jsonl", "text/plain", "text/plain; charset=utf-8",
                 "application/json; charset=latin-1", "APPLICATION/JSON", "text/csv",
                 "application/octet-stream", "", ";", "multipart/form-data; boundary=x"]
content_type = st.one_of(st.none(), st.sampled_from(CONTENT_TYPES), any_text)
content_encoding = st.one_of(st.none(), st.sampled_from(["gzip", "GZIP ", "identity", "", "br",
                                                         "deflate", "gzip, gzip"]), any_text)


def check_decoded(call):
    """decode_body either returns items or raises a 4xx IngestError that says what is wrong."""
    try:
        items = call()
    except IngestError as exc:
        assert 400 <= exc.status < 500, exc.status
        assert isinstance(exc.body.get("error"), str) and exc.body["error"]
        assert isinstance(exc.body.get("detail"), str) and exc.body["detail"]
        orjson.dumps(exc.body)  # the error body is JSON-able
        return None
    assert isinstance(items, list) and items, "an accepted body holds at least one item"
    for item in items:
        assert isinstance(item, dict)
        assert isinstance(item.get("message"), str) or isinstance(item.get("raw"), str), item
        if "ts" in item:
            assert isinstance(item["ts"], float) and math.isfinite(item["ts"])
            # every accepted time is one the pipeline can turn back into a date
            datetime.fromtimestamp(item["ts"], UTC)
        for key in ("host", "component", "level", "pid", "id"):
            assert key not in item or isinstance(item[key], str), (key, item)
        assert "fields" not in item or isinstance(item["fields"], dict)
        orjson.dumps(item)  # what the spool stores
    return items


@budget(400)
@given(body=st.binary(max_size=600), ctype=content_type, enc=content_encoding,
       max_bytes=st.integers(1, 2000))
@example(body=b"", ctype="application/json", enc=None, max_bytes=100)
@example(body=b"\xc2\xa0\n", ctype="text/plain", enc=None, max_bytes=100)
@example(body=b"\xe3\x80\x80", ctype="application/x-ndjson", enc=None, max_bytes=100)
@example(body=b"\x1f\x8b", ctype="application/json", enc="gzip", max_bytes=100)
def test_decode_arbitrary_bytes(body, ctype, enc, max_bytes):
    check_decoded(lambda: decode_body(body, content_type=ctype, content_encoding=enc,
                                      max_bytes=max_bytes))


@budget(200)
@given(body=st.binary(max_size=600), ctype=content_type, max_bytes=st.integers(1, 2000),
       level=st.integers(0, 9), cut=st.one_of(st.none(), st.integers(0, 100)))
@example(body=b"a" * 5000, ctype="text/plain", max_bytes=1000, level=9, cut=None)  # a small bomb
def test_decode_gzip_of_arbitrary_bytes(body, ctype, max_bytes, level, cut):
    z = gzip.compress(body, compresslevel=level)
    if cut is not None:
        z = z[:cut]
    check_decoded(lambda: decode_body(z, content_type=ctype, content_encoding="gzip",
                                      max_bytes=max_bytes))


structured_body = st.one_of(
    st.builds(lambda o: json.dumps(o, allow_nan=True), json_value),
    st.builds(lambda o: json.dumps(o, allow_nan=True), json_object()),
    st.builds(lambda os_: json.dumps(os_, allow_nan=True), st.lists(json_object(), max_size=4)),
    st.builds("\n".join, st.lists(st.one_of(json_line(), api_line), max_size=5)),
    st.builds("\n".join, st.lists(mangled(formatted_line), min_size=1, max_size=5)),
)


@budget(250)
@given(text=structured_body,
       ctype=st.sampled_from(["application/json", "application/x-ndjson", "text/plain"]))
@example(text='{"message": "m", "timestamp": "0001-01-01T00:00:00+01:00"}',
         ctype="application/json")
@example(text='{"message": "m", "timestamp": "9999-12-31T23:59:59-01:00"}',
         ctype="application/json")
def test_decode_structured_bodies(text, ctype):
    body = text.encode("utf-8", "surrogatepass")
    check_decoded(lambda: decode_body(body, content_type=ctype, max_bytes=1_000_000))


# -- Pipeline.process ------------------------------------------------------------------------------
MAX_LINE = 64
PIPE_CONFIG = PipelineConfig(max_line_length=MAX_LINE, hst_window=16, hst_trees=3, hst_height=3,
                             year=2024)
RECORD_KEYS = {"id", "ts", "timestamp", "received", "source", "receiver", "host", "component", "pid", "level",
               "message", "raw", "template_id", "template", "params", "score", "anomaly",
               "reason", "warming_up", "parse_ok", "format", "truncated", "fields", "incident_id"}


@st.composite
def accepted_items(draw) -> list[dict]:
    """Items as the ingest API hands them on: decoded bodies plus id, received, source."""
    items = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["text", "json", "ndjson"]))
        if kind == "text":
            body = "\n".join(draw(st.lists(api_line, min_size=1, max_size=3))).encode()
            ctype = "text/plain"
        elif kind == "json":
            body = json.dumps(draw(st.one_of(json_object(), st.lists(json_object(), max_size=3))),
                              allow_nan=True).encode("utf-8", "surrogatepass")
            ctype = "application/json"
        else:
            body = "\n".join(draw(st.lists(json_line(), min_size=1, max_size=3))).encode(
                "utf-8", "surrogatepass")
            ctype = "application/x-ndjson"
        try:
            items += decode_body(body, content_type=ctype, max_bytes=1_000_000,
                                 max_line_length=MAX_LINE)
        except IngestError:
            pass
    assume(items)
    for i, item in enumerate(items):
        item.setdefault("id", f"b-{i}")
        item["received"] = draw(st.floats(0, 4e9))
        item["source"] = "http"
    return items


def check_records(records: list[dict], items: list[dict]) -> None:
    assert len(records) == len(items)
    for rec, item in zip(records, items):
        assert set(rec) == RECORD_KEYS, set(rec) ^ RECORD_KEYS
        assert rec["id"] == item["id"]
        assert isinstance(rec["ts"], float) and math.isfinite(rec["ts"])
        assert isinstance(rec["timestamp"], str) and rec["timestamp"].endswith("Z")
        assert TEMPLATE_ID.match(rec["template_id"])
        assert isinstance(rec["message"], str)
        assert isinstance(rec["score"], float) and 0.0 <= rec["score"] <= 1.0, rec["score"]
        assert isinstance(rec["anomaly"], bool) and isinstance(rec["truncated"], bool)
        if "raw" in item and len(item["raw"]) > MAX_LINE:
            assert rec["truncated"] and len(rec["message"]) <= MAX_LINE, rec
        assert_utf8(rec, "record")
        orjson.dumps(rec)  # what the sinks (SQLite, Elasticsearch) serialise


@budget(80)
@given(items=accepted_items())
@example(items=[{"raw": '{"msg": "a\\ud800b", "host": "h\\udc00"}', "id": "s", "received": 1.0,
                 "source": "http"}])
def test_pipeline_processes_whatever_the_api_accepts(items, tmp_path_factory):
    pipeline = Pipeline(PIPE_CONFIG)
    records = pipeline.process([dict(i) for i in items])
    check_records(records, items)
    # and a sink can store them
    from smartlogs.store import SqliteStore

    store = SqliteStore(tmp_path_factory.mktemp("store") / "s.db", durable_spool=False)
    try:
        store.write(records, window_seconds=PIPE_CONFIG.window_seconds, applied_seq=1)
    finally:
        store.close()


def test_pipeline_truncates_and_flags_an_overlong_raw_line():
    line = "Jun 14 15:16:01 combo sshd[1]: " + "x" * 500
    [rec] = Pipeline(PIPE_CONFIG).process([{"raw": line, "id": "1", "received": 1.0}])
    assert rec["truncated"] is True and len(rec["message"]) <= MAX_LINE and rec["parse_ok"]


@pytest.mark.parametrize("item", [
    {"message": "y" * 500},  # a bare message (the parser gets it)
    {"message": "y" * 500, "host": "h"},  # an event with fields (not parsed)
])
def test_pipeline_truncates_and_flags_an_overlong_message(item):
    [rec] = Pipeline(PIPE_CONFIG).process([{**item, "id": "1", "received": 1.0}])
    assert rec["truncated"] is True and len(rec["message"]) <= MAX_LINE


def test_pipeline_does_not_store_an_overlong_raw_line_whole():
    [rec] = Pipeline(PIPE_CONFIG).process([{"raw": "z" * 500, "id": "1", "received": 1.0}])
    assert rec["truncated"] is True
    assert rec["raw"] is None or len(rec["raw"]) <= MAX_LINE


@st.composite
def arbitrary_items(draw) -> list[dict]:
    """Item dicts of the documented shape, with any values (what a buggy or hostile producer
    on the Kafka/AMQP path could hand the pipeline): not only what decode_body lets through."""
    items = []
    for i in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            item = {"raw": draw(any_line)}
        else:
            item = {"message": draw(any_line)}
            # ts: any float, NaN and infinities included (decode_body lets none of those in)
            for key, values in (("ts", st.floats()),
                                ("host", any_text), ("component", any_text),
                                ("pid", any_text), ("level", any_text),
                                ("fields", st.dictionaries(any_text, json_value, max_size=3))):
                if draw(st.booleans()):
                    item[key] = draw(values)
        item["id"] = draw(st.one_of(st.just(f"a-{i}"), any_text))
        item["received"] = draw(st.floats(0, 4e9))
        items.append(item)
    return items


@budget(150)
@given(items=arbitrary_items())
def test_pipeline_never_raises_on_arbitrary_items(items):
    records = Pipeline(PIPE_CONFIG).process([dict(i) for i in items])
    assert len(records) == len(items)


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf, 1e20, -1e12, 253402300800.0])
def test_pipeline_survives_an_impossible_time(ts):
    [rec] = Pipeline(PIPE_CONFIG).process([{"message": "m", "ts": ts, "id": "1", "received": 1.0}])
    assert math.isfinite(rec["ts"])
