"""Window arithmetic and per-batch window counts."""

from __future__ import annotations

from streams.windows import count_windows, window_start


def _event(ts, host="h1", level="info", template="T1", anomaly=False):
    return {"ts": ts, "host": host, "component": "sshd", "level": level, "template_id": template,
            "anomaly": anomaly}


def test_window_start_is_aligned():
    assert window_start(125.0, 60) == 120.0
    assert window_start(120.0, 60) == 120.0


def test_counts_per_window_and_dimension():
    batch = [_event(10), _event(20, host="h2"), _event(70, anomaly=True), _event(75, template="T2")]
    counts = count_windows(batch, 60)
    assert counts[(0.0, "total", "*")] == 2 and counts[(0.0, "host", "h2")] == 1
    assert counts[(60.0, "anomaly", "*")] == 1 and counts[(60.0, "template", "T2")] == 1


def test_arrival_counts_come_with_the_event_time_counts_and_equal_counting_line_by_line():
    import random
    from collections import Counter

    rnd = random.Random(7)
    batch = [{"ts": rnd.uniform(-200, 400), "received": 1000 + rnd.uniform(0, 300),
              "host": rnd.choice(["h1", "h2", "", None]), "component": rnd.choice(["sshd", None]),
              "level": rnd.choice(["info", "error", None]), "template_id": rnd.choice("ABC"),
              "anomaly": rnd.random() < 0.2} for _ in range(500)]
    want: Counter = Counter()
    for e in batch:  # the definition, one event and dimension at a time
        for prefix, t in (("", e["ts"]), ("a:", e["received"])):
            w = window_start(t, 60)
            for dim, key in (("total", "*"), ("host", e["host"] or "-"),
                             ("component", e["component"] or "-"), ("level", e["level"] or "-"),
                             ("template", e["template_id"])):
                want[(w, prefix + dim, key)] += 1
            if e["anomaly"]:
                want[(w, prefix + "anomaly", "*")] += 1
    assert count_windows(batch, 60, arrival=True) == want
    assert count_windows(batch, 60) == Counter({k: n for k, n in want.items() if not k[1].startswith("a:")})
    assert window_start(-30.0, 60) == -60.0


def test_grouped_counts_equal_counting_every_event_and_dimension():
    """count_windows groups a batch before counting (issue 18: fewer dict updates); its counts
    are those of adding 1 per event and dimension, by event time and by arrival."""
    import random
    from collections import Counter

    rnd = random.Random(7)
    events = [{"ts": 1_000.0 + rnd.random() * 600, "received": 2_000.0 + (i // 50) * 7.5,
               "host": rnd.choice(["a", "b", None, ""]), "component": rnd.choice(["x", None]),
               "level": rnd.choice(["INFO", "ERROR", None]),
               "template_id": rnd.choice(["T1", "T2", "T3"]), "anomaly": rnd.random() < 0.2}
              for i in range(500)]
    want: Counter = Counter()
    for e in events:
        for start, p in ((window_start(e["ts"], 60), ""), (window_start(e["received"], 60), "a:")):
            want[(start, p + "total", "*")] += 1
            want[(start, p + "host", e["host"] or "-")] += 1
            want[(start, p + "component", e["component"] or "-")] += 1
            want[(start, p + "level", e["level"] or "-")] += 1
            want[(start, p + "template", e["template_id"])] += 1
            if e["anomaly"]:
                want[(start, p + "anomaly", "*")] += 1
    assert count_windows(events, 60, arrival=True) == want
    assert count_windows(events, 60) == Counter({k: v for k, v in want.items()
                                                 if not k[1].startswith("a:")})
