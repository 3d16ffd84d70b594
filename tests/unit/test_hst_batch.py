"""BatchHST must give exactly River's HalfSpaceTrees scores and masses."""

from __future__ import annotations

import pickle
import random

import pytest
from river.anomaly import HalfSpaceTrees

from streams.hst_batch import BatchHST

FEATURES = ("a", "b", "c", "d")


def _rows(n: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 97 < 5:  # an unusual stretch, so scores vary
            out.append([rng.random() * 0.1, 1.0, 0.0, rng.random()])
        else:
            out.append([rng.choice([0.0, 1.0, 0.5, rng.random()]) for _ in FEATURES])
    return out


def _masses(hst: HalfSpaceTrees) -> list:
    return [(n.l_mass, n.r_mass) for t in hst.trees for n in t.iter_dfs()]


@pytest.mark.parametrize("height,window,sizes", [
    (6, 250, [1, 7, 250, 1000, 3, 500]),
    (3, 10, [1, 1, 9, 10, 11, 25, 2]),
    (8, 50, [400, 1, 49, 120]),
])
def test_same_scores_and_masses_as_river_line_by_line(height, window, sizes):
    rows = _rows(sum(sizes), seed=height)
    river = HalfSpaceTrees(n_trees=10, height=height, window_size=window, seed=7)
    want = []
    for r in rows:
        x = dict(zip(FEATURES, r))
        want.append(river.score_one(x))
        river.learn_one(x)

    fast = BatchHST(HalfSpaceTrees(n_trees=10, height=height, window_size=window, seed=7), FEATURES)
    got, k = [], 0
    for size in sizes:
        got.extend(fast.score_learn(rows[k:k + size]))
        k += size
    assert got == want  # exactly: sums of integers
    assert len(set(want)) > 5  # the comparison means something
    fast.sync()
    assert _masses(fast.hst) == _masses(river)
    assert (fast.hst.counter, fast.hst._first_window) == (river.counter, river._first_window)


def test_a_checkpoint_in_the_middle_of_a_window_continues_exactly():
    rows = _rows(900, seed=3)
    river = HalfSpaceTrees(n_trees=5, height=4, window_size=100, seed=1)
    want = []
    for r in rows:
        x = dict(zip(FEATURES, r))
        want.append(river.score_one(x))
        river.learn_one(x)

    fast = BatchHST(HalfSpaceTrees(n_trees=5, height=4, window_size=100, seed=1), FEATURES)
    got = fast.score_learn(rows[:437])
    fast.sync()
    restored = BatchHST(pickle.loads(pickle.dumps(fast.hst)), FEATURES)
    got += restored.score_learn(rows[437:])
    assert got == want
    # River's own walk on the restored model agrees too
    again = pickle.loads(pickle.dumps(fast.hst))
    x = dict(zip(FEATURES, rows[437]))
    assert again.score_one(x) == want[437]


def test_nan_and_boundary_values_go_where_river_sends_them():
    river = HalfSpaceTrees(n_trees=3, height=5, window_size=4, seed=2)
    fast = BatchHST(HalfSpaceTrees(n_trees=3, height=5, window_size=4, seed=2), FEATURES)
    rows = [[0.5, 0.5, 0.5, 0.5]] * 5 + [[float("nan"), 0.0, 1.0, 0.5]] * 6
    thresholds = []
    want = []
    for r in rows:
        x = dict(zip(FEATURES, r))
        want.append(river.score_one(x))
        river.learn_one(x)
    thresholds = [n.threshold for t in river.trees for n in t.iter_dfs() if hasattr(n, "threshold")]
    rows += [[t] * 4 for t in thresholds[:8]]  # exactly on a split
    for r in rows[11:]:
        x = dict(zip(FEATURES, r))
        want.append(river.score_one(x))
        river.learn_one(x)
    assert fast.score_learn(rows) == want
    fast.sync()
    assert _masses(fast.hst) == _masses(river)


def test_the_pipeline_gives_the_same_events_whatever_the_batch_size(loghub):
    from streams.pipeline import Pipeline, PipelineConfig

    lines = (loghub / "Linux" / "Linux_2k.log").read_text(errors="replace").splitlines()
    items = [{"raw": line, "received": 1.0, "id": f"x{i}"} for i, line in enumerate(lines)]

    def run(batch: int) -> list[dict]:
        p, out = Pipeline(PipelineConfig()), []
        for k in range(0, len(items), batch):
            out.extend(p.process(items[k:k + batch]))
        return out

    whole, single = run(700), run(1)
    assert whole == single
    assert sum(e["anomaly"] for e in whole) > 5 and not whole[-1]["warming_up"]


def test_the_first_window_is_judged_against_what_it_learned_so_far():
    """River scores the trees' whole first window 0, then the lines after it on the reference:
    a step that depends on when a line came. With ``judge_first_window`` a line of the first
    window is scored against the window's masses so far, scaled to a full window (River's walk
    and size limit), once the window holds the size limit of lines; learning and every later
    score stay River's exactly, whatever the batch sizes."""
    window = 100
    rows = [[0.5, 0.5, 0.5, 0.5]] * 60 + [[0.05, 0.95, 0.05, 0.95]] + [[0.5, 0.5, 0.5, 0.5]] * 339
    river = HalfSpaceTrees(n_trees=10, height=6, window_size=window, seed=7)
    want = []
    for r in rows:
        x = dict(zip(FEATURES, r))
        want.append(river.score_one(x))
        river.learn_one(x)
    for sizes in ([400], [1, 9, 40, 11, 39, 300], [1] * 400):
        fast = BatchHST(HalfSpaceTrees(n_trees=10, height=6, window_size=window, seed=7),
                        FEATURES, judge_first_window=True)
        got, k = [], 0
        for size in sizes:
            got.extend(fast.score_learn(rows[k:k + size]))
            k += size
        assert got[window:] == want[window:]  # after the first window: River's, exactly
        fast.sync()
        assert _masses(fast.hst) == _masses(river)
        assert got[:10] == [0.0] * 10  # under the size limit (0.1 x window): nothing to judge by
        assert got[60] > 0.5  # unlike all 60 lines before it
        assert got[30] < 0.05 and got[99] < 0.05  # like the lines before them
        assert abs(got[99] - got[100]) < 0.05  # no step when the reference takes over
        if sizes == [400]:
            first = got
        assert got == first  # the same scores whatever the batch sizes
    # the scaled reference is River's own score with r_mass = l_mass x window / lines so far
    probe = BatchHST(HalfSpaceTrees(n_trees=10, height=6, window_size=window, seed=7), FEATURES,
                     judge_first_window=True)
    probe.score_learn(rows[:61])
    probe.sync()
    ref = pickle.loads(pickle.dumps(probe.hst))
    for t in ref.trees:
        for n in t.iter_dfs():
            n.r_mass = n.l_mass * window / 61
    ref._first_window = False
    x = dict(zip(FEATURES, rows[61]))
    assert probe.score_learn([rows[61]])[0] == pytest.approx(ref.score_one(x), abs=1e-12)
    assert BatchHST(HalfSpaceTrees(n_trees=10, height=6, window_size=window, seed=7),
                    FEATURES).score_learn(rows[:100]) == [0] * 100  # River's, by default
