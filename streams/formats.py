"""User-declared log formats: grok patterns or regexes with named groups (pure: no I/O).

A user who knows a source's format declares it instead of letting SmartLogs learn it
(:mod:`streams.headers`). Two syntaxes people already use:

* **grok** (Logstash / Elastic ingest): ``%{SYNTAX:field}`` or ``%{SYNTAX}``, e.g.
  ``%{TIMESTAMP_ISO8601:timestamp} %{LOGLEVEL:level} \\[%{DATA:thread}\\] %{JAVACLASS:logger}: %{GREEDYDATA:message}``.
  ``GROK_PATTERNS`` holds the common core patterns (a subset of Logstash's
  ``grok-patterns`` file, same names, same meaning);
* a **regex with named groups**, Python ``(?P<name>...)`` or PCRE ``(?<name>...)``.

Field names give the roles: ``timestamp`` (also ``time``, ``ts``, ``@timestamp``,
``datetime``), ``level`` (``loglevel``, ``severity``, ``log.level``), ``host``
(``hostname``, ``logsource``), ``component`` (``program``, ``logger``, ``class``,
``service``, ``app``), ``pid`` (``process.pid``), ``message`` (``msg``); every other named
field goes into ``fields``. Without a ``message`` field the message is the text after the
match. The timestamp text is read by the same timestamp families as learned headers
(``streams.headers.TS_FAMILIES``), ISO 8601, epoch, or ``dd/MMM/yyyy:HH:mm:ss Z``
(``HTTPDATE``); one it cannot read is kept in ``fields.invalid_timestamp``.

A pattern that does not compile raises :class:`FormatError` naming the pattern and the
error, so a service refuses to start with it (``smartlogs.settings`` checks at load).

Why hand-written: the Python grok packages on PyPI are unmaintained (last releases 2016
and 2021) and pull in the ``regex`` module; expanding ``%{...}`` is a dozen lines over
``re``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from fnmatch import fnmatchcase

from streams.headers import TS_FAMILIES, _timestamp
from streams.parsing import ParsedLine, _parse_any_ts

__all__ = ["FormatError", "GROK_PATTERNS", "UserFormat", "UserFormats"]

# a subset of Logstash's core grok-patterns, same names and meaning
GROK_PATTERNS: dict[str, str] = {
    "USERNAME": r"[a-zA-Z0-9._-]+",
    "USER": r"%{USERNAME}",
    "INT": r"(?:[+-]?(?:[0-9]+))",
    "BASE10NUM": r"(?:[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+))",
    "NUMBER": r"(?:%{BASE10NUM})",
    "POSINT": r"\b(?:[1-9][0-9]*)\b",
    "NONNEGINT": r"\b(?:[0-9]+)\b",
    "WORD": r"\b\w+\b",
    "NOTSPACE": r"\S+",
    "SPACE": r"\s*",
    "DATA": r".*?",
    "GREEDYDATA": r".*",
    "QUOTEDSTRING": r'(?:"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')',
    "UUID": r"[A-Fa-f0-9]{8}-(?:[A-Fa-f0-9]{4}-){3}[A-Fa-f0-9]{12}",
    "IPV4": r"(?<![0-9])(?:(?:25[0-5]|2[0-4][0-9]|[0-1]?[0-9]{1,2})[.](?:25[0-5]|2[0-4][0-9]|"
            r"[0-1]?[0-9]{1,2})[.](?:25[0-5]|2[0-4][0-9]|[0-1]?[0-9]{1,2})[.](?:25[0-5]|"
            r"2[0-4][0-9]|[0-1]?[0-9]{1,2}))(?![0-9])",
    "IPV6": r"[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+",
    "IP": r"(?:%{IPV6}|%{IPV4})",
    "HOSTNAME": r"\b(?:[0-9A-Za-z][0-9A-Za-z-]{0,62})(?:\.(?:[0-9A-Za-z][0-9A-Za-z-]{0,62}))*"
                r"(?:\.?|\b)",
    "IPORHOST": r"(?:%{IP}|%{HOSTNAME})",
    "HOSTPORT": r"%{IPORHOST}:%{POSINT}",
    "PATH": r"(?:/[^\s]*)+",
    "URIPATHPARAM": r"\S+",
    "JAVACLASS": r"(?:[a-zA-Z$_][a-zA-Z$_0-9]*\.)*[a-zA-Z$_][a-zA-Z$_0-9]*",
    "LOGLEVEL": r"(?:[Aa]lert|ALERT|[Tt]race|TRACE|[Dd]ebug|DEBUG|[Nn]otice|NOTICE|[Ii]nfo|"
                r"INFO|[Ww]arn?(?:ing)?|WARN?(?:ING)?|[Ee]rr?(?:or)?|ERR?(?:OR)?|[Cc]rit?(?:ical)?|"
                r"CRIT?(?:ICAL)?|[Ff]atal|FATAL|[Ss]evere|SEVERE|EMERG(?:ENCY)?|[Ee]merg(?:ency)?)",
    "MONTH": r"\b(?:[Jj]an(?:uary)?|[Ff]eb(?:ruary)?|[Mm]ar(?:ch)?|[Aa]pr(?:il)?|[Mm]ay|"
             r"[Jj]un(?:e)?|[Jj]ul(?:y)?|[Aa]ug(?:ust)?|[Ss]ep(?:tember)?|[Oo]ct(?:ober)?|"
             r"[Nn]ov(?:ember)?|[Dd]ec(?:ember)?)\b",
    "MONTHNUM": r"(?:0?[1-9]|1[0-2])",
    "MONTHDAY": r"(?:(?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9])",
    "DAY": r"(?:Mon(?:day)?|Tue(?:sday)?|Wed(?:nesday)?|Thu(?:rsday)?|Fri(?:day)?|"
           r"Sat(?:urday)?|Sun(?:day)?)",
    "YEAR": r"(?:\d\d){1,2}",
    "HOUR": r"(?:2[0123]|[01]?[0-9])",
    "MINUTE": r"(?:[0-5][0-9])",
    "SECOND": r"(?:(?:[0-5]?[0-9]|60)(?:[:.,][0-9]+)?)",
    "TIME": r"%{HOUR}:%{MINUTE}(?::%{SECOND})(?![0-9])",
    "ISO8601_TIMEZONE": r"(?:Z|[+-]%{HOUR}(?::?%{MINUTE}))",
    "TIMESTAMP_ISO8601": r"%{YEAR}-%{MONTHNUM}-%{MONTHDAY}[T ]%{HOUR}:?%{MINUTE}(?::?%{SECOND})?"
                         r"%{ISO8601_TIMEZONE}?",
    "SYSLOGTIMESTAMP": r"%{MONTH} +%{MONTHDAY} %{TIME}",
    "HTTPDATE": r"%{MONTHDAY}/%{MONTH}/%{YEAR}:%{TIME} %{INT}",
    "SYSLOGPROG": r"%{PROG:program}(?:\[%{POSINT:pid}\])?",
    "PROG": r"[\x21-\x5a\x5c\x5e-\x7e]+",
}

_GROK = re.compile(r"%\{(\w+)(?::([\w.@-]+))?(?::\w+)?\}")
_PCRE_NAME = re.compile(r"\(\?<([A-Za-z_@][\w.@-]*)>")
_PY_NAME = re.compile(r"\(\?P<([^>]+)>")
_ROLES = {
    "timestamp": "timestamp", "time": "timestamp", "ts": "timestamp", "@timestamp": "timestamp",
    "datetime": "timestamp", "level": "level", "loglevel": "level", "severity": "level",
    "log.level": "level", "host": "host", "hostname": "host", "logsource": "host",
    "component": "component", "program": "component", "logger": "component",
    "class": "component", "service": "component", "app": "component", "pid": "pid",
    "process.pid": "pid", "message": "message", "msg": "message",
}
_HTTPDATE = re.compile(r"(\d{1,2})/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d)(?:\s+([+-]\d{4}))?$")
_TS_FULL = [re.compile(rx + r"$") for rx, _rank in TS_FAMILIES.values()]


class FormatError(ValueError):
    """A user pattern that cannot be used; the message names the pattern and the error."""

    def __init__(self, pattern: str, error: str):
        super().__init__(f"log format pattern {pattern!r} does not compile: {error}")
        self.pattern = pattern
        self.error = error


def _expand(pattern: str, depth: int = 0) -> str:
    if depth > 20:
        raise ValueError("grok patterns nest too deep (a pattern that names itself?)")

    def one(m: re.Match) -> str:
        syntax, name = m.group(1), m.group(2)
        body = GROK_PATTERNS.get(syntax)
        if body is None:
            raise ValueError(f"unknown grok pattern %{{{syntax}}}")
        body = _expand(body, depth + 1)
        return f"(?P<{name}>{body})" if name else f"(?:{body})"

    return _GROK.sub(one, pattern)


class UserFormat:
    """One declared pattern, compiled; ``parse`` returns None for a line it does not match."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        try:
            rx = _PCRE_NAME.sub(lambda m: f"(?P<{m.group(1)}>", _expand(pattern))
            names: dict[str, str] = {}

            def safe(m: re.Match) -> str:  # field names like log.level are not group names
                name = m.group(1)
                key = re.sub(r"\W", "_", name)
                if not key or key[0].isdigit():
                    key = "_" + key
                while key in names and names[key] != name:
                    key += "_"
                names[key] = name
                return f"(?P<{key}>"

            rx = _PY_NAME.sub(safe, rx)
            self.regex = re.compile(rx, re.DOTALL)
        except (re.error, ValueError, RecursionError) as exc:
            raise FormatError(pattern, str(exc)) from None
        if not self.regex.groupindex:
            raise FormatError(pattern, "it names no field: use %{SYNTAX:field} or (?P<field>...)")
        self.names = names

    def __reduce__(self):  # pickled with the pipeline: recompiled from the pattern
        return (UserFormat, (self.pattern,))

    def parse(self, line: str, *, year: int | None = None, now: float | None = None
              ) -> ParsedLine | None:
        s = line.rstrip()
        m = self.regex.match(s)
        if m is None:
            return None
        roles: dict[str, str] = {}
        fields: dict[str, str] = {}
        for key, value in m.groupdict().items():
            if value is None:
                continue
            name = self.names.get(key, key)
            role = _ROLES.get(name.lower())
            if role is not None and role not in roles:
                roles[role] = value
            else:
                fields[name] = value
        ts = None
        text = roles.get("timestamp")
        if text is not None:
            ts = read_timestamp(text, year=year, now=now)
            if ts is None:
                fields["invalid_timestamp"] = text
        message = roles.get("message")
        if message is None:
            message = s[m.end():]
        return ParsedLine(message.strip(), ts, roles.get("host"), roles.get("component"),
                          roles.get("pid"), roles.get("level"), "user", True, False, fields)


def read_timestamp(text: str, *, year: int | None = None, now: float | None = None
                   ) -> datetime | None:
    """A timestamp's text: a header timestamp family, ISO 8601, epoch, or HTTPDATE."""
    t = text.strip().strip("[]")
    for rx in _TS_FULL:
        m = rx.match(t)
        if m is not None:
            return _timestamp(m.groupdict(), year, now)
    m = _HTTPDATE.match(t)
    if m is not None:
        try:
            dt = datetime.strptime(" ".join(x for x in m.groups() if x) if m.group(7)
                                   else " ".join(m.groups()[:6]),
                                   "%d %b %Y %H %M %S %z" if m.group(7) else "%d %b %Y %H %M %S")
        except ValueError:
            return None
        return dt.astimezone(timezone.utc) if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return _parse_any_ts(t)


class UserFormats:
    """Declared formats chosen per source: ``(glob, pattern)`` pairs, the first glob that
    matches the source's name (a stream, a receiver, a transport) or the line's host wins;
    ``*`` applies to every source."""

    def __init__(self, pairs: list[tuple[str, str]] | tuple = ()):
        self.pairs = tuple(pairs)
        self.formats = [(glob, UserFormat(p)) for glob, p in self.pairs]
        self._chosen: dict[str, UserFormat | None] = {}

    def __bool__(self) -> bool:
        return bool(self.formats)

    def __reduce__(self):
        return (UserFormats, (self.pairs,))

    def for_source(self, source: str, host: str | None = None) -> UserFormat | None:
        key = source if host is None else f"{source}\0{host}"
        hit = self._chosen.get(key, False)
        if hit is False:
            hit = next((f for glob, f in self.formats
                        if fnmatchcase(source, glob) or (host is not None and fnmatchcase(host, glob))),
                       None)
            if len(self._chosen) > 4096:
                self._chosen.clear()
            self._chosen[key] = hit
        return hit
