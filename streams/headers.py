"""Header inference: learn a source's line header from its own lines (pure: no clock, no I/O).

A log line is a header followed by a free-text message. Instead of one regex per known
application, the header is described by a sequence of generic token classes (a *layout*):

    ts        a timestamp of one family (below), possibly [bracketed]
    level     a level word (INFO, warn, Error, E, ...), possibly [bracketed]
    int       a number (pid, tid, counter)
    word      any other token (host, file, component, node)
    bracket   a [bracketed group], which may hold spaces and one level of nested brackets
    sep       a lone punctuation token (``-``, ``|``)
    comp      a ``component:`` or ``component[pid]:`` token (it ends the header)

Timestamp families (``TS_FAMILIES``): ISO 8601 with ``T`` or a space, ``,``/``.`` fractions
and an optional offset; ``yyyy/MM/dd HH:mm:ss``; ``yyyy-MM-dd-HH.mm.ss.ffffff``; syslog
``MMM d HH:mm:ss`` (optionally after a weekday); ctime ``EEE MMM d HH:mm:ss yyyy``; ``MM-dd HH:mm:ss.SSS``;
``yyMMdd HHmmss``; ``yyyyMMdd-HH:mm:ss:SSS``; epoch seconds (10 digits) and milliseconds
(13 digits) between 2000 and 2100.

:func:`infer_layout` scans the first tokens of every sample line, cuts each line's header with
one grammar (tokens before the timestamp; after it ints, a level, up to four words before the
level and one after it, one bracket, separators; a ``comp`` token ends it; the header ends at
its last token that can end one), and keeps the layout most of the sample lines agree on.
A :class:`Layout` compiles to one anchored regex, so parsing a line costs one ``match``.

:class:`SourceHeaders` keeps the layouts of one source: it learns from the first line, again
from the first 8 and 32 lines, and learns another layout when lines stop matching (8 of the
last 64 lines failing; after a try that finds none, twice as many misses before the next,
up to 256); up to ``MAX_LAYOUTS`` layouts per source (the newest), tried longest
first.
Its state is plain data and pickles with the pipeline's checkpoint. A line no layout fits
comes back as ``None`` (the caller stores it raw, ``parse_ok=false``).

Times: naive times are UTC; an offset is applied. A family without a year takes the
``year`` given, else the current year of ``now`` (passed in), less one when the month is
more than one month ahead (the rule of :mod:`streams.parsing`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from streams.parsing import _LEVELS, _MONTHS, ParsedLine

__all__ = ["Layout", "SourceHeaders", "TS_FAMILIES", "infer_layout", "scan"]

UTC = timezone.utc
MAX_SCAN_TOKENS = 14
MAX_LAYOUTS = 4
_LEARN_AT = (1, 8, 32)  # line counts at which the first lines are (re-)read
_MISS_WINDOW = 64
_MISS_LEARN = 8

_MON = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DOW = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_FRAC = r"(?:[.,:](?P<f>\d{1,9}))?"
_TZ = r"(?P<tz>Z|z|[+-]\d\d:?\d\d)?"

# name -> (regex with named groups Y y M Mon D h m s f tz e, resolution rank)
TS_FAMILIES: dict[str, tuple[str, int]] = {
    "iso": (r"(?P<Y>\d{4})-(?P<M>\d\d)-(?P<D>\d\d)[T ](?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
            r"(?:[.,](?P<f>\d{1,9}))?" + _TZ, 2),
    "slash": (r"(?P<Y>\d{4})/(?P<M>\d\d)/(?P<D>\d\d)[T ](?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
              r"(?:[.,](?P<f>\d{1,9}))?", 2),
    "dotted": (r"(?P<Y>\d{4})-(?P<M>\d\d)-(?P<D>\d\d)-(?P<h>\d\d)\.(?P<m>\d\d)\.(?P<s>\d\d)"
               r"(?:\.(?P<f>\d{1,9}))?", 2),
    # ctime / Apache: a weekday, then the year after the time (without the weekday, a number
    # after a syslog time is the pid or the message's, not a year)
    "ctime": (_DOW + r",?\s+(?P<Mon>" + _MON + r")\s+(?P<D>\d{1,2}),?\s+"
              r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)(?:[.,](?P<f>\d{1,9}))?\s+(?P<Y>\d{4})", 1),
    "syslog": (r"(?:" + _DOW + r",?\s+)?(?P<Mon>" + _MON + r")\s+(?P<D>\d{1,2}),?\s+"
               r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)(?:[.,](?P<f>\d{1,9}))?", 1),
    "md": (r"(?P<M>\d\d)-(?P<D>\d\d)\s+(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)(?:[.,](?P<f>\d{1,9}))?", 1),
    "compact": (r"(?P<Y>\d{4})(?P<M>\d\d)(?P<D>\d\d)-(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)" + _FRAC, 2),
    "yymmdd": (r"(?P<y>\d\d)(?P<M>[01]\d)(?P<D>[0-3]\d)\s+(?P<h>[0-2]\d)(?P<m>[0-5]\d)(?P<s>[0-6]\d)", 0),
    "epoch_ms": (r"(?P<ems>9[4-9]\d{10}|[1-3]\d{12}|4[01]\d{11})", 1),
    "epoch": (r"(?P<e>9[4-9]\d{7}|[1-3]\d{9}|4[01]\d{8})(?:\.(?P<f>\d{1,9}))?", 0),
}
# where a token ends: at a blank or the end, or between "]" and "[" (log4j/JVM headers glue
# their bracketed fields: "[2024-01-02T03:04:05,678][INFO ][o.e.n.Node]")
_B = r"(?=\s|$|(?<=\])\[)"
_END = r"[,;]?" + _B  # a timestamp token may carry a trailing comma ("04:30:30, Info")
_TS_SCAN = [(name, re.compile(r"\[?" + rx + r"\]?" + _END), rank)
            for name, (rx, rank) in TS_FAMILIES.items()]

_LEVEL_WORDS = sorted({k for k in _LEVELS if not k.isdigit()}
                      | {"V", "D", "I", "W", "E", "F"}, key=lambda w: (-len(w), w))
_LEVEL_RX = "(?:" + "|".join(_LEVEL_WORDS) + ")"
_SINGLE = {"V": "VERBOSE", "D": "DEBUG", "I": "INFO", "W": "WARNING", "E": "ERROR", "F": "FATAL"}

# "unrolled": a run of plain characters, then nested [..] each followed by another run
_BRACKET_RX = r"\[[^\[\]\n]*(?:\[[^\[\]\n]*\][^\[\]\n]*)*\]"
_FRAG = {
    # a level may be padded inside its brackets ("[INFO ]", a fixed-width column)
    "level": r"(?:\[ *)?(?P<level>" + _LEVEL_RX + r")(?: *\])?:?" + _B,
    "int": r"(?:-?\d+|\[-?\d+\])" + _B,
    "bracket": _BRACKET_RX + _B,
    "sep": r"[-|>:#*=~]{1,2}(?=\s|$)",
    # lazy, so a trailing [pid] is the pid; brackets inside stay in the name (a.b.[x].[y]:)
    "comp": r"(?P<comp>\S*?[^\s:])(?:\[(?P<pid>\d*)\])?:(?=\s|$)",
    "word": r"\S+",
}
# in a compiled layout: any short word, checked against the level words after the match
# (one set look-up is cheaper than a long alternation)
_LOOSE_LEVEL = r"(?:\[ *)?(?P<level>[A-Za-z]{1,13})(?: *\])?:?" + _B
_LEVEL_SET = frozenset(_LEVEL_WORDS)
_SCAN = [(k, re.compile(_FRAG[k])) for k in ("level", "int", "bracket", "sep", "comp", "word")]
_WS = re.compile(r"\s+")
_GROUP = re.compile(r"\(\?P<\w+>")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ts:<family>, level, int, bracket, sep, comp, word
    text: str
    padded: bool  # followed by two or more blanks (a column)
    glued: bool = False  # "]" directly followed by the next token's "["


def scan(line: str, limit: int = MAX_SCAN_TOKENS) -> list[Token]:
    """The first ``limit`` tokens of a line, each with its class."""
    out: list[Token] = []
    pos, n = 0, len(line)
    while pos < n and line[pos].isspace():
        pos += 1
    while pos < n and len(out) < limit:
        kind, end = "word", None
        for name, rx, _rank in _TS_SCAN:
            m = rx.match(line, pos)
            if m is not None:
                kind, end = "ts:" + name, m.end()
                break
        if end is None:
            for name, rx in _SCAN:
                m = rx.match(line, pos)
                if m is not None and m.end() > pos:
                    kind, end = name, m.end()
                    break
        ws = _WS.match(line, end)
        gap = ws.group() if ws else ""
        out.append(Token(kind, line[pos:end], len(gap) >= 2 or "\t" in gap,
                         not gap and end < n))
        pos = end + len(gap)
    return out


def _ends(kind: str, tok: Token) -> bool:
    return kind != "word" or tok.padded


def _header(tokens: list[Token]) -> tuple[str, ...] | None:
    """One line's header as a tuple of slot kinds, or None when it shows no header."""
    ts_at, best = -1, -1
    for i, t in enumerate(tokens[:9]):
        if t.kind.startswith("ts:"):
            rank = TS_FAMILIES[t.kind[3:]][1]
            if rank > best:
                ts_at, best = i, rank
    slots: list[str] = []
    used: list[Token] = []  # the token of each slot (whether it is glued to the next)
    if ts_at >= 0:
        for t in tokens[:ts_at]:  # everything before the timestamp is header
            k = t.kind
            slots.append("word" if k.startswith("ts:") or k in ("level", "comp", "sep") else k)
            used.append(t)
        slots.append(tokens[ts_at].kind)
        used.append(tokens[ts_at])
        rest = tokens[ts_at + 1:]
    else:
        rest = tokens
    end = len(slots)  # the header ends after its last token that can end one
    seen_level = seen_bracket = False
    words_before_level = 0
    for i, t in enumerate(rest):
        k = t.kind
        nxt = rest[i + 1].kind if i + 1 < len(rest) else None
        if k.startswith("ts:"):
            break
        if k == "comp":
            slots.append(k)
            used.append(t)
            end = len(slots)
            break
        if k == "level":
            if seen_level:
                break
            seen_level = True
        elif k == "bracket":
            if seen_bracket:
                break
            seen_bracket = True
        elif k == "word":
            if seen_level:  # one word after the level: a padded column, or before [..] / comp:
                if words_before_level < 0 or not (t.padded or nxt in ("bracket", "comp")):
                    break
                words_before_level = -1
            elif i == 0 and nxt == "comp":
                pass  # "host component:" (syslog)
            elif ts_at >= 0 and words_before_level < 4 and _level_ahead(rest, i):
                words_before_level += 1
            else:
                break
        elif k == "int":
            if len(slots) - (ts_at + 1 if ts_at >= 0 else 0) > 6:
                break
        slots.append(k)
        used.append(t)
        if _ends(k, t):
            end = len(slots)
    slots = slots[:end]
    if not any(s.startswith("ts:") or s in ("level", "comp") for s in slots):
        return None
    # "+": glued to what follows (no blank between "]" and "[")
    return tuple(s + "+" if u.glued else s for s, u in zip(slots, used))


def _level_ahead(rest: list[Token], i: int) -> bool:
    for t in rest[i + 1:i + 5]:
        if t.kind == "level":
            return True
        if t.kind not in ("word", "int"):
            return False
    return False


_MISSING = object()


def _year(now: float | None, month: int) -> int:
    t = datetime.fromtimestamp(now if now is not None else 0.0, UTC)
    return t.year - 1 if month > t.month + 1 else t.year


@dataclass(slots=True)
class Layout:
    """A header layout: slot kinds, compiled to one anchored regex."""

    slots: tuple[str, ...]
    regex: re.Pattern = field(init=False, repr=False, compare=False)
    roles: dict = field(init=False, repr=False, compare=False)
    _times: dict = field(init=False, repr=False, compare=False)  # timestamp text -> datetime

    def __post_init__(self) -> None:
        self.regex, self.roles = _compile(self.slots)
        self._times = {}

    def __getstate__(self):
        return self.slots

    def __setstate__(self, slots) -> None:
        self.slots = slots
        self.regex, self.roles = _compile(slots)
        self._times = {}

    @property
    def text(self) -> str:
        return " ".join(s.rstrip("+") for s in self.slots) + " message"

    def parse(self, line: str, *, year: int | None = None, now: float | None = None
              ) -> ParsedLine | None:
        m = self.regex.match(line)
        if m is None:
            return None
        g = m.groupdict()
        level = g.get("level")
        if level is not None and level not in _LEVEL_SET:
            return None
        fields: dict[str, str] = {}
        r = self.roles
        ts = None
        if r["ts"]:
            text = g["ts"]
            yearless = not (g.get("Y") or g.get("y") or g.get("e") or g.get("ems"))
            key = (text, year, _year(now, int(g["M"]) if g.get("M") else _MONTHS[g["Mon"]])
                   if yearless and year is None else None)
            times = self._times
            ts = times.get(key, _MISSING)
            if ts is _MISSING:
                if len(times) >= 4096:
                    times.clear()
                ts = times[key] = _timestamp(g, year, now)
            if ts is None:
                fields["invalid_timestamp"] = text
        for name, key in r["extra"]:
            v = g.get(name)
            if v is not None:
                fields[key] = v[1:-1].strip() if v[:1] == "[" and v[-1:] == "]" else v
        comp = g.get(r["component"]) if r["component"] else None
        host = g.get(r["host"]) if r["host"] else None
        pid = g.get("pid") or (g.get(r["pid"]) if r["pid"] else None)
        tid = g.get(r["tid"]) if r["tid"] else None
        if pid is not None and pid[:1] == "[":  # a bracketed number ("[22978]")
            pid = pid[1:-1]
        if tid is not None and tid[:1] == "[":
            tid = tid[1:-1]
        if tid is not None:
            fields["tid"] = tid
        msg = g.get("msg") or ""
        return ParsedLine(msg.strip(), ts, host, comp, pid or None, level, "inferred",
                          True, False, fields)


def _compile(slots: tuple[str, ...]) -> tuple[re.Pattern, dict]:
    parts, roles = [], {"ts": False, "component": None, "host": None, "pid": None, "tid": None,
                        "extra": []}
    glued = [s.endswith("+") for s in slots]
    slots = tuple(s.rstrip("+") for s in slots)
    ts_at = next((i for i, s in enumerate(slots) if s.startswith("ts:")), -1)
    level_at = next((i for i, s in enumerate(slots) if s == "level"), -1)
    words = []
    ints = []
    for i, s in enumerate(slots):
        name = f"s{i}"
        if s.startswith("ts:"):
            rx = TS_FAMILIES[s[3:]][0]
            parts.append(r"(?P<ts>\[?" + rx + r"\]?)[,;]?")
            roles["ts"] = True
            continue
        frag = _FRAG[s] if s != "level" else _LOOSE_LEVEL  # checked against the set after
        if s in ("level", "comp"):
            parts.append(frag)
            continue
        parts.append(f"(?P<{name}>{frag})")
        if s == "word":
            words.append(i)
        elif s == "int":
            if i > ts_at:
                ints.append(i)
            else:
                roles["extra"].append((name, f"h{i}"))
        elif s == "bracket":
            roles["extra"].append((name, "context" if i > ts_at else f"h{i}"))
    if "comp" in slots:
        roles["component"] = "comp"
    if ints:
        roles["pid"] = f"s{ints[0]}"
        if len(ints) > 1:
            roles["tid"] = f"s{ints[1]}"
        for i in ints[2:]:
            roles["extra"].append((f"s{i}", f"h{i}"))
    free = list(words)
    if roles["component"] is None and level_at >= 0:
        after = [i for i in free if i > level_at]
        before = [i for i in free if ts_at < i < level_at]
        pick = after[0] if after else (before[-1] if before else None)
        if pick is not None:
            roles["component"] = f"s{pick}"
            free.remove(pick)
    # a host: the word right after the timestamp, else the first word before it with a digit
    # and a letter in its name (a node); the next word before the timestamp is the component
    if ts_at >= 0 and ts_at + 1 in free:
        roles["host"] = f"s{ts_at + 1}"
        free.remove(ts_at + 1)
    elif ts_at > 0:
        pre = [i for i in free if i < ts_at]
        if pre:
            roles["host"] = f"s{pre[0]}" if len(pre) > 1 else None
            if roles["host"]:
                free.remove(pre[0])
            if roles["component"] is None and free and free[0] < ts_at:
                roles["component"] = f"s{free[0]}"
                free.remove(free[0])
    for i in free:
        roles["extra"].append((f"s{i}", f"h{i}"))
    body = "".join(p + ("" if g else r"\s+") for p, g in zip(parts[:-1], glued)) + parts[-1]
    rx = re.compile(r"\s*" + body + (r"(?:\s*" if glued[-1] else r"(?:\s+")
                    + r"(?P<msg>.*))?$", re.DOTALL)
    return rx, roles


def _timestamp(g: dict, year: int | None, now: float | None) -> datetime | None:
    try:
        e = g.get("e")
        if e is not None:
            dt = datetime.fromtimestamp(int(e), UTC)
            f = g.get("f")
            return dt.replace(microsecond=int((f + "000000")[:6])) if f else dt
        ems = g.get("ems")
        if ems is not None:
            return datetime.fromtimestamp(int(ems) / 1000.0, UTC)
        mon = g.get("Mon")
        month = _MONTHS[mon] if mon else int(g["M"])
        if g.get("Y"):
            y = int(g["Y"])
        elif g.get("y"):
            y = int(g["y"])
            y += 2000 if y < 69 else 1900
        else:
            y = year if year is not None else _year(now, month)
        f = g.get("f")
        us = int((f + "000000")[:6]) if f else 0
        dt = datetime(y, month, int(g["D"]), int(g["h"]), int(g["m"]), int(g["s"]), us,
                      tzinfo=UTC)
        tz = g.get("tz")
        if tz and tz not in ("Z", "z"):
            sign = -1 if tz[0] == "-" else 1
            d = tz[1:].replace(":", "")
            dt -= sign * timedelta(hours=int(d[:2]), minutes=int(d[2:4]))
        return dt
    except (ValueError, OverflowError, KeyError, OSError):
        return None


def infer_layout(lines: list[str], *, min_share: float = 0.5) -> Layout | None:
    """The header layout most of ``lines`` share (at least ``min_share`` of them), or None."""
    votes: Counter = Counter()
    n = 0
    for line in lines:
        if not line or not line.strip():
            continue
        n += 1
        h = _header(scan(line))
        if h is not None:
            votes[h] += 1
    if not votes:
        return None
    # a shorter layout is matched by the lines of a longer one that extends it: count them too
    support = {h: sum(c for g, c in votes.items() if g[:len(h)] == h) for h in votes}
    best = max(votes, key=lambda h: (votes[h], len(h)))
    share = support[best] / n
    if share < min_share:
        return None
    layout = Layout(best)
    matched = sum(1 for line in lines if line.strip() and layout.regex.match(line))
    return layout if matched >= min_share * n else None


@dataclass(slots=True)
class SourceHeaders:
    """The learned layouts of one source, and how well they have fitted."""

    layouts: list[Layout] = field(default_factory=list)
    lines: int = 0
    parsed: int = 0
    first: list[str] = field(default_factory=list)  # the first lines, until the last re-read
    misses: list[str] = field(default_factory=list)  # recent lines that fitted no layout
    recent: list[bool] = field(default_factory=list)  # fit / no fit of the last lines
    relearned: int = 0
    missed: int = 0  # lines that fitted no layout since the last try to learn one
    failed_tries: int = 0  # tries in a row that found no layout
    builtin: dict = field(default_factory=dict)  # lines a built-in format took, by format

    def note_builtin(self, fmt: str) -> None:
        """A line of this source that a built-in format parsed (counted, nothing learned)."""
        self.lines += 1
        self.parsed += 1
        self.builtin[fmt] = self.builtin.get(fmt, 0) + 1

    def parse(self, line: str, *, year: int | None = None, now: float | None = None
              ) -> ParsedLine | None:
        self.lines += 1
        if self.lines <= _LEARN_AT[-1]:
            self.first.append(line)
            if self.lines in _LEARN_AT:
                found = infer_layout(self.first)
                if found is not None:
                    self._adopt(found, replace=True)
            if self.lines == _LEARN_AT[-1]:
                self.first = []
        r = None
        for layout in self.layouts:  # the most specific (longest) first
            r = layout.parse(line, year=year, now=now)
            if r is not None:
                break
        self.recent.append(r is not None)
        if len(self.recent) > _MISS_WINDOW:
            del self.recent[0]
        if r is not None:
            self.parsed += 1
            return r
        self.misses.append(line)
        self.missed += 1
        if len(self.misses) > 2 * _MISS_LEARN:
            del self.misses[0]
        # after a try that found nothing (lines with no header at all), wait twice as many
        # misses before the next one: a source of plain messages costs no inference per line
        need = _MISS_LEARN << min(self.failed_tries, 5)
        if len(self.misses) >= _MISS_LEARN and self.recent.count(False) >= _MISS_LEARN and \
                self.missed >= need:
            found = infer_layout(self.misses)
            self.misses = []
            self.missed = 0
            self.failed_tries = 0 if found is not None else self.failed_tries + 1
            if found is not None and all(found.slots != lay.slots for lay in self.layouts):
                self._adopt(found, replace=False)
                self.relearned += 1
                r = found.parse(line, year=year, now=now)
                if r is not None:
                    self.recent[-1] = True
                    self.parsed += 1
        return r

    @property
    def hot(self) -> bool:
        """The last line of this source fitted a learned layout."""
        return bool(self.recent) and self.recent[-1]

    def quick(self, line: str, *, year: int | None = None, now: float | None = None
              ) -> ParsedLine | None:
        """The learned layouts only, nothing learned; a fit is counted as :meth:`parse`
        counts it, a miss is not counted (the caller tries other formats, then ``parse``)."""
        for layout in self.layouts:
            r = layout.parse(line, year=year, now=now)
            if r is not None:
                self.lines += 1
                self.parsed += 1
                self.recent.append(True)
                if len(self.recent) > _MISS_WINDOW:
                    del self.recent[0]
                return r
        return None

    def _adopt(self, layout: Layout, *, replace: bool) -> None:
        if replace and self.layouts:
            self.layouts[0] = layout
        else:
            self.layouts.insert(0, layout)
        seen, keep = set(), []
        for lay in self.layouts:
            if lay.slots not in seen:
                seen.add(lay.slots)
                keep.append(lay)
        # the newest are kept; they are tried longest first, so that a layout that extends
        # another is not shadowed by it
        keep = keep[:MAX_LAYOUTS]
        keep.sort(key=lambda lay: -len(lay.slots))
        self.layouts = keep

    def describe(self) -> dict:
        """What a person sees (``GET /api/sources``): the layout most lines fitted (a built-in
        format's name, or the learned layout's slots), every layout, lines and share parsed."""
        learned = self.parsed - sum(self.builtin.values())
        main = max(self.builtin.items(), key=lambda kv: kv[1], default=(None, 0))
        if self.layouts and learned >= main[1]:
            layout = self.layouts[0].text
        else:
            layout = f"built-in {main[0]}" if main[0] else None
        return {"layout": layout,
                "layouts": [lay.text for lay in self.layouts]
                + [f"built-in {k}" for k in sorted(self.builtin)],
                "lines": self.lines,
                "parsed_share": round(self.parsed / self.lines, 4) if self.lines else 0.0,
                "relearned": self.relearned}


def normalize_single_letter(level: str | None) -> str | None:
    """The level a one-letter code stands for (logcat/glog: V D I W E F), else ``level``."""
    return _SINGLE.get(level, level) if level and len(level) == 1 else level
