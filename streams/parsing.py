"""Pure log-line parsing: one raw text line in, one :class:`ParsedLine` out.

Supported formats (``FORMATS``)::

    rfc5424    <165>1 2003-10-11T22:14:15.003Z host app procid msgid [sd-id k="v"] msg
    syslog     [<PRI>]Jun 14 15:16:01 combo sshd(pam_unix)[19939]: msg      (RFC 3164 / BSD)
               also [<PRI>]2003-10-11T22:14:15.003+02:00 host app[pid]: msg (rsyslog file format)
    apache     [Sun Dec 04 04:47:44 2005] [notice] msg        (error log, 2.2 and 2.4)
    hdfs       081109 203615 148 INFO dfs.DataNode$PacketResponder: msg
    zookeeper  2015-07-29 17:41:44,747 - INFO  [thread:Class@line] - msg
               (log4j "%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m")
    json       {"ts": ..., "level": ..., "msg": ..., ...}

Anything else comes back as ``ParsedLine(message=line.rstrip(), ok=False, format="raw")``.
``LineParser.parse`` never raises: any internal error also degrades to the raw result.

Field splitting, the same for every source (the evaluation compares it with loghub's
structured CSVs, which agree except where noted):

* message is the content after the header with leading *and* trailing whitespace removed
  (``kernel:   DMA zone`` -> ``DMA zone``): padding after a tag is layout, not content.
* syslog: the program ("component") is everything between the host and the first ``[pid]:``
  or ``:`` followed by whitespace, so it may contain spaces (``syslogd 1.4.1``,
  ``-- root``).  It is limited to 64 characters and must not contain brackets; a line
  with a valid syslog timestamp but no ``tag:`` still matches (component None).  The
  host may be absent (``Jun 14 15:16:01 sshd[1]: msg``).
* zookeeper: ``[thread:Class@line]`` is split as log4j wrote it (``%t:%C{1}@%L``): the
  component is the class (``FastLeaderElection``), fields ``thread`` (the text before the
  last ``:``, ``QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181``) and ``line`` (``774``). (loghub's
  CSV cuts at the *first* ``:`` instead; that cut fits its files only and is not copied.)

Timestamps are always timezone-aware UTC.  Naive log times are taken as UTC; offsets
(RFC 5424, ISO 8601 in JSON) are converted.  Syslog lines without a year use the ``year``
given to the parser; without one, the current UTC year -- except that a month more than
one month ahead of the current month is taken as last year (a December line read in
January).

Invalid dates (Feb 30, hour 25, leap second 60, ...): the line still matches its format
(``ok=True``, fields extracted as usual) but ``timestamp`` is None and the original
timestamp text is kept in ``fields["invalid_timestamp"]``.

Lines longer than ``max_length`` are cut to ``max_length`` characters before parsing and
flagged ``truncated=True``; the message is never longer than ``max_length`` (a JSON number
rendered longer than the line, ``1e15`` -> ``1000000000000000.0``, is cut and flagged too).
Lone surrogates that JSON escapes decode to (``"\\ud800"``) become U+FFFD, so every string
out of the parser can be encoded as UTF-8.  ``bytes`` input is decoded as UTF-8 (errors replaced).

Automatic detection tries the format that matched the previous line first, then the
formats that can start with the line's first character (the formats are mutually
exclusive by construction, so the order never changes the result, only the speed).

Performance: about 2-4 us per line on the fast path, measured per sample format by
``bench/bench_parse.py`` (figures in bench/RESULTS.md).  Datetimes are built from integers (no
``strptime``) and cached per timestamp text; JSON timestamps go through
``datetime.fromisoformat``.

JSON: keys are matched case-insensitively after flattening nested objects with dots
(``{"log": {"level": ..}}`` -> ``log.level``); timestamp from @timestamp/timestamp/time/
ts/datetime (ISO 8601, or epoch s/ms/us/ns by magnitude), host from host/hostname/
host.name, component from service/component/app/logger/..., level from level/severity/
lvl/log.level, pid from pid/process.pid, message from message/msg/log/body.  Every other
key goes into ``fields`` as a string (JSON text for lists, true/false/null); an unreadable
timestamp is kept in ``fields`` under its own key.  Without a message key the message is
the JSON text itself.  orjson turns integers beyond 64 bits into floats.

``LineParser`` keeps only a "last format" hint and small caches, so sharing one between
threads is safe (results never depend on the hint).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import orjson

__all__ = [
    "FORMATS",
    "LineParser",
    "ParsedLine",
    "normalize_level",
    "parse_line",
]

UTC = timezone.utc


@dataclass(slots=True)
class ParsedLine:
    message: str  # the content after the header (CSV "Content"), stripped of trailing whitespace
    timestamp: datetime | None = None  # timezone-aware, UTC (naive log times are taken as UTC)
    host: str | None = None
    component: str | None = None
    pid: str | None = None
    level: str | None = None  # level text exactly as written in the log (e.g. "notice", "INFO")
    format: str = "raw"  # name of the format that matched; "raw" when none matched
    ok: bool = False  # False when no format matched (message = the whole raw line)
    truncated: bool = False  # True when the line was longer than max_length and was cut
    fields: dict[str, str] = field(default_factory=dict)  # extra fields


FORMATS: tuple[str, ...] = ("rfc5424", "syslog", "apache", "hdfs", "zookeeper", "json")
# full detection order (specific before generic); the per-first-character shortlists in
# LineParser follow it too
_DETECTION_ORDER = ("rfc5424", "apache", "hdfs", "zookeeper", "json", "syslog")

# ---------------------------------------------------------------------------------------
# levels

_SYSLOG_SEVERITIES = (
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFO",
    "DEBUG",
)

_LEVEL_SYNONYMS = {
    "emerg": "EMERGENCY",
    "emergency": "EMERGENCY",
    "panic": "EMERGENCY",
    "alert": "ALERT",
    "crit": "CRITICAL",
    "critical": "CRITICAL",
    "err": "ERROR",
    "error": "ERROR",
    "severe": "ERROR",
    "warn": "WARNING",
    "warning": "WARNING",
    "notice": "NOTICE",
    "info": "INFO",
    "informational": "INFO",
    "information": "INFO",
    "debug": "DEBUG",
    "trace": "TRACE",
    "fatal": "FATAL",
}
for _i, _name in enumerate(_SYSLOG_SEVERITIES):
    _LEVEL_SYNONYMS[str(_i)] = _name
# exact-spelling fast table: lower, UPPER and Title variants
_LEVELS: dict[str, str] = {}
for _k, _v in _LEVEL_SYNONYMS.items():
    _LEVELS[_k] = _v
    _LEVELS[_k.upper()] = _v
    _LEVELS[_k.title()] = _v


def normalize_level(level: str | None) -> str | None:
    """Canonical upper-case level name.

    DEBUG, INFO, NOTICE, WARNING, ERROR, CRITICAL, ALERT, EMERGENCY, FATAL, TRACE.
    Synonyms are mapped (warn->WARNING, err->ERROR, crit->CRITICAL, emerg/panic->EMERGENCY,
    severe->ERROR, informational->INFO, ...), as are the syslog numeric severities "0".."7".
    Unknown text is returned upper-cased (and stripped); None / "" / blank -> None.
    """
    if not level:
        return None
    canon = _LEVELS.get(level)
    if canon is not None:
        return canon
    if not isinstance(level, str):
        level = str(level)
    text = level.strip()
    if not text:
        return None
    return _LEVEL_SYNONYMS.get(text.lower(), text.upper())


# ---------------------------------------------------------------------------------------
# date helpers

_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    )
}
_MONTH_RE = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_CACHE_MAX = 8192
_INVALID = object()  # cache sentinel for invalid dates


def _frac_to_us(frac: str | None) -> int:
    if not frac:
        return 0
    if len(frac) >= 6:
        return int(frac[:6])
    return int(frac) * (10 ** (6 - len(frac)))


def _last_instant() -> datetime:
    """The latest time whose epoch seconds (a float) still turn back into a date: from
    9999-12-31T23:59:59.999985 on, ``dt.timestamp()`` rounds to 10000-01-01 (out of range)."""
    dt = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    while dt.timestamp() >= 253402300800.0:
        dt -= timedelta(microseconds=1)
    return dt


_LAST_INSTANT = _last_instant()


def _usable(dt: datetime | None) -> datetime | None:
    """``dt``, or None when it is too close to year 10000 to survive epoch seconds."""
    return dt if dt is None or dt <= _LAST_INSTANT else None


def _make_dt(y: int, mo: int, d: int, h: int, mi: int, s: int, us: int = 0) -> datetime | None:
    try:
        dt = datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
    return dt if y < 9999 else _usable(dt)


def _offset(tz: str | None) -> timedelta | None:
    """``Z`` / ``+hh:mm`` / ``-hhmm`` -> timedelta, None when absent/naive; raises on nonsense."""
    if not tz or tz in ("Z", "z"):
        return None
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hh = int(digits[:2])
    mm = int(digits[2:4] or 0)
    if hh > 23 or mm > 59:
        raise ValueError("bad offset")
    return timedelta(hours=hh, minutes=mm) * sign


class _DtCache(dict):
    """Per-parser cache: timestamp groups -> datetime | _INVALID; emptied when full.

    Keys are tuples whose shape tells the formats apart: syslog (int year, int month, 5 str),
    apache (month name first, 7 str), hdfs (6 str), ISO
    8601 (8 items, shared by rfc5424 and ISO syslog), zookeeper (the 23-character text).
    """

    __slots__ = ()

    def put(self, key, value):
        if len(self) >= _CACHE_MAX:
            self.clear()
        self[key] = value
        return value


# ---------------------------------------------------------------------------------------
# regexes (all applied with .match on the right-stripped line)

# RFC 3164 / BSD syslog.  Groups: 1 pri, 2 mon, 3 day, 4 h, 5 m, 6 s, 7 frac, 8 host,
# 9 tag, 10 pid; the message is the rest of the line after m.end().
# The tag ("component") is RFC 3164's TAG, read leniently: it
# runs to the first "[pid]:" or ":"+whitespace, so it may hold spaces ("syslogd 1.4.1")
# and colons not followed by whitespace, but no brackets; at most 64 characters.
_TAG = (
    r"(?:\s+((?:[^\s\[\]:]|:(?!\s))(?:[^\[\]\n:]|:(?!\s|$)){0,63})"
    r"(?:\[([^\[\]\n]*)\])?:(?=\s|$))?\s*"
)
# host: optional (a line may carry "Jun 1 00:00:00 sshd[1]: x"), must be followed by space
_HOST = r"(?:\s+([^\s\[\]]*[^\s\[\]:])(?=\s))?"
_SYSLOG_RE = re.compile(
    r"(?:<(\d{1,3})>)?"
    r"([A-Z][a-z]{2})\s+(\d{1,2})\s+(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?" + _HOST + _TAG
)
# Same, ISO 8601 / RFC 3339 timestamp (rsyslog RSYSLOG_FileFormat).  Groups: 1 pri,
# 2 Y, 3 M, 4 D, 5 h, 6 m, 7 s, 8 frac, 9 tz, 10 host, 11 tag, 12 pid
_SYSLOG_ISO_RE = re.compile(
    r"(?:<(\d{1,3})>)?"
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(Z|z|[+-]\d\d:?\d\d)?"
    + _HOST
    + _TAG
)

# RFC 5424.  Groups: 1 pri, 2 version, 3 timestamp-or-dash, 4 Y, 5 M, 6 D, 7 h, 8 m, 9 s,
# 10 frac, 11 tz, 12 host, 13 app, 14 procid, 15 msgid, 16 structured data, 17 msg
# possessive quantifiers: no backtracking on unterminated elements
_SD_ELEMENT = r'\[(?:[^\]"\\]++|"(?:[^"\\]++|\\.)*+"|\\.)*+\]'
_RFC5424_RE = re.compile(
    r"<(\d{1,3})>([1-9]\d{0,2}) "
    r"(-|(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)) "
    r"(\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) "
    r"(-|(?:" + _SD_ELEMENT + r")+)"
    r"(?: (?s:(.*)))?$",
    re.DOTALL,
)
_SD_ITEM_RE = re.compile(
    r'\[([^\s\]"=]+)((?:[^\]"\\]++|"(?:[^"\\]++|\\.)*+"|\\.)*+)\]', re.DOTALL
)
_SD_PARAM_RE = re.compile(r'([^\s="\]]+)="((?:[^"\\]++|\\.)*+)"', re.DOTALL)
_SD_UNESCAPE_RE = re.compile(r'\\(["\\\]])')

# Apache error log, 2.2 ("[level]") and 2.4 ("[module:level] [pid N:tid M]").
# Groups: 1 mon, 2 day, 3 h, 4 m, 5 s, 6 frac, 7 year, 8 module, 9 level, 10 pid, 11 tid, 12 msg
_APACHE_RE = re.compile(
    r"\[[A-Z][a-z]{2} (" + _MONTH_RE + r")\s+(\d{1,2}) "
    r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))? (\d{4})\]"
    r"\s+\[(?:([^\]\s:]*):)?([^\]\s]*)\]"
    r"(?:\s+\[pid (\d+)(?::tid (\d+))?\])?"
    r"(?:\s+|$)(?s:(.*))"
)

# HDFS (log4j "yyMMdd HHmmss pid LEVEL class: msg").
# Groups: 1 yy, 2 MM, 3 dd, 4 h, 5 m, 6 s, 7 pid, 8 level, 9 component, 10 msg
_HDFS_RE = re.compile(
    r"(\d\d)(\d\d)(\d\d)\s+(\d\d)(\d\d)(\d\d)\s+(\d+)\s+([A-Za-z]+)\s+(\S+?):(?:\s+|$)(?s:(.*))"
)

# Zookeeper (log4j "%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m").
# Groups: 1 Y, 2 M, 3 D, 4 h, 5 m, 6 s, 7 ms, 8 level, 9 bracket, 10 msg
_ZK_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)[,.](\d{3})\s+-\s+([A-Za-z]+)\s+"
    r"\[(.*?)\]\s+-(?:\s+|$)(?s:(.*))"
)

# ---------------------------------------------------------------------------------------
# JSON key mapping (lower-cased, flattened with dots)

_JSON_ROLES: dict[str, tuple[str, int]] = {}
for _role, _keys in (
    ("timestamp", ("@timestamp", "timestamp", "time", "ts", "datetime")),
    ("host", ("host", "hostname", "host.name", "host.hostname", "source_host")),
    (
        "component",
        (
            "service",
            "component",
            "app",
            "logger",
            "service.name",
            "application",
            "app_name",
            "appname",
            "logger_name",
            "log.logger",
            "program",
        ),
    ),
    ("level", ("level", "severity", "lvl", "log.level", "loglevel", "levelname", "severity_text")),
    ("pid", ("pid", "process.pid", "process_id", "procid")),
    ("message", ("message", "msg", "log", "body")),
):
    for _prio, _key in enumerate(_keys):
        _JSON_ROLES[_key] = (_role, _prio)
_JSON_MAX_DEPTH = 8

_ISO_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|z|UTC|GMT|[+-]\d\d(?::?\d\d)?)?$"
)
_EPOCH_RE = re.compile(r"-?\d+(?:\.\d+)?$")


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _replace_surrogates(r: ParsedLine) -> None:
    """Lone surrogates (from JSON escapes) -> U+FFFD, so every sink can encode the text."""

    def fix(t):
        return _SURROGATE_RE.sub("\ufffd", t) if t is not None else None

    r.message, r.host, r.component, r.pid, r.level = (
        fix(r.message), fix(r.host), fix(r.component), fix(r.pid), fix(r.level))
    if r.fields:
        r.fields = {fix(k): fix(v) for k, v in r.fields.items()}


def _json_scalar(v) -> str:
    if isinstance(v, str):
        return v
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    try:
        return orjson.dumps(v).decode()
    except Exception:  # pragma: no cover - exotic values (huge ints, NaN)
        return json.dumps(v, default=str)


def _flatten(obj: dict, prefix: str, out: list, depth: int) -> None:
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and depth < _JSON_MAX_DEPTH:
            _flatten(v, key + ".", out, depth + 1)
        else:
            out.append((key, v))


def _epoch_to_dt(x: int | float) -> datetime | None:
    """Epoch seconds, or ms / us / ns told apart by magnitude (>= 1e11 / 1e14 / 1e17).

    Goes through a float: exact to the microsecond for any date near the present."""
    try:
        x = float(x)
        ax = abs(x)
        if ax >= 1e17:
            x /= 1e9
        elif ax >= 1e14:
            x /= 1e6
        elif ax >= 1e11:
            x /= 1e3
        return _usable(datetime.fromtimestamp(x, UTC))
    except (ValueError, OverflowError, OSError):
        return None


def _parse_any_ts(v) -> datetime | None:
    """JSON timestamp value: ISO 8601 text, or epoch s/ms/us/ns (number or digit string)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        if v != v:  # NaN
            return None
        return _epoch_to_dt(v)
    if not isinstance(v, str):
        return None
    s = v.strip()
    if _EPOCH_RE.match(s):
        return _epoch_to_dt(s)
    try:  # C fast path; accepts "Z", offsets, "," fractions, basic format (3.11+)
        dt = datetime.fromisoformat(s)
    except ValueError:
        pass
    else:
        if dt.tzinfo is None:
            return _usable(dt.replace(tzinfo=UTC))
        try:
            return _usable(dt.astimezone(UTC))
        except (ValueError, OverflowError):
            return None
    m = _ISO_RE.match(s)  # what fromisoformat refuses: "... UTC", "+05", ...
    if m is None:
        return None
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    dt = _make_dt(
        int(y),
        int(mo),
        int(d),
        int(h or 0),
        int(mi or 0),
        int(sec or 0),
        _frac_to_us(frac),
    )
    if dt is None:
        return None
    if tz and tz not in ("UTC", "GMT"):
        try:
            off = _offset(tz if len(tz) > 3 else tz + "00")
        except (ValueError, IndexError):
            return None
        if off:
            try:
                dt = dt - off
            except OverflowError:
                return None
    return _usable(dt)


# ---------------------------------------------------------------------------------------
# the parser


class LineParser:
    """Parse single log lines; ``fmt=None`` detects the format per line."""

    __slots__ = (
        "fmt",
        "year",
        "max_length",
        "_last",
        "_order",
        "_by_char",
        "_cache",
        "_now",
        "_now_expiry",
        "_now_year",
        "_now_month",
    )

    def __init__(
        self, fmt: str | None = None, *, year: int | None = None, max_length: int = 65536
    ) -> None:
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(f"unknown log format {fmt!r}; expected one of {FORMATS}")
        if max_length < 1:
            raise ValueError("max_length must be >= 1")
        self.fmt = fmt
        self.year = year
        self.max_length = max_length
        self._cache = _DtCache()
        self._now: float | None = None  # arrival of the line being parsed (parse's ``now``)
        self._now_expiry = 0.0
        self._now_year = 1970
        self._now_month = 1
        table = {
            "rfc5424": self._parse_rfc5424,
            "syslog": self._parse_syslog,
            "apache": self._parse_apache,
            "hdfs": self._parse_hdfs,
            "zookeeper": self._parse_zookeeper,
            "json": self._parse_json,
        }
        if fmt is not None:
            self._order = (table[fmt],)
            self._by_char = None
        else:
            # specific before generic
            self._order = tuple(table[n] for n in _DETECTION_ORDER)
            lt = ("rfc5424", "syslog")
            by_char: dict[str, tuple] = {"<": lt, "[": ("apache",), "{": ("json",)}
            for c in "0123456789":
                by_char[c] = ("hdfs", "zookeeper", "syslog")
            for c in "ADFJMNOS":  # month initials
                by_char[c] = ("syslog",)
            self._by_char = {c: tuple(table[n] for n in names) for c, names in by_char.items()}
        self._last = self._order[0]

    # -- pickling (model checkpoints) ---------------------------------------------------
    # A checkpoint keeps the parser's settings only: its tables are bound methods, which a
    # pickle names, so a format removed from this module would make every older checkpoint
    # unloadable (and the model be started afresh).

    def __reduce__(self):
        return (_restore_parser, (self.fmt, self.year, self.max_length))

    def __setstate__(self, state) -> None:
        # checkpoints written before __reduce__: (None, {slot: value}), tables included
        slots = state[1] if isinstance(state, tuple) else state
        fmt = slots.get("fmt")
        self.__init__(fmt if fmt in FORMATS else None, year=slots.get("year"),
                      max_length=slots.get("max_length", 65536))

    def __getattr__(self, name: str):
        # only reached when a name is missing: an older checkpoint's table naming the parser
        # of a format since removed; it matches nothing, and __setstate__ rebuilds the tables
        if name.startswith("_parse_"):
            return _no_match
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- public -----------------------------------------------------------------------

    def parse(self, line: str, now: float | None = None) -> ParsedLine:
        """``now``: when the line arrived (epoch seconds), which places a timestamp without a
        year (classic syslog) in a year: the pipeline always passes the line's arrival, so a
        line gets the same time however late it is processed (a replay after a crash, a year
        later); without it, the wall clock (tools that parse a line on the spot)."""
        self._now = now
        try:
            return self._parse(line)
        except Exception:  # never raise: degrade to a raw line
            try:
                text = line if isinstance(line, str) else str(line)
                truncated = len(text) > self.max_length
                if truncated:
                    text = text[: self.max_length]
                return ParsedLine(message=text.rstrip(), truncated=truncated)
            except Exception:
                return ParsedLine(message="")

    # -- internals --------------------------------------------------------------------

    def _parse(self, line) -> ParsedLine:
        if line.__class__ is not str:
            if isinstance(line, (bytes, bytearray, memoryview)):
                line = bytes(line).decode("utf-8", "replace")
            elif line is None:
                line = ""
            else:
                line = str(line)
        truncated = False
        if len(line) > self.max_length:
            line = line[: self.max_length]
            truncated = True
        s = line.rstrip()
        if s and s[0].isspace():
            s = s.lstrip()
        if s:
            last = self._last
            r = last(s)
            if r is None:
                if self._by_char is None:
                    cands = self._order
                else:
                    cands = self._by_char.get(s[0], ())
                for p in cands:
                    if p is not last:
                        r = p(s)
                        if r is not None:
                            self._last = p
                            break
            if r is not None:
                if truncated:
                    r.truncated = True
                return r
        return ParsedLine(message=line.rstrip(), truncated=truncated)

    def _default_year(self, month: int) -> int:
        now = self._now
        if now is None:
            now = time.time()
        if not (self._now_expiry - 60.0 <= now < self._now_expiry):  # another minute
            t = time.gmtime(now)
            self._now_year, self._now_month = t.tm_year, t.tm_mon
            self._now_expiry = now - now % 60.0 + 60.0
        if month > self._now_month + 1:
            return self._now_year - 1
        return self._now_year

    # RFC 3164 -------------------------------------------------------------------------

    def _parse_syslog(self, s: str) -> ParsedLine | None:
        m = _SYSLOG_RE.match(s)
        if m is None:
            c = s[0]
            if c.isdigit() or c == "<":
                return self._parse_syslog_iso(s)
            return None
        pri, mon, day, hh, mi, ss, frac, host, tag, pid = m.groups()
        month = _MONTHS.get(mon)
        if month is None:
            return None
        fields: dict[str, str] = {}
        level = None
        if pri is not None:
            p = int(pri)
            if p > 191:
                return None
            fields["facility"] = str(p >> 3)
            fields["severity"] = str(p & 7)
            level = _SYSLOG_SEVERITIES[p & 7]
        year = self.year
        if year is None:
            now = self._now  # _default_year's memo of this minute, inlined (once a line)
            if now is not None and self._now_expiry - 60.0 <= now < self._now_expiry:
                year = self._now_year - 1 if month > self._now_month + 1 else self._now_year
            else:
                year = self._default_year(month)
        key = (year, month, day, hh, mi, ss, frac)
        cache = self._cache
        ts = cache.get(key)
        if ts is None:
            ts = cache.put(
                key,
                _make_dt(year, month, int(day), int(hh), int(mi), int(ss), _frac_to_us(frac))
                or _INVALID,
            )
        if ts is _INVALID:
            ts = None
            fields["invalid_timestamp"] = s[m.start(2) : m.end(7 if frac else 6)]
        return ParsedLine(
            s[m.end() :], ts, host, tag, pid or None, level, "syslog", True, False, fields
        )

    def _parse_syslog_iso(self, s: str) -> ParsedLine | None:
        m = _SYSLOG_ISO_RE.match(s)
        if m is None:
            return None
        pri, y, mo, d, hh, mi, ss, frac, tz, host, tag, pid = m.groups()
        fields: dict[str, str] = {}
        level = None
        if pri is not None:
            p = int(pri)
            if p > 191:
                return None
            fields["facility"] = str(p >> 3)
            fields["severity"] = str(p & 7)
            level = _SYSLOG_SEVERITIES[p & 7]
        ts = self._iso_dt(m, 2, y, mo, d, hh, mi, ss, frac, tz, fields)
        return ParsedLine(
            s[m.end() :], ts, host, tag, pid or None, level, "syslog", True, False, fields
        )

    def _iso_dt(self, m, first_group, y, mo, d, hh, mi, ss, frac, tz, fields) -> datetime | None:
        key = m.group(*range(first_group, first_group + 8))  # Y M D h m s frac tz
        cache = self._cache
        ts = cache.get(key)
        if ts is None:
            ts = _make_dt(int(y), int(mo), int(d), int(hh), int(mi), int(ss), _frac_to_us(frac))
            if ts is not None and tz:
                try:
                    off = _offset(tz)
                    if off:
                        ts = _usable(ts - off)
                except (ValueError, OverflowError):
                    ts = None
            ts = cache.put(key, ts or _INVALID)
        if ts is _INVALID:
            last = first_group + 7
            while m.start(last) < 0:
                last -= 1
            fields["invalid_timestamp"] = m.string[m.start(first_group) : m.end(last)]
            return None
        return ts

    # RFC 5424 -------------------------------------------------------------------------

    def _parse_rfc5424(self, s: str) -> ParsedLine | None:
        m = _RFC5424_RE.match(s)
        if m is None:
            return None
        p = int(m.group(1))
        if p > 191:
            return None
        (tstext, y, mo, d, hh, mi, ss, frac, tz) = m.group(3, 4, 5, 6, 7, 8, 9, 10, 11)
        host, app, procid, msgid, sd, msg = m.group(12, 13, 14, 15, 16, 17)
        fields: dict[str, str] = {
            "facility": str(p >> 3),
            "severity": str(p & 7),
            "version": m.group(2),
        }
        ts = None
        if tstext != "-":
            ts = self._iso_dt(m, 4, y, mo, d, hh, mi, ss, frac, tz, fields)
        if msgid != "-":
            fields["msgid"] = msgid
        if sd != "-":
            for item in _SD_ITEM_RE.finditer(sd):
                sd_id, body = item.group(1, 2)
                params = _SD_PARAM_RE.findall(body)
                if not params:
                    fields[f"sd.{sd_id}"] = ""
                for name, value in params:
                    if "\\" in value:
                        value = _SD_UNESCAPE_RE.sub(r"\1", value)
                    k = f"sd.{sd_id}.{name}"
                    old = fields.get(k)
                    fields[k] = value if old is None else f"{old},{value}"
        if msg is None:
            msg = ""
        elif msg.startswith("\ufeff"):
            msg = msg[1:]
        return ParsedLine(
            msg.strip(),
            ts,
            None if host == "-" else host,
            None if app == "-" else app,
            None if procid == "-" else procid,
            _SYSLOG_SEVERITIES[p & 7],
            "rfc5424",
            True,
            False,
            fields,
        )

    # Apache ---------------------------------------------------------------------------

    def _parse_apache(self, s: str) -> ParsedLine | None:
        m = _APACHE_RE.match(s)
        if m is None:
            return None
        mon, day, hh, mi, ss, frac, year, module, level, pid, tid, msg = m.groups()
        fields: dict[str, str] = {}
        key = m.group(1, 2, 3, 4, 5, 6, 7)
        cache = self._cache
        ts = cache.get(key)
        if ts is None:
            ts = cache.put(
                key,
                _make_dt(
                    int(year), _MONTHS[mon], int(day), int(hh), int(mi), int(ss), _frac_to_us(frac)
                )
                or _INVALID,
            )
        if ts is _INVALID:
            ts = None
            fields["invalid_timestamp"] = s[m.start(1) - 4 : m.end(7)]
        if tid:
            fields["tid"] = tid
        return ParsedLine(
            msg.rstrip(), ts, None, module or None, pid, level or None, "apache", True, False,
            fields,
        )

    # HDFS -----------------------------------------------------------------------------

    def _parse_hdfs(self, s: str) -> ParsedLine | None:
        m = _HDFS_RE.match(s)
        if m is None:
            return None
        yy, mo, d, hh, mi, ss, pid, level, comp, msg = m.groups()
        fields: dict[str, str] = {}
        key = (yy, mo, d, hh, mi, ss)
        cache = self._cache
        ts = cache.get(key)
        if ts is None:
            y = int(yy)
            y += 2000 if y < 69 else 1900  # same pivot as strptime's %y
            ts = cache.put(
                key, _make_dt(y, int(mo), int(d), int(hh), int(mi), int(ss)) or _INVALID
            )
        if ts is _INVALID:
            ts = None
            fields["invalid_timestamp"] = s[: m.end(6)]
        return ParsedLine(msg.rstrip(), ts, None, comp, pid, level, "hdfs", True, False, fields)

    # Zookeeper ------------------------------------------------------------------------

    def _parse_zookeeper(self, s: str) -> ParsedLine | None:
        m = _ZK_RE.match(s)
        if m is None:
            return None
        y, mo, d, hh, mi, ss, ms, level, bracket, msg = m.groups()
        fields: dict[str, str] = {}
        key = s[:23]
        cache = self._cache
        ts = cache.get(key)
        if ts is None:
            ts = cache.put(
                key,
                _make_dt(int(y), int(mo), int(d), int(hh), int(mi), int(ss), int(ms) * 1000)
                or _INVALID,
            )
        if ts is _INVALID:
            ts = None
            fields["invalid_timestamp"] = s[:23]
        # the layout's own fields, "%t:%C{1}@%L": the class is the component, the thread is
        # before the last ':' before the last '@', the source line after it
        component = bracket
        head, at, line_no = bracket.rpartition("@")
        if at:
            thread, colon, cls = head.rpartition(":")
            if colon:
                component = cls
                fields["thread"] = thread
                fields["line"] = line_no
        return ParsedLine(
            msg.rstrip(), ts, None, component, None, level, "zookeeper", True, False, fields
        )

    # JSON -----------------------------------------------------------------------------

    def _parse_json(self, s: str) -> ParsedLine | None:
        if s[0] != "{" or s[-1] != "}":
            return None
        lenient = False
        try:
            obj = orjson.loads(s)
        except orjson.JSONDecodeError:
            try:  # big integers, NaN, lone surrogates: the stdlib is more lenient
                obj = json.loads(s)
            except (ValueError, RecursionError):
                return None
            lenient = True
        if not isinstance(obj, dict):
            return None
        items = obj.items()
        for v in obj.values():
            if v.__class__ is dict:
                items = []
                _flatten(obj, "", items, 0)
                break
        roles = _JSON_ROLES
        best: dict[str, tuple[int, str, object]] = {}  # role -> (priority, key, value)
        fields: dict[str, str] = {}
        for key, value in items:
            hit = roles.get(key)
            if hit is None and not key.islower():
                hit = roles.get(key.lower())
            if hit is not None and value.__class__ is not list and value.__class__ is not dict:
                role, prio = hit
                cur = best.get(role)
                if cur is None or prio < cur[0]:
                    if cur is not None:  # demoted to an ordinary field
                        fields[cur[1]] = _json_scalar(cur[2])
                    best[role] = (prio, key, value)
                    continue
            fields[key] = _json_scalar(value)

        def text(role: str) -> str | None:
            hit = best.get(role)
            if hit is None or hit[2] is None:
                return None
            t = _json_scalar(hit[2])
            return t if t != "" else None

        ts = None
        hit = best.get("timestamp")
        if hit is not None:
            ts = _parse_any_ts(hit[2])
            if ts is None:  # keep what we could not read
                fields[hit[1]] = _json_scalar(hit[2])
        hit = best.get("message")
        if hit is not None:
            message = _json_scalar(hit[2]).rstrip() if hit[2] is not None else ""
        else:
            message = s  # no message key: the event itself is the message
        truncated = False
        # a number may render longer than its text ("1e15" -> "1000000000000000.0")
        if len(message) > self.max_length:
            message = message[: self.max_length]
            truncated = True
        r = ParsedLine(
            message,
            ts,
            text("host"),
            text("component"),
            text("pid"),
            text("level"),
            "json",
            True,
            truncated,
            fields,
        )
        if lenient:  # json.loads turns "\\ud800" escapes into lone surrogates: not UTF-8
            _replace_surrogates(r)
        return r


# ---------------------------------------------------------------------------------------
# convenience

_PARSERS: dict[tuple[str | None, int | None], LineParser] = {}


def parse_line(line: str, fmt: str | None = None, *, year: int | None = None) -> ParsedLine:
    """Parse one line with a cached module-level :class:`LineParser` per ``(fmt, year)``."""
    parser = _PARSERS.get((fmt, year))
    if parser is None:
        parser = _PARSERS.setdefault((fmt, year), LineParser(fmt, year=year))
    return parser.parse(line)


def _restore_parser(fmt: str | None, year: int | None, max_length: int) -> LineParser:
    """A parser from a checkpoint: its settings (a format no longer known: detection)."""
    return LineParser(fmt if fmt in FORMATS else None, year=year, max_length=max_length)


def _no_match(s: str) -> None:
    """A removed format's parser in an older checkpoint: matches no line."""
    return None
