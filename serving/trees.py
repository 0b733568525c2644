"""A scikit-learn ``HistGradientBoostingRegressor`` evaluated as a few whole-forest NumPy steps, for small batches.

``booster.predict`` on one row walks its trees one Python call at a time (``_predict_iterations``: one
``TreePredictor.predict`` per tree, each validating its arguments and dispatching to Cython), which is most of a
prediction request for training's model (timings: BENCHMARKS.md, section 2). :func:`compile_regressor`
flattens the fitted trees into padded ``(n_trees, n_nodes)`` arrays once; :class:`CompiledForest` then descends
every tree at once, one vectorised step per tree level, and adds the leaf values in sklearn's order, so the result
is bit-for-bit ``booster.predict(X)`` (same comparisons ``x <= threshold``, same NaN routing, same sequential
float64 sum from the baseline, same inverse link) at a fraction of the cost for one row (BENCHMARKS.md, section 2).

Only what the evaluator reproduces exactly is compiled: a fitted regressor with one tree per iteration, no
categorical splits and no input preprocessor; anything else returns None and the caller keeps ``predict``.
Callers should still check the compiled forest against ``predict`` on their own rows (:func:`probe_rows` gives
rows that take every branch) before trusting it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


class CompiledForest:
    """``predict(X)`` of a fitted HistGradientBoostingRegressor over a float matrix (see the module docstring)."""

    #: Largest batch evaluated here: faster than ``predict`` for small batches, slower for large ones (measured on
    #: training's model: BENCHMARKS.md, section 2).
    max_rows = 128

    def __init__(self, booster: Any, nodes: list[np.ndarray]):
        self.booster = booster
        width = max(len(n) for n in nodes)
        shape = (len(nodes), width)
        self.feature = np.zeros(shape, dtype=np.intp)
        self.threshold = np.zeros(shape, dtype=np.float64)
        self.missing_left = np.zeros(shape, dtype=bool)
        self.value = np.zeros(shape, dtype=np.float64)
        # Leaves (and padding) point to themselves, so that every tree can take the same number of steps.
        self.left = np.tile(np.arange(width, dtype=np.intp), (len(nodes), 1))
        self.right = self.left.copy()
        for t, n in enumerate(nodes):
            k = len(n)
            inner = n["is_leaf"] == 0
            self.feature[t, :k] = np.where(inner, n["feature_idx"], 0)
            self.threshold[t, :k] = n["num_threshold"]
            self.missing_left[t, :k] = n["missing_go_to_left"].astype(bool)
            self.value[t, :k] = n["value"]
            self.left[t, :k] = np.where(inner, n["left"], np.arange(k))
            self.right[t, :k] = np.where(inner, n["right"], np.arange(k))
        self.depth = int(max(n["depth"].max() for n in nodes))
        self.n_features = int(booster.n_features_in_)
        self.baseline = float(np.asarray(booster._baseline_prediction, dtype=np.float64).ravel()[0])
        self.inverse_link: Callable[[np.ndarray], np.ndarray] = booster._loss.link.inverse
        offset = np.arange(len(nodes), dtype=np.intp)[:, None] * width
        self._roots = offset.T.copy()
        self._feature, self._threshold = self.feature.ravel(), self.threshold.ravel()
        self._missing_left, self._value = self.missing_left.ravel(), self.value.ravel()
        self._left, self._right = (self.left + offset).ravel(), (self.right + offset).ravel()

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The raw score (before the inverse link) of each row of ``X``."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix of {self.n_features} feature columns, got shape {X.shape}")
        n = X.shape[0]
        # Flat indices: tree t's node k is entry t * width + k of the raveled node arrays; row r's feature f is
        # entry r * n_features + f of the raveled X.
        node = np.broadcast_to(self._roots, (n, self._roots.shape[1])).copy()
        row_base = (np.arange(n, dtype=np.intp) * self.n_features)[:, None]
        flat_x = X.ravel()
        for _ in range(self.depth):
            x = flat_x.take(row_base + self._feature.take(node))
            go_left = np.where(np.isnan(x), self._missing_left.take(node), x <= self._threshold.take(node))
            node = np.where(go_left, self._left.take(node), self._right.take(node))
        leaves = self._value.take(node)
        # sklearn adds tree after tree to the baseline; cumsum adds in the same order (no pairwise summation).
        terms = np.concatenate([np.full((n, 1), self.baseline), leaves], axis=1)
        return np.cumsum(terms, axis=1)[:, -1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``booster.predict(X)``: evaluated here up to ``max_rows`` rows, by the booster itself beyond (where its
        per-tree Cython loop amortises its call overhead and wins)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.shape[0] > self.max_rows:
            return self.booster.predict(X)
        return self.inverse_link(self.raw(X))


def compile_regressor(booster: Any) -> CompiledForest | None:
    """A :class:`CompiledForest` of a fitted ``HistGradientBoostingRegressor``, or None where it would not be exact."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    if type(booster) is not HistGradientBoostingRegressor or not hasattr(booster, "_predictors"):
        return None
    if getattr(booster, "_preprocessor", None) is not None or getattr(booster, "n_trees_per_iteration_", 1) != 1:
        return None
    if getattr(booster, "_in_fit", False):
        return None
    nodes = []
    for per_iteration in booster._predictors:
        if len(per_iteration) != 1:
            return None
        n = per_iteration[0].nodes
        if n["is_categorical"].any():
            return None
        nodes.append(n)
    if not nodes or np.asarray(booster._baseline_prediction).size != 1:
        return None
    return CompiledForest(booster, nodes)


def probe_rows(forest: CompiledForest, n: int = 256, seed: int = 0) -> np.ndarray:
    """``n`` rows that exercise the forest's branches: every value is a split threshold of its feature, the next
    float above one, NaN or an infinity, so that rows sit on, just past and beside the split points."""
    rng = np.random.default_rng(seed)
    inner = forest.left != np.arange(forest.left.shape[1])[None, :]
    X = np.empty((n, forest.n_features))
    for f in range(forest.n_features):
        cuts = np.unique(forest.threshold[inner & (forest.feature == f)])
        pool = np.concatenate([cuts, np.nextafter(cuts, np.inf), [np.nan, np.inf, -np.inf, 0.0]])
        X[:, f] = rng.choice(pool, size=n)
    return X
