"""Online template mining: a Drain-style tree over masked tokens, with typed similarity.

``TemplateMiner.mine(message)`` returns the template a line belongs to, learned in one
pass. Variable tokens (IPs, hex, numbers, paths, e-mail addresses, ...) are masked first,
which keeps lines that differ only in such values in one group.

>>> m = TemplateMiner()
>>> a = m.mine("Accepted password for root from 10.0.0.1 port 22 ssh2")
>>> b = m.mine("Accepted password for alice from 10.0.0.7 port 4711 ssh2")
>>> a.template_id == b.template_id, b.template
(True, 'Accepted password for <*> from <IP> port <NUM> ssh2')
>>> b.params
['alice', '10.0.0.7', '4711']

Why not the Drain3 library: with its defaults it groups loghub's Linux and OpenSSH samples with
an accuracy of 0.684 and 0.718, and its similarity (a share of equal tokens) cannot say *which*
tokens may differ; the rule below needs that, so the tree is ours (bench/QUALITY.md has the
figures: 0.810 and 0.995 with this miner).

How a line finds its group (Drain's fixed-depth tree: He et al., ICWS 2017, made stricter
about *which* tokens may differ inside one group):

1. Candidate groups have the same number of tokens and the same first token (a first token
   that holds a variable is keyed as ``<*>``).
2. Each position of the line is compared with the group's template:

   * equal tokens, or a template position already generalised to ``<*>``: a match;
   * two *variable-like* tokens (holding a digit or a mask such as ``<IP>``) whose constant
     prefix agrees (``rhost=<IP>`` vs ``rhost=host-<NUM>.example.net``, ``<NUM>`` vs
     ``<HEX>``): a match as well: both are values of the same slot;
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

   Otherwise the line starts a new group. Differing positions of the joined group become
   ``<*>``. Groups never merge later and ids never change, so the template id emitted for
   a line is final (what the evaluation scores).

Two shortcuts keep it cheap: masks are applied per token, only to tokens that can hold a
variable, and memoised (the order of ``MASKS`` is the priority, as in Drain3), and a
masked message seen before goes straight to the group it joined last time (adding it again
could not change that group's template, which already covers it). Both caches are
bounded and part of the pickled state, so processing stays deterministic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MinedTemplate", "TemplateMiner", "MASKS"]

# Order matters: the first instruction that matches a span wins.
MASKS: tuple[tuple[str, str], ...] = (
    # starts only after a non-word character, so a long token costs linear time, not quadratic
    (r"((?<=[^\w.+-])|^)[\w.+-]+@[\w-]+(\.[\w-]+)+", "EMAIL"),
    (r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.){3}\d{1,3}(:\d{1,5})?((?=[^A-Za-z0-9])|$)", "IP"),
    (r"((?<=[^A-Za-z0-9])|^)([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}((?=[^A-Za-z0-9])|$)", "MAC"),
    (r"((?<=[^A-Za-z0-9])|^)(0x[a-fA-F0-9]+)((?=[^A-Za-z0-9])|$)", "HEX"),
    (r"((?<=[^A-Za-z0-9])|^)([a-fA-F0-9]{8,})((?=[^A-Za-z0-9])|$)", "HEX"),
    (r"((?<=[^A-Za-z0-9:/])|^)(/[\w.@%+-]+){2,}/?((?=[^A-Za-z0-9])|$)", "PATH"),
    (r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+(\.\d+)?)((?=[^A-Za-z0-9])|$)", "NUM"),
)

WILDCARD = "<*>"

_MAYBE_VARIABLE = re.compile(r"[\d@/]")
# a token holds a value when it has a digit or a mask
_VARIABLE = re.compile(r"[\d<]")
# the constant head of a variable-like token: what precedes its first digit or mask
_HEAD = re.compile(r"[^<\d]*")
# word runs (and masks) in a token; what is left is its punctuation skeleton
_WORDS = re.compile(r"(?:<[A-Z*]+>|[\w.-])+")
# a word run that may be empty in one line and filled in another: a value after = ( [ { : ' "
_OPTIONAL_AFTER = "=([{:'\""


@dataclass(slots=True, frozen=True)
class MinedTemplate:
    template_id: str
    template: str
    params: list[str]
    is_new: bool
    seen_before: int  # how many lines this template had before this one


class _Group:
    """One template: its tokens (``<*>`` where lines differed), size and id."""

    __slots__ = ("cluster_id", "tokens", "size", "template")

    def __init__(self, cluster_id: int, tokens: list[str]):
        self.cluster_id = cluster_id
        self.tokens = tokens
        self.size = 1
        self.template = " ".join(tokens)

    def __getstate__(self):
        return (self.cluster_id, self.tokens, self.size)

    def __setstate__(self, state):
        self.cluster_id, self.tokens, self.size = state
        self.template = " ".join(self.tokens)


def _is_variable(tok: str) -> bool:
    return tok == WILDCARD or _VARIABLE.search(tok) is not None


def _same_slot(a: str, b: str) -> bool:
    """Two variable-like tokens are values of one slot when their constant heads agree."""
    ha = _HEAD.match(a).group()
    hb = _HEAD.match(b).group()
    return ha.startswith(hb) or hb.startswith(ha)


def _shape(tok: str) -> str:
    return _WORDS.sub("w", tok)


def _same_shape(a: str, b: str) -> bool:
    """Same punctuation skeleton; a value slot (a word after = ( [ { : ' ") may be empty."""
    sa, sb = _shape(a), _shape(b)
    if sa == sb:
        return True
    if len(sa) < len(sb):
        sa, sb = sb, sa
    if sa.replace("w", "") != sb.replace("w", ""):
        return False
    # sb must be sa with some optional value slots left out
    pattern = []
    prev = ""
    for ch in sa:
        if ch == "w":
            pattern.append("w?" if prev and prev in _OPTIONAL_AFTER else "w")
        else:
            pattern.append(re.escape(ch))
        prev = ch
    return re.fullmatch("".join(pattern), sb) is not None


class TemplateMiner:
    """Drain-style online grouping over masked tokens; one pass, picklable.

    ``sim_th``: the share of positions that must match; ``established``: the group size from
    which the first two tokens are taken as constants; ``depth`` and ``max_clusters`` are
    accepted for compatibility with the Drain3-based miner (the tree uses one prefix token).
    """

    def __init__(self, *, sim_th: float = 0.75, depth: int = 4, max_clusters: int | None = None,
                 cache_size: int = 100_000, established: int = 3, leading: int = 2):
        self.sim_th = sim_th
        self.established = established
        self.leading = leading
        self.clusters_counter = 0
        self._leaves: dict[tuple, list[_Group]] = {}
        self._count = 0
        self._masks = [(re.compile(p), f"<{name}>") for p, name in MASKS]
        self._tokens: dict[str, str] = {}
        self._cache: dict[str, _Group] = {}
        self.cache_size = cache_size

    # -- pickling (and migration of checkpoints made with the Drain3-based miner) --------------
    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_masks", None)  # compiled patterns: rebuilt on load
        return state

    def __setstate__(self, state):
        if "drain" in state:  # a checkpoint of the Drain3-based miner: carry its groups over
            old = state["drain"]
            fresh = TemplateMiner(cache_size=state.get("cache_size", 100_000))
            for c in sorted(old.clusters, key=lambda c: c.cluster_id):
                toks = list(c.log_template_tokens)
                g = _Group(c.cluster_id, toks)
                g.size = c.size
                fresh._leaves.setdefault(fresh._key(toks), []).append(g)
                fresh._count += 1
            fresh.clusters_counter = old.clusters_counter
            state = fresh.__dict__
            state.pop("_masks", None)
        self.__dict__.update(state)
        self._masks = [(re.compile(p), f"<{name}>") for p, name in MASKS]

    # -- public ------------------------------------------------------------------------------
    @property
    def template_count(self) -> int:
        return self._count

    def bump_ids_past(self, max_id: int) -> None:
        """Never reuse an id already stored (used when state was lost or rolled back)."""
        if self.clusters_counter < max_id:
            self.clusters_counter = max_id

    def mask(self, message: str) -> str:
        """Mask variable tokens. Masks never span whitespace, so each token is masked alone,
        only when it could hold a variable (a digit, '@' or '/'), and memoised."""
        cache = self._tokens
        out = []
        for tok in message.split():
            masked = cache.get(tok)
            if masked is None:
                masked = self._mask_token(tok) if _MAYBE_VARIABLE.search(tok) else tok
                if len(cache) >= self.cache_size:
                    cache.clear()
                cache[tok] = masked
            out.append(masked)
        return " ".join(out)

    def mine(self, message: str) -> MinedTemplate:
        masked = self.mask(message)
        group = self._cache.get(masked)
        is_new = False
        if group is None:
            group, is_new = self._add(masked.split())
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[masked] = group
        else:
            group.size += 1
        template = group.template
        return MinedTemplate(
            template_id=f"T{group.cluster_id}",
            template=template,
            params=_params(message, template),
            is_new=is_new,
            seen_before=group.size - 1,
        )

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
        leaf = self._leaves.setdefault(self._key(tokens), [])
        best = self._best(leaf, tokens)
        if best is None:
            self.clusters_counter += 1
            self._count += 1
            group = _Group(self.clusters_counter, tokens)
            leaf.append(group)
            return group, True
        group, differ = best
        group.size += 1
        if differ:
            for i in differ:
                group.tokens[i] = WILDCARD
            group.template = " ".join(group.tokens)
        return group, False

    def _best(self, leaf: list[_Group], tokens: list[str]):
        n = len(tokens)
        if n == 0:
            return (leaf[0], []) if leaf else None
        var = [_is_variable(t) for t in tokens]
        scored = []
        for g in leaf:
            match = 0
            words = []
            differ = []
            for i, t in enumerate(g.tokens):
                m = tokens[i]
                if t == m or t == WILDCARD:
                    match += 1
                    continue
                differ.append(i)
                if var[i] and _is_variable(t) and _same_slot(t, m):
                    match += 1
                else:
                    words.append(i)
            sim = match / n
            if sim >= self.sim_th:
                scored.append((sim, g.size, g, differ, words))
        scored.sort(key=lambda s: (-s[0], -s[1]))
        for _sim, size, g, differ, words in scored:
            if words:
                if size >= self.established and words[0] < self.leading:
                    continue
                if not all(_same_shape(g.tokens[i], tokens[i]) for i in words):
                    continue
            return g, differ
        return None


def _params(message: str, template: str) -> list[str]:
    """Tokens of the message where the template has a placeholder (cheap positional diff)."""
    tokens = message.split()
    ttokens = template.split()
    if len(tokens) != len(ttokens):
        return []
    return [tok for tok, ttok in zip(tokens, ttokens) if ttok != tok and "<" in ttok]
