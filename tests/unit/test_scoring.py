import pickle

from streams.scoring import AdaptiveThreshold, AnomalyScorer, RateTracker, explain


def _x(s: AnomalyScorer, tid="T1", seen=10, new=False, level="INFO", host="h", w=0.0):
    return s.features(template_id=tid, seen_before=seen, is_new=new, level=level, tokens=8,
                      parsed=True, host=host, window_start=w)


def test_features_are_in_unit_interval_and_fixed_keys():
    s = AnomalyScorer()
    x, _ = _x(s)
    assert set(x) == {"rarity", "new_template", "severity", "length", "unparsed", "host_burst",
                      "template_burst"}
    assert all(0.0 <= v <= 1.0 for v in x.values())


def test_warm_up_then_rare_error_scores_above_common_info():
    s = AnomalyScorer(window_size=50, min_score=0.0, quantile=0.9)
    for i in range(400):
        x, ctx = _x(s, seen=i)
        r = s.score(x, ctx)
        if i < 100:
            assert r.warming_up and not r.is_anomaly
    common = s.score(*_x(s, seen=400))
    rare = s.score(*_x(s, tid="T99", seen=0, new=True, level="ERROR"))
    assert rare.score > common.score
    assert rare.is_anomaly and not common.is_anomaly
    assert "first time this message pattern (T99)" in rare.reason and "severity ERROR" in rare.reason


def test_rate_tracker_learns_the_usual_rate_per_window():
    t = RateTracker(alpha=1.0)
    for _ in range(5):
        t.add("h", 0.0)
    assert t.add("h", 60.0) == (1, 5)


def test_threshold_tracks_quantile():
    th = AdaptiveThreshold(quantile=0.9, refresh=10)
    for i in range(1000):
        th.update((i % 100) / 100)
    assert 0.88 <= th.value <= 0.92


def test_explain_names_the_extreme_features():
    x = {"rarity": 0.1, "new_template": 0.0, "severity": 0.1, "length": 0.1, "unparsed": 0.0,
         "host_burst": 0.95, "template_burst": 0.5}
    ctx = {"host": "web1", "host_count": 900, "host_usual": 40.0, "template_id": "T3"}
    assert explain(x, ctx) == "host web1 sent 900 lines this window, usually ~40"


def test_scorer_pickles():
    s = AnomalyScorer()
    s.score(*_x(s))
    s2 = pickle.loads(pickle.dumps(s))
    assert s2.seen == 1
