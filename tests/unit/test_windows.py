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
