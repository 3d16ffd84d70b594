import pickle
import random

from streams.scoring import (
    EVIDENCE,
    FEATURES,
    AdaptiveThreshold,
    AnomalyScorer,
    DecayedRate,
    RateTracker,
    explain,
)


def _x(s: AnomalyScorer, tid="T1", seen=10, new=False, level="INFO", host="h", ts=0.0,
       params=None):
    return s.features(template_id=tid, seen_before=seen, is_new=new, level=level, tokens=8,
                      parsed=True, host=host, window_start=ts - ts % 60, ts=ts, params=params)


def test_features_are_in_unit_interval_and_fixed_keys():
    s = AnomalyScorer()
    x, _ = _x(s)
    assert tuple(x) == FEATURES
    assert set(EVIDENCE) <= set(x)
    assert all(0.0 <= v <= 1.0 for v in x.values())


def test_features_work_without_time_and_params():  # the call the benchmark makes
    s = AnomalyScorer()
    x, ctx = s.features(template_id="T1", seen_before=0, is_new=True, level=None, tokens=3,
                        parsed=False, host=None, window_start=0.0)
    assert x["silence"] == 0.0 and x["param"] == 0.0 and x["unparsed"] == 1.0
    assert s.score(x, ctx).warming_up


def test_warm_up_then_new_error_scores_above_common_info():
    s = AnomalyScorer(window_size=50, min_score=0.0, quantile=0.9)
    for i in range(400):
        r = s.score(*_x(s, seen=i, ts=float(i)))
        if i < 50:
            assert r.warming_up and not r.is_anomaly
    common = s.score(*_x(s, seen=400, ts=400.0))
    rare = s.score(*_x(s, tid="T99", seen=0, new=True, level="ERROR", ts=401.0))
    assert rare.score > common.score
    assert rare.is_anomaly and not common.is_anomaly
    assert "first time this message pattern (T99)" in rare.reason and "severity ERROR" in rare.reason


def test_novelty_is_judged_against_the_current_rate_of_new_patterns():
    calm = AnomalyScorer()
    for i in range(300):
        calm.score(*_x(calm, seen=i, ts=float(i)))
    x_calm, _ = _x(calm, tid="Tnew", seen=0, new=True, ts=300.0)
    busy = AnomalyScorer()
    for i in range(300):  # every line a new pattern, like a boot sequence
        busy.score(*_x(busy, tid=f"T{i}", seen=0, new=True, ts=float(i)))
    x_busy, _ = _x(busy, tid="Tnew", seen=0, new=True, ts=300.0)
    assert x_calm["novelty"] > 0.5
    assert x_busy["novelty"] < 0.2


def test_novelty_is_judged_against_the_rate_of_new_patterns_of_the_lines_kind_of_source():
    """A chatty source that keeps finding new patterns (an app with a large vocabulary, one
    just added) neither drowns a calm source's first new pattern nor gets its own new
    patterns flagged for being new: each kind of source is judged by its own pace. On a
    mixed stream, judging every source by one shared rate flagged 1.9% of a chatty source's
    normal lines and found half the unseen patterns injected into calm ones."""
    s = AnomalyScorer()

    def line(kind, i, tid, seen, new):
        return s.features(template_id=tid, seen_before=seen, is_new=new, level="INFO",
                          tokens=8, parsed=True, host=None, window_start=0.0, ts=float(i),
                          source=kind, kind=kind)

    for i in range(600):  # interleaved: calm repeats one pattern, chatty is new 1 line in 3
        s.score(*line("calm", i, "Tc", i // 2, False))
        s.score(*line("chatty", i, f"Tn{i}" if i % 3 == 0 else "Tk", 0 if i % 3 == 0 else i,
                      i % 3 == 0))
    x_calm, _ = line("calm", 601, "Tcalm-new", 0, True)
    x_chatty, _ = line("chatty", 601, "Tchatty-new", 0, True)
    assert x_calm["novelty"] > 0.5
    assert x_chatty["novelty"] < 0.2


def test_a_pattern_routine_in_one_kind_of_source_is_news_the_first_time_another_logs_it():
    s = AnomalyScorer(window_size=50)

    def line(kind, i, tid, seen):
        return s.features(template_id=tid, seen_before=seen, is_new=seen == 0, level="INFO",
                          tokens=8, parsed=True, host=None, window_start=0.0, ts=float(i),
                          source=kind, kind=kind)

    for i in range(600):
        s.score(*line("a", i, "Tshared", i))  # routine in a
        s.score(*line("b", i, f"Tb{i % 3}", i // 3))  # b logs its own three patterns
    x, ctx = line("b", 601, "Tshared", 600)  # seen 600 times, never from b
    assert x["novelty"] > 0.5
    assert "first time message pattern Tshared was seen from this kind of source" in explain(x, ctx)
    x2, _ = line("a", 602, "Tshared", 601)
    assert x2["novelty"] < 0.01


def test_a_checkpoint_from_before_novelty_per_kind_keeps_its_rate():
    s = AnomalyScorer()
    for i in range(300):
        s.score(*_x(s, seen=i, ts=float(i)))
    state = s.__getstate__()
    legacy = {k: v for k, v in state.items() if k != "_novel"}
    legacy["new_rate"] = 0.01
    old = AnomalyScorer.__new__(AnomalyScorer)
    old.__setstate__(legacy)
    x, _ = _x(old, tid="Tnew", seen=0, new=True, ts=300.0)  # kind None: the old shared rate
    assert x["novelty"] > 0.5
    # a pattern the old model knew is not "new for its kind" just because kinds were not counted
    known, _ = _x(old, tid="T1", seen=300, ts=301.0)
    assert known["novelty"] < 0.01


def test_decayed_rate_flags_a_burst_above_the_past_peak_only():
    r = DecayedRate(tau=60.0, min_history=5)
    t = 0.0
    for _ in range(300):  # one line every 10 s
        t += 10.0
        _level, _ref, z = r.add("k", t)
        assert z < 4
    zs = []
    for _ in range(40):  # 40 lines in 20 s
        t += 0.5
        zs.append(r.add("k", t)[2])
    assert max(zs) > 6


def test_decayed_rate_error_default_for_known_quiet_key():
    r = DecayedRate(min_history=20)
    z = [r.add("h", float(i), default=0.0)[2] for i in range(10)]
    assert z[-1] > 4  # ten errors within ten seconds from a host that never had one


def test_silence_is_reported_on_the_first_line_back():
    s = AnomalyScorer(window_size=10, min_score=0.0)
    t = 0.0
    for _ in range(200):
        t += 2.0
        s.score(*_x(s, ts=t))
    x, ctx = _x(s, ts=t + 3600.0)
    assert x["silence"] > 0.9
    assert "host h was silent for 60 min before this line" in explain(x, ctx)


def test_unusual_number_in_a_parameter_slot():
    s = AnomalyScorer()
    for i in range(100):
        s.score(*_x(s, ts=float(i), params=[str(20 + i % 7), "alice"]))
    x, ctx = _x(s, ts=100.0, params=["250000", "alice"])
    assert x["param"] > 0.9
    assert "unusual value 250000 in parameter 1" in explain(x, ctx)
    x2, _ = _x(s, ts=101.0, params=["23", "alice"])
    assert x2["param"] == 0.0


def test_new_value_in_a_low_cardinality_slot():
    s = AnomalyScorer()
    for i in range(200):
        s.score(*_x(s, ts=float(i), params=["OK" if i % 2 else "RETRY"]))
    x, ctx = _x(s, ts=200.0, params=["FAILED"])
    assert x["param"] > 0.5
    assert "new value 'FAILED'" in explain(x, ctx)


def test_a_slot_that_takes_a_new_value_every_so_often_is_not_surprised_by_the_next():
    """A new client's address in a request log: each new value is then repeated, so few values
    are seen once, but new ones keep coming; their recent rate, not only the share of values
    seen once, sets the surprise (as for novelty). On the production-like evaluation, 14 of the
    19 lines flagged on OpenStack's normal lines were such addresses."""
    s = AnomalyScorer()
    for i in range(1500):  # a new address every 60 lines, each then seen many times
        client = f"10.0.0.{i // 60}"
        s.score(*_x(s, tid="Treq", params=[client], ts=float(i)))
    x, _ = _x(s, tid="Treq", params=["10.0.0.99"], ts=1500.0)
    assert x["param"] < 0.6  # a new value about as often as 1 in 60: some surprise (0.85 before)
    fixed = AnomalyScorer()  # a slot that held the same few values all along
    for i in range(1500):
        fixed.score(*_x(fixed, tid="Treq", params=[f"10.0.0.{i % 4}"], ts=float(i)))
    x, _ = _x(fixed, tid="Treq", params=["10.0.0.99"], ts=1500.0)
    assert x["param"] > 0.6


def test_recurrence_needs_one_host_above_the_rest_of_the_fleet():
    s = AnomalyScorer()
    for h in range(10):  # a fleet
        s.score(*_x(s, host=f"n{h}", ts=float(h)))
    xs = [_x(s, tid="Terr", seen=i, level="FATAL", host="n1", ts=100.0 + 60 * i)[0]
          for i in range(12)]
    assert xs[-1]["recurrence"] > 0.8
    spread = AnomalyScorer()
    for h in range(10):
        spread.score(*_x(spread, host=f"n{h}", ts=float(h)))
    ys = [_x(spread, tid="Terr", seen=i, level="FATAL", host=f"n{i % 10}", ts=100.0 + 60 * i)[0]
          for i in range(12)]
    assert max(y["recurrence"] for y in ys) == 0.0


def test_rate_tracker_learns_the_usual_rate_per_window():
    t = RateTracker(alpha=1.0)
    for _ in range(5):
        t.add("h", 0.0)
    assert t.add("h", 60.0) == (1, 5)


def test_threshold_tracks_quantile_and_resolves_the_top():
    th = AdaptiveThreshold(quantile=0.9, refresh=10)
    for i in range(1000):
        th.update((i % 100) / 100)
    assert 0.86 <= th.value <= 0.93
    top = AdaptiveThreshold(quantile=0.99, refresh=100)
    for i in range(10_000):
        top.update(0.999 if i % 200 == 0 else 0.99)
    assert 0.99 <= top.value < 0.995


def test_explain_names_the_extreme_features():
    x = {"rarity": 0.1, "new_template": 0.0, "severity": 0.1, "length": 0.1, "unparsed": 0.0,
         "novelty": 0.0, "template_burst": 0.0, "host_burst": 0.95, "error_burst": 0.0,
         "recurrence": 0.0, "silence": 0.0, "param": 0.0}
    ctx = {"host": "web1", "host_count": 900.0, "host_usual": 40.0, "template_id": "T3",
           "seen_before": 12}
    assert explain(x, ctx) == "host web1 sent ~900 lines in the last minute, at most ~40 before"


def test_every_flag_has_a_reason():
    s = AnomalyScorer(window_size=50)
    results = []
    for i in range(700):
        results.append(s.score(*_x(s, tid=f"T{i % 7}", seen=i // 7, ts=float(i))))
    for k in range(5):
        results.append(s.score(*_x(s, tid=f"Tnew{k}", seen=0, new=True, level="ERROR",
                                   ts=700.0 + k)))
    flagged = [r for r in results if r.is_anomaly]
    assert len(flagged) >= 3 and all(r.reason for r in flagged)
    assert "first time this message pattern" in flagged[-1].reason


def test_scorer_pickles_and_is_deterministic():
    a, b = AnomalyScorer(), AnomalyScorer()
    for i in range(50):
        ra = a.score(*_x(a, tid=f"T{i % 3}", seen=i // 3, ts=float(i), params=[str(i)]))
        rb = b.score(*_x(b, tid=f"T{i % 3}", seen=i // 3, ts=float(i), params=[str(i)]))
        assert ra.score == rb.score
    a2 = pickle.loads(pickle.dumps(a))
    assert a2.seen == 50
    r1 = a.score(*_x(a, ts=60.0))
    r2 = a2.score(*_x(a2, ts=60.0))
    assert r1.score == r2.score


def test_checkpoint_of_the_previous_scorer_loads():
    s = AnomalyScorer()
    old_state = {"hst": s.hst, "window_size": 250, "threshold": AdaptiveThreshold(0.99),
                 "min_score": 0.7, "seen": 1234, "hosts": RateTracker(),
                 "templates": RateTracker(), "_template_cache": {}}
    restored = AnomalyScorer.__new__(AnomalyScorer)
    restored.__setstate__(old_state)
    assert restored.seen == 1234 and restored.threshold.quantile == 0.99
    r = restored.score(*_x(restored, ts=5.0, params=["1"]))
    assert 0.0 <= r.score <= 1.0


def test_a_burst_of_one_pattern_from_one_host_is_judged_against_that_host():
    s = AnomalyScorer()
    t = 0.0
    for k in range(2000):  # 8 hosts; the fleet also sends the pattern in bursts of 40 in 10 s
        t += 1.0
        s.score(*_x(s, host=f"h{k % 8}", ts=t))
        if k % 600 == 0:
            for j in range(40):
                s.score(*_x(s, host=f"h{j % 8}", ts=t + j * 0.25))
            t += 10.0
    fleet_peak = s.templates._state["T1"][2]
    for j in range(60):  # one host alone: fewer lines than the fleet's busiest minute
        x, ctx = _x(s, host="h1", ts=t + 1.0 + j * 0.5)
        s.score(x, ctx)
    assert ctx["template_count"] < fleet_peak
    assert x["template_burst"] > 0.6
    assert explain(x, ctx).startswith("burst: host h1 logged pattern T1 ~")


def test_a_line_after_a_burst_has_ended_is_not_part_of_it():
    r = DecayedRate(tau=60.0, min_history=5)
    t = 0.0
    for _ in range(300):  # one line every 10 s
        t += 10.0
        r.add("k", t)
    zs = []
    for j in range(100):  # a burst: 100 lines in 20 s
        zs.append(r.add("k", t + j * 0.2)[2])
    assert max(zs) > 10
    level, _ref, z = r.add("k", t + 20.0 + 30.0)  # 30 s after it ended
    assert level > 30  # the minute's count still remembers the burst ...
    assert z < 4  # ... the current pace does not


def test_a_burst_raises_the_peak_by_part_of_its_excess_only():
    r = DecayedRate(tau=60.0, min_history=5)
    t = 0.0
    for _ in range(300):
        t += 10.0
        r.add("k", t)
    zs = []
    for _burst in range(2):  # the same burst twice, an hour apart
        zs.append(max(r.add("k", t + j * 0.2)[2] for j in range(100)))
        for _ in range(360):
            t += 10.0
            r.add("k", t)
        if not _burst:
            assert r._state["k"][2] < 50  # a burst of ~100 lines: learned in part
    assert min(zs) > 6  # the second is still a burst


def test_a_routine_line_while_another_pattern_floods_the_host_gets_no_host_burst():
    s = AnomalyScorer()
    for k in range(3000):  # 4 hosts, two patterns, steady
        s.score(*_x(s, tid=f"T{k % 2}", host=f"h{k % 4}", ts=float(k)))
    t = 3000.0
    for j in range(150):  # host h1 floods pattern T0
        x, ctx = _x(s, tid="T0", host="h1", ts=t + j * 0.2)
        s.score(x, ctx)
    assert x["host_burst"] > 0.5 and x["template_burst"] > 0.5
    routine, _ = _x(s, tid="T1", host="h1", ts=t + 30.5)
    assert routine["host_burst"] == 0.0 and routine["template_burst"] == 0.0


def test_an_error_flood_is_judged_against_the_hosts_share_of_the_fleet():
    def fleet(s, t0, n):
        for k in range(n):  # 8 hosts, one error line in 4 on each
            s.score(*_x(s, tid=f"T{k % 4}", host=f"h{k % 8}", ts=t0 + k,
                        level="ERROR" if k % 4 == 0 else "INFO"))
        return t0 + n

    def flood(s, t0, tid="Tflood", host="h3"):
        xs = []
        for j in range(40):  # 40 errors of a rare pattern in 60 s on one host
            x, ctx = _x(s, tid=tid, host=host, level="ERROR", ts=t0 + j * 1.5)
            s.score(x, ctx)
            xs.append((x["error_burst"], x, ctx))
        return max(xs, key=lambda e: e[0])

    s = AnomalyScorer()
    t = fleet(s, 0.0, 4000)
    for _ in range(4):  # earlier floods on the same host raise its own peak ...
        flood(s, t)
        t = fleet(s, t + 60.0, 900)
    e, x, ctx = flood(s, t)
    assert e > 0.6  # ... but not its share of the fleet's errors
    assert "expected from its usual share of the fleet's" in explain(x, ctx)

    storm = AnomalyScorer()  # every host at once: no one host's flood
    t = fleet(storm, 0.0, 4000)
    for j in range(320):
        x, _ = _x(storm, tid="T0", host=f"h{j % 8}", level="ERROR", ts=t + j * 0.2)
        storm.score(x, _)
    assert x["error_burst"] < 0.3


def test_a_hosts_error_flood_is_not_hidden_by_another_kind_logging_the_same_text():
    """"More than all other hosts together" is asked within the host's kind of source: another
    system that floods with the same text at the same time (a shared library's message) is not
    this host's fleet. On the production-like evaluation, 12 of 100 injected floods were missed
    because other sources flooded the same message at the same time."""
    def x(s, kind, host, ts, level="ERROR", tid="Tflood"):
        return s.features(template_id=tid, seen_before=100, is_new=False, level=level,
                          tokens=8, parsed=True, host=host, window_start=ts - ts % 60, ts=ts,
                          kind=kind)

    def run(other_kind_floods: bool) -> float:
        s = AnomalyScorer()
        for k in range(4000):  # two kinds of 8 hosts, one error in 4 on each, other patterns
            kind = "a" if k % 2 else "b"
            s.score(*x(s, kind, f"{kind}{k % 8}", float(k), tid=f"T{k % 4}",
                       level="ERROR" if k % 4 < 2 else "INFO"))
        for _ in range(4):  # earlier floods on the same host raise its own peak
            for j in range(40):
                s.score(*x(s, "a", "a3", 4000.0 + _ * 1000 + j * 1.5))
            for k in range(600):
                s.score(*x(s, "a" if k % 2 else "b", f"{'a' if k % 2 else 'b'}{k % 8}",
                           4100.0 + _ * 1000 + k, tid=f"T{k % 4}", level="INFO"))
        best = 0.0
        for j in range(40):
            t = 9000.0 + j * 1.5
            if other_kind_floods:  # kind b's hosts flood the same text at the same time
                for h in range(3):
                    s.score(*x(s, "b", f"b{h}", t))
            xs, ctx = x(s, "a", "a3", t)
            s.score(xs, ctx)
            best = max(best, xs["error_burst"])
        return best

    assert run(other_kind_floods=True) > 0.6
    assert abs(run(other_kind_floods=True) - run(other_kind_floods=False)) < 0.2


def test_a_number_inside_the_range_a_slot_held_is_not_unusual():
    s = AnomalyScorer()
    for i in range(600):  # the seconds of a time of day: 00-59, so 0 is ordinary
        s.score(*_x(s, ts=float(i), params=[f"{(i * 7) % 60:02d}"]))
    x, _ = _x(s, ts=600.0, params=["00"])
    assert x["param"] == 0.0
    hits = []
    for k in range(5):  # an outlier repeated: each is still unusual
        x, ctx = _x(s, ts=601.0 + k, params=["5900003"])
        s.score(x, ctx)
        hits.append(x["param"])
        if not k:
            assert "unusual value 5900003 in parameter 1 of pattern T1 (it held 0 to 59 " \
                   "before)" in explain(x, ctx)
    assert min(hits) > 0.8


def test_checkpoint_of_the_scorer_before_pair_rates_loads():
    s = AnomalyScorer()
    for i in range(30):
        s.score(*_x(s, ts=float(i), params=[str(i)]))
    state = dict(s.__dict__)
    for key in ("pairs", "_err_fleets", "_err_share"):  # as pickled before these existed
        del state[key]
    for st in s.templates._state.values():
        del st[7:]  # rate states without a pace
    slot = s._slots["T1"][0]
    del slot.lo, slot.hi  # a parameter slot without a range
    old = pickle.loads(pickle.dumps(state))
    restored = AnomalyScorer.__new__(AnomalyScorer)
    restored.__setstate__(old)
    restored.templates = pickle.loads(pickle.dumps(restored.templates))
    assert restored._slots["T1"][0].lo == restored._slots["T1"][0].hi
    assert len(restored.templates._state["T1"]) == 8
    r = restored.score(*_x(restored, ts=31.0, params=["31"]))
    assert 0.0 <= r.score <= 1.0


def test_pair_rates_are_bounded():
    r = DecayedRate(max_keys=100)
    for k in range(1000):
        r.add(("h", f"T{k}"), float(k))
    assert len(r._state) <= 100
    assert ("h", "T999") in r._state and ("h", "T0") not in r._state


def test_a_long_flood_is_one_incident_for_the_threshold():
    s = AnomalyScorer(window_size=50)
    t = 0.0
    for i in range(3000):  # a calm fleet: 7 patterns over 4 hosts, a line a second
        t += 1.0
        s.score(*_x(s, tid=f"T{i % 7}", seen=i // 7, host=f"h{i % 4}", ts=t))
    before = s.threshold.value
    flood = []
    for k in range(1500):  # one host floods one error pattern, 10 lines a second
        t += 0.1
        flood.append(s.score(*_x(s, tid="T50", seen=k, level="ERROR", host="h1", ts=t)))
    assert flood[0].is_anomaly or any(r.is_anomaly for r in flood[:20])
    # every flood line above the threshold after the first of its incident is not counted,
    # so the threshold stays where the calm stream put it ...
    assert s.threshold.value <= max(before, 0.75)
    # ... and the next, different anomaly is still flagged
    t += 1.0
    other = s.score(*_x(s, tid="T99", seen=0, new=True, level="ERROR", host="h3", ts=t))
    assert other.is_anomaly and "first time this message pattern (T99)" in other.reason


def test_incidents_are_keyed_by_the_strongest_evidence_and_expire():
    s = AnomalyScorer()
    x = dict.fromkeys(FEATURES, 0.0)
    burst = {**x, "error_burst": 0.9, "template_burst": 0.5}
    ctx = {"host": "h1", "template_id": "T5", "ts": 100.0}
    assert not s._same_incident(burst, ctx)  # the first line of an incident counts
    assert s._same_incident(burst, {**ctx, "template_id": "T6", "ts": 130.0})  # same host's flood
    assert not s._same_incident(burst, {**ctx, "host": "h2", "ts": 131.0})  # another host
    assert not s._same_incident(burst, {**ctx, "ts": 300.0})  # more than a minute later
    assert not s._same_incident({**x, "severity": 1.0}, ctx)  # no evidence stands out
    assert pickle.loads(pickle.dumps(s))._incidents == s._incidents


def test_warm_up_scores_are_the_other_evidence_and_never_flag():
    """What the README says about warm-up: the trees add nothing yet, so a new ERROR line
    still gets a score from its other evidence, and it is never flagged (min_score 0)."""
    s = AnomalyScorer(window_size=50, min_score=0.0, quantile=0.5)
    r = s.score(*_x(s, tid="T7", seen=0, new=True, level="ERROR", ts=1.0))
    assert r.warming_up and not r.is_anomaly and r.reason is None
    assert r.score > 0.1


def test_a_hosts_error_share_is_judged_within_its_kind_whatever_other_kinds_times():
    """The fleet a host's errors are compared with is its kind's (issue 19). One fleet for
    every source took the event times of a source from another era (a replayed old file, a
    log without a year read as this year) as its clock and judged nothing older after that
    ("far out of order"): in a mixed stream of the loghub samples 4 in 5 injected error
    floods went unflagged (`smartlogs eval production`, bench/QUALITY.md)."""
    def run(other_kind_interleaved: bool):
        s = AnomalyScorer()
        rnd = random.Random(1)
        t, flood = 1.7e9, []
        for k in range(4000):
            t += rnd.expovariate(2.0)
            host = f"h{k % 4}"
            level = "WARNING" if rnd.random() < 0.1 else "INFO"
            # h0 floods four times (errors at ~10x its usual share); the earlier floods raise
            # its own peak, so the last is evidence only against its share of the fleet's
            tid = f"T{k % 7}"
            if any(a <= k < a + 120 for a in (1000, 1600, 2200, 3000)) and k % 3 == 0:
                host, level, tid = "h0", "ERROR", "TF"  # a pattern only h0 writes
            x, ctx = s.features(template_id=tid, seen_before=100, is_new=False,
                                level=level, tokens=8, parsed=True, host=host,
                                window_start=t - t % 60, ts=t, kind="svc")
            s.score(x, ctx)
            if 3000 <= k < 3120 and host == "h0":
                flood.append(x["error_burst"])
            if other_kind_interleaved and k % 5 == 0:  # a source of another kind, years later
                x, ctx = s.features(template_id="T99", seen_before=100, is_new=False,
                                    level="ERROR", tokens=8, parsed=True, host="o1",
                                    window_start=0.0, ts=2.0e9 + k, kind="other")
                s.score(x, ctx)
        return flood

    alone, mixed = run(False), run(True)
    assert max(alone) > 0.5  # the flood is evidence when the kind is alone
    assert mixed == alone


def test_a_severe_pattern_new_for_its_host_is_flagged_only_where_severe_lines_are_rare():
    """Severity that counts (issue 19): the first line of a pattern at ERROR or worse from a host
    is flagged where its kind of source logs such lines in under 1% of its lines, and not where
    they are routine (on BGL-like data, where a fifth of the lines are FATAL, a line's level
    alone cannot carry a flag)."""
    def run(severe_every):
        s = AnomalyScorer(window_size=50)
        for i in range(2000):
            level = "FATAL" if (severe_every and i % severe_every == 0) or i % 500 == 1 else "INFO"
            tid = f"Tf{i % 7}" if level == "FATAL" else f"T{i % 5}"
            s.score(*s.features(template_id=tid, seen_before=i, is_new=False, level=level,
                                tokens=8, parsed=True, host=f"h{i % 4}", window_start=0.0,
                                ts=float(i), kind="k"))
        # a pattern this kind of source has logged (from other hosts), first from this host
        x, ctx = s.features(template_id="Tf1", seen_before=4, is_new=False,
                            level="FATAL", tokens=8, parsed=True, host="h9", window_start=0.0,
                            ts=2001.0, kind="k")
        return s.score(x, ctx)

    calm = run(0)
    assert calm.is_anomaly and calm.reason.startswith("first FATAL line of pattern Tf1")
    routine = run(5)  # 20% of the lines FATAL: the rule stays silent (other evidence may not)
    assert "first FATAL line" not in (routine.reason or "")


def test_a_level_weighs_as_much_as_it_is_rare_in_its_kind_of_source():
    """Issue 19: the level is evidence in proportion to how rare it is in the line's kind of
    source. Where a third of the lines are FATAL, one more FATAL line of a known pattern says
    little; the same line where FATAL is rare keeps the level's full weight. Scored the same
    in every other way (same pattern, host, times), the routine one scores clearly lower."""
    def run(fatal_every):
        s = AnomalyScorer(window_size=50)
        for i in range(1500):
            fatal = i % fatal_every == 0
            tid, level = ("Tf", "FATAL") if fatal else (f"T{i % 5}", "INFO")
            s.score(*s.features(template_id=tid, seen_before=i, is_new=False, level=level,
                                tokens=8, parsed=True, host=f"h{i % 4}", window_start=0.0,
                                ts=float(i), kind="k"))
        x, ctx = s.features(template_id="Tf", seen_before=100, is_new=False, level="FATAL",
                            tokens=8, parsed=True, host="h0", window_start=0.0, ts=1500.0,
                            kind="k")
        return s.score(x, ctx), x

    routine, x_routine = run(3)  # a third of the lines FATAL
    rare, x_rare = run(300)  # 0.3% of the lines FATAL
    # nothing else sets the two apart: no evidence besides the level
    assert max(x_routine[k] for k in EVIDENCE) < 0.2 and max(x_rare[k] for k in EVIDENCE) < 0.2
    assert rare.score >= 0.55
    assert routine.score <= rare.score - 0.15
    assert "of this kind of source's lines are FATAL or worse" in explain(x_routine, {
        **routine.features, "level": "FATAL", "level_share": 0.33, "template_id": "Tf"})


def _fed(lines: int, level_of) -> AnomalyScorer:
    """A scorer that scored ``lines`` lines of one kind, line i at level ``level_of(i)``: the
    FATAL ones of template Tf, the others of five templates, over four hosts."""
    s = AnomalyScorer(window_size=50)
    for i in range(lines):
        level = level_of(i)
        s.score(*s.features(template_id="Tf" if level == "FATAL" else f"T{i % 5}",
                            seen_before=i, is_new=False, level=level, tokens=8,
                            parsed=True, host=f"h{i % 4}", window_start=0.0,
                            ts=float(i), kind="k"))
    return s


def _next_fatal(s: AnomalyScorer, lines: int, **line) -> dict:
    """The context of a FATAL line of that kind after the ``lines`` lines ``_fed`` gave it."""
    _, ctx = s.features(level="FATAL", tokens=8, parsed=True, window_start=0.0,
                        ts=float(lines), kind="k", **line)
    return ctx


def test_a_levels_weight_reads_its_share_among_the_lines_seen_not_how_many_were_seen():
    """Issue 19 (BGL with its own partition): the share that weighs a level is a moving average
    started from nothing; read as it was, it stayed far below the real share over a kind's first
    ~1,000 lines, so a FATAL weighed more the earlier it came. In a source whose lines are a
    third FATAL, a FATAL weighs the same after 150 lines as after 1,500; and a FATAL some lines
    after a crash dump (a run of FATAL lines) weighs more than one inside the dump."""
    def weight_after(lines, level_of):
        ctx = _next_fatal(_fed(lines, level_of), lines, template_id="Tf", seen_before=100,
                          is_new=False, host="h0")
        return ctx["severity_weight"], ctx["level_share"]

    third = lambda i: "FATAL" if i % 3 == 0 else "INFO"  # noqa: E731
    early, early_share = weight_after(150, third)
    late, late_share = weight_after(1500, third)
    assert abs(early_share - 1 / 3) < 0.03 and abs(late_share - 1 / 3) < 0.03
    assert abs(early - late) < 0.05 and early < 0.75

    dump = lambda i: "FATAL" if 100 <= i < 200 else "INFO"  # noqa: E731  lines 100-199
    inside, _ = weight_after(190, dump)
    after, _ = weight_after(300, dump)  # 100 INFO lines after the dump
    assert after > inside + 0.1


def test_the_first_fatal_after_a_long_calm_weighs_fully_though_a_dump_made_fatal_common():
    """Issue 19 (BGL alone, ``rts panic!``): a crash dump (a few hundred FATAL lines) made FATAL
    a quarter of the kind's last ~1,000 lines, so every FATAL long after it weighed only
    ``1 - 0.25`` of its level. A level is routine only if it is routine lately too: the first
    FATAL after 200 calm lines weighs nearly fully; inside the dump, and where FATAL is steadily
    common, it stays discounted; and a model from before this share restores and scores."""
    def weight(level_of, lines):
        s = _fed(lines, level_of)
        ctx = _next_fatal(s, lines, template_id="Tnew", seen_before=0, is_new=True, host="h9")
        return ctx["severity_weight"], s

    dump = lambda i: "FATAL" if 500 <= i < 800 else "INFO"  # noqa: E731
    after_calm, s = weight(dump, 1000)  # 200 INFO lines after the dump
    assert after_calm > 0.9  # the code before: 0.66 (the dump still a third of the share)
    inside, _ = weight(dump, 790)
    assert inside < 0.6 and after_calm > inside + 0.3  # the dump: FATAL is half the lines
    steady, _ = weight(lambda i: "FATAL" if i % 4 == 0 else "INFO", 1000)  # noqa: E731
    assert steady < 0.8

    state = s.__getstate__()
    del state["_recent_levels"]  # a checkpoint from before
    old = AnomalyScorer.__new__(AnomalyScorer)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    x, ctx = old.features(template_id="T1", seen_before=5, is_new=False, level="FATAL",
                          tokens=8, parsed=True, host="h1", window_start=0.0, ts=1001.0,
                          kind="k")
    assert 0.0 <= old.score(x, ctx).score <= 1.0


def test_a_model_from_before_level_shares_keeps_its_share_of_severe_lines():
    """A checkpoint from before the shares per level held one share (lines at ERROR or worse)
    per kind: restored, severity that counts judges with it as before."""
    s = AnomalyScorer(window_size=50)
    for i in range(300):
        s.score(*s.features(template_id="T1", seen_before=i, is_new=False, level="INFO",
                            tokens=8, parsed=True, host="h", window_start=0.0, ts=float(i),
                            kind="k"))
    state = s.__getstate__()
    del state["_levels"], state["level_share"], state["_recent_levels"]  # none of these then
    state["_severe"], state["severe_share"] = {"k": 0.3}, 0.0  # severe lines routine in "k"
    old = AnomalyScorer.__new__(AnomalyScorer)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    x, ctx = old.features(template_id="Tnew", seen_before=0, is_new=True, level="ERROR",
                          tokens=8, parsed=True, host="h2", window_start=0.0, ts=301.0, kind="k")
    assert "first_severe" not in ctx  # 30% of the kind's lines severe: not news
    assert abs(ctx["level_share"] - 0.3) < 0.01


def test_the_trees_do_not_rate_rare_a_new_pattern_where_new_patterns_are_routine():
    """Issue 19 (BGL): in a stream where one kind of source is in a crash dump (every other of
    its lines a new pattern) while the rest of the stream is calm, novelty judges its new
    patterns routine (0), and the trees must not undo that by rating "a new pattern" rare
    against the whole stream: its new patterns score as its known ones. In a calm kind a new
    pattern stays news, to novelty and to the trees."""
    s = AnomalyScorer(window_size=100)

    def line(i, tid, kind, new, seen):
        return s.score(*s.features(template_id=tid, seen_before=seen, is_new=new, level="FATAL"
                                   if kind == "dump" else "INFO", tokens=8, parsed=True,
                                   host=f"{kind}{i % 3}", window_start=0.0, ts=float(i),
                                   kind=kind))

    new_scores, known_scores = [], []
    for i in range(3000):
        if i % 10:  # nine lines in ten: a calm kind, known patterns
            line(i, f"T{i % 6}", "calm", False, i)
        elif i < 2000:  # the dump's lines: every other one a new pattern
            line(i, f"D{i}" if i % 20 else "Dknown", "dump", bool(i % 20), 0 if i % 20 else i)
        else:
            r = line(i, f"D{i}" if i % 20 else "Dknown", "dump", bool(i % 20), 0 if i % 20 else i)
            (new_scores if i % 20 else known_scores).append(r.score)
    # (the dump's lines are all FATAL, so the level weighs nothing there and the trees' part
    # shows whole: new patterns 0.08, known ones 0.03 from the trees' rarity input; with
    # new_template = 1 for the new ones, as before, 0.24 against 0.04)
    assert sum(new_scores) / len(new_scores) <= sum(known_scores) / len(known_scores) + 0.1
    x, _ = s.features(template_id="Tcalm-new", seen_before=0, is_new=True, level="INFO",
                      tokens=8, parsed=True, host="calm0", window_start=0.0, ts=3000.0,
                      kind="calm")
    assert x["new_template"] == 1.0 and x["novelty"] > 0.5


def test_a_models_first_window_is_judged_by_the_trees_not_scored_zero():
    """Issue 19 (BGL at 8 partitions): the trees scored a model's first window 0 (River has no
    reference yet) and every line after it on the reference, so a partition's first lines
    ranked by when they came: a source alone in its partition had a quarter of its lines
    (250 of 1,000) without the trees' part, and an unusual line there below routine lines
    after it. Now a first-window line is judged against what the window learned so far: a
    line whose only unusual trait is one the trees see (it matches no known format) scores
    above the routine lines around it, before and after the window ends."""
    s = AnomalyScorer(window_size=100)

    def line(i, parsed=True):
        return s.score(*s.features(template_id="T1", seen_before=i, is_new=i == 0, level="INFO",
                                   tokens=8, parsed=parsed, host="h", window_start=0.0,
                                   ts=float(i), kind="k")).score

    routine = [line(i) for i in range(60)]
    odd = line(60, parsed=False)  # in the first window
    routine += [line(i) for i in range(61, 140)]
    assert odd > max(routine[30:]) + 0.05  # (0.13 against 0.06; on River's zero, the same 0.06)
    assert abs(routine[98] - routine[101]) < 0.02  # no step when the reference takes over


def test_the_first_severe_line_after_an_hour_without_one_weighs_fully_in_a_quiet_source():
    """Issue 19 (BGL, lines 346 and 363): a source that logs little keeps a crash dump of days
    ago in its last ~64 lines, so its first FATAL days later still read FATAL as half its
    recent lines and weighed half. "First such level there in a long while" is a matter of
    time: a kind's first line at ERROR or worse after more than the scorer's hour without one
    weighs fully, and its reason says so; inside a dump, and within the hour, the shares still
    discount it; a model from before restores and scores."""
    def scorer_after(gap_after_dump):
        s = AnomalyScorer(window_size=50)
        for i in range(300):  # the dump: a FATAL line a second
            s.score(*s.features(template_id=f"R{i % 30}", seen_before=i // 30, is_new=i < 30,
                                level="FATAL", tokens=8, parsed=True, host=f"n{i}",
                                window_start=0.0, ts=float(i), kind="k"))
        for j in range(30):  # then 30 INFO lines spread over the gap
            ts = 300.0 + gap_after_dump * (j + 1) / 31
            s.score(*s.features(template_id="I", seen_before=j, is_new=j == 0, level="INFO",
                                tokens=8, parsed=True, host=f"m{j}", window_start=0.0, ts=ts,
                                kind="k"))
        return s

    def fatal(s, ts):
        return s.features(template_id="Tnew", seen_before=0, is_new=True, level="FATAL",
                          tokens=8, parsed=True, host="h9", window_start=0.0, ts=ts, kind="k")

    s = scorer_after(2 * 86400.0)
    x, ctx = fatal(s, 300.0 + 2 * 86400.0)
    assert ctx["severity_weight"] > 0.95  # the code before: 0.38 (30 INFO lines after 300 FATAL)
    assert "first line at ERROR or worse from this kind of source in 2.0 days" in explain(x, ctx)
    _, ctx2 = fatal(s, 301.0 + 2 * 86400.0)  # the next one, a second later: routine again
    assert ctx2["severity_weight"] < 0.6
    within = scorer_after(1800.0)
    _, ctx3 = fatal(within, 300.0 + 1800.0)  # half an hour after the dump: still discounted
    assert ctx3["severity_weight"] < 0.6

    state = s.__getstate__()
    del state["_severe_last"]  # a checkpoint from before
    old = AnomalyScorer.__new__(AnomalyScorer)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert 0.0 <= old.score(*fatal(old, 400.0 + 3 * 86400.0)).score <= 1.0
