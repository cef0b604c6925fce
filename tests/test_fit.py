"""The training loop against independent oracles: numpy's least squares and Optax's schedules."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import typed_config

from lrexp import pipeline
from lrexp.core import data, fit, optim

N, N_TRAIN = 400, 320
WEIGHTS = [2.0, -1.5, 3.0, -0.5, 0.3]


@pytest.fixture(scope="module")
def split():
    """Well-conditioned standardized data: (X̃ train, y train, X̃ test, y test, θ̃* by lstsq)."""
    ds = data.make_linear(jax.random.key(0), n=N, bias=3.0, weights=WEIGHTS, noise=0.1)
    st = data.Standardizer.fit(ds.X[:N_TRAIN], ds.feature_names)
    X, X_test = st.apply(ds.X[:N_TRAIN]), st.apply(ds.X[N_TRAIN:])
    y, y_test = ds.y[:N_TRAIN], ds.y[N_TRAIN:]
    design = np.column_stack([np.ones(N_TRAIN), X])
    theta_star, *_ = np.linalg.lstsq(design, y, rcond=None)
    return X, y, X_test, y_test, theta_star


def run_fit(split, spec, opt_floats, sched_floats=None, tol=None, dtype=jnp.float64, seed=0):
    X, y, X_test, y_test, _ = split
    hyper = fit.make_hyper(opt_floats, sched_floats or {}, tol, dtype)
    return fit.fit(
        X, y, X_test, y_test, spec=spec, hyper=hyper, key=jax.random.key(seed), dtype=dtype
    )


ADAM = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}
LION = {"b1": 0.9, "b2": 0.99, "weight_decay": 0.0}
CONSTANT = ("constant", {}, ())
# Decaying the rate to 0 removes the steady-state jitter of sign-based (Adam/RMSProp) and
# stochastic steps, so they settle on the optimum instead of hovering around it.
COSINE = ("cosine", {"alpha": 0.0}, (("decay_steps", None),))

# (optimizer, float knobs, static knobs, schedule, batch_size, epochs, relative tolerance).
# TSSE is a sum, so its Hessian is 2X̃ᵀX̃ with eigenvalues ≈ 2·N_TRAIN on standardized data:
# full-batch GD needs lr < 1/λmax(X̃ᵀX̃) ≈ 1/N_TRAIN; lr = 1/(2·N_TRAIN) contracts the error by
# ≤ 0.25 per step. Deterministic full-batch runs must hit lstsq to 1e-6 (float64); mini-batch
# runs keep gradient noise from the residuals (noise 0.1), annealed by the cosine decay: 1e-3.
CASES = [
    ("sgd", {"lr": 1 / (2 * N_TRAIN)}, (), CONSTANT, None, 60, 1e-6),
    ("momentum", {"lr": 1 / (4 * N_TRAIN), "momentum": 0.5}, (), CONSTANT, None, 100, 1e-6),
    ("nesterov", {"lr": 1 / (4 * N_TRAIN), "momentum": 0.5}, (), CONSTANT, None, 100, 1e-6),
    ("adam", {"lr": 0.1, **ADAM}, (), COSINE, None, 1000, 1e-6),
    # weight decay moves the fixed point off the least-squares optimum: off for this check
    ("adamw", {"lr": 0.1, **ADAM, "weight_decay": 0.0}, (), COSINE, None, 1000, 1e-6),
    (
        "rmsprop",
        {"lr": 0.05, "decay": 0.9, "eps": 1e-8, "momentum": 0.0},
        (("centered", False),),
        COSINE,
        None,
        1000,
        1e-6,
    ),
    (
        "adagrad",
        {"lr": 0.5, "initial_accumulator_value": 0.1, "eps": 1e-7},
        (),
        CONSTANT,
        None,
        1000,
        1e-6,
    ),
    # sign steps of ±lr_t per coordinate: the cosine decay lets them settle on the optimum
    ("lion", {"lr": 0.01, **LION}, (), COSINE, None, 2000, 1e-6),
    ("lbfgs", {"lr": 1.0}, (("memory_size", 10),), CONSTANT, None, 20, 1e-6),
    ("sgd", {"lr": 0.005}, (), COSINE, 10, 60, 1e-3),
    ("momentum", {"lr": 0.002, "momentum": 0.9}, (), COSINE, 20, 60, 1e-3),
    ("adam", {"lr": 0.05, **ADAM}, (), COSINE, 20, 100, 1e-3),
]


def test_the_table_covers_every_registered_optimizer():
    assert {case[0] for case in CASES} == set(optim.OPTIMIZERS)


@pytest.mark.parametrize(
    "name, floats, static, schedule, batch_size, epochs, rtol",
    CASES,
    ids=[f"{c[0]}-{'full' if c[4] is None else f'batch{c[4]}'}" for c in CASES],
)
def test_every_optimizer_reaches_least_squares_optimum(
    split, name, floats, static, schedule, batch_size, epochs, rtol
):
    sched_name, sched_floats, sched_static = schedule
    spec = fit.LoopSpec(name, sched_name, static, sched_static, batch_size, epochs, epochs)
    result = run_fit(split, spec, floats, sched_floats)
    theta_star = split[-1]
    assert result.theta.dtype == np.float64
    assert result.epochs_run == epochs
    err = np.linalg.norm(result.theta - theta_star) / np.linalg.norm(theta_star)
    assert err < rtol, f"{name}: relative distance to lstsq {err:.3g}"


# --- the tutorial protocol through the whole pipeline -------------------------------------------
@pytest.fixture(scope="module")
def tutorial():
    return pipeline.run(typed_config("experiment=tutorial", "tracking.enabled=false"))


def test_tutorial_protocol_has_six_folds_of_60_test_and_300_train_rows(tutorial):
    assert len(tutorial.folds) == 6
    assert [(f.n_train, f.n_test) for f in tutorial.folds] == [(300, 60)] * 6


def test_momentum_sgd_reaches_each_folds_optimum_on_tutorial_protocol(tutorial):
    for i, f in enumerate(tutorial.folds, start=1):
        gap = np.abs(f.theta - f.theta_star).max()
        assert gap < 0.3, (
            f"fold {i}: max |θ − θ*| = {gap:.3f} after {f.fit.epochs_run} epochs "
            f"(stop_epoch={f.fit.stop_epoch}, train MSE {f.fit.history.train_mse.tolist()})"
        )


def test_tutorial_cv_test_mse_is_close_to_the_least_squares_optimum(tutorial):
    ds = tutorial.dataset
    design = np.column_stack([np.ones(len(ds.y)), ds.X])
    theta_star, *_ = np.linalg.lstsq(design, ds.y, rcond=None)
    mse_star = np.mean((design @ theta_star - ds.y) ** 2)  # ≈ noise² = 0.01
    cv = tutorial.summary["cv_test_mse_mean"]
    # constant-rate momentum SGD on batches of 10 hovers at a noise floor of a few times σ²
    # (the starting MSE is ≈ 27): within 5× the optimum's MSE is "converged" for this protocol
    assert mse_star <= cv < 5 * mse_star, (cv, mse_star)


# --- schedules equal Optax's own -----------------------------------------------------------------
STEPS = jnp.asarray([0, 1, 5, 19, 20, 21, 37, 50, 99, 100, 101, 150, 199, 200, 250], jnp.int32)
LR, TOTAL = 0.3, 200


def schedule_values(name, floats, static, total=TOTAL):
    floats = {k: jnp.asarray(v, jnp.float64) for k, v in floats.items()}
    sched = optim.make_schedule(name, jnp.asarray(LR, jnp.float64), floats, static, total)
    return np.asarray([sched(t) for t in STEPS])


def f64(value):
    """Optax's schedules compute in their arguments' dtype: compare both in float64."""
    return jnp.asarray(value, jnp.float64)


def optax_values(schedule):
    return np.asarray([schedule(t) for t in STEPS])


def test_constant_schedule_is_optax_constant():
    np.testing.assert_allclose(
        schedule_values("constant", {}, {}),
        optax_values(optax.constant_schedule(f64(LR))),
        rtol=1e-12,
    )


# Optax forms the step fraction t/T in float32 from the int32 step count; lrexp forms it in the
# learning rate's dtype (see the float64 test below). Against Optax, allow float32 rounding of t/T.
FRACTION_TOL = {"rtol": 1e-6, "atol": 1e-7 * LR}


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize("transition_steps", [1, 7, 100])
def test_exponential_schedule_is_optax_exponential_decay(staircase, transition_steps):
    ours = schedule_values(
        "exponential",
        {"decay_rate": 0.5},
        {"transition_steps": transition_steps, "staircase": staircase},
    )
    ref = optax.exponential_decay(f64(LR), transition_steps, f64(0.5), staircase=staircase)
    np.testing.assert_allclose(ours, optax_values(ref), **FRACTION_TOL)
    steps = np.asarray(STEPS, dtype=np.float64)
    p = steps / transition_steps
    exact = LR * 0.5 ** (np.floor(p) if staircase else p)  # the equation, in float64
    np.testing.assert_allclose(ours, exact, rtol=1e-12)


@pytest.mark.parametrize("decay_steps", [None, 50])
@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_cosine_schedule_is_optax_cosine_decay(decay_steps, alpha):
    ours = schedule_values("cosine", {"alpha": alpha}, {"decay_steps": decay_steps})
    ref = optax.cosine_decay_schedule(f64(LR), decay_steps or TOTAL, f64(alpha))
    np.testing.assert_allclose(ours, optax_values(ref), **FRACTION_TOL)


@pytest.mark.parametrize("warmup_steps", [1, 20])
@pytest.mark.parametrize("decay_steps", [None, 120])
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_warmup_cosine_schedule_is_optax_warmup_cosine_decay(warmup_steps, decay_steps, alpha):
    ours = schedule_values(
        "warmup_cosine",
        {"alpha": alpha},
        {"warmup_steps": warmup_steps, "decay_steps": decay_steps},
    )
    ref = optax.warmup_cosine_decay_schedule(
        init_value=f64(0.0),
        peak_value=f64(LR),
        warmup_steps=warmup_steps,
        decay_steps=decay_steps or TOTAL,
        end_value=f64(alpha * LR),
    )
    np.testing.assert_allclose(ours, optax_values(ref), **FRACTION_TOL)


@pytest.mark.parametrize("name", ["cosine", "warmup_cosine"])
def test_cosine_schedules_are_float64_accurate_when_lr_is_float64(name):
    # Training in float64 should see the rate Optax computes in float64 (Optax turns the integer
    # decay_steps into a Python float, so t/T is a float64 division).
    ours = schedule_values(name, {"alpha": 0.0}, {"decay_steps": None, "warmup_steps": 0})
    ref = optax.cosine_decay_schedule(f64(LR), TOTAL, f64(0.0))
    np.testing.assert_allclose(ours, optax_values(ref), rtol=1e-12, atol=1e-15)


# --- one compiled program per loop structure -----------------------------------------------------
def test_new_float_hyperparameters_reuse_the_compiled_chunk(split):
    spec = fit.LoopSpec(
        "momentum", "exponential", (), (("staircase", False), ("transition_steps", 13)), 16, 3, 3
    )
    first = run_fit(split, spec, {"lr": 1e-3, "momentum": 0.9}, {"decay_rate": 0.5})
    compiled = fit.run_chunk._cache_size()
    second = run_fit(split, spec, {"lr": 5e-4, "momentum": 0.5}, {"decay_rate": 0.9}, tol=1e-4)
    assert fit.run_chunk._cache_size() == compiled
    assert not np.allclose(first.theta, second.theta)  # the new values did take effect

    other = fit.LoopSpec(
        "momentum", "exponential", (), (("staircase", True), ("transition_steps", 13)), 16, 3, 3
    )
    run_fit(split, other, {"lr": 1e-3, "momentum": 0.9}, {"decay_rate": 0.5})
    assert fit.run_chunk._cache_size() == compiled + 1


# --- early stopping ------------------------------------------------------------------------------
def documented_stop(train_mse: np.ndarray, tol: float) -> int | None:
    """README: stop once the train MSE changes by less than tol (a plateau); a rise never stops.

    Epoch k compares rows k-1 and k of the history; returns the first such k, or None.
    """
    drop = train_mse[:-1] - train_mse[1:]
    hits = np.flatnonzero((drop >= 0) & (drop < tol))
    return int(hits[0]) + 1 if hits.size else None


# (optimizer, float knobs, tol): plain GD descends monotonically; heavy-ball momentum on the full
# batch oscillates, so its MSE also rises by less than tol (epoch 32) before it plateaus.
STOP_CASES = {
    "monotone": ("sgd", {"lr": 1e-4}, 1e-3),
    "oscillating": ("momentum", {"lr": 5e-4, "momentum": 0.9}, 0.05),
}


@pytest.mark.parametrize(
    "case, chunk", [("monotone", 1), ("monotone", 7), ("monotone", 200), ("oscillating", 7)]
)
def test_fit_stops_at_first_epoch_whose_mse_plateaus_below_tol(split, case, chunk):
    name, floats, tol = STOP_CASES[case]
    epochs = 200
    spec = fit.LoopSpec(name, "constant", (), (), None, epochs, chunk)
    # the same program without a tolerance runs every epoch: the oracle's full trajectory
    free = run_fit(split, spec, floats).history.train_mse
    expected = documented_stop(free, tol)
    assert expected is not None and expected < epochs
    if case == "oscillating":  # the scenario does contain a small rise before the plateau
        rise = free[1:expected] - free[: expected - 1]
        assert np.any((rise > 0) & (rise < tol))

    result = run_fit(split, spec, floats, tol=tol)
    assert result.stop_epoch == expected
    assert result.epochs_run == expected
    assert result.steps == expected  # full batch: one step per epoch
    # not padded: rows 0..stop only, and they are the tolerance-free run's rows
    assert all(len(a) == expected + 1 for a in result.history)
    np.testing.assert_array_equal(result.history.train_mse, free[: expected + 1])


def test_fit_without_tol_runs_every_epoch(split):
    spec = fit.LoopSpec("sgd", "constant", (), (), None, 30, 7)
    result = run_fit(split, spec, {"lr": 1e-4})
    assert result.epochs_run == 30 and result.stop_epoch is None
    assert len(result.history.train_mse) == 31


# --- dtypes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("schedule", ["constant", "exponential", "cosine", "warmup_cosine"])
def test_fit_returns_theta_and_history_in_the_training_dtype(split, dtype, schedule):
    static = {
        "constant": (),
        "exponential": (("staircase", False), ("transition_steps", 10)),
        "cosine": (("decay_steps", None),),
        "warmup_cosine": (("decay_steps", None), ("warmup_steps", 3)),
    }[schedule]
    floats = {"exponential": {"decay_rate": 0.5}, "constant": {}}.get(schedule, {"alpha": 0.0})
    spec = fit.LoopSpec("adam", schedule, (), static, 64, 4, 2)
    result = run_fit(split, spec, {"lr": 0.01, **ADAM}, floats, tol=1e-9, dtype=dtype)
    assert result.theta.dtype == np.dtype(dtype)
    for field, values in zip(fit.History._fields, result.history, strict=True):
        assert values.dtype == np.dtype(dtype), field


# --- strict rank promotion -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, floats, static, batch_size",
    [
        ("momentum", {"lr": 1e-3, "momentum": 0.9}, (), 32),
        ("adamw", {"lr": 0.01, **ADAM, "weight_decay": 1e-4}, (), 32),
        (
            "rmsprop",
            {"lr": 0.01, "decay": 0.9, "eps": 1e-8, "momentum": 0.1},
            (("centered", True),),
            32,
        ),
        ("adagrad", {"lr": 0.5, "initial_accumulator_value": 0.1, "eps": 1e-7}, (), 32),
        ("lion", {"lr": 0.01, **LION}, (), 32),
        ("lbfgs", {"lr": 1.0}, (("memory_size", 5),), None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_full_fit_runs_under_strict_rank_promotion(name, floats, static, batch_size):
    with jax.numpy_rank_promotion("raise"):
        ds = data.make_linear(jax.random.key(1), n=120, bias=1.0, weights=[1.0, -2.0], noise=0.1)
        st = data.Standardizer.fit(ds.X[:100], ds.feature_names)
        spec = fit.LoopSpec(
            name,
            "warmup_cosine",
            static,
            (("decay_steps", None), ("warmup_steps", 2)),
            batch_size,
            5,
            5,
        )
        hyper = fit.make_hyper(floats, {"alpha": 0.1}, 1e-12, jnp.float32)
        result = fit.fit(
            st.apply(ds.X[:100]),
            ds.y[:100],
            st.apply(ds.X[100:]),
            ds.y[100:],
            spec=spec,
            hyper=hyper,
            key=jax.random.key(2),
        )
    assert np.all(np.isfinite(result.theta))
    assert result.history.train_mse[-1] < result.history.train_mse[0]


# --- the recorded learning rate ------------------------------------------------------------------
@pytest.mark.parametrize("staircase", [False, True])
def test_recorded_lr_is_the_schedule_at_each_epochs_last_step(split, staircase):
    lr, rate, transition, batch = 0.002, 0.5, 7, 32
    spe = -(-N_TRAIN // batch)
    epochs = 6
    spec = fit.LoopSpec(
        "sgd",
        "exponential",
        (),
        (("staircase", staircase), ("transition_steps", transition)),
        batch,
        epochs,
        4,
    )
    result = run_fit(split, spec, {"lr": lr}, {"decay_rate": rate})
    assert result.steps == spe * epochs
    # row 0 is the start (step 0's rate); row k is the rate of epoch k's last step, spe·k − 1
    steps = np.array([0, *(spe * k - 1 for k in range(1, epochs + 1))], dtype=np.float64)
    p = steps / transition
    expected = lr * rate ** (np.floor(p) if staircase else p)
    # p is formed from the int32 step count in float32 (as Optax does): float32-accurate
    np.testing.assert_allclose(result.history.lr, expected, rtol=1e-6)
    ref = optax.exponential_decay(f64(lr), transition, f64(rate), staircase=staircase)
    optax_lr = [ref(jnp.asarray(s, jnp.int32)) for s in steps.astype(int)]
    np.testing.assert_allclose(result.history.lr, optax_lr, rtol=1e-6)


# --- epochs split across compiled calls ----------------------------------------------------------
# batch 16 on 320 rows: 20 steps an epoch; split into 2 calls of 10, 3 of 7 and 7 of 3 steps (the
# last two overrun the epoch's end, where the loop must take no step).
SPLIT_SPEC = fit.LoopSpec("momentum", "cosine", (), (("decay_steps", None),), 16, 6, 6)
SPLIT_FLOATS = ({"lr": 0.002, "momentum": 0.9}, {"alpha": 0.0})


@pytest.mark.parametrize("parts", [2, 3, 7])
@pytest.mark.parametrize("tol", [None, 0.5])
def test_an_epoch_split_across_calls_trains_exactly_as_whole_epochs_do(split, parts, tol):
    whole = run_fit(split, SPLIT_SPEC, *SPLIT_FLOATS, tol=tol)
    calls = []
    spec = replace(SPLIT_SPEC, chunk=1, split=parts)
    X, y, X_test, y_test, _ = split
    hyper = fit.make_hyper(*SPLIT_FLOATS, tol, jnp.float64)
    result = fit.fit(
        X, y, X_test, y_test, spec=spec, hyper=hyper, key=jax.random.key(0), dtype=jnp.float64,
        on_chunk=lambda epochs, rows: calls.append((epochs, rows.train_mse[-1])),
    )  # fmt: skip
    assert (result.epochs_run, result.stop_epoch, result.steps) == (
        whole.epochs_run,
        whole.stop_epoch,
        whole.steps,
    )
    assert result.steps == 20 * result.epochs_run
    np.testing.assert_allclose(result.theta, whole.theta, rtol=1e-12)
    for ours, theirs in zip(result.history, whole.history, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    # progress after every call; inside an epoch it repeats the last finished epoch's values
    assert len(calls) == parts * result.epochs_run
    assert [e for e, _ in calls] == [(i + 1) // parts for i in range(len(calls))]
    assert calls[0][1] == result.history.train_mse[0]
    if tol is not None:
        assert result.stop_epoch is not None and result.epochs_run < SPLIT_SPEC.epochs


def test_an_interrupted_fit_keeps_its_finished_epochs_and_the_theta_trained_since(split):
    X, y, X_test, y_test, _ = split
    hyper = fit.make_hyper(*SPLIT_FLOATS, None, jnp.float64)
    spec = replace(SPLIT_SPEC, chunk=1, split=3)

    calls = []

    def stop_after_seven_calls(epochs, rows):
        calls.append(epochs)
        if len(calls) == 7:  # 2 epochs and a third of the next
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stopped:
        fit.fit(
            X, y, X_test, y_test, spec=spec, hyper=hyper, key=jax.random.key(0),
            dtype=jnp.float64, on_chunk=stop_after_seven_calls,
        )  # fmt: skip
    partial = stopped.value.partial_fit
    whole = run_fit(split, SPLIT_SPEC, *SPLIT_FLOATS)
    assert partial.epochs_run == 2 and partial.steps == 2 * 20 + 7
    for ours, theirs in zip(partial.history, whole.history, strict=True):
        np.testing.assert_allclose(ours, theirs[:3], rtol=1e-12, atol=1e-15)
    assert not np.allclose(partial.theta, partial.history.theta[-1])  # 7 steps into epoch 3


def test_batched_members_with_split_epochs_match_their_single_fits(split):
    X, y, X_test, y_test, _ = split
    spec = replace(SPLIT_SPEC, chunk=1, split=3)
    lrs = [0.001, 0.002, 0.004]
    hypers = [fit.make_hyper({"lr": lr, "momentum": 0.9}, {"alpha": 0.0}, 0.5, jnp.float64)
              for lr in lrs]  # fmt: skip
    keys = [jax.random.key(i) for i in range(3)]
    batched = fit.fit_batch(
        X, y, X_test, y_test, spec=spec, hypers=hypers, keys=keys, dtype=jnp.float64
    )
    for b, h, k in zip(batched, hypers, keys, strict=True):
        one = fit.fit(X, y, X_test, y_test, spec=spec, hyper=h, key=k, dtype=jnp.float64)
        assert (b.epochs_run, b.stop_epoch, b.steps) == (one.epochs_run, one.stop_epoch, one.steps)
        np.testing.assert_allclose(b.theta, one.theta, rtol=1e-10)
        np.testing.assert_allclose(b.history.train_mse, one.history.train_mse, rtol=1e-10)


@pytest.mark.parametrize(
    "n, m, batch, stats",
    [(10**7, 10, 1024, False), (10**6, 100, 1, False), (300, 5, 10, False), (10**8, 1, 64, False),
     (10**6, 10, None, True), (10**5, 10, None, False), (360, 5, None, False)],
)  # fmt: skip
def test_chunks_are_sized_to_a_fraction_of_a_second_of_modelled_work(n, m, batch, stats):
    spec = fit.chunked(fit.LoopSpec("sgd", "constant", batch_size=batch, epochs=10**6, stats=stats),
                       n, m)  # fmt: skip
    floats = m + 1
    if stats:
        epoch_s = fit.STEP_S
    elif batch is None:
        epoch_s = fit.STEP_S + fit.FULL_FLOAT_S * floats * n
    else:
        epoch_s = (fit.STEP_S + (fit.ROW_S + fit.FLOAT_S * floats) * batch) * -(-n // batch)
    call_s = epoch_s * spec.chunk / spec.split
    assert call_s <= fit.CHUNK_S * 1.01
    assert call_s >= fit.CHUNK_S / 2 or spec.split == -(-n // batch)  # not needlessly small
    assert spec.split == 1 or (spec.chunk == 1 and batch is not None)  # a full-batch step is whole
