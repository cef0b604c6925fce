"""The model's maths against NumPy float64 oracles: predictions, TSSE and its gradient, the
least-squares optimum, metrics and the condition number."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrexp  # noqa: F401  (enables x64)
from lrexp.core import model


def _problem(seed: int, n: int = 40, m: int = 3):
    """Random X (n, m), y (n,), θ̃ (m+1,) in float64."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, m))
    y = rng.normal(size=n) * 3.0 + 1.0
    theta = rng.normal(size=m + 1)
    return X, y, theta


def _aug(X: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(X.shape[0]), X])


def _close(actual, expected, rtol: float) -> None:
    """allclose with an absolute floor relative to the largest expected entry."""
    expected = np.asarray(expected, dtype=np.float64)
    atol = rtol * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=atol)


def test_x64_is_enabled_by_importing_lrexp():
    assert jnp.asarray(1.0).dtype == jnp.float64


def test_augment_prepends_a_column_of_ones():
    X, _, _ = _problem(0)
    out = model.augment(jnp.asarray(X))
    assert out.shape == (X.shape[0], X.shape[1] + 1)
    assert out.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(out), _aug(X))


def test_augment_keeps_float32_dtype():
    X, _, _ = _problem(0)
    assert model.augment(jnp.asarray(X, jnp.float32)).dtype == jnp.float32


def test_predict_equals_augmented_design_times_theta():
    X, _, theta = _problem(1)
    pred = model.predict(jnp.asarray(theta), jnp.asarray(X))
    assert pred.shape == (X.shape[0],)
    _close(pred, _aug(X) @ theta, rtol=1e-12)


def test_tsse_equals_numpy_sum_of_squared_residuals():
    X, y, theta = _problem(2)
    expected = np.sum((y - _aug(X) @ theta) ** 2)
    value = model.tsse(jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y))
    assert value.shape == ()
    _close(value, expected, rtol=1e-12)


def test_masked_tsse_equals_tsse_over_the_masked_in_rows():
    X, y, theta = _problem(3)
    mask = np.random.default_rng(30).integers(0, 2, size=X.shape[0]).astype(np.float64)
    keep = mask == 1
    expected = np.sum((y[keep] - _aug(X[keep]) @ theta) ** 2)
    value = model.tsse(jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y), jnp.asarray(mask))
    _close(value, expected, rtol=1e-12)


def test_all_ones_mask_leaves_tsse_unchanged():
    X, y, theta = _problem(4)
    args = (jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y))
    _close(model.tsse(*args, jnp.ones(X.shape[0])), model.tsse(*args), rtol=1e-14)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_grad_of_tsse_equals_analytic_gradient(seed):
    X, y, theta = _problem(seed, n=50, m=4)
    Xt = _aug(X)
    analytic = 2.0 * Xt.T @ (Xt @ theta - y)
    grad = jax.grad(model.tsse)(jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y))
    assert grad.shape == theta.shape
    assert grad.dtype == jnp.float64
    _close(grad, analytic, rtol=1e-10)


def test_grad_of_masked_tsse_equals_analytic_masked_gradient():
    X, y, theta = _problem(8, n=50, m=4)
    mask = np.random.default_rng(80).integers(0, 2, size=X.shape[0]).astype(np.float64)
    Xt = _aug(X)
    # loss = Σ (m_i r_i)², so the gradient weights each residual by m_i² (= m_i for a 0/1 mask)
    analytic = 2.0 * Xt.T @ (mask**2 * (Xt @ theta - y))
    grad = jax.grad(model.tsse)(
        jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y), jnp.asarray(mask)
    )
    _close(grad, analytic, rtol=1e-10)
    # rows masked out do not contribute: same gradient as on the kept rows alone
    keep = mask == 1
    only_kept = 2.0 * Xt[keep].T @ (Xt[keep] @ theta - y[keep])
    _close(grad, only_kept, rtol=1e-10)


def test_tsse_and_grad_returns_tsse_and_its_gradient():
    X, y, theta = _problem(9)
    Xt = _aug(X)
    value, grad = model.tsse_and_grad(jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y))
    _close(value, np.sum((Xt @ theta - y) ** 2), rtol=1e-12)
    _close(grad, 2.0 * Xt.T @ (Xt @ theta - y), rtol=1e-10)


@pytest.mark.parametrize(
    ("dtype", "rtol"), [(jnp.float32, 1e-5), (jnp.float64, 1e-12)], ids=["f32", "f64"]
)
def test_jitted_tsse_and_grad_equals_eager(dtype, rtol):
    X, y, theta = _problem(10)
    mask = np.random.default_rng(100).integers(0, 2, size=X.shape[0])
    args = tuple(jnp.asarray(a, dtype) for a in (theta, X, y, mask))
    eager_v, eager_g = model.tsse_and_grad(*args)
    jit_v, jit_g = jax.jit(model.tsse_and_grad)(*args)
    assert jit_v.dtype == dtype and jit_g.dtype == dtype
    assert eager_v.dtype == dtype and eager_g.dtype == dtype
    _close(jit_v, eager_v, rtol=rtol)
    _close(jit_g, eager_g, rtol=rtol)


def test_float32_tsse_and_grad_is_close_to_float64_oracle():
    X, y, theta = _problem(11)
    Xt = _aug(X)
    args = tuple(jnp.asarray(a, jnp.float32) for a in (theta, X, y))
    value, grad = model.tsse_and_grad(*args)
    _close(value, np.sum((Xt @ theta - y) ** 2), rtol=1e-4)
    _close(grad, 2.0 * Xt.T @ (Xt @ theta - y), rtol=1e-4)


def test_least_squares_equals_numpy_lstsq_on_augmented_design():
    X, y, _ = _problem(12, n=60, m=4)
    expected, *_ = np.linalg.lstsq(_aug(X), y, rcond=None)
    theta = model.least_squares(jnp.asarray(X), jnp.asarray(y))
    assert theta.shape == (X.shape[1] + 1,)
    _close(theta, expected, rtol=1e-10)


def test_grad_of_tsse_vanishes_at_least_squares_optimum():
    X, y, _ = _problem(13, n=60, m=4)
    theta = model.least_squares(jnp.asarray(X), jnp.asarray(y))
    grad = jax.grad(model.tsse)(theta, jnp.asarray(X), jnp.asarray(y))
    # scale: the gradient at a generic point is of order ‖X̃‖²‖θ̃‖ + ‖X̃‖‖y‖
    Xt = _aug(X)
    scale = np.linalg.norm(Xt) * (np.linalg.norm(Xt) * np.linalg.norm(theta) + np.linalg.norm(y))
    assert np.max(np.abs(np.asarray(grad))) < 1e-10 * scale
    # and it is a minimum: any perturbation increases TSSE
    base = float(model.tsse(theta, jnp.asarray(X), jnp.asarray(y)))
    for d in np.random.default_rng(130).normal(size=(5, theta.shape[0])):
        moved = float(model.tsse(theta + 1e-3 * d, jnp.asarray(X), jnp.asarray(y)))
        assert moved > base


def test_least_squares_recovers_exact_parameters_without_noise():
    rng = np.random.default_rng(14)
    X = rng.normal(size=(30, 3))
    true = np.array([0.5, -2.0, 3.0, 1.25])
    y = _aug(X) @ true
    _close(model.least_squares(jnp.asarray(X), jnp.asarray(y)), true, rtol=1e-10)


def test_metrics_equal_numpy_computation():
    X, y, theta = _problem(15, n=45, m=3)
    resid = y - _aug(X) @ theta
    sse = np.sum(resid**2)
    mse = sse / y.shape[0]
    expected = {
        "tsse": sse,
        "mse": mse,
        "rmse": np.sqrt(mse),
        "r2": 1.0 - sse / np.sum((y - y.mean()) ** 2),
    }
    got = model.metrics(jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y))
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].shape == ()
        _close(got[k], v, rtol=1e-12)


def test_r2_is_one_for_perfect_fit_and_zero_for_mean_predictor():
    X, y, _ = _problem(16)
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    exact_y = _aug(X) @ np.array([1.0, 2.0, -1.0, 0.5])
    perfect = model.metrics(jnp.asarray([1.0, 2.0, -1.0, 0.5]), Xj, jnp.asarray(exact_y))
    assert abs(float(perfect["r2"]) - 1.0) < 1e-12
    assert abs(float(perfect["rmse"])) < 1e-12
    mean_theta = jnp.asarray([y.mean(), 0.0, 0.0, 0.0])
    assert abs(float(model.metrics(mean_theta, Xj, yj)["r2"])) < 1e-12


def test_r2_of_least_squares_fit_equals_numpy_and_lies_in_unit_interval():
    X, y, _ = _problem(17, n=80, m=3)
    theta_np, *_ = np.linalg.lstsq(_aug(X), y, rcond=None)
    resid = y - _aug(X) @ theta_np
    r2_np = 1.0 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2)
    theta = model.least_squares(jnp.asarray(X), jnp.asarray(y))
    r2 = float(model.metrics(theta, jnp.asarray(X), jnp.asarray(y))["r2"])
    assert 0.0 <= r2 <= 1.0
    _close(r2, r2_np, rtol=1e-10)


@pytest.mark.parametrize("collinearity", [0.0, 0.9, 0.999])
def test_condition_number_equals_numpy_cond_of_augmented_design(collinearity):
    rng = np.random.default_rng(18)
    z = rng.normal(size=(100, 1))
    X = np.sqrt(collinearity) * z + np.sqrt(1 - collinearity) * rng.normal(size=(100, 4))
    expected = np.linalg.cond(_aug(X))
    _close(model.condition_number(jnp.asarray(X)), expected, rtol=1e-9)


def test_condition_number_of_a_tall_design_needs_no_n_squared_memory():
    # An SVD of the 500k-row design itself asked LAPACK for n² floats (2 TB here) and failed
    rng = np.random.default_rng(20)
    X = rng.normal(size=(500_000, 3)) * np.array([1.0, 10.0, 100.0])
    expected = np.linalg.cond(_aug(X[::1000]))  # numpy's SVD is fine on a subsample
    cond = float(model.condition_number(jnp.asarray(X)))
    _close(cond, np.linalg.cond(np.linalg.qr(_aug(X), mode="r")), rtol=1e-9)
    assert 0.5 * expected < cond < 2 * expected


def test_condition_number_grows_with_collinearity():
    rng = np.random.default_rng(19)
    z = rng.normal(size=(200, 1))
    e = rng.normal(size=(200, 3))
    conds = [
        float(model.condition_number(jnp.asarray(np.sqrt(c) * z + np.sqrt(1 - c) * e)))
        for c in (0.0, 0.9, 0.99, 0.999)
    ]
    assert conds == sorted(conds)
    assert conds[-1] > 10 * conds[0]


def test_model_runs_without_implicit_rank_promotion():
    X, y, theta = _problem(20)
    mask = np.random.default_rng(200).integers(0, 2, size=X.shape[0]).astype(np.float64)
    Xj, yj, tj, mj = (jnp.asarray(a) for a in (X, y, theta, mask))
    Xt = _aug(X)
    with jax.numpy_rank_promotion("raise"):
        pred = model.predict(tj, Xj)
        value = model.tsse(tj, Xj, yj)
        masked_value, masked_grad = model.tsse_and_grad(tj, Xj, yj, mj)
        jit_value, _ = jax.jit(model.tsse_and_grad)(tj, Xj, yj, mj)
        ls = model.least_squares(Xj, yj)
        cond = model.condition_number(Xj)
        mets = model.metrics(tj, Xj, yj)
    assert pred.shape == (X.shape[0],)
    _close(pred, Xt @ theta, rtol=1e-12)
    _close(value, np.sum((Xt @ theta - y) ** 2), rtol=1e-12)
    _close(masked_value, np.sum((mask * (Xt @ theta - y)) ** 2), rtol=1e-12)
    _close(jit_value, masked_value, rtol=1e-12)
    _close(masked_grad, 2.0 * Xt.T @ (mask * (Xt @ theta - y)), rtol=1e-10)
    _close(ls, np.linalg.lstsq(Xt, y, rcond=None)[0], rtol=1e-10)
    _close(cond, np.linalg.cond(Xt), rtol=1e-9)
    assert all(v.shape == () for v in mets.values())


@pytest.mark.parametrize("fn", [model.tsse, model.tsse_and_grad, model.metrics])
def test_column_vector_target_is_rejected_instead_of_broadcasting(fn):
    # y of shape (n, 1) against ŷ of shape (n,) would broadcast the residual to (n, n)
    X, y, theta = _problem(21)
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        fn(jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y[:, None]))


def test_tsse_and_gradient_from_statistics_equal_the_rows_in_float64():
    rng = np.random.default_rng(7)
    X = rng.normal(3.0, 2.0, size=(5000, 6))  # off-centre: the statistics must not cancel badly
    y = 1.0 + X @ rng.normal(size=6) + rng.normal(size=5000)
    stats = model.sufficient_stats(jnp.asarray(X), jnp.asarray(y))
    rows = model.Rows(jnp.asarray(X), jnp.asarray(y))
    for theta in (
        np.zeros(7),
        rng.normal(size=7),
        np.linalg.lstsq(np.hstack([np.ones((5000, 1)), X]), y, rcond=None)[0],
    ):
        t = jnp.asarray(theta)
        v_rows, g_rows = jax.value_and_grad(model.loss)(t, rows)
        v_stats, g_stats = jax.value_and_grad(model.loss)(t, stats)
        assert float(v_stats) == pytest.approx(float(v_rows), rel=1e-9)
        np.testing.assert_allclose(
            np.asarray(g_stats),
            np.asarray(g_rows),
            rtol=1e-7,
            atol=1e-9 * float(jnp.abs(g_rows).max() + 1),
        )


def test_full_batch_fit_from_statistics_follows_the_rows_trajectory():
    from lrexp.core import fit

    rng = np.random.default_rng(8)
    X = rng.normal(size=(400, 5))
    y = 2.0 + X @ np.arange(1.0, 6.0) + 0.1 * rng.normal(size=400)
    results = {}
    for stats in (False, True):
        spec = fit.LoopSpec("adam", "constant", batch_size=None, epochs=60, chunk=20, stats=stats)
        hyper = fit.make_hyper(
            {"lr": 0.1, "b1": 0.9, "b2": 0.999, "eps": 1e-8}, {}, None, jnp.float64
        )
        results[stats] = fit.fit(
            X, y, X[:50], y[:50], spec=spec, hyper=hyper, key=jax.random.key(0), dtype=jnp.float64
        )
    np.testing.assert_allclose(
        results[True].history.theta, results[False].history.theta, rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(
        results[True].history.train_tsse, results[False].history.train_tsse, rtol=1e-9
    )


def test_columns_hold_x_transposed_for_single_and_stacked_data():
    X, y, _ = _problem(30, n=20, m=3)
    cols = model.columns(jnp.asarray(X), jnp.asarray(y))
    assert cols.XT.shape == (3, 20)
    np.testing.assert_array_equal(np.asarray(cols.XT), X.T)
    np.testing.assert_array_equal(np.asarray(cols.y), y)
    assert model.n_rows(cols) == 20
    stacked = model.columns(jnp.stack([X, 2 * X]), jnp.stack([y, y]))
    assert stacked.XT.shape == (2, 3, 20)
    np.testing.assert_array_equal(np.asarray(stacked.XT[1]), 2 * X.T)


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_loss_on_columns_and_its_grad_equal_the_analytic_tsse_and_gradient(seed):
    X, y, theta = _problem(seed, n=60, m=4)
    Xt = _aug(X)
    cols = model.columns(jnp.asarray(X), jnp.asarray(y))
    value, grad = jax.jit(jax.value_and_grad(model.loss))(jnp.asarray(theta), cols)
    assert value.dtype == grad.dtype == jnp.float64
    _close(value, np.sum((Xt @ theta - y) ** 2), rtol=1e-12)
    _close(grad, 2.0 * Xt.T @ (Xt @ theta - y), rtol=1e-10)
    # and eagerly, through plain jax.grad of the custom VJP
    _close(jax.grad(model.tsse_columns)(jnp.asarray(theta), cols.XT, cols.y), grad, rtol=1e-12)


def test_float32_loss_on_columns_matches_the_rows_and_the_float64_oracle():
    X, y, theta = _problem(34, n=5000, m=6)
    Xt = _aug(X)
    t, Xf, yf = (jnp.asarray(a, jnp.float32) for a in (theta, X, y))
    v_cols, g_cols = jax.value_and_grad(model.loss)(t, model.columns(Xf, yf))
    v_rows, g_rows = jax.value_and_grad(model.loss)(t, model.Rows(Xf, yf))
    assert v_cols.dtype == g_cols.dtype == jnp.float32
    _close(v_cols, np.sum((Xt @ theta - y) ** 2), rtol=1e-4)
    _close(g_cols, 2.0 * Xt.T @ (Xt @ theta - y), rtol=1e-4)
    _close(v_cols, v_rows, rtol=1e-5)
    _close(g_cols, g_rows, rtol=1e-5)


def test_grad_on_columns_under_vmap_equals_each_member_alone():
    # fit_batch vmaps the loop: members with their own θ̃ on shared or on stacked data
    X, y, _ = _problem(35, n=30, m=3)
    thetas = np.random.default_rng(350).normal(size=(4, 4))
    Xs, ys = np.stack([X, X + 1.0]), np.stack([y, -y])
    grad = jax.grad(model.loss)
    shared = jax.vmap(grad, in_axes=(0, None))(jnp.asarray(thetas), model.columns(X, y))
    stacked = jax.vmap(grad)(jnp.asarray(thetas[:2]), model.columns(Xs, ys))
    for b, theta in enumerate(thetas):
        _close(shared[b], 2.0 * _aug(X).T @ (_aug(X) @ theta - y), rtol=1e-10)
    for b in range(2):
        Xt = _aug(Xs[b])
        _close(stacked[b], 2.0 * Xt.T @ (Xt @ thetas[b] - ys[b]), rtol=1e-10)


def test_column_vector_target_is_rejected_on_columns_too():
    X, y, theta = _problem(36)
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        model.loss(jnp.asarray(theta), model.columns(jnp.asarray(X), jnp.asarray(y[:, None])))


def test_loss_on_columns_runs_without_implicit_rank_promotion():
    X, y, theta = _problem(37)
    with jax.numpy_rank_promotion("raise"):
        value, grad = jax.jit(jax.value_and_grad(model.loss))(
            jnp.asarray(theta), model.columns(jnp.asarray(X), jnp.asarray(y))
        )
    _close(value, np.sum((_aug(X) @ theta - y) ** 2), rtol=1e-12)
    _close(grad, 2.0 * _aug(X).T @ (_aug(X) @ theta - y), rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_gradient_from_block_moments_is_the_analytic_gradient(seed):
    X, y, theta = _problem(seed, n=40, m=3)
    rows = np.column_stack([np.ones(40), X, y])
    Z = np.vstack([rows, np.zeros((8, 5))]).reshape(6, 8, 5).transpose(0, 2, 1)
    S = model.block_moments(jnp.asarray(Z))
    assert S.shape == (6, 4, 5) and S.dtype == jnp.float64
    np.testing.assert_allclose(S[-1], 0.0)  # a block of zero rows has zero moments
    for pick in ([0, 1, 2, 3, 4, 5], [4, 1], [2]):  # a batch: any set of blocks
        rows = np.concatenate([np.arange(8 * k, min(8 * k + 8, 40)) for k in pick])
        A, b = _aug(X)[rows], y[rows]
        grad = model.tsse_grad_moments(jnp.asarray(theta), jnp.sum(S[jnp.asarray(pick)], axis=0))
        _close(grad, 2 * A.T @ (A @ theta - b), rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_tsse_of_blocks_and_its_grad_equal_the_analytic_tsse_and_gradient(seed):
    X, y, theta = _problem(seed, n=40, m=3)
    rows = np.column_stack([np.ones(40), X, y])  # z_i = [1, x_i, y_i]
    padded = np.vstack([rows, np.zeros((8, 5))])  # two blocks' worth of zero rows add nothing
    Z = padded.reshape(6, 8, 5).transpose(0, 2, 1)  # 6 blocks of 8 rows, feature-major
    r = _aug(X) @ theta - y
    value, grad = jax.jit(jax.value_and_grad(model.tsse_blocks))(jnp.asarray(theta), jnp.asarray(Z))
    np.testing.assert_allclose(value, r @ r, rtol=1e-12)
    np.testing.assert_allclose(grad, 2 * _aug(X).T @ r, rtol=1e-12)
