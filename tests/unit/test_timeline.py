"""A shard's timeline (streams/runtime/timeline.py): state changes cut into slices of a run."""

from __future__ import annotations

import pytest

from streams.runtime.timeline import Timeline, busy_share


def test_each_state_lasts_until_the_threads_next_mark_and_is_cut_at_the_slices():
    marks = [[10.0, "runner", "idle"], [10.1, "runner", "pipeline"], [10.6, "runner", "idle"],
             [10.2, "writer", "turn held"], [10.3, "writer", "idle"]]
    got = busy_share(marks, 10.0, 11.0, 0.25)
    assert len(got) == 4
    assert got[0]["runner"] == pytest.approx({"idle": 0.1, "pipeline": 0.15})
    assert got[1]["runner"] == pytest.approx({"pipeline": 0.25})
    assert got[2]["runner"] == pytest.approx({"pipeline": 0.1, "idle": 0.15})
    assert got[0]["writer"] == pytest.approx({"turn held": 0.05})
    assert got[1]["writer"] == pytest.approx({"turn held": 0.05, "idle": 0.2})
    # every thread's time from its first mark to the end is in exactly one state
    assert sum(sum(s["runner"].values()) for s in got) == pytest.approx(1.0)


def test_a_state_entered_before_the_run_counts_from_the_runs_start():
    got = busy_share([[5.0, "runner", "idle"], [10.5, "runner", "pipeline"]], 10.0, 11.0, 0.5)
    assert got[0]["runner"] == pytest.approx({"idle": 0.5})
    assert got[1]["runner"] == pytest.approx({"pipeline": 0.5})


def test_the_timeline_keeps_its_newest_marks_only():
    t = Timeline(maxlen=3)
    for i in range(5):
        t.mark("runner", f"s{i}")
    assert [m[2] for m in t.dump()] == ["s2", "s3", "s4"]
