"""River's ``HalfSpaceTrees``, scored and taught a batch of lines at a time — same numbers.

Why: River walks each tree node by node in Python for every line, twice (``score_one``
then ``learn_one``): ~16–20 µs a line on this machine, close to half of the whole
pipeline's CPU (py-spy, bench/RESULTS.md). The walks over a batch vectorise with numpy
(~1–2 µs a line), and the result is exactly River's, because of how HST works:

* a line's score reads only the *reference* masses (``r_mass``), which change only when a
  window of ``window_size`` lines closes (the pivot); learning adds to ``l_mass`` only;
* so within one window, scoring every line first and then learning them all equals River's
  score-then-learn line by line; a batch is cut at the window boundaries;
* the path of a line through a tree depends only on the line (every feature is present:
  River's missing-feature rule, which reads ``l_mass``, never applies), so one walk gives the
  path for both the score and the learning;
* scores are sums of integers (mass × 2^depth) — exact in floating point in any order.

The River object stays the model of record: River builds the trees (its own random splits,
seeded), the masses are copied back into its nodes before a checkpoint is written
(``sync``), and River's ``score_one`` on a restored model gives the same scores.
tests/unit/test_hst_batch.py checks equality with River line by line, across window
boundaries, batch sizes and checkpoints.

One departure, asked for by the scorer (``judge_first_window``, ``BatchHST``): River scores the
trees' first window 0; with it, those lines are scored against the window's masses so far. The
first window's scores are then not River's (River has none to give); everything learned, and
every score after the first window, still is.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
from river.anomaly import HalfSpaceTrees

__all__ = ["BatchHST"]


class BatchHST:
    """Score-then-learn over a matrix of feature rows (columns in ``features`` order).

    ``judge_first_window``: River scores every line of the trees' first window 0 (there is
    no reference mass yet), then the lines after it on the reference: a step that depends on
    when a line came, not on what it is, and that every model goes through (each partition's
    its own, so at P partitions a source has more of its lines in it). With this set, a line
    of the first window is scored against the masses the window learned so far, scaled to a
    full window (``l_mass × window / lines so far``), by River's own walk and size limit,
    once the window holds that size limit (0.1 × window) of lines; the lines before that
    still score 0. Learning, and every score after the first window, are River's exactly.
    """

    def __init__(self, hst: HalfSpaceTrees, features: tuple[str, ...], *,
                 judge_first_window: bool = False):
        self.hst = hst
        self.features = tuple(features)
        self.judge_first_window = judge_first_window
        self._col = {f: i for i, f in enumerate(self.features)}
        self._arrays: tuple | None = None  # built with (or after) River's trees

    # -- River's trees as arrays (heap order: children of i are 2i+1 and 2i+2) ------------
    def _build(self) -> None:
        hst = self.hst
        size = 2 ** (hst.height + 1) - 1
        self._nodes = [self._heap_nodes(root, size) for root in hst.trees]
        shape = (len(self._nodes), size)
        feat = np.zeros(shape, dtype=np.intp)
        thr = np.zeros(shape)
        r_mass = np.zeros(shape, dtype=np.int64)
        l_mass = np.zeros(shape, dtype=np.int64)
        for t, nodes in enumerate(self._nodes):
            for i, node in enumerate(nodes):
                r_mass[t, i], l_mass[t, i] = node.r_mass, node.l_mass
                if i < size // 2:  # a branch
                    feat[t, i] = self._col[node.feature]
                    thr[t, i] = node.threshold
        self._arrays = (feat, thr, r_mass, l_mass)

    @staticmethod
    def _heap_nodes(root, size: int) -> list:
        """A tree's nodes in heap order (children of i at 2i+1 and 2i+2)."""
        nodes = [None] * size
        stack = [(root, 0)]
        while stack:
            node, i = stack.pop()
            nodes[i] = node
            if i < size // 2:
                stack.append((node.children[0], 2 * i + 1))
                stack.append((node.children[1], 2 * i + 2))
        return nodes

    def sync(self) -> None:
        """Copy the masses back into River's nodes (before the model is pickled)."""
        if self._arrays is None:
            return
        _, _, r_mass, l_mass = self._arrays
        for t, nodes in enumerate(self._nodes):
            rt, lt = r_mass[t].tolist(), l_mass[t].tolist()
            for i, node in enumerate(nodes):
                node.r_mass, node.l_mass = rt[i], lt[i]

    # -- the hot path -----------------------------------------------------------------------
    def score_learn(self, rows: list[list[float]]) -> list[float]:
        """River's ``score_one`` then ``learn_one`` for each row in order; returns the scores."""
        hst = self.hst
        out: list[float] = []
        if not rows:
            return out
        if not hst.trees:  # River builds its trees from the first line it learns
            first = dict(zip(self.features, rows[0]))
            out.append(hst.score_one(first))  # 0: the first window
            hst.learn_one(first)
            rows = rows[1:]
            self._arrays = None
        if self._arrays is None:
            self._build()
        # from a flat iterator: faster than np.asarray on a list of tuples, the same values (a
        # row of the wrong width fails the reshape, as before)
        x = np.fromiter(chain.from_iterable(rows), dtype=float).reshape(
            len(rows), len(self.features))
        start = 0
        window = hst.window_size
        while start < len(x):
            stop = min(len(x), start + window - hst.counter)
            out.extend(self._segment(x[start:stop]))
            start = stop
        return out

    def _segment(self, x: np.ndarray) -> list[float]:
        """Rows that fall within one window: scores from the fixed reference masses, then
        the window's learning, then River's pivot if the window closed."""
        hst = self.hst
        feat, thr, r_mass, l_mass = self._arrays
        n_trees, height = len(hst.trees), hst.height
        m = len(x)
        trees = np.arange(n_trees)[:, None]
        rows = np.arange(m)[None, :]
        node = np.zeros((n_trees, m), dtype=np.intp)
        path = np.empty((height + 1, n_trees, m), dtype=np.intp)
        for depth in range(height):
            path[depth] = node
            # River goes left when value < threshold (so a NaN goes right, as here)
            go_left = x[rows, feat[trees, node]] < thr[trees, node]
            node = 2 * node + 2 - go_left
        path[height] = node

        if hst._first_window:
            scores = (self._first_window_scores(path, l_mass, hst.counter)
                      if self.judge_first_window else [0] * m)
        else:
            # River stops at the first node whose reference mass is under the size limit,
            # after adding that node's term
            r = r_mass[trees, path]  # (depth, tree, row)
            under = r < 0.1 * hst.window_size
            stopped_before = np.cumsum(under, axis=0) - under > 0
            terms = np.where(stopped_before, 0, r << np.arange(height + 1)[:, None, None])
            total = terms.sum(axis=(0, 1))
            scores = (1 - total / hst._max_score).tolist()

        size = l_mass.shape[1]
        flat = (path + trees * size).ravel()
        l_mass += np.bincount(flat, minlength=n_trees * size).reshape(n_trees, size)
        hst.counter += m
        if hst.counter == hst.window_size:
            r_mass[...] = l_mass
            l_mass[...] = 0
            hst._first_window = False
            hst.counter = 0
        return scores

    def _first_window_scores(self, path: np.ndarray, l_mass: np.ndarray,
                             counter: int) -> list[float]:
        """Scores of rows of the first window (``path``: depth × tree × row), each against the
        masses learned before it in this window, scaled to a full window; River's walk (stop
        after the first node under the size limit) and normalisation. Rows while the window
        holds fewer lines than the size limit score 0, as in River. Runs for a model's first
        ``window_size`` lines only."""
        hst = self.hst
        window = hst.window_size
        limit = 0.1 * window
        height, n_trees, m = path.shape
        trees = np.arange(n_trees)[None, :]
        weight = (2.0 ** np.arange(height))[:, None]
        seen = l_mass.copy()  # the window's masses, learned row by row here
        out: list[float] = []
        for j in range(m):
            node = path[:, :, j]  # depth × tree; one node per depth, so no repeats in a tree
            k = counter + j
            if k >= limit:
                ref = seen[trees, node] * (window / k)
                under = ref < limit
                stopped_before = np.cumsum(under, axis=0) - under > 0
                total = np.where(stopped_before, 0.0, ref * weight).sum()
                out.append(float(1 - total / hst._max_score))
            else:
                out.append(0.0)
            seen[trees, node] += 1
        return out
