"""Multi-line events: stack traces and indented continuations join the line they belong to.

A Java stack trace, its ``Caused by:`` chain, a Python traceback, or a configuration dump
whose continuation lines are indented is one event, written over many lines. A line
*continues* the previous event when it

* starts with a blank or a tab (``\\tat com.example.Foo.bar(Foo.java:42)``, ``  File "x.py"``),
* or starts a cause or a trace: ``Caused by:``, ``Suppressed:``, ``... 12 more``,
  ``Traceback (most recent call last):`` and Python's chained-exception lines (``During handling
  of the above exception…``, ``The above exception was the direct cause…``),
* or names an exception (``java.lang.IllegalStateException: boom``, ``ValueError: bad
  value``: a dotted or CamelCase name ending in Error/Exception/Warning/Throwable, then ``:``
  or the end of the line) right after such a continuation, or in an event whose first line
  has a timestamped header (the logger's line before the trace);

every other line starts a new event (the rules of Filebeat's and Fluent Bit's multiline
parsers for Java and Python, without their per-language switches). The first line of a
batch always starts an event. An event is bounded: at most ``max_lines`` lines and
``max_bytes`` characters; a continuation past either bound starts an event of its own, so
nothing is dropped.

:class:`MultilineJoiner` joins a stream line by line (``feed``/``flush``); the caller flushes
after an idle time (the joiner has no clock). :func:`join_lines` joins a finite batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from streams.headers import scan

__all__ = ["MultilineJoiner", "is_continuation", "join_lines", "MAX_LINES", "MAX_BYTES"]

MAX_LINES = 500
MAX_BYTES = 65536

_STARTS_TRACE = re.compile(r"(?:Caused by:|Suppressed:|\.\.\. \d+ (?:more|common frames omitted)"
                           r"|Traceback \(most recent call last\):"
                           r"|During handling of the above exception"
                           r"|The above exception was the direct cause)")
_EXCEPTION = re.compile(r"(?:[A-Za-z_$][\w$]*\.)*[A-Z][\w$]*(?:Error|Exception|Warning|Throwable)"
                        r"(?::|$)")


def is_continuation(line: str, after_continuation: bool, after_header: bool = False) -> bool:
    """Whether ``line`` continues the event before it (see the module docstring).
    ``after_header``: the event began with a timestamped header line."""
    if not line:
        return False
    c = line[0]
    if c == " " or c == "\t":
        return bool(line.strip())
    if c in "CS.TD" and _STARTS_TRACE.match(line):
        return True
    return (after_continuation or after_header) and _EXCEPTION.match(line) is not None


def starts_with_header(line: str) -> bool:
    """A timestamp among the line's first three tokens (streams.headers' families)."""
    return any(t.kind.startswith("ts:") for t in scan(line, 3))


class MultilineJoiner:
    """Joins lines into events; ``feed`` returns the events a line completed."""

    def __init__(self, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES):
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self._parts: list[str] = []
        self._size = 0
        self._tag = None  # the caller's tag of the event's first line (an id, a line number)
        self._after = False
        # the event began with a timestamped header line; None: not looked at yet (a scan
        # of the first line, needed only when a later line names an exception)
        self._header: bool | None = False

    def feed(self, line: str, tag=None) -> list[tuple[object, str]]:
        """(tag of the first line, text) of each event ``line`` completed: none, or the
        previous one when ``line`` starts a new event."""
        cont = bool(self._parts) and (
            is_continuation(line, self._after)
            or (not self._after and is_continuation(line, False, True) and self._began_with_header()))
        if cont and len(self._parts) < self.max_lines and \
                self._size + 1 + len(line) <= self.max_bytes:
            self._parts.append(line)
            self._size += 1 + len(line)
            self._after = True
            return []
        out = self.flush()
        self._parts, self._size, self._tag = [line], len(line), tag
        self._header = False if cont else None
        self._after = cont  # a continuation cut off by a bound still reads as one
        return out

    def _began_with_header(self) -> bool:
        if self._header is None:
            self._header = starts_with_header(self._parts[0])
        return self._header

    def flush(self) -> list[tuple[object, str]]:
        """The event being joined, if any (at the end of input, or after an idle time)."""
        if not self._parts:
            return []
        out = [(self._tag, "\n".join(self._parts))]
        self._parts, self._size, self._tag, self._after, self._header = [], 0, None, False, False
        return out

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    @property
    def pending_tag(self):
        """The tag of the open event's first line (None: no event open)."""
        return self._tag if self._parts else None


def join_lines(lines: Iterable[tuple[object, str]], *, max_lines: int = MAX_LINES,
               max_bytes: int = MAX_BYTES) -> Iterator[tuple[object, str]]:
    """(tag, line) pairs in, (tag of the first line, event text) pairs out."""
    j = MultilineJoiner(max_lines, max_bytes)
    for tag, line in lines:
        yield from j.feed(line, tag)
    yield from j.flush()
