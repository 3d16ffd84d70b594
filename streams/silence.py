"""Silence of a source, noticed where it happens: on its kind of source's clock.

A line-by-line score can only notice that a host was quiet when the host speaks again, and
by then the first line back looks ordinary. An operator expects what "no data" alerts do: a
source that was regularly active and has gone quiet while the others of its kind keep
sending is reported *while* it is quiet, and the report ends when it sends again.

``SilenceWatch`` is part of the pipeline's state (pickled with it, moved with its partition)
and, like the rest of the core, reads no clock: its time is the lines' own event time,
counted in *kind-minutes* — minutes into which its kind of source's event-time watermark
moved (the kind is the scorer's: a named stream, else a log format). A night in which the
whole kind sends nothing counts no minutes, so nobody is silent because everybody is; a
kind with one source never counts a minute without it, so a lone source is never silent.

Per source (its host, else the source it is judged as), with m the kind-minutes since its
last active minute, the source is *silent* when all of:

* it has been active in at least ``MIN_ACTIVE`` kind-minutes (it was regularly active);
* ``m >= MIN_MINUTES`` (no silence shorter than that is reported);
* ``m > FACTOR x`` its usual longest gap: the 99th percentile of its own gaps (in
  kind-minutes, counts halved now and then so it follows the source's recent habits). A gap
  that was reported as a silence counts as ``LEARN_SILENCE`` (0.3) of a gap, as a burst
  raises a peak by 0.3 of its excess only (streams.scoring): a busy source's rare outage
  does not make the next one usual, but a source that goes quiet that way more than once
  in ~30 of its gaps (a habit, or a source of few, irregular gaps) stops being reported;
* ``(1 - q)^m < ALPHA`` where q is the share of its kind's minutes it was active in: a
  source that speaks in one minute of twenty is not missed after five.

Each check is one pass over the kind's sources when the kind enters a new minute (not per
line). When a silent source sends again, its silence ends. The thresholds are judgement
calls, not fitted to a data set: the figures they give are in bench/QUALITY.md.

>>> w = SilenceWatch()
>>> got = []
>>> for minute in range(30):                    # two hosts, a line each per minute
...     for h in ("a", "b"):
...         got += w.see("k", h, minute * 60.0 + 1, f"{h}{minute}")
>>> for minute in range(30, 40):                # then only b
...     got += w.see("k", "b", minute * 60.0 + 1, f"b{minute}")
>>> [(what, source, since_id) for what, source, since_id, *_ in got]
[('open', 'a', 'a29')]
>>> [what for what, *_ in w.see("k", "a", 40 * 60.0 + 1, "a40")]
['close']
"""

from __future__ import annotations

import math

from streams import scoring

__all__ = ["SilenceWatch", "MINUTE", "MIN_MINUTES", "MIN_ACTIVE", "FACTOR", "ALPHA"]

MINUTE = 60.0  # seconds of event time in one kind-minute
MIN_MINUTES = 5  # a silence is at least this many kind-minutes
MIN_ACTIVE = 10  # a source is judged once it was active in this many kind-minutes
FACTOR = 4.0  # times the source's usual longest gap
ALPHA = 1e-3  # chance of the silence, were the source as active as usual, below this
QUANTILE = 0.99  # the usual longest gap: this quantile of its gaps
LEARN_SILENCE = 0.3  # a gap reported as a silence counts as this much of a usual gap
_HALVE_AT = 2000.0  # gaps counted; beyond, every count is halved (recent habits weigh more)
_MAX_KINDS = 1024

# a source's state: a list (small to pickle, quick to index)
_AT, _MINUTE, _ACTIVE, _SPAN, _GAPS, _NGAPS, _LIMIT, _LAST_ID, _LAST_TS, _SILENT, _HOST = range(11)


def _bucket(gap: int) -> int:
    """Gaps up to 8 exactly, longer ones to two significant bits (8, 12, 16, 24, 32, ...):
    a source's gap counts stay a few dozen entries whatever its gaps."""
    if gap <= 8:
        return gap
    shift = gap.bit_length() - 2
    return (gap >> shift) << shift


class _Kind:
    __slots__ = ("minute", "count", "sources", "last_ts")

    def __init__(self) -> None:
        self.minute = None  # the watermark's minute index
        self.count = 0  # kind-minutes so far
        self.sources: dict[str, list] = {}
        self.last_ts = None


class SilenceWatch:
    """Which sources went quiet while their kind kept sending; ``see`` every line."""

    def __init__(self) -> None:
        self.kinds: dict[str, _Kind] = {}
        self.watched = 0  # sources over all kinds

    # -- the hot path ----------------------------------------------------------------------
    def see(self, kind: str | None, source: str, ts: float, event_id,
            host: str | None = None) -> list[tuple]:
        """One line of ``source`` (of ``kind``; ``host``: its host, if the source is one) at
        event time ``ts``. Returns what changed: ``("close", source, since_event_id,
        since_ts, ts)`` when a silent source speaks again, and for each source found silent
        ``("open", source, since_event_id, since_ts, at_ts, minutes, usual, share, host)``."""
        k = self.kinds.get(kind)
        if k is None:
            if len(self.kinds) >= _MAX_KINDS:  # forget the kind that advanced least
                del self.kinds[min(self.kinds, key=lambda n: (self.kinds[n].count, str(n)))]
                self.watched = sum(len(x.sources) for x in self.kinds.values())
            k = self.kinds[kind] = _Kind()
        out: list[tuple] = []
        minute = math.floor(ts / MINUTE)
        advanced = k.minute is None or minute > k.minute
        if advanced:
            k.minute = minute
            k.count += 1
            k.last_ts = ts
        s = k.sources.get(source)
        if s is None:
            # sources watched over all kinds: as many as the scorer keeps hosts (read here, so
            # one bound sets both); beyond, the half quiet longest is forgotten
            if self.watched >= scoring._MAX_HOSTS:
                self._forget_half()
            s = k.sources[source] = [k.count, minute, 1.0, 0.0, {}, 0.0, None, event_id, ts,
                                     False, host]
            self.watched += 1
        else:
            weight = 1.0
            if s[_SILENT]:
                s[_SILENT] = False
                out.append(("close", source, s[_LAST_ID], s[_LAST_TS], ts))
                weight = LEARN_SILENCE
            if minute > s[_MINUTE]:  # a new active minute of this source
                gap = k.count - s[_AT]
                s[_MINUTE] = minute
                if gap >= 1:
                    self._learn(s, gap, weight)
                    s[_AT] = k.count
            if ts >= s[_LAST_TS]:
                s[_LAST_ID], s[_LAST_TS] = event_id, ts
        if advanced and k.count > MIN_MINUTES:
            self._check(k, out)
        return out

    @staticmethod
    def _learn(s: list, gap: int, weight: float = 1.0) -> None:
        s[_ACTIVE] += 1.0
        s[_SPAN] += gap
        gaps = s[_GAPS]
        b = _bucket(gap)
        gaps[b] = gaps.get(b, 0.0) + weight
        s[_NGAPS] += weight
        if s[_NGAPS] > _HALVE_AT:
            s[_ACTIVE] /= 2.0
            s[_SPAN] /= 2.0
            s[_NGAPS] /= 2.0
            for g in list(gaps):
                gaps[g] /= 2.0
        s[_LIMIT] = None  # recomputed when next needed

    @staticmethod
    def usual_gap(s: list) -> int:
        """The QUANTILE of the source's gaps, in kind-minutes."""
        tail = (1.0 - QUANTILE) * s[_NGAPS]
        above = 0.0
        for g in sorted(s[_GAPS], reverse=True):
            above += s[_GAPS][g]
            if above > tail:
                return g
        return 1

    def _check(self, k: _Kind, out: list) -> None:
        now = k.count
        for source, s in k.sources.items():
            if s[_SILENT] or s[_ACTIVE] < MIN_ACTIVE:
                continue
            m = now - s[_AT]
            if m < MIN_MINUTES:
                continue
            limit = s[_LIMIT]
            if limit is None:
                limit = s[_LIMIT] = FACTOR * self.usual_gap(s)
            if m <= limit:
                continue
            q = s[_ACTIVE] / (s[_SPAN] + m + 1.0)  # its share of the kind's minutes, now too
            if q < 1.0 and m * math.log1p(-q) >= math.log(ALPHA):
                continue
            s[_SILENT] = True
            out.append(("open", source, s[_LAST_ID], s[_LAST_TS], k.last_ts, m,
                        self.usual_gap(s), q, s[_HOST]))

    def _forget_half(self) -> None:
        """Bounded memory: the half of the sources whose last line is oldest (by their kind's
        minutes) is forgotten; a silent one among them is no longer followed (its incident
        stays open until the tracker's own bound, ``max_open``, resolves it)."""
        every = sorted(((k.count - s[_AT], name, source) for name, k in self.kinds.items()
                        for source, s in k.sources.items()), key=lambda x: (-x[0], str(x[1]),
                                                                              x[2]))
        for _m, name, source in every[:len(every) // 2]:
            del self.kinds[name].sources[source]
        self.watched = sum(len(x.sources) for x in self.kinds.values())

    def silent(self) -> list[tuple]:
        """(kind, source) of every source silent now."""
        return [(name, source) for name, k in self.kinds.items()
                for source, s in k.sources.items() if s[_SILENT]]

    def describe(self) -> dict:
        return {"kinds": len(self.kinds), "sources": self.watched, "silent": len(self.silent())}
