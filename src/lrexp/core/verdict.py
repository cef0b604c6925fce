"""Did a run converge? A verdict on every run, with advice that would help, in plain NumPy.

The criterion, scale-free and sound when the optimum's MSE is near zero:

    excess = (MSE(θ) − MSE(θ*)) / var(y_train)        (θ* = least squares, var = population)

which equals R²(θ*) − R²(θ) on the training rows. A run **converged** when it did not diverge and
``excess ≤ EXCESS_TOL`` on every split (with folds: on its worst fold). A ratio MSE/MSE* would
explode as MSE* → 0 (noise-free data); a gap relative to var(y) does not.

Plain NumPy, no JAX: the tracking layer reads EXCESS_TOL for the sweep's leaderboard.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Converged: train R² within 0.01 of the least-squares fit's. Coarser than any test-set effect one
# would rank runs by (R² is read to two decimals), far finer than the failures it must catch
# (R² off by 0.1 to 3), and far above float32's floor (~1e-7 of var(y)).
EXCESS_TOL = 0.01
WINDOW = 0.25  # share of the curve (its end) whose trend the advice reads
TOO_SLOW = 100  # more epochs than this × the run's own are no advice: ask for a larger lr


@dataclass(frozen=True)
class Verdict:
    converged: bool
    excess_train_mse: float  # the worst split's (the run's mean is in the summary)
    reason: str  # one line
    advice: tuple[str, ...]  # short lines, each with the setting and its number


@dataclass(frozen=True)
class Facts:
    """What is known of how a run trained, for the advice."""

    optimizer: str
    lr: float
    epochs: int  # epochs given (full-batch steps, with train.steps)
    epochs_key: str = "train.epochs"  # the key that sets them
    stable_lr: float | None = None  # this optimizer's stable lr bound here (None: not known)
    tol: float | None = None  # train.tol


@dataclass(frozen=True)
class Trend:
    kind: str  # falling, rising, oscillating, flat, or unknown (too short a curve)
    rate: float  # factor the excess shrank by per epoch at the end (< 1: falling)


def excess_mse(train_mse: float, optimal_mse: float, var_y: float) -> float:
    """(MSE − MSE*) / var(y): the train MSE above the optimum's, as a share of var(y)."""
    return (train_mse - optimal_mse) / var_y if var_y > 0 else math.nan


def trend(curve: Sequence[float], train_mse: float, optimal_mse: float) -> Trend:
    """How the train MSE's excess over the optimum moved over the last WINDOW of ``curve``.

    The curve may be in other units than ``train_mse`` (a scale): it is matched at its end.
    """
    c = np.asarray(curve, dtype=np.float64)
    gap = train_mse - optimal_mse
    if len(c) < 2 or not np.isfinite(c).all() or not c[-1] > 0 or not gap > 0:
        return Trend("unknown", math.nan)
    g = (c * (train_mse / c[-1]) - optimal_mse) / gap  # 1 at the end
    w = g[-max(2, math.ceil(WINDOW * len(g))) :]
    rate = float(max(w[0], 1e-300) ** (-1.0 / (len(w) - 1)))
    if g[0] < 1 / 1.05 or w[0] < 1 / 1.05:  # worse than at the start, or than a while ago
        kind = "rising"
    elif w.min() < 0.8:  # it was well below where it ended: oscillation, or the batches' noise
        kind = "oscillating"
    elif w[0] > 1.05:
        kind = "falling"
    else:
        kind = "flat"
    return Trend(kind, rate)


def _sig(x: float) -> str:
    return f"{x:.2g}"


def _round_up(n: float) -> int:
    """``n`` rounded up to two significant digits (2417 → 2500)."""
    n = max(1, math.ceil(n))
    step = 10 ** max(0, len(str(n)) - 2)
    return math.ceil(n / step) * step


def _more_epochs(excess: float, t: Trend, f: Facts) -> tuple[str, float]:
    """The epochs-advice line, and how many times the run's epochs it asks for."""
    if t.kind == "falling" and 0 < t.rate < 1 and excess > 0:
        more = math.log(EXCESS_TOL / 2 / excess) / math.log(t.rate)
        n = _round_up(f.epochs + more)
        if n > TOO_SLOW * f.epochs:
            return f"more epochs alone is too slow (about {f.epochs_key}={n})", n / f.epochs
        rate = f"the loss falls ×{t.rate:.3g} per epoch"
        return f"more epochs: {f.epochs_key}={n} ({rate})", n / f.epochs
    return f"more epochs: {f.epochs_key}={4 * f.epochs} (the loss still falls; ×4)", 4.0


def _larger_lr(f: Facts) -> str | None:
    if f.optimizer == "lbfgs":
        return None
    if f.stable_lr is None:
        return f"a larger lr: optimizer.lr={_sig(10 * f.lr)} (×10)"
    if f.lr < f.stable_lr / 10:
        bound = f"stable below {_sig(f.stable_lr)}"
        return f"a larger lr: optimizer.lr={_sig(f.stable_lr / 2)} ({bound})"
    return None


def _smaller_lr(f: Facts, why: str) -> str | None:
    if f.optimizer == "lbfgs":
        return None
    if f.stable_lr is None:
        return f"a smaller lr: optimizer.lr={_sig(f.lr / 10)} ({why}; ÷10)"
    lr = f.stable_lr / 2 if f.lr > f.stable_lr / 2 else f.lr / 4
    return f"a smaller lr: optimizer.lr={_sig(lr)} ({why}; stable below {_sig(f.stable_lr)})"


def advise(excess: float, t: Trend, f: Facts, *, diverged: bool, tol_met: bool) -> list[str]:
    """Short lines of advice for a run that did not converge."""
    lines: list[str | None] = []
    if not diverged and not math.isfinite(excess):  # no lr or epochs make an MSE finite
        return ["rescale the data: its MSE or variance is not a finite float64 number"]
    if diverged:
        lines.append(_smaller_lr(f, "it diverged"))
    elif tol_met and f.tol is not None:
        lines.append(f"train.tol={f.tol:g} stopped it early: lower it, or train.tol=null")
    elif t.kind in ("rising", "oscillating"):
        lines.append(_smaller_lr(f, f"the loss is {t.kind} at the end"))
    elif t.kind == "flat":
        lines.append(_larger_lr(f) or _smaller_lr(f, "the loss stalled: noise of the batches"))
    else:  # falling, or too short a curve to tell
        line, times = _more_epochs(excess, t, f)
        lines.append(line)
        if times > 4 or f.stable_lr is not None:  # with a bound: only when lr is far below it
            lines.append(_larger_lr(f))
    if f.optimizer != "lbfgs":
        lines.append("optimizer=lbfgs: full batch, converges on any least-squares problem")
    return [line for line in lines if line]


def percent(excess: float) -> str:
    """An excess as a percentage of var(y): 0.34%, 150%, 2.2e-09%."""
    p = 100 * excess
    return f"{p:.0f}%" if abs(p) >= 10 else f"{p:.2g}%"


def judge(
    summary: Mapping[str, float | None],
    curves: Sequence[Sequence[float]],
    facts: Facts,
    *,
    diverged: bool,
) -> Verdict:
    """The run's verdict from its summary metrics (``excess_train_mse``, ``final_train_mse``,
    ``optimal_train_mse``, ``epochs_to_tol``; per fold as ``fold_k/…`` when there are several)
    and each split's train-MSE curve (one row per epoch)."""

    def of(i: int, key: str) -> float | None:
        v = summary.get(key if len(curves) == 1 else f"fold_{i + 1}/{key}")
        return None if v is None else float(v)

    excess = [of(i, "excess_train_mse") for i in range(len(curves))]
    excess = [math.nan if e is None else e for e in excess]
    unknown = [i for i, e in enumerate(excess) if math.isnan(e)]  # e.g. var(y) = 0
    worst = unknown[0] if unknown else int(np.argmax(excess))
    e = excess[worst]
    where = f" in fold {worst + 1}, the worst of {len(curves)}" if len(curves) > 1 else ""
    converged = not diverged and e <= EXCESS_TOL
    if converged:
        return Verdict(True, e, f"excess train MSE {percent(e)} of var(y){where}", ())
    t = trend(curves[worst], of(worst, "final_train_mse") or math.nan,
              of(worst, "optimal_train_mse") or 0.0)  # fmt: skip
    if diverged:
        reason = "diverged"
    elif math.isnan(e):
        reason = "excess train MSE is not finite"
    else:
        state = {"unknown": "", "flat": "; the loss stalled"}.get(t.kind, f"; the loss is {t.kind}")
        reason = f"excess train MSE {percent(e)} of var(y){where} (limit {percent(EXCESS_TOL)})"
        reason += state
    tol_met = of(worst, "epochs_to_tol") is not None
    return Verdict(False, e, reason, tuple(advise(e, t, facts, diverged=diverged, tol_met=tol_met)))
