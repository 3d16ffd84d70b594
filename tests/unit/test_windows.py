"""Window arithmetic and the folding of window counts into the Kafka worker's table shape."""

from __future__ import annotations

from streams.windows import count_windows, fold_window_counts, summarize_windows, window_start


class RecordingTable(dict):
    """Like a Faust Table with ``default=dict`` (a missing key reads as ``{}`` and is not
    stored), recording every assignment: each is one changelog record."""

    assignments = 0

    def __missing__(self, key):
        return {}

    def __setitem__(self, key, value):
        self.assignments += 1
        super().__setitem__(key, value)


def _event(ts, host="h1", level="info", template="T1", anomaly=False):
    return {"ts": ts, "host": host, "component": "sshd", "level": level, "template_id": template,
            "anomaly": anomaly}


def test_window_start_is_aligned():
    assert window_start(125.0, 60) == 120.0
    assert window_start(120.0, 60) == 120.0


def test_fold_writes_each_window_once_and_adds_up():
    table = RecordingTable()
    batch = [_event(10), _event(20, host="h2"), _event(70, anomaly=True), _event(75, template="T2")]
    fold_window_counts(table, count_windows(batch, 60))
    assert table.assignments == 2  # two windows, not one record per (window, dimension, key)
    assert table["0"]["total|*"] == 2 and table["0"]["host|h1"] == 1 and table["0"]["host|h2"] == 1
    assert table["60"]["anomaly|*"] == 1 and table["60"]["template|T2"] == 1
    before = dict(table["0"])
    fold_window_counts(table, count_windows([_event(30)], 60))
    assert table["0"]["total|*"] == 3 and before["total|*"] == 2  # replaced, not mutated
    assert summarize_windows(table.values()) == (sum(len(v) for v in table.values()), 5)


def test_summary_of_nothing():
    assert summarize_windows([]) == (0, 0)


def test_scoped_keys_keep_partitions_apart():
    table = RecordingTable()
    fold_window_counts(table, count_windows([_event(10)], 60), scope="0|")
    fold_window_counts(table, count_windows([_event(20, host="h2")], 60), scope="3|")
    assert set(table) == {"0|0", "3|0"}
    assert summarize_windows(table.values())[1] == 2
