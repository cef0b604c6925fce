"""Numerical checks made before training: the stable learning rate and the conditioning.

The Hessian of a batch's TSSE (b rows) is about 2·(b/n)·X̃ᵀX̃; of its mean, TSSE / b, about
(2/n)·X̃ᵀX̃ whatever b is. Plain gradient descent is stable for lr < 2/L, L the largest eigenvalue
of that Hessian: on the mean (``reduction="mean"``) lr < n / λmax(X̃ᵀX̃), on the sum lr <
n / (b·λmax(X̃ᵀX̃)) (so lr_sum = lr_mean / b). Heavy-ball momentum β stretches it by (1 + β): each
optimizer's registry entry gives its factor (:attr:`optim.Optimizer.stable_factor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from lrexp.core import model, optim

THETA_ERROR_WARN = 0.01  # warn when cond(X̃ᵀX̃)·eps(dtype), θ's relative error, passes 1%


class Diagnostics(NamedTuple):
    stable_lr: float  # largest stable lr of plain gradient descent at this batch size
    hessian_condition: float  # λmax / λmin of X̃ᵀX̃ (the square of cond(X̃))
    warnings: tuple[str, ...]
    # the optimizer's own bound (plain GD's × its registry factor); None where its step is not
    # lr × gradient (Adam, Lion, L-BFGS …), which no such bound describes
    optimizer_stable_lr: float | None = None
    bound: str = ""  # in words: "optimizer=momentum (momentum=0.9) is stable below 0.2 on …"


class Spectrum(NamedTuple):
    """What the checks need of the standardized design X̃: its rows and X̃ᵀX̃'s extremes."""

    n: int
    lam_max: float
    lam_min: float


def spectrum(X_std: np.ndarray) -> Spectrum:
    """Measure the rows of X̃ and the extreme eigenvalues of X̃ᵀX̃."""
    gram = np.asarray(model.sufficient_stats(jnp.asarray(X_std), jnp.zeros(len(X_std))).gram)
    eig = np.linalg.eigvalsh(gram)
    return Spectrum(len(X_std), float(eig[-1]), float(max(eig[0], 0.0)))


def check(
    X_std: np.ndarray | Spectrum,
    *,
    batch_size: int | None,
    optimizer: str,
    knobs: Mapping[str, float],
    dtype: str,
    reduction: str = "sum",
) -> Diagnostics:
    """Bound the learning rate and judge the conditioning of the standardized design X̃ (or of
    its :func:`spectrum`, for runs that share it); ``knobs`` are the optimizer's float knobs,
    ``lr`` included; ``reduction`` what a step descends (the batch's TSSE, or its mean).
    """
    n, lam_max, lam_min = X_std if isinstance(X_std, Spectrum) else spectrum(X_std)
    rows = 1 if reduction == "mean" else (batch_size or n)
    stable_lr = n / (rows * lam_max)
    condition = lam_max / lam_min if lam_min > 0 else float("inf")
    warnings = []
    entry = optim.OPTIMIZERS[optimizer]
    limit, words = None, ""
    if entry.stable_factor is not None:
        lr, factor = knobs["lr"], entry.stable_factor(knobs)
        limit = stable_lr * factor
        extra = ", ".join(f"{k}={v:g}" for k, v in knobs.items() if k != "lr")
        words = (
            f"optimizer={optimizer}{f' ({extra})' if extra else ''} is stable below {limit:.3g} "
            "on this data"
        )
        if lr > limit:
            why = (
                "the step is on the batch mean, so it holds at any batch size"
                if reduction == "mean"
                else "TSSE is a sum, so it shrinks as batches grow"
            )
            warnings.append(
                f"optimizer.lr={lr:g} exceeds the largest stable learning rate for this data and "
                f"batch size ({limit:.3g}{' with momentum' if factor != 1 else ''}; {why}): "
                "expect divergence"
            )
    error = condition * float(np.finfo(dtype).eps)  # θ's relative error, roughly
    if error > THETA_ERROR_WARN:
        advice = " Use train.dtype=float64." if dtype != "float64" else ""
        warnings.append(
            f"the features are nearly collinear: cond(X̃ᵀX̃) = {condition:.3g}, so in {dtype} "
            f"θ is determined only to about {min(error, 1.0):.0%}; judge the run by its loss."
            f"{advice}"
        )
    return Diagnostics(stable_lr, condition, tuple(warnings), limit, words)
