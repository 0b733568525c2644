"""serving.trees: the compiled forest must answer bit for bit what HistGradientBoostingRegressor.predict answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from serving.trees import CompiledForest, compile_regressor, probe_rows


def _data(seed: int, n: int = 600, nan_share: float = 0.2):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.poisson(4, n), rng.normal(0, 3, n), rng.exponential(10, n), rng.integers(0, 3, n)]
                        ).astype(float)
    y = rng.poisson(np.exp(0.2 * X[:, 0] - 0.1 * np.abs(X[:, 1]) + 0.3 * X[:, 3]))
    X[rng.random(X.shape) < nan_share] = np.nan
    return X, y


def _rows(forest: CompiledForest, X: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wild = rng.normal(0, 50, size=(64, X.shape[1]))
    wild[rng.random(wild.shape) < 0.3] = np.nan
    return np.vstack([X, probe_rows(forest, 512, seed), wild, np.full((1, X.shape[1]), np.nan)])


@pytest.mark.parametrize("loss, nan_share, params", [
    ("poisson", 0.2, {"max_iter": 60}),
    ("poisson", 0.0, {"max_iter": 40, "max_depth": 3}),            # no NaN seen in fit: NaN goes to the bigger child
    ("squared_error", 0.3, {"max_iter": 80, "max_leaf_nodes": 63}),
    ("absolute_error", 0.1, {"max_iter": 20}),
    ("gamma", 0.1, {"max_iter": 30, "l2_regularization": 1.0}),
])
def test_compiled_forest_equals_predict_bit_for_bit(loss, nan_share, params):
    X, y = _data(seed=len(loss), nan_share=nan_share)
    booster = HistGradientBoostingRegressor(loss=loss, random_state=0, **params).fit(X, y + (loss == "gamma"))
    forest = compile_regressor(booster)
    assert forest is not None
    rows = _rows(forest, X, seed=1)
    expected = booster.predict(rows)
    for start in range(0, len(rows), forest.max_rows):  # batches the forest evaluates itself
        chunk = rows[start:start + forest.max_rows]
        assert np.array_equal(forest.predict(chunk), expected[start:start + forest.max_rows])
    for i in range(0, len(rows), 37):  # single rows: the serving case
        assert np.array_equal(forest.predict(rows[i:i + 1]), expected[i:i + 1])
    assert np.array_equal(forest.predict(rows), expected)  # over max_rows: delegated to the booster


def test_probe_rows_reach_every_leaf():
    X, y = _data(seed=7)
    booster = HistGradientBoostingRegressor(loss="poisson", max_iter=25, random_state=0).fit(X, y)
    forest = compile_regressor(booster)
    rows = probe_rows(forest, 4096)
    leaves = {(t, k) for t, per_iteration in enumerate(booster._predictors)
              for k in np.flatnonzero(per_iteration[0].nodes["is_leaf"])}
    reached = set()
    for t, per_iteration in enumerate(booster._predictors):
        nodes = per_iteration[0].nodes
        for x in rows:
            k = 0
            while not nodes["is_leaf"][k]:
                v = x[nodes["feature_idx"][k]]
                left = nodes["missing_go_to_left"][k] if np.isnan(v) else v <= nodes["num_threshold"][k]
                k = nodes["left"][k] if left else nodes["right"][k]
            reached.add((t, k))
    assert reached == leaves


def test_what_it_cannot_reproduce_is_not_compiled():
    X, y = _data(seed=3, nan_share=0.0)
    assert compile_regressor(HistGradientBoostingRegressor()) is None  # not fitted
    assert compile_regressor(HistGradientBoostingClassifier(max_iter=5).fit(X, y > 2)) is None
    categorical = HistGradientBoostingRegressor(max_iter=5, categorical_features=[3]).fit(X, y)
    assert compile_regressor(categorical) is None
    assert compile_regressor("passthrough") is None


def test_wrong_width_is_refused_with_the_shapes():
    X, y = _data(seed=5)
    forest = compile_regressor(HistGradientBoostingRegressor(max_iter=5).fit(X, y))
    with pytest.raises(ValueError, match=r"4 feature columns, got shape \(1, 3\)"):
        forest.predict(np.zeros((1, 3)))
