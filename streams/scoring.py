"""Online anomaly scoring: evidence in [0, 1] per kind of anomaly → one score → adaptive threshold.

Every line is scored *before* it is learned: each piece of evidence is computed from what
the scorer knew before the line, so a line never vouches for itself. All state (rates,
counts, the trees, the threshold histogram) is plain Python and picklable; nothing reads a
clock (times are the lines' own event times), so a replay gives the same scores.

Evidence (each in [0, 1]; 0 = nothing unusual). Surprisals ``s`` (in nats, or z-scores for
rates) become evidence through one ramp, ``1 - exp(-(s - s0) / k)`` above ``s0``:

================  ============================================================================
``novelty``       a message pattern (template) never or hardly seen before. Its surprise is
                  measured against the *current* rate of new patterns of the line's kind of
                  source (Good-Turing: the share of its patterns seen once, or its recent
                  rate of new ones, whichever is higher), so the first new pattern in a calm
                  source counts whatever a chatty one does, the 20th new pattern of a
                  boot sequence or crash dump much less; a known pattern seen ``c`` times
                  from this kind of source keeps ``1/(1+c)`` of it (a pattern routine in
                  one system is news the first time another logs it).
``template_burst`` the pattern's lines over the last minute against the busiest it has been
                  (``DecayedRate``), over the whole fleet and from this host alone (a
                  failing service repeats itself on one host; a host's pattern with little
                  history is judged against the whole fleet's busiest), whichever is higher.
``host_burst``     the host's lines over the last minute against its busiest; only for lines
                  whose pattern runs on this host at least at its own busiest (they make
                  the surge; a routine line that comes while another pattern floods the
                  host does not).
``error_burst``   the host's warning-or-worse lines over the last minute against its busiest,
                  or against its usual share of the whole fleet's errors (learned over a
                  day, so a few floods hardly move it; a storm on every host is no one
                  host's flood) for a line whose pattern this host logs more than all other
                  hosts together: an error flood.
``recurrence``    the same warning-or-worse pattern repeating on one host: its count over the
                  last hour (decayed) against its long-run share of a day (a habitual error
                  fades, a node that keeps failing does not).
``silence``       the gap since the host's previous line vs. its usual gaps (z of log gap):
                  a host that went quiet, reported on its first line back.
``param``         a parameter value unusual for its slot in the pattern: a number outside the
                  range of magnitudes the slot held (the excess of log|x| beyond the range,
                  in the slot's spread; an outlier widens the range by 5% of its excess and
                  leaves the spread alone), or a new value in a slot that holds few distinct
                  values (Good-Turing).
``severity``      the level itself (DEBUG 0 … FATAL 1), a prior rather than learned evidence;
                  at ERROR or worse it weighs as much as it is rare in the line's kind of
                  source (``severity × (1 - share of its lines at this level or worse)``):
                  a FATAL where half the lines are FATAL says little, one where FATAL is
                  news keeps its full weight. The share is the lower of two moving
                  averages, over the kind's last ~1,000 lines and its last ~64: a level
                  routine in the long run but not lately (the first FATAL long after a
                  crash dump) is news again; and the kind's first line at ERROR or worse
                  after more than an hour (``recurrence_half_life``) without one weighs
                  fully, whatever the shares remember (they count lines: a source that logs
                  little keeps a dump of days ago in its last ~64).
================  ============================================================================

The score is a noisy-OR, ``1 - Π(1 - w·e)``, over the evidence (weight 1, except severity
0.6, so a routine FATAL alone stays below the floor but tips a line that is unusual in
another way, and host_burst 0.5, the least specific)
and the River ``HalfSpaceTrees`` score of the whole vector (weight 0.3: unusual
*combinations*; River's trees are walked a batch at a time by streams/hst_batch.py, with
River's exact scores). A line is flagged when its score reaches both ``min_score`` and the
running ``quantile`` of the scores seen so far, or when its severity counts (the first line of a
pattern at ERROR or worse from its host or source, where its kind of source logs such lines in
under ``SEVERE_RARE`` of its lines: news there, routine where a fifth of the lines are FATAL); its ``reason`` names each piece of evidence
that was strong, with the numbers behind it, in words a person can act on. The quantile
counts normal lines and the *first* line of each incident (lines above the threshold with
the same strongest evidence for the same host or pattern, less than ``INCIDENT_GAP`` apart):
a flood of a thousand lines is one event, and does not lift the threshold over the next,
different anomaly (before, the injected episodes of the synthetic streams pushed it to 1.0,
and live recall fell to 0.0 for the kinds that come as a single line).

Memory is bounded whatever comes in: every map keyed by host, pattern or (host, pattern) has
a cap (``_MAX_HOSTS``, ``_MAX_KEYS``, ``_MAX_PAIRS``, ``_MAX_SLOT_KEYS``); when a map is full,
the half of its keys quiet the longest (by event time; parameter slots: seen least recently)
is forgotten, and such a key that comes back starts afresh, like a new one. A parameter value
is counted by its first ``_MAX_VALUE_CHARS`` characters.

The feature vector also keeps the plain inputs (``rarity``, ``new_template``, ``length``,
``unparsed``) for the trees and for consumers that read them. ``new_template`` is 1 for a
pattern never seen before *where new patterns are news* (novelty above 0: its kind of source
finds new ones less often than 1 line in 20): in a source still finding its vocabulary (a
crash dump where every register line is a new pattern) the trees would otherwise rate each
new pattern rare against the whole stream and undo what novelty judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter

from river.anomaly import HalfSpaceTrees

from streams.hst_batch import BatchHST
from streams.keyed import KeyedRows, Rows

__all__ = [
    "EVIDENCE",
    "FEATURES",
    "SEVERITY",
    "AdaptiveThreshold",
    "AnomalyScorer",
    "RateTracker",
    "Score",
    "explain",
    "incident_key",
]

EVIDENCE = (
    "novelty",
    "template_burst",
    "host_burst",
    "error_burst",
    "recurrence",
    "silence",
    "param",
)

FEATURES = (
    "rarity",
    "new_template",
    "severity",
    "length",
    "unparsed",
) + EVIDENCE
_ROW = itemgetter(*FEATURES)  # a feature dict as the row BatchHST takes
_N_BASE = len(FEATURES) - len(EVIDENCE)  # a row's evidence starts here

SEVERITY: dict[str | None, float] = {
    None: 0.2,
    "TRACE": 0.0,
    "DEBUG": 0.0,
    "INFO": 0.1,
    "NOTICE": 0.3,
    "WARNING": 0.5,
    "ERROR": 0.8,
    "CRITICAL": 0.9,
    "ALERT": 0.95,
    "FATAL": 1.0,
    "EMERGENCY": 1.0,
}

# weights in the noisy-OR
W_SEVERITY = 0.6
W_HST = 0.3
# a host's overall volume is the least specific evidence (boots, batch jobs): alone it
# stays below the flagging floor, with anything else it counts
WEIGHTS = {"host_burst": 0.5}
ERRORISH = 0.5  # severity from which a line counts as an error (WARNING and worse)
# lines above the threshold with the same strongest evidence (the same host's flood, the same
# pattern's burst) less than this apart (event time) are one incident for the threshold
INCIDENT_GAP = 60.0
_MAX_INCIDENTS = 10_000

# novelty: the recent rate of new patterns is a moving average over about this many lines, and
# a kind of source with fewer lines than this borrows (part of) the whole stream's rate
_NOVEL_ALPHA = 1.0 / 64.0
_NOVEL_PRIOR = 64.0

# severity that counts: a line at ERROR or worse whose pattern is the first of its kind from its
# host or source is flagged where such lines are rare: where its kind of source logs them in less
# than SEVERE_RARE of its lines (the flagging budget the detector is held to: ≤ 1% of normal lines
# flagged), the share being a moving average over about 1 / _SEVERE_ALPHA lines (a new kind
# starts from the whole stream's share)
SEVERE = 0.8  # ERROR
SEVERE_RARE = 0.01
_SEVERE_ALPHA = 1.0 / 1000.0
# the level as evidence counts as much as it is rare in the line's kind of source: a line at
# ERROR or worse weighs ``severity × (1 - share)``, the share being that of the kind's lines at
# its level or worse (the same moving average over ~1 / _SEVERE_ALPHA lines): a FATAL where a
# third of the lines are FATAL says less than one where FATAL is news. Below ERROR the level is
# a plain prior (a WARNING rarely means trouble by itself, and the routine INFO says nothing)

_LN20 = math.log(20.0)
_LN10 = math.log(10.0)

# rates (DecayedRate): a span that beat a key's peak by more than chance raises it by this
# share of its excess; the current pace is the count over the last tau / _PACE (10 s of 60)
_PEAK_LEARN = 0.3
_PACE = 6.0
_MAX_PAIRS = 200_000  # (host, pattern) rates kept; the longest quiet are forgotten beyond
# per-key state is bounded (a flood of unique lines or host names must not grow it without
# end): beyond these, the half of the keys quiet the longest (by event time, then by order of
# arrival) is forgotten, and a key that comes back starts afresh, as a new one would
_MAX_HOSTS = 100_000  # hosts: rates, errors, gaps, shares of the fleet's errors
_MAX_KEYS = 40_000  # patterns: rates and error recurrence (the miner keeps 20,000)
_MAX_SLOT_KEYS = 20_000  # patterns whose parameter slots are kept (least recently seen go)
_MAX_VALUE_CHARS = 64  # a parameter value is counted (and memoised) by its first 64 chars
_MAX_NUMBERS = 100_000  # parameter texts whose numeric value is memoised
# a host's share of the fleet's errors is learned over about a day, once the fleet logged
# this many errors
_SHARE_HALF_LIFE = 86400.0
_SHARE_MIN = 100.0
# parameter values: the share of an outlier's excess beyond a slot's range that is learned
# (as fast as the slot's mean, _NUM_ALPHA), so one anomaly does not hide the next
_OUTLIER_LEARN = 0.05


def _ramp(s: float, s0: float, k: float) -> float:
    """Surprise above ``s0`` → evidence in [0, 1)."""
    if s <= s0:
        return 0.0
    return 1.0 - math.exp(-(s - s0) / k)


def _poisson_z(count: int, usual: float | None) -> float:
    if usual is None:
        return 0.0
    return (count - usual) / math.sqrt(usual + 1.0)


class RateTracker:
    """Lines per key in the current event-time window, against that key's usual rate.

    ``add(key, window_start)`` returns ``(count_in_window, usual_per_window)``; the usual
    rate is an exponentially weighted mean over the key's closed windows (None before one
    closed), and ``spread(key)`` the weighted variance of those counts (real logs are
    burstier than Poisson: a key that often jumps gets a wide spread, and its jumps stop
    counting as bursts).
    """

    def __init__(self, alpha: float = 0.3):
        self.alpha = alpha
        self._current: dict[str, tuple[float, int]] = {}
        self._usual: dict[str, float] = {}
        self._var: dict[str, float] = {}

    def add(self, key, window_start: float) -> tuple[int, float | None]:
        start, count = self._current.get(key, (window_start, 0))
        if window_start > start:  # the key's previous window closed
            prev = self._usual.get(key)
            if prev is None:
                self._usual[key] = count
                self._var[key] = 0.0
            else:
                a = self.alpha
                d = count - prev
                self._usual[key] = prev + a * d
                self._var[key] = (1 - a) * (self._var[key] + a * d * d)
            start, count = window_start, 0
        elif window_start < start:  # a late line: counted against the window it is late for
            return count, self._usual.get(key)
        count += 1
        self._current[key] = (start, count)
        return count, self._usual.get(key)

    def usual(self, key) -> float | None:
        return self._usual.get(key)

    def spread(self, key) -> float:
        return self._var.get(key, 0.0)

    def z(self, key, count: int, usual: float | None) -> float:
        """How far above its usual a key runs: (count - usual) / sqrt(var + usual + 1)."""
        if usual is None:
            return 0.0
        return (count - usual) / math.sqrt(self._var.get(key, 0.0) + usual + 1.0)


class DecayedRate(KeyedRows):
    """Lines per key over the last ``tau`` seconds of event time (an exponentially decayed
    count, so a burst is seen whole whatever window boundaries it straddles), against the
    busiest the key has been before: its peak level over spans of ``tau`` that have
    closed (so a burst is not compared with itself), which fades with a half-life of
    ``peak_half_life`` seconds. A span that beat the peak by more than chance (one spread,
    ``sqrt(peak + 1)``), let alone a burst, raises it by only 0.3 of its excess, so one
    anomaly does not hide the next, while a lasting change of rate still becomes the new
    normal within a few dozen spans.

    The level judged is the lesser of the last ``tau``'s count and the current pace (the
    count over the last ``tau / 6``, scaled to ``tau``): a line that comes after a burst has
    ended is not part of it, though the decayed count remembers the burst for a while; the
    peak is of the same measure, so the tail of a burst does not raise it either.

    ``add(key, ts)`` returns ``(level, peak, z)``, ``z = (judged - peak) / sqrt(peak + 1)``:
    how far the key runs above anything it did before, judged before the line is learned
    (0 while the key has fewer than ``min_history`` lines or three closed spans; a key
    without history is
    compared with ``default`` when one is given: "a known host that never logged an
    error"). Real logs are bursty: a pattern that often comes in bursts has a high peak,
    and its usual bursts stop counting. With ``max_keys``, the half of the keys quiet the
    longest is forgotten when the bound is reached (bounded memory for per-host patterns).
    """

    def __init__(self, tau: float = 60.0, peak_half_life: float = 86400.0,
                 min_history: int = 50, max_keys: int | None = None):
        super().__init__()
        self.tau = tau
        self.peak_half_life = peak_half_life
        self.min_history = min_history
        self.max_keys = max_keys
        self._state: dict = {}

    def __setstate__(self, state: dict) -> None:
        state.setdefault("max_keys", None)  # a checkpoint from before the bound
        for st in (state.get("_state") or {}).values():
            if len(st) == 7:  # no pace yet: start it at the level's pace
                st.append(st[1] / _PACE)
        super().__setstate__(state)

    def add(self, key, ts: float, default: float | None = None) -> tuple[float, float | None, float]:
        st = self._state.get(key)
        if st is None:
            if self.max_keys is not None and len(self._state) >= self.max_keys:
                self._forget()
            # last ts, level, peak (of closed spans), lines, this span's highest level, its
            # start, spans closed, level over the last tau/PACE (the current pace)
            st = self._state[key] = [ts, 0.0, 0.0, 0, 0.0, ts, 0, 0.0]
        self.dirty.add(key)  # (KeyedRows.touched, inlined: this runs four times a line)
        last, level, peak, n, high, span, spans, pace = st
        dt = ts - last
        if dt < -self.tau:  # far older than what this key already saw (a replay, a skewed
            self.now = 0.0  # clock): no rate to judge it against, nothing learned
            return level, None, 0.0
        if dt > 0:
            level *= math.exp(-dt / self.tau)
            pace *= math.exp(-dt * _PACE / self.tau)
            peak *= 0.5 ** (dt / self.peak_half_life)
            st[0] = ts
        if ts - span >= self.tau:  # a span of tau closed: its highest level joins the peak
            if high > peak:
                if spans < 3 or high - peak < math.sqrt(peak + 1.0):  # busier within chance
                    peak = high
                else:  # busier by more than chance, or itself a burst: believe part of it
                    peak += _PEAK_LEARN * (high - peak)
            high = 0.0
            st[5] = ts
            spans += 1
            st[6] = spans
        level += 1.0
        pace += 1.0
        if n >= self.min_history and spans >= 3:
            ref = peak
        elif default is not None:
            ref = max(default, peak)
        else:
            ref = None
        # judged by the lesser of the last tau's count and the current pace (scaled to tau):
        # a line that comes after a burst has ended is not part of it, though the decayed
        # count still remembers the burst for a while
        now = min(pace * _PACE, level)
        z = 0.0 if ref is None else (now - ref) / math.sqrt(ref + 1.0)
        st[7] = pace
        st[1] = level
        st[2] = peak
        st[3] = n + 1
        st[4] = max(high, now)  # the peak is of the same measure (no tails)
        self.now = now
        return level, ref, z

    def rows_view(self) -> Rows:
        def fill(rows: dict) -> None:
            self._state = rows
            self.saved()

        return Rows(self, self._state, fill)

    def _forget(self) -> None:
        """Drop the half of the keys that were quiet the longest (bounded memory; by event
        time and then insertion order, so deterministic)."""
        keep = sorted(self._state.items(), key=lambda kv: kv[1][0])[len(self._state) // 2:]
        self._state = dict(keep)
        self.reordered = True


def _forget_quietest(d: dict, ts_at: int) -> dict:
    """The half of ``d`` seen last: its values hold their key's latest event time at index
    ``ts_at`` (ties keep the order of arrival, so it is deterministic)."""
    return dict(sorted(d.items(), key=lambda kv: kv[1][ts_at])[len(d) // 2:])


def _burst(count: int, usual: float | None) -> float:
    """Evidence that a key runs well above its usual rate (Poisson z from 4 on)."""
    return _zramp(_poisson_z(count, usual))


def _zramp(z: float) -> float:
    """A z-score → evidence: none up to 4, 0.63 at 6, 0.95 at 10."""
    return _ramp(z, 4.0, 2.0)


class AdaptiveThreshold:
    """Running quantile of scores on a fixed histogram (O(1) update, picklable).

    The bins are even in ``-ln(1 - score)`` (up to 10, i.e. a score of 0.99995), not in the
    score itself, so the top of the range, where the quantile of interest lies, is resolved
    finely: 0.99 and 0.999 fall in different bins.
    """

    TOP = 10.0

    def __init__(self, quantile: float = 0.995, bins: int = 200, refresh: int = 256):
        self.quantile = quantile
        self.bins = [0.0] * bins
        self.n = 0
        self.mass = 0.0
        self.refresh = refresh
        self.value = 1.0

    def update(self, score: float, weight: float = 1.0) -> None:
        nb = len(self.bins)
        u = -math.log(max(1.0 - score, 1e-12))
        self.bins[min(int(u / self.TOP * nb), nb - 1)] += weight
        self.n += 1
        self.mass += weight
        if self.n % self.refresh == 0:
            target = self.quantile * self.mass
            acc = 0
            for i, c in enumerate(self.bins):
                acc += c
                if acc >= target:
                    self.value = 1.0 - math.exp(-(i + 1) / nb * self.TOP)
                    break


@dataclass(slots=True)
class Score:
    score: float
    is_anomaly: bool
    reason: str | None
    warming_up: bool
    features: dict[str, float]


class _Slot:
    """What one parameter position of one template usually holds."""

    __slots__ = ("capped", "hi", "lo", "mean", "n", "new_rate", "nnum", "singles", "values",
                 "var")

    def __init__(self):
        self.n = 0          # values seen
        self.nnum = 0       # numeric values seen
        self.mean = 0.0     # of sign(x)·log1p(|x|), exponentially weighted
        self.var = 0.0
        self.lo = 0.0       # the range of sign(x)·log1p(|x|) the slot held (robustly learned)
        self.hi = 0.0
        self.values: dict[str, int] | None = {}
        self.singles = 0    # distinct values seen exactly once
        self.new_rate = 0.0  # recent rate of new values (moving average over ~64 values)
        self.capped = False

    def __setstate__(self, state) -> None:
        slots = state[1] if isinstance(state, tuple) else state
        for k, v in (slots or {}).items():
            setattr(self, k, v)
        if not hasattr(self, "lo"):  # a slot from before ranges: the range starts at its mean
            self.lo = self.hi = getattr(self, "mean", 0.0)
        if not hasattr(self, "new_rate"):  # a slot from before its rate of new values
            self.new_rate = 0.0


_MISSING = object()
_MAX_SLOT_VALUES = 256  # a slot with more distinct values is an identifier: no categorical test
_NUM_ALPHA = 0.05


def _unlog(v: float) -> float:
    return math.copysign(math.expm1(abs(v)), v)


def _as_number(text: str) -> float | None:
    c = text[:1]
    if not c or not (c.isdigit() or c in "+-."):
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    if math.isnan(v) or v in (math.inf, -math.inf):
        return None
    return v


class AnomalyScorer:
    """Evidence per kind of anomaly + HST over the vector; score-then-learn; reasons."""

    def __init__(
        self,
        *,
        n_trees: int = 10,
        height: int = 6,
        window_size: int = 250,
        quantile: float = 0.995,
        min_score: float = 0.7,
        seed: int = 42,
        recurrence_half_life: float = 3600.0,
    ):
        self.hst = HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self.window_size = window_size
        self.threshold = AdaptiveThreshold(quantile)
        self.min_score = min_score
        self.seen = 0
        self.hosts = DecayedRate(max_keys=_MAX_HOSTS)
        self.templates = DecayedRate(max_keys=_MAX_KEYS)
        # one pattern from one host: a failing service repeats itself, the fleet does not
        self.pairs = DecayedRate(max_keys=_MAX_PAIRS)
        self.errors = DecayedRate(max_keys=_MAX_HOSTS)
        # warning-or-worse lines of one pattern from one kind of source (the fleet a host's
        # error flood is judged in: another kind logging the same text is not its fleet)
        self.kind_errors = DecayedRate(max_keys=_MAX_KEYS)
        # every host's errors (last ts, level over tau, decayed count over a day), each host's
        # per kind of source (its log format): (last ts, level over tau, decayed count over a
        # day) of the errors of every host of that kind; each host's share of its kind's
        self._err_fleets: dict[str | None, list] = {}
        self._err_share: dict[str, list] = {}
        self._template_cache: dict[str, tuple[float, float]] = {}
        # novelty: templates seen exactly once, recent rate of new templates
        self.singletons = 0
        self.new_rate = 1.0
        # share of lines at each level (by its SEVERITY value): of the whole stream, and per
        # kind of source (moving averages over ~1 / _SEVERE_ALPHA lines)
        self.level_share: dict[float, float] = {}
        self._levels: dict[str | None, dict[float, float]] = {}
        # the same per kind over its last ~1 / _NOVEL_ALPHA lines (how usual a level is lately)
        self._recent_levels: dict[str | None, dict[float, float]] = {}
        # per kind of source: event time of its latest line at ERROR or worse (a severe line
        # after a long while without one weighs fully, whatever the shares remember)
        self._severe_last: dict[str | None, float] = {}
        # per kind of source: [lines, patterns first seen there still seen once, new rate]
        self._novel: dict[str | None, list] = {}
        self._kind_seen: dict[tuple, int] = {}  # (kind, pattern) -> lines seen
        self._kind_seen_legacy = False  # restored from before: absent pairs take the global count
        # recurrence of errors per (host, template): (fast count, slow count, last ts)
        self.recurrence_half_life = recurrence_half_life
        self._recur: dict[tuple, tuple[float, float, float]] = {}
        self._recur_t: dict[str, tuple[float, float]] = {}
        # silence: per host (last ts, mean log gap, var log gap, gaps seen)
        self._gaps: dict[str, list] = {}
        self._kind_peers: dict[str | None, list] = {}  # kind -> up to two of its sources
        # parameter slots per (template, position)
        self._slots: dict[str, list[_Slot]] = {}
        self._numbers: dict[str, float | None] = {}  # parameter text -> signed log1p, memo
        # incidents above the threshold: key -> event time of its latest line
        self._incidents: dict[tuple, float] = {}
        # lines whose features were computed but which are not scored yet (score_many)
        self._pending = 0
        self._batch: BatchHST | None = None  # River's trees, walked a batch at a time
        # feedback on templates (streams.catalog): id -> "expected" or "always_alert"; read
        # for every line, so a change applies from the next line scored
        self.marks: dict[str, str] = {}

    def rename_templates(self, renamed: dict[str, str]) -> None:
        """Templates that took another id (the catalog named them, ``streams.catalog``): what
        was learned of each (its rates, per host too, recurrence, parameter values) moves to
        the new id unless that one has its own, so its lines are not news under the new name."""
        for old, new in renamed.items():
            for rates in (self.templates, self.pairs):
                state = rates._state
                keys = [old] if rates is self.templates else [k for k in state if k[1] == old]
                for k in keys:
                    to = new if rates is self.templates else (k[0], new)
                    if k in state and to not in state:
                        state[to] = state.pop(k)
                        rates.dirty.add(to)
                        rates.reordered = True
            for table, keyed in ((self._recur_t, False), (self._slots, False),
                                 (self._recur, True)):
                keys = [k for k in table if k[1] == old] if keyed else [old]
                for k in keys:
                    to = (k[0], new) if keyed else new
                    if k in table and to not in table:
                        table[to] = table.pop(k)

    def keyed_maps(self) -> dict[str, Rows]:
        """The maps a checkpoint writes row by row (the bulk of what the scorer learns)."""
        return {name: rate.rows_view() for name, rate in (
            ("hosts", self.hosts), ("templates", self.templates), ("pairs", self.pairs),
            ("errors", self.errors), ("kind_errors", self.kind_errors))}

    def __getstate__(self) -> dict:
        if self._batch is not None:
            self._batch.sync()  # the River object carries the model in the checkpoint
        state = self.__dict__.copy()
        state["_batch"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        if "_slots" not in state:  # a checkpoint of the scorer before the evidence model:
            old = state  # keep its trees and counts, start the new trackers empty
            threshold = old.get("threshold")
            fresh = AnomalyScorer(window_size=old.get("window_size", 250),
                                  quantile=getattr(threshold, "quantile", 0.995),
                                  min_score=old.get("min_score", 0.7))
            state = fresh.__dict__
            state["hst"] = old["hst"]
            state["seen"] = old.get("seen", 0)
        state.setdefault("_incidents", {})  # checkpoints from before incidents
        state.setdefault("_kind_peers", {})  # checkpoints from before sources had kinds
        state.setdefault("_recent_levels", {})  # before a level's recent share was read
        state.setdefault("_severe_last", {})  # before a long while without severe lines counted
        if "_kind_seen" not in state:  # before patterns were counted per kind
            state["_kind_seen"], state["_kind_seen_legacy"] = {}, True
        if "_novel" not in state:  # before novelty per kind: the one rate was every kind's
            state["_novel"] = {None: [state.get("seen", 0), state.get("singletons", 0),
                                      state.get("new_rate", 1.0)]}
        state.setdefault("marks", {})  # checkpoints from before the template catalog
        if "_levels" not in state:  # before shares per level: the share at ERROR or worse
            # (the rest of the lines, below ERROR, kept as one share at the lowest level so
            # the shares sum as they did: the weighing divides by that sum)
            whole = state.pop("severe_share", 0.0)
            state["level_share"] = {SEVERE: whole, 0.0: max(1.0 - whole, 0.0)}
            state["_levels"] = {k: {SEVERE: v, 0.0: max(1.0 - v, 0.0)}
                                for k, v in (state.pop("_severe", None) or {}).items()}
        state["_pending"], state["_batch"] = 0, None
        if "kind_errors" not in state:  # before error patterns per kind of source
            state["kind_errors"] = DecayedRate(max_keys=_MAX_KEYS)
        if "pairs" not in state:  # a checkpoint from before the per-host pattern rates
            state["pairs"] = DecayedRate(max_keys=_MAX_PAIRS)
            state["_err_share"] = {}
        if "_err_fleets" not in state:  # before fleets per kind: the one fleet was every kind's
            old_fleet = state.pop("_err_fleet", None)
            state["_err_fleets"] = {None: old_fleet} if old_fleet else {}
        for name, cap in (("hosts", _MAX_HOSTS), ("templates", _MAX_KEYS), ("errors", _MAX_HOSTS)):
            if state[name].max_keys is None:  # a checkpoint from before these bounds
                state[name].max_keys = cap
        self.__dict__.update(state)

    @property
    def warmed_up(self) -> bool:
        # no flags until the trees have their first reference window (their scores in it are
        # judged against the window so far: BatchHST judge_first_window)
        return self.seen >= self.window_size

    # -- features ---------------------------------------------------------------------------
    def features(
        self,
        template_id: str,
        seen_before: int,
        is_new: bool,
        level: str | None,
        tokens: int,
        parsed: bool,
        host: str | None,
        window_start: float,
        ts: float | None = None,
        params: list[str] | None = None,
        source: str | None = None,
        kind: str | None = None,
        word: tuple[str, str] | None = None,
    ) -> tuple[dict[str, float], dict]:
        """The feature vector and its context for the next line. Lines are scored in the order
        their features were computed, one by one (``score``) or in a batch (``score_many``).
        Positional arguments are accepted for the pipeline's hot path (a call with thirteen
        keywords costs several times one with positions); name them everywhere else."""
        n = self.seen + self._pending
        self._pending += 1
        # a line without a host is judged as its named source (a file, a stream), never lumped
        # with every other hostless line into one pseudo-host
        hostkey = host or (f"~{source}" if source else "-")
        # sources of one kind (the same log format) are each other's fleet: "more than all
        # other sources together" is asked only where another source of that kind exists
        peers = self._kind_peers.get(kind)
        if peers is None:
            if len(self._kind_peers) >= _MAX_KEYS:
                self._kind_peers.clear()
            peers = self._kind_peers[kind] = []
        if len(peers) < 2 and hostkey not in peers:
            peers.append(hostkey)
        has_peers = len(peers) > 1
        sev = SEVERITY.get(level, 0.5)
        rarity = -math.log((seen_before + 1) / (n + 2)) / math.log(n + 2)

        # novelty against the current rate of new patterns of this kind of source: a source
        # still finding its vocabulary (a chatty app, one just added) is judged by its own
        # pace, and a calm source's first new pattern is not drowned by another's
        # (a kind with little history borrows the whole stream's rate: its estimate starts as
        # the stream's and passes to its own over its first _NOVEL_PRIOR lines)
        p_all = (self.singletons + 1.0) / (n + 2.0)
        nk = self._novel.get(kind)
        if nk is None:
            if len(self._novel) >= _MAX_KEYS:
                self._novel.clear()
            # lines, patterns first seen there still seen once, recent rate of new ones
            nk = self._novel[kind] = [0, 0, self.new_rate]
        lines_k, singles_k, rate_k = nk
        # a pattern is new (or rare) for its kind of source by that kind's own count: one
        # system's routine line appearing in another is news there
        seen = self._kind_seen
        kkey = (kind, template_id)
        seen_k = seen.get(kkey, 0)
        if not seen_k and self._kind_seen_legacy:  # a model from before: its global count
            seen_k = seen_before
        if seen_k == 0 and len(seen) >= _MAX_PAIRS:  # the half first counted longest ago goes
            seen = self._kind_seen = dict(islice(seen.items(), len(seen) // 2, None))
        seen[kkey] = seen_k + 1 if seen_k < 1_000_000 else seen_k
        own = min(lines_k / _NOVEL_PRIOR, 1.0)
        p_new = max(own * (singles_k + 1.0) / (lines_k + 2.0) + (1.0 - own) * p_all, rate_k)
        novelty = _ramp(-math.log(p_new), _LN20, _LN10) / (1.0 + min(seen_before, seen_k))
        new_k = 1.0 if seen_k == 0 else 0.0
        if is_new:
            self.singletons += 1
        elif seen_before == 1:
            self.singletons -= 1
        if seen_k == 0:
            singles_k += 1
        elif seen_k == 1:
            singles_k = max(singles_k - 1, 0)
        nk[0], nk[1] = lines_k + 1, singles_k
        nk[2] = rate_k + (new_k - rate_k) * _NOVEL_ALPHA
        self.new_rate += ((1.0 if is_new else 0.0) - self.new_rate) * _NOVEL_ALPHA

        t_ev = window_start if ts is None else ts
        hc, hu, hz = self.hosts.add(hostkey, t_ev)
        tc, tu, tz = self.templates.add(template_id, t_ev)
        # the pair is judged against its own peak, and while it has little history against
        # the whole fleet's peak for the pattern (one host alone above what all hosts did)
        pkey = (hostkey, template_id)
        new_pair = pkey not in self.pairs._state  # this host's first line of the pattern
        pc, pu, pz = self.pairs.add(pkey, t_ev, default=tu)
        # a host sending more than ever is evidence against the lines that make the surge:
        # those whose pattern runs on this host at least at its own busiest, not a routine
        # line that happens to come while another pattern floods the host
        host_burst = _zramp(hz) if pz >= 0.0 else 0.0
        burst_host = pz > tz
        pair_level, fleet_level = pc, tc
        if burst_host:
            tc, tu, tz = pc, pu, pz

        # how usual the line's level is in its kind of source (a new kind starts from the
        # whole stream's shares): the share of its lines at ERROR or worse, and at this level
        # or worse; then the line is learned
        levels = self._levels.get(kind)
        if levels is None:
            if len(self._levels) >= _MAX_KEYS:
                self._levels.clear()
            levels = self._levels[kind] = dict(self.level_share)
        share = as_bad = mass = 0.0
        keep_share = 1.0 - _SEVERE_ALPHA
        for v, p in levels.items():  # read, then decay (the few levels a kind logs)
            if v >= SEVERE:
                share += p
            if v >= sev:
                as_bad += p
            mass += p
            levels[v] = p * keep_share
        # the moving average starts from nothing, so over a kind's first ~1 / _SEVERE_ALPHA
        # lines its shares sum to less than 1 (1 - (1 - alpha)^n): the weighing reads the share
        # among the lines seen (divided by that sum, the usual bias correction), or a level
        # would weigh more the earlier it comes, whatever the lines around it (a crash dump's
        # first FATAL lines above the FATAL lines after it)
        if mass > 0.0:
            as_bad /= mass
        levels[sev] = levels.get(sev, 0.0) + _SEVERE_ALPHA
        # a level is routine only if it is routine lately too: the same share over the kind's
        # last ~1 / _NOVEL_ALPHA lines (novelty's recent memory), bias-corrected alike, and the
        # lower of the two is read; a crash dump's FATAL lines make FATAL routine for a long
        # memory, not the first FATAL after a long calm (the issue's "first such level there
        # in a long while")
        recent = self._recent_levels.get(kind)
        if recent is None:
            if len(self._recent_levels) >= _MAX_KEYS:
                self._recent_levels.clear()
            recent = self._recent_levels[kind] = {}
        lately = rmass = 0.0
        keep_recent = 1.0 - _NOVEL_ALPHA
        for v, p in recent.items():
            if v >= sev:
                lately += p
            rmass += p
            recent[v] = p * keep_recent
        recent[sev] = recent.get(sev, 0.0) + _NOVEL_ALPHA
        if rmass > 0.0 and mass > 0.0:
            as_bad = min(as_bad, lately / rmass)
        whole = self.level_share
        for v in whole:
            whole[v] *= keep_share
        whole[sev] = whole.get(sev, 0.0) + _SEVERE_ALPHA
        severe = sev >= SEVERE
        # the level's weight as evidence: discounted by how routine it is here (ERROR or worse)
        # ... unless the kind logged nothing at ERROR or worse for a long while (the scorer's
        # hour, ``recurrence_half_life``): its first such line since is news whatever the shares
        # remember (they count lines, and a source that logs little keeps a crash dump of days
        # ago in its last ~64 lines); the "first such level there in a long while"
        quiet_for = None
        if severe and ts is not None:
            last_severe = self._severe_last.get(kind)
            if last_severe is None:
                if len(self._severe_last) >= _MAX_KEYS:
                    self._severe_last.clear()
            elif ts - last_severe > self.recurrence_half_life:
                quiet_for = ts - last_severe
                as_bad = 0.0
            if last_severe is None or ts > last_severe:
                self._severe_last[kind] = ts
        sev_weight = sev * max(1.0 - as_bad, 0.0) if severe else sev
        # severity that counts: the first line of a pattern at ERROR or worse from this host or
        # source, where its kind of source rarely logs that level
        first_severe = (severe and share < SEVERE_RARE and ts is not None
                        and (hostkey, template_id) not in self._recur)
        # a line without a level whose words name a severity or an attack
        # (streams.severity_words): the first of its pattern from this host or source is news
        # there, however often the kind's other hosts log it (a break-in attempt reaching a
        # host for the first time); its later lines from that host are judged as any other
        first_word = word is not None and level is None and ts is not None and new_pair

        # errors: flood per host, recurrence per (host, template)
        ec = eu = None
        error_peer = False
        error_burst = recurrence = 0.0
        rec_fast = 0.0
        if sev >= ERRORISH:
            ec, eu, ez = self.errors.add(hostkey, t_ev, default=0.0 if hu is not None else None)
            fleet_level = self.kind_errors.add((kind, template_id), t_ev)[0]
            sz, share_expected = self._error_share(hostkey, t_ev, self.errors.now, kind,
                                                   has_peers)
            # judged against the rest of the fleet rather than its own past, for a line whose
            # pattern this host logs more than all other hosts together (it makes the flood;
            # a routine warning that comes while another pattern floods the host does not)
            error_peer = (sz is not None and sz > ez
                          and pair_level > fleet_level - pair_level)
            if error_peer:
                ez, eu = sz, share_expected
            error_burst = _zramp(ez)
            if ts is not None:
                recurrence, rec_fast = self._recurrence(hostkey, template_id, ts, has_peers)

        silence, gap, usual_gap = (0.0, None, None) if ts is None else self._silence(hostkey, ts)
        param, param_what = self._params(template_id, params) if params else (0.0, None)

        mark = self.marks.get(template_id) if self.marks else None
        if mark == "expected":  # feedback: a known, expected pattern (learned all the same)
            rarity = novelty = 0.0
            is_new = False
        x = {
            "rarity": min(max(rarity, 0.0), 1.0),
            # a new pattern is rare to the trees only where novelty finds new patterns news:
            # not while its kind of source finds them more often than 1 in 20 lines (a crash
            # dump, a boot), where novelty is 0, or the trees would undo that judgement
            "new_template": 1.0 if is_new and novelty > 0.0 else 0.0,
            "severity": sev,
            "length": min(tokens / 64.0, 1.0),
            "unparsed": 0.0 if parsed else 1.0,
            "novelty": novelty,
            "template_burst": _zramp(tz),
            "host_burst": host_burst,
            "error_burst": error_burst,
            "recurrence": recurrence,
            "silence": silence,
            "param": param,
        }
        ctx = {"host": host, "source": source if not host else None, "host_count": hc, "host_usual": hu, "template_count": tc,
               "template_usual": tu, "burst_host": burst_host, "seen_before": seen_before,
               "seen_in_kind": seen_k,
               "level": level, "tokens": tokens, "template_id": template_id,
               "error_count": ec, "error_usual": eu, "error_peer": error_peer,
               "recurrence_count": rec_fast, "gap": gap, "usual_gap": usual_gap,
               "param": param_what, "ts": t_ev, "severity_weight": sev_weight,
               "level_share": as_bad}
        if quiet_for is not None:
            ctx["severe_quiet"] = quiet_for
        if mark is not None:
            ctx["mark"] = mark
        if first_severe and mark != "expected":
            ctx["first_severe"] = share
        elif first_word and mark != "expected":
            ctx["first_severe"] = share
            ctx["severe_word"] = word
        return x, ctx

    def _error_share(self, host: str, ts: float, level: float, kind: str | None = None,
                     has_peers: bool = True) -> tuple[float | None, float | None]:
        """A host's errors over the last minute against its usual share of its fleet's (the
        hosts of its kind: one log format, one clock): what the other hosts' current error
        rate implies for it. Its share is learned over a day, so one flood (or a few) hardly
        moves it, unlike a peak, and a storm on every host at once is no one host's flood.
        Returns (z, expected); z is None when the line is not judged (far out of order)."""
        tau = self.errors.tau
        fleet = self._err_fleets.get(kind)
        if fleet is None:
            if len(self._err_fleets) >= _MAX_KEYS:
                self._err_fleets.clear()
            fleet = self._err_fleets[kind] = [ts, 0.0, 0.0]
        last, flevel, flong = fleet
        dt = ts - last
        if dt > 0:
            flevel *= math.exp(-dt / tau)
            flong *= 0.5 ** (dt / _SHARE_HALF_LIFE)
            fleet[0] = ts
        elif dt < -tau:  # far out of order: not judged, not learned
            return None, None
        hst = self._err_share.get(host)
        if hst is None:
            if len(self._err_share) >= _MAX_HOSTS:
                self._err_share = _forget_quietest(self._err_share, 0)
            hst = self._err_share[host] = [ts, 0.0]
        hlast, hlong = hst
        if ts > hlast:
            hlong *= 0.5 ** ((ts - hlast) / _SHARE_HALF_LIFE)
            hst[0] = ts
        z, expected = 0.0, None
        share = hlong / flong if flong > 0 else 1.0
        if flong >= _SHARE_MIN and share < 0.9 and has_peers:
            others = max(flevel - level, 0.0) + 1.0  # this line's own host excluded
            expected = others * share / (1.0 - share)
            z = (level - expected) / math.sqrt(expected + 1.0)
        fleet[1] = flevel + 1.0
        fleet[2] = flong + 1.0
        hst[1] = hlong + 1.0
        return z, expected

    def _recurrence(self, host: str, template_id: str, ts: float,
                    has_peers: bool = True) -> tuple[float, float]:
        """One host repeating an error pattern more than its share of the fleet and more than
        its own long-run habit predict (decayed counts over the last hour and day)."""
        hl = self.recurrence_half_life
        key = (host, template_id)
        fast, slow, last = self._recur.get(key, (0.0, 0.0, ts))
        if ts < last - hl:  # far older than this pair's latest line: not judged
            return 0.0, fast
        dt = max(ts - last, 0.0)
        if dt:
            fast *= 0.5 ** (dt / hl)
            slow *= 0.5 ** (dt / (24.0 * hl))
        tfast, tlast = self._recur_t.get(template_id, (0.0, ts))
        dt = max(ts - tlast, 0.0)
        if dt:
            tfast *= 0.5 ** (dt / hl)
        # more than all other hosts together, and more than the host's own habit (a day's rate)
        others = tfast - fast
        expected = max(others, slow / 24.0) if has_peers and len(self._gaps) > 1 else fast
        z = (fast - expected) / math.sqrt(expected + 1.0)
        if len(self._recur) >= _MAX_PAIRS and key not in self._recur:
            self._recur = _forget_quietest(self._recur, 2)
        if len(self._recur_t) >= _MAX_KEYS and template_id not in self._recur_t:
            self._recur_t = _forget_quietest(self._recur_t, 1)
        self._recur[key] = (fast + 1.0, slow + 1.0, max(ts, last))
        self._recur_t[template_id] = (tfast + 1.0, max(ts, tlast))
        return _zramp(z), fast

    def _silence(self, host: str, ts: float) -> tuple[float, float | None, float | None]:
        st = self._gaps.get(host)
        if st is None:
            if len(self._gaps) >= _MAX_HOSTS:
                self._gaps = _forget_quietest(self._gaps, 0)
            self._gaps[host] = [ts, 0.0, 0.0, 0]
            return 0.0, None, None
        last, mean, var, k = st
        gap = ts - last
        if gap < 0:  # out of order: no gap to judge
            return 0.0, None, None
        lg = math.log1p(gap)
        evidence = 0.0
        if k >= 20:
            z = (lg - mean) / math.sqrt(var + 0.25)
            evidence = _zramp(z)
        # learn
        a = 0.05 if k >= 20 else 1.0 / (k + 1)
        d = lg - mean
        mean += a * d
        var = (1 - a) * (var + a * d * d)
        st[0], st[1], st[2], st[3] = ts, mean, var, k + 1
        return evidence, gap, math.expm1(mean)

    def _params(self, template_id: str, params: list[str]):
        best = 0.0
        what = None
        all_slots = self._slots
        slots = all_slots.pop(template_id, None)  # re-inserted: the most recently seen last
        if slots is None:
            if len(all_slots) >= _MAX_SLOT_KEYS:  # the least recently seen half goes
                all_slots = self._slots = dict(
                    islice(all_slots.items(), len(all_slots) // 2, None))
            slots = []
        all_slots[template_id] = slots
        while len(slots) < len(params):
            slots.append(_Slot())
        numbers = self._numbers
        for i, value in enumerate(params):
            slot = slots[i]
            # a long value is counted by its head and not memoised: bounded memory
            short = len(value) <= _MAX_VALUE_CHARS
            key = value if short else value[:_MAX_VALUE_CHARS]
            num = numbers.get(value, _MISSING) if short else _MISSING
            if num is _MISSING:
                num = _as_number(value)
                if num is not None:
                    num = math.copysign(math.log1p(abs(num)), num)
                if short:
                    if len(numbers) >= _MAX_NUMBERS:
                        numbers.clear()
                    numbers[value] = num
            if num is not None:
                k = slot.nnum
                lo, hi = slot.lo, slot.hi
                if k == 0:
                    lo = hi = num
                # how far outside the range the slot held, in its own spread: a value inside
                # the range is never unusual (minutes 00-59, a small id among large ones)
                excess = num - hi if num > hi else (lo - num if num < lo else 0.0)
                if k >= 20:
                    z = excess / math.sqrt(slot.var + 0.25)
                    outlier = z > 4.0
                    if outlier:
                        e = _zramp(z)
                        if e > best:
                            best, what = e, (i, value, "number",
                                             (_unlog(lo), _unlog(hi)))
                        # an outlier widens the range by a small part of its excess only and
                        # leaves the usual (mean, spread) alone, so one anomaly does not hide
                        # the next; a lasting shift is in the range within a few dozen values
                        excess *= _OUTLIER_LEARN
                    a = _NUM_ALPHA
                else:
                    outlier = False
                    a = 1.0 / (k + 1)
                if num > hi:
                    hi += excess
                elif num < lo:
                    lo -= excess
                slot.lo, slot.hi = lo, hi
                if not outlier:
                    d = num - slot.mean
                    slot.mean += a * d
                    slot.var = (1 - a) * (slot.var + a * d * d)
                slot.nnum = k + 1
                slot.n += 1
                continue
            values = slot.values
            if values is not None:
                c = values.get(key, 0)
                # like novelty: the share of values seen once, or the recent rate of new ones,
                # whichever is higher (a slot that takes a new value every so often, each then
                # repeated, such as the address of a new client, is not surprised by the next)
                rate = slot.new_rate
                slot.new_rate = rate + ((1.0 if c == 0 else 0.0) - rate) * _NOVEL_ALPHA
                if c == 0:
                    if slot.n >= 20:
                        p_new = max((slot.singles + 1.0) / (slot.n + 2.0), rate)
                        e = _ramp(-math.log(p_new), _LN20, _LN10)
                        if e > best:
                            best, what = e, (i, value, "value", len(values))
                    if len(values) >= _MAX_SLOT_VALUES:
                        slot.values = None  # an identifier-like slot: stop counting values
                    else:
                        values[key] = 1
                        slot.singles += 1
                else:
                    values[key] = c + 1
                    if c == 1:
                        slot.singles -= 1
            slot.n += 1
        return best, what

    # -- scoring ----------------------------------------------------------------------------
    def score(self, x: dict[str, float], ctx: dict) -> Score:
        """Score the line whose features were computed last, then learn it."""
        return self.score_many([(x, ctx)])[0]

    def score_many(self, lines: list[tuple[dict[str, float], dict]]) -> list[Score]:
        """Score, then learn, each line in the order their features were computed: the same
        results as ``score`` line by line (River's HST scores a line before learning it;
        BatchHST does a batch's tree walks at once, with the same numbers)."""
        if self._batch is None:
            self._batch = BatchHST(self.hst, FEATURES, judge_first_window=True)
        rows = [_ROW(x) for x, _ in lines]
        hs = self._batch.score_learn(rows)
        self._pending = max(0, self._pending - len(lines))
        # each evidence's weight, looked up once a batch; a line's evidence values are the
        # tail of the row the trees took (FEATURES ends with EVIDENCE)
        weights = tuple(WEIGHTS.get(k, 1.0) for k in EVIDENCE)
        decide = self._decide
        return [decide(x, ctx, h, row, weights) for (x, ctx), h, row in zip(lines, hs, rows)]

    def discard_pending(self) -> None:
        """Forget lines featurised but never scored (their batch failed)."""
        self._pending = 0

    def _decide(self, x: dict[str, float], ctx: dict, h: float, row: tuple | None = None,
                weights: tuple | None = None) -> Score:
        """``row``: ``x`` as the trees' row (``_ROW``), ``weights``: the evidence's weights in
        ``EVIDENCE`` order (``score_many`` passes both, made once)."""
        warming = self.seen < self.window_size  # not warmed_up (inlined: once a line)
        self.seen += 1
        keep = (1.0 - W_SEVERITY * ctx.get("severity_weight", x["severity"])) * (1.0 - W_HST * h)
        if row is None:
            row = _ROW(x)
        if weights is None:
            weights = tuple(WEIGHTS.get(k, 1.0) for k in EVIDENCE)
        evidence = row[_N_BASE:]
        if any(evidence):  # most lines have none: one C call instead of the loop
            for v, w in zip(evidence, weights):  # the same products in the same order
                if v:
                    keep *= 1.0 - v * w
        s = 1.0 - keep
        always = ctx.get("mark") == "always_alert"
        if warming:
            return Score(s, always, _always_reason(x, ctx, False) if always else None, True, x)
        threshold = self.threshold.value
        # the threshold learns from the normal lines and from the *first* line of each
        # incident: a flood or burst of a thousand lines is one event, and must not lift the
        # quantile over the next, different anomaly
        if s < threshold or not self._same_incident(x, ctx):
            self.threshold.update(s)
        flagged = s >= self.min_score and s >= threshold
        if always:
            return Score(s, True, _always_reason(x, ctx, flagged), False, x)
        if not flagged and ctx.get("first_severe") is not None:
            # severity that counts (SEVERE_RARE): flagged, and ranked with the flagged lines
            return Score(max(s, self.min_score, threshold), True, explain(x, ctx), False, x)
        return Score(s, flagged, explain(x, ctx) if flagged else None, False, x)

    def _same_incident(self, x: dict[str, float], ctx: dict) -> bool:
        """Whether a line above the threshold continues an incident already counted: the
        same strongest evidence for the same host or pattern (``incident_key``), within
        ``INCIDENT_GAP``."""
        key = incident_key(x, ctx)
        if key is None:
            return False  # no one kind of evidence stands out (severity, the trees)
        ts = ctx.get("ts") or 0.0
        incidents = self._incidents
        last = incidents.get(key)
        if len(incidents) >= _MAX_INCIDENTS and last is None:
            incidents.clear()
        incidents[key] = ts if last is None else max(ts, last)
        return last is not None and abs(ts - last) <= INCIDENT_GAP


def incident_key(x: dict[str, float], ctx: dict) -> tuple | None:
    """What makes two flagged lines "the same incident": the same strongest evidence for the
    same host or pattern (a host's flood, a pattern's burst, one parameter slot's outliers).
    None when no one kind of evidence stands out (at least 0.3): severity or the trees alone.
    Used by the threshold (``AnomalyScorer._same_incident``) and by ``streams.incidents``."""
    kind = max(EVIDENCE, key=x.__getitem__)
    if x[kind] < 0.3:
        return None
    host, tid = ctx.get("host"), ctx.get("template_id")
    if kind in ("host_burst", "error_burst", "silence"):
        return (kind, host)
    if kind == "template_burst":
        return (kind, host if ctx.get("burst_host") else None, tid)
    if kind == "param":
        return (kind, tid, (ctx.get("param") or (None,))[0])
    if kind == "recurrence":
        return (kind, host, tid)
    return (kind, tid)


def _always_reason(x: dict[str, float], ctx: dict, unusual: bool) -> str:
    """The reason of a line whose template is marked always-alert: the mark, then what was
    unusual about the line when it would have been flagged anyway."""
    why = f"pattern {ctx.get('template_id')} is marked always-alert"
    return f"{why}; {explain(x, ctx)}" if unusual else why


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def explain(x: dict[str, float], ctx: dict, strong: float = 0.3) -> str:
    """Words a person can act on: which evidence was strong, with the numbers behind it,
    strongest first; then the level, when it is a warning or worse."""
    parts: list[tuple[float, str]] = []
    get = x.get
    tid = ctx.get("template_id")
    # lines without a host are counted together, as one source
    who = (f"host {ctx['host']}" if ctx.get("host") else
           f"source {ctx['source']}" if ctx.get("source") else "lines without a host")
    nov = get("novelty", get("rarity", 0.0) if get("rarity", 0.0) >= 0.6 else 0.0)
    if ctx.get("mark") == "expected":
        pass  # marked expected: never "new" or "rare", whatever its count
    elif ctx.get("seen_in_kind") == 0 and ctx.get("seen_before") and nov >= strong:
        parts.append((nov, (f"first time message pattern {tid} was seen from this kind of source "
                            f"(seen {ctx['seen_before']} times from others)")))
    elif get("new_template", 0.0) >= 1.0 or ctx.get("seen_before") == 0:
        parts.append((max(nov, strong), f"first time this message pattern ({tid}) was seen"))
    elif nov >= strong:
        parts.append((nov, f"rare message pattern {tid} (seen {ctx.get('seen_before')} times before)"))
    if get("template_burst", 0.0) >= strong:
        parts.append((x["template_burst"],
                      (f"burst: {who + ' logged ' if ctx.get('burst_host') else ''}"
                       f"pattern {tid} ~{ctx['template_count']:.0f} times in the last minute, "
                       f"at most ~{ctx['template_usual']:.0f} before")))
    if get("error_burst", 0.0) >= strong:
        parts.append((x["error_burst"],
                      f"error flood: {who} logged ~{ctx['error_count']:.0f} warnings/errors in "
                      "the last minute, "
                      + (f"~{ctx['error_usual']:.0f} expected from its usual share of the fleet's"
                         if ctx.get("error_peer") else
                         f"at most ~{ctx['error_usual']:.0f} before")))
    if get("recurrence", 0.0) >= strong:
        parts.append((x["recurrence"],
                      (f"recurring {ctx.get('level') or 'error'}: {who} logged pattern "
                       f"{tid} ~{ctx['recurrence_count']:.0f} times in the last hour, more than "
                       "all other hosts together")))
    if get("silence", 0.0) >= strong:
        parts.append((x["silence"],
                      (f"{who} was silent for {_dur(ctx['gap'])} before this line "
                       f"(usually ~{_dur(ctx['usual_gap'])} between lines)")))
    if get("param", 0.0) >= strong and ctx.get("param"):
        i, value, kind, ref = ctx["param"]
        if kind == "number":
            lo, hi = ref if isinstance(ref, tuple) else (ref, ref)
            held = f"{lo:.3g}" if lo == hi else f"{lo:.3g} to {hi:.3g}"
            parts.append((x["param"], (f"unusual value {value} in parameter {i + 1} of "
                                       f"pattern {tid} (it held {held} before)")))
        else:
            parts.append((x["param"], (f"new value {value!r} in parameter {i + 1} of pattern "
                                       f"{tid} (it held {ref} distinct values before)")))
    if get("host_burst", 0.0) >= strong:
        parts.append((x["host_burst"],
                      (f"{who} sent ~{ctx['host_count']:.0f} lines in the last minute, "
                       f"at most ~{ctx['host_usual']:.0f} before")))
    parts.sort(key=lambda p: -p[0])
    words = [p[1] for p in parts]
    if ctx.get("severe_word") is not None:  # a levelless line naming a severity: said first
        word, named = ctx["severe_word"]
        words.insert(0, (f"first line of pattern {tid} from {who} with the word {word!r} "
                         f"(severity {named} named in a line without a level)"))
    elif ctx.get("first_severe") is not None:  # severity that counts: said first
        level = ctx.get("level")
        words.insert(0, (f"first {level} line of pattern {tid} from {who}, where {level} or worse "
                         f"is rare ({ctx['first_severe']:.1%} of this kind of source's lines)"))
    if get("severity", 0.0) >= 0.5:
        level, usual = ctx.get("level"), ctx.get("level_share") or 0.0
        if ctx.get("severe_quiet") is not None:  # weighed fully: none for a long while
            words.append(f"severity {level} (the first line at ERROR or worse from this kind of "
                         f"source in {_dur(ctx['severe_quiet'])})")
        elif get("severity", 0.0) >= SEVERE and usual >= SEVERE_RARE:  # weighed less: routine here
            words.append(f"severity {level} ({usual:.0%} of this kind of source's lines are "
                         f"{level} or worse)")
        else:
            words.append(f"severity {level}")
    if get("unparsed", 0.0) >= 1.0:
        words.append("line matches no known log format")
    if get("length", 0.0) >= 0.8:
        words.append(f"unusually long message ({ctx.get('tokens')} tokens)")
    if not parts and ctx.get("first_severe") is None:
        top = sorted(((k, v) for k, v in x.items() if k not in ("severity", "rarity", "length")),
                     key=lambda kv: -kv[1])[:2]
        words.insert(0, "unusual combination of "
                     + " and ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in top))
    return "; ".join(words)
