"""lrexp's figures as SVG text: the loss curve against the optimum, fitted against actual, and
several runs' curves overlaid (drawn with :mod:`lrexp.report.svg`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lrexp.report.svg import BLUE, GREY, ORANGE, PALETTE, Panel, figure


def loss_curve(curves: dict[str, np.ndarray], optimal_mse: float, folds: int, title: str) -> str:
    """Train and test MSE per epoch on a log scale, the least-squares optimum marked."""
    p = Panel(xlabel="epoch", ylabel="MSE", ylog=True, epochs=True)
    for i in range(1, folds + 1) if folds > 1 else ():
        for key, color in (("train_mse", BLUE), ("test_mse", ORANGE)):
            c = curves[f"fold_{i}/{key}"]
            p.line(np.arange(len(c)), c, color, width=0.8, opacity=0.25)
    mean = " (mean over folds)" if folds > 1 else ""
    for key, color, name in (("train_mse", BLUE, "train"), ("test_mse", ORANGE, "test")):
        c = curves[key]
        p.line(np.arange(len(c)), c, color, width=2, label=f"{name} MSE{mean}")
    p.hline(optimal_mse, label=f"least-squares optimum (train) {optimal_mse:.4g}")
    return figure([p], title)


def fitted_vs_actual(
    y_train: np.ndarray,
    fit_train: np.ndarray,
    y_test: np.ndarray,
    fit_test: np.ndarray,
    target: str,
) -> str:
    """Predicted against actual target values, with the identity line, and residuals."""
    fit = Panel(xlabel=f"actual {target}", ylabel=f"fitted {target}", legend_left=True)
    fit.dots(y_train, fit_train, BLUE, label="train")
    fit.dots(y_test, fit_test, ORANGE, radius=3, opacity=0.8, label="test")
    lo = float(min(y_train.min(), y_test.min()))
    hi = float(max(y_train.max(), y_test.max()))
    fit.line([lo, hi], [lo, hi], "black", width=1, label="y = ŷ")
    res = Panel(xlabel=f"fitted {target}", ylabel="residual")
    res.dots(fit_train, y_train - fit_train, BLUE, label="train")
    res.dots(fit_test, y_test - fit_test, ORANGE, radius=3, opacity=0.8, label="test")
    res.hline(0.0, dash="")
    return figure([fit, res], panel_width=420)


Curve = tuple[np.ndarray, np.ndarray]  # (epochs, values)


HIGHLIGHT = 5  # runs drawn in colour, with a legend; the others thin grey behind them


def overlay_title(what: str, drawn: int, total: int | None, highlight: int) -> str:
    """``what``, and honestly how many runs are highlighted, drawn and left out."""
    total = drawn if total is None else total
    k = min(highlight, drawn)
    shown = f"all {drawn}" if drawn <= k else f"best {k} of {total} highlighted"
    if k < drawn < total:
        shown += f", {drawn} drawn"
    return f"{what}: {shown}"


def overlay(
    curves: dict[str, tuple[Curve, Curve]],
    title: str,
    *,
    scores: Mapping[str, float] = {},
    total: int | None = None,
    highlight: int = HIGHLIGHT,
    left_out: int = 0,
) -> str:
    """Train and test MSE per epoch of several runs, best first, on a log scale: the best
    ``highlight`` in distinct colours with a legend (name and ``scores``, the test MSE), the
    rest thin grey behind them.

    ``curves`` maps a run's name to its (epochs, values) of train and of test MSE, best first;
    ``total`` is how many runs there were (``curves`` may hold the best of them), ``left_out``
    how many failed or diverged runs were left out (named in the legend).
    """
    train = Panel(title="train MSE", xlabel="epoch", ylabel="MSE", ylog=True, epochs=True)
    test = Panel(title="test MSE", xlabel="epoch", ylabel="MSE", ylog=True, epochs=True)
    items = list(curves.items())
    for _, ((x_tr, tr), (x_te, te)) in items[highlight:][::-1]:
        train.line(x_tr, tr, GREY, width=0.7, opacity=0.6)
        test.line(x_te, te, GREY, width=0.7, opacity=0.6)
    legend = []
    for i, (name, ((x_tr, tr), (x_te, te))) in reversed(list(enumerate(items[:highlight]))):
        color = PALETTE[i % len(PALETTE)]
        train.line(x_tr, tr, color, width=1.8)
        test.line(x_te, te, color, width=1.8)
        score = f"  (test MSE {scores[name]:.4g})" if name in scores else ""
        legend.insert(0, (f"{i + 1}. {name}{score}", color, "line"))
    if len(items) > highlight:
        legend.append((f"{len(items) - highlight} other runs", GREY, "thin"))
    if left_out:
        legend.append((f"{left_out} failed or diverged runs left out", "white", "thin"))
    heading = overlay_title(title, len(items), total, highlight)
    return figure([train, test], heading, panel_width=480, legend=legend)
