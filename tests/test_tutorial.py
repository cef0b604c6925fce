"""The tutorial's protocol (``experiment=tutorial``): one model trained through the folds in turn
(``train.cv=sequential``), every optimizer step logged (``tracking.log_steps``), on any data.

Oracles: the first steps of momentum SGD worked out by hand from the batch rows, each logged
batch MSE recomputed in NumPy from the logged θ before it, a fold re-trained alone from the
previous fold's θ (carried into its standardization by the formula written out here), and the
tutorial's counts (6 folds × 18 epochs × 30 batches of 10 rows).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compose_config, runs_in, typed_config

from lrexp import config, pipeline
from lrexp.config import ConfigError
from lrexp.core import fit
from lrexp.core.shuffle import epoch_batches
from lrexp.sweeps import batched


def _artifact(store_uri: str, run_id: str, path: str) -> str:
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=store_uri)
    with open(local) as fh:
        return fh.read()


def _table(text: str) -> tuple[list[str], np.ndarray]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], np.array([[float(v) if v else np.nan for v in r] for r in rows[1:]])


# --- the core: per-step rows from the compiled loop, and a starting θ ---------------------------
def _data(n: int = 95, m: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X, Xt = rng.normal(size=(n, m)), rng.normal(size=(20, m))
    w = np.arange(1.0, m + 1)
    return X, 1.0 + X @ w + 0.1 * rng.normal(size=n), Xt, 1.0 + Xt @ w


def _spec(**kw) -> fit.LoopSpec:
    base = dict(optimizer="momentum", schedule="constant", batch_size=10, epochs=3)
    return fit.chunked(fit.LoopSpec(**{**base, **kw}), 95, 3)


HYPER = fit.make_hyper({"lr": 1e-3, "momentum": 0.9}, {}, None, jnp.float64)  # lrexp enables x64


def test_step_rows_log_each_batch_mse_and_theta_after_the_step():
    X, y, Xt, yt = _data()
    key = jax.random.key(3)
    r = fit.fit(X, y, Xt, yt, spec=_spec(log_steps=True), hyper=HYPER, key=key, dtype=jnp.float64)
    h = r.steps_history
    spe = 10  # 95 rows in batches of 10: the last batch has 5 rows
    assert len(h.step) == r.steps == 3 * spe
    np.testing.assert_array_equal(h.step, np.arange(1, 3 * spe + 1))
    np.testing.assert_array_equal(h.epoch, np.repeat([1, 2, 3], spe))
    # θ after an epoch's last step is the epoch history's θ
    np.testing.assert_array_equal(h.theta[spe - 1 :: spe], r.history.theta[1:])
    # each batch's MSE at the θ before its step, recomputed from the epoch's batch rows
    thetas = np.concatenate([np.zeros((1, 4)), h.theta[:-1]])
    for e in range(3):
        idx, mask = (np.asarray(a) for a in epoch_batches(jax.random.fold_in(key, e), 95, 10))
        for b in range(spe):
            rows, t = idx[b][mask[b]], thetas[e * spe + b]
            mse = np.mean((y[rows] - t[0] - X[rows] @ t[1:]) ** 2)
            assert h.batch_mse[e * spe + b] == pytest.approx(mse, rel=1e-12)
    # the first two momentum steps by hand: v1 = g1, θ1 = −lr v1; v2 = g2 + 0.9 v1, θ2 = θ1 − lr v2
    idx, _ = (np.asarray(a) for a in epoch_batches(jax.random.fold_in(key, 0), 95, 10))
    Xa = np.column_stack([np.ones(95), X])

    def grad(t, rows):
        return 2 * Xa[rows].T @ (Xa[rows] @ t - y[rows])

    v1 = grad(np.zeros(4), idx[0])
    t1 = -1e-3 * v1
    t2 = t1 - 1e-3 * (grad(t1, idx[1]) + 0.9 * v1)
    np.testing.assert_allclose(h.theta[:2], [t1, t2], rtol=1e-12)
    # off: the same fit, and no step rows
    off = fit.fit(X, y, Xt, yt, spec=_spec(), hyper=HYPER, key=key, dtype=jnp.float64)
    assert off.steps_history is None
    np.testing.assert_array_equal(off.theta, r.theta)


def test_full_batch_step_rows_are_the_train_mse_before_each_step():
    X, y, Xt, yt = _data()
    spec = _spec(batch_size=None, stats=True, epochs=5, log_steps=True)
    r = fit.fit(X, y, Xt, yt, spec=spec, hyper=HYPER, key=jax.random.key(0), dtype=jnp.float64)
    h = r.steps_history
    np.testing.assert_array_equal(h.step, np.arange(1, 6))
    np.testing.assert_allclose(h.batch_mse, r.history.train_mse[:-1], rtol=1e-12)
    np.testing.assert_array_equal(h.theta, r.history.theta[1:])


def test_fit_starts_from_theta0():
    X, y, Xt, yt = _data()
    theta0 = np.array([1.0, 0.5, -0.5, 2.0])
    kw = dict(spec=_spec(), hyper=HYPER, key=jax.random.key(0), dtype=jnp.float64)
    r = fit.fit(X, y, Xt, yt, theta0=theta0, **kw)
    np.testing.assert_array_equal(r.history.theta[0], theta0)
    mse0 = np.mean((yt - theta0[0] - Xt @ theta0[1:]) ** 2)
    assert r.history.test_mse[0] == pytest.approx(mse0, rel=1e-12)
    assert not np.allclose(r.theta, fit.fit(X, y, Xt, yt, **kw).theta)  # zeros: another fit
    with pytest.raises(ValueError, match="theta0 has shape"):
        fit.fit(X, y, Xt, yt, theta0=theta0[:2], **kw)


# --- the pipeline: sequential folds, θ carried in original units -------------------------------
def test_sequential_folds_carry_theta_in_original_units():
    """With standardization on, each fold has its own scaler: fold k+1 starts from fold k's θ in
    original units, mapped into its own standardized units."""
    p = pipeline.prepare(typed_config("experiment=tutorial", "data.standardize=true"))
    assert not np.allclose(p.scalers[0].mean, p.scalers[1].mean)  # a naive carry would be wrong
    fits = pipeline.train_folds(p, progress=False)
    folds = p.evaluate(fits)
    for k in range(1, 6):  # each fold's row 0, in original units, is the previous fold's last θ
        np.testing.assert_allclose(folds[k].trajectory[0], folds[k - 1].theta, atol=1e-5)
    # oracle: fold 2 alone, from fold 1's θ put into fold 2's standardized units by hand
    st, theta = p.scalers[1], folds[0].theta
    start = np.concatenate([[theta[0] + theta[1:] @ st.mean], theta[1:] * st.scale])
    again = fit.fit(
        *p.arrays(1),
        spec=p.spec,
        hyper=p.hyper,
        key=jax.random.fold_in(p.shuffle_key, 1),
        dtype=jnp.float32,
        theta0=start,
    )
    np.testing.assert_allclose(again.theta, fits[1].theta, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(again.history.test_mse, fits[1].history.test_mse, rtol=1e-5)
    outcome = pipeline.conclude(p, fits, None)
    np.testing.assert_array_equal(outcome.theta, folds[-1].theta)  # the one model: the last fold's
    assert outcome.summary["epochs_run"] == 108 and outcome.summary["steps_run"] == 3240


def test_sequential_and_independent_folds_differ():
    seq = pipeline.prepare(typed_config("experiment=tutorial"))
    ind = pipeline.prepare(typed_config("experiment=tutorial", "train.cv=independent"))
    f_seq, f_ind = (pipeline.train_folds(p, progress=False) for p in (seq, ind))
    np.testing.assert_array_equal(f_seq[0].theta, f_ind[0].theta)  # fold 1: both from zeros
    assert np.all(f_ind[1].history.theta[0] == 0)  # independent: fold 2 from zeros again
    np.testing.assert_allclose(f_seq[1].history.theta[0], f_seq[0].theta, rtol=1e-6)
    o_seq, o_ind = pipeline.conclude(seq, f_seq, None), pipeline.conclude(ind, f_ind, None)
    np.testing.assert_allclose(o_ind.theta, np.mean([f.theta for f in o_ind.folds], axis=0))
    assert not np.allclose(o_seq.theta, o_ind.theta, rtol=0, atol=1e-6)
    # the batched launcher trains sequential folds the same way (two members: two learning rates)
    lr2 = pipeline.prepare(typed_config("experiment=tutorial", "optimizer.lr=5e-4"))
    members = [(batched.Job(i, [], None), q) for i, q in enumerate((seq, lr2))]
    together = batched.train_batch(members)
    for a, b in zip(together[0], f_seq, strict=True):
        np.testing.assert_allclose(a.theta, b.theta, rtol=1e-5, atol=1e-6)
    assert len(together[1][5].steps_history.step) == 540


def test_tutorial_run_logs_108_epochs_and_3240_steps(store_uri, experiment, tracked, capsys):
    outcome = pipeline.run(typed_config("experiment=tutorial", *tracked))
    out = capsys.readouterr().out
    assert "6-fold sequential CV test MSE" in out and "test MSE is optimistic" in out
    (run,) = runs_in(store_uri, experiment)
    assert run.data.params["train.cv"] == "sequential"
    assert run.data.metrics["epochs_run"] == 108 and run.data.metrics["steps_run"] == 3240
    header, steps = _table(_artifact(store_uri, run.info.run_id, "history_steps.csv"))
    assert header == [
        "fold",
        "epoch",
        "step",
        "batch_mse",
        "bias",
        *(f"theta_{j}" for j in range(1, 6)),
    ]
    assert steps.shape == (3240, 10)
    np.testing.assert_array_equal(steps[:, 0], np.repeat(np.arange(1, 7), 540))
    np.testing.assert_array_equal(steps[:, 1], np.repeat(np.arange(1, 109), 30))
    np.testing.assert_array_equal(steps[:, 2], np.arange(1, 3241))
    assert np.all(steps[:, 3] >= 0)
    # θ in original units: each fold's last step is that fold's final θ; the last, the run's
    for k, f in enumerate(outcome.folds):
        np.testing.assert_allclose(steps[540 * k + 539, 4:], f.theta, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(steps[-1, 4:], outcome.theta, rtol=1e-6, atol=1e-7)
    header, hist = _table(_artifact(store_uri, run.info.run_id, "history.csv"))
    assert header[:2] == ["epoch", "fold"] and hist.shape[0] == 109  # epoch 0, then 108 epochs
    np.testing.assert_array_equal(hist[1:, 1], np.repeat(np.arange(1, 7), 18))
    test_mse = hist[:, header.index("test_mse")]
    last = [f.fit.history.test_mse[-1] for f in outcome.folds]
    np.testing.assert_allclose(test_mse[18::18], last, rtol=1e-6)


def test_tutorial_preset_composes_with_csv_data(small_csv, tmp_path, store_uri, experiment):
    cfg = compose_config("experiment=tutorial", "data=csv", f"data.path={small_csv}",
                         "data.target=price")  # fmt: skip
    assert cfg.data.name == "csv" and "n" not in cfg.data and cfg.train.cv == "sequential"
    cmd = [sys.executable, "-m", "lrexp.train", "experiment=tutorial", "data=csv",
           f"data.path={small_csv.name}", "data.target=price",
           f"tracking.uri={store_uri}", f"tracking.experiment={experiment}"]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=small_csv.parent, capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "small [80 rows × 3 features]" in done.stdout and "optimistic" in done.stdout
    (run,) = runs_in(store_uri, experiment)
    header, steps = _table(_artifact(store_uri, run.info.run_id, "history_steps.csv"))
    assert header[4:] == ["bias", "theta_1", "theta_2", "theta_3"]
    # 80 rows in 6 folds: 66 or 67 training rows, 7 batches of 10 an epoch, 18 epochs a fold
    assert steps.shape[0] == 6 * 18 * 7 and steps[-1, 1] == 108


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["train.cv=nested"], "train.cv", "must be one of: independent"),
        (["train.shuffle_block=2"], "train.shuffle_block", "must be 1 with tracking.log_steps"),
    ],
)
def test_bad_cv_settings_name_the_key(overrides, key, allowed):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        config.validate(typed_config("experiment=tutorial", *overrides))
    assert allowed in str(e.value)


def test_log_steps_is_off_unless_asked():
    p = pipeline.prepare(typed_config("train.folds=6"))
    assert p.cfg.train.cv == "independent" and not p.spec.log_steps
    assert replace(p.spec, log_steps=True) != p.spec  # a separate compiled program when on
