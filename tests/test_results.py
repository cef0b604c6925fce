"""Host-side scoring in results.py agrees with the JAX model's own metrics."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from lrexp.core import model, results


@pytest.mark.parametrize("n", [7, 360, 5000])
def test_scores_equal_model_metrics_in_float64(n):
    rng = np.random.default_rng(n)
    X = rng.normal(scale=3.0, size=(n, 4))
    y = 1.5 + X @ np.array([2.0, -1.0, 0.5, 3.0]) + rng.normal(size=n)
    theta = np.array([1.4, 2.1, -0.9, 0.4, 3.2])
    ours = results._scores(theta, X, y)
    oracle = model.metrics(jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y))
    assert set(ours) == set(oracle) == {"tsse", "mse", "rmse", "r2"}
    for key, value in oracle.items():
        assert ours[key] == pytest.approx(float(value), rel=1e-12), key


@pytest.mark.parametrize("y", [[4.0], [2.5, 2.5, 2.5]])
def test_r2_with_a_zero_denominator_is_undefined_not_a_crash(y):
    """One test row, or a constant target: Σ(y − ȳ)² = 0, so R² is None (shown as —)."""
    X = np.arange(len(y), dtype=np.float64)[:, None]
    with np.errstate(all="raise"):  # no division by zero behind the None either
        scores = results._scores(np.array([1.0, 0.5]), X, np.asarray(y))
    assert scores["r2"] is None
    assert scores["mse"] == pytest.approx(np.mean((np.asarray(y) - 1.0 - 0.5 * X[:, 0]) ** 2))
