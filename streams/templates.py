"""Online template mining: a Drain-style tree over masked tokens, with typed similarity.

``TemplateMiner.mine(message)`` returns the template a line belongs to, learned in one
pass. Variable tokens (IPs, hex, numbers, paths, e-mail addresses, ...) are masked first,
which keeps lines that differ only in such values in one group.

>>> m = TemplateMiner()
>>> a = m.mine("Accepted password for root from 10.0.0.1 port 22 ssh2")
>>> b = m.mine("Accepted password for root from 10.0.0.7 port 4711 ssh2")
>>> a.template_id == b.template_id, b.template
(True, 'Accepted password for root from <IP> port <NUM> ssh2')
>>> b.params
['10.0.0.7', '4711']

Why not the Drain3 library: with its defaults it groups loghub's Linux and OpenSSH samples with
an accuracy of 0.684 and 0.718, and its similarity (a share of equal tokens) cannot say *which*
tokens may differ; the rule below needs that, so the tree is ours (bench/QUALITY.md has the
figures: 1.000 and 1.000 with this miner).

Tokens are the whitespace-separated words of the message, except that a double-quoted
string is one token (``tag="View Lock",``; ``_split``, bounded look-ahead of ``QUOTE_SPAN``
tokens for the closing quote, so a stray quote joins nothing).

How a line finds its group (Drain's fixed-depth tree: He et al., ICWS 2017, made stricter
about *which* tokens may differ inside one group):

1. Candidate groups have the same number of tokens and the same first token (a first token
   that holds a variable is keyed as ``<*>``).
2. Each position of the line is compared with the group's template:

   * equal tokens, or a template position already generalised to ``<*>``, or to a labelled
     placeholder whose constant text the token has (``user=<*>`` and ``user=test``): a match;
   * two *variable-like* tokens (holding a digit or a mask such as ``<IP>``) whose constant
     prefix agrees (``rhost=<IP>`` vs ``rhost=host-<NUM>.example.net``, ``<NUM>`` vs
     ``<HEX>``): a match as well: both are values of the same slot;
   * two variable-like tokens whose *labels* differ (the text before the value, up to a
     separator: ``dcbf.........0`` vs ``icbi.........0``, ``size:5`` vs ``time:5``): values
     of different fields, so the group is not a candidate. A number glued to a word
     without a separator (``web3``, ``sda1``) is an identifier, a value as a whole;
   * two tokens that differ only inside their double quotes (``tag="AudioMix",`` vs
     ``tag="*launch*",``), or where one holds a null literal and the other has the same
     text around it (``ws=null,`` vs ``ws=WorkSource{1},``): a match, values of one slot;
   * anything else is a *word difference*.

   The similarity is the share of matching positions; the best group with a similarity of
   at least ``sim_th`` (0.75) is taken, provided its word differences are plausible values:

   * **same shape**: a differing word must have the same punctuation skeleton as the word
     it replaces (``root``/``alice`` yes; ``tty=NODEVssh``/``tty=:0`` or
     ``(uid=0)``/``LOGIN(uid=0)`` no: a different syntax, not another value). An empty
     value may stand for a filled one (``rhost=``/``rhost=<IP>``, ``()``/``(host)``);
   * **established leading constants stay constants**: once a group has ``established``
     (3) lines, a difference in its first two tokens (usually the verb or the subject of
     the message: ``Failed password ...`` vs ``Failed none ...``) starts a new group.

   Otherwise the line starts a new group. A differing position of the joined group becomes
   a placeholder that keeps the constant text both tokens share around the value, cut at a
   separator (``(usable)``/``(reserved)`` -> ``(<*>)``, ``rhost=<IP>``/``rhost=host-<NUM>.net``
   -> ``rhost=<*>``), or plain ``<*>``.

3. **Enumerations.** When the only word difference is one plain word (no digit, no mask,
   not a path or a dotted name: ``VM Started``/``VM Paused``, ``client Agent.``/``client
   SPP.``) or the word value of one ``key=value`` token (``user=root``/``user=guest``), the
   line starts a *sibling* group instead, while the position has at most ``enumeration``
   (4) words: a handful of words at one place names a few kinds of event (started,
   paused; root logins, guest logins), a variable shows itself by more. The family merges
   into its first group (``VM <*>``, ``user=<*>``) when

   * a fifth word comes;
   * its words are those of another enumeration too (``SHARED_VALUES``: two in common):
     the user names that open sessions also close them, so they name things, they are
     not kinds of event; both enumerations merge;
   * a value that is no plain word (a number, an id: ``root28_domain`` beside
     ``root_domain``) comes at its position.

   The merged group is named by the smallest of the members' ids (the catalog's rule, so the
   name does not depend on which word came first); the others become aliases of it
   (``resolve``), so an id emitted before the merge still names the group, and the
   evaluation scores the resolved ids.
   Why four: the loghub ground truths keep three user names apart in Linux (root, guest,
   test) and group six in OpenSSH (root, ftp, git, mysql, sshd, uucp); four sits
   between. Apart from such a merge, and a renaming by the catalog (``adopt``), ids never
   change.

Ids: a template's id is derived from the tokens it is created from (``template_id_for``:
"T" + 12 hex digits of their BLAKE2b digest), not numbered, so two miners (workers, shards,
partitions) that meet the same first line of a pattern name it alike, whatever they saw
before. It is kept when the template generalises. Two miners can still reach one template
text from different first lines, under two ids: the catalog (``streams.catalog``) names it
by the smaller, and ``adopt`` renames it here.

Masks: an address is masked without its port (``10.0.0.1:22`` -> ``<IP>:<NUM>``), so the
port is a number of its own. The month and weekday names of a date written inside a message
are ``<DATE>`` (``at Sat Jun 18 02:08:10`` -> ``at <DATE> <DATE> <NUM> ...``): a name next to
a day number, or a weekday before a month; a name alone is left as it is. ``params`` holds
one value per placeholder, without the constant text around it (``uid=0`` -> ``0``, ``/10.0.0.1:22`` -> ``10.0.0.1``, ``22``), so a
number glued to a label is scored as a number.

Bounds (whatever the input, a flood of unique lines included):

* **the group search**: a leaf (token count, first token) keeps at most ``SEARCH_BUDGET``
  (16,384) token comparisons' worth of groups: 16,384 / the token count, within 8..256
  (``MAX_CANDIDATES``); a line is compared with those only, and a comparison stops as soon
  as the group has missed too many positions to reach ``sim_th``. So a line costs at most
  ~16,000 token comparisons (and at least 8 groups are kept for the longest lines);
* **the templates**: at most ``MAX_TEMPLATES`` (20,000) groups, holding at most
  ``MAX_TEMPLATE_TOKENS`` (1,000,000) tokens in all;
* **eviction** (when a leaf or the whole miner is full, before a new group is added): the
  group joined least recently among the *young* ones (fewer than ``established`` lines, a
  unique line's group), else the least recently joined of all. A flood of unique lines thus
  churns among its own young groups, and the patterns that recur stay. Recency is counted
  in lines mined (no clock), so eviction is deterministic and replays the same;
* **ids**: a kept template keeps its id. An evicted template is gone: a line like it later
  starts a new group, whose id is again that of the tokens it is made from (the same as
  before when it is made from the same first line); the events stored under the old id
  keep it;
* **the memos** (masked tokens, masked messages) hold at most ``cache_size`` entries and
  ``MEMO_CHARS`` (8 M) characters each; a memo that is full is cleared;
* **aliases** of merged ids: at most ``MAX_ALIASES`` (20,000); beyond, the oldest half is
  dropped (``resolve`` then returns such an old id as is; the stores were told of those
  merges when they happened);
* **the words of the enumerations** (``_families``, to find shared words): at most
  ``FAMILIES_PER_WORD`` (64) enumerations per word, the most recent; an evicted or merged
  group leaves the index.

Two shortcuts keep it cheap: masks are applied per token, only to tokens that can hold a
variable, and memoised (the order of ``MASKS`` is the priority, as in Drain3), and a
masked message seen before goes straight to the group it joined last time (adding it again
could not change that group's template, which already covers it). Both caches are
bounded and part of the pickled state, so processing stays deterministic.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from itertools import islice

from streams.keyed import EXTERNAL_ROWS, DiffRows, Rows, TrackedDict

__all__ = ["MASKS", "MergeNotices", "MinedTemplate", "TemplateMiner", "template_id_for"]

# Order matters: the first instruction that matches a span wins.
MASKS: tuple[tuple[str, str], ...] = (
    # starts only after a non-word character, so a long token costs linear time, not quadratic
    (r"((?<=[^\w.+-])|^)[\w.+-]+@[\w-]+(\.[\w-]+)+", "EMAIL"),
    # an address without its port: ``10.0.0.1:22`` masks as ``<IP>:<NUM>``, so the port is a number
    (r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.){3}\d{1,3}((?=[^A-Za-z0-9])|$)", "IP"),
    (r"((?<=[^A-Za-z0-9])|^)([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}((?=[^A-Za-z0-9])|$)", "MAC"),
    (r"((?<=[^A-Za-z0-9])|^)(0x[a-fA-F0-9]+)((?=[^A-Za-z0-9])|$)", "HEX"),
    (r"((?<=[^A-Za-z0-9])|^)([a-fA-F0-9]{8,})((?=[^A-Za-z0-9])|$)", "HEX"),
    (r"((?<=[^A-Za-z0-9:/])|^)(/[\w.@%+-]+){2,}/?((?=[^A-Za-z0-9])|$)", "PATH"),
    (r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+(\.\d+)?)((?=[^A-Za-z0-9])|$)", "NUM"),
)

WILDCARD = "<*>"
# the version of the pickled state: 2 masks ports apart from addresses and keeps labels
# around placeholders (``uid=<*>``); 4 bounds the templates (recency, leaf keys); 5 indexes
# the enumerations by their words (``_families``, rebuilt on load); older states are migrated
STATE_VERSION = 6  # 6: ids derived from the template's text (strings), creation order kept
# a key=value token with at most this many distinct word values is an enumeration
ENUMERATION = 4
# two enumerations with this many words in common are one variable seen in two messages
SHARED_VALUES = 2
# how many enumerations the index keeps per word (the most recent), so comparing a new
# enumeration with the others costs at most ``enumeration`` + 1 words times this
FAMILIES_PER_WORD = 64
# bounds (see "Bounds" in the module docs): templates kept, their tokens in all, the token
# comparisons one line may cost in its group search, the groups one search may meet at most,
# and the characters the two memos may hold
MAX_TEMPLATES = 20_000
MAX_TEMPLATE_TOKENS = 1_000_000
SEARCH_BUDGET = 16_384
MAX_CANDIDATES = 256
MIN_CANDIDATES = 8
MEMO_CHARS = 8_000_000
# ids merged away that ``resolve`` still knows (the oldest half is dropped beyond: the stores
# were told of those merges long before, see ``MergeNotices``)
MAX_ALIASES = 20_000

_MAYBE_VARIABLE = re.compile(r"[\d@/]")
# a token holds a value when it has a digit or a mask
_VARIABLE = re.compile(r"[\d<]")
# the constant head of a variable-like token: what precedes its first digit or mask
_HEAD = re.compile(r"[^<\d]*")
# word runs (and masks) in a token; what is left is its punctuation skeleton
_WORDS = re.compile(r"(?:<[A-Z*]+>|[\w.-])+")
# a word run that may be empty in one line and filled in another: a value after = ( [ { : ' "
_OPTIONAL_AFTER = "=([{:'\""
# a boolean literal: a line with "false" where the group has "true" is another outcome
_BOOLEAN = re.compile(r"\b(?:true|false|True|False|TRUE|FALSE)\b")
# characters that join the parts of one identifier rather than a label and its value
_JOINERS = "_~"
# the most whitespace tokens one double-quoted string may join
QUOTE_SPAN = 8
# a null literal: no value, which may stand for any value
_NULL = re.compile(r"(?<![\w.-])(?:null|NULL|Null|nil|None|undefined)(?![\w.-])")
# a mask in a template token (the variable parts of a parameter)
_MASK = re.compile(r"<[A-Z*]+>")


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~0.5 µs a line more
class MinedTemplate:
    template_id: str
    template: str
    params: list[str]
    is_new: bool
    seen_before: int  # how many lines this template had before this one


def template_id_for(tokens: list[str], salt: int = 0) -> str:
    """A template's id from the tokens it is created from: "T" + 12 hex digits of their
    BLAKE2b digest, so every miner (worker, shard, partition) that meets a pattern's first line
    names it alike, with no coordination. ``salt`` > 0 rehashes (an id already taken inside one
    miner). 48 bits: a chance collision between two templates of a 20,000-template catalog is
    ~1e-6; inside one miner it is resolved by the salt, across miners it would join two
    patterns in the catalog (streams.catalog).

    >>> template_id_for(["Accepted", "password", "for", "<*>"])
    'Tc694a6f976df'
    >>> template_id_for(["a"]) != template_id_for(["a"], 1)
    True
    """
    data = "\\n".join(tokens).encode("utf-8", "surrogatepass")  # a token holds no newline
    if salt:
        data = b"%d\\0" % salt + data
    return "T" + hashlib.blake2b(data, digest_size=6).hexdigest()


def _legacy_id(cid) -> str:
    """An id of a checkpoint made before ids came from text: the number ``n`` was "Tn"."""
    return cid if isinstance(cid, str) else f"T{cid}"


class _Group:
    """One template: its tokens (``<*>`` where lines differed), size and id; ``globs`` holds
    the positions whose token keeps a constant label around its value (``uid=<*>``).
    ``family``: the enumeration it is a member of (``user=root`` beside ``user=guest``);
    ``merged_into``: the group that took it over when its enumeration merged."""

    __slots__ = ("born", "cluster_id", "evicted", "family", "globs", "key", "last", "merged_into",
                 "placeholders", "size", "template", "tokens")

    def __init__(self, cluster_id: str, tokens: list[str], key: tuple = (), last: int = 0,
                 born: int = 0):
        self.cluster_id = cluster_id  # the template id, "T" + 12 hex digits (template_id_for)
        self.born = born  # the miner's group count when it was made: its place in its leaf
        self.tokens = tokens
        self.size = 1
        self.family: _Family | None = None
        self.merged_into: _Group | None = None
        self.key = key  # the leaf (token count, first token) it is kept in
        self.last = last  # the miner's line count when a line last joined it
        self.evicted = False
        self.changed()

    def changed(self) -> None:
        """Derived from the tokens: the template text, its globs and its placeholders."""
        tokens = self.tokens
        self.template = " ".join(tokens)
        self.globs = _globs(tokens)
        self.placeholders = _placeholders(tokens)

    def __getstate__(self):
        return (self.cluster_id, self.tokens, self.size, self.family, self.merged_into,
                self.key, self.last, self.evicted, self.born)

    def __setstate__(self, state):
        if len(state) == 3:  # state version 2: no enumerations yet
            state = (*state, None, None)
        if len(state) == 5:  # version 3: no bounds yet (the miner sets the leaf key on load)
            state = (*state, None, 0, False)
        if len(state) == 8:  # version 5: sequential numbers (T1, T2, ...), kept as they were
            state = (*state, state[0])
        (self.cluster_id, self.tokens, self.size, self.family, self.merged_into,
         self.key, self.last, self.evicted, self.born) = state
        self.cluster_id = _legacy_id(self.cluster_id)
        self.changed()


class _Family:
    """Groups that differ only in one plain word or in the word value of one ``key=value``
    token (position ``pos``): an enumeration while it has at most
    ``TemplateMiner.enumeration`` members."""

    __slots__ = ("members", "pos")

    def __init__(self, pos: int, first: _Group):
        self.pos = pos
        self.members = [first]


# ``key=value`` with a word value (no digit, no mask): a value from a small set, maybe
_KEY_WORD = re.compile(r"([A-Za-z_][\w.-]*=)([A-Za-z_][\w.-]*)")


# a word that names something rather than saying what happened: a path or a qualified name
# (``a/b``, ``com.example.Main``), an identifier whatever its vocabulary
_NAME_LIKE = re.compile(r"/|\w\.\w+\.\w")
# what a word value is compared by across families: the token without punctuation around it
_EDGE = "\"'()[]{}<>,.;:!?"


def _word(tok: str) -> bool:
    """A plain word (no digit, no mask, no path or qualified name): one of a vocabulary."""
    return (_VARIABLE.search(tok) is None and _NAME_LIKE.search(tok) is None
            and any(c.isalpha() for c in tok))


def _enumerable(t: str, m: str) -> bool:
    """Two different word values of the same key (``user=root`` and ``user=guest``), or two
    different plain words (``VM Started``/``VM Paused``, ``for user cyrus``/``for user news``)."""
    a = _KEY_WORD.fullmatch(t)
    if a is not None:
        b = _KEY_WORD.fullmatch(m)
        return b is not None and a.group(1) == b.group(1)
    return _word(t) and _word(m)


def _enum_value(tok: str) -> str:
    """The value an enumeration member holds at its position (``root`` of ``user=root``)."""
    a = _KEY_WORD.fullmatch(tok)
    return a.group(2) if a is not None else tok.strip(_EDGE)


def _globs(tokens: list[str]) -> dict[int, tuple[str, str]]:
    """Positions whose token is ``label<*>rest``: (the text before ``<*>``, the text after)."""
    out = {}
    for i, t in enumerate(tokens):
        if t != WILDCARD and WILDCARD in t:
            head, _, tail = t.partition(WILDCARD)
            out[i] = (head, tail)
    return out


_MONTHS = frozenset(x for m in ("January February March April May June July August September "
                               "October November December").split()
                    for x in (m, m[:3], m.upper(), m[:3].upper()))
_WEEKDAYS = frozenset(x for d in "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
                      for x in (d, d[:3], d.upper(), d[:3].upper()))


# the tokens that may be such a name: a message without one skips the walk (a set look-up in C)
_DATE_TOKENS = frozenset(x + p for x in _MONTHS | _WEEKDAYS for p in ("", ",", "."))
_DATE_WORDS = _MONTHS | _WEEKDAYS


def _mask_date_names(tokens: list[str]) -> None:
    """Mask the month and weekday names of a date written inside a message
    (``at Sat Jun <NUM> <NUM>:<NUM>:<NUM> <NUM>`` -> ``at <DATE> <DATE> <NUM> ...``): a name
    next to a day number (``Jun 14``, ``14 Jun``) or a weekday before a month is a value, not
    wording. A name alone (``May I``, ``Sun``) is left as it is. One set look-up a token."""
    n = len(tokens)
    for i, tok in enumerate(tokens):
        word = tok.rstrip(",.")
        # a name is 3-9 letters: what is not one is passed over with one set look-up
        if word not in _DATE_WORDS or len(tok) > 10:
            continue
        if word in _MONTHS:
            prv = tokens[i - 1] if i else ""
            nxt = tokens[i + 1] if i + 1 < n else ""
            if (nxt.startswith("<NUM>") or prv.startswith("<NUM>") or prv == "<DATE>"
                    or prv.rstrip(",") in _WEEKDAYS):
                tokens[i] = "<DATE>" + tok[len(word):]
        elif word in _WEEKDAYS:
            nxt = tokens[i + 1] if i + 1 < n else ""
            if nxt.rstrip(",.") in _MONTHS or nxt.startswith("<NUM>"):
                tokens[i] = "<DATE>" + tok[len(word):]


def _is_variable(tok: str) -> bool:
    return tok == WILDCARD or _VARIABLE.search(tok) is not None


def _same_slot(a: str, b: str) -> bool:
    """Two variable-like tokens are values of one slot when their constant heads agree."""
    ha = _HEAD.match(a).group()
    hb = _HEAD.match(b).group()
    return ha.startswith(hb) or hb.startswith(ha)


def _label(tok: str) -> str:
    """The constant label of a variable-like token: its head up to the last separator
    (``uid=`` of ``uid=0``, ``instruction......`` of ``instruction......0``); none when
    the number is glued to a word (``sda1``, ``web3``: an identifier, a value as a whole)."""
    head = _HEAD.match(tok).group()
    for k in range(len(head) - 1, -1, -1):
        if not head[k].isalnum():
            # ``_`` and ``~`` join the parts of one identifier (``pkg_for_KB1``, ``a~b~1``)
            return "" if head[k] in _JOINERS else head[:k + 1]
    return ""


def _different_labels(a: str, b: str) -> bool:
    """Two values of *different* labelled fields (``illegal instruction......0`` vs
    ``imprecise exception......0``): the labels are wording, a constant difference."""
    la, lb = _label(a), _label(b)
    return bool(la) and bool(lb) and not (la.startswith(lb) or lb.startswith(la))


def _cut_prefix(p: str) -> str:
    """Cut a common prefix back to just after a separator, so no word (or mask) is split."""
    for k in range(len(p) - 1, -1, -1):
        c = p[k]
        if not c.isalnum() and c not in "<>*":
            return p[:k + 1]
    return ""


def _cut_suffix(s: str) -> str:
    for k, c in enumerate(s):
        if not c.isalnum() and c not in "<>*":
            return s[k:]
    return ""


def _generalise(t: str, m: str) -> str:
    """The template token that covers ``t`` (a template token) and ``m`` (a line's token):
    their common constant label and ending around ``<*>`` (``user=<*>``, ``(<*>)``,
    ``instruction......<*>``), or ``<*>`` when they share none."""
    literal = WILDCARD not in t
    if literal:
        head = tail = t
    else:
        head, _, tail = t.partition(WILDCARD)
    n = min(len(head), len(m))
    k = 0
    while k < n and head[k] == m[k]:
        k += 1
    pre = _cut_prefix(head[:k])
    # the ending may not overlap the label, in the line's token or in a literal template token
    n = min(len(tail) - (len(pre) if literal else 0), len(m) - len(pre))
    k = 0
    while k < n and tail[-1 - k] == m[-1 - k]:
        k += 1
    suf = _cut_suffix(tail[len(tail) - k:]) if k else ""
    if not pre and not suf:
        return WILDCARD
    return pre + WILDCARD + suf


def _split(text: str) -> list[str]:
    """The tokens of a message: split at whitespace, except inside a double-quoted string
    (``tag="View Lock",`` is one token, one value): a token with an odd number of ``"`` opens
    a string that the next such token, at most ``QUOTE_SPAN`` tokens on, closes; with no
    close in reach (a stray quote) the tokens stay apart. Masks never hold a quote, so a
    message and its masked form split alike. Linear: each token's quotes are counted once."""
    toks = text.split()
    if '"' not in text:
        return toks
    odd = [t.count('"') & 1 for t in toks]
    out = []
    i, n = 0, len(toks)
    while i < n:
        if odd[i]:
            for j in range(i + 1, min(n, i + QUOTE_SPAN)):
                if odd[j]:
                    out.append(" ".join(toks[i:j + 1]))
                    i = j + 1
                    break
            else:
                out.append(toks[i])
                i += 1
        else:
            out.append(toks[i])
            i += 1
    return out


def _shape(tok: str) -> str:
    return _WORDS.sub("w", tok)


def _same_quoted(a: str, b: str) -> bool:
    """Two tokens that differ only inside their quotes (``tag="AudioMix",`` and
    ``tag="View Lock",``): a quoted string is one value, so they are values of one slot."""
    i = a.find('"')
    if i < 0 or b.find('"') != i or a[:i] != b[:i]:
        return False
    k, j = a.rfind('"'), b.rfind('"')
    return k > i and j > i and a[k:] == b[j:]


def _null_fits(a: str, b: str) -> bool:
    """A null literal stands for any value (``ws=null,`` and ``ws=WorkSource{1},``): the
    text around it is the other token's."""
    for x, y in ((a, b), (b, a)):
        mt = _NULL.search(x)
        if mt is not None:
            pre, post = x[:mt.start()], x[mt.end():]
            if len(y) >= len(pre) + len(post) and y.startswith(pre) and y.endswith(post):
                return True
    return False


def _same_shape(a: str, b: str) -> bool:
    """Same punctuation skeleton; a value slot (a word after = ( [ { : ' ") may be empty.

    Linear in the tokens' length and compiles nothing (a regex built per line cost 310 ms on
    a 60 KB token): the skeletons alternate word runs (``w``) and punctuation, never two
    ``w`` in a row, so one left-to-right walk decides whether the shorter skeleton is the
    longer one with some optional word runs left out."""
    sa, sb = _shape(a), _shape(b)
    if sa == sb:
        return True
    if len(sa) < len(sb):
        sa, sb = sb, sa
    j, nb = 0, len(sb)
    prev = ""
    for ch in sa:
        if j < nb and sb[j] == ch:
            j += 1  # the same punctuation, or a word run in both
        elif ch != "w" or not prev or prev not in _OPTIONAL_AFTER:
            return False  # a differing mark, or a word run that may not be left out
        prev = ch
    return j == nb


def _family_id(family: _Family | None) -> str | None:
    """An enumeration's id in checkpoints: its smallest member id."""
    if family is None or not family.members:
        return None
    return min(m.cluster_id for m in family.members)


def _restored_group(cid, row: tuple) -> _Group:
    if len(row) == 6:  # version 5: sequential ids, which were the creation order
        row = (*row, cid)
    tokens, size, _fid, key, last, _young, born = row
    g = _Group(_legacy_id(cid), list(tokens), tuple(key), last, born)
    g.size = size
    return g


def _memo_target(group: _Group) -> _Group | None:
    """What a message memo entry stands for: the group its lines join (merges followed), or
    None when that group was evicted. A memo hit does the same with the entry as with this,
    so a checkpoint keeps this (an id) instead of the entry's group."""
    while group.merged_into is not None:
        group = group.merged_into
    return None if group.evicted else group


class TemplateMiner:
    """Drain-style online grouping over masked tokens; one pass, picklable.

    ``sim_th``: the share of positions that must match; ``established``: the group size from
    which the first two tokens are taken as constants; ``enumeration``: how many words at one
    position (a plain word, or the value of a ``key=value`` token) stay apart before they
    are taken as a variable (1: none stay apart); ``depth`` and
    ``max_clusters`` are accepted for compatibility with the Drain3-based miner (the tree
    uses one prefix token). ``max_templates``, ``max_tokens``, ``search_budget`` and
    ``memo_chars``: the bounds (module docs, "Bounds").
    """

    def __init__(self, *, sim_th: float = 0.75, depth: int = 4, max_clusters: int | None = None,
                 cache_size: int = 100_000, established: int = 3, leading: int = 2,
                 enumeration: int = ENUMERATION, max_templates: int = MAX_TEMPLATES,
                 max_tokens: int = MAX_TEMPLATE_TOKENS, search_budget: int = SEARCH_BUDGET,
                 memo_chars: int = MEMO_CHARS):
        self.sim_th = sim_th
        self.established = established
        self.leading = leading
        self.enumeration = enumeration
        self._init_bounds(max_templates, max_tokens, search_budget, memo_chars)
        # id of a group merged into another -> that group's id (see ``resolve``)
        self.aliases: dict[int, int] = {}
        self.clusters_counter = 0
        self._leaves: dict[tuple, list[_Group]] = {}
        self._count = 0
        self._masks = [(re.compile(p), f"<{name}>") for p, name in MASKS]
        # memos (token -> masked token, masked message -> its group), written to checkpoints
        # row by row (streams.keyed)
        self._tokens: dict[str, str] = TrackedDict()
        self._cache: dict[str, _Group] = TrackedDict()
        # word value -> the enumerations (families) that hold it (see ``_shared``)
        self._families: dict[str, list[_Family]] = {}
        self.cache_size = cache_size
        self.version = STATE_VERSION

    def _init_bounds(self, max_templates: int, max_tokens: int, search_budget: int,
                     memo_chars: int) -> None:
        self.max_templates = max_templates
        self.max_tokens = max_tokens
        self.search_budget = search_budget
        self.memo_chars = memo_chars
        self.lines = 0  # lines mined: the clock of ``_Group.last``
        self.merge_count = len(getattr(self, "aliases", ()))  # ids merged away, ever
        self.evicted = 0  # templates evicted so far
        self._held = 0  # tokens of the kept templates
        self._memo_chars = [0, 0]  # characters in the token memo and the message memo
        # kept groups by id, least recently joined first: those that have not reached
        # ``established`` lines yet, and the others (eviction takes the first of the former)
        self._young: dict[int, _Group] = {}
        self._old: dict[int, _Group] = {}

    # -- pickling (and migration of checkpoints made with the Drain3-based miner) --------------
    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_masks", None)  # compiled patterns: rebuilt on load
        state.pop("_row_views", None)  # a checkpoint writer's bookkeeping
        views = self.__dict__.get("_row_views")
        if views is not None and id(views[0]) in EXTERNAL_ROWS.get():
            # the templates are rows beside the pickle (``keyed_maps``): so are their indexes
            state.update(_leaves=None, _young=None, _old=None, _families=None)
        return state

    # -- checkpoint rows ---------------------------------------------------------------------------
    def _group_rows(self) -> dict:
        """Every kept template: id -> (tokens, size, its enumeration's id, leaf key, last line,
        young, born). Merged and evicted groups are gone (their ids live on in ``aliases``)."""
        rows = {}
        for groups, young in ((self._young, True), (self._old, False)):
            for cid, g in groups.items():
                rows[cid] = (g.tokens, g.size, _family_id(g.family), g.key, g.last, young,
                             g.born)
        return rows

    def _family_rows(self) -> dict:
        fams = {id(g.family): g.family for d in (self._young, self._old) for g in d.values()
                if g.family is not None}
        for fs in self._families.values():
            fams.update((id(f), f) for f in fs)
        return {_family_id(f): (f.pos, [m.cluster_id for m in f.members])
                for f in fams.values() if f.members}

    def _word_rows(self) -> dict:
        return {w: [_family_id(f) for f in fs if f.members] for w, fs in self._families.items()}

    def _restore_groups(self, rows: dict) -> None:
        if any(not isinstance(cid, str) for cid in rows):
            self._legacy_ids = True  # (Pipeline.upgrade: the next checkpoint rewrites every row)
        self._restoring = {_legacy_id(cid): (_restored_group(cid, row),
                                             None if row[2] is None else _legacy_id(row[2]),
                                             row[5])
                           for cid, row in rows.items()}

    def _restore_families(self, rows: dict) -> None:
        groups = self._restoring
        fams = {}
        for fid, (pos, members) in rows.items():
            members = [_legacy_id(c) for c in members]
            f = fams[_legacy_id(fid)] = _Family(pos, groups[members[0]][0])
            f.members = [groups[c][0] for c in members]
        for g, fid, _young in groups.values():
            g.family = fams.get(fid) if fid is not None else None
        self._restoring_families = fams

    def _restore_words(self, rows: dict) -> None:
        """The last of the template maps: link everything and rebuild the indexes (leaves in
        the order their groups were made, young and old ones in the order they were last
        joined)."""
        fams = self.__dict__.pop("_restoring_families", {})
        groups = self.__dict__.pop("_restoring", {})
        self._families = {w: [fams[f] for f in map(_legacy_id, fids) if f in fams]
                          for w, fids in rows.items()}
        self._young, self._old, self._leaves = {}, {}, {}
        for g, _fid, young in sorted(groups.values(), key=lambda t: (t[0].last, t[0].born)):
            (self._young if young else self._old)[g.cluster_id] = g
        for g, _fid, _young in sorted(groups.values(), key=lambda t: t[0].born):
            self._leaves.setdefault(g.key, []).append(g)
        self.__dict__["_cache_groups"] = {cid: t[0] for cid, t in groups.items()}
        for view in self._row_views:
            view.prime()

    def keyed_maps(self) -> dict[str, Rows]:
        """The templates (groups, enumerations, the index of their words) and the memos, for a
        checkpoint that writes them row by row (``streams.keyed``); in this order on load."""
        views = self.__dict__.get("_row_views")
        if views is None:
            views = self._row_views = (DiffRows(self._group_rows), DiffRows(self._family_rows),
                                       DiffRows(self._word_rows))

        def group(cluster_id) -> _Group:
            """A memo row's group. The row was written when its entry was set; the group may
            have been merged or evicted since (that changes no entry): merges are followed
            through ``aliases`` as a hit follows ``merged_into``, and a group that is gone is
            an evicted one, as it is to a hit. (None, or -1 before version 6: evicted.)"""
            if cluster_id is None or cluster_id == -1:
                return _EVICTED
            groups = self.__dict__["_cache_groups"]
            n = _legacy_id(cluster_id)
            g = groups.get(n)
            hops = 0
            while g is None and n in self.aliases and hops <= len(self.aliases):
                n = self.aliases[n]
                g = groups.get(n)
                hops += 1
            return _EVICTED if g is None else g

        def group_id(g: _Group) -> str | None:
            target = _memo_target(g)
            return None if target is None else target.cluster_id

        def fill_messages(rows: dict) -> None:
            self._cache.fill(rows)
            self.__dict__.pop("_cache_groups", None)

        return {"groups": Rows(views[0], None, self._restore_groups),
                "families": Rows(views[1], None, self._restore_families),
                "words": Rows(views[2], None, self._restore_words),
                "tokens": Rows(self._tokens, self._tokens, self._tokens.fill),
                "messages": Rows(self._cache, self._cache, fill_messages,
                                 encode=group_id, decode=group)}

    def __setstate__(self, state):
        if "drain" in state:  # a checkpoint of the Drain3-based miner: carry its groups over
            old = state["drain"]
            fresh = TemplateMiner(cache_size=state.get("cache_size", 100_000))
            for c in sorted(old.clusters, key=lambda c: c.cluster_id):
                toks = list(c.log_template_tokens)
                g = _Group(_legacy_id(c.cluster_id), toks, born=c.cluster_id)
                g.size = c.size
                fresh._leaves.setdefault(fresh._key(toks), []).append(g)
                fresh._count += 1
            fresh.clusters_counter = old.clusters_counter
            state = fresh.__dict__
            state.pop("_masks", None)
            state.pop("_young")  # the groups were added as they were: ordered below
        state.setdefault("enumeration", ENUMERATION)  # version 3 added enumerations
        state.setdefault("aliases", {})
        if "_young" not in state:  # version 4 added the bounds: order the groups by id
            for k, v in (("max_templates", MAX_TEMPLATES), ("max_tokens", MAX_TEMPLATE_TOKENS),
                         ("search_budget", SEARCH_BUDGET), ("memo_chars", MEMO_CHARS),
                         ("lines", 0), ("evicted", 0)):
                state.setdefault(k, v)
            state["merge_count"] = len(state["aliases"])
            young, old, held = {}, {}, 0
            for key, leaf in state["_leaves"].items():
                for g in leaf:
                    g.key = key
            for g in sorted((g for leaf in state["_leaves"].values() for g in leaf),
                            key=lambda g: g.born):
                (young if g.size < state.get("established", 3) else old)[g.cluster_id] = g
                held += len(g.tokens)
            state.update(_young=young, _old=old, _held=held, _memo_chars=[
                sum(map(len, state.get("_tokens", ()))), sum(map(len, state.get("_cache", ())))])
        if state.get("version", 1) < 2:
            # masks changed since (version 1 masked an address with its port as one <IP>): the
            # memos of masked tokens and messages are dropped; the groups and ids are kept
            # and still take the same lines (<IP> and <IP>:<NUM> are values of one slot)
            state["_tokens"] = {}
            state["_cache"] = {}
            state["_memo_chars"] = [0, 0]
        for memo in ("_tokens", "_cache"):  # plain dicts before checkpoints wrote them as rows
            if not isinstance(state[memo], TrackedDict):
                state[memo] = TrackedDict(state[memo])
        if state.get("version", 1) < 6:  # sequential ids: the numbers n are the ids "Tn"
            state["_legacy_ids"] = True
            state["aliases"] = {_legacy_id(k): _legacy_id(v) for k, v in state["aliases"].items()}
            for name in ("_young", "_old"):
                if state.get(name):
                    state[name] = {_legacy_id(k): v for k, v in state[name].items()}
        state["version"] = STATE_VERSION
        self.__dict__.update(state)
        self._masks = [(re.compile(p), f"<{name}>") for p, name in MASKS]
        if "_families" not in state:  # version 4 indexed no enumeration by its words
            self._families = {}
            fams = {id(g.family): g.family for leaf in self._leaves.values() for g in leaf
                    if g.family is not None}
            for f in fams.values():
                for m in f.members:
                    self._index(f, m)

    # -- public ------------------------------------------------------------------------------
    @property
    def template_count(self) -> int:
        return self._count

    def resolve(self, template_id: str) -> str:
        """The id a template has now: an id emitted before its enumeration merged, or before
        the catalog named its template otherwise (``adopt``), names the group that took it
        over; any other id is returned as is."""
        aliases = self.aliases
        hops = 0
        while template_id in aliases and hops <= len(aliases):  # (no cycle is ever made)
            template_id = aliases[template_id]
            hops += 1
        return template_id

    def merges(self) -> dict[str, str]:
        """Every id merged away so far → the id that took it over. A store rewrites its events
        with these (``merge_templates``), so a search by the surviving id finds the lines
        emitted before the merge too."""
        return {old: self.resolve(old) for old in self.aliases}

    def adopt(self, aliases: dict[str, str]) -> dict[str, str]:
        """Take the catalog's names (``streams.catalog.converge``: id -> the canonical id of
        its template, from the store): a kept template named by an alias is renamed to the
        canonical id (or, when this miner keeps that one too, folded into it), and the alias
        is remembered, so ``resolve`` maps it and new lines carry the canonical id. Aliases of
        ids this miner does not use are not kept (so this miner's aliases stay bounded by its
        own ids). Returns the ids whose name changed here (old -> new; the caller carries marks
        over). Idempotent: aliases already taken cost a dict look-up each."""
        changed: dict[str, str] = {}
        for old, new in sorted(aliases.items()):
            target = self.resolve(new)
            current = self.resolve(old)
            if current == target or old == new:
                continue
            group = self._live(current)
            if group is None and old not in self.aliases:
                continue  # an id this miner does not use (another's, or evicted): no alias
            into = self._live(target)
            if group is not None and into is not None:
                self._fold(group, into)
            elif group is not None:
                self._rename(group, target)
            else:
                self.aliases[current] = target
            changed[old] = target
        return changed

    def _live(self, template_id: str) -> _Group | None:
        return self._young.get(template_id) or self._old.get(template_id)

    def _rename(self, group: _Group, new_id: str) -> None:
        """Give a kept template another id (its place in every index stays); the old id becomes
        an alias of it."""
        old = group.cluster_id
        for name in ("_young", "_old"):
            d = getattr(self, name)
            if old in d:
                setattr(self, name, {(new_id if k == old else k): v for k, v in d.items()})
        group.cluster_id = new_id
        self.aliases.pop(new_id, None)
        self.aliases[old] = new_id

    def _fold(self, group: _Group, into: _Group) -> None:
        """Two kept templates the catalog says are one: ``into`` takes ``group``'s lines (its
        text stays as it is) and ``group``'s id becomes an alias."""
        family = group.family
        if family is not None:
            self._unindex(family, [group])
            family.members.remove(group)
            group.family = None
        leaf = self._leaves.get(group.key)
        if leaf is not None and group in leaf:
            leaf.remove(group)
            if not leaf:
                del self._leaves[group.key]
        into.size += group.size
        group.merged_into = into
        self._forget(group)
        self.aliases[group.cluster_id] = into.cluster_id

    def mask(self, message: str) -> str:
        """Mask variable tokens. Masks never span whitespace, so each token is masked alone,
        only when it could hold a variable (a digit, '@' or '/'), and memoised."""
        return " ".join(self._masked(message.split()))

    def _masked(self, tokens: list[str]) -> list[str]:
        """``mask`` of a message split at whitespace (``tokens``), as a new list of tokens."""
        cache = self._tokens
        # every token memoised (most lines): one lookup each in a comprehension; from the
        # first token not memoised on, token by token as below (the memo's state after the
        # line is the same either way: a lookup changes nothing)
        out = list(map(cache.get, tokens))
        if None in out:
            first = out.index(None)
            del out[first:]
            self._mask_rest(tokens, first, out)
        if not _DATE_TOKENS.isdisjoint(out):
            _mask_date_names(out)
        return out

    def _mask_rest(self, tokens: list[str], first: int, out: list[str]) -> None:
        """``_masked``'s tokens from ``first`` on, appended to ``out``, memoising each."""
        cache = self._tokens
        for tok in tokens[first:]:
            masked = cache.get(tok)
            if masked is None:
                masked = self._mask_token(tok) if _MAYBE_VARIABLE.search(tok) else tok
                chars = self._memo_chars
                if len(cache) >= self.cache_size or chars[0] >= self.memo_chars:
                    cache.clear()
                    chars[0] = 0
                cache[tok] = masked
                chars[0] += len(tok)
            out.append(masked)

    def mine(self, message: str) -> MinedTemplate:
        # split once: the masking and the values (``_params``) read the same tokens, unless a
        # quoted string makes the values' tokens differ (``_split``)
        tokens = message.split()
        masked = " ".join(self._masked(tokens))
        self.lines += 1
        group = self._cache.get(masked)
        is_new = False
        if group is not None and group.merged_into is not None:
            while group.merged_into is not None:
                group = group.merged_into
            self._cache[masked] = group
        if group is not None and group.evicted:
            group = None  # its template was evicted: the line looks for a group again
        if group is None:
            group, is_new = self._add(_split(masked))
            chars = self._memo_chars
            if len(self._cache) >= self.cache_size or chars[1] >= self.memo_chars:
                self._cache.clear()
                chars[1] = 0
            self._cache[masked] = group
            chars[1] += len(masked)
        else:
            group.size += 1
        self._touch(group)
        template = group.template
        # positional (template_id, template, params, is_new, seen_before): the hot path
        return MinedTemplate(group.cluster_id, template,
                             _params(message, group, None if '"' in message else tokens),
                             is_new, group.size - 1)

    # -- internals -----------------------------------------------------------------------------
    def _mask_token(self, tok: str) -> str:
        for regex, repl in self._masks:
            tok = regex.sub(repl, tok)
        return tok

    @staticmethod
    def _key(tokens: list[str]) -> tuple:
        if not tokens:
            return (0, "")
        first = tokens[0]
        return (len(tokens), WILDCARD if _is_variable(first) else first)

    def _add(self, tokens: list[str]) -> tuple[_Group, bool]:
        key = self._key(tokens)
        leaf = self._leaves.setdefault(key, [])
        best = self._best(leaf, tokens)
        if best is None:
            return self._new_group(key, leaf, tokens), True
        group, differ, enum = best
        if enum is not None:
            family = group.family
            if family is None:
                family = group.family = _Family(enum, group)
                self._index(family, group)
            value = _enum_value(tokens[enum])
            if len(family.members) < self.enumeration and not self._shared(family, value):
                # another value of the enumeration: a group of its own, beside its siblings
                toks = list(group.tokens)
                for i in differ:
                    toks[i] = tokens[i] if i == enum else _generalise(toks[i], tokens[i])
                sibling = self._new_group(key, leaf, toks, keep=group)
                sibling.family = family
                family.members.append(sibling)
                self._index(family, sibling)
                return sibling, True
            group = self._merge(family, leaf)
            differ = [i for i, t in enumerate(group.tokens) if t != tokens[i]]
        elif group.family is not None and group.family.pos in differ:
            # a value unlike the enumeration's words (a number, an id) at its position: the
            # position is a variable, and the siblings are one group
            group = self._merge(group.family, leaf)
            differ = [i for i, t in enumerate(group.tokens) if t != tokens[i]]
        group.size += 1
        if differ:
            before = group.template
            for i in differ:
                group.tokens[i] = _generalise(group.tokens[i], tokens[i])
            group.changed()
            if group.template != before:
                self._note("generalised", group.cluster_id, group.template, before)
        return group, False

    def _merge(self, family: _Family, leaf: list[_Group]) -> _Group:
        """One value too many: the enumeration is a variable after all. Its first group takes
        the others' lines and ``key=<*>``; the merged template is named by the smallest of
        the members' ids (the catalog's rule, ``streams.catalog.canonical_id``, so a miner
        that met the words in another order names it alike), the other ids become aliases."""
        self._unindex(family)
        first, *others = family.members
        name = min(m.cluster_id for m in family.members)
        before = first.template
        for other in others:
            first.size += other.size
            for i, t in enumerate(other.tokens):
                if first.tokens[i] != t:
                    first.tokens[i] = _generalise(first.tokens[i], t)
            other.merged_into = first
            other.family = None
            leaf.remove(other)
            self._forget(other)
        for other in others:  # (the id named may be one of theirs: free now)
            if other.cluster_id != name:
                self._note("merged", other.cluster_id, other.template, other.template, into=name)
                self.aliases[other.cluster_id] = name
                self.merge_count += 1
        if first.cluster_id != name:
            self._note("merged", first.cluster_id, first.template, first.template, into=name)
            self._rename(first, name)
            self.merge_count += 1
        if len(self.aliases) > MAX_ALIASES:
            self.aliases = dict(islice(self.aliases.items(), len(self.aliases) // 2, None))
        first.family = None
        first.changed()
        if first.template != before:
            self._note("generalised", first.cluster_id, first.template, before)
        return first

    # -- enumerations: word values shared between families -------------------------------------
    def _index(self, family: _Family, member: _Group) -> None:
        value = _enum_value(member.tokens[family.pos])
        fams = self._families.setdefault(value, [])
        fams.append(family)
        if len(fams) > FAMILIES_PER_WORD:  # bounded look-ups: the oldest are forgotten
            del fams[0]

    def _unindex(self, family: _Family, members: list[_Group] | None = None) -> None:
        for m in family.members if members is None else members:
            value = _enum_value(m.tokens[family.pos])
            fams = self._families.get(value)
            if fams is not None:
                if family in fams:
                    fams.remove(family)
                if not fams:
                    del self._families[value]

    def _shared(self, family: _Family, value: str) -> bool:
        """Whether the enumeration's words, with ``value``, are the words of another
        enumeration too (two in common): the user names that open sessions also close them,
        so they are values of a variable, not a vocabulary of event kinds. The other
        enumeration is merged (its words become a variable there as well)."""
        # in the members' order (not a set's: string hashing differs between processes, and
        # a replay must merge the same enumerations)
        values = dict.fromkeys([*(_enum_value(m.tokens[family.pos]) for m in family.members),
                                value])
        common: dict[int, tuple[_Family, set[str]]] = {}
        for v in values:
            for f in self._families.get(v, ()):
                if f is not family:
                    common.setdefault(id(f), (f, set()))[1].add(v)
        shared = [f for f, words in common.values() if len(words) >= SHARED_VALUES]
        for f in shared:
            leaf = self._leaves.get(f.members[0].key) if f.members else None
            if leaf is not None:
                self._merge(f, leaf)
        return bool(shared)

    # -- change records (the template catalog's history, streams.catalog) -----------------------
    # None: nobody listens (the default); a list: ``_note`` appends (kind, id, template, previous
    # template, id merged into) to it, and the listener (``Pipeline``) empties it after each line.
    # A class attribute, so states pickled before it load with it off.
    changes: list | None = None

    def _note(self, kind: str, tid: str, template: str, before: str,
              into: str | None = None) -> None:
        if self.changes is not None:
            self.changes.append((kind, tid, template, before, into))

    # -- bounds ------------------------------------------------------------------------------------
    def _candidates(self, n: int) -> int:
        """How many groups a leaf of ``n``-token lines keeps: the search budget in token
        comparisons over ``n``, within [MIN_CANDIDATES, MAX_CANDIDATES]."""
        return max(MIN_CANDIDATES, min(MAX_CANDIDATES, self.search_budget // max(n, 1)))

    def _new_group(self, key: tuple, leaf: list[_Group], tokens: list[str],
                   keep: _Group | None = None) -> _Group:
        """A new group in ``leaf``, after making room: in the leaf (its least recently joined
        group, young ones first) and in the whole miner (the same order, over all groups)."""
        while len(leaf) >= self._candidates(len(tokens)):
            young = [g for g in leaf if g.size < self.established and g is not keep]
            pool = young or [g for g in leaf if g is not keep]
            if not pool:
                break
            self._evict(min(pool, key=lambda g: g.last))
        self.clusters_counter += 1
        self._count += 1
        group = _Group(self._new_id(tokens), tokens, key, self.lines, self.clusters_counter)
        leaf.append(group)
        self._young[group.cluster_id] = group
        self._held += len(tokens)
        while ((self._count > self.max_templates or self._held > self.max_tokens)
               and self._count > 1):
            victim = next((g for g in (*islice(self._young.values(), 3),
                                       *islice(self._old.values(), 3))
                           if g is not group and g is not keep), None)
            if victim is None:  # only the new group and the one it was made from are left
                break
            self._evict(victim)
        return group

    def _new_id(self, tokens: list[str]) -> str:
        """The id of a template made from ``tokens`` (``template_id_for``). An id a kept
        template of this miner has (a chance collision, or a template made again from the
        same tokens while the first one lives on) is rehashed with a salt, 1, 2, ... An id
        that is an alias (merged away, or renamed by the catalog) is taken as it is: the new
        template is the one the catalog knows by it (the stores map it to its canonical id,
        and the next ``adopt`` renames it), so no id the catalog has never seen is made; the
        aliases that led through it keep their target."""
        cid, salt = template_id_for(tokens), 0
        while cid in self._young or cid in self._old:
            salt += 1
            cid = template_id_for(tokens, salt)
        target = self.aliases.pop(cid, None)
        if target is not None:
            for k, v in self.aliases.items():
                if v == cid:
                    self.aliases[k] = target
        return cid

    def _touch(self, group: _Group) -> None:
        """A line joined ``group``: it becomes the most recently joined (and, from
        ``established`` lines on, leaves the young ones)."""
        group.last = self.lines
        cid = group.cluster_id
        young = self._young.pop(cid, None)
        if young is not None and group.size < self.established:
            self._young[cid] = group
        else:
            self._old.pop(cid, None)
            self._old[cid] = group

    def _forget(self, group: _Group) -> None:
        self._young.pop(group.cluster_id, None)
        self._old.pop(group.cluster_id, None)
        self._count -= 1
        self._held -= len(group.tokens)

    def _evict(self, group: _Group) -> None:
        """Drop a group for good: a line it took comes back as a new group, with a new id."""
        leaf = self._leaves.get(group.key)
        if leaf is not None:
            leaf.remove(group)
            if not leaf:
                del self._leaves[group.key]
        family = group.family
        if family is not None:
            self._unindex(family, [group])
            family.members.remove(group)
            group.family = None
        group.evicted = True
        self.evicted += 1
        self._forget(group)

    def _best(self, leaf: list[_Group], tokens: list[str]):
        n = len(tokens)
        if n == 0:
            return (leaf[0], [], None) if leaf else None
        var = [_is_variable(t) for t in tokens]
        # a group that misses more positions than this cannot reach ``sim_th``: left early
        misses_allowed = n - self.sim_th * n
        scored = []
        for g in leaf:
            match = 0
            words = []
            differ = []
            globs = g.globs
            constant = False
            for i, t in enumerate(g.tokens):
                m = tokens[i]
                if t == m or t == WILDCARD:
                    match += 1
                    continue
                if i in globs:
                    head, tail = globs[i]
                    if (len(m) >= len(head) + len(tail) and m.startswith(head)
                            and m.endswith(tail)):
                        match += 1  # the label matches; the value is the slot's
                        continue
                if var[i] and _is_variable(t):
                    if _same_slot(t, m):
                        match += 1
                        differ.append(i)
                        continue
                    if _different_labels(t, m):
                        constant = True  # values of differently labelled fields
                        break
                if ('"' in m and _same_quoted(t, m)) or _null_fits(t, m):
                    match += 1  # another quoted string, or no value: values of one slot
                    differ.append(i)
                    continue
                if ("rue" in m or "alse" in m or "RUE" in m or "ALSE" in m) and (
                        _BOOLEAN.sub("~", t) == _BOOLEAN.sub("~", m)):
                    constant = True  # true/false: an outcome, told apart like any verb
                    break
                differ.append(i)
                words.append(i)
                if len(words) > misses_allowed:
                    constant = True  # too many differences already: not a candidate
                    break
            if constant:
                continue
            sim = match / n
            if sim >= self.sim_th:
                scored.append((sim, g.size, g, differ, words))
        scored.sort(key=lambda s: (-s[0], -s[1]))
        for _sim, size, g, differ, words in scored:
            enum = None
            if words:
                if size >= self.established and words[0] < self.leading:
                    continue
                if not all(_same_shape(g.tokens[i], tokens[i]) for i in words):
                    continue
                if len(words) == 1 and _enumerable(g.tokens[words[0]], tokens[words[0]]):
                    i = words[0]
                    if g.family is None or g.family.pos == i:
                        enum = i
            return g, differ, enum
        return None


def _placeholders(tokens: list[str]) -> list[tuple[int, tuple[str, ...] | None]]:
    """(position, constant pieces around its placeholders) of each template token that has
    placeholders; pieces None for a plain placeholder (the whole token is the value)."""
    out = []
    for i, t in enumerate(tokens):
        if "<" not in t:
            continue
        pieces = tuple(_MASK.split(t))
        if len(pieces) == 1:
            continue  # no placeholder, only a '<'
        out.append((i, None if pieces == ("", "") else pieces))
    return out


def _values(tok: str, pieces: tuple[str, ...], out: list[str]) -> None:
    """The values of one token, one per placeholder of its template token: the label and
    the punctuation around them are constant text (``uid=0`` -> ``0``, ``10.0.0.1:22`` for
    ``<IP>:<NUM>`` -> ``10.0.0.1``, ``22``). A token that does not fit gives itself (and empty
    values), so a template always yields the same number of values."""
    pre, post = pieces[0], pieces[-1]
    k = len(pieces) - 1
    if len(tok) >= len(pre) + len(post) and tok.startswith(pre) and tok.endswith(post):
        body = tok[len(pre):len(tok) - len(post)]
        if k == 1:
            out.append(body)
            return
        vals = []
        pos = 0
        for lit in pieces[1:-1]:  # each value ends at the next constant piece
            j = body.find(lit, pos + 1) if lit else -1
            if j < 0:
                break
            vals.append(body[pos:j])
            pos = j + len(lit)
        else:
            vals.append(body[pos:])
            out.extend(vals)
            return
    out.append(tok)
    out.extend([""] * (k - 1))


def _params(message: str, group: _Group, tokens: list[str] | None = None) -> list[str]:
    """The values of the message where its template has placeholders (a positional diff):
    one per placeholder, without the constant label around it. ``tokens``: the message's
    ``_split`` when the caller has it already."""
    if tokens is None:
        tokens = _split(message)
    if len(tokens) != len(group.tokens):
        return []
    out: list[str] = []
    for i, pieces in group.placeholders:
        if pieces is None:
            out.append(tokens[i])
            continue
        tok = tokens[i]
        if len(pieces) == 2:  # one labelled placeholder (``uid=<NUM>``): inline
            pre, post = pieces
            if tok.startswith(pre) and tok.endswith(post) and len(tok) >= len(pre) + len(post):
                out.append(tok[len(pre):len(tok) - len(post)])
                continue
        _values(tok, pieces, out)
    return out


class MergeNotices:
    """Which of a miner's merges a store has been told of by this process, so a batch carries
    ``TemplateMiner.merges()`` only when a merge happened since. It starts at none told: after
    a start every merge is sent again (a crash may have come between a batch's write and its
    merge; re-applying one is harmless); ``retry()`` after a failed rewrite does the same."""

    def __init__(self) -> None:
        self.told = 0

    def news(self, miner: TemplateMiner) -> dict[str, str] | None:
        n = miner.merge_count
        if n == self.told:
            return None
        self.told = n
        return miner.merges()

    def retry(self) -> None:
        self.told = 0


_EVICTED = _Group("", [])  # a memo entry restored from a checkpoint whose group was evicted
_EVICTED.evicted = True
