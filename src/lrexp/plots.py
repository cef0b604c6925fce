"""Figures for a run: the loss curve against the optimum, and fitted against actual values."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def loss_curve(curves: dict[str, np.ndarray], optimal_mse: float, folds: int, title: str) -> Figure:
    """Train and test MSE per epoch on a log scale, the least-squares optimum marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for i in range(1, folds + 1) if folds > 1 else ():
        ax.plot(curves[f"fold_{i}/train_mse"], color="tab:blue", alpha=0.2, lw=0.8)
        ax.plot(curves[f"fold_{i}/test_mse"], color="tab:orange", alpha=0.2, lw=0.8)
    mean = " (mean over folds)" if folds > 1 else ""
    ax.plot(curves["train_mse"], color="tab:blue", lw=2, label=f"train MSE{mean}")
    ax.plot(curves["test_mse"], color="tab:orange", lw=2, label=f"test MSE{mean}")
    ax.axhline(
        optimal_mse,
        color="black",
        ls="--",
        lw=1,
        label=f"least-squares optimum (train) {optimal_mse:.4g}",
    )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title(title, fontsize=9, wrap=True)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return fig


def fitted_vs_actual(
    y_train: np.ndarray,
    fit_train: np.ndarray,
    y_test: np.ndarray,
    fit_test: np.ndarray,
    target: str,
) -> Figure:
    """Predicted against actual target values, with the identity line, and residuals."""
    fig, (ax, res) = plt.subplots(1, 2, figsize=(10, 4.5), layout="constrained")
    ax.scatter(y_train, fit_train, s=10, alpha=0.5, label="train")
    ax.scatter(y_test, fit_test, s=14, alpha=0.8, label="test")
    lo = float(min(y_train.min(), y_test.min()))
    hi = float(max(y_train.max(), y_test.max()))
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="y = ŷ")
    ax.set_xlabel(f"actual {target}")
    ax.set_ylabel(f"fitted {target}")
    ax.legend()
    res.scatter(fit_train, y_train - fit_train, s=10, alpha=0.5, label="train")
    res.scatter(fit_test, y_test - fit_test, s=14, alpha=0.8, label="test")
    res.axhline(0.0, color="black", lw=1)
    res.set_xlabel(f"fitted {target}")
    res.set_ylabel("residual")
    res.legend()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)


def overlay(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    """Train and test MSE per epoch of several runs, one colour per run, on a log scale."""
    fig, (train, test) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained", sharey=True)
    for name, (tr, te) in curves.items():
        (line,) = train.plot(tr, lw=1)
        test.plot(te, lw=1, color=line.get_color(), label=name)
    for ax, which in ((train, "train"), (test, "test")):
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"{which} MSE")
        ax.grid(True, which="both", alpha=0.3)
    if len(curves) <= 12:
        test.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig
