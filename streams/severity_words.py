"""Words that say a line without a level field is severe (issue 19).

Many lines carry no level at all (BSD syslog as written to files, a shell script's echo, a
daemon's own text), so nothing tells the scorer that ``kernel panic`` or ``POSSIBLE BREAK-IN
ATTEMPT!`` is worse than ``session opened``. ``severe_word`` finds, in such a line, the first
word of two widely used vocabularies (none taken from the sample logs):

* **the highest syslog severities**, RFC 5424 §6.2.1 (0 Emergency, 1 Alert, 2 Critical) with
  the keywords syslog.conf(5) / rsyslog accept for them (``emerg``, ``panic``, ``alert``,
  ``crit``), and ``fatal`` (log4j / Java logging, Go's ``log.Fatal``, glibc's "fatal error");
  the canonical names come from ``streams.parsing.normalize_level``, so a word counts exactly
  when the same text in a level field would be ALERT or worse;
* **words that name an attack**: logcheck's "hacking" category ("keywords that are known
  attacks on your system", reported as ACTIVE SYSTEM ATTACK; logcheck README), in the plain
  English of incident handling (NIST SP 800-61: attack, intrusion, break-in): ``attack``,
  ``intrusion``, ``intruder``, ``break-in``.

Not included, on purpose: ERROR and WARNING as words (``error=0``, ``no errors``, ``warning
threshold`` are routine text), and logcheck's "violations" words (``denied``, ``refused``,
``failed``, ``illegal``): logcheck itself calls them "usually seen as negative … but may be
routine to a working system", and a brute force of them is the burst and flood detectors' work.

>>> severe_word("reverse mapping checking getaddrinfo for x [1.2.3.4] failed - POSSIBLE BREAK-IN ATTEMPT!")
('BREAK-IN', 'ALERT')
>>> severe_word("Kernel panic - not syncing: Fatal exception")
('panic', 'EMERGENCY')
>>> severe_word("session opened for user root") is None
True
>>> severe_word("critical_section_enter ok") is None  # a word, not part of an identifier
True
"""

from __future__ import annotations

import re

from streams.parsing import normalize_level

__all__ = ["severe_word", "SEVERE_LEVELS", "ATTACK_WORDS"]

# the canonical levels whose names, written in a line's text, make it severe
SEVERE_LEVELS = ("EMERGENCY", "ALERT", "CRITICAL", "FATAL")
# level keywords (syslog.conf(5), RFC 5424 names, log4j's FATAL) that normalise to one of them
_LEVEL_WORDS = ("emerg", "emergency", "panic", "alert", "crit", "critical", "fatal")
ATTACK_WORDS = ("attack", "attacks", "attacked", "attacker", "intrusion", "intruder", "break-in",
                "breakin")
_ATTACK_LEVEL = "ALERT"  # RFC 5424: "action must be taken immediately"

assert all(normalize_level(w) in SEVERE_LEVELS for w in _LEVEL_WORDS)

# a whole word: not inside an identifier (critical_section, alert.js, fatal-errors-total)
_WORDS = re.compile(
    r"(?<![\w.\-/])(" + "|".join(sorted((re.escape(w) for w in (*_LEVEL_WORDS, *ATTACK_WORDS)),
                                        key=len, reverse=True))
    + r")(?![\w\-/]|\.\w)", re.IGNORECASE)


# stems of the words: a line with none of them (nearly every line) costs one lower() and a
# few substring searches in C, not a case-insensitive regex scan (~5 µs a line)
_STEMS = ("emerg", "panic", "alert", "crit", "fatal", "attack", "intru", "break")


def severe_word(message: str) -> tuple[str, str] | None:
    """The first severe word of ``message`` as written, and the level it names (EMERGENCY,
    ALERT, CRITICAL or FATAL; ALERT for a word naming an attack), or None."""
    if not message:
        return None
    low = message.lower()
    for stem in _STEMS:
        if stem in low:
            break
    else:
        return None
    m = _WORDS.search(message)
    if m is None:
        return None
    word = m.group(1)
    low = word.lower()
    return word, (_ATTACK_LEVEL if low in ATTACK_WORDS else normalize_level(low))
