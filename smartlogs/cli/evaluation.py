"""``smartlogs eval``: parsing, template-mining and detection quality of the real pipeline.

Every number here comes from running ``streams.pipeline.Pipeline.process`` (the code the
platform runs: parser, template miner, scorer) over a file, one pass, in order:

* :func:`eval_parsing` — share of lines parsed and, against a loghub structured CSV, the
  agreement of each CSV column with the field the parser extracted (the column is matched
  automatically to the parsed field that agrees best, so loghub's naming quirks, such as
  the syslog host in Linux's ``Level`` column, need no table), plus template mining:
  grouping accuracy (GA, the loghub benchmark's definition) and template counts against
  the CSV's ``EventId``. With ``messages_only`` the CSV's ``Content`` column (or a plain
  file of messages, one a line) is fed instead of raw lines, which judges template mining
  apart from header parsing.
* :func:`eval_detection` — on a labelled BGL-format file (first column ``-`` for a normal
  line): ROC-AUC and PR-AUC of the score (rank-based, ties averaged), the same for the log
  level alone as a baseline, and precision/recall/F1 of the live flags (the adaptive
  threshold); every line's score, flag and reason written to CSV or JSONL; a PNG plot.
* :func:`eval_synthetic` — anomalies of known kinds injected into a normal stream
  (:mod:`smartlogs.cli.synthetic`): recall per kind and false-positive rate, both at the live
  adaptive threshold and at the operating point where the false-positive rate is 1%.

Lines are scored before they are learned (the scorer's contract), so no line vouches for
itself; the model starts empty for every file.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Iterable, Optional

import numpy as np
import typer

from smartlogs.cli.synthetic import KINDS, generate
from streams.parsing import ParsedLine
from streams.incidents import merge_snapshot
from streams.pipeline import Pipeline, PipelineConfig
from streams.scoring import SEVERITY

__all__ = [
    "grouping_accuracy", "roc_auc", "pr_auc", "eval_parsing", "eval_detection",
    "eval_synthetic", "eval_loghub", "eval_mixed", "worst_contiguous_half",
    "roc_auc_interval", "contiguous_halves", "find_samples", "LOGHUB_SAMPLES", "eval_app",
]

BATCH = 500
_IGNORED_COLUMNS = {"LineId", "EventId", "EventTemplate"}

# the six shared samples: folder -> log file name
LOGHUB_SAMPLES = {
    "Linux": "Linux_2k.log",
    "OpenSSH": "OpenSSH_2k.log",
    "Apache": "Apache_2k.log",
    "HDFS": "HDFS_2k.log",
    "Zookeeper": "Zookeeper_2k.log",
    "BGL": "BGL_2k_first1000.log",
}


# -- metrics ---------------------------------------------------------------------------------
def grouping_accuracy(truth: list, predicted: list) -> float:
    """loghub's GA: a line is correct when the set of lines that share its predicted group
    is exactly the set that shares its true group."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted differ in length")
    if not truth:
        return 0.0
    true_sizes = Counter(truth)
    groups: dict = defaultdict(list)
    for t, p in zip(truth, predicted):
        groups[p].append(t)
    correct = 0
    for members in groups.values():
        first = members[0]
        if all(m == first for m in members) and true_sizes[first] == len(members):
            correct += len(members)
    return correct / len(truth)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    xs = x[order]
    _, first, counts = np.unique(xs, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # 1-based mean rank of each run of ties
    ranks[order] = np.repeat(avg, counts)
    return ranks


def roc_auc(labels: Iterable, scores: Iterable) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks); NaN without both classes."""
    y = np.asarray(list(labels), dtype=bool)
    s = np.asarray(list(scores), dtype=float)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = _average_ranks(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def worst_contiguous_half(labels: list, scores: list) -> tuple[int, float]:
    """(start, ROC-AUC) of the contiguous half of the lines (``len // 2`` of them, starting at
    any line) where the ROC-AUC is lowest, among those holding both classes; (-1, NaN) when
    none does."""
    half = len(labels) // 2
    worst = (-1, float("nan"))
    for start in range(0, len(labels) - half + 1):
        a = roc_auc(labels[start:start + half], scores[start:start + half])
        if a == a and not worst[1] <= a:  # NaN (one class only) is skipped
            worst = (start, a)
    return worst


def roc_auc_interval(labels: Iterable, scores: Iterable, baseline: Iterable | None = None, *,
                     level: float = 0.95, resamples: int = 2000,
                     seed: int = 0) -> dict[str, float]:
    """How much a ROC-AUC can be trusted: a stratified bootstrap (the positives resampled among
    the positives, the negatives among the negatives, ``resamples`` times) gives the central
    ``level`` interval of the ROC-AUC (``low``, ``high``); with ``baseline`` scores of the same
    lines, also that of the difference ROC-AUC(scores) - ROC-AUC(baseline) on the same resamples
    (``diff_low``, ``diff_high``) and the share of resamples where the scores rank better
    (``better``). With two positives the interval spans the two lines' ranks: a ROC-AUC of so
    few says little. NaN without both classes."""
    y = np.asarray(list(labels), dtype=bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    keys = ["low", "high"] + (["diff_low", "diff_high", "better"] if baseline is not None else [])
    if not len(pos) or not len(neg):
        return dict.fromkeys(keys, float("nan"))

    def wins(s) -> np.ndarray:  # pos x neg: 1 when the positive ranks above, 0.5 on a tie
        s = np.asarray(list(s), dtype=float)
        d = s[pos][:, None] - s[neg][None, :]
        return (d > 0) + 0.5 * (d == 0)

    rng = np.random.default_rng(seed)
    wp = rng.multinomial(len(pos), np.full(len(pos), 1.0 / len(pos)), size=resamples)
    wn = rng.multinomial(len(neg), np.full(len(neg), 1.0 / len(neg)), size=resamples)
    norm = float(len(pos) * len(neg))
    a = np.einsum("ri,ij,rj->r", wp, wins(scores), wn) / norm
    tail = 100.0 * (1.0 - level) / 2.0
    out = dict(zip(("low", "high"), map(float, np.percentile(a, [tail, 100.0 - tail]))))
    if baseline is not None:
        d = a - np.einsum("ri,ij,rj->r", wp, wins(baseline), wn) / norm
        out.update(zip(("diff_low", "diff_high"), map(float, np.percentile(d, [tail, 100.0 - tail]))))
        out["better"] = float((d > 0).mean())
    return out


def contiguous_halves(labels: list, scores: list, baseline: list,
                      target: float = 0.97) -> dict:
    """Every contiguous half (``len // 2`` lines, any start) holding both classes: how many
    there are, how many reach ``target``, how many rank above ``baseline`` (the level alone),
    how many do both, and the fewest and most positives a half holds."""
    half = len(labels) // 2
    n = reach = above = both = 0
    fewest, most = None, None
    for start in range(0, len(labels) - half + 1):
        ys = labels[start:start + half]
        a = roc_auc(ys, scores[start:start + half])
        if a != a:
            continue
        b = roc_auc(ys, baseline[start:start + half])
        k = int(sum(ys))
        n += 1
        reach += a >= target
        above += a > b
        both += a >= target and a > b
        fewest = k if fewest is None else min(fewest, k)
        most = k if most is None else max(most, k)
    return {"halves": n, "reach_target": reach, "above_baseline": above, "both": both,
            "target": target, "fewest_positives": fewest, "most_positives": most}


def pr_auc(labels: Iterable, scores: Iterable) -> float:
    """Average precision: the precision at each distinct threshold weighted by the recall it
    adds (tied scores enter together); NaN without positives."""
    y = np.asarray(list(labels), dtype=bool)
    s = np.asarray(list(scores), dtype=float)
    n1 = int(y.sum())
    if n1 == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each tie run
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n1
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


def _prf(labels, flags) -> dict:
    y = np.asarray(labels, dtype=bool)
    f = np.asarray(flags, dtype=bool)
    tp = int((y & f).sum())
    fp = int((~y & f).sum())
    fn = int((y & ~f).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "flagged": int(f.sum())}


# -- running the pipeline ------------------------------------------------------------------------
def _run(items: list[dict], config: PipelineConfig | None = None,
         incidents: dict | None = None) -> tuple[Pipeline, list[dict]]:
    """Every item through one pipeline in batches; ``incidents`` (if given) gets the latest
    snapshot of every incident by id."""
    p = Pipeline(config or PipelineConfig())
    events: list[dict] = []
    for k in range(0, len(items), BATCH):
        events.extend(p.process(items[k:k + BATCH]))
        if incidents is not None:
            for snap in p.take_incidents():  # as the stores keep them (shared ones merged)
                kept = merge_snapshot(incidents.get(snap["id"]), snap)
                if kept is not None:
                    incidents[snap["id"]] = kept
    return p, events


def _silences_covered(items: list[dict], episodes: list[tuple[str, list]],
                      incidents: dict) -> tuple[list[bool], set]:
    """Per ``host_silence`` episode (kind, its ids: the host's first lines back): whether a
    silence incident (``streams.silence``) covers it, i.e. one opened from that host's last
    line before the gap; and the ids of the silence incidents that cover one."""
    from streams.incidents import SILENCE

    by_first = {}
    for inc in incidents.values():
        if inc.get("kind") == SILENCE:
            by_first.setdefault(inc["first_event_id"], []).append(inc["id"])
    index = {it["id"]: k for k, it in enumerate(items)}
    covered, used = [], set()
    for kind, ids in episodes:
        if kind != "host_silence" or not ids:
            continue
        k = index[ids[0]]
        host = items[k]["host"]
        before = next((items[j]["id"] for j in range(k - 1, -1, -1)
                       if items[j].get("host") == host), None)
        got = by_first.get(before, [])
        covered.append(bool(got))
        used.update(got)
    return covered, used


def _run_partitioned(items: list[dict], partitions: int,
                     config: PipelineConfig | None = None,
                     incidents: dict | None = None) -> list[dict]:
    """As the runtimes run it with ``partitions`` partitions: each item goes to its source's
    partition (``streams.partitions``), each partition has its own model and sees its items in
    order. Events in the order of the items."""
    from streams.partitions import partition_key, partition_of

    if partitions <= 1:
        return _run(items, config, incidents)[1]
    parts: dict[int, list[dict]] = {}
    for it in items:
        parts.setdefault(partition_of(partition_key(it), partitions), []).append(it)
    by_id = {e["id"]: e for part in parts.values() for e in _run(part, config, incidents)[1]}
    return [by_id[it["id"]] for it in items]


def _read_lines(path: Path) -> list[str]:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip()]


def _read_structured(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return list(csv.DictReader(f))


# -- parsing and templates -------------------------------------------------------------------------
_TIME_FORMATS = (
    "%b", "%d", "%H:%M:%S", "%y%m%d", "%H%M%S", "%Y-%m-%d", "%Y.%m.%d", "%a %b %d %H:%M:%S %Y",
    "%Y-%m-%d %H:%M:%S", "%m.%d %H:%M:%S", "%m-%d %H:%M:%S",
)


def _candidates(p: ParsedLine) -> dict[str, str]:
    """Every value the parser extracted from a line, as text, by the name of its field."""
    out = {"message": p.message}
    for name in ("host", "component", "pid", "level"):
        v = getattr(p, name)
        out[name] = "" if v is None else str(v)  # absent = an empty CSV cell
    for k, v in p.fields.items():
        out[f"fields.{k}"] = str(v)
    ts = p.timestamp
    if ts is not None:
        for fmt in _TIME_FORMATS:
            out[f"time {fmt}"] = ts.strftime(fmt)
        out["time day"] = str(ts.day)
        out["time %H:%M:%S,ms"] = ts.strftime("%H:%M:%S,") + f"{ts.microsecond // 1000:03d}"
        out["time %H:%M:%S.ms"] = ts.strftime("%H:%M:%S.") + f"{ts.microsecond // 1000:03d}"
        out["time %m-%d"] = ts.strftime("%m-%d")
        out["time %Y-%m-%d-%H.%M.%S.us"] = ts.strftime("%Y-%m-%d-%H.%M.%S.") + f"{ts.microsecond:06d}"
        out["time epoch"] = str(int(ts.timestamp()))
    return out


def eval_parsing(log: Path, structured: Path | None = None, *, messages_only: bool = False,
                 config: PipelineConfig | None = None) -> dict:
    """Parsing share, field agreement and template grouping of the real pipeline on one file.

    ``log`` holds raw lines; with ``messages_only`` it holds messages only (one a line) and
    may be omitted (None) to take the ``Content`` column of ``structured`` instead.
    """
    rows = _read_structured(structured) if structured else None
    arrival = _arrival()
    if messages_only:
        messages = [r["Content"] for r in rows] if log is None else \
            Path(log).read_text(encoding="utf-8", errors="replace").splitlines()
        items = [{"id": i, "message": m, "received": arrival} for i, m in enumerate(messages)]
    else:
        lines = Path(log).read_text(encoding="utf-8", errors="replace").splitlines()
        items = [{"id": i, "raw": line, "received": arrival} for i, line in enumerate(lines)]
    pipeline, events = _run(items, config)
    n = len(events)
    result: dict = {
        "file": str(log if log is not None else structured),
        "input": "messages" if messages_only else "raw lines",
        "lines": n,
        "templates": pipeline.miner.template_count,
    }
    if not messages_only:
        parsed = sum(1 for e in events if e["parse_ok"])
        result["parsed"] = parsed
        result["parsed_share"] = parsed / n if n else 0.0
        result["formats"] = dict(Counter(e["format"] for e in events))
    if rows is None:
        return result
    if len(rows) != n:
        result["warning"] = f"{n} lines but {len(rows)} CSV rows: compared the first {min(n, len(rows))}"
    m = min(n, len(rows))
    if not messages_only:
        # field agreement: re-parse the lines in order with a fresh twin of the pipeline's
        # parsing (built-in formats, then each source's learned layout) for the raw field texts
        reparse = Pipeline(pipeline.config)._parse
        cands = [_candidates(reparse(items[i]["raw"], items[i])) for i in range(m)]
        fields = {}
        for col in rows[0].keys():
            if col in _IGNORED_COLUMNS or col is None:
                continue
            hits: Counter = Counter()
            for i in range(m):
                want = (rows[i][col] or "").strip()
                for name, value in cands[i].items():
                    if value.strip() == want:
                        hits[name] += 1
            if hits:
                best, count = max(hits.items(), key=lambda kv: (kv[1], -len(kv[0])))
            else:
                best, count = None, 0
            fields[col] = {"field": best, "agreement": count / m if m else 0.0}
        result["fields"] = fields
    truth = [r["EventId"] for r in rows[:m]]
    # an id emitted before its enumeration merged is scored as the group that took it over
    resolve = pipeline.miner.resolve
    predicted = [resolve(e["template_id"]) for e in events[:m]]
    result["grouping_accuracy"] = grouping_accuracy(truth, predicted)
    result["true_templates"] = len(set(truth))
    result["predicted_templates"] = len(set(predicted))
    return result


# -- detection on labelled data ---------------------------------------------------------------
def _bgl_label(raw: str) -> bool:
    """BGL: the first column is '-' for a normal line, an alert category otherwise."""
    head = raw.split(None, 1)
    return bool(head) and head[0] != "-"


# Hadoop: loghub's sample is the first 2,000 lines of one application master's log,
# application_1445144423722_0020, which loghub's abnormal_label.txt lists under "Network
# disconnection" (a server was cut off the network while the job ran). Its lines are not labelled
# one by one; the failure shows from the first of these symptoms on, and only the lines before it
# are counted as normal.
_HADOOP_FAILURE = ("Address change detected", "Failed to renew lease", "Retrying connect to server")


def _hadoop_failure_start(lines: list[str]) -> int:
    """Index of the first line of the injected network disconnection (len(lines): none)."""
    return next((i for i, line in enumerate(lines) if any(s in line for s in _HADOOP_FAILURE)),
                len(lines))


def _interleave(queues: dict[str, list], rng: random.Random) -> list[tuple[str, object]]:
    """(name, element) of every queue, in a random order that keeps each queue's own order:
    several sources arriving as one stream."""
    order = [name for name, q in queues.items() for _ in q]
    rng.shuffle(order)
    pos = dict.fromkeys(queues, 0)
    out = []
    for name in order:
        out.append((name, queues[name][pos[name]]))
        pos[name] += 1
    return out


def _arrival() -> float:
    """When the evaluated lines "arrive": now, as in a replay. (The pipeline places an event
    time more than 62 days after its arrival at the arrival; an arrival of 0 would do that to
    every line of a real log.) Lines without a time of their own all take it, whatever it is."""
    return float(int(time.time()))


def eval_detection(log: Path, *, out: Path | None = None, plot: Path | None = None,
                   config: PipelineConfig | None = None) -> dict:
    """Detection quality on a labelled BGL-format file; writes per-line results and a plot."""
    lines = _read_lines(log)
    arrival = _arrival()
    items = [{"id": i, "raw": line, "received": arrival} for i, line in enumerate(lines)]
    labels = [_bgl_label(line) for line in lines]
    pipeline, events = _run(items, config)
    scores = [e["score"] for e in events]
    flags = [e["anomaly"] for e in events]
    level_only = [SEVERITY.get(e["level"], 0.5) for e in events]
    scored = [not e["warming_up"] for e in events]
    result = {
        "file": str(log),
        "lines": len(events),
        "anomalous": int(sum(labels)),
        "roc_auc": roc_auc(labels, scores),
        "pr_auc": pr_auc(labels, scores),
        "level_only_roc_auc": roc_auc(labels, level_only),
        "level_only_pr_auc": pr_auc(labels, level_only),
        "at_threshold": _prf(labels, flags),
        "warm_up_lines": int(len(events) - sum(scored)),
        "threshold": pipeline.scorer.threshold.value,
    }
    after = [i for i, s in enumerate(scored) if s]
    if after:
        result["after_warm_up"] = {
            "lines": len(after),
            "roc_auc": roc_auc([labels[i] for i in after], [scores[i] for i in after]),
            "at_threshold": _prf([labels[i] for i in after], [flags[i] for i in after]),
        }
    flagged = [e for e in events if e["anomaly"]]
    result["flagged_with_reason"] = sum(1 for e in flagged if e["reason"])
    if out is not None:
        write_events(out, events, labels)
        result["per_line"] = str(out)
    if plot is not None:
        result["plot"] = plot_scores(plot, events, labels, title=Path(log).name)
    return result


def write_events(path: Path, events: list[dict], labels: list[bool] | None = None) -> None:
    """Every line's score, flag and reason: CSV, or JSONL when the name ends in .jsonl/.json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ("line", "label", "score", "anomaly", "warming_up", "reason", "timestamp", "host",
            "level", "template_id", "template", "message")
    rows = []
    for i, e in enumerate(events):
        rows.append({"line": i + 1, "label": (int(labels[i]) if labels is not None else None),
                     "score": e["score"], "anomaly": e["anomaly"],
                     "warming_up": e["warming_up"], "reason": e["reason"] or "",
                     "timestamp": e["timestamp"], "host": e["host"], "level": e["level"],
                     "template_id": e["template_id"], "template": e["template"],
                     "message": e["message"]})
    if path.suffix in (".jsonl", ".json"):
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)


def plot_scores(path: Path, events: list[dict], labels: list[bool], *, title: str = "") -> str:
    """Scores over time (event time when every line has one, else line number), labelled
    anomalies in red, flags circled, the threshold as a line. matplotlib when installed,
    otherwise a plain PNG drawn with numpy (same marks, no text). Returns the renderer used."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.array([e["ts"] for e in events], dtype=float)
    use_time = bool(len(x)) and np.all(np.isfinite(x)) and np.ptp(x) > 0
    if not use_time:
        x = np.arange(1, len(events) + 1, dtype=float)
    s = np.array([e["score"] for e in events], dtype=float)
    y = np.asarray(labels, dtype=bool)
    f = np.array([e["anomaly"] for e in events], dtype=bool)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _png_scatter(path, x, s, y, f)
        return "numpy (install matplotlib for axes and labels)"
    fig, ax = plt.subplots(figsize=(11, 4), dpi=110)
    xt = [datetime.fromtimestamp(v, timezone.utc) for v in x] if use_time else x
    ax.scatter([xt[i] for i in np.nonzero(~y)[0]], s[~y], s=6, c="#4a78b5", label="normal (label -)")
    ax.scatter([xt[i] for i in np.nonzero(y)[0]], s[y], s=10, c="#d62728", label="labelled anomaly")
    if f.any():
        ax.scatter([xt[i] for i in np.nonzero(f)[0]], s[f], s=60, facecolors="none",
                   edgecolors="black", linewidths=0.8, label="flagged")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("anomaly score")
    ax.set_xlabel("event time (UTC)" if use_time else "line")
    ax.set_title(title or "scores")
    ax.legend(loc="lower right", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return "matplotlib"


def _png_scatter(path: Path, x, s, y, f, w: int = 1000, h: int = 360) -> None:
    import struct
    import zlib
    img = np.full((h, w, 3), 255, dtype=np.uint8)
    pad = 20
    img[h - pad, pad:w - pad] = 0
    img[pad:h - pad, pad] = 0
    x0, x1 = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
    span = (x1 - x0) or 1.0
    px = (pad + (x - x0) / span * (w - 2 * pad - 1)).astype(int)
    py = (h - pad - np.clip(s, 0, 1) * (h - 2 * pad - 1)).astype(int)

    def dot(i, color, r):
        img[max(py[i] - r, 0):py[i] + r + 1, max(px[i] - r, 0):px[i] + r + 1] = color

    for i in np.nonzero(~y)[0]:
        dot(i, (74, 120, 181), 1)
    for i in np.nonzero(y)[0]:
        dot(i, (214, 39, 40), 2)
    for i in np.nonzero(f)[0]:
        img[max(py[i] - 4, 0), max(px[i] - 4, 0):px[i] + 5] = 0
        img[min(py[i] + 4, h - 1), max(px[i] - 4, 0):px[i] + 5] = 0
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    Path(path).write_bytes(png)


# -- synthetic anomalies ----------------------------------------------------------------------
def eval_synthetic(log: Path, *, seed: int = 0, episodes: int = 20, passes: int | None = None,
                   hosts: int = 8, rate: float = 2.0, target_lines: int = 20_000,
                   kinds: tuple[str, ...] = KINDS, config: PipelineConfig | None = None) -> dict:
    """Recall per kind and false-positive rate on a normal stream made from ``log``."""
    lines = _read_lines(log)
    if passes is None:
        passes = max(3, math.ceil(target_lines / max(len(lines), 1)))
    stream = generate(lines, seed=seed, passes=passes, hosts=hosts, rate=rate,
                      episodes=episodes, kinds=kinds)
    incidents: dict = {}
    _pipeline, events = _run(stream.items, config, incidents)
    by_id = {e["id"]: e for e in events}
    normal = stream.normal_ids_after_warmup()
    covered, used = _silences_covered(
        stream.items, [(e.kind, e.ids) for e in stream.episodes], incidents)
    silences = [i for i in incidents.values() if i.get("kind") == "source_silence"]
    hours = max((max(e["ts"] for e in events) - min(e["ts"] for e in events)) / 3600.0, 1e-9)
    normal_scores = np.array([by_id[i]["score"] for i in normal])
    # the operating point where 1% of normal lines score above the threshold
    op = float(np.quantile(normal_scores, 0.99)) if len(normal_scores) else 1.0
    live_fp = sum(1 for i in normal if by_id[i]["anomaly"])
    per_kind: dict = {}
    for kind in kinds:
        eps = [e for e in stream.episodes if e.kind == kind]
        live = [any(by_id[i]["anomaly"] for i in e.ids) for e in eps]
        at_op = [max(by_id[i]["score"] for i in e.ids) > op for e in eps]
        reasons = Counter()
        for e in eps:
            for i in e.ids:
                if by_id[i]["anomaly"]:
                    reasons[(by_id[i]["reason"] or "").split(";")[0].split(" (")[0][:60]] += 1
                    break
        per_kind[kind] = {
            "episodes": len(eps),
            "recall_at_1pct_fpr": (sum(at_op) / len(eps)) if eps else float("nan"),
            "recall_live": (sum(live) / len(eps)) if eps else float("nan"),
            "example_reasons": [r for r, _ in reasons.most_common(2)],
        }
        if kind == "host_silence":  # also: covered by a silence incident (streams.silence)
            per_kind[kind]["recall_silence_incident"] = (
                sum(covered) / len(covered) if covered else float("nan"))
            per_kind[kind]["recall_live_or_incident"] = (
                sum(a or b for a, b in zip(live, covered)) / len(eps) if eps else float("nan"))
    return {
        "file": str(log),
        "seed": seed,
        "lines": len(events),
        "normal_lines_after_warm_up": len(normal),
        "operating_point_score": op,
        "fpr_at_operating_point": float((normal_scores > op).mean()) if len(normal) else 0.0,
        "fpr_live": live_fp / len(normal) if normal else 0.0,
        "live_threshold_end": _pipeline.scorer.threshold.value,
        "kinds": per_kind,
        "silence_incidents": len(silences),
        "false_silence_incidents": len([i for i in silences if i["id"] not in used]),
        "false_silence_incidents_per_hour": len([i for i in silences if i["id"] not in used])
        / hours,
        "hours": hours,
    }


# -- everything on the shared samples -----------------------------------------------------------
def find_samples(root: Path) -> dict[str, tuple[Path, Path | None]]:
    """Every loghub-style sample under ``root``: folder name -> (log file, structured CSV or
    None). A sample is a ``*.log`` file in a sub-folder, with ``<file>_structured.csv`` beside
    it when there is a ground truth."""
    out: dict[str, tuple[Path, Path | None]] = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        logs = sorted(folder.glob("*.log"))
        if not logs:
            continue
        log = logs[0]
        structured = log.with_name(log.name + "_structured.csv")
        out[folder.name] = (log, structured if structured.exists() else None)
    return out


def eval_mixed(samples: dict[str, tuple[Path, Path | None]], *, seed: int = 0,
               config: PipelineConfig | None = None) -> dict:
    """All samples as one stream, lines interleaved at random (each file keeps its own order),
    each line from a source named after its sample: GA per source, through one pipeline."""
    rng = random.Random(seed)
    queues, truth = {}, {}
    for name, (log, structured) in samples.items():
        if structured is None:
            continue
        lines = Path(log).read_text(encoding="utf-8", errors="replace").splitlines()
        rows = _read_structured(structured)
        m = min(len(lines), len(rows))
        queues[name] = lines[:m]
        truth[name] = [r["EventId"] for r in rows[:m]]
    arrival = _arrival()
    items = [{"id": i, "raw": line, "received": arrival, "stream": name}
             for i, (name, line) in enumerate(_interleave(queues, rng))]
    pipeline, events = _run(items, config)
    resolve = pipeline.miner.resolve
    per: dict[str, list] = {name: [] for name in queues}
    parsed: Counter = Counter()
    for item, e in zip(items, events):
        per[item["stream"]].append(resolve(e["template_id"]))
        parsed[item["stream"]] += e["parse_ok"]
    return {
        "lines": len(items), "sources": len(queues), "seed": seed,
        "per_source": {
            name: {"lines": len(truth[name]), "parsed_share": parsed[name] / len(truth[name]),
                   "grouping_accuracy": grouping_accuracy(truth[name], per[name])}
            for name in queues},
        "layouts": {d["source"]: d["layout"] for d in pipeline.describe_sources()},
    }


def eval_production(root: Path, *, seed: int = 0, synthetic_on: Iterable[str] = (
        "Linux", "OpenSSH", "Apache", "HDFS", "Zookeeper"), target_lines: int = 20_000,
        episodes: int = 20, hosts: int = 8, warm_up: int = 500,
        config: PipelineConfig | None = None, partitions: int = 1) -> dict:
    """Detection as in production: every sample under ``root`` as one source of one stream,
    interleaved at random (each source keeps its order), the synthetic anomalies injected into
    the sources in ``synthetic_on``, through one pipeline.

    Per source: flags on its normal lines after its warm-up (the synthetic stream's clean first
    pass; for the other sources their first ``warm_up`` lines; BGL's labelled alerts are not
    normal, nor Hadoop's lines from its labelled network disconnection on, which count as one
    real failure episode, found when one of its lines is flagged), and incidents per simulated
    hour (its event-time span), and silence incidents (``streams.silence``): how many, and how
    many cover no injected silence (false) per simulated hour. Per synthetic kind: an
    episode is found when at least one of its lines is flagged (so at least one incident covers
    it); a host's silence also when a silence incident was opened from its last line before the
    gap (both counts reported). BGL: ROC-AUC of the stored scores on its lines in the mixed stream, each line scored
    before it is learned, against the level alone, on the whole and on each contiguous half."""
    rng = random.Random(seed)
    samples = find_samples(root)
    synthetic_on = set(synthetic_on)
    queues: dict[str, list[dict]] = {}
    normal: dict[str, set] = {}
    labels: dict = {}
    episodes_of: dict[str, list] = {}
    for name, (log, _structured) in samples.items():
        lines = _read_lines(log)
        if not lines:
            continue
        if name in synthetic_on:
            passes = max(3, math.ceil(target_lines / len(lines)))
            # the synthetic streams of ``eval_synthetic`` (same hosts, rate, episodes)
            st = generate(lines, seed=seed, passes=passes, hosts=hosts, rate=2.0,
                          episodes=episodes)
            items = [{**it, "id": f"{name}:{it['id']}", "host": f"{name.lower()}-{it['host']}",
                      "stream": name} for it in st.items]
            normal[name] = {f"{name}:{i}" for i in st.normal_ids_after_warmup()}
            episodes_of[name] = [(e.kind, [f"{name}:{i}" for i in e.ids]) for e in st.episodes]
        else:
            items = [{"id": f"{name}:{i}", "raw": line, "stream": name}
                     for i, line in enumerate(lines)]
            bgl = name == "BGL"
            if bgl:
                labels.update((it["id"], _bgl_label(it["raw"])) for it in items)
            end = len(items)
            if name == "Hadoop":  # a labelled failure: normal until it starts, then found or not
                end = _hadoop_failure_start(lines)
                episodes_of[name] = [("hadoop_network_disconnection",
                                      [it["id"] for it in items[end:]])] if end < len(items) else []
            normal[name] = {it["id"] for it in items[warm_up:end]
                            if not (bgl and labels[it["id"]])}
        queues[name] = items
    arrival = _arrival()
    mixed = []
    for k, (_name, item) in enumerate(_interleave(queues, rng)):
        it = dict(item)
        it.setdefault("received", arrival + k * 0.01)
        mixed.append(it)
    incidents: dict = {}
    events = _run_partitioned(mixed, partitions, config, incidents)
    by_id = {e["id"]: e for e in events}
    # silences: an injected one is found by a flagged line back or by a silence incident
    covered_by: dict[str, list[bool]] = {}
    used: set = set()
    for name, eps in episodes_of.items():
        covered_by[name], u = _silences_covered(queues[name], eps, incidents)
        used |= u
    silence_of: dict[str, list] = {}  # sample -> its silence incidents
    for inc in incidents.values():
        if inc.get("kind") == "source_silence":
            silence_of.setdefault(str(inc["first_event_id"]).split(":", 1)[0], []).append(inc)
    per_source: dict = {}
    for name, items in queues.items():
        evs = [by_id[it["id"]] for it in items]
        flagged = [e for e in evs if e["anomaly"]]
        norm = normal[name]
        fp = sum(1 for e in flagged if e["id"] in norm)
        span_h = max((max(e["ts"] for e in evs) - min(e["ts"] for e in evs)) / 3600.0, 1e-9)
        line_incidents = {e.get("incident_id") for e in flagged if e.get("incident_id")}
        per_source[name] = {
            "lines": len(evs), "normal_after_warm_up": len(norm), "flagged": len(flagged),
            "flagged_normal": fp, "fpr": fp / len(norm) if norm else 0.0,
            "hours": span_h,
            "incidents": len(line_incidents) if "incident_id" in evs[0] else None,
            "incidents_per_hour": (len(line_incidents) / span_h) if "incident_id" in evs[0]
            else None,
            "silence_incidents": len(silence_of.get(name, [])),
            "false_silence_incidents": sum(1 for i in silence_of.get(name, [])
                                           if i["id"] not in used),
            "false_silence_incidents_per_hour": sum(1 for i in silence_of.get(name, [])
                                                    if i["id"] not in used) / span_h,
        }
    kinds: dict = {}
    for name, eps in episodes_of.items():
        cover = iter(covered_by[name])
        for kind, ids in eps:
            k = kinds.setdefault(kind, {"episodes": 0, "found": 0})
            k["episodes"] += 1
            by_line = any(by_id[i]["anomaly"] for i in ids)
            if kind == "host_silence" and ids:
                by_incident = next(cover)
                k["found_by_line"] = k.get("found_by_line", 0) + by_line
                k["found_by_silence_incident"] = k.get("found_by_silence_incident", 0) + by_incident
                k["found"] += by_line or by_incident
            else:
                k["found"] += by_line
    for k in kinds.values():
        k["recall"] = k["found"] / k["episodes"] if k["episodes"] else float("nan")
    report = {"seed": seed, "partitions": partitions, "lines": len(events), "sources": len(queues),
              "per_source": per_source, "kinds": kinds, "bgl": None,
              # silence incidents that cover no injected silence (at most 50), to read
              "false_silences": [
                  {k: inc.get(k) for k in ("source", "stream", "first_ts", "detected_ts",
                                           "resolved_ts", "status", "reason")}
                  for incs in silence_of.values() for inc in incs if inc["id"] not in used][:50]}
    bgl_ids = [it["id"] for it in queues.get("BGL", [])]
    if bgl_ids:
        def auc(ids):
            ys = [labels[i] for i in ids]
            ss = [by_id[i]["score"] for i in ids]
            lv = [SEVERITY.get(by_id[i]["level"], 0.5) for i in ids]
            # how far a figure can be trusted (a half holding 2 alerts says little): a 95%
            # bootstrap interval of it, and of its lead over the level alone
            return {"lines": len(ids), "anomalous": int(sum(ys)), "roc_auc": roc_auc(ys, ss),
                    "level_only_roc_auc": roc_auc(ys, lv),
                    "interval": roc_auc_interval(ys, ss, lv)}
        half = len(bgl_ids) // 2
        ys_all = [labels[i] for i in bgl_ids]
        ss_all = [by_id[i]["score"] for i in bgl_ids]
        start, _ = worst_contiguous_half(ys_all, ss_all)
        report["bgl"] = {"whole": auc(bgl_ids), "first_half": auc(bgl_ids[:half]),
                         "second_half": auc(bgl_ids[half:])}
        if start >= 0:  # "any contiguous half": the one where the score ranks worst
            report["bgl"]["worst_half"] = {**auc(bgl_ids[start:start + half]),
                                           "first_line": start + 1}
        report["bgl_halves"] = contiguous_halves(
            ys_all, ss_all, [SEVERITY.get(by_id[i]["level"], 0.5) for i in bgl_ids])
    return report


def _print_production(r: dict, echo) -> None:
    parts = r.get("partitions", 1)
    echo(f"== production-like: {r['lines']} lines of {r['sources']} sources interleaved "
         f"(seed {r['seed']}), " + ("one pipeline" if parts <= 1 else
                                    f"{parts} partitions (a model each)"))
    for name, v in r["per_source"].items():
        inc = ("-" if v["incidents"] is None
               else f"{v['incidents']} ({v['incidents_per_hour']:.1f}/h over {v['hours']:.1f} h)")
        echo(f"  {name:<10} lines {v['lines']:>6}  flagged {v['flagged']:>4}  normal flagged "
             f"{v['flagged_normal']:>4} of {v['normal_after_warm_up']:>6} = {v['fpr']:.2%}  "
             f"incidents {inc}  silence incidents {v['silence_incidents']} (false "
             f"{v['false_silence_incidents']}, {v['false_silence_incidents_per_hour']:.3f}/h)")
    for kind, k in sorted(r["kinds"].items()):
        extra = (f" (by a flagged line {k['found_by_line']}, by a silence incident "
                 f"{k['found_by_silence_incident']})" if "found_by_line" in k else "")
        echo(f"  {kind:<16} found {k['found']}/{k['episodes']} = {_fmt(k['recall'])}{extra}")
    if r["bgl"]:
        for part, b in r["bgl"].items():
            where = (f" (lines {b['first_line']}-{b['first_line'] + b['lines'] - 1})"
                     if "first_line" in b else "")
            ci = b.get("interval") or {}
            trust = (f"; 95% interval {_fmt(ci['low'])}-{_fmt(ci['high'])}, lead over the level "
                     f"{ci['diff_low']:+.3f} to {ci['diff_high']:+.3f}" if ci else "")
            echo(f"  BGL {part:<11} ROC-AUC {_fmt(b['roc_auc'])} (level alone "
                 f"{_fmt(b['level_only_roc_auc'])}), {b['anomalous']} of {b['lines']} alerts{where}"
                 f"{trust}")
        h = r.get("bgl_halves")
        if h:
            echo(f"  BGL contiguous halves: {h['both']} of {h['halves']} reach {h['target']} and beat "
                 f"the level alone ({h['reach_target']} reach it, {h['above_baseline']} beat the "
                 f"level); alerts per half {h['fewest_positives']}-{h['most_positives']}")


def eval_loghub(root: Path, *, out_dir: Path | None = None, synthetic_on: Iterable[str] = (
        "Linux", "OpenSSH", "Apache", "HDFS", "Zookeeper"), seed: int = 0,
        config: PipelineConfig | None = None, synthetic: bool = True) -> dict:
    """Parsing/templates on every sample found, a mixed run of them all, detection on BGL,
    synthetic anomalies on five."""
    root = Path(root)
    report: dict = {"parsing": {}, "messages_only": {}, "mixed": None, "detection": None,
                    "synthetic": {}}
    samples = find_samples(root) if root.is_dir() else {}
    for name, (log, structured) in samples.items():
        report["parsing"][name] = eval_parsing(log, structured, config=config)
        if structured is not None:
            report["messages_only"][name] = eval_parsing(None, structured, messages_only=True,
                                                         config=config)
    if samples:
        report["mixed"] = eval_mixed(samples, seed=seed, config=config)
    if not synthetic:
        return report
    bgl = root / "BGL" / LOGHUB_SAMPLES["BGL"]
    if bgl.exists():
        out = out_dir / "bgl_scores.csv" if out_dir else None
        plot = out_dir / "bgl_scores.png" if out_dir else None
        report["detection"] = eval_detection(bgl, out=out, plot=plot)
    for name in synthetic_on:
        log = root / name / LOGHUB_SAMPLES[name]
        if log.exists():
            report["synthetic"][name] = eval_synthetic(log, seed=seed)
    return report


# -- the command line ---------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.3f}"
    return str(v)


def _print_parsing(r: dict, echo) -> None:
    head = f"{r['file']}: {r['lines']} lines ({r['input']})"
    if "parsed_share" in r:
        head += f", parsed {r['parsed']} ({r['parsed_share']:.1%})"
    echo(head)
    for col, fa in (r.get("fields") or {}).items():
        echo(f"  field {col:<12} ← {fa['field'] or '-':<28} agreement {fa['agreement']:.3f}")
    if "grouping_accuracy" in r:
        echo(f"  GA {r['grouping_accuracy']:.3f}   templates {r['predicted_templates']} "
             f"(truth {r['true_templates']})")
    else:
        echo(f"  templates {r['templates']}")


def _print_detection(r: dict, echo) -> None:
    t = r["at_threshold"]
    echo(f"{r['file']}: {r['lines']} lines, {r['anomalous']} labelled anomalous")
    echo(f"  ROC-AUC {_fmt(r['roc_auc'])}  PR-AUC {_fmt(r['pr_auc'])}   "
         f"(level alone: ROC-AUC {_fmt(r['level_only_roc_auc'])}, PR-AUC {_fmt(r['level_only_pr_auc'])})")
    echo(f"  at the adaptive threshold: flagged {t['flagged']}, precision {t['precision']:.3f}, "
         f"recall {t['recall']:.3f}, F1 {t['f1']:.3f}  (first {r['warm_up_lines']} lines warm-up, never flagged)")
    for key in ("per_line", "plot"):
        if key in r:
            echo(f"  {key.replace('_', '-')}: {r[key]}")


def _print_synthetic(r: dict, echo) -> None:
    echo(f"{r['file']} (synthetic, seed {r['seed']}): {r['lines']} lines; "
         f"FPR live {r['fpr_live']:.4f}; operating point score {r['operating_point_score']:.3f} "
         f"(FPR {r['fpr_at_operating_point']:.4f})")
    for kind, k in r["kinds"].items():
        echo(f"  {kind:<16} recall@FPR≤1% {_fmt(k['recall_at_1pct_fpr'])}   live {_fmt(k['recall_live'])}"
             f"   ({k['episodes']} episodes) {('e.g. ' + k['example_reasons'][0]) if k['example_reasons'] else ''}")
        if "recall_silence_incident" in k:
            echo(f"  {'':<16} covered by a silence incident {_fmt(k['recall_silence_incident'])}"
                 f"   live line or incident {_fmt(k['recall_live_or_incident'])}")
    if "silence_incidents" in r:
        echo(f"  silence incidents {r['silence_incidents']}, false "
             f"{r['false_silence_incidents']} ({r['false_silence_incidents_per_hour']:.2f}/h "
             f"over {r['hours']:.1f} h)")


_DEFAULTS = PipelineConfig()
QuantileOpt = Annotated[float, typer.Option(
    help="Adaptive threshold: running quantile of scores (SMARTLOGS_ANOMALY_QUANTILE).")]
MinScoreOpt = Annotated[float, typer.Option(
    "--min-score", help="Scores below this are never flagged (SMARTLOGS_MIN_ANOMALY_SCORE).")]


def _make_app() -> typer.Typer:
    app = typer.Typer(help="Quality of parsing, template mining and detection (runs the real pipeline).",
                      no_args_is_help=True)

    def echo(s: str) -> None:
        typer.echo(s)

    def dump(obj, path: Optional[Path]) -> None:
        if path is not None:
            Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")
            echo(f"report: {path}")

    @app.command("parse")
    def parse_cmd(
        log: Annotated[Optional[Path], typer.Argument(help="Raw log file (or messages, one a line, with --messages-only).")] = None,
        structured: Annotated[Optional[Path], typer.Option("--structured", "-s", help="loghub structured CSV (the ground truth).")] = None,
        messages_only: Annotated[bool, typer.Option("--messages-only", help="Input holds message contents only; without LOG, the CSV's Content column is used.")] = False,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON.")] = None,
    ) -> None:
        """Parsing share, field agreement, grouping accuracy and template counts."""
        if log is None and not (messages_only and structured):
            raise typer.BadParameter("give LOG, or --messages-only with --structured")
        r = eval_parsing(log, structured, messages_only=messages_only)
        _print_parsing(r, echo)
        dump(r, json_out)

    @app.command("detect")
    def detect_cmd(
        log: Annotated[Path, typer.Argument(help="Labelled BGL-format log (first column '-' = normal).")],
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Per-line results: .csv or .jsonl.")] = None,
        plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG plot of scores over time.")] = None,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON.")] = None,
    ) -> None:
        """ROC-AUC, PR-AUC and precision/recall/F1 at the adaptive threshold."""
        r = eval_detection(log, out=out, plot=plot)
        _print_detection(r, echo)
        dump(r, json_out)

    @app.command("synthetic")
    def synthetic_cmd(
        log: Annotated[Path, typer.Argument(help="A normal log file to build the stream from.")],
        seed: Annotated[int, typer.Option(help="Random seed (the stream depends on it only).")] = 0,
        episodes: Annotated[int, typer.Option(help="Episodes per kind.")] = 20,
        quantile: QuantileOpt = _DEFAULTS.anomaly_quantile,
        min_score: MinScoreOpt = _DEFAULTS.min_anomaly_score,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON.")] = None,
    ) -> None:
        """Recall per kind of injected anomaly and the false-positive rate: at the 1% operating
        point, and live (the lines the adaptive threshold flagged as they came)."""
        r = eval_synthetic(log, seed=seed, episodes=episodes,
                           config=PipelineConfig(anomaly_quantile=quantile, min_anomaly_score=min_score))
        _print_synthetic(r, echo)
        dump(r, json_out)

    @app.command("production")
    def production_cmd(
        root: Annotated[Optional[Path], typer.Argument(help="Folder with the loghub samples (default: $SMARTLOGS_LOGHUB_DIR, else data/loghub from `smartlogs data fetch`, else ../shared/data/loghub).", show_default=False)] = None,
        seed: Annotated[int, typer.Option(help="Seed of the interleaving and the synthetic streams.")] = 0,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON.")] = None,
        partitions: Annotated[int, typer.Option(min=1, max=256, help="Run it as the runtimes do with this many partitions (SMARTLOGS_PARTITIONS): one model per partition, sources spread by their key.")] = 1,
    ) -> None:
        """Every sample as one source of one stream, synthetic anomalies injected into five:
        flags on normal lines per source, incidents per hour, recall per kind, BGL ROC-AUC."""
        from smartlogs.cli.datasets import default_loghub_dir

        root = root or default_loghub_dir()
        if not root.is_dir() or not find_samples(root):
            raise SystemExit(f"error: no loghub samples under {root}: pass their folder, set "
                             "SMARTLOGS_LOGHUB_DIR, or run `smartlogs data fetch`")
        r = eval_production(root, seed=seed, partitions=partitions)
        _print_production(r, echo)
        dump(r, json_out)

    @app.command("loghub")
    def loghub_cmd(
        root: Annotated[Optional[Path], typer.Argument(help="Folder with the loghub samples (default: $SMARTLOGS_LOGHUB_DIR, else data/loghub from `smartlogs data fetch`, else ../shared/data/loghub).", show_default=False)] = None,
        out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="Where to write BGL per-line results and plot.")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the synthetic streams.")] = 0,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the whole report as JSON.")] = None,
        builtin_formats: Annotated[bool, typer.Option("--builtin-formats/--inference-only", help="Try the built-in header formats first, or learned layouts alone (SMARTLOGS_BUILTIN_FORMATS).")] = True,
        synthetic: Annotated[bool, typer.Option("--synthetic/--no-synthetic", help="Also run detection on BGL and the synthetic streams.")] = True,
    ) -> None:
        """Everything on every sample found in ROOT, plus a mixed run (bench/QUALITY.md)."""
        from smartlogs.cli.datasets import default_loghub_dir

        root = root or default_loghub_dir()
        config = PipelineConfig(builtin_formats=builtin_formats)
        r = eval_loghub(root, out_dir=out_dir, seed=seed, config=config, synthetic=synthetic)
        if not r["parsing"]:
            raise SystemExit(f"error: no loghub samples under {root} (expected e.g. "
                             f"{root / 'Linux' / 'Linux_2k.log'}): pass their folder, set "
                             "SMARTLOGS_LOGHUB_DIR, or run `smartlogs data fetch`")
        echo("== parsing and templates (raw lines)")
        for v in r["parsing"].values():
            _print_parsing(v, echo)
        echo("== templates from messages only (CSV Content)")
        for v in r["messages_only"].values():
            _print_parsing(v, echo)
        if r["mixed"]:
            mx = r["mixed"]
            echo(f"== mixed: {mx['lines']} lines of {mx['sources']} sources interleaved "
                 f"(seed {mx['seed']}), one pipeline")
            for name, v in mx["per_source"].items():
                echo(f"  {name:<12} GA {v['grouping_accuracy']:.3f}  parsed {v['parsed_share']:.1%}"
                     f"  layout {mx['layouts'].get(name) or '(built-in formats)'}")
        if r["detection"]:
            echo("== detection on labelled data")
            _print_detection(r["detection"], echo)
        echo("== synthetic anomalies")
        for v in r["synthetic"].values():
            _print_synthetic(v, echo)
        dump(r, json_out)

    return app


eval_app = _make_app()


if __name__ == "__main__":  # python -m smartlogs.cli.evaluation ...
    eval_app()
