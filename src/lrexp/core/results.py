"""Results: a fit's θ and history in the data's original units, scored against the optimum.

Pure host-side arithmetic (float64); nothing here trains, prints or logs.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from lrexp.core import model
from lrexp.core.data import Standardizer
from lrexp.core.fit import FitResult, History


@dataclass(frozen=True)
class FoldResult:
    """One train/test split's outcome; every θ in original units as [bias, w_1..w_M]."""

    fit: FitResult  # the loop's; its loss curves back in the target's units (θ̃ stays the loop's)
    theta: np.ndarray
    theta_star: np.ndarray  # least-squares optimum on this split's training rows
    trajectory: np.ndarray  # θ after each epoch, row 0 = start
    train: dict[str, float | None]  # tsse, mse, rmse, r2 of θ on the training rows
    test: dict[str, float | None]  # r2 None where the test targets do not vary (one row)
    optimum: dict[str, float | None]  # the same for θ* on the training rows
    condition_number: float  # of the standardized training design [1, X̃]
    n_train: int
    n_test: int


def _scores(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """TSSE, MSE, RMSE and R² of θ on (X, y), in float64 NumPy: ``model.metrics``' equations,
    without a dozen small JAX dispatches per split (they cost a sweep ~10 ms a job).

    R² = 1 − TSSE / Σ(y − ȳ)² is undefined (None) where the targets do not vary: one row, or a
    constant target."""
    X, y, theta = (np.asarray(a, dtype=np.float64) for a in (X, y, theta))
    with np.errstate(over="ignore", invalid="ignore"):  # data near float64's limits: inf, no error
        r = y - (theta[0] + X @ theta[1:])
        sse = float(r @ r)
        sst = float(np.sum((y - y.mean()) ** 2))
    mse = sse / len(y)
    r2 = 1.0 - sse / sst if sst > 0 and math.isfinite(sst) else None
    return {"tsse": sse, "mse": mse, "rmse": math.sqrt(mse), "r2": r2}


def in_target_units(history: History, st: Standardizer) -> History:
    """The loop's curves (on ỹ = (y − ȳ) / σ_y) in the target's units: losses × σ_y², the
    gradient's norm × σ_y; θ̃ and lr as they are."""
    if st.y_scale == 1.0:
        return history
    s = np.float64(st.y_scale)
    with np.errstate(over="ignore"):
        return history._replace(
            train_tsse=np.asarray(history.train_tsse, np.float64) * s * s,
            train_mse=np.asarray(history.train_mse, np.float64) * s * s,
            test_mse=np.asarray(history.test_mse, np.float64) * s * s,
            grad_norm=np.asarray(history.grad_norm, np.float64) * s,
        )


def optimum(st: Standardizer, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """θ* in original units, in float64, solved on the standardized rows and a standardized target
    (better conditioned: a target of 1e20 ± 1e3 keeps its variation), whether or not training
    standardized the target."""
    with contextlib.suppress(ValueError):  # a constant target: θ* = [ȳ, 0 …], solved as is
        st = st.with_target(y, key="data.target", value=None)
    X_std = jnp.asarray(st.apply(X), jnp.float64)
    y_std = jnp.asarray(st.apply_target(y), jnp.float64)
    return st.to_original(np.asarray(model.least_squares(X_std, y_std)))


def evaluate(
    result: FitResult,
    st: Standardizer,
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
) -> FoldResult:
    """Score a fit in original units; ``X``/``X_test`` are raw rows, ``st`` the fitted scaling."""
    theta_star = optimum(st, X, y)
    theta = st.to_original(result.theta)
    return FoldResult(
        fit=result._replace(history=in_target_units(result.history, st)),
        theta=theta,
        theta_star=theta_star,
        trajectory=st.to_original(result.history.theta),
        train=_scores(theta, X, y),
        test=_scores(theta, X_test, y_test),
        optimum=_scores(theta_star, X, y),
        condition_number=float(model.condition_number(jnp.asarray(st.apply(X)))),
        n_train=len(y),
        n_test=len(y_test),
    )


def fold_summary(f: FoldResult, true_theta: np.ndarray | None) -> dict[str, float | None]:
    """Summary metrics of one split: final/min MSEs, R², best epoch, gap to the optimum."""
    h = f.fit.history
    out: dict[str, float | None] = {
        "final_train_mse": f.train["mse"],
        "final_test_mse": f.test["mse"],
        "final_train_rmse": f.train["rmse"],
        "final_test_rmse": f.test["rmse"],
        "final_train_r2": f.train["r2"],
        "final_test_r2": f.test["r2"],
        "min_train_mse": float(np.nanmin(h.train_mse)),
        "min_test_mse": float(np.nanmin(h.test_mse)),
        "best_epoch": float(np.nanargmin(h.test_mse)),
        "optimal_train_mse": f.optimum["mse"],
        # (MSE − MSE*) / var(y_train), as R²* − R²: see lrexp.core.verdict; undefined (None)
        # where var(y_train) is 0, as R² is
        "excess_train_mse": (None if f.train["r2"] is None else f.optimum["r2"] - f.train["r2"]),
        "gap_tsse": f.train["tsse"] - f.optimum["tsse"],
        "gap_theta": float(np.linalg.norm(f.theta - f.theta_star)),
        "condition_number": f.condition_number,
        "epochs_run": float(f.fit.epochs_run),
        "steps_run": float(f.fit.steps),
        "epochs_to_tol": None if f.fit.stop_epoch is None else float(f.fit.stop_epoch),
        "diverged_step": None if f.fit.diverged_step is None else float(f.fit.diverged_step),
    }
    if true_theta is not None:
        out["true_theta_error"] = float(np.linalg.norm(f.theta - true_theta))
    return out


def summary(folds: list[FoldResult], true_theta: np.ndarray | None) -> dict[str, float | None]:
    """The run's summary: one split's, or the mean over folds plus per-fold values and CV stats."""
    if len(folds) == 1:
        return fold_summary(folds[0], true_theta)
    per_fold = [fold_summary(f, true_theta) for f in folds]
    out: dict[str, float | None] = {}
    for key in per_fold[0]:
        values = [p[key] for p in per_fold if p[key] is not None]
        out[key] = float(np.mean(values)) if values else None
        for i, p in enumerate(per_fold, start=1):
            out[f"fold_{i}/{key}"] = p[key]
    test = np.array([f.test["mse"] for f in folds])  # never empty: a split keeps a test row
    out["cv_test_mse_mean"], out["cv_test_mse_std"] = float(test.mean()), float(test.std(ddof=1))
    return out


def _pad(a: np.ndarray, rows: int) -> np.ndarray:
    """Extend a curve to ``rows`` by repeating its last row (a stopped fit stays where it is)."""
    return np.concatenate([a, np.repeat(a[-1:], rows - len(a), axis=0)]) if len(a) < rows else a


def fold_curves(f: FoldResult, names: list[str]) -> dict[str, np.ndarray]:
    h = f.fit.history
    curves = {
        "train_tsse": h.train_tsse,
        "train_mse": h.train_mse,
        "test_mse": h.test_mse,
        "lr": h.lr,
        "grad_norm": h.grad_norm,
    }
    curves.update({name: f.trajectory[:, j] for j, name in enumerate(names)})
    return {k: np.asarray(v, dtype=np.float64) for k, v in curves.items()}


def curves(folds: list[FoldResult], names: list[str]) -> dict[str, np.ndarray]:
    """Per-epoch curves; with folds, each fold's under ``fold_k/`` and their mean unprefixed."""
    per_fold = [fold_curves(f, names) for f in folds]
    if len(per_fold) == 1:
        return per_fold[0]
    rows = max(len(c["train_mse"]) for c in per_fold)
    out = {k: np.mean([_pad(c[k], rows) for c in per_fold], axis=0) for k in per_fold[0]}
    for i, c in enumerate(per_fold, start=1):
        out.update({f"fold_{i}/{k}": v for k, v in c.items()})
    return out


def theta_names(m: int) -> list[str]:
    """Metric names of θ's components, as the tutorial's training log has them."""
    return ["bias", *(f"theta_{j}" for j in range(1, m + 1))]
