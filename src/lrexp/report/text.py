"""The terminal summary of a run: what was trained, how well, and where to look at it."""

from __future__ import annotations

import numpy as np

from lrexp.core.verdict import Verdict

# Sequential CV's caveat, printed under its CV line.
OPTIMISTIC = (
    "sequential CV: this test MSE is optimistic (each test fold after the first was trained on "
    "in an earlier fold)"
)


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.6g}"


def _epochs_line(s: dict, folds: int, sequential: bool = False) -> str:
    """Epochs and steps run, and where (or in how many folds) the tolerance stopped training;
    means over folds labelled as such (sequential CV's one model: totals over its folds)."""
    cond = f"cond(X̃) {_fmt(s['condition_number'])}"
    if folds == 1:
        return (
            f"  epochs {_fmt(s['epochs_run'])}  steps {_fmt(s['steps_run'])}  "
            f"tolerance met at epoch {_fmt(s['epochs_to_tol'])}  {cond}"
        )
    met = sum(s[f"fold_{i}/epochs_to_tol"] is not None for i in range(1, folds + 1))
    if sequential:
        return (
            f"  epochs {_fmt(s['epochs_run'])}  steps {_fmt(s['steps_run'])} (all {folds} folds)  "
            f"tolerance met in {met} of {folds} folds  {cond} (mean)"
        )
    return (
        f"  epochs (mean over {folds} folds) {s['epochs_run']:.3g}  "
        f"steps (mean) {s['steps_run']:.3g}  tolerance met in {met} of {folds} folds  {cond} (mean)"
    )


def _verdict_lines(v: Verdict) -> list[str]:
    """``converged: yes (…)`` or ``NOT converged: …`` and the advice, one line each."""
    if v.converged:
        return [f"  converged: yes ({v.reason})"]
    return [f"  NOT converged: {v.reason}", *(f"    try {a}" for a in v.advice)]


def summary_text(
    *,
    title: str,
    summary: dict,
    names: list[str],
    theta: np.ndarray,
    theta_star: np.ndarray,
    true_theta: np.ndarray | None,
    folds: int,
    run_id: str | None,
    ui_command: str | None,
    verdict: Verdict | None = None,
    sequential: bool = False,
) -> str:
    """A few lines: data and optimizer, train/test MSE, gap to the optimum, whether it converged
    (and what would help if not), θ beside θ*. With folds, each number is labelled a mean;
    ``sequential``: one model trained through the folds in turn (its test MSE is optimistic)."""
    s = summary
    lines = [title]
    if folds > 1:
        kind = " sequential" if sequential else ""
        lines.append(
            f"  {folds}-fold{kind} CV test MSE: {s['cv_test_mse_mean']:.6g} "
            f"± {s['cv_test_mse_std']:.3g}  (per fold: "
            + ", ".join(_fmt(s[f"fold_{i}/final_test_mse"]) for i in range(1, folds + 1))
            + ")"
        )
    if folds > 1 and sequential:
        lines.append(f"  {OPTIMISTIC}")
    mean = f" (mean over {folds} folds)" if folds > 1 else ""
    lines += [
        f"  train MSE {_fmt(s['final_train_mse'])}  test MSE {_fmt(s['final_test_mse'])}  "
        f"test R² {_fmt(s['final_test_r2'])}{mean}",
        f"  optimum train MSE {_fmt(s['optimal_train_mse'])}  gap TSSE−TSSE* "
        f"{_fmt(s['gap_tsse'])}  ‖θ−θ*‖ {_fmt(s['gap_theta'])}{mean}",
        _epochs_line(s, folds, sequential),
    ]
    if verdict is not None:
        lines += _verdict_lines(verdict)
    header = f"  {'':>10} {'θ':>12} {'θ*':>12}" + (
        f" {'true':>12}" if true_theta is not None else ""
    )
    lines.append(header)
    for j, name in enumerate(names):
        row = f"  {name:>10} {theta[j]:>12.6g} {theta_star[j]:>12.6g}"
        if true_theta is not None:
            row += f" {true_theta[j]:>12.6g}"
        lines.append(row)
    if folds > 1 and sequential:
        lines.append("  (θ: the one model after the last fold; θ*: least squares on all rows)")
    elif folds > 1:
        lines.append("  (θ: mean of the fold models; θ*: least squares on all rows)")
    if run_id is not None:
        lines.append(f"  MLflow run {run_id}")
    if ui_command is not None:
        lines.append(f"  open the UI: {ui_command}")
    return "\n".join(lines)
