import csv
import json
import random

import numpy as np
import pytest

from smartlogs.cli.evaluation import (eval_detection, eval_parsing, eval_synthetic, grouping_accuracy,
                                  pr_auc, roc_auc, worst_contiguous_half, write_events,
                                  roc_auc_interval, contiguous_halves)
from smartlogs.cli.synthetic import KINDS, generate


def test_grouping_accuracy_follows_loghub():
    truth = ["A", "A", "B", "B", "C"]
    assert grouping_accuracy(truth, ["x", "x", "y", "y", "z"]) == 1.0
    # B split in two: both B lines wrong; A and C right
    assert grouping_accuracy(truth, ["x", "x", "y", "w", "z"]) == pytest.approx(3 / 5)
    # A and B merged: all four wrong
    assert grouping_accuracy(truth, ["x", "x", "x", "x", "z"]) == pytest.approx(1 / 5)
    with pytest.raises(ValueError):
        grouping_accuracy(["A"], [])


def _auc_brute(y, s):
    pos = [v for v, l in zip(s, y) if l]
    neg = [v for v, l in zip(s, y) if not l]
    tot = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return tot / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_definition_with_ties():
    rng = random.Random(3)
    y = [rng.random() < 0.3 for _ in range(200)]
    s = [round(rng.random() + (0.3 if l else 0), 1) for l in y]  # many ties
    assert roc_auc(y, s) == pytest.approx(_auc_brute(y, s))
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert np.isnan(roc_auc([0, 0], [0.1, 0.2]))


def test_pr_auc_is_average_precision():
    assert pr_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert pr_auc([1, 1, 0], [0.5, 0.5, 0.5]) == pytest.approx(2 / 3)
    assert pr_auc([1, 0], [1.0, 0.0]) == 1.0


SYSLOG = [
    "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown",
    "Jun 14 15:16:02 combo sshd(pam_unix)[19937]: session opened for user cyrus by (uid=0)",
    "Jun 14 15:16:03 combo sshd(pam_unix)[19938]: session opened for user cyrus by (uid=42)",
    "Jun 14 15:16:04 combo su(pam_unix)[10]: session opened for user root by LOGIN(uid=0)",
]


def _structured(tmp_path, events):
    path = tmp_path / "x.log_structured.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["LineId", "Month", "Date", "Time", "Level", "Component", "PID", "Content",
                    "EventId", "EventTemplate"])
        for i, (line, eid) in enumerate(zip(SYSLOG, events)):
            head, content = line.split(": ", 1)
            mon, day, time, host, comp = head.split()[:5]
            comp, pid = comp.rstrip("]").split("[")
            w.writerow([i + 1, mon, day, time, host, comp, pid, content, eid, "-"])
    return path


def test_eval_parsing_raw_and_messages_only(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("\n".join(SYSLOG))  # no trailing newline, like Linux_2k.log
    structured = _structured(tmp_path, ["E1", "E2", "E2", "E3"])
    r = eval_parsing(log, structured)
    assert r["lines"] == 4 and r["parsed_share"] == 1.0
    assert r["fields"]["Level"] == {"field": "host", "agreement": 1.0}  # loghub's naming quirk
    assert r["fields"]["Content"]["field"] == "message"
    assert r["fields"]["Time"]["agreement"] == 1.0
    assert r["fields"]["PID"] == {"field": "pid", "agreement": 1.0}
    assert r["grouping_accuracy"] == 1.0 and r["predicted_templates"] == 3
    m = eval_parsing(None, structured, messages_only=True)
    assert m["input"] == "messages" and m["grouping_accuracy"] == 1.0
    msgs = tmp_path / "messages.txt"
    msgs.write_text("\n".join(line.split(": ", 1)[1] for line in SYSLOG) + "\n")
    assert eval_parsing(msgs, structured, messages_only=True)["grouping_accuracy"] == 1.0


def _bgl_lines(n=600, seed=1):
    rng = random.Random(seed)
    out = []
    t = 1117838570
    for i in range(n):
        t += rng.randint(1, 30)
        node = f"R0{rng.randint(0, 9)}-M1-N0-C:J12-U11"
        if 400 <= i < 420 and i % 2 == 0:
            label, level, msg = "KERNDTLB", "FATAL", "data TLB error interrupt"
            node = "R30-M0-N9-C:J16-U01"
        elif i % 97 == 0:
            label, level, msg = "-", "FATAL", f"instruction address: 0x{rng.randint(0, 2**16):08x}"
        else:
            label, level, msg = "-", "INFO", f"generating core.{rng.randint(1, 9999)}"
        stamp = "2005-06-03-15.42.50.675872"
        out.append(f"{label} {t} 2005.06.03 {node} {stamp} {node} RAS KERNEL {level} {msg}")
    return out


def test_eval_detection_writes_per_line_results_and_a_plot(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):  # exercise the dependency-free renderer
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    log = tmp_path / "bgl.log"
    log.write_text("\n".join(_bgl_lines()) + "\n")
    out, png = tmp_path / "scores.jsonl", tmp_path / "scores.png"
    r = eval_detection(log, out=out, plot=png)
    assert r["lines"] == 600 and r["anomalous"] == 10
    assert r["roc_auc"] > r["level_only_roc_auc"] > 0.5
    assert 0.0 <= r["pr_auc"] <= 1.0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 600 and {"score", "anomaly", "reason", "label"} <= set(rows[0])
    assert all(row["reason"] for row in rows if row["anomaly"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["flagged_with_reason"] == r["at_threshold"]["flagged"]


def test_write_events_csv(tmp_path):
    ev = {"score": 0.5, "anomaly": True, "warming_up": False, "reason": "why", "timestamp": "t",
          "host": "h", "level": "INFO", "template_id": "T1", "template": "a <*>", "message": "a b"}
    path = tmp_path / "o.csv"
    write_events(path, [ev], [True])
    rows = list(csv.DictReader(open(path)))
    assert rows[0]["reason"] == "why" and rows[0]["label"] == "1"


BASE = [f"worker {i % 5} finished job {1000 + i} in {20 + i % 13} ms" for i in range(150)] + \
       [f"cache hit ratio {50 + i % 40} percent on shard {i % 3}" for i in range(150)]


def test_generator_is_deterministic_and_labels_every_injection():
    a = generate(BASE, seed=7, passes=4, episodes=3, silence=60.0)
    b = generate(BASE, seed=7, passes=4, episodes=3, silence=60.0)
    assert [it["message"] for it in a.items] == [it["message"] for it in b.items]
    assert a.warmup == len(BASE)
    kinds = {e.kind for e in a.episodes}
    assert kinds == set(KINDS)
    assert all(i >= a.warmup for e in a.episodes for i in e.ids)
    ts = [it["ts"] for it in a.items]
    assert ts == sorted(ts)
    burst = next(e for e in a.episodes if e.kind == "template_burst")
    assert len({a.items[i]["message"] for i in burst.ids}) == 1 and len(burst.ids) >= 60
    with pytest.raises(ValueError):
        generate(BASE, kinds=("nonsense",))


def test_eval_synthetic_reports_recall_per_kind(tmp_path):
    log = tmp_path / "base.log"
    log.write_text("\n".join(BASE) + "\n")
    r = eval_synthetic(log, seed=1, episodes=4, passes=20)
    assert set(r["kinds"]) == set(KINDS)
    assert r["fpr_at_operating_point"] <= 0.011
    assert r["kinds"]["unseen_template"]["recall_at_1pct_fpr"] >= 0.75
    assert r["kinds"]["host_silence"]["recall_at_1pct_fpr"] >= 0.75


def test_eval_loghub_without_samples_fails_with_advice(tmp_path):
    from typer.testing import CliRunner

    from smartlogs.cli import app

    r = CliRunner().invoke(app, ["eval", "loghub", str(tmp_path / "none")])
    assert r.exit_code == 1 and "no loghub samples under" in r.output and "data fetch" in r.output


def test_eval_production_reports_every_source_and_kind(tmp_path, loghub):
    """`smartlogs eval production`: samples as sources of one stream, synthetic anomalies
    injected into some; every source gets its FPR, every kind its recall, BGL its ROC-AUC."""
    from smartlogs.cli.evaluation import eval_production

    for name in ("Linux", "Apache", "BGL"):
        (tmp_path / name).symlink_to(loghub / name)
    r = eval_production(tmp_path, synthetic_on=("Linux",), target_lines=6000, episodes=4)
    assert set(r["per_source"]) == {"Linux", "Apache", "BGL"}
    assert set(r["kinds"]) == set(KINDS) and all(k["episodes"] > 0 for k in r["kinds"].values())
    linux = r["per_source"]["Linux"]
    assert linux["normal_after_warm_up"] > 3000 and linux["fpr"] <= 0.01
    assert r["kinds"]["error_flood"]["recall"] >= 0.75
    assert r["bgl"]["whole"]["anomalous"] > 0 and r["bgl"]["whole"]["roc_auc"] > 0.8
    # each BGL figure with a 95% bootstrap interval, and every contiguous half counted
    whole = r["bgl"]["whole"]
    assert whole["interval"]["low"] <= whole["roc_auc"] <= whole["interval"]["high"]
    halves = r["bgl_halves"]
    assert halves["halves"] > 0 and 0 <= halves["both"] <= halves["reach_target"] <= halves["halves"]
    assert r["lines"] == sum(v["lines"] for v in r["per_source"].values())
    # a host's silence is found while it lasts, by a silence incident (streams.silence);
    # the ones covering no injected silence are counted per source
    sil = r["kinds"]["host_silence"]
    assert sil["found_by_silence_incident"] >= sil["episodes"] - 1 and sil["recall"] >= 0.75
    assert linux["silence_incidents"] >= sil["found_by_silence_incident"]
    assert all(v["false_silence_incidents_per_hour"] >= 0 for v in r["per_source"].values())


def test_hadoops_failure_starts_at_its_first_network_symptom():
    """The Hadoop sample is one job loghub labels "Network disconnection": the evaluation counts
    its lines as normal only before the first symptom (bench/QUALITY.md)."""
    from smartlogs.cli.evaluation import _hadoop_failure_start

    lines = ["INFO progress 1", "INFO progress 2",
             "WARN ipc.Client: Address change detected. Old: a/1.2.3.4:9000 New: a:9000",
             "INFO progress 3"]
    assert _hadoop_failure_start(lines) == 2
    assert _hadoop_failure_start(lines[:2]) == 2  # no failure: every line counts


def test_the_worst_contiguous_half_is_found_wherever_it_starts():
    """Issue 19 asks for BGL's ROC-AUC "on any contiguous half": the half-length window, at any
    start, where the score ranks worst (windows with one class only are skipped)."""
    labels = [False] * 20
    scores = [0.1] * 20
    for i in (2, 15):  # two alerts: the first ranked well, the second below normal lines
        labels[i] = True
    scores[2], scores[15] = 0.9, 0.05
    scores[13] = 0.5  # a normal line above the second alert's score
    start, auc = worst_contiguous_half(labels, scores)
    assert 6 <= start <= 10 and auc == pytest.approx(0.0)  # windows holding line 15 but not 2
    assert worst_contiguous_half([False] * 10, [0.0] * 10) == (-1, pytest.approx(float("nan"), nan_ok=True))


def test_a_roc_auc_of_few_positives_comes_with_a_wide_interval():
    """Issue 19: a contiguous half of BGL may hold 2 alerts; its ROC-AUC is then the mean of
    two ranks, and the evaluation says how little that is (a stratified bootstrap interval, and
    that of the lead over a baseline on the same resamples)."""
    labels = [False] * 200
    scores = [i / 200 for i in range(200)]  # normal lines spread over [0, 1)
    labels[180], labels[90] = True, True  # two alerts, ranked high and in the middle
    scores[90] = 0.55
    ci = roc_auc_interval(labels, scores)
    assert ci["low"] < 0.6 and ci["high"] > 0.85  # spans both alerts' ranks
    many = [False] * 200
    for i in range(150, 200):
        many[i] = True  # 50 alerts, all ranked above every normal line
    tight = roc_auc_interval(many, scores)
    assert tight["low"] == tight["high"] == 1.0
    # against a baseline: the same lines, the lead's interval and how often the score is ahead
    level = [1.0 if i >= 100 else 0.0 for i in range(200)]  # ties every alert with 50 normals
    vs = roc_auc_interval(many, scores, level)
    assert vs["diff_low"] > 0 and vs["better"] == 1.0
    other = list(scores)
    other[90], other[180] = 1.0, 0.0  # a baseline ranking the other alert first
    noisy = roc_auc_interval(labels, scores, other)
    assert noisy["diff_low"] < 0 < noisy["diff_high"]  # 2 alerts: no telling which ranks better
    assert 0.1 < noisy["better"] < 0.9
    nan = roc_auc_interval([False] * 5, [0.1] * 5)
    assert nan["low"] != nan["low"]


def test_every_contiguous_half_is_counted_against_target_and_baseline():
    labels = [False] * 20
    scores = [0.1] * 20
    base = [0.1] * 20
    labels[2], labels[15] = True, True
    scores[2], scores[15] = 0.9, 0.05
    base[2] = base[15] = 0.5  # the baseline ranks both alerts first
    h = contiguous_halves(labels, scores, base)
    assert h["halves"] == 8 and h["fewest_positives"] == 1 and h["most_positives"] == 1
    # halves holding line 15 rank worse than the baseline (line 15 below the normal lines)
    assert h["above_baseline"] == 0 and h["reach_target"] == sum(
        1 for s in range(11) if 2 in range(s, s + 10)) and h["both"] == 0
