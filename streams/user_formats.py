"""User-declared log formats: a grok pattern or a regex with named groups, per source.

Pure: no clock, no I/O (the rules come from settings as data). A user declares a format when
inference alone does not do what they want, in a syntax they already know:

* **grok** (Logstash/Elastic): ``%{TIMESTAMP_ISO8601:timestamp} %{LOGLEVEL:level} %{GREEDYDATA:message}``.
  The pattern library is Logstash's, as the ``pygrok`` package ships it (``grok-patterns``,
  ``java``, ``linux-syslog``, ``haproxy``, ...): a maintained vocabulary people know, which is
  why it is not rewritten here. A pattern is searched in the line, as grok does (anchor it with
  ``^`` if it must start the line).
* **regex** with named groups: ``^(?P<timestamp>\\S+ \\S+) (?P<level>\\w+) (?P<message>.*)$``.

Named captures ``timestamp``, ``level``, ``host``, ``component``, ``pid`` and ``message`` fill
the event's fields of those names; any other named capture goes to ``fields``. Without a
``message`` capture, the text after the match is the message. A line the format does not match
falls through to the built-in formats and header inference (and, failing those, is stored raw).

Which lines a format applies to: ``match`` selects on the event's ``host``, its shipped
``file`` path (``smartlogs ship`` and ``replay`` send it), its ``source`` (``http``, ``file``,
``syslog_tcp``, ``loki``, ...) with shell-style globs; a rule without ``match`` applies to every
line. The first rule that selects a line and matches it wins.

A pattern that does not compile is refused when the settings are read (``smartlogs up`` then
exits with the file, the rule, the pattern and the error).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

__all__ = ["FormatError", "FormatRule", "UserFormat", "UserFormats", "compile_format",
           "rules_from_data", "rules_from_yaml_text", "is_pattern", "parse_time"]

UTC = timezone.utc
KNOWN = ("timestamp", "level", "host", "component", "pid", "message")
SELECTORS = ("host", "file", "source")


class FormatError(ValueError):
    """A declared format that cannot be used; the message names the pattern and the reason."""


def is_pattern(text: str) -> bool:
    """Whether a ``SMARTLOGS_LOG_FORMAT`` value is a pattern rather than a built-in name.

    >>> is_pattern("syslog"), is_pattern("%{LOGLEVEL:level} %{GREEDYDATA:message}")
    (False, True)
    """
    return "%{" in text or "(?P<" in text


def _grok_to_regex(pattern: str) -> str:
    try:
        from pygrok import Grok
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise FormatError("grok patterns need the pygrok package") from exc
    try:
        return Grok(pattern).regex_obj.pattern
    except KeyError as exc:
        raise FormatError(f"unknown grok pattern %{{{exc.args[0]}}} in {pattern!r}") from None
    except Exception as exc:  # noqa: BLE001 - regex's error; its position is in the expansion
        why = re.sub(r" at position \d+.*", "", str(exc))
        raise FormatError(f"grok pattern {pattern!r} does not compile: {why}") from None


@dataclass(frozen=True)
class UserFormat:
    """One declared format, compiled once."""

    name: str
    pattern: str
    kind: str  # "grok" or "regex"
    _rx: object = field(repr=False, compare=False, default=None)

    def parse(self, line: str, *, year: int | None = None, now: float | None = None):
        """The line's fields as a ``ParsedLine`` (``format="user:<name>"``), or None when the
        pattern does not match it.

        >>> f = compile_format("%{TIMESTAMP_ISO8601:timestamp} %{LOGLEVEL:level} %{GREEDYDATA:message}")
        >>> p = f.parse("2024-05-01 10:00:00,250 WARN disk almost full")
        >>> (p.timestamp.isoformat(), p.level, p.message, p.format)
        ('2024-05-01T10:00:00.250000+00:00', 'WARN', 'disk almost full', 'user:custom')
        """
        from streams.parsing import ParsedLine

        m = self._rx.search(line)
        if m is None:
            return None
        g = {k: v for k, v in m.groupdict().items() if v is not None}
        message = g.pop("message", None)
        if message is None:
            message = line[m.end():].strip()
        ts_text = g.pop("timestamp", None)
        fields = {k: v for k, v in g.items() if k not in KNOWN}
        ts = parse_time(ts_text, year=year, now=now) if ts_text else None
        if ts_text and ts is None:
            fields["unparsed_timestamp"] = ts_text
        return ParsedLine(message=message.rstrip(), timestamp=ts, host=g.get("host"),
                          component=g.get("component"), pid=g.get("pid"), level=g.get("level"),
                          format=f"user:{self.name}", ok=True, fields=fields)


def compile_format(pattern: str, name: str = "custom") -> UserFormat:
    """A grok pattern (it has ``%{``) or a regex with named groups → a :class:`UserFormat`;
    :class:`FormatError` naming the pattern when it does not compile or captures nothing."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise FormatError(f"format {name!r}: the pattern is empty")
    kind = "grok" if "%{" in pattern else "regex"
    source = _grok_to_regex(pattern) if kind == "grok" else pattern
    try:
        import regex  # grok's library uses atomic groups and possessive quantifiers

        rx = regex.compile(source)
    except Exception as exc:  # noqa: BLE001 - regex.error with its position
        why = str(exc)
        if kind == "grok":  # a position in the expanded regex would mislead: the reason alone
            why = re.sub(r" at position \d+.*", "", why)
        raise FormatError(f"format {name!r}: pattern {pattern!r} does not compile: {why}") from None
    if not rx.groupindex:
        raise FormatError(f"format {name!r}: pattern {pattern!r} names no field "
                          "(use %{PATTERN:name} or (?P<name>...))")
    return UserFormat(name, pattern, kind, rx)


@dataclass(frozen=True)
class FormatRule:
    format: UserFormat
    match: tuple[tuple[str, str], ...] = ()  # (selector, glob) pairs, all must hold

    def selects(self, item: dict) -> bool:
        for key, glob in self.match:
            value = item.get(key)
            if value is None or not fnmatch.fnmatchcase(str(value), glob):
                return False
        return True


class UserFormats:
    """The declared rules, tried in order for the lines they select."""

    def __init__(self, rules: tuple[FormatRule, ...] = ()):
        self.rules = tuple(rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def parse(self, line: str, item: dict, *, year: int | None = None):
        for rule in self.rules:
            if rule.selects(item):
                p = rule.format.parse(line, year=year, now=item.get("received"))
                if p is not None:
                    return p
        return None

    def __getstate__(self):  # compiled regexes are rebuilt from their text (checkpoints)
        return [(r.format.name, r.format.pattern, r.match) for r in self.rules]

    def __setstate__(self, state) -> None:
        self.rules = tuple(FormatRule(compile_format(p, n), m) for n, p, m in state)


def rules_from_data(data, where: str = "formats") -> tuple[FormatRule, ...]:
    """``[{"name":…, "grok"|"regex": …, "match": {"host"|"file"|"source": glob}}, …]`` → rules,
    every error naming ``where``, the rule and what is wrong."""
    if isinstance(data, dict) and "formats" in data:
        data = data["formats"]
    if not isinstance(data, list):
        raise FormatError(f"{where}: expected a list of formats under 'formats'")
    rules = []
    for i, spec in enumerate(data):
        label = f"{where}: format #{i + 1}"
        if not isinstance(spec, dict):
            raise FormatError(f"{label}: expected a mapping with 'grok' or 'regex'")
        name = str(spec.get("name") or f"format{i + 1}")
        label = f"{where}: format #{i + 1} ({name})"
        unknown = set(spec) - {"name", "grok", "regex", "match"}
        if unknown:
            raise FormatError(f"{label}: unknown key(s) {sorted(unknown)}; use name, grok or regex, match")
        patterns = [spec[k] for k in ("grok", "regex") if k in spec]
        if len(patterns) != 1:
            raise FormatError(f"{label}: give exactly one of 'grok' or 'regex'")
        match = spec.get("match") or {}
        if not isinstance(match, dict) or set(match) - set(SELECTORS):
            raise FormatError(f"{label}: 'match' selects on {', '.join(SELECTORS)} (globs)")
        try:
            fmt = compile_format(patterns[0], name)
        except FormatError as exc:
            raise FormatError(f"{where}: format #{i + 1}: {exc}") from None
        rules.append(FormatRule(fmt, tuple(sorted((k, str(v)) for k, v in match.items()))))
    return tuple(rules)


def rules_from_yaml_text(text: str, where: str) -> tuple[FormatRule, ...]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormatError(f"{where}: not valid YAML: {exc}") from None
    return rules_from_data(data or [], where)


# -- timestamps of declared formats ---------------------------------------------------------
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_SYSLOG = re.compile(r"(?P<mon>[A-Z][a-z]{2})\s+(?P<d>\d{1,2})\s+(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
                     r"(?:[.,](?P<f>\d{1,6}))?(?:\s+(?P<y>\d{4}))?")


def parse_time(text: str, *, year: int | None = None, now: float | None = None) -> datetime | None:
    """A captured timestamp → aware UTC datetime: ISO 8601 (``T`` or space, ``,``/``.``
    fractions, offsets), epoch seconds/milliseconds, syslog ``MMM d HH:mm:ss`` (year: ``year``,
    else the year of ``now``, the line's arrival), Apache ``dd/MMM/yyyy:HH:mm:ss ±zzzz``; None when it is none of them.

    >>> parse_time("01/May/2024:10:00:00 +0200").isoformat()
    '2024-05-01T08:00:00+00:00'
    """
    s = text.strip().strip("[]")
    if s.isdigit() and len(s) in (10, 13):
        return datetime.fromtimestamp(int(s) / (1000 if len(s) == 13 else 1), UTC)
    try:
        dt = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
        return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt).astimezone(UTC)
    except ValueError:
        pass
    try:
        return datetime.strptime(s, "%d/%b/%Y:%H:%M:%S %z").astimezone(UTC)
    except ValueError:
        pass
    m = _SYSLOG.fullmatch(s)
    if m and m["mon"] in _MONTHS:
        y = int(m["y"]) if m["y"] else (year or datetime.fromtimestamp(now or 0, UTC).year)
        try:
            return datetime(y, _MONTHS[m["mon"]], int(m["d"]), int(m["h"]), int(m["m"]), int(m["s"]),
                            int((m["f"] or "0").ljust(6, "0")), tzinfo=UTC)
        except ValueError:
            return None
    return None
