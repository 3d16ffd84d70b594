"""Multi-line events: a Java stack trace, a ``Caused by:`` chain, an indented dump join the line
they belong to. Pure: no clock, no I/O (the caller decides when an idle event is flushed).

The rule, per stream of lines from one source (a request body, a replayed or shipped file):

* If the source's lines start with a timestamp (its first line does), a line that does not
  start with one continues the event before it: that is what a header is for.
* Otherwise (no timestamp in front), only lines that cannot start an event continue one: lines
  that start with whitespace (stack frames ``\\tat ...``, indented dumps), ``Caused by:`` and
  ``... 12 more``.

An event holds at most ``max_lines`` lines; its text is kept up to ``max_bytes`` + 1 characters
(the pipeline then cuts it to ``max_bytes`` and flags it truncated, as any long line), and the
continuation lines past that are counted but not kept.

    >>> j = MultilineJoiner()
    >>> j.feed(1, "2024-05-01 10:00:00 ERROR Billing - failed")
    []
    >>> j.feed(2, "java.lang.IllegalStateException: closed")
    []
    >>> j.feed(3, "\\tat com.acme.Billing.run(Billing.java:42)")
    []
    >>> j.feed(4, "2024-05-01 10:00:01 INFO Billing - retrying")
    [(1, '2024-05-01 10:00:00 ERROR Billing - failed\\njava.lang.IllegalStateException: closed\\n\\tat com.acme.Billing.run(Billing.java:42)')]
    >>> j.flush()
    [(4, '2024-05-01 10:00:01 INFO Billing - retrying')]
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable

__all__ = ["MultilineJoiner", "join_keyed", "join_lines", "starts_with_timestamp"]

_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DOW = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
# the timestamp families a header starts with (any of them, optionally [bracketed] or after a
# syslog <PRI>); generic shapes, not one application's
_TS_START = re.compile(
    r"\[?(?:<\d{1,3}>\d?\s*)?(?:"
    r"\d{4}[-/]\d\d[-/]\d\d[T ]\d\d:\d\d"           # ISO 8601, yyyy/MM/dd
    r"|\d{4}-\d\d-\d\d-\d\d\.\d\d"                   # yyyy-MM-dd-HH.mm
    r"|\d{8}-\d\d:\d\d:\d\d"                         # yyyyMMdd-HH:mm:ss
    r"|\d\d-\d\d \d\d:\d\d:\d\d"                     # MM-dd HH:mm:ss
    r"|\d{6} \d{6}\b"                                # yyMMdd HHmmss
    r"|(?:" + _DOW + r",? +)?" + _MON + r" +\d{1,2},? +\d\d:\d\d:\d\d"  # syslog, ctime
    r"|\d\d?/" + _MON + r"/\d{4}:\d\d:\d\d"         # dd/MMM/yyyy:HH:mm (access logs)
    r"|1\d{9}(?:\d{3})?(?:\.\d+)?\b"                 # epoch seconds / milliseconds
    r")")
_CONTINUES = re.compile(r"[ \t]|Caused by:|\.\.\. \d+ (?:more|common frames omitted)")


def starts_with_timestamp(line: str) -> bool:
    """Whether ``line`` starts with a timestamp of a common family.

    >>> starts_with_timestamp("Jun 14 15:16:01 combo sshd[1]: x"), starts_with_timestamp("\\tat x")
    (True, False)
    """
    return _TS_START.match(line) is not None


class MultilineJoiner:
    """``feed(key, line)`` → the events it completed, as ``(key of their first line, text)``;
    ``flush()`` → the event still open (at the end of a body or file, or after an idle time)."""

    def __init__(self, *, max_lines: int = 1000, max_bytes: int = 65536):
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.timestamp_led: bool | None = None  # decided by the source's first line
        self._key: Hashable | None = None
        self._parts: list[str] = []
        self._size = 0
        self._lines = 0

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    @property
    def pending_key(self) -> Hashable | None:
        """The key of the open event's first line (None: no event open)."""
        return self._key if self._parts else None

    def continues(self, line: str) -> bool:
        if not self._parts:
            return False
        if self.timestamp_led:
            return not starts_with_timestamp(line)
        return _CONTINUES.match(line) is not None

    def feed(self, key: Hashable, line: str) -> list[tuple[Hashable, str]]:
        if self.timestamp_led is None and line.strip():
            self.timestamp_led = starts_with_timestamp(line)
        if self.continues(line) and self._lines < self.max_lines:
            self._lines += 1
            if self._size <= self.max_bytes:  # beyond it, counted but not kept
                self._parts.append(line)
                self._size += len(line) + 1
            return []
        done = self.flush()
        self._key, self._parts, self._size, self._lines = key, [line], len(line), 1
        return done

    def flush(self) -> list[tuple[Hashable, str]]:
        if not self._parts:
            return []
        text = "\n".join(self._parts)
        if len(text) > self.max_bytes + 1:
            text = text[:self.max_bytes + 1]  # the pipeline cuts at max_bytes and flags it
        done = [(self._key, text)]
        self._key, self._parts, self._size, self._lines = None, [], 0, 0
        return done


def join_lines(lines: Iterable[str], **limits) -> list[str]:
    """Every event of ``lines`` (one source, in order), continuation lines joined.

    >>> join_lines(["first", "  indented detail", "second"])
    ['first\\n  indented detail', 'second']
    """
    j = MultilineJoiner(**limits)
    out = [text for i, line in enumerate(lines) for _k, text in j.feed(i, line)]
    return out + [text for _k, text in j.flush()]


def join_keyed(pairs: Iterable[tuple[Hashable, str]], **limits):
    """``(key, line)`` pairs → ``(key of the first line, event text)``, lazily, in order.

    >>> list(join_keyed([(1, "a"), (2, "\\tdetail"), (3, "b")]))
    [(1, 'a\\n\\tdetail'), (3, 'b')]
    """
    j = MultilineJoiner(**limits)
    for key, line in pairs:
        yield from j.feed(key, line)
    yield from j.flush()
