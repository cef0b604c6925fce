"""Training that does not depend on the data's units or size, and statistics that can be undefined.

- ``train.reduction=mean``: a step descends TSSE / b (b the rows actually in the batch), so its
  gradient is the sum's over b, whatever the layout (rows, blocks, block moments, statistics);
- ``data.standardize_target``: training on (y − ȳ) / σ_y, with θ, the curves and the metrics
  back in y's units, so that rescaling y rescales θ and changes nothing else;
- divergence advice from the optimizer's own bound, or from the data overflowing the dtype;
- L-BFGS runs until it converges; R² undefined where the targets do not vary.

Oracles are NumPy (gradients of the mean squared error, least squares) and exact identities.
"""

from __future__ import annotations

import contextlib
import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import typed_config

from lrexp import pipeline
from lrexp.config import ConfigError
from lrexp.core import chunk, data, diagnostics, fit, layouts, results, shuffle, step

N, M = 203, 4  # 203 rows in batches of 16: a short last batch of 11


def _rows(seed: int = 0, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, M))
    return X, 1.0 + X @ np.array([2.0, -1.0, 0.5, 3.0]) + rng.normal(size=n)


def _loop(X, y, spec: fit.LoopSpec, key) -> step.Loop:
    train, _ = layouts.training_data(X, y, X, y, spec=spec, dtype=jnp.float64, key=key)
    return step.Loop(spec, None, train, key, chunk._n_static(train, spec))


# --- the mean reduction --------------------------------------------------------------------------
@pytest.mark.parametrize("block", [1, 4, 16])  # rows; blocks; block moments (2(M+1) <= 16)
def test_mean_batch_gradient_is_the_sum_over_the_rows_actually_in_the_batch(block):
    X, y = _rows()
    key = jax.random.key(3)
    mean = fit.LoopSpec("sgd", "constant", batch_size=16, block=block, reduction="mean")
    total = fit.LoopSpec("sgd", "constant", batch_size=16, block=block, reduction="sum")
    theta = jnp.asarray([0.3, -0.2, 0.1, 0.4, -0.5])
    order = shuffle.shuffle_key(jax.random.fold_in(key, 0))
    spe = mean.steps_per_epoch(N)
    rows, summed = [], np.zeros(M + 1)
    for b in range(spe):
        g_mean = np.asarray(step.batch_gradient(theta, order, b, _loop(X, y, mean, key)))
        g_sum = np.asarray(step.batch_gradient(theta, order, b, _loop(X, y, total, key)))
        count = np.linalg.norm(g_sum) / np.linalg.norm(g_mean)
        np.testing.assert_allclose(g_sum, count * g_mean, rtol=1e-10)
        rows.append(count)
        summed += g_sum
    assert np.allclose(rows, np.round(rows)) and min(rows) >= 1 and max(rows) <= 16
    assert sum(rows) == pytest.approx(N)  # the batches partition the rows
    if block == 1:  # full batches of 16, then the short last one averaged over its own 11 rows
        assert rows == pytest.approx([16] * (spe - 1) + [N - 16 * (spe - 1)])
    A = np.column_stack([np.ones(N), X])  # NumPy oracle: the full TSSE gradient
    np.testing.assert_allclose(summed, 2 * A.T @ (A @ np.asarray(theta) - y), rtol=1e-9)


def test_batch_mean_gradient_matches_numpy_on_the_batch_rows():
    X, y = _rows(1)
    key = jax.random.key(5)
    spec = fit.LoopSpec("sgd", "constant", batch_size=16, reduction="mean")
    order = shuffle.shuffle_key(jax.random.fold_in(key, 0))
    theta = np.array([0.5, 1.0, -1.0, 0.0, 2.0])
    for b in (0, spec.steps_per_epoch(N) - 1):  # a full batch and the short last one
        idx, mask = (np.asarray(a) for a in shuffle.batch_rows(order, N, 16, b))
        A = np.column_stack([np.ones(N), X])[idx[mask]]
        oracle = 2 / mask.sum() * A.T @ (A @ theta - y[idx[mask]])  # ∇ of the batch's MSE
        ours = step.batch_gradient(jnp.asarray(theta), order, b, _loop(X, y, spec, key))
        np.testing.assert_allclose(np.asarray(ours), oracle, rtol=1e-10)


@pytest.mark.parametrize("stats", [True, False])
@pytest.mark.parametrize("optimizer", ["sgd", "lbfgs"])
def test_full_batch_mean_with_lr_is_sum_with_lr_over_n(optimizer, stats):
    """lr_sum = lr_mean / n for plain GD; L-BFGS, which searches its step, takes the same steps."""
    X, y = _rows(2)
    static = (("memory_size", 5),) if optimizer == "lbfgs" else ()
    lr = 1.0 if optimizer == "lbfgs" else 0.3

    def run(reduction: str, lr: float):
        spec = fit.LoopSpec(optimizer, "constant", static, epochs=6, chunk=6, stats=stats,
                            reduction=reduction)  # fmt: skip
        hyper = fit.make_hyper({"lr": lr}, {}, None, jnp.float64)
        return fit.fit(X, y, X, y, spec=spec, hyper=hyper, key=jax.random.key(0),
                       dtype=jnp.float64)  # fmt: skip

    mean = run("mean", lr)
    total = run("sum", lr if optimizer == "lbfgs" else lr / N)
    np.testing.assert_allclose(mean.history.theta, total.history.theta, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(mean.history.train_tsse, total.history.train_tsse, rtol=1e-9)


@pytest.mark.parametrize("batch_size", [None, 8, 64])
def test_mean_stable_lr_is_n_over_lambda_max_at_any_batch_size(batch_size):
    X, _ = _rows(3)
    A = np.column_stack([np.ones(N), X])
    lam = np.linalg.eigvalsh(A.T @ A).max()
    knobs = {"lr": 0.1}
    mean = diagnostics.check(X, batch_size=batch_size, optimizer="sgd", knobs=knobs,
                             dtype="float64", reduction="mean")  # fmt: skip
    total = diagnostics.check(X, batch_size=batch_size, optimizer="sgd", knobs=knobs,
                              dtype="float64", reduction="sum")  # fmt: skip
    assert mean.stable_lr == pytest.approx(N / lam, rel=1e-9)
    assert total.stable_lr == pytest.approx(mean.stable_lr / (batch_size or N), rel=1e-12)


@pytest.mark.parametrize("factor, diverges", [(0.95, False), (1.2, True)])
def test_full_batch_gd_on_the_mean_diverges_just_past_its_bound(factor, diverges):
    X, y = _rows(4)
    bound = diagnostics.check(X, batch_size=None, optimizer="sgd", knobs={"lr": 1.0},
                              dtype="float64", reduction="mean").stable_lr  # fmt: skip
    spec = fit.LoopSpec("sgd", "constant", epochs=3000, chunk=3000, stats=True, reduction="mean")
    hyper = fit.make_hyper({"lr": factor * bound}, {}, None, jnp.float64)
    result = fit.fit(X, y, X, y, spec=spec, hyper=hyper, key=jax.random.key(0), dtype=jnp.float64)
    assert (result.diverged_step is not None) == diverges


# --- the target's scale --------------------------------------------------------------------------
def test_target_standardizer_maps_theta_back_to_the_targets_units():
    X, y = _rows(5)
    y = 7e4 + 300.0 * y
    st = data.Standardizer.fit(X, tuple("abcd")).with_target(y, key="data.target", value="y")
    assert (st.y_mean, st.y_scale) == pytest.approx((y.mean(), y.std()), rel=1e-12)
    theta_std = np.array([0.2, 0.5, -0.1, 0.3, 0.9])
    pred_std = theta_std[0] + st.apply(X) @ theta_std[1:]
    theta = st.to_original(theta_std)
    np.testing.assert_allclose(theta[0] + X @ theta[1:], st.y_mean + st.y_scale * pred_std,
                               rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(st.to_standardized(theta), theta_std, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.apply_target(y), (y - y.mean()) / y.std(), atol=1e-12)


def test_a_huge_target_still_has_finite_statistics():
    y = np.array([1.0, 2.0, 4.0]) * 1e200  # its squares overflow float64
    st = data.Standardizer(np.zeros(1), np.ones(1)).with_target(y, key="data.target", value="y")
    assert st.y_scale == pytest.approx(np.std(y / 1e200) * 1e200, rel=1e-12)


def test_a_constant_target_is_refused_naming_the_key():
    st = data.Standardizer(np.zeros(1), np.ones(1))
    with pytest.raises(data.DataError) as info:
        st.with_target(np.full(9, 5.0), key="data.target", value="price")
    assert info.value.key == "data.target" and "constant" in info.value.allowed
    assert st.with_target(np.full(9, 5.0), key="data.target", value="p", enabled=False) is st


def _csv(tmp_path, name: str, X: np.ndarray, y: np.ndarray):
    path = tmp_path / f"{name}.csv"
    lines = ["a,b,c,d,y"] + [
        ",".join(f"{v:.17g}" for v in [*x, t]) for x, t in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(*overrides: str, base_dir="."):
    cfg = typed_config(*overrides, "tracking.enabled=false")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        outcome = pipeline.run(cfg, base_dir=base_dir)
    return outcome, out.getvalue()


def test_rescaling_the_target_rescales_theta_and_changes_nothing_else(tmp_path):
    """The same run on y and on c·y + d: θ and θ* scale (bias: c·b + d), MSEs scale by c², R² and
    the steps taken are the same; train.tol, in the target's units², scales with it."""
    X, y = _rows(6, n=120)
    c, d = 2500.0, 6e4
    runs = [
        _run("data=csv", f"data.path={_csv(tmp_path, name, X, yy)}", "data.target=y",
             f"train.tol={tol}", "train.dtype=float64", base_dir=tmp_path)[0]
        for name, yy, tol in (("small", y, 1e-4), ("large", c * y + d, 1e-4 * c**2))
    ]  # fmt: skip
    small, large = runs
    scale = np.array([c, *[c] * M])
    np.testing.assert_allclose(large.theta, small.theta * scale + [d, *[0] * M], rtol=1e-9)
    np.testing.assert_allclose(large.theta_star, small.theta_star * scale + [d, *[0] * M],
                               rtol=1e-9)  # fmt: skip
    for key in ("final_train_mse", "final_test_mse", "min_train_mse", "optimal_train_mse"):
        assert large.summary[key] == pytest.approx(c**2 * small.summary[key], rel=1e-9), key
    for key in ("final_train_r2", "final_test_r2", "epochs_run", "steps_run", "epochs_to_tol"):
        assert large.summary[key] == pytest.approx(small.summary[key], rel=1e-9), key
    assert small.summary["epochs_to_tol"] is not None  # the tolerance was what stopped them
    # the curves are in y's units: the last train MSE is the reported one
    curves = results.curves(large.folds, large.names)
    assert curves["train_mse"][-1] == pytest.approx(large.summary["final_train_mse"], rel=1e-9)


# --- L-BFGS runs until it converges --------------------------------------------------------------
def test_lbfgs_stops_once_converged_within_its_steps():
    outcome, _ = _run("optimizer=lbfgs", "data=collinear", "train.epochs=400")
    f = outcome.folds[0]
    assert f.fit.stop_epoch is not None and f.fit.steps < 400  # converged, then stopped
    assert f.train["mse"] == pytest.approx(f.optimum["mse"], rel=1e-4)


def test_train_steps_caps_lbfgs_whatever_the_batch_size_but_not_sgd():
    outcome, _ = _run("optimizer=lbfgs", "train.steps=3", "train.batch_size=10")
    assert outcome.folds[0].fit.steps <= 3
    with pytest.raises(ConfigError) as info:
        _run("optimizer=sgd", "train.steps=3", "train.batch_size=10")
    assert info.value.key == "train.steps"


# --- what a diverged run is told ------------------------------------------------------------------
def test_a_diverged_momentum_run_is_told_the_momentum_bound():
    overrides = ("optimizer=momentum", "optimizer.lr=0.05", "train.reduction=sum")
    p = pipeline.prepare(typed_config(*overrides, "train.batch_size=null",
                                      "tracking.enabled=false"))  # fmt: skip
    bound = p.checks.stable_lr * 1.9  # heavy ball: (1 + β) × plain GD's
    with pytest.raises(pipeline.Diverged) as info:
        _run(*overrides, "train.batch_size=null")
    message = str(info.value)
    assert f"{bound:.3g}" in message and "optimizer=momentum" in message
    assert f"{p.checks.stable_lr:.3g}" not in message


def test_data_that_overflows_float32_is_told_so_not_to_lower_the_lr():
    with pytest.raises(pipeline.Diverged) as info:
        _run("data.bias=1e20", "data.standardize_target=false", "train.epochs=3")
    message = str(info.value)
    assert "overflows float32" in message and "train.dtype=float64" in message
    assert "lower optimizer.lr" not in message


def test_a_full_batch_of_many_rows_no_longer_diverges():
    """The mean's stable lr does not shrink with n: 200,000 rows in one batch at the defaults
    train; the same run stepping on the sum diverges."""
    big = ("data.n=200000", "train.batch_size=null")
    outcome, _ = _run(*big)
    assert outcome.folds[0].fit.diverged_step is None
    assert outcome.summary["final_train_r2"] > 0.99
    with pytest.raises(pipeline.Diverged):
        _run(*big, "train.reduction=sum")


# --- degenerate statistics -----------------------------------------------------------------------
def test_r2_of_one_row_or_a_constant_target_is_undefined():
    X = np.array([[1.0], [2.0], [3.0]])
    theta = np.array([0.5, 1.0])
    assert results._scores(theta, X[:1], np.array([4.0]))["r2"] is None
    assert results._scores(theta, X, np.full(3, 4.0))["r2"] is None
    assert results._scores(theta, X, np.array([1.0, 2.0, 4.0]))["r2"] is not None


def test_a_one_row_test_set_finishes_with_test_r2_undefined(tmp_path):
    X, y = _rows(7, n=16)
    path = _csv(tmp_path, "tiny", X, y)
    outcome, text = _run("data=csv", f"data.path={path}", "data.target=y",
                         "train.test_fraction=0.0001", base_dir=tmp_path)  # fmt: skip
    assert outcome.folds[0].n_test == 1
    assert outcome.summary["final_test_r2"] is None
    assert math.isfinite(outcome.summary["final_train_r2"])
    assert "test R² —" in text


def test_leave_one_out_folds_finish_with_test_r2_undefined():
    outcome, _ = _run("data.n=8", "train.folds=8", "train.batch_size=null")
    assert len(outcome.folds) == 8
    assert outcome.summary["final_test_r2"] is None
    assert all(f"fold_{i}/final_test_r2" in outcome.summary for i in range(1, 9))


@pytest.mark.parametrize(
    "overrides, key",
    [(("data.bias=1e20",), "data.bias"), (("data.noise=0", "data.weights=[0,0]"), "data.weights")],
)
def test_a_target_constant_in_float64_is_refused_before_any_run(overrides, key):
    with pytest.raises(data.DataError) as info:
        pipeline.prepare(typed_config(*overrides, "tracking.enabled=false"))
    assert info.value.key == key


def test_a_constant_csv_target_is_refused_unless_left_unstandardized(tmp_path):
    X, _ = _rows(8, n=30)
    path = _csv(tmp_path, "flat", X, np.full(30, 5.0))
    base = ("data=csv", f"data.path={path}", "data.target=y")
    with pytest.raises(data.DataError) as info:
        pipeline.prepare(typed_config(*base, "tracking.enabled=false"), tmp_path)
    assert info.value.key == "data.target"
    outcome, _ = _run(*base, "data.standardize_target=false", base_dir=tmp_path)
    assert outcome.summary["final_train_r2"] is None and outcome.summary["final_test_r2"] is None
