"""Online anomaly scoring: features in [0, 1] → River HalfSpaceTrees → adaptive threshold.

Every line is scored *before* it is learned, so a line never vouches for itself.
All state (trees, threshold histogram, rate history) is plain Python and picklable.

Features (fixed keys, each already in [0, 1], so no scaler is needed):

=================  ==========================================================
``rarity``         surprisal of the template: -ln((c+1)/(n+2)) / ln(n+2)
``new_template``   1 when the template was created by this line
``severity``       level mapped to [0, 1] (DEBUG 0 … FATAL 1)
``length``         token count / 64, capped
``unparsed``       1 when no header format matched
``host_burst``     this window's lines of the host vs. its usual per window
``template_burst`` this window's lines of the template vs. its usual per window
=================  ==========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from river.anomaly import HalfSpaceTrees

__all__ = ["FEATURES", "SEVERITY", "AnomalyScorer", "Score", "RateTracker", "AdaptiveThreshold"]

FEATURES = (
    "rarity",
    "new_template",
    "severity",
    "length",
    "unparsed",
    "host_burst",
    "template_burst",
)

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


class RateTracker:
    """Lines per key in the current event-time window, against that key's usual rate.

    ``add(key, window_start)`` returns ``(count_in_window, usual_per_window)``; the usual
    rate is an exponentially weighted mean over the key's closed windows (None before one
    closed).
    """

    def __init__(self, alpha: float = 0.3):
        self.alpha = alpha
        self._current: dict[str, tuple[float, int]] = {}
        self._usual: dict[str, float] = {}

    def add(self, key: str, window_start: float) -> tuple[int, float | None]:
        start, count = self._current.get(key, (window_start, 0))
        if window_start > start:  # the key's previous window closed
            prev = self._usual.get(key)
            self._usual[key] = count if prev is None else prev + self.alpha * (count - prev)
            start, count = window_start, 0
        elif window_start < start:  # a late line: count it in the window it belongs to? keep simple
            return count, self._usual.get(key)
        count += 1
        self._current[key] = (start, count)
        return count, self._usual.get(key)


def _burst(count: int, usual: float | None) -> float:
    """0.5 when a key runs at its usual rate, → 1 in a burst, → 0 when quiet."""
    if usual is None:
        return 0.5
    r = count / (usual + 1.0)
    return r / (1.0 + r)


class AdaptiveThreshold:
    """Running quantile of scores on a fixed histogram (O(1) update, picklable)."""

    def __init__(self, quantile: float = 0.995, bins: int = 200, refresh: int = 256):
        self.quantile = quantile
        self.bins = [0] * bins
        self.n = 0
        self.refresh = refresh
        self.value = 1.0

    def update(self, score: float) -> None:
        nb = len(self.bins)
        self.bins[min(int(score * nb), nb - 1)] += 1
        self.n += 1
        if self.n % self.refresh == 0:
            target = self.quantile * self.n
            acc = 0
            for i, c in enumerate(self.bins):
                acc += c
                if acc >= target:
                    self.value = (i + 1) / nb
                    break


@dataclass(slots=True)
class Score:
    score: float
    is_anomaly: bool
    reason: str | None
    warming_up: bool
    features: dict[str, float]


class AnomalyScorer:
    """HST over the fixed feature vector; score-then-learn; reasons for flagged lines."""

    def __init__(
        self,
        *,
        n_trees: int = 10,
        height: int = 6,
        window_size: int = 250,
        quantile: float = 0.995,
        min_score: float = 0.7,
        seed: int = 42,
    ):
        self.hst = HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self.window_size = window_size
        self.threshold = AdaptiveThreshold(quantile)
        self.min_score = min_score
        self.seen = 0
        self.hosts = RateTracker()
        self.templates = RateTracker()
        self._template_cache: dict[str, tuple[float, float]] = {}

    @property
    def warmed_up(self) -> bool:
        # HST scores 0 until its first reference window is complete
        return self.seen >= 2 * self.window_size

    def features(
        self,
        *,
        template_id: str,
        seen_before: int,
        is_new: bool,
        level: str | None,
        tokens: int,
        parsed: bool,
        host: str | None,
        window_start: float,
    ) -> tuple[dict[str, float], dict]:
        n = self.seen
        rarity = -math.log((seen_before + 1) / (n + 2)) / math.log(n + 2)
        hc, hu = self.hosts.add(host or "-", window_start)
        tc, tu = self.templates.add(template_id, window_start)
        x = {
            "rarity": min(max(rarity, 0.0), 1.0),
            "new_template": 1.0 if is_new else 0.0,
            "severity": SEVERITY.get(level, 0.5),
            "length": min(tokens / 64.0, 1.0),
            "unparsed": 0.0 if parsed else 1.0,
            "host_burst": _burst(hc, hu),
            "template_burst": _burst(tc, tu),
        }
        ctx = {"host": host, "host_count": hc, "host_usual": hu, "template_count": tc,
               "template_usual": tu, "seen_before": seen_before, "level": level, "tokens": tokens,
               "template_id": template_id}
        return x, ctx

    def score(self, x: dict[str, float], ctx: dict) -> Score:
        s = self.hst.score_one(x)
        self.hst.learn_one(x)
        warming = not self.warmed_up
        self.seen += 1
        if warming:
            return Score(s, False, None, True, x)
        self.threshold.update(s)
        flagged = s >= self.min_score and s >= self.threshold.value
        return Score(s, flagged, explain(x, ctx) if flagged else None, False, x)


def explain(x: dict[str, float], ctx: dict) -> str:
    """Words a person can act on: which features were extreme, with their numbers."""
    parts: list[str] = []
    if x["new_template"] >= 1.0:
        parts.append(f"first time this message pattern ({ctx['template_id']}) was seen")
    elif x["rarity"] >= 0.6:
        parts.append(f"rare message pattern {ctx['template_id']} (seen {ctx['seen_before']} times before)")
    if x["severity"] >= 0.5:
        parts.append(f"severity {ctx['level']}")
    if x["unparsed"] >= 1.0:
        parts.append("line matches no known log format")
    if x["host_burst"] >= 0.8:
        parts.append(
            f"host {ctx['host']} sent {ctx['host_count']} lines this window, usually ~{ctx['host_usual']:.0f}"
        )
    if x["template_burst"] >= 0.8:
        parts.append(
            f"pattern {ctx['template_id']} occurred {ctx['template_count']} times this window, "
            f"usually ~{ctx['template_usual']:.0f}"
        )
    if x["length"] >= 0.8:
        parts.append(f"unusually long message ({ctx['tokens']} tokens)")
    if not parts:
        top = sorted(x.items(), key=lambda kv: -kv[1])[:2]
        parts.append("unusual combination of " + " and ".join(f"{k}={v:.2f}" for k, v in top))
    return "; ".join(parts)
