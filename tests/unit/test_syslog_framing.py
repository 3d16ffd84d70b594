"""RFC 6587 framing (octet counting and LF) and message → item mapping, without sockets."""

from __future__ import annotations

import pytest

from ingest_api.receivers.syslog import SOURCE_TCP, SyslogFramer, decode_message, make_items
from streams.parsing import LineParser

RFC5424 = (b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
           b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event')
RFC3164 = b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8"


def frame_all(data: bytes, step: int | None = None, **kw) -> list[bytes]:
    f = SyslogFramer(**kw)
    out: list[bytes] = []
    if step is None:
        out += f.feed(data)
    else:
        for i in range(0, len(data), step):
            out += f.feed(data[i:i + step])
    return out + f.close()


def octet(msg: bytes, *, lf: bool = False) -> bytes:
    body = msg + (b"\n" if lf else b"")
    return str(len(body)).encode() + b" " + body


@pytest.mark.parametrize("step", [None, 1, 3, 7, 64])
def test_lf_framing_in_any_chunking(step):
    data = RFC5424 + b"\n" + RFC3164 + b"\r\n" + b"<13>third\n"
    assert frame_all(data, step) == [RFC5424, RFC3164, b"<13>third"]


@pytest.mark.parametrize("step", [None, 1, 2, 5, 50])
def test_octet_counting_in_any_chunking(step):
    data = octet(RFC5424) + octet(RFC3164) + octet(b"<13>multi\nline message")
    assert frame_all(data, step) == [RFC5424, RFC3164, b"<13>multi\nline message"]


def test_rsyslog_octet_count_includes_the_trailing_lf():
    data = octet(RFC3164, lf=True) + octet(RFC5424, lf=True)
    assert frame_all(data, 4) == [RFC3164, RFC5424]


def test_octet_counted_connection_keeps_its_framing():
    """Detected from the first message; a later frame without a count is kept to its LF."""
    data = octet(b"<13>one") + b"<13>two\n" + octet(b"<13>three", lf=True) + octet(b"<13>4 5")
    assert frame_all(data, 3) == [b"<13>one", b"<13>two", b"<13>three", b"<13>4 5"]


@pytest.mark.parametrize("step", [None, 1, 2, 5])
def test_newline_framed_lines_that_start_with_a_number_are_never_octet_counts(step):
    """``5 apples sold`` was taken for a 5-byte frame and ``1000 users…`` swallowed 20 lines."""
    lines = [b"5 apples sold", b"1000 users logged in"] + [b"<13>line %d" % i for i in range(20)]
    lines += [b"12 <13>looks counted but the connection is LF-framed"]
    assert frame_all(b"\n".join(lines) + b"\n", step) == lines


def test_framing_is_decided_only_once_enough_bytes_came():
    f = SyslogFramer()
    assert f.feed(b"1") == [] and f.feed(b"0 ") == [] and f.octet_counting is None
    assert f.feed(b"<1") == [] and f.octet_counting is None
    assert f.feed(b"3>hello!") == [b"<13>hello!"] and f.octet_counting is True
    g = SyslogFramer()
    assert g.feed(b"10 x") == [] and g.octet_counting is False
    assert g.feed(b"\n") == [b"10 x"]
    h = SyslogFramer()
    assert h.feed(b"1") == []
    assert h.close() == [b"1"]  # an unterminated lone number is a message, not a count


def test_a_line_starting_with_digits_is_not_an_octet_count():
    data = b"2024-01-02 10:00:00 INFO started\n081109 203615 148 INFO dfs: x\n"
    assert frame_all(data, 2) == [b"2024-01-02 10:00:00 INFO started", b"081109 203615 148 INFO dfs: x"]


def test_incomplete_octet_frame_waits_for_more_bytes():
    f = SyslogFramer()
    assert f.feed(b"1") == []
    assert f.feed(b"0 <13>he") == []
    assert f.buffered > 0
    assert f.feed(b"llo!") == [b"<13>hello!"]
    assert f.buffered == 0


def test_last_unterminated_message_is_kept_at_close():
    f = SyslogFramer()
    assert f.feed(b"<13>one\n<13>two without lf") == [b"<13>one"]
    assert f.close() == [b"<13>two without lf"]


def test_truncated_octet_frame_at_close_keeps_what_came():
    f = SyslogFramer()
    assert f.feed(b"100 <13>cut short") == []
    assert f.close() == [b"<13>cut short"]


def test_blank_lines_and_stray_terminators_are_dropped():
    assert frame_all(b"\n\r\n<13>a\n\n\0\n<13>b\n  \n") == [b"<13>a", b"<13>b"]


def test_oversized_lf_message_is_cut_and_the_rest_skipped():
    big = b"<13>" + b"x" * 100
    out = frame_all(big + b"\n<13>next\n", 7, max_frame=32)
    assert out == [big[:32], b"<13>next"]


def test_oversized_octet_message_is_cut_and_the_rest_skipped():
    big = b"<13>" + b"y" * 100
    out = frame_all(octet(big) + octet(b"<13>next"), 5, max_frame=32)
    assert out == [big[:32], b"<13>next"]


def test_memory_stays_bounded_without_terminators():
    f = SyslogFramer(max_frame=1024)
    for _ in range(100):
        f.feed(b"z" * 1000)
        assert f.buffered <= 2048


def test_decode_replaces_invalid_utf8():
    assert decode_message(b"<13>caf\xc3\xa9 \xff") == "<13>café \ufffd"


def test_items_carry_raw_id_source_and_parse_like_ingest():
    items = make_items([RFC5424, RFC3164], SOURCE_TCP, "abc", 123.0)
    assert [i["id"] for i in items] == ["syslog_tcp-abc-0", "syslog_tcp-abc-1"]
    assert all(i["source"] == "syslog_tcp" and i["received"] == 123.0 for i in items)
    p = LineParser(year=2024)
    a, b = (p.parse(i["raw"]) for i in items)
    assert (a.format, a.host, a.component, a.level) == ("rfc5424", "mymachine.example.com", "evntslog", "NOTICE")
    assert a.fields["sd.exampleSDID@32473.eventID"] == "1011" and a.fields["msgid"] == "ID47"
    assert a.message == "An application event"
    assert (b.format, b.host, b.component) == ("syslog", "mymachine", "su")
    assert b.fields["facility"] == "4" and b.fields["severity"] == "2"
